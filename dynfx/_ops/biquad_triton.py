"""Biquads on the GPU with Triton: the exact recursion as a two-level parallel scan.

The section of :mod:`dynfx._ops.biquad` (direct form I, ``a0 = 1``, zero initial state)::

    y[n] = w[n] - a1 y[n-1] - a2 y[n-2],    w[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2]

is linear in a two-sample state: ``s[n] = A s[n-1] + g w[n]`` with ``y[n] = s_1[n]``. Pairs
``(P, u)`` (a 2x2 matrix and a vector: ``s -> P s + u``) compose associatively, so a parallel scan
solves the recursion exactly. The realization matters for rounding: the companion form
(``s = (y[n], y[n-1])``, ``A = [[-a1, -a2], [1, 0]]``) has powers ``A^k`` that grow far above 1
for poles near z = 1, and a scan multiplies by them (measured: 5e-11 relative error at a 20 Hz
low-pass, 80 times the sequential loop's). For complex poles ``r e^{+-i theta}`` the sections use
the coupled form instead: ``A = r [[cos, -sin], [sin, cos]]`` (powers never grow),
``g = (1, -cos / sin)``, whose first state component is still ``y`` (entries formed as in
:func:`realization`); real poles keep the companion form. The time axis is cut into chunks
of ``BLOCK`` samples and every (row, chunk) is a program of its own, so a few rows of long audio
still fill the GPU:

1. every chunk scans its samples from a zero state and keeps its own summary ``(P, u)``;
2. one program per row scans the chunk summaries (in groups, carrying the state) and stores the
   state at the end of every chunk;
3. every chunk scans its samples again and applies the state it starts from.

The scans, the coefficients and the state are float64 whatever the signal's dtype (as on the CPU:
float32 poles near z = 1 are not accurate enough for low crossovers); the input is read and the
output written in the signal's dtype. The backward pass runs the all-pole part in reverse time
with the same kernels (``v[n] = gy[n] - a1 v[n+1] - a2 v[n+2]``) and forms the gradients of the
audio and the coefficients from ``v`` with tensor operations (float64).

With ``TRITON_INTERPRET=1`` set before this module is imported, the kernels run on CPU tensors in
Triton's interpreter (that is how the tests check them without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["biquad_triton"]

MAX_BLOCK = 1024  # samples per chunk (one program), at most
GROUP = 1024  # chunk summaries scanned together by the carry kernel
NCOEF = tl.constexpr(9)  # per row: b0, b1, b2, A (row-major), g


@triton.jit
def _compose(p11a, p12a, p21a, p22a, u1a, u2a, p11b, p12b, p21b, p22b, u1b, u2b):
    # (P_a, u_a) first, then (P_b, u_b): z -> P_b (P_a z + u_a) + u_b
    return (p11b * p11a + p12b * p21a, p11b * p12a + p12b * p22a,
            p21b * p11a + p22b * p21a, p21b * p12a + p22b * p22a,
            p11b * u1a + p12b * u2a + u1b, p21b * u1a + p22b * u2a + u2b)


@triton.jit
def _chunk_scan(x_ptr, coef_ptr, row, chunk, T, BLOCK: tl.constexpr):
    """Prefix (P, u) of every sample of one chunk, from a zero state at the chunk's start."""
    base = row.to(tl.int64) * T
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    valid = offs < T
    c = coef_ptr + row.to(tl.int64) * NCOEF
    b0 = tl.load(c)
    b1 = tl.load(c + 1)
    b2 = tl.load(c + 2)
    x0 = tl.load(x_ptr + base + offs, mask=valid, other=0.0).to(tl.float64)
    x1 = tl.load(x_ptr + base + offs - 1, mask=valid & (offs >= 1), other=0.0).to(tl.float64)
    x2 = tl.load(x_ptr + base + offs - 2, mask=valid & (offs >= 2), other=0.0).to(tl.float64)
    w = b0 * x0 + b1 * x1 + b2 * x2
    zero = tl.zeros([BLOCK], dtype=tl.float64)
    p11, p12, p21, p22, u1, u2 = tl.associative_scan(
        (zero + tl.load(c + 3), zero + tl.load(c + 4), zero + tl.load(c + 5),
         zero + tl.load(c + 6), tl.load(c + 7) * w, tl.load(c + 8) * w), 0, _compose)
    return p11, p12, p21, p22, u1, u2, offs, valid


