"""Audio-feature encoders that predict a processor's normalised settings.

Input modes: ``"wet"`` (the processed audio only) or ``"dry_wet"`` (both). Features:

- a log-mel spectrogram (mono mix) of wet (and dry);
- a fine-hop level envelope in dB (about 3 ms frames) of wet (and dry, and their difference,
  which is the applied gain over time);
- in ``dry_wet`` mode, the gain-versus-level profile: the mean wet-minus-dry level in soft bins of
  the dry level, i.e. a measured static curve.

A head with a sigmoid gives ``num_outputs`` values in [0, 1] (the processor's ``norm_params``).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn

__all__ = ["MelEnvelopeEncoder", "EnvelopeEncoder", "INPUT_MODES", "level_envelope_db"]

INPUT_MODES = ("wet", "dry_wet")
LEVEL_BINS_DB = (-90.0, 0.0, 30)  # low, high, count of the gain-versus-level profile


def level_envelope_db(x: Tensor, hop: int) -> Tensor:
    """Frame RMS level in dB of (B, C, T) audio, channels linked: (B, T // hop)."""
    power = x.square().mean(dim=1, keepdim=True)  # (B, 1, T)
    frames = nn.functional.avg_pool1d(power, kernel_size=hop, stride=hop)
    return 10.0 * torch.log10(frames.squeeze(1) + 1e-10)


PROFILE_SMOOTHING_FRAMES = (1, 5, 17, 65)  # dry-level smoothing for the profiles (~3-200 ms)


def gain_level_profile(dry_db: Tensor, wet_db: Tensor) -> Tensor:
    """Measured static curves: the mean gain (wet - dry, dB, per frame) in soft bins of the dry
    level, and the bins' occupancy, for the dry level smoothed over 1, 5, 17 and 65 frames (the
    detector of a compressor with slow attack/release sees a smoothed level): (B, 8K)."""
    lo, hi, k = LEVEL_BINS_DB
    centres = torch.linspace(lo, hi, k, device=dry_db.device, dtype=dry_db.dtype)
    width = (hi - lo) / (k - 1)
    gain_db = wet_db - dry_db
    power = torch.pow(10.0, dry_db / 10.0)[:, None]
    feats = []
    for frames in PROFILE_SMOOTHING_FRAMES:
        smooth = power if frames == 1 else nn.functional.avg_pool1d(
            power, frames, stride=1, padding=frames // 2, count_include_pad=False)
        level = 10.0 * torch.log10(smooth[:, 0, : dry_db.shape[1]] + 1e-10)
        w = torch.exp(-0.5 * ((level[:, :, None] - centres) / width) ** 2)  # (B, F, K)
        occupancy = w.sum(dim=1)
        gain = (gain_db[:, :, None] * w).sum(dim=1) / (occupancy + 1e-3)
        feats += [gain / 20.0, torch.log1p(occupancy) / 5.0]
    return torch.cat(feats, dim=1)


PROFILE_SIZE = 2 * LEVEL_BINS_DB[2] * len(PROFILE_SMOOTHING_FRAMES)


class _Features(nn.Module):
    def __init__(self, sample_rate: int, input_mode: str, env_hop_ms: float, n_mels: int = 64,
                 use_mel: bool = True):
        super().__init__()
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.input_mode = input_mode
        self.hop = max(1, int(round(env_hop_ms * sample_rate / 1000)))
        self.mel = (
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256,
                                                 n_mels=n_mels, power=2.0)
            if use_mel else None
        )

    @property
    def dry_wet(self) -> bool:
        return self.input_mode == "dry_wet"

    def envelopes(self, wet: Tensor, dry: Tensor | None) -> tuple[Tensor, Tensor | None]:
        env_wet = level_envelope_db(wet, self.hop)
        if not self.dry_wet:
            return env_wet[:, None] / 20.0, None
        env_dry = level_envelope_db(dry, self.hop)
        stack = torch.stack([env_wet, env_dry, env_wet - env_dry], dim=1) / 20.0
        return stack, gain_level_profile(env_dry, env_wet)

    def log_mel(self, wet: Tensor, dry: Tensor | None) -> Tensor:
        sigs = [wet, dry] if self.dry_wet else [wet]
        mels = [torch.log(self.mel(s.mean(dim=1)) + 1e-6) for s in sigs]  # (B, M, F) each
        return torch.stack(mels, dim=1) / 10.0


def _conv1d_stack(in_ch: int, width: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    ch = in_ch
    for _ in range(layers):
        mods += [nn.Conv1d(ch, width, 5, stride=2, padding=2), nn.GELU()]
        ch = width
    return nn.Sequential(*mods)


def _pool1d(h: Tensor) -> Tensor:
    return torch.cat([h.mean(dim=-1), h.amax(dim=-1), h.std(dim=-1)], dim=1)


def _head(features: int, hidden: int, outputs: int) -> nn.Sequential:
    """LayerNorm over the joined features (they come at different scales), two hidden layers,
    a sigmoid output."""
    return nn.Sequential(nn.LayerNorm(features), nn.Linear(features, hidden), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, outputs),
                         nn.Sigmoid())


class EnvelopeEncoder(nn.Module):
    """Light encoder: 1-D convolutions over the level envelopes (+ the gain-versus-level profile in
    ``dry_wet`` mode). Fast on a CPU.

    Shape:
        wet, dry: (B, C, T); output: (B, num_outputs) in [0, 1].
    """

    def __init__(self, num_outputs: int, sample_rate: int = 22050, input_mode: str = "dry_wet",
                 env_hop_ms: float = 3.0, width: int = 48, layers: int = 5, hidden: int = 128):
        super().__init__()
        self.features = _Features(sample_rate, input_mode, env_hop_ms, use_mel=False)
        env_ch = 3 if input_mode == "dry_wet" else 1
        self.env_net = _conv1d_stack(env_ch, width, layers)
        extra = PROFILE_SIZE if input_mode == "dry_wet" else 0
        self.head = _head(3 * width + extra, hidden, num_outputs)

    def forward(self, wet: Tensor, dry: Tensor | None = None) -> Tensor:
        env, profile = self.features.envelopes(wet, dry)
        h = [_pool1d(self.env_net(env))]
        if profile is not None:
            h.append(profile)
        return self.head(torch.cat(h, dim=1))


class MelEnvelopeEncoder(nn.Module):
    """Default encoder: a 2-D CNN over the log-mel spectrogram(s) and a 1-D CNN over the fine-hop
    level envelopes (+ the gain-versus-level profile in ``dry_wet`` mode), joined by an MLP head.

    Shape:
        wet, dry: (B, C, T); output: (B, num_outputs) in [0, 1].
    """

    def __init__(self, num_outputs: int, sample_rate: int = 22050, input_mode: str = "dry_wet",
                 env_hop_ms: float = 3.0, n_mels: int = 64, width: int = 48, hidden: int = 192):
        super().__init__()
        self.features = _Features(sample_rate, input_mode, env_hop_ms, n_mels=n_mels)
        mel_ch = 2 if input_mode == "dry_wet" else 1
        self.mel_net = nn.Sequential(
            nn.Conv2d(mel_ch, 16, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d((4, 1)),
        )
        env_ch = 3 if input_mode == "dry_wet" else 1
        self.env_net = _conv1d_stack(env_ch, width, 5)
        extra = PROFILE_SIZE if input_mode == "dry_wet" else 0
        self.head = _head(32 * 4 + 3 * width + extra, hidden, num_outputs)

    def forward(self, wet: Tensor, dry: Tensor | None = None) -> Tensor:
        env, profile = self.features.envelopes(wet, dry)
        h = [self.mel_net(self.features.log_mel(wet, dry)).flatten(1), _pool1d(self.env_net(env))]
        if profile is not None:
            h.append(profile)
        return self.head(torch.cat(h, dim=1))
