"""The ballistics recursion on the GPU with Triton: exact, by mask refinement and parallel scans.

Once the attack/release choice of every sample (the mask) is known, the recursion
``e[n] = (1 - k[n]) e[n-1] + k[n] d[n]`` is linear and a parallel scan over the pairs
``(1 - k[n], k[n] d[n])`` with the combine ``(a1, b1), (a2, b2) -> (a1 a2, b1 a2 + b2)`` solves it.
Starting from the all-release mask, each round solves the recursion for the current mask and
recomputes the mask from the solution (``d[n] > e[n-1]``); a round that changes nothing has found
the sequential answer, and every round fixes at least the first wrong sample, so the rounds
terminate. After ``max_rounds`` rounds the rows fall back to a sequential kernel (one program per
row, one sample per step). The backward pass is one reverse-time scan with the final mask.

One program per row loops over the time axis in blocks, carrying the last value between blocks.
With ``TRITON_INTERPRET=1`` set before this module is imported, the kernels run on CPU tensors in
Triton's interpreter (that is how the tests check them without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["ballistics_triton", "solve_forward", "MAX_ROUNDS"]

MAX_ROUNDS = 64


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _scan_forward_kernel(d_ptr, ka_ptr, kr_ptr, mask_ptr, e_ptr, T, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * T
    ka = tl.load(ka_ptr + row)
    kr = tl.load(kr_ptr + row)
    carry = ka * 0.0
    for start in range(0, T, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < T
        d = tl.load(d_ptr + base + offs, mask=valid, other=0.0)
        rising = tl.load(mask_ptr + base + offs, mask=valid, other=0) != 0
        k = tl.where(rising, ka, kr)
        a = tl.where(valid, 1.0 - k, 1.0)
        b = tl.where(valid, k * d, 0.0)
        acc_a, acc_b = tl.associative_scan((a, b), 0, _combine)
        e = acc_a * carry + acc_b
        tl.store(e_ptr + base + offs, e, mask=valid)
        last = tl.minimum(start + BLOCK, T) - 1
        carry = tl.sum(tl.where(offs == last, e, 0.0), axis=0)


@triton.jit
def _mask_kernel(d_ptr, e_ptr, mask_ptr, changed_ptr, T, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * T
    changed = 0
    for start in range(0, T, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < T
        d = tl.load(d_ptr + base + offs, mask=valid, other=0.0)
        e_prev = tl.load(e_ptr + base + offs - 1, mask=valid & (offs > 0), other=0.0)
        new = (d > e_prev).to(tl.int8)
        old = tl.load(mask_ptr + base + offs, mask=valid, other=0)
        changed += tl.sum(tl.where(valid & (new != old), 1, 0), axis=0)
        tl.store(mask_ptr + base + offs, new, mask=valid)
    tl.store(changed_ptr + row, changed)


@triton.jit
def _sequential_kernel(d_ptr, ka_ptr, kr_ptr, mask_ptr, e_ptr, T):
    row = tl.program_id(0)
    base = row.to(tl.int64) * T
    ka = tl.load(ka_ptr + row)
    kr = tl.load(kr_ptr + row)
    e = ka * 0.0
    for n in range(0, T):
        d = tl.load(d_ptr + base + n)
        rising = d > e
        k = tl.where(rising, ka, kr)
        e = e + k * (d - e)
        tl.store(e_ptr + base + n, e)
        tl.store(mask_ptr + base + n, rising.to(tl.int8))


@triton.jit
def _scan_backward_kernel(
    g_ptr, d_ptr, e_ptr, ka_ptr, kr_ptr, mask_ptr, gd_ptr, gka_ptr, gkr_ptr, T,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    base = row.to(tl.int64) * T
    ka = tl.load(ka_ptr + row)
    kr = tl.load(kr_ptr + row)
    carry = ka * 0.0
    acc_a = ka * 0.0
    acc_r = ka * 0.0
    for start in range(0, T, BLOCK):
        j = start + tl.arange(0, BLOCK)
        valid = j < T
        p = T - 1 - j  # positions in reverse time
        g = tl.load(g_ptr + base + p, mask=valid, other=0.0)
        rising = tl.load(mask_ptr + base + p, mask=valid, other=0) != 0
        k = tl.where(rising, ka, kr)
        has_next = valid & (p + 1 < T)
        rising_next = tl.load(mask_ptr + base + p + 1, mask=has_next, other=0) != 0
        a_next = tl.where(has_next, 1.0 - tl.where(rising_next, ka, kr), 0.0)
        a_next = tl.where(valid, a_next, 1.0)
        acc_m, acc_g = tl.associative_scan((a_next, g), 0, _combine)
        lam = acc_m * carry + acc_g
        d = tl.load(d_ptr + base + p, mask=valid, other=0.0)
        e_prev = tl.load(e_ptr + base + p - 1, mask=valid & (p > 0), other=0.0)
        tl.store(gd_ptr + base + p, lam * k, mask=valid)
        term = tl.where(valid, lam * (d - e_prev), 0.0)
        acc_a += tl.sum(tl.where(rising, term, 0.0), axis=0)
        acc_r += tl.sum(tl.where(rising, 0.0, term), axis=0)
        last = tl.minimum(start + BLOCK, T) - 1
        carry = tl.sum(tl.where(j == last, lam, 0.0), axis=0)
    tl.store(gka_ptr + row, acc_a)
    tl.store(gkr_ptr + row, acc_r)


def _block(steps: int) -> int:
    return max(16, min(4096, triton.next_power_of_2(steps)))


def solve_forward(
    d: Tensor, k_att: Tensor, k_rel: Tensor, max_rounds: int = MAX_ROUNDS
) -> tuple[Tensor, Tensor, int]:
    """Exact envelope ``e`` (B, T), its mask (int8, 1 = attack) and the number of rounds used
    (``max_rounds + 1`` when the sequential fallback ran)."""
    rows, steps = d.shape
    block = _block(steps)
    e = torch.empty_like(d)
    mask = torch.zeros(rows, steps, dtype=torch.int8, device=d.device)
    if k_att.data_ptr() == k_rel.data_ptr():  # one shared coefficient ("iir"): the mask is moot
        _scan_forward_kernel[(rows,)](d, k_att, k_rel, mask, e, steps, BLOCK=block)
        return e, mask, 1
    changed = torch.empty(rows, dtype=torch.int32, device=d.device)
    for rounds in range(1, max_rounds + 1):
        _scan_forward_kernel[(rows,)](d, k_att, k_rel, mask, e, steps, BLOCK=block)
        _mask_kernel[(rows,)](d, e, mask, changed, steps, BLOCK=block)
        if int(changed.max()) == 0:
            return e, mask, rounds
    _sequential_kernel[(rows,)](d, k_att, k_rel, mask, e, steps)
    return e, mask, max_rounds + 1


class _BallisticsTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, d: Tensor, k_att: Tensor, k_rel: Tensor, max_rounds: int) -> Tensor:
        d, k_att, k_rel = (t.detach().contiguous() for t in (d, k_att, k_rel))
        e, mask, _ = solve_forward(d, k_att, k_rel, max_rounds)
        ctx.save_for_backward(d, e, k_att, k_rel, mask)
        return e

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        d, e, k_att, k_rel, mask = ctx.saved_tensors
        rows, steps = d.shape
        grad_d = torch.empty_like(d)
        grad_ka = torch.empty_like(k_att)
        grad_kr = torch.empty_like(k_rel)
        _scan_backward_kernel[(rows,)](
            grad.contiguous(), d, e, k_att, k_rel, mask, grad_d, grad_ka, grad_kr, steps,
            BLOCK=_block(steps),
        )
        return grad_d, grad_ka, grad_kr, None


def ballistics_triton(
    d: Tensor, k_att: Tensor, k_rel: Tensor, max_rounds: int = MAX_ROUNDS
) -> Tensor:
    """:func:`dynfx.ballistics` with the Triton kernels (CUDA tensors, or CPU tensors under
    ``TRITON_INTERPRET=1``)."""
    return _BallisticsTriton.apply(d, k_att, k_rel, max_rounds)