@triton.jit
def _summary_kernel(x_ptr, coef_ptr, sum_ptr, T, NCH, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row = pid // NCH
    chunk = pid % NCH
    p11, p12, p21, p22, u1, u2, offs, valid = _chunk_scan(x_ptr, coef_ptr, row, chunk, T, BLOCK)
    last = tl.minimum(chunk * BLOCK + BLOCK, T) - 1
    at = offs == last
    s = sum_ptr + pid.to(tl.int64) * 6
    tl.store(s, tl.sum(tl.where(at, p11, 0.0), axis=0))
    tl.store(s + 1, tl.sum(tl.where(at, p12, 0.0), axis=0))
    tl.store(s + 2, tl.sum(tl.where(at, p21, 0.0), axis=0))
    tl.store(s + 3, tl.sum(tl.where(at, p22, 0.0), axis=0))
    tl.store(s + 4, tl.sum(tl.where(at, u1, 0.0), axis=0))
    tl.store(s + 5, tl.sum(tl.where(at, u2, 0.0), axis=0))


@triton.jit
def _carry_kernel(sum_ptr, state_ptr, NCH, GROUP_: tl.constexpr):
    """The state at the end of every chunk of one row, from the chunk summaries."""
    row = tl.program_id(0)
    base = row.to(tl.int64) * NCH
    z1 = tl.sum(tl.zeros([GROUP_], dtype=tl.float64), axis=0)  # 0.0 (no other row's data)
    z2 = z1
    for start in range(0, NCH, GROUP_):
        j = start + tl.arange(0, GROUP_)
        valid = j < NCH
        s = sum_ptr + (base + j) * 6
        p11 = tl.load(s, mask=valid, other=1.0)  # past the end: the identity
        p12 = tl.load(s + 1, mask=valid, other=0.0)
        p21 = tl.load(s + 2, mask=valid, other=0.0)
        p22 = tl.load(s + 3, mask=valid, other=1.0)
        u1 = tl.load(s + 4, mask=valid, other=0.0)
        u2 = tl.load(s + 5, mask=valid, other=0.0)
        q11, q12, q21, q22, v1, v2 = tl.associative_scan(
            (p11, p12, p21, p22, u1, u2), 0, _compose)
        e1 = q11 * z1 + q12 * z2 + v1
        e2 = q21 * z1 + q22 * z2 + v2
        tl.store(state_ptr + (base + j) * 2, e1, mask=valid)
        tl.store(state_ptr + (base + j) * 2 + 1, e2, mask=valid)
        last = tl.minimum(start + GROUP_, NCH) - 1
        z1 = tl.sum(tl.where(j == last, e1, 0.0), axis=0)
        z2 = tl.sum(tl.where(j == last, e2, 0.0), axis=0)


@triton.jit
def _apply_kernel(x_ptr, coef_ptr, state_ptr, y_ptr, T, NCH, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row = pid // NCH
    chunk = pid % NCH
    p11, p12, p21, p22, u1, u2, offs, valid = _chunk_scan(x_ptr, coef_ptr, row, chunk, T, BLOCK)
    before = chunk > 0
    prev = state_ptr + (pid.to(tl.int64) - 1) * 2
    z1 = tl.load(prev, mask=before, other=0.0)
    z2 = tl.load(prev + 1, mask=before, other=0.0)
    y = p11 * z1 + p12 * z2 + u1
    tl.store(y_ptr + row.to(tl.int64) * T + offs, y.to(y_ptr.dtype.element_ty), mask=valid)


def _block(steps: int) -> int:
    return max(16, min(MAX_BLOCK, triton.next_power_of_2(steps)))


def run_sections(x: Tensor, coef: Tensor, out_dtype: torch.dtype | None = None,
                 block: int | None = None, group: int | None = None) -> Tensor:
    """Filter the rows of ``x`` (R, T), row r with the realization ``coef[r]`` of
    :func:`realization` (float64, (R, 9)); the output in ``out_dtype`` (default: x's).
    ``block`` (samples per chunk) and ``group`` (chunk summaries per carry step), powers of two,
    default to the sizes used on the GPU; the tests set them small to cross many chunk and group
    boundaries."""
    rows, steps = x.shape
    y = torch.empty(rows, steps, dtype=out_dtype or x.dtype, device=x.device)
    if rows == 0 or steps == 0:
        return y
    block = block or _block(steps)
    nch = triton.cdiv(steps, block)
    summary = torch.empty(rows * nch, 6, dtype=torch.float64, device=x.device)
    state = torch.empty(rows * nch, 2, dtype=torch.float64, device=x.device)
    _summary_kernel[(rows * nch,)](x, coef, summary, steps, nch, BLOCK=block, num_warps=4)
    group = group or max(16, min(GROUP, triton.next_power_of_2(nch)))
    _carry_kernel[(rows,)](summary, state, nch, GROUP_=group, num_warps=4)
    _apply_kernel[(rows * nch,)](x, coef, state, y, steps, nch, BLOCK=block, num_warps=4)
    return y


def _square_exact(a: Tensor) -> tuple[Tensor, Tensor]:
    """``a * a = p + e`` exactly (Veltkamp split and Dekker's product, float64)."""
    t = 134217729.0 * a  # 2^27 + 1
    hi = t - (t - a)
    lo = a - hi
    p = a * a
    return p, ((hi * hi - p) + 2.0 * hi * lo) + lo * lo


def realization(coef: Tensor) -> Tensor:
    """Per row ``(b0, b1, b2, A11, A12, A21, A22, g1, g2)`` (float64) from ``(b0, b1, b2, a1,
    a2)``: the coupled form for complex poles, the companion form otherwise (module docstring).

    The poles' imaginary part ``sqrt(4 a2 - a1^2) / 2`` is where rounding hurts: for poles near
    z = 1 both terms are near 4, so the discriminant is formed with the exact square of a1
    (relative error of one rounding) instead of ``1 - cos^2`` (which loses a factor of
    ``1 / theta^2``). ``A = [[-a1/2, -q], [q, -a1/2]]`` with ``q`` that imaginary part has exactly
    the given ``a1`` as minus its trace and ``a2`` to a rounding of ``q^2`` as its determinant.
    """
    b = coef[:, :3]
    a1, a2 = coef[:, 3], coef[:, 4]
    p, e = _square_exact(a1)
    disc = (4.0 * a2 - p) - e  # 4 a2 - a1^2
    complex_poles = disc > 0
    q = 0.5 * disc.clamp_min(0.0).sqrt()
    safe_q = torch.where(complex_poles, q, torch.ones_like(q))
    one, zero = torch.ones_like(a1), torch.zeros_like(a1)
    half = -0.5 * a1
    coupled = torch.stack([half, -q, q, half, one, -half / safe_q], dim=1)
    companion = torch.stack([-a1, -a2, one, zero, one, zero], dim=1)
    state = torch.where(complex_poles[:, None], coupled, companion)
    return torch.cat([b, state], dim=1)


class _BiquadTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, block, group) -> Tensor:
        x = x.detach().contiguous()
        ctx.coef_dtype = coef.dtype
        ctx.sizes = (block, group)
        coef = coef.detach().double().contiguous()
        y = run_sections(x, realization(coef), None, block, group)
        ctx.save_for_backward(x, y, coef)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        x, y, coef = ctx.saved_tensors
        steps = x.shape[1]
        allpole = torch.zeros_like(coef)
        allpole[:, 0] = 1.0
        allpole[:, 3:] = coef[:, 3:]
        allpole = realization(allpole)
        # v[n] = gy[n] - a1 v[n+1] - a2 v[n+2]: the all-pole section in reverse time
        v = run_sections(gy.flip(-1).contiguous(), allpole, torch.float64, *ctx.sizes).flip(-1)
        vp = torch.nn.functional.pad(v, (0, 2))
        b0, b1, b2 = coef[:, 0:1], coef[:, 1:2], coef[:, 2:3]
        gx = b0 * v + b1 * vp[:, 1:steps + 1] + b2 * vp[:, 2:steps + 2]
        xd = x.double()
        yd = y.double()
        gcoef = torch.stack([
            (v * xd).sum(-1),
            (v[:, 1:] * xd[:, :-1]).sum(-1),
            (v[:, 2:] * xd[:, :-2]).sum(-1),
            -(v[:, 1:] * yd[:, :-1]).sum(-1),
            -(v[:, 2:] * yd[:, :-2]).sum(-1),
        ], dim=1)
        return gx.to(x.dtype), gcoef.to(ctx.coef_dtype), None, None


def biquad_triton(x: Tensor, b: Tensor, a: Tensor, block: int | None = None,
                  group: int | None = None) -> Tensor:
    """:func:`dynfx._ops.biquad.biquad_filter` with the Triton kernels (CUDA tensors, or CPU
    tensors under ``TRITON_INTERPRET=1``): x (B, C, T), b and a (B, 3) with ``a[:, 0] = 1``.
    ``block`` and ``group``: see :func:`run_sections`."""
    from .biquad import apply_rows  # biquad imports this module lazily: no cycle at import

    return apply_rows(_BiquadTriton.apply, x, b, a, block, group)
