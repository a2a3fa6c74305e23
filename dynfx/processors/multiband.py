"""Multi-band processors: LR4 crossovers with allpass compensation, one dynamics chain per band."""

from __future__ import annotations

from typing import ClassVar, Mapping, Optional

import torch
from torch import Tensor

from .. import functional as F
from ..crossover import crossover_ranges, split_bands_stacked
from ..params import EffectParam
from .base import DynamicsProcessor, check_choice
from .single import Limiter, NoiseGate

__all__ = [
    "MultiBandCompressor",
    "MultiBandLimiter",
    "MultiBandExpander",
    "MultiBandNoiseGate",
]

NUM_BANDS_CHOICES = tuple(range(2, 9))


class _MultiBand(DynamicsProcessor):
    """Split into ``num_bands`` bands, process each with its own detector (linked across channels),
    gain computer, smoothing and makeup, and sum the bands. A subclass declares the per-band
    parameter table (``band_table``), the gain computer and the default detector."""

    band_table: ClassVar[Mapping[str, EffectParam]]
    gain_computer: ClassVar[str] = "compressor"
    _default_detector: ClassVar[str] = "rms"

    def __init__(
        self,
        sample_rate: float = 44100,
        param_range: Optional[Mapping[str, EffectParam]] = None,
        num_bands: int = 3,
        knee_type: str = "quadratic",
        smooth_type: str = "ballistics",
        detector: Optional[str] = None,
        validate: bool = True,
    ) -> None:
        super().__init__(sample_rate, validate)
        detector = self._default_detector if detector is None else detector
        if isinstance(num_bands, bool) or not isinstance(num_bands, int):
            raise ValueError(f"num_bands must be one of {NUM_BANDS_CHOICES}, got {num_bands!r}")
        check_choice("num_bands", num_bands, NUM_BANDS_CHOICES)
        check_choice("knee_type", knee_type, F.KNEE_TYPES)
        check_choice("smooth_type", smooth_type, F.SMOOTH_TYPES)
        check_choice("detector", detector, F.DETECTORS)
        self.num_bands = num_bands
        self.knee_type = knee_type
        self.smooth_type = smooth_type
        self.detector = detector
        self._init_params(param_range)

    @property
    def band_param_names(self) -> tuple[str, ...]:
        """The per-band parameter names, without the ``band{i}_`` prefix."""
        return tuple(type(self).band_table)

    def _register_default_parameters(self) -> dict[str, EffectParam]:
        table: dict[str, EffectParam] = {}
        for i in range(self.num_bands):
            for name, spec in type(self).band_table.items():
                table[f"band{i}_{name}"] = spec
        for i, (lo, hi) in enumerate(crossover_ranges(self.num_bands, self.sample_rate)):
            table[f"crossover{i}_freq"] = EffectParam(lo, hi, "log")
        return table

    def _process(self, x: Tensor, p: dict[str, Tensor]):
        # The bands come stacked as (B, N, C, T) and run through one band op as B * N rows (each
        # band of each item with its own linked detector and settings), which sums them.
        n = self.num_bands
        freqs = [p[f"crossover{i}_freq"] for i in range(n - 1)]
        bands = split_bands_stacked(x, freqs, self.sample_rate)
        batch, _, channels, steps = bands.shape
        band_p = {name: torch.stack([p[f"band{i}_{name}"] for i in range(n)], dim=1).reshape(-1)
                  for name in self.band_param_names}
        y, gain_db = F.process_band(bands.reshape(batch * n, channels, steps), band_p,
                                    self.gain_computer, self.knee_type, self.detector,
                                    self.smooth_type, self.sample_rate, sum_rows=n)
        return y, gain_db.view(batch, n, steps)  # (B, C, T), (B, num_bands, T)


class MultiBandCompressor(_MultiBand):
    """Multi-band compressor (Linkwitz-Riley 4th-order crossovers, allpass-compensated).

    Per band i: band{i}_threshold_db [-60, 0], band{i}_ratio [1, 20] (log), band{i}_knee_db [0, 12],
    band{i}_attack_ms [1, 500] (log), band{i}_release_ms [10, 2000] (log),
    band{i}_makeup_db [-24, 24]; then crossover{i}_freq for i < num_bands - 1, each in its own
    log-spaced slice of [20 Hz, min(20 kHz, 0.45 fs)], so crossovers are always ordered.
    With neutral settings (ratio 1, makeup 0) the band sum keeps the input's magnitude.

    Shape:
        x: (B, C, T); norm_params: (B, 7 num_bands - 1); output: (B, C, T);
        gain_db: (B, num_bands, T).
    """

    band_table = {
        "threshold_db": EffectParam(-60.0, 0.0),
        "ratio": EffectParam(1.0, 20.0, "log"),
        "knee_db": EffectParam(0.0, 12.0),
        "attack_ms": EffectParam(1.0, 500.0, "log"),
        "release_ms": EffectParam(10.0, 2000.0, "log"),
        "makeup_db": EffectParam(-24.0, 24.0),
    }


class MultiBandLimiter(_MultiBand):
    """Multi-band limiter: per band the Limiter's six parameters (peak detector by default), then the
    crossovers. See :class:`MultiBandCompressor`.

    Shape:
        x: (B, C, T); norm_params: (B, 7 num_bands - 1); gain_db: (B, num_bands, T).
    """

    band_table = Limiter.param_table
    _default_detector = Limiter._default_detector


class MultiBandExpander(_MultiBand):
    """Multi-band downward expander: per band threshold_db [-80, -30], ratio [1, 20] (log),
    knee_db [0, 6], attack_ms [0.05, 300] (log), release_ms [5, 4000] (log); then the crossovers.

    Shape:
        x: (B, C, T); norm_params: (B, 6 num_bands - 1); gain_db: (B, num_bands, T).
    """

    band_table = {
        "threshold_db": EffectParam(-80.0, -30.0),
        "ratio": EffectParam(1.0, 20.0, "log"),
        "knee_db": EffectParam(0.0, 6.0),
        "attack_ms": EffectParam(0.05, 300.0, "log"),
        "release_ms": EffectParam(5.0, 4000.0, "log"),
    }
    gain_computer = "expander"


class MultiBandNoiseGate(_MultiBand):
    """Multi-band noise gate: per band the NoiseGate's five parameters, then the crossovers.
    Defaults to the quadratic (smoothstep) knee so that thresholds and times receive gradients.

    Shape:
        x: (B, C, T); norm_params: (B, 6 num_bands - 1); gain_db: (B, num_bands, T).
    """

    band_table = NoiseGate.param_table
    gain_computer = NoiseGate.gain_computer
