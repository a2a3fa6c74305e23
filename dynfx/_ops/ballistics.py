"""The attack/release ("ballistics") recursion as a custom autograd operation.

Forward, per row b and sample n, from a silent state e[-1] = 0::

    k[n] = k_att[b] if d[n] > e[n-1] else k_rel[b]       # attack means "level rising"
    e[n] = e[n-1] + k[n] * (d[n] - e[n-1])               # = a e[n-1] + (1 - a) d[n], a = 1 - k

``k`` is the weight of the new sample (1 minus the pole). Keeping ``k`` instead of the pole keeps long
time constants accurate in float32 (``1 - a`` loses most of its digits when ``a`` is close to 1).

Backward: once the attack/release choice of the forward pass is fixed, the recursion is linear, and
its adjoint is the reverse-time recursion ``lam[n] = g[n] + (1 - k[n+1]) lam[n+1]``, with
``dL/dd[n] = lam[n] k[n]`` and ``dL/dk[n] = lam[n] (d[n] - e[n-1])`` summed into the attack or release
coefficient that sample used.

CPU tensors use the numba kernels below; CUDA tensors use the Triton kernels of
:mod:`dynfx._ops.ballistics_triton` (or, where Triton is missing, the numba kernels through a host round
trip); any other device uses the slow pure-PyTorch :func:`ballistics_reference`, which is also the
reference in the tests.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .memory import empty_like

__all__ = ["ballistics", "ballistics_reference"]


@numba.njit(parallel=True, cache=True)
def _forward_kernel(d, k_att, k_rel, out):  # pragma: no cover - compiled
    rows, steps = d.shape
    for b in numba.prange(rows):
        ka = k_att[b]
        kr = k_rel[b]
        e = ka * 0  # zero of the array's own dtype
        for n in range(steps):
            x = d[b, n]
            if x > e:
                e = e + ka * (x - e)
            else:
                e = e + kr * (x - e)
            out[b, n] = e


@numba.njit(parallel=True, cache=True)
def _backward_kernel(grad, d, e, k_att, k_rel, grad_d, grad_ka, grad_kr):  # pragma: no cover
    rows, steps = d.shape
    for b in numba.prange(rows):
        ka = k_att[b]
        kr = k_rel[b]
        zero = ka * 0
        lam = zero
        k_next = zero
        acc_a = 0.0  # float64 accumulators for the coefficient gradients
        acc_r = 0.0
        for n in range(steps - 1, -1, -1):
            lam = grad[b, n] + (1 - k_next) * lam
            e_prev = e[b, n - 1] if n > 0 else zero
            x = d[b, n]
            if x > e_prev:
                k = ka
                acc_a += lam * (x - e_prev)
            else:
                k = kr
                acc_r += lam * (x - e_prev)
            grad_d[b, n] = lam * k
            k_next = k
        grad_ka[b] = acc_a
        grad_kr[b] = acc_r


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _forward_host(d: Tensor, k_att: Tensor, k_rel: Tensor) -> Tensor:
    out = empty_like(d)
    if d.numel():
        _forward_kernel(_np(d), _np(k_att), _np(k_rel), out.numpy())
    return out


def _backward_host(grad: Tensor, d: Tensor, e: Tensor, k_att: Tensor, k_rel: Tensor):
    grad_d = empty_like(d)
    grad_ka = torch.zeros_like(k_att)
    grad_kr = torch.zeros_like(k_rel)
    if d.numel():
        _backward_kernel(
            _np(grad),
            _np(d),
            _np(e),
            _np(k_att),
            _np(k_rel),
            grad_d.numpy(),
            grad_ka.numpy(),
            grad_kr.numpy(),
        )
    return grad_d, grad_ka, grad_kr


class _Ballistics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d: Tensor, k_att: Tensor, k_rel: Tensor) -> Tensor:
        device = d.device
        dh, kah, krh = (t.detach().to("cpu").contiguous() for t in (d, k_att, k_rel))
        e = _forward_host(dh, kah, krh)
        ctx.save_for_backward(dh, kah, krh, e)
        ctx.device = device
        return e.to(device)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        dh, kah, krh, e = ctx.saved_tensors
        grad_d, grad_ka, grad_kr = _backward_host(grad.to("cpu").contiguous(), dh, e, kah, krh)
        device = ctx.device
        return (
            grad_d.to(device) if ctx.needs_input_grad[0] else None,
            grad_ka.to(device) if ctx.needs_input_grad[1] else None,
            grad_kr.to(device) if ctx.needs_input_grad[2] else None,
        )


def _check(d: Tensor, k_att: Tensor, k_rel: Tensor) -> None:
    if d.dim() != 2:
        raise ValueError(f"ballistics: d must have shape (B, T), got {tuple(d.shape)}")
    for name, k in (("k_att", k_att), ("k_rel", k_rel)):
        if k.shape != d.shape[:1]:
            raise ValueError(
                f"ballistics: {name} must have shape ({d.shape[0]},), got {tuple(k.shape)}"
            )
        if k.dtype != d.dtype or k.device != d.device:
            raise ValueError(f"ballistics: {name} must match d's dtype and device")


def ballistics(d: Tensor, k_att: Tensor, k_rel: Tensor) -> Tensor:
    """Attack/release envelope follower with an exact backward pass.

    Args:
        d: detector signal (power or amplitude), shape (B, T), float32 or float64.
        k_att: new-sample weight while the level rises, ``1 - exp(-1000 / (attack_ms * fs))``, (B,).
        k_rel: new-sample weight while the level falls, (B,).

    Returns:
        The envelope ``e``, shape (B, T), same dtype and device as ``d``.

    Shape:
        d: (B, T); k_att, k_rel: (B,); output: (B, T).
    """
    _check(d, k_att, k_rel)
    if d.device.type == "cuda":
        triton_op = _triton_op()
        if triton_op is not None:
            return triton_op(d, k_att, k_rel)
    if d.device.type in ("cpu", "cuda"):
        return _Ballistics.apply(d, k_att, k_rel)
    return ballistics_reference(d, k_att, k_rel)


def _triton_op():
    """The Triton implementation, or None where Triton cannot be imported."""
    try:
        from .ballistics_triton import ballistics_triton
    except ImportError:  # a PyTorch build without Triton: use the numba kernels via the host
        return None
    return ballistics_triton


def ballistics_reference(d: Tensor, k_att: Tensor, k_rel: Tensor) -> Tensor:
    """Slow pure-PyTorch version of :func:`ballistics` (one Python step per sample); autograd
    differentiates it directly. Kept as the reference for tests and for devices without a kernel."""
    _check(d, k_att, k_rel)
    e = torch.zeros_like(d[:, 0]) if d.shape[1] else d.new_zeros(d.shape[0])
    out = []
    for n in range(d.shape[1]):
        x = d[:, n]
        k = torch.where(x > e, k_att, k_rel)
        e = e + k * (x - e)
        out.append(e)
    if not out:
        return d.clone()
    return torch.stack(out, dim=1)
