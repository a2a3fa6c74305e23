"""Linkwitz-Riley 4th-order crossovers with allpass compensation.

A 4th-order Linkwitz-Riley low-pass (high-pass) is two cascaded 2nd-order Butterworth low-passes
(high-passes), Q = 1/sqrt(2), both from the bilinear transform prewarped at the crossover
frequency. Their sum is the 2nd-order allpass with the same frequency and Q, so a series split in
which every lower band also passes the allpasses of the crossovers above it sums to an allpass:
the band sum keeps the input's magnitude exactly.

Every batch item is filtered with its own frequencies; channels share their item's filters.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from ._ops.biquad import biquad
from ._ops.split import FUSED_MAX_BANDS, fused_split, split_topology

__all__ = [
    "F_LO",
    "F_HI",
    "crossover_ranges",
    "biquad_coeffs",
    "biquad",
    "lr4_lowpass",
    "lr4_highpass",
    "allpass2",
    "split_bands",
    "split_bands_stacked",
]

F_LO = 20.0
F_HI = 20000.0
NYQUIST_FRACTION = 0.45
BIQUAD_KINDS = ("lowpass", "highpass", "allpass")


def crossover_ranges(num_bands: int, sample_rate: float) -> list[tuple[float, float]]:
    """Adjacent, disjoint, log-spaced ranges of the ``num_bands - 1`` crossover frequencies.

    With f_lo = 20 Hz, f_hi = min(20 kHz, 0.45 fs) and rho = f_hi / f_lo, crossover i spans
    ``[f_lo rho^(i/(N-1)), f_lo rho^((i+1)/(N-1))]``.

    Example:
        >>> [(round(lo), round(hi)) for lo, hi in crossover_ranges(3, 44100)]
        [(20, 630), (630, 19845)]
    """
    f_hi = min(F_HI, NYQUIST_FRACTION * sample_rate)
    if f_hi <= F_LO:
        raise ValueError(f"sample_rate {sample_rate} is too low for crossovers above {F_LO} Hz")
    n = num_bands - 1
    edges = [F_LO * (f_hi / F_LO) ** (i / n) for i in range(n + 1)]
    edges[-1] = f_hi
    return [(edges[i], edges[i + 1]) for i in range(n)]


def biquad_coeffs(kind: str, freq: Tensor, sample_rate: float) -> tuple[Tensor, Tensor]:
    """Butterworth (Q = 1/sqrt 2) biquad coefficients from the prewarped bilinear transform.

    Args:
        kind: ``"lowpass"``, ``"highpass"`` or ``"allpass"``.
        freq: (B,) frequencies in Hz.

    Returns:
        ``(b, a)``, each (B, 3), normalised so that ``a[:, 0] = 1``, in float64 whatever the
        dtype of ``freq`` (gradients flow back to it): near z = 1 (a low crossover at a high
        sample rate) float32 coefficients move the poles enough to break the allpass sum by
        0.03 dB at 44.1 kHz and 2.4 dB at 192 kHz.
    """
    w0 = 2.0 * math.pi * freq.double() / sample_rate
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / math.sqrt(2.0)  # sin(w0) / (2 Q) with Q = 1/sqrt(2)
    a0 = 1.0 + alpha
    one = torch.ones_like(cos_w0)
    a = torch.stack([one, -2.0 * cos_w0 / a0, (1.0 - alpha) / a0], dim=-1)
    if kind == "lowpass":
        c = (1.0 - cos_w0) / a0
        b = torch.stack([0.5 * c, c, 0.5 * c], dim=-1)
    elif kind == "highpass":
        c = (1.0 + cos_w0) / a0
        b = torch.stack([0.5 * c, -c, 0.5 * c], dim=-1)
    elif kind == "allpass":
        b = torch.stack([a[:, 2], a[:, 1], one], dim=-1)
    else:
        raise ValueError(f"kind must be one of {BIQUAD_KINDS}, got {kind!r}")
    return b, a


def lr4_lowpass(x: Tensor, freq: Tensor, sample_rate: float) -> Tensor:
    """4th-order Linkwitz-Riley low-pass of (B, C, T) audio at (B,) frequencies."""
    b, a = biquad_coeffs("lowpass", freq, sample_rate)
    return biquad(biquad(x, b, a), b, a)


def lr4_highpass(x: Tensor, freq: Tensor, sample_rate: float) -> Tensor:
    """4th-order Linkwitz-Riley high-pass of (B, C, T) audio at (B,) frequencies."""
    b, a = biquad_coeffs("highpass", freq, sample_rate)
    return biquad(biquad(x, b, a), b, a)


def allpass2(x: Tensor, freq: Tensor, sample_rate: float) -> Tensor:
    """2nd-order allpass (Q = 1/sqrt 2): the sum of the LR4 low-pass and high-pass at ``freq``."""
    b, a = biquad_coeffs("allpass", freq, sample_rate)
    return biquad(x, b, a)


def split_bands(x: Tensor, freqs: list[Tensor], sample_rate: float) -> list[Tensor]:
    """Split (B, C, T) audio into ``len(freqs) + 1`` bands whose sum is an allpass of x.

    ``freqs`` are the (B,) crossover frequencies, ascending. In series: band i is the low-pass at
    ``freqs[i]`` of what the lower crossovers left, then the allpasses of every crossover above
    it (phase compensation); the last band is the remaining high-pass.
    For 3 bands: ``AP_f1(LP_f0 x), LP_f1(HP_f0 x), HP_f1(HP_f0 x)``.
    """
    bands = []
    rest = x
    for i, f in enumerate(freqs):
        low = lr4_lowpass(rest, f, sample_rate)
        for f_above in freqs[i + 1 :]:
            low = allpass2(low, f_above, sample_rate)
        bands.append(low)
        rest = lr4_highpass(rest, f, sample_rate)
    bands.append(rest)
    return bands


def split_coeffs(freqs: list[Tensor], sample_rate: float) -> Tensor:
    """The (B, S, 5) float64 ``(b0, b1, b2, a1, a2)`` of every stage of the fused split
    (:func:`dynfx._ops.split.split_topology` for ``len(freqs) + 1`` bands): the formulas of
    :func:`biquad_coeffs`, evaluated for all stages at once."""
    kinds, index = _stage_table(len(freqs) + 1)
    w0 = 2.0 * math.pi * torch.stack(freqs, dim=1).double()[:, index] / sample_rate  # (B, S)
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / math.sqrt(2.0)
    a0 = 1.0 + alpha
    a1 = -2.0 * cos_w0 / a0
    a2 = (1.0 - alpha) / a0
    is_hp, is_ap = kinds == 1, kinds == 2
    c = torch.where(is_hp, 1.0 + cos_w0, 1.0 - cos_w0) / a0
    half = 0.5 * c
    b0 = torch.where(is_ap, a2, half)
    b1 = torch.where(is_ap, a1, torch.where(is_hp, -c, c))
    b2 = torch.where(is_ap, torch.ones_like(c), half)
    return torch.stack([b0, b1, b2, a1, a2], dim=-1)


@lru_cache(maxsize=None)
def _stage_table(num_bands: int) -> tuple[Tensor, Tensor]:
    """Per stage of the split: its kind (0 low-pass, 1 high-pass, 2 allpass) and crossover."""
    stages, _, _ = split_topology(num_bands)
    codes = {"lowpass": 0, "highpass": 1, "allpass": 2}
    return (torch.tensor([codes[kind] for kind, _ in stages]),
            torch.tensor([i for _, i in stages]))


def split_bands_stacked(x: Tensor, freqs: list[Tensor], sample_rate: float) -> Tensor:
    """:func:`split_bands` with the bands stacked as (B, len(freqs) + 1, C, T).

    On CPU (float32, float64, up to :data:`~dynfx._ops.split.FUSED_MAX_BANDS` bands) the whole
    split is one fused pass over the input (:func:`dynfx._ops.split.fused_split`: every biquad
    state of a row in registers, the backward pass recomputing chunk by chunk); elsewhere the
    separate biquad passes of :func:`split_bands`, stacked. Both compute the same bands (float64
    recursion).
    """
    if (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and len(freqs) + 1 <= FUSED_MAX_BANDS):
        return fused_split(x, split_coeffs(freqs, sample_rate), len(freqs) + 1)
    return torch.stack(split_bands(x, freqs, sample_rate), dim=1)
