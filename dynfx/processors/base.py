"""The base class: parameter table, input and parameter validation, norm/dsp parameter mapping."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .._ops.checks import first_bad_samples
from ..params import EffectParam, ParamValue, as_batch

__all__ = ["DynamicsProcessor", "check_choice"]

NormParams = Union[Tensor, Mapping[str, Tensor]]
DspParams = Mapping[str, ParamValue]

MIN_SAMPLE_RATE = 1000.0
MAX_SAMPLE_RATE = 768000.0
NORM_TOL = 1e-6  # normalised values may stray this far outside [0, 1] (rounding)
RANGE_RTOL = 1e-6  # physical values may stray this far (relative) outside their range


def check_choice(name: str, value, choices) -> None:
    """Raise ``ValueError`` listing the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def _check_real_tensor(t: Tensor, what: str) -> None:
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{what} must be a real tensor, got dtype {t.dtype}")
    if t.device.type == "meta":
        raise ValueError(f"{what} is on the meta device (it has no values)")


def _first_bad(values: Tensor, bad: Tensor) -> float:
    return float(values.detach()[bad].flatten()[0])


class DynamicsProcessor(nn.Module):
    """Base class of every dynfx processor.

    Subclasses call ``super().__init__(sample_rate, validate)``, set their options, then call
    ``self._init_params(param_range)``; they implement ``_register_default_parameters()`` (an
    ordered mapping name -> :class:`EffectParam`) and ``_process(x, params) -> (y, gain_db)``,
    where ``params`` maps every name to a (B,) tensor in physical units.
    """

    def __init__(self, sample_rate: float = 44100, validate: bool = True) -> None:
        super().__init__()
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not math.isfinite(sample_rate)
            or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE
        ):
            raise ValueError(
                f"sample_rate must be a number of Hz in [{MIN_SAMPLE_RATE:g}, "
                f"{MAX_SAMPLE_RATE:g}], got {sample_rate!r}"
            )
        self.sample_rate = sample_rate
        self.validate = bool(validate)
        self._params: OrderedDict[str, EffectParam] = OrderedDict()

    # -- parameter table -----------------------------------------------------------------------
    def _register_default_parameters(self) -> Mapping[str, EffectParam]:
        raise NotImplementedError

    def _init_params(self, param_range: Optional[Mapping[str, EffectParam]]) -> None:
        self._params = OrderedDict(self._register_default_parameters())
        for name, spec in (param_range or {}).items():
            if name not in self._params:
                raise ValueError(
                    f"{type(self).__name__}: param_range names an unknown parameter {name!r}; "
                    f"valid names: {', '.join(self._params)}"
                )
            if not isinstance(spec, EffectParam):
                raise ValueError(
                    f"{type(self).__name__}: param_range[{name!r}] must be an EffectParam, "
                    f"got {type(spec).__name__}"
                )
            self._check_physical(name, spec)
            self._params[name] = spec

    def _check_physical(self, name: str, spec: EffectParam) -> None:
        """Refuse ranges that mean nothing physically: a ratio below 1, negative times or knee
        widths, crossovers outside (0, fs / 2). (Empty, reversed and non-positive log ranges
        are refused by :class:`EffectParam` itself.)"""
        base = name.split("_", 1)[1] if name.startswith("band") else name
        lo, hi = spec.min_val, spec.max_val
        why = None
        if base == "ratio" and lo < 1.0:
            why = "a ratio below 1 is not compression or expansion (1 = no change)"
        elif base.endswith("_ms") and lo < 0.0:
            why = "a time cannot be negative"
        elif base == "knee_db" and lo < 0.0:
            why = "a knee width cannot be negative"
        elif base.startswith("crossover") and (lo <= 0.0 or hi >= self.sample_rate / 2):
            why = f"a crossover must lie in (0, {self.sample_rate / 2:g}) Hz (fs / 2)"
        if why:
            raise ValueError(f"{type(self).__name__}: param_range[{name!r}] = {spec.range_str()} "
                             f"is not usable: {why}")

    @property
    def param_names(self) -> tuple[str, ...]:
        """Parameter names, in the column order of ``norm_params`` tensors."""
        return tuple(self._params)

    @property
    def params(self) -> "OrderedDict[str, EffectParam]":
        """Ordered mapping name -> :class:`EffectParam` (a copy)."""
        return OrderedDict(self._params)

    def count_num_parameters(self) -> int:
        """Number of controllable parameters (columns of ``norm_params``)."""
        return len(self._params)

    # -- mapping -------------------------------------------------------------------------------
    def denormalize(self, norm_params: NormParams) -> dict[str, Tensor]:
        """Map normalised parameters ((B, P) tensor or dict name -> (B,)) to physical values."""
        cols = self._norm_columns(norm_params, batch=None)
        return {name: self._params[name].denormalize(v) for name, v in cols.items()}

    def normalize(self, dsp_params: DspParams) -> Tensor:
        """Map physical parameters (dict name -> number / 0-D / (B,) tensor) to a (B, P) tensor in
        [0, 1]; the exact inverse of :meth:`denormalize`."""
        self._check_names(dsp_params, "dsp_params")
        tensors = [v for v in dsp_params.values() if isinstance(v, Tensor)]
        like = tensors[0] if tensors else torch.zeros(())
        if not like.is_floating_point():
            like = like.to(torch.get_default_dtype())
        batch = max([v.numel() for v in tensors if v.dim() == 1] or [1])
        cols = [
            self._params[n].normalize(as_batch(dsp_params[n], batch, like, f"dsp_params[{n!r}]"))
            for n in self._params
        ]
        return torch.stack(cols, dim=-1)

    # -- forward -------------------------------------------------------------------------------
    def forward(
        self,
        x: Tensor,
        norm_params: Optional[NormParams] = None,
        dsp_params: Optional[DspParams] = None,
        return_gain: bool = False,
        validate: Optional[bool] = None,
    ):
        """Process (B, C, T) audio.

        Args:
            x: real floating tensor (B, C, T); float16/bfloat16 are computed in float32.
            norm_params: (B, P) tensor in [0, 1] with columns in ``param_names`` order, or a
                dict name -> (B,) tensor.
            dsp_params: dict name -> number, 0-D tensor or (B,) tensor in physical units.
            return_gain: also return the applied gain in dB (without makeup).
            validate: check parameter values and the audio (default: the constructor's
                ``validate``). Audio with a NaN, an infinite sample or a sample whose power
                overflows (|x| > sqrt(finfo.max) / 1000, about 1.8e16 in float32) is a
                ``ValueError`` naming the item and the first such sample; with
                ``validate=False`` such an item's whole output (and gain) is NaN instead.

        Returns:
            ``y`` with x's shape, dtype and device, or ``(y, gain_db)`` when ``return_gain``;
            ``gain_db`` is (B, T) for single-band and (B, num_bands, T) for multi-band processors.
        """
        self._check_input(x)
        validate = self.validate if validate is None else validate
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        if validate:
            self._check_audio_values(work)
        params = self._resolve(work, norm_params, dsp_params, validate)
        y, gain_db = self._process(work, params)
        if not validate:  # never a silent switch-off: a bad item's output and gain are NaN
            bad = self._bad_items(work)
            if bool(bad.any()):
                y = torch.where(bad[:, None, None], torch.nan, y)
                gain_db = torch.where(bad.reshape(-1, *([1] * (gain_db.dim() - 1))), torch.nan,
                                      gain_db)
        y = y.to(x.dtype)
        if return_gain:
            return y, gain_db.to(x.dtype)
        return y

    def process(self, x: Tensor, norm_params=None, dsp_params=None) -> Tensor:
        """Same as calling the module without ``return_gain`` (reference-docs spelling)."""
        return self.forward(x, norm_params=norm_params, dsp_params=dsp_params)

    def _process(self, x: Tensor, params: dict[str, Tensor]):
        raise NotImplementedError

    # -- validation ------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        expected = "expected a real floating tensor of shape (batch, channels, samples)"
        if not isinstance(x, Tensor):
            raise ValueError(f"{type(self).__name__}: {expected}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}: {expected} with B, C, T >= 1, got dtype {x.dtype} "
                f"and shape {tuple(x.shape)}"
            )
        if x.dim() != 3 or min(x.shape) < 1:
            raise ValueError(
                f"{type(self).__name__}: {expected} with B, C, T >= 1, got shape {tuple(x.shape)}"
            )
        if x.device.type == "meta":
            raise ValueError(f"{type(self).__name__}: the audio is on the meta device "
                             "(it has no values to process)")

    @staticmethod
    def _amplitude_limit(dtype: torch.dtype) -> float:
        """Largest |sample| whose power (and channel sum of powers) cannot overflow ``dtype``:
        sqrt(max) / 1000 (about 1.8e16 in float32)."""
        return math.sqrt(torch.finfo(dtype).max) / 1000.0

    def _check_audio_values(self, x: Tensor) -> None:
        """``ValueError`` naming the batch item and the first sample that is NaN, infinite or
        so large that its power overflows."""
        limit = self._amplitude_limit(x.dtype)
        first_bad = first_bad_samples(x.detach(), limit)  # (B, C), -1: none
        if not bool((first_bad >= 0).any()):
            return
        item = int((first_bad >= 0).any(dim=1).nonzero()[0])
        row = first_bad[item]
        first = int(row[row >= 0].min())
        channel = int((row == first).nonzero()[0])
        value = float(x[item, channel, first])
        why = "is not finite" if not math.isfinite(value) else (
            f"exceeds {limit:.3g} in magnitude (its power could overflow {x.dtype})")
        raise ValueError(f"{type(self).__name__}: audio item {item}, channel {channel}, sample "
                         f"{first} = {value:g} {why}; pass finite audio (validate=False turns "
                         "the whole output of such an item into NaN)")

    def _bad_items(self, x: Tensor) -> Tensor:
        """(B,) bool: items holding a non-finite or overflowing sample (max/min reductions,
        which propagate NaN)."""
        limit = self._amplitude_limit(x.dtype)
        x = x.detach()
        peak = torch.maximum(x.amax(dim=(1, 2)), -x.amin(dim=(1, 2)))
        return ~torch.isfinite(peak) | (peak > limit)

    def _check_names(self, given: Mapping, what: str) -> None:
        if not isinstance(given, Mapping):
            raise ValueError(f"{type(self).__name__}: {what} must be a dict, got {type(given)}")
        unknown = [n for n in given if n not in self._params]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown parameter(s) {unknown} in {what}; "
                f"valid names: {', '.join(self._params)}"
            )
        missing = [n for n in self._params if n not in given]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: missing parameter(s) {missing} in {what}; "
                f"expected all of: {', '.join(self._params)}"
            )

    def _check_norm_matrix(self, norm_params: Tensor, batch: Optional[int]) -> None:
        """A (B, P) ``norm_params`` tensor: real, with one column per parameter (and ``batch``
        rows when given)."""
        name = type(self).__name__
        n_params = len(self._params)
        _check_real_tensor(norm_params, f"{name}: norm_params")
        shape = tuple(norm_params.shape)
        if (norm_params.dim() != 2 or shape[1] != n_params
                or (batch is not None and shape[0] != batch)):
            rows = "B" if batch is None else str(batch)
            raise ValueError(
                f"{name}: norm_params must have shape ({rows}, {n_params}) with columns "
                f"{self.param_names}, got shape {shape}"
            )

    def _norm_columns(self, norm_params: NormParams, batch: Optional[int]) -> dict[str, Tensor]:
        name = type(self).__name__
        if isinstance(norm_params, Tensor):
            self._check_norm_matrix(norm_params, batch)
            return {n: norm_params[:, i] for i, n in enumerate(self._params)}
        self._check_names(norm_params, "norm_params")
        cols = {}
        for n in self._params:
            v = norm_params[n]
            if isinstance(v, Tensor):
                _check_real_tensor(v, f"{name}: norm_params[{n!r}]")
            if not isinstance(v, Tensor) or v.dim() != 1 or (batch is not None and len(v) != batch):
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise ValueError(
                    f"{name}: norm_params[{n!r}] must be a tensor of shape "
                    f"({'B' if batch is None else batch},), got {got}"
                )
            cols[n] = v
        return cols

    def _resolve(
        self,
        x: Tensor,
        norm_params: Optional[NormParams],
        dsp_params: Optional[DspParams],
        validate: bool,
    ) -> dict[str, Tensor]:
        name = type(self).__name__
        if (norm_params is None) == (dsp_params is None):
            raise ValueError(f"{name}: pass exactly one of norm_params or dsp_params")
        batch = x.shape[0]
        if isinstance(norm_params, Tensor):
            fast = self._resolve_matrix(x, norm_params, batch, validate)
            if fast is not None:
                return fast
        if norm_params is not None:
            cols = self._norm_columns(norm_params, batch)
            out = {}
            for n, u in cols.items():
                u = u.to(dtype=x.dtype, device=x.device)
                if validate:
                    self._check_values(u, 0.0, 1.0, f"norm_params[{n!r}]", "[0, 1]", NORM_TOL)
                out[n] = self._params[n].denormalize(u)
            return out
        self._check_names(dsp_params, "dsp_params")
        out = {}
        for n, spec in self._params.items():
            v = as_batch(dsp_params[n], batch, x, f"{name}: dsp_params[{n!r}]")
            if validate:
                tol = RANGE_RTOL * max(abs(spec.min_val), abs(spec.max_val), 1.0)
                self._check_values(
                    v, spec.min_val, spec.max_val, f"dsp_params[{n!r}]", spec.range_str(), tol
                )
            out[n] = v
        return out

    def _resolve_matrix(self, x: Tensor, norm_params: Tensor, batch: int,
                        validate: bool) -> Optional[dict[str, Tensor]]:
        """The (B, P) ``norm_params`` of a call checked and mapped to physical values as one
        matrix: a handful of operations (and autograd nodes) whatever the number of parameters,
        the same values as mapping column by column (:meth:`EffectParam.denormalize`: the same
        operations on the same float values). A bad shape raises here; a value out of range
        returns ``None``, and the caller checks column by column to name it in its error."""
        self._check_norm_matrix(norm_params, batch)
        u = norm_params.to(dtype=x.dtype, device=x.device)
        if validate:
            bad = ~torch.isfinite(u) | (u < -NORM_TOL) | (u > 1.0 + NORM_TOL)
            if bool(bad.any()):
                return None
        lo, span, log_ratio, is_log = self._norm_table(u)
        if is_log is None:  # every column linear
            phys = lo + u * span
        else:
            phys = torch.where(is_log, lo * torch.exp(u * log_ratio), lo + u * span)
        return dict(zip(self._params, phys.unbind(dim=1)))

    def _norm_table(self, like: Tensor):
        """Per column of ``norm_params``: min, max - min, log(max / min) (0 for linear scales)
        and the log-scale mask (``None`` when no column is log-scaled), in ``like``'s dtype and
        device; cached per parameter table, dtype and device."""
        specs = tuple((s.min_val, s.max_val, s.scale) for s in self._params.values())
        key = (specs, like.dtype, like.device)
        cache = self.__dict__.setdefault("_norm_table_cache", {})
        if key not in cache:
            def col(values, dtype=like.dtype):
                return torch.tensor(values, dtype=dtype, device=like.device)
            logs = [scale == "log" for _, _, scale in specs]
            cache.clear()  # one table at a time: a processor rarely changes dtype or device
            cache[key] = (col([lo for lo, _, _ in specs]), col([hi - lo for lo, hi, _ in specs]),
                          col([math.log(hi / lo) if log else 0.0
                               for (lo, hi, _), log in zip(specs, logs)]),
                          col(logs, torch.bool) if any(logs) else None)
        return cache[key]

    def _check_values(
        self, v: Tensor, lo: float, hi: float, what: str, allowed: str, tol: float
    ) -> None:
        name = type(self).__name__
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            raise ValueError(
                f"{name}: {what} = {_first_bad(v, ~finite)} is not finite; allowed range {allowed}"
            )
        outside = (v < lo - tol) | (v > hi + tol)
        if bool(outside.any()):
            raise ValueError(
                f"{name}: {what} = {_first_bad(v, outside):g} is outside the allowed range {allowed}"
            )

    def extra_repr(self) -> str:
        opts = {k: getattr(self, k) for k in ("knee_type", "smooth_type", "detector", "num_bands")}
        shown = ", ".join(f"{k}={v!r}" for k, v in opts.items() if v is not None)
        return f"sample_rate={self.sample_rate}" + (f", {shown}" if shown else "")

    knee_type: Optional[str] = None
    smooth_type: Optional[str] = None
    detector: Optional[str] = None
    num_bands: Optional[int] = None

    @property
    def smoothing_type(self) -> Optional[str]:
        """Alias of ``smooth_type`` (reference-docs spelling)."""
        return self.smooth_type
