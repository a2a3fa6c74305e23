"""Second-order IIR sections (biquads) as a custom autograd operation, with numba CPU kernels
(CUDA: :mod:`dynfx._ops.biquad_triton`).

Direct form I, ``a0 = 1``::

    y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2]      (zero initial state)

Backward (exact): with ``v[n] = gy[n] - a1 v[n+1] - a2 v[n+2]`` run in reverse time,
``gx[n] = b0 v[n] + b1 v[n+1] + b2 v[n+2]``, ``d/db_k = sum_n v[n] x[n-k]`` and
``d/da_k = -sum_n v[n] y[n-k]``.

One row (batch item and channel) per loop, rows in parallel. The pass is bound by memory traffic
on CPU rather than by the recursion. Every batch item has its own coefficients; its channels share
them. The coefficients, the state and the accumulators are float64 whatever the signal's dtype
(float32 signals are read and written as float32): float32 poles near z = 1 are not accurate
enough for low crossovers at high sample rates.
"""

from __future__ import annotations

import numba
import torch
import torchaudio.functional as AF
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["biquad", "biquad_filter", "biquad_reference"]

@numba.njit(parallel=True, cache=True)
def _forward_kernel(x, coef, y):  # pragma: no cover - compiled
    rows, steps = x.shape
    for r in numba.prange(rows):
        b0, b1, b2, a1, a2 = coef[r, 0], coef[r, 1], coef[r, 2], coef[r, 3], coef[r, 4]
        x1 = x2 = y1 = y2 = 0.0
        for n in range(steps):
            xn = numba.float64(x[r, n])
            yn = b0 * xn + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
            x2 = x1
            x1 = xn
            y2 = y1
            y1 = yn
            y[r, n] = yn


@numba.njit(parallel=True, cache=True)
def _backward_kernel(gy, x, y, coef, gx, gcoef):  # pragma: no cover - compiled
    rows, steps = x.shape
    for r in numba.prange(rows):
        b0, b1, b2, a1, a2 = coef[r, 0], coef[r, 1], coef[r, 2], coef[r, 3], coef[r, 4]
        v1 = v2 = 0.0  # v[n+1], v[n+2]
        acc0 = acc1 = acc2 = acc3 = acc4 = 0.0
        for i in range(steps):
            n = steps - 1 - i
            vn = numba.float64(gy[r, n]) - a1 * v1 - a2 * v2
            gx[r, n] = b0 * vn + b1 * v1 + b2 * v2
            acc0 += vn * x[r, n]
            if n >= 1:
                acc1 += vn * x[r, n - 1]
                acc3 -= vn * y[r, n - 1]
            if n >= 2:
                acc2 += vn * x[r, n - 2]
                acc4 -= vn * y[r, n - 2]
            v2 = v1
            v1 = vn
        gcoef[r, 0] = acc0
        gcoef[r, 1] = acc1
        gcoef[r, 2] = acc2
        gcoef[r, 3] = acc3
        gcoef[r, 4] = acc4


class _Biquad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor) -> Tensor:
        x = x.detach().contiguous()
        ctx.coef_dtype = coef.dtype  # the gradient goes back in the caller's dtype
        coef = coef.detach().double().contiguous()
        y = torch.empty_like(x)
        _forward_kernel(x.numpy(), coef.numpy(), y.numpy())
        ctx.save_for_backward(x, y, coef)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        x, y, coef = ctx.saved_tensors
        gx = torch.empty_like(x)
        gcoef = torch.empty_like(coef)  # float64
        _backward_kernel(gy.to(x.dtype).contiguous().numpy(), x.numpy(), y.numpy(), coef.numpy(),
                         gx.numpy(), gcoef.numpy())
        return gx, gcoef.to(ctx.coef_dtype)


def biquad_filter(x: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """Filter (B, C, T) CPU audio, item i with its own coefficients ``b[i]``, ``a[i]`` ((B, 3)
    each, ``a[:, 0] = 1``). Exact recursion; differentiable with respect to x, b and a.

    Shape:
        x: (B, C, T); b, a: (B, 3); output: (B, C, T).
    """
    return apply_rows(_Biquad.apply, x, b, a)


def apply_rows(op, x: Tensor, b: Tensor, a: Tensor, *args) -> Tensor:
    """``op(rows, coef, *args)`` on (B, C, T) audio as (B*C, T) rows, with the (B*C, 5)
    ``(b0, b1, b2, a1, a2)`` of every row (channels share their item's section); the result
    back as (B, C, T). The row layout of every biquad backend."""
    batch, channels, steps = x.shape
    coef = torch.cat([b, a[:, 1:]], dim=1).repeat_interleave(channels, dim=0)
    return op(x.reshape(batch * channels, steps), coef, *args).reshape(batch, channels, steps)


def biquad(x: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """Filter (B, C, T) audio, item i with its own coefficients ``b[i], a[i]`` (each (B, 3)).

    Exact IIR recursion (no truncation), differentiable with respect to x and the coefficients.
    The recursion runs in float64 whatever x's dtype (output in x's dtype): a float32 state
    near z = 1 loses the allpass property of a band sum. CPU float32/float64 tensors use the
    numba kernels (:func:`biquad_filter`: float64 state, float32 input and output buffers, no
    extra memory pass); CUDA float32/float64 tensors the Triton scan of
    :mod:`dynfx._ops.biquad_triton` (float64 state too); other devices and dtypes use
    torchaudio's ``lfilter`` in float64.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return biquad_filter(x, b.double(), a.double())
    if x.device.type == "cuda" and x.dtype in (torch.float32, torch.float64):
        triton_op = _triton_op()
        if triton_op is not None:
            return triton_op(x, b.double(), a.double())
    xt = x.transpose(0, 1).double()  # (C, B, T): lfilter's per-filter axis is second-to-last
    y = AF.lfilter(xt, a.double(), b.double(), clamp=False, batching=True)
    return y.transpose(0, 1).to(x.dtype)


def _triton_op():
    """:func:`dynfx._ops.biquad_triton.biquad_triton`, or None where Triton is missing."""
    try:
        from .biquad_triton import biquad_triton
    except ImportError:
        return None
    return biquad_triton


def biquad_reference(x: Tensor, b: Tensor, a: Tensor) -> Tensor:
    """Slow pure-PyTorch biquad (one Python step per sample), the reference in the tests."""
    bb = b[:, :, None]  # (B, 3, 1) broadcast over channels
    aa = a[:, :, None]
    x1 = x2 = y1 = y2 = torch.zeros_like(x[..., 0])
    out = []
    for n in range(x.shape[-1]):
        xn = x[..., n]
        yn = bb[:, 0] * xn + bb[:, 1] * x1 + bb[:, 2] * x2 - aa[:, 1] * y1 - aa[:, 2] * y2
        x2, x1, y2, y1 = x1, xn, y1, yn
        out.append(yn)
    return torch.stack(out, dim=-1)
