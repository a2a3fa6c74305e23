"""Parameter ranges and the mapping between normalised [0, 1] values and physical values."""

from __future__ import annotations

import math
import numbers
from typing import Union

import torch
from torch import Tensor

__all__ = ["EffectParam", "as_batch"]

Number = Union[int, float]
ParamValue = Union[Number, Tensor]


class EffectParam:
    """Range and scale of one processor parameter.

    A normalised value ``u`` in [0, 1] maps to the physical value
    ``min_val + (max_val - min_val) * u`` (``scale="linear"``) or
    ``min_val * (max_val / min_val) ** u`` (``scale="log"``, which needs ``min_val > 0``).

    Example:
        >>> p = EffectParam(1.0, 100.0, scale="log")
        >>> float(p.denormalize(torch.tensor(0.5)))
        10.0
        >>> float(p.normalize(torch.tensor(10.0)))
        0.5
    """

    SCALES = ("linear", "log")

    def __init__(self, min_val: Number, max_val: Number, scale: str = "linear") -> None:
        if scale not in self.SCALES:
            raise ValueError(f"EffectParam: scale must be one of {self.SCALES}, got {scale!r}")
        min_val, max_val = float(min_val), float(max_val)
        if not (math.isfinite(min_val) and math.isfinite(max_val)) or not min_val < max_val:
            raise ValueError(
                f"EffectParam: need finite min_val < max_val, got [{min_val}, {max_val}]"
            )
        if scale == "log" and min_val <= 0:
            raise ValueError(f"EffectParam: a log scale needs min_val > 0, got {min_val}")
        self.min_val = min_val
        self.max_val = max_val
        self.scale = scale

    def denormalize(self, u: Tensor) -> Tensor:
        """Map normalised values in [0, 1] to physical values (differentiable)."""
        if self.scale == "log":
            return self.min_val * torch.exp(u * math.log(self.max_val / self.min_val))
        return self.min_val + (self.max_val - self.min_val) * u

    def normalize(self, v: Tensor) -> Tensor:
        """Map physical values to [0, 1]; the exact inverse of :meth:`denormalize`."""
        if self.scale == "log":
            return torch.log(v / self.min_val) / math.log(self.max_val / self.min_val)
        return (v - self.min_val) / (self.max_val - self.min_val)

    def range_str(self) -> str:
        return f"[{self.min_val:g}, {self.max_val:g}]" + (" (log)" if self.scale == "log" else "")

    def __repr__(self) -> str:
        return f"EffectParam({self.min_val:g}, {self.max_val:g}, scale={self.scale!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EffectParam):
            return NotImplemented
        return (self.min_val, self.max_val, self.scale) == (
            other.min_val,
            other.max_val,
            other.scale,
        )


def as_batch(value: ParamValue, batch: int, like: Tensor, name: str = "value") -> Tensor:
    """Turn a Python number, a 0-D tensor or a (B,) tensor into a (B,) tensor of ``like``'s dtype
    and device. Gradients flow through tensor inputs.

    Raises:
        ValueError: for other shapes, a batch size other than ``batch``, or a non-numeric value.
    """
    # numbers.Real admits NumPy's scalar types (np.float32(4.0), np.int64(4)); booleans
    # (Python's and NumPy's) are refused: True is not a setting
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Tensor)):
        raise ValueError(
            f"{name}: expected a number, a 0-D tensor or a ({batch},) tensor, "
            f"got {type(value).__name__}"
        )
    if not isinstance(value, Tensor):
        return torch.full((batch,), float(value), dtype=like.dtype, device=like.device)
    if value.is_complex():
        raise ValueError(f"{name}: expected a real value, got a complex tensor")
    if value.dtype == torch.bool:
        raise ValueError(f"{name}: expected a real value, got a boolean tensor")
    if value.device.type == "meta":
        raise ValueError(f"{name}: the tensor is on the meta device (it has no values)")
    value = value.to(dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        return value.expand(batch)
    if value.dim() == 1 and value.shape[0] == batch:
        return value
    raise ValueError(
        f"{name}: expected a number, a 0-D tensor or a tensor of shape ({batch},) "
        f"(one value per batch item), got shape {tuple(value.shape)}"
    )
