"""Functional layer in physical units: unit converters, detectors, smoothing, gain computers.

Conventions: audio ``x`` is (B, C, T); detector, envelope, level and gain signals are (B, T);
parameters are (B,) tensors of the signal's dtype and device (see :func:`dynfx.params.as_batch`).
Levels and gains are in dB, times in milliseconds, frequencies in Hz. Every function here is
differentiable with respect to its tensor inputs. Crossover filters live in
:mod:`dynfx.crossover`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
import torch.nn.functional as tnf
from torch import Tensor

from ._ops.band import band_dynamics, band_dynamics_reference
from ._ops.ballistics import ballistics
from ._ops.gain_match import gain_match_loss
from ._ops.transient import (HOLD_RELEASE_FACTOR, SOUNDING_HIGH_DB, SOUNDING_LOW_DB,
                             TRANSIENT_FULL_DB, transient_gain_reference, transient_shaper)

__all__ = [
    "KNEE_TYPES",
    "SMOOTH_TYPES",
    "DETECTORS",
    "db_to_amp",
    "amp_to_db",
    "db_to_power",
    "power_to_db",
    "ms_to_coef",
    "coef_to_ms",
    "detect",
    "level_db",
    "smoothing_coefs",
    "smooth",
    "compressor_gain",
    "expander_gain",
    "gate_gain",
    "GainComputer",
    "GAIN_COMPUTERS",
    "process_band",
    "process_band_reference",
    "transient_gain",
    "transient_coefs",
    "process_transient",
    "gain_match_loss",
    "TRANSIENT_FULL_DB",
    "HOLD_RELEASE_FACTOR",
    "SOUNDING_LOW_DB",
    "SOUNDING_HIGH_DB",
]

KNEE_TYPES = ("hard", "quadratic", "exponential")
SMOOTH_TYPES = ("ballistics", "iir")
DETECTORS = ("rms", "peak")

RMS_EPS = 1e-12  # added to power before the dB conversion (floor -120 dB)
PEAK_EPS = 1e-6  # added to amplitude before the dB conversion (floor -120 dB)
# Knee widths at or below this many dB use the hard-knee formula: the difference is below
# 1e-6 dB, and it keeps 1/W and 4/W finite for every width.
MIN_KNEE_DB = 1e-6


# ---------------------------------------------------------------------------------------------
# Unit converters (inverse pairs)
# ---------------------------------------------------------------------------------------------
def db_to_amp(db: Tensor) -> Tensor:
    """dB to amplitude ratio, ``10 ** (db / 20)``."""
    return torch.pow(10.0, db / 20.0)


def amp_to_db(amp: Tensor, eps: float = 0.0) -> Tensor:
    """Amplitude to dB, ``20 log10(amp + eps)``; the inverse of :func:`db_to_amp` for eps = 0."""
    return 20.0 * torch.log10(amp + eps)


def db_to_power(db: Tensor) -> Tensor:
    """dB to power ratio, ``10 ** (db / 10)``."""
    return torch.pow(10.0, db / 10.0)


def power_to_db(power: Tensor, eps: float = 0.0) -> Tensor:
    """Power to dB, ``10 log10(power + eps)``; the inverse of :func:`db_to_power` for eps = 0."""
    return 10.0 * torch.log10(power + eps)


def ms_to_coef(time_ms: Tensor, sample_rate: float) -> Tensor:
    """Time constant in ms to the one-pole new-sample weight ``k = 1 - exp(-1000 / (t fs))``.

    After a step, a one-pole smoother with this weight covers 1 - 1/e (63.2 %) of the step in
    ``time_ms``. Computed with ``expm1`` so that long times keep their precision.
    """
    return -torch.expm1(-1000.0 / (time_ms * sample_rate))


def coef_to_ms(coef: Tensor, sample_rate: float) -> Tensor:
    """The inverse of :func:`ms_to_coef`."""
    return -1000.0 / (sample_rate * torch.log1p(-coef))


# ---------------------------------------------------------------------------------------------
# Detector, smoothing, level
# ---------------------------------------------------------------------------------------------
def detect(x: Tensor, detector: str = "rms") -> Tensor:
    """Linked detector signal of (B, C, T) audio, one per batch item: (B, T).

    ``"rms"``: channel-mean power ``mean_c x[c]^2``; ``"peak"``: ``max_c |x[c]|``. Both are
    sign-insensitive, so anti-phase stereo is detected like mono.
    """
    if detector == "rms":
        return x.square().mean(dim=1)
    if detector == "peak":
        return x.abs().amax(dim=1)
    raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")


def level_db(env: Tensor, detector: str = "rms") -> Tensor:
    """Envelope to level in dB: ``10 log10(e + 1e-12)`` for power (rms), ``20 log10(e + 1e-6)``
    for amplitude (peak)."""
    if detector == "rms":
        return power_to_db(env, RMS_EPS)
    if detector == "peak":
        return amp_to_db(env, PEAK_EPS)
    raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")


def smoothing_coefs(
    attack_ms: Tensor, release_ms: Tensor, sample_rate: float, smooth_type: str = "ballistics"
) -> tuple[Tensor, Tensor]:
    """New-sample weights ``(k_att, k_rel)`` of the smoother: from attack and release for
    ``"ballistics"``; for ``"iir"`` one shared weight (the same tensor twice) from the time
    constant ``(attack_ms + release_ms) / 2``."""
    if smooth_type == "ballistics":
        return ms_to_coef(attack_ms, sample_rate), ms_to_coef(release_ms, sample_rate)
    if smooth_type == "iir":
        k = ms_to_coef(0.5 * (attack_ms + release_ms), sample_rate)
        return k, k
    raise ValueError(f"smooth_type must be one of {SMOOTH_TYPES}, got {smooth_type!r}")


def smooth(
    d: Tensor,
    attack_ms: Tensor,
    release_ms: Tensor,
    sample_rate: float,
    smooth_type: str = "ballistics",
) -> Tensor:
    """Smooth a (B, T) detector signal from a silent initial state.

    ``"ballistics"``: attack while the level rises (d[n] > e[n-1]), release otherwise.
    ``"iir"``: one exact one-pole with the time constant ``(attack_ms + release_ms) / 2``
    (no truncated response, no start-up bias).
    """
    return ballistics(d, *smoothing_coefs(attack_ms, release_ms, sample_rate, smooth_type))


# ---------------------------------------------------------------------------------------------
# Gain computers: level (B, T) in dB, parameters (B,), gain (B, T) in dB, all <= 0
# ---------------------------------------------------------------------------------------------
def _knee(knee_db: Tensor) -> tuple[Tensor, Tensor]:
    """(has_knee, safe width): the width where it is usable, 1 elsewhere (no 0 denominators)."""
    w = knee_db[:, None]
    has_knee = w > MIN_KNEE_DB
    return has_knee, torch.where(has_knee, w, torch.ones_like(w))


def _check_knee_type(knee_type: str) -> None:
    if knee_type not in KNEE_TYPES:
        raise ValueError(f"knee_type must be one of {KNEE_TYPES}, got {knee_type!r}")


def compressor_slope(ratio: Tensor) -> Tensor:
    """Gain slope above the threshold of a compressor with ``ratio``: ``1/R - 1`` (<= 0)."""
    return 1.0 / ratio - 1.0


def expander_slope(ratio: Tensor) -> Tensor:
    """Gain slope below the threshold of an expander with ``ratio``: ``R - 1`` (>= 0)."""
    return ratio - 1.0


def compressor_gain(
    level: Tensor, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor, knee_type: str
) -> Tensor:
    """Downward compression above the threshold, slope ``1/R - 1``.

    hard: ``s (L - T)`` above T; quadratic: ``s (L - T + W/2)^2 / (2W)`` inside the knee;
    exponential: ``s softplus(k (L - T)) / k`` with ``k = 4 / W``. W = 0 gives the hard knee.
    """
    _check_knee_type(knee_type)
    slope = compressor_slope(ratio)[:, None]
    over = level - threshold_db[:, None]
    hard = slope * torch.clamp(over, min=0.0)
    if knee_type == "hard":
        return hard
    has_knee, w = _knee(knee_db)
    if knee_type == "quadratic":
        inside = has_knee & (over.abs() < 0.5 * w)
        return torch.where(inside, slope * (over + 0.5 * w).square() / (2.0 * w), hard)
    k = 4.0 / w
    return torch.where(has_knee, slope * tnf.softplus(k * over) / k, hard)


def expander_gain(
    level: Tensor, threshold_db: Tensor, ratio: Tensor, knee_db: Tensor, knee_type: str
) -> Tensor:
    """Downward expansion below the threshold, slope ``R - 1``.

    hard: ``r (L - T)`` below T; quadratic: ``-r (L - T - W/2)^2 / (2W)`` inside the knee;
    exponential: ``-r softplus(-k (L - T)) / k`` with ``k = 4 / W``. Never a boost.
    """
    _check_knee_type(knee_type)
    slope = expander_slope(ratio)[:, None]
    under = level - threshold_db[:, None]
    hard = slope * torch.clamp(under, max=0.0)
    if knee_type == "hard":
        return hard
    has_knee, w = _knee(knee_db)
    if knee_type == "quadratic":
        inside = has_knee & (under.abs() < 0.5 * w)
        return torch.where(inside, -slope * (under - 0.5 * w).square() / (2.0 * w), hard)
    k = 4.0 / w
    return torch.where(has_knee, -slope * tnf.softplus(-k * under) / k, hard)


def gate_gain(
    level: Tensor, threshold_db: Tensor, range_db: Tensor, knee_db: Tensor, knee_type: str
) -> Tensor:
    """Noise gate ``G (1 - s(L))`` with G = range_db <= 0.

    s is the plain step at T (hard), the C1 smoothstep ``3u^2 - 2u^3`` over the knee
    ``[T - W/2, T + W/2]`` (quadratic), or the logistic ``sigmoid(4 (L - T) / W)``
    (exponential: the derivative of the exponential compressor knee). W = 0 gives the step.
    """
    _check_knee_type(knee_type)
    under = level - threshold_db[:, None]
    step = (under > 0).to(level.dtype)
    if knee_type == "hard":
        opened = step
    else:
        has_knee, w = _knee(knee_db)
        if knee_type == "quadratic":
            u = torch.clamp(under / w + 0.5, 0.0, 1.0)
            soft = u.square() * (3.0 - 2.0 * u)
        else:
            soft = torch.sigmoid(4.0 * under / w)
        opened = torch.where(has_knee, soft, step)
    return range_db[:, None] * (1.0 - opened)


@dataclass(frozen=True)
class GainComputer:
    """A gain computer of the registry: its curve ``fn(level, threshold_db, amount, knee_db,
    knee_type)``, the parameter that sets its amount, the branch of the fused CPU kernel that
    computes the same curve (``code``; ``None``: no kernel branch, the band then runs as
    separate PyTorch operations on the CPU too), and the kernel's amount from that parameter
    (the slope for compressor and expander, the range itself for the gate).

    A new curve needs only its function and an entry here; a kernel branch (``code``) in
    :mod:`dynfx._ops.band` makes it fast on the CPU."""

    fn: Callable[..., Tensor]
    amount: str
    code: Optional[int] = None
    kernel_amount: Callable[[Tensor], Tensor] = lambda amount: amount


GAIN_COMPUTERS: dict[str, GainComputer] = {
    "compressor": GainComputer(compressor_gain, "ratio", 0, compressor_slope),
    "expander": GainComputer(expander_gain, "ratio", 1, expander_slope),
    "gate": GainComputer(gate_gain, "range_db", 2, lambda range_db: range_db),
}


# ---------------------------------------------------------------------------------------------
# One band of dynamics: detector -> smoothing -> level -> gain computer -> gain (+ makeup)
# ---------------------------------------------------------------------------------------------
def _band_args(p: Mapping[str, Tensor], gain_computer: str, smooth_type: str,
               sample_rate: float):
    if gain_computer not in GAIN_COMPUTERS:
        raise ValueError(f"gain_computer must be one of {tuple(GAIN_COMPUTERS)}, "
                         f"got {gain_computer!r}")
    gc = GAIN_COMPUTERS[gain_computer]
    k_att, k_rel = smoothing_coefs(p["attack_ms"], p["release_ms"], sample_rate, smooth_type)
    amount = p[gc.amount]
    makeup = p["makeup_db"] if "makeup_db" in p else torch.zeros_like(amount)
    return (p["threshold_db"], amount, p["knee_db"], k_att, k_rel, makeup, gc)


def process_band(x: Tensor, p: Mapping[str, Tensor], gain_computer: str, knee_type: str,
                 detector: str, smooth_type: str, sample_rate: float,
                 sum_rows: int = 1) -> tuple[Tensor, Tensor]:
    """One band of dynamics: ``(y, gain_db)`` for (B, C, T) audio ``x``.

    Linked detector -> ``smooth_type`` smoothing -> level in dB -> the registry's
    ``gain_computer`` (:data:`GAIN_COMPUTERS`) with ``knee_type`` -> ``y = x 10^((g + makeup)
    / 20)``. ``p`` holds the band's (B,) parameters in physical units: threshold_db, the gain
    computer's amount parameter, knee_db, attack_ms, release_ms and (optional) makeup_db. The
    op picks its backend from the device (:func:`dynfx._ops.band.band_dynamics`).
    ``sum_rows > 1``: every ``sum_rows`` consecutive rows are the bands of one item (each with
    its own detector and settings) and ``y`` is their sum, (B / sum_rows, C, T), computed
    without a per-band output (the multi-band processors); ``gain_db`` stays (B, T).
    """
    *args, gc = _band_args(p, gain_computer, smooth_type, sample_rate)
    return band_dynamics(x, *args, gc, knee_type, detector, sum_rows)


def process_band_reference(x: Tensor, p: Mapping[str, Tensor], gain_computer: str,
                           knee_type: str, detector: str, smooth_type: str,
                           sample_rate: float, sum_rows: int = 1) -> tuple[Tensor, Tensor]:
    """:func:`process_band` composed of separate PyTorch operations around the ballistics op
    (the reference of the fused CPU kernel in the tests)."""
    *args, gc = _band_args(p, gain_computer, smooth_type, sample_rate)
    return band_dynamics_reference(x, *args, gc, knee_type, detector, sum_rows)


# ---------------------------------------------------------------------------------------------
# Transient shaper
# ---------------------------------------------------------------------------------------------
def transient_gain(
    d: Tensor,
    attack_db: Tensor,
    sustain_db: Tensor,
    fast_ms: Tensor,
    slow_ms: Tensor,
    release_ms: Tensor,
    sample_rate: float,
    smooth_type: str = "ballistics",
    detector: str = "rms",
) -> Tensor:
    """Transient shaper gain in dB, (B, T), from a (B, T) detector signal.

    Two followers share ``release_ms``: the fast one attacks in ``fast_ms`` on the detector signal,
    the slow one attacks in ``slow_ms`` on the fast one's envelope. Their level difference
    ``D = L_fast - L_slow`` is large at onsets and near or below 0 during sustain and decay, and
    ``phi = smoothstep(D / 6 dB)`` turns it into an onset weight in [0, 1]. A third, hold follower
    (attack ``fast_ms``, release ``10 * release_ms``) tracks the recent note level; ``psi`` is 1
    while the slow level is within 30 dB of it and falls to 0 at 50 dB below it, so decays into
    silence and the noise floor between notes are not boosted. The gain is
    ``attack_db * phi + sustain_db * (1 - phi) * psi``. It only uses level differences, so it does
    not depend on the input's scale, and it is causal.
    """
    k = transient_coefs(fast_ms, slow_ms, release_ms, sample_rate, smooth_type)
    return transient_gain_reference(d, attack_db, sustain_db, k, detector)


def transient_coefs(fast_ms: Tensor, slow_ms: Tensor, release_ms: Tensor, sample_rate: float,
                    smooth_type: str = "ballistics") -> Tensor:
    """The (B, 6) new-sample weights of the transient shaper's followers: fast (``fast_ms``,
    ``release_ms``), slow (``slow_ms``, ``release_ms``), hold (``fast_ms``,
    ``HOLD_RELEASE_FACTOR * release_ms``), each (attack, release) as :func:`smoothing_coefs`
    gives them."""
    pairs = [smoothing_coefs(a, r, sample_rate, smooth_type)
             for a, r in ((fast_ms, release_ms), (slow_ms, release_ms),
                          (fast_ms, HOLD_RELEASE_FACTOR * release_ms))]
    return torch.stack([k for pair in pairs for k in pair], dim=1)


def process_transient(x: Tensor, p: Mapping[str, Tensor], sample_rate: float,
                      smooth_type: str = "ballistics",
                      detector: str = "rms") -> tuple[Tensor, Tensor]:
    """The transient shaper on (B, C, T) audio: ``(y, gain_db)`` with ``y = x 10^(g / 20)`` and
    ``g`` the gain of :func:`transient_gain` on the linked detector signal. ``p`` holds the (B,)
    parameters attack_db, sustain_db, fast_ms, slow_ms, release_ms. CPU tensors run one fused
    operation (:func:`dynfx._ops.transient.transient_shaper`), other devices separate PyTorch
    operations."""
    if detector not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    k = transient_coefs(p["fast_ms"], p["slow_ms"], p["release_ms"], sample_rate, smooth_type)
    return transient_shaper(x, p["attack_db"], p["sustain_db"], k, detector)
