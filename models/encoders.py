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

import math

import torch
import torchaudio
from torch import Tensor, nn

from dynfx import functional as F

__all__ = ["MelEnvelopeEncoder", "EnvelopeEncoder", "FrameEncoder", "INPUT_MODES", "uses_dry",
           "level_envelope_db", "frame_features"]

INPUT_MODES = ("wet", "dry_wet")


def uses_dry(input_mode: str) -> bool:
    """Whether ``input_mode`` gives the network the dry audio too: the one place where the input
    modes are told apart (encoders, the module, the benchmark and predict all ask here); any
    other value is a clear error."""
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    return input_mode == "dry_wet"
LEVEL_BINS_DB = (-90.0, 0.0, 30)  # low, high, count of the gain-versus-level profile


def level_envelope_db(x: Tensor, hop: int) -> Tensor:
    """Frame RMS level in dB of (B, C, T) audio, channels linked: (B, T // hop)."""
    power = x.square().mean(dim=1, keepdim=True)  # (B, 1, T)
    frames = nn.functional.avg_pool1d(power, kernel_size=hop, stride=hop)
    return F.power_to_db(frames.squeeze(1), 1e-10)


PROFILE_SMOOTHING_FRAMES = (1, 5, 17, 65)  # dry-level smoothing for the profiles (~3-200 ms)


def _smoothed_level_db(level_db: Tensor, frames: int) -> Tensor:
    """A (B, F) level trace in dB averaged in power over ``frames`` frames (centred)."""
    power = torch.pow(10.0, level_db / 10.0)[:, None]
    if frames > 1:
        power = nn.functional.avg_pool1d(power, frames, stride=1, padding=frames // 2,
                                         count_include_pad=False)
    return F.power_to_db(power[:, 0, : level_db.shape[1]], 1e-10)


def _level_bins(level: Tensor) -> Tensor:
    """Soft (Gaussian) membership of each frame's level in the bins of :data:`LEVEL_BINS_DB`:
    (B, F) -> (B, F, K)."""
    lo, hi, k = LEVEL_BINS_DB
    centres = torch.linspace(lo, hi, k, device=level.device, dtype=level.dtype)
    width = (hi - lo) / (k - 1)
    return torch.exp(-0.5 * ((level[:, :, None] - centres) / width) ** 2)


def gain_level_profile(dry_db: Tensor, wet_db: Tensor,
                       smoothing: tuple = PROFILE_SMOOTHING_FRAMES) -> Tensor:
    """Measured static curves: the mean gain (wet - dry, dB, per frame) in soft bins of the dry
    level, and the bins' occupancy, for the dry level smoothed over each count of ``smoothing``
    frames (by default 1, 5, 17 and 65: the detector of a compressor with slow attack/release
    sees a smoothed level): (B, 2 K len(smoothing))."""
    gain_db = wet_db - dry_db
    feats = []
    for frames in smoothing:
        w = _level_bins(_smoothed_level_db(dry_db, frames))  # (B, F, K)
        occupancy = w.sum(dim=1)
        gain = (gain_db[:, :, None] * w).sum(dim=1) / (occupancy + 1e-3)
        feats += [gain / 20.0, torch.log1p(occupancy) / 5.0]
    return torch.cat(feats, dim=1)


PROFILE_SIZE = 2 * LEVEL_BINS_DB[2] * len(PROFILE_SMOOTHING_FRAMES)


def level_motion_profile(level_db: Tensor) -> Tensor:
    """Wet-only statistics of a level trace (B, F) in dB: for the level smoothed over 1, 5, 17
    and 65 frames, in soft bins of that level, the bins' occupancy and the mean rise and mean
    fall of the level over the next smoothing span. A compressor or expander changes how fast
    the level moves above or below its threshold (by its ratio), and this shows where: (B, 3K4)."""
    feats = []
    for frames in PROFILE_SMOOTHING_FRAMES:
        level = _smoothed_level_db(level_db, frames).clamp_min(DB_FLOOR)
        step = level[:, frames:] - level[:, :-frames]  # (B, F - s)
        w = _level_bins(level[:, :-frames])
        occupancy = w.sum(dim=1) + 1e-3
        rise = (step.clamp_min(0.0)[:, :, None] * w).sum(dim=1) / occupancy
        fall = (step.clamp_max(0.0)[:, :, None] * w).sum(dim=1) / occupancy
        feats += [torch.log1p(occupancy) / 5.0, rise / 10.0, fall / 10.0]
    return torch.cat(feats, dim=1)


