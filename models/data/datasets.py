"""Datasets: built-in synthetic clips, a folder of the user's audio, and the effect-matching pairs.

Every item is ``{"dry": (C, T) float32, "norm_params": (P,) float32, "index": int}``; the wet target is rendered
on the fly by the LightningModule (``wet = processor(dry, norm_params)``), batched, on its device.
Parameters are drawn uniformly in normalised space from a generator seeded by (seed, index), and
for the training split also by the epoch, so validation and test targets are identical on every run
and machine while training sees new settings every epoch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .synth import SynthConfig, generate_clip

__all__ = ["SyntheticClips", "FolderClips", "EffectPairs", "AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


class SyntheticClips(Dataset):
    """``size`` clips from the built-in generator, made once and kept in memory."""

    def __init__(self, size: int, seed: int, sample_rate: int = 22050, clip_seconds: float = 1.0,
                 channels: int = 1):
        self.config = SynthConfig(sample_rate, clip_seconds, channels)
        self.clips = [torch.from_numpy(generate_clip(self.config, seed, i)[0]) for i in range(size)]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.clips[i]


class FolderClips(Dataset):
    """Random crops of the audio files in a folder (searched recursively).

    wav/flac/ogg via soundfile, mono or stereo (converted to ``channels``), resampled to
    ``sample_rate`` with torchaudio. Unreadable, empty or non-finite files are skipped with one
    warning each (``skipped`` counts them); crops quieter than ``silence_db`` are redrawn.
    A folder with no usable file raises ``ValueError`` naming it.
    """

    def __init__(self, root: str | Path, size: int, seed: int, sample_rate: int = 22050,
                 clip_seconds: float = 1.0, channels: int = 1, silence_db: float = -60.0,
                 fixed: bool = False):
        import soundfile as sf
        import torchaudio.functional as AF

        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"audio folder {str(self.root)!r} does not exist")
        self.num_samples = int(round(sample_rate * clip_seconds))
        self.size, self.seed, self.channels = size, seed, channels
        self.silence_db, self.fixed = silence_db, fixed
        self.audio: list[torch.Tensor] = []
        self.skipped = 0
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        for path in files:
            try:
                data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
                self._skip(path, f"unreadable ({exc.__class__.__name__}: {exc})")
                continue
            if data.size == 0:
                self._skip(path, "empty")
                continue
            if not np.isfinite(data).all():
                self._skip(path, "contains NaN or Inf")
                continue
            audio = torch.from_numpy(data.T.copy())  # (C, T)
            if sr != sample_rate:
                audio = AF.resample(audio, sr, sample_rate)
            audio = self._to_channels(audio)
            if audio.shape[-1] < self.num_samples:
                audio = torch.nn.functional.pad(audio, (0, self.num_samples - audio.shape[-1]))
            self.audio.append(audio)
        if not self.audio:
            raise ValueError(
                f"no usable audio file ({'/'.join(AUDIO_EXTENSIONS)}) in folder {str(self.root)!r}"
                f" ({len(files)} found, {self.skipped} skipped)"
            )

    def _skip(self, path: Path, why: str) -> None:
        self.skipped += 1
        warnings.warn(f"skipping {path}: {why}", stacklevel=3)

    def _to_channels(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[0] == self.channels:
            return audio
        mono = audio.mean(dim=0, keepdim=True)
        return mono.expand(self.channels, -1).clone()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, i) if self.fixed else None)
        crop = None
        for _ in range(20):  # redraw silent crops
            audio = self.audio[rng.integers(len(self.audio))]
            start = rng.integers(0, audio.shape[-1] - self.num_samples + 1)
            crop = audio[:, start : start + self.num_samples]
            rms = crop.square().mean().sqrt().item()
            if rms > 10 ** (self.silence_db / 20):
                return crop
        return crop  # every attempt was silent: the material is mostly silence


class EffectPairs(Dataset):
    """Source clips paired with normalised processor settings drawn uniformly in [0, 1]."""

    def __init__(self, source: Sequence, num_params: int, seed: int, train: bool = False):
        self.source, self.num_params, self.seed, self.train = source, num_params, seed, train
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.source, "set_epoch"):  # sources that draw new crops every epoch
            self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def params_for(self, i: int) -> torch.Tensor:
        key = (self.seed, self.epoch, i) if self.train else (self.seed, i)
        rng = np.random.default_rng(key)
        return torch.from_numpy(rng.random(self.num_params).astype(np.float32))

    def __getitem__(self, i: int) -> dict:
        # the index lets the test count every example once under DDP (the sampler pads)
        return {"dry": self.source[i], "norm_params": self.params_for(i), "index": i}

