"""Single-band processors: Compressor, Limiter, Expander, NoiseGate."""

from __future__ import annotations

from typing import ClassVar, Mapping, Optional

from .. import functional as F
from ..params import EffectParam
from .base import DynamicsProcessor, check_choice

__all__ = ["Compressor", "Limiter", "Expander", "NoiseGate"]


class _SingleBand(DynamicsProcessor):
    """Detector -> smoothing -> level -> gain computer -> gain (+ makeup): one band of
    :func:`dynfx.functional.process_band`. A subclass declares its parameter table
    (``param_table``), its gain computer (a name of :data:`dynfx.functional.GAIN_COMPUTERS`)
    and its default detector."""

    param_table: ClassVar[Mapping[str, EffectParam]]
    gain_computer: ClassVar[str] = "compressor"
    _default_detector: ClassVar[str] = "rms"

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
        return dict(type(self).param_table)

    def _process(self, x, p):
        return F.process_band(x, p, self.gain_computer, self.knee_type, self.detector,
                              self.smooth_type, self.sample_rate)


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

    param_table = {
        "threshold_db": EffectParam(-60.0, 0.0),
        "ratio": EffectParam(1.0, 20.0, "log"),
        "knee_db": EffectParam(0.0, 12.0),
        "attack_ms": EffectParam(0.1, 100.0, "log"),
        "release_ms": EffectParam(10.0, 1000.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }


class Limiter(_SingleBand):
    """Peak limiter: the compressor chain with a peak detector, high ratios and fast attack.

    Parameters (order): threshold_db [-60, 0], ratio [20, 100] (log), knee_db [0, 1],
    attack_ms [0.1, 1] (log), release_ms [5, 500] (log), makeup_db [-12, 12].
    ``knee_db`` is live for the quadratic and exponential knees.

    Shape:
        x: (B, C, T); norm_params: (B, 6); output: (B, C, T); gain_db: (B, T).
    """

    param_table = {
        "threshold_db": EffectParam(-60.0, 0.0),
        "ratio": EffectParam(20.0, 100.0, "log"),
        "knee_db": EffectParam(0.0, 1.0),
        "attack_ms": EffectParam(0.1, 1.0, "log"),
        "release_ms": EffectParam(5.0, 500.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }
    _default_detector = "peak"


class Expander(_SingleBand):
    """Downward expander: attenuates below ``threshold_db`` with slope ``ratio - 1``; never boosts.

    Attack acts while the level rises (the expander opens), release while it falls.

    Parameters (order): threshold_db [-80, 0], ratio [1, 8] (log), knee_db [0, 6],
    attack_ms [0.05, 300] (log), release_ms [5, 4000] (log), makeup_db [-12, 12].

    Shape:
        x: (B, C, T); norm_params: (B, 6); output: (B, C, T); gain_db: (B, T).
    """

    param_table = {
        "threshold_db": EffectParam(-80.0, 0.0),
        "ratio": EffectParam(1.0, 8.0, "log"),
        "knee_db": EffectParam(0.0, 6.0),
        "attack_ms": EffectParam(0.05, 300.0, "log"),
        "release_ms": EffectParam(5.0, 4000.0, "log"),
        "makeup_db": EffectParam(-12.0, 12.0),
    }
    gain_computer = "expander"


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

    param_table = {
        "threshold_db": EffectParam(-90.0, -20.0),
        "range_db": EffectParam(-90.0, 0.0),
        "knee_db": EffectParam(0.0, 6.0),
        "attack_ms": EffectParam(0.1, 20.0, "log"),
        "release_ms": EffectParam(5.0, 1000.0, "log"),
    }
    gain_computer = "gate"