MOTION_PROFILE_SIZE = 3 * LEVEL_BINS_DB[2] * len(PROFILE_SMOOTHING_FRAMES)
BAND_PROFILE_SMOOTHING = (1,)  # per-band profiles: band frames are already 11.6 ms
BAND_PROFILE_SIZE = 2 * LEVEL_BINS_DB[2] * len(BAND_PROFILE_SMOOTHING)


class _Features(nn.Module):
    def __init__(self, sample_rate: int, input_mode: str, env_hop_ms: float, n_mels: int = 64,
                 use_mel: bool = True):
        super().__init__()
        self.uses_dry = uses_dry(input_mode)
        self.input_mode = input_mode
        self.hop = max(1, int(round(env_hop_ms * sample_rate / 1000)))
        self.mel = (
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256,
                                                 n_mels=n_mels, power=2.0)
            if use_mel else None
        )

    def envelopes(self, wet: Tensor, dry: Tensor | None) -> tuple[Tensor, Tensor | None]:
        env_wet = level_envelope_db(wet, self.hop)
        if not self.uses_dry:
            return env_wet[:, None] / 20.0, None
        env_dry = level_envelope_db(dry, self.hop)
        stack = torch.stack([env_wet, env_dry, env_wet - env_dry], dim=1) / 20.0
        return stack, gain_level_profile(env_dry, env_wet)

    def log_mel(self, wet: Tensor, dry: Tensor | None) -> Tensor:
        sigs = [wet, dry] if self.uses_dry else [wet]
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
        self.input_mode = input_mode
        dry_wet = self.features.uses_dry
        self.env_net = _conv1d_stack(3 if dry_wet else 1, width, layers)
        extra = PROFILE_SIZE if dry_wet else 0
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
        self.input_mode = input_mode
        dry_wet = self.features.uses_dry
        mel_ch = 2 if dry_wet else 1
        self.mel_net = nn.Sequential(
            nn.Conv2d(mel_ch, 16, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d((4, 1)),
        )
        self.env_net = _conv1d_stack(3 if dry_wet else 1, width, 5)
        extra = PROFILE_SIZE if dry_wet else 0
        self.head = _head(32 * 4 + 3 * width + extra, hidden, num_outputs)

    def forward(self, wet: Tensor, dry: Tensor | None = None) -> Tensor:
        env, profile = self.features.envelopes(wet, dry)
        h = [self.mel_net(self.features.log_mel(wet, dry)).flatten(1), _pool1d(self.env_net(env))]
        if profile is not None:
            h.append(profile)
        return self.head(torch.cat(h, dim=1))


# --------------------------------------------------------------------------------------------
# FrameEncoder: fine-hop level and gain traces into a dilated 1-D CNN (a sequence model)
# --------------------------------------------------------------------------------------------
DB_FLOOR = -100.0


def frame_features(wet: Tensor, dry: Tensor | None, hop: int, sub_blocks: int = 1) -> Tensor:
    """Per-frame traces of (B, C, T) audio, channels linked, scaled by 1/20 dB: (B, K, T // hop).

    Each frame of ``hop`` samples is also cut into ``sub_blocks`` equal parts (S) whose peaks
    are read separately: fast attacks change the gain within a frame.

    ``dry_wet`` (K = 4 + 2S): dry RMS level, wet RMS level, their difference (the applied gain),
    the dry peak level of each part, the gain at the dry signal's peak sample of each part (a
    clean reading of the instantaneous gain, where the signal is loudest), and a validity flag
    (dry above -80 dBFS). ``wet`` (K = 1 + 2S): wet RMS level, the wet peak level of each part
    and its excess over the RMS level (the crest factor).
    """
    S = int(sub_blocks)
    if S < 1 or hop % S:
        raise ValueError(f"sub_blocks must divide the hop ({hop}), got {sub_blocks}")
    frames = wet.shape[-1] // hop
    n = frames * hop

    def traces(x):
        mag = x[..., :n].abs().mean(dim=1).reshape(x.shape[0], frames * S, hop // S)
        power = x[..., :n].square().mean(dim=1).reshape(x.shape[0], frames, hop).mean(-1)
        rms_db = F.power_to_db(power, 1e-20).clamp_min(DB_FLOOR)
        peak, idx = mag.max(dim=-1)  # per part
        peak_db = F.amp_to_db(peak, 1e-20).clamp_min(DB_FLOOR)
        return mag, rms_db, peak_db, idx

    def parts(t):  # (B, frames * S) -> S channels of (B, frames)
        return list(t.reshape(t.shape[0], frames, S).unbind(-1))

    mag_w, rms_w, peak_w, _ = traces(wet)
    if dry is None:
        crest = peak_w - rms_w.repeat_interleave(S, dim=1)
        return torch.stack([rms_w, *parts(peak_w), *parts(crest)], dim=1) / 20.0
    _, rms_d, peak_d, idx = traces(dry)
    at_peak = mag_w.gather(-1, idx[..., None]).squeeze(-1)
    gain_peak = F.amp_to_db(at_peak, 1e-20).clamp_min(DB_FLOOR) - peak_d
    valid = (rms_d > -80.0).to(wet.dtype)
    gain_peak = gain_peak.clamp(-60.0, 40.0) * valid.repeat_interleave(S, dim=1)
    gain_rms = (rms_w - rms_d).clamp(-60.0, 40.0) * valid
    return torch.stack([rms_d, rms_w, gain_rms, *parts(peak_d), *parts(gain_peak), 20.0 * valid],
                       dim=1) / 20.0


BAND_RANGE_HZ = (40.0, 16000.0)  # the log-spaced analysis bands of the band traces
BAND_HOP_FRAMES = 4  # band traces are measured every 4 frames (11.6 ms at the default hop)


def band_matrix(bands: int, n_fft: int, sample_rate: int) -> Tensor:
    """(bands, n_fft // 2 + 1) 0/1 matrix: which STFT bins make up each of ``bands`` log-spaced
    bands over :data:`BAND_RANGE_HZ` (clipped to 0.45 fs); every band holds at least one bin."""
    lo, hi = BAND_RANGE_HZ
    hi = min(hi, 0.45 * sample_rate)
    bins = n_fft // 2 + 1
    freqs = torch.arange(bins, dtype=torch.float64) * sample_rate / n_fft
    edges = torch.logspace(math.log10(lo), math.log10(hi), bands + 1, dtype=torch.float64)
    m = torch.zeros(bands, bins)
    for b in range(bands):
        inside = (freqs >= edges[b]) & (freqs < edges[b + 1])
        if not inside.any():  # a band narrower than a bin: the nearest bin
            inside = (freqs - (edges[b] * edges[b + 1]).sqrt()).abs() == \
                (freqs - (edges[b] * edges[b + 1]).sqrt()).abs().min()
        m[b, inside] = 1.0
    return m


def band_levels_db(x: Tensor, matrix: Tensor, hop: int, frames: int) -> Tensor:
    """Per-band level in dB of (B, C, T) audio mixed to mono: the power of the STFT bins of
    each band (a full-scale sine reads -3 dB in its band) (``matrix`` from
    :func:`band_matrix`, Hann window of ``2 (bins - 1)`` samples, ``hop`` samples apart,
    centred), the first ``frames`` STFT frames: (B, bands, frames)."""
    n_fft = 2 * (matrix.shape[1] - 1)
    spec = torch.stft(x.mean(dim=1), n_fft, hop_length=hop,
                      window=torch.hann_window(n_fft, device=x.device, dtype=x.dtype),
                      center=True, return_complex=True)
    # one-sided bins, Hann window (sum of squares 0.375 n_fft): the bins of a band sum to its power
    power = spec.abs().square()[..., :frames] * (2.0 / (0.375 * n_fft * n_fft))
    band = torch.einsum("kf,bft->bkt", matrix.to(x.dtype), power)
    return F.power_to_db(band, 1e-20).clamp_min(DB_FLOOR)


class _Res(nn.Module):
    """Residual dilated block: GELU(conv k=3, dilation d) then a 1x1 conv, added to the input."""

    def __init__(self, ch: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.mix(nn.functional.gelu(self.conv(h)))


class _AttentionPool(nn.Module):
    """Softmax-over-time weights from a 1x1 conv, ``heads`` weighted means (B, heads * ch), plus
    the plain mean and max over time."""

    def __init__(self, ch: int, heads: int):
        super().__init__()
        self.score = nn.Conv1d(ch, heads, 1)
        self.heads = heads

    def forward(self, h: Tensor) -> Tensor:
        w = torch.softmax(self.score(h), dim=-1)  # (B, heads, F)
        att = torch.einsum("bhf,bcf->bhc", w, h).flatten(1)
        return torch.cat([att, h.mean(dim=-1), h.amax(dim=-1)], dim=1)


class _Feedback(nn.Module):
    """A learned correction of a first estimate (error feedback): the dry audio rendered at the
    estimate is compared with the wet audio frame by frame, and a second dilated CNN reads the
    wet traces with the residual gain (wet minus render, RMS and at the dry peaks) and the
    residual gain-versus-level profile, and moves the estimate in logit space. Comparing the
    target with a render at a hypothesis shows where and how the hypothesis is wrong, which is
    easier to learn than the settings from the traces alone (the same information that makes
    refinement work, used once, without gradient steps)."""

    def __init__(self, num_outputs: int, sub_blocks: int, width: int, dilations: tuple,
                 heads: int, hidden: int):
        super().__init__()
        S = int(sub_blocks)
        # residual channels of frame_features(dry_wet): the RMS gain and each part's peak gain
        self.residual_channels = [2, *range(4 + S, 4 + 2 * S)]
        in_ch = 4 + 2 * S + len(self.residual_channels)
        layers: list[nn.Module] = [nn.Conv1d(in_ch, width, 5, padding=2)]
        layers += [_Res(width, int(d)) for d in dilations]
        layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        self.pool = _AttentionPool(width, heads)
        self.head = nn.Sequential(
            nn.LayerNorm((heads + 2) * width + 2 * PROFILE_SIZE + num_outputs),
            nn.Linear((heads + 2) * width + 2 * PROFILE_SIZE + num_outputs, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_outputs))
        nn.init.zeros_(self.head[-1].weight)  # starts as the identity: the first estimate
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, first: Tensor, feats_wet: Tensor, feats_render: Tensor) -> Tensor:
        residual = feats_wet[:, self.residual_channels] - feats_render[:, self.residual_channels]
        h = self.pool(self.net(torch.cat([feats_wet, residual], dim=1)))
        dry_db, wet_db, y_db = feats_wet[:, 0] * 20.0, feats_wet[:, 1] * 20.0, \
            feats_render[:, 1] * 20.0
        prof_wet = gain_level_profile(dry_db, wet_db)
        prof_res = prof_wet - gain_level_profile(dry_db, y_db)
        u = first.detach().clamp(1e-4, 1.0 - 1e-4)
        step = self.head(torch.cat([h, prof_wet, prof_res, u], dim=1))
        return torch.sigmoid(torch.logit(u) + step)


class FrameEncoder(nn.Module):
    """Sequence encoder over fine-hop traces (see :func:`frame_features`; 2.9 ms frames at
    44.1 kHz, each read in ``sub_blocks`` parts, by default): a stem, then one or more stages of
    residual dilated convolutions (``widths``: one stage per entry, each after the first halving
    the frame rate; ``stem_stride`` > 1 starts at a lower rate). The default is one stage at the
    full frame rate with dilations up to 256 frames: 3 ms resolution for attack times and a
    receptive field over the whole clip for release times. Attention pooling over time, plus in
    ``dry_wet`` mode the measured gain-versus-level profile (in ``wet`` mode with
    ``wet_profile=True`` the level-motion profile, :func:`level_motion_profile`), feed an MLP
    head. ``bands`` > 0 adds per-band traces and profiles (:func:`band_levels_db`) for the
    multi-band processors; ``band_split`` (their band count) adds a second stage that splits
    the audio at the first stage's crossovers and estimates each band's settings from that
    band's own traces and profile (the crossovers stay the first stage's). ``feedback=True``
    (``dry_wet``, single-band processors) adds a learned correction (:class:`_Feedback`): the
    dry audio is rendered through the processor at the first estimate (``attach_processor``)
    and a second network reads the residual; ``stage_preds`` holds both estimates.

    Shape:
        wet, dry: (B, C, T); output: (B, num_outputs) in [0, 1].
    """

    def __init__(self, num_outputs: int, sample_rate: int = 44100, input_mode: str = "dry_wet",
                 hop_ms: float = 2.9, widths: tuple = (48,),
                 dilations: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256), heads: int = 4,
                 hidden: int = 256, stem_stride: int = 1, sub_blocks: int = 4, bands: int = 0,
                 wet_profile: bool = False, band_split: int = 0, feedback: bool = False):
        super().__init__()
        self.uses_dry = dry_wet = uses_dry(input_mode)
        self.input_mode = input_mode
        self.hop = max(1, int(round(hop_ms * sample_rate / 1000)))
        self.sub_blocks = int(sub_blocks)
        if self.sub_blocks < 1 or self.hop % self.sub_blocks:
            raise ValueError(f"sub_blocks must divide the hop of {self.hop} samples, got "
                             f"{sub_blocks}")
        in_ch = (4 if dry_wet else 1) + 2 * self.sub_blocks
        self.bands = int(bands)
        if self.bands < 0:
            raise ValueError(f"bands must be >= 0, got {bands}")
        if self.bands:  # per-band traces for the multi-band processors
            band_hop = self.hop * BAND_HOP_FRAMES
            self.register_buffer("band_matrix", band_matrix(self.bands, 2 * band_hop, sample_rate),
                                 persistent=False)
            in_ch += self.bands * (3 if dry_wet else 1)
        widths = tuple(int(w) for w in widths)
        stem_stride = int(stem_stride)
        if stem_stride == 1:
            layers: list[nn.Module] = [nn.Conv1d(in_ch, widths[0], 5, padding=2)]
        else:  # a strided stem: the first stage runs at a lower frame rate (cheaper)
            layers = [nn.Conv1d(in_ch, widths[0], 2 * stem_stride, stride=stem_stride,
                                padding=stem_stride // 2)]
        prev = widths[0]
        for s, w in enumerate(widths):
            if s > 0:
                layers += [nn.GroupNorm(1, prev), nn.Conv1d(prev, w, 4, stride=2, padding=1)]
            layers += [_Res(w, int(d)) for d in dilations]
            prev = w
        layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)
        self.pool = _AttentionPool(prev, heads)
        extra = PROFILE_SIZE if dry_wet else 0
        if dry_wet:
            extra += self.bands * BAND_PROFILE_SIZE
        self.wet_profile = bool(wet_profile) and not dry_wet
        if self.wet_profile:
            extra += MOTION_PROFILE_SIZE
        self.head = _head((heads + 2) * prev + extra, hidden, num_outputs)
        self.band_split = int(band_split)
        if self.band_split:
            self._init_band_stage(num_outputs, sample_rate, hidden)
        self.feedback = None
        if feedback:
            if not dry_wet:
                raise ValueError("feedback needs input_mode='dry_wet' (it renders the dry audio "
                                 "at the first estimate)")
            if self.bands or self.band_split:
                raise ValueError("feedback is for the single-band processors (bands=0, "
                                 "band_split=0)")
            self.feedback = _Feedback(num_outputs, self.sub_blocks, widths[0], dilations, heads,
                                      hidden)
        self.feedback_enabled = True  # False: the first stage alone (a training phase)
        self._render: list = []  # the processor, set by attach_processor (not a submodule)
        self.stage_preds: list[Tensor] = []  # every stage's estimate of the last forward

    def _init_band_stage(self, num_outputs: int, sample_rate: int, hidden: int) -> None:
        """The multi-band processors' second stage: the crossovers from the first stage split
        the audio into the processor's bands, and one head (shared by the bands, told which band
        by a one-hot code) reads each band's traces and profile for its settings."""
        nb = self.band_split
        if nb < 2 or (num_outputs - (nb - 1)) % nb:
            raise ValueError(f"band_split={nb} does not fit {num_outputs} outputs (bands x "
                             f"settings per band + {nb - 1} crossovers)")
        from dynfx.crossover import crossover_ranges

        self.per_band = (num_outputs - (nb - 1)) // nb
        ranges = torch.tensor(crossover_ranges(nb, sample_rate), dtype=torch.float64)
        self.register_buffer("xover_ranges", ranges, persistent=False)
        self.sample_rate = sample_rate
        k = (4 if self.uses_dry else 1) + 2 * self.sub_blocks
        profile = PROFILE_SIZE if self.uses_dry else MOTION_PROFILE_SIZE
        self.band_head = _head(3 * k + profile + nb, hidden, self.per_band)

    def _band_stage(self, out: Tensor, wet: Tensor, dry: Tensor | None) -> Tensor:
        from dynfx.crossover import split_bands_stacked

        nb, k = self.band_split, self.per_band
        u = out[:, nb * k:].detach().double()  # normalised crossovers, log-scaled in their ranges
        lo, hi = self.xover_ranges[:, 0], self.xover_ranges[:, 1]
        freqs = lo * (hi / lo) ** u  # (B, nb - 1) Hz
        cols = [freqs[:, i].to(wet.dtype) for i in range(nb - 1)]
        with torch.no_grad():
            # (B, nb, C, T): one fused pass on CPU
            wet_bands = split_bands_stacked(wet, cols, self.sample_rate)
            dry_bands = (split_bands_stacked(dry, cols, self.sample_rate) if dry is not None
                         else None)
        settings = []
        for b in range(nb):
            f = frame_features(wet_bands[:, b], None if dry is None else dry_bands[:, b],
                               self.hop, self.sub_blocks)
            prof = (gain_level_profile(f[:, 0] * 20.0, f[:, 1] * 20.0) if dry is not None
                    else level_motion_profile(f[:, 0] * 20.0))
            code = torch.zeros(f.shape[0], nb, dtype=f.dtype, device=f.device)
            code[:, b] = 1.0
            stats = torch.cat([f.mean(-1), f.std(-1), f.amax(-1)], dim=1)
            settings.append(self.band_head(torch.cat([stats, prof, code], dim=1)))
        return torch.cat([*settings, out[:, nb * k:]], dim=1)

    def attach_processor(self, processor: nn.Module) -> None:
        """The processor that the feedback stage renders through (the module's own; kept out
        of this encoder's parameters and state)."""
        self._render = [processor]

    def _feedback_stage(self, first: Tensor, feats: Tensor, wet: Tensor, dry: Tensor) -> Tensor:
        if not self._render:
            raise RuntimeError("FrameEncoder(feedback=True) renders through the processor: "
                               "call attach_processor(processor) first (EffectEstimator does)")
        with torch.no_grad():
            y = self._render[0](dry, norm_params=first.detach(), validate=False)
            feats_y = frame_features(y, dry, self.hop, self.sub_blocks)
        return self.feedback(first, feats, feats_y)

    @property
    def min_samples(self) -> int:
        """The shortest audio this encoder accepts."""
        return 16 * self.hop

    def forward(self, wet: Tensor, dry: Tensor | None = None) -> Tensor:
        if self.uses_dry and dry is None:
            raise ValueError("FrameEncoder(input_mode='dry_wet') needs the dry audio")
        dry = dry if self.uses_dry else None
        feats = frame_features(wet, dry, self.hop, self.sub_blocks)
        if feats.shape[-1] < 16:
            raise ValueError(f"FrameEncoder: the audio is too short ({wet.shape[-1]} samples); "
                             f"it needs at least {self.min_samples}")
        profiles = []
        if dry is not None:
            profiles.append(gain_level_profile(feats[:, 0] * 20.0, feats[:, 1] * 20.0))
        elif self.wet_profile:
            profiles.append(level_motion_profile(feats[:, 0] * 20.0))
        if self.bands:
            feats, band_profile = self._band_traces(feats, wet, dry)
            if band_profile is not None:
                profiles.append(band_profile)
        frozen = self.feedback is not None and not any(
            p.requires_grad for p in self.first_stage_parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            out = self.head(torch.cat([self.pool(self.net(feats)), *profiles], dim=1))
        if self.band_split:
            out = self._band_stage(out, wet, dry)
        self.stage_preds = [out]
        if self.feedback is not None and self.feedback_enabled:
            out = self._feedback_stage(out, feats, wet, dry)
            self.stage_preds.append(out)
        return out

    def first_stage_parameters(self):
        """Every parameter but the feedback stage's."""
        return (p for name, p in self.named_parameters() if not name.startswith("feedback."))

    def _band_traces(self, feats: Tensor, wet: Tensor, dry: Tensor | None):
        """``feats`` joined by the band levels (wet; dry_wet: dry, wet and the band gain) held
        over each 4-frame band hop, and in ``dry_wet`` the per-band gain-versus-level profiles."""
        frames = feats.shape[-1]
        coarse = -(-frames // BAND_HOP_FRAMES)
        hop = self.hop * BAND_HOP_FRAMES
        wet_b = band_levels_db(wet, self.band_matrix, hop, coarse)
        if dry is None:
            traces, profile = wet_b, None
        else:
            dry_b = band_levels_db(dry, self.band_matrix, hop, coarse)
            gain = (wet_b - dry_b).clamp(-60.0, 40.0) * (dry_b > -80.0).to(wet.dtype)
            traces = torch.cat([dry_b, wet_b, gain], dim=1)
            B, K, F = dry_b.shape
            profile = gain_level_profile(dry_b.reshape(B * K, F), wet_b.reshape(B * K, F),
                                         smoothing=BAND_PROFILE_SMOOTHING).reshape(B, -1)
        traces = traces.repeat_interleave(BAND_HOP_FRAMES, dim=-1)[..., :frames] / 20.0
        return torch.cat([feats, traces], dim=1), profile
