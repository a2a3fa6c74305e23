"""Datasets: built-in synthetic clips, the effect-matching pairs, and the training sampler.

(A folder of the user's audio streams from ``folder.FolderClips``, re-exported here.)

Every item is ``{"dry": (C, T) float32, "norm_params": (P,) float32, "index": int}``; the wet target is rendered
on the fly by the LightningModule (``wet = processor(dry, norm_params)``), batched, on its device.
Parameters are drawn uniformly in normalised space from a generator seeded by (seed, index), and
for the training split also by the epoch, so validation and test targets are identical on every run
and machine while training sees new settings every epoch.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .folder import AUDIO_EXTENSIONS, FolderClips, split_key
from .synth import SynthConfig, generate_clip

__all__ = ["SyntheticClips", "FolderClips", "MixedClips", "EffectPairs", "EpochSampler",
           "AUDIO_EXTENSIONS"]


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


class MixedClips(Dataset):
    """Two clip sources as one split: indices ``0 .. len(first) - 1`` come from ``first``, the
    rest from ``second`` (the training sampler shuffles them together). Epochs reach both."""

    def __init__(self, first: Sequence, second: Sequence):
        self.parts = (first, second)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for part in self.parts:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.parts[0]) + len(self.parts[1])

    def __getitem__(self, key) -> torch.Tensor:
        epoch, i = split_key(key, self.epoch)
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = self.parts[0] if i < len(self.parts[0]) else self.parts[1]
        j = i if part is self.parts[0] else i - len(self.parts[0])
        return part[(epoch, j)] if hasattr(part, "set_epoch") else part[j]


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

    def params_for(self, i: int, epoch: int | None = None) -> torch.Tensor:
        epoch = self.epoch if epoch is None else epoch
        key = (self.seed, epoch, i) if self.train else (self.seed, i)
        rng = np.random.default_rng(key)
        return torch.from_numpy(rng.random(self.num_params).astype(np.float32))

    def __getitem__(self, key) -> dict:
        """``key``: an index (at the dataset's epoch) or an ``(epoch, index)`` pair from
        ``EpochSampler``, which carries the epoch into DataLoader workers."""
        epoch, i = split_key(key, self.epoch)
        # the index lets the test count every example once under DDP (the sampler pads)
        # sources that draw new crops every epoch take the pair, fixed ones the index
        dry = self.source[(epoch, i)] if hasattr(self.source, "set_epoch") else self.source[i]
        return {"dry": dry, "norm_params": self.params_for(i, epoch), "index": i}


class EpochSampler(Sampler):
    """Training order: a permutation of ``range(size)`` seeded by (seed, epoch), yielding
    ``(epoch, index)`` keys, so that the examples of an epoch are the same in the main process
    and in any number of (persistent) DataLoader workers, and a resumed run draws exactly what
    an uninterrupted one would. Lightning calls ``set_epoch`` before every training epoch."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = int(size), int(seed), bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        order = (np.random.default_rng([self.seed, epoch, 31]).permutation(self.size)
                 if self.shuffle else np.arange(self.size))
        for i in order:
            yield epoch, int(i)

