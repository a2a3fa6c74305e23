"""Reading and writing audio files (soundfile), resampling with torchaudio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["load_audio", "save_audio"]


def load_audio(path: str | Path, sample_rate: int, channels: int) -> torch.Tensor:
    """Read a wav/flac/ogg file as float32 (channels, samples) at ``sample_rate``.

    Raises ``ValueError`` for unreadable, empty or non-finite files."""
    import soundfile as sf
    import torchaudio.functional as AF

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.size == 0 or not np.isfinite(data).all():
        raise ValueError(f"audio file {path} is empty or contains NaN/Inf")
    audio = torch.from_numpy(data.T.copy())
    if sr != sample_rate:
        audio = AF.resample(audio, sr, sample_rate)
    if audio.shape[0] != channels:
        audio = audio.mean(dim=0, keepdim=True).expand(channels, -1).clone()
    return audio


def save_audio(path: str | Path, audio: torch.Tensor, sample_rate: int) -> None:
    """Write (channels, samples) audio as 16-bit PCM WAV (clipped to [-1, 1])."""
    import soundfile as sf

    data = audio.detach().cpu().float().clamp(-1, 1).numpy().T
    sf.write(str(path), data, sample_rate, subtype="PCM_16")
