"""TransientShaper: level-independent attack/sustain shaping."""

from __future__ import annotations

from typing import ClassVar, Mapping, Optional

from torch import Tensor

from .. import functional as F
from ..params import EffectParam
from .base import DynamicsProcessor, check_choice

__all__ = ["TransientShaper"]


class TransientShaper(DynamicsProcessor):
    """Transient shaper: boosts or cuts note onsets (``attack_db``) and sustains (``sustain_db``).

    Two envelope followers on the linked detector signal share ``release_ms``; one attacks in
    ``fast_ms``, the other in ``slow_ms``. Their level difference is large at onsets and small
    during sustain; it weights ``attack_db`` against ``sustain_db``. The sustain gain fades out as the
    signal decays far below its recent note level, so silence and the noise floor between notes are
    not boosted. See :func:`dynfx.functional.transient_gain` for the formula. The effect depends only
    on level differences: scaling the input scales the output by the same factor. Causal; no
    clip-wide normalisation; ``attack_db = sustain_db = 0`` is exactly the identity.

    Parameters (order): attack_db [-24, 24], sustain_db [-24, 24], fast_ms [0.1, 10] (log),
    slow_ms [5, 100] (log), release_ms [10, 500] (log).

    Shape:
        x: (B, C, T); norm_params: (B, 5); output: (B, C, T); gain_db: (B, T).
    """

    param_table: ClassVar[Mapping[str, EffectParam]] = {
        "attack_db": EffectParam(-24.0, 24.0),
        "sustain_db": EffectParam(-24.0, 24.0),
        "fast_ms": EffectParam(0.1, 10.0, "log"),
        "slow_ms": EffectParam(5.0, 100.0, "log"),
        "release_ms": EffectParam(10.0, 500.0, "log"),
    }

    def __init__(
        self,
        sample_rate: float = 44100,
        param_range: Optional[Mapping[str, EffectParam]] = None,
        smooth_type: str = "ballistics",
        detector: str = "rms",
        validate: bool = True,
    ) -> None:
        super().__init__(sample_rate, validate)
        check_choice("smooth_type", smooth_type, F.SMOOTH_TYPES)
        check_choice("detector", detector, F.DETECTORS)
        self.smooth_type = smooth_type
        self.detector = detector
        self._init_params(param_range)

    def _register_default_parameters(self) -> dict[str, EffectParam]:
        return dict(self.param_table)

    def _process(self, x: Tensor, p: dict[str, Tensor]):
        return F.process_transient(x, p, self.sample_rate, self.smooth_type, self.detector)
