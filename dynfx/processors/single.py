"""Single-band processors: Compressor, Limiter, Expander, NoiseGate."""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import Tensor

from .. import functional as F
from .._ballistics_fused import fused_band
from ..params import EffectParam
from .base import DynamicsProcessor, check_choice

__all__ = ["Compressor", "Limiter", "Expander", "NoiseGate"]


def _compressor_table() -> dict[str, EffectParam]:
    return {
        "threshold_db": EffectParam(-60.0, 0.0),
        "ratio": EffectParam(1.0, 20.0, "log"),
        "knee_db": EffectParam(0.0, 12.0),
        "attack_ms": EffectParam(0.1, 100.0, "log"),
        "release_ms": EffectParam(10.0, 1000.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }


def _limiter_table() -> dict[str, EffectParam]:
    return {
        "threshold_db": EffectParam(-60.0, 0.0),
        "ratio": EffectParam(20.0, 100.0, "log"),
        "knee_db": EffectParam(0.0, 1.0),
        "attack_ms": EffectParam(0.1, 1.0, "log"),
        "release_ms": EffectParam(5.0, 500.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }


def _expander_table() -> dict[str, EffectParam]:
    return {
        "threshold_db": EffectParam(-80.0, 0.0),
        "ratio": EffectParam(1.0, 8.0, "log"),
        "knee_db": EffectParam(0.0, 6.0),
        "attack_ms": EffectParam(0.05, 300.0, "log"),
        "release_ms": EffectParam(5.0, 4000.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }


def _gate_table() -> dict[str, EffectParam]:
    return {
        "threshold_db": EffectParam(-90.0, -20.0),
        "range_db": EffectParam(-90.0, 0.0),
        "knee_db": EffectParam(0.0, 6.0),
        "attack_ms": EffectParam(0.1, 20.0, "log"),
        "release_ms": EffectParam(5.0, 1000.0, "log"),
    }


class GainComputerMixin:
    """Binds a gain computer of :mod:`dynfx.functional` to a processor's knee type."""

    _gain_fn: Callable[..., Tensor]
    _kind: str = "compressor"  # "compressor", "expander" or "gate" (selects the fused kernel)
    _amount: str = "ratio"  # the parameter that sets the gain computer's amount
    knee_type: str

    def _gain_computer(self, level: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return type(self)._gain_fn(
            level, p["threshold_db"], p[self._amount], p["knee_db"], self.knee_type
        )


class _SingleBand(GainComputerMixin, DynamicsProcessor):
    """Detector -> smoothing -> level -> gain computer -> gain (+ makeup)."""

    _table: Callable[[], dict[str, EffectParam]]
    _default_detector = "rms"

    def __init__(
        self,
        sample_rate: float = 44100,
        param_range: Optional[Mapping[str, EffectParam]] = None,
        knee_type: str = "quadratic",
        smooth_type: str = "ballistics",
        detector: Optional[str] = None,
        validate: bool = True,
    ) -> None:
        super().__init__(sample_rate, validate)
        detector = self._default_detector if detector is None else detector
        check_choice("knee_type", knee_type, F.KNEE_TYPES)
        check_choice("smooth_type", smooth_type, F.SMOOTH_TYPES)
        check_choice("detector", detector, F.DETECTORS)
        self.knee_type = knee_type
        self.smooth_type = smooth_type
        self.detector = detector
        self._init_params(param_range)

    def _register_default_parameters(self) -> dict[str, EffectParam]:
        return type(self)._table()

    def _process(self, x: Tensor, p: dict[str, Tensor]):
        return process_band(self, x, p)


def process_band(proc, x: Tensor, p: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """One band of dynamics: returns ``(y, gain_db)`` for (B, C, T) audio ``x``.

    ``proc`` supplies ``detector``, ``smooth_type``, ``sample_rate``, ``knee_type``, ``_kind``,
    ``_amount`` and ``_gain_computer``; ``p`` holds the band's (B,) parameters in physical units
    (``makeup_db`` optional). CPU tensors run the fused numba kernel; other devices run
    :func:`process_band_reference`.
    """
    if x.device.type != "cpu":
        return process_band_reference(proc, x, p)
    k_att, k_rel = F.smoothing_coefs(p["attack_ms"], p["release_ms"], proc.sample_rate,
                                     proc.smooth_type)
    amount = p[proc._amount]
    if proc._kind == "compressor":
        amount = 1.0 / amount - 1.0
    elif proc._kind == "expander":
        amount = amount - 1.0
    makeup = p["makeup_db"] if "makeup_db" in p else torch.zeros_like(amount)
    return fused_band(x, p["threshold_db"], amount, p["knee_db"], k_att, k_rel, makeup,
                      proc._kind, proc.knee_type, proc.detector)


def process_band_reference(proc, x: Tensor, p: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The same chain as :func:`process_band`, composed of separate PyTorch operations around the
    ballistics op (any device; the reference for the fused kernel in the tests)."""
    d = F.detect(x, proc.detector)  # (B, T)
    env = F.smooth(d, p["attack_ms"], p["release_ms"], proc.sample_rate, proc.smooth_type)
    gain_db = proc._gain_computer(F.level_db(env, proc.detector), p)  # (B, T), <= 0
    total = gain_db + p["makeup_db"][:, None] if "makeup_db" in p else gain_db
    return x * F.db_to_amp(total)[:, None, :], gain_db


class Compressor(_SingleBand):
    """Feedforward downward compressor.

    Chain: linked detector (channel-mean power for ``detector="rms"``, max |x| for ``"peak"``) ->
    attack/release smoothing -> level in dB -> gain computer (slope ``1/ratio - 1`` above
    ``threshold_db``; ``knee_type`` "hard", "quadratic" or "exponential", width ``knee_db``) ->
    ``y = x * 10^((g + makeup_db) / 20)``. With ``knee_type="hard"``, ``knee_db`` stays registered
    (a stable parameter layout for controllers) and has no effect.

    Parameters (order): threshold_db [-60, 0], ratio [1, 20] (log), knee_db [0, 12],
    attack_ms [0.1, 100] (log), release_ms [10, 1000] (log), makeup_db [-12, 12].

    Shape:
        x: (B, C, T); norm_params: (B, 6); output: (B, C, T); gain_db: (B, T).

    Example:
        >>> import torch
        >>> comp = Compressor(sample_rate=44100)
        >>> x = 0.5 * torch.randn(2, 2, 4410)
        >>> y = comp(x, dsp_params={"threshold_db": -20.0, "ratio": 4.0, "knee_db": 6.0,
        ...                         "attack_ms": 5.0, "release_ms": 50.0, "makeup_db": 0.0})
        >>> y.shape
        torch.Size([2, 2, 4410])
    """

    _table = staticmethod(_compressor_table)
    _gain_fn = staticmethod(F.compressor_gain)


class Limiter(_SingleBand):
    """Peak limiter: the compressor chain with a peak detector, high ratios and fast attack.

    Parameters (order): threshold_db [-60, 0], ratio [20, 100] (log), knee_db [0, 1],
    attack_ms [0.1, 1] (log), release_ms [5, 500] (log), makeup_db [-12, 12].
    ``knee_db`` is live for the quadratic and exponential knees.

    Shape:
        x: (B, C, T); norm_params: (B, 6); output: (B, C, T); gain_db: (B, T).
    """

    _table = staticmethod(_limiter_table)
    _gain_fn = staticmethod(F.compressor_gain)
    _default_detector = "peak"


class Expander(_SingleBand):
    """Downward expander: attenuates below ``threshold_db`` with slope ``ratio - 1``; never boosts.

    Attack acts while the level rises (the expander opens), release while it falls.

    Parameters (order): threshold_db [-80, 0], ratio [1, 8] (log), knee_db [0, 6],
    attack_ms [0.05, 300] (log), release_ms [5, 4000] (log), makeup_db [-12, 12].

    Shape:
        x: (B, C, T); norm_params: (B, 6); output: (B, C, T); gain_db: (B, T).
    """

    _table = staticmethod(_expander_table)
    _gain_fn = staticmethod(F.expander_gain)
    _kind = "expander"


class NoiseGate(_SingleBand):
    """Noise gate: gain ``range_db * (1 - s(L))`` where s opens around ``threshold_db``.

    ``knee_type="quadratic"`` (the default here) uses a C1 smoothstep over ``knee_db``;
    ``"exponential"`` a logistic curve; ``"hard"`` the plain step. A step has no slope, so with the
    hard knee only ``range_db`` receives a gradient (threshold, attack and release get zero); this
    is why the gate defaults to the quadratic knee here, unlike the reference documentation, which
    defaults to hard. Attack acts while the level rises (the gate opens).

    Parameters (order): threshold_db [-90, -20], range_db [-90, 0], knee_db [0, 6],
    attack_ms [0.1, 20] (log), release_ms [5, 1000] (log).

    Shape:
        x: (B, C, T); norm_params: (B, 5); output: (B, C, T); gain_db: (B, T).
    """

    _table = staticmethod(_gate_table)
    _gain_fn = staticmethod(F.gate_gain)
    _kind = "gate"
    _amount = "range_db"
