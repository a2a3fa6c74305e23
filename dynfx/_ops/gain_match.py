"""The gain-matching loss of analysis by synthesis, as one autograd operation on CPU.

Per batch item ``b``, over the samples where ``valid`` holds::

    g[n]   = max(20 log10(|y[n]| + 1e-12) - ref_db[n], floor_db)      # gain of y over the reference
    loss_b = sum_valid |g[n] - target_db[n]| / count_b

The logarithm runs as one vectorised PyTorch operation; one numba kernel (items, channels and
chunks of the signal in parallel) computes the loss and its gradient with respect to ``y`` in
the same pass (the gradient is kept; the backward pass only scales it), so a refinement step
costs two passes over the audio instead of a dozen elementwise operations and their adjoints. Derivatives follow
PyTorch's conventions at the kinks: ``|.|`` has slope 0 at 0, the floor passes the gradient
where ``g`` equals it.
"""

from __future__ import annotations

import math
from typing import Optional

import numba
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["gain_match_loss", "gain_match_loss_reference", "AMP_EPS"]

AMP_EPS = 1e-12
_DB = 20.0 / math.log(10.0)


CHUNK = 16384  # samples per parallel task (one item of one channel may span several)


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _kernel(y, log_amp, ref_db, target, valid, inv_count, floor, chunk, partial,
            grad):  # pragma: no cover
    """Tasks (item, channel, chunk) in parallel; ``partial[b, task]`` the sum of |g - target|
    over a task's samples; ``grad`` the derivative of the item's loss (that sum over all its
    tasks times ``inv_count[b]``) with respect to y. Signs and
    masks are selects and the slope is computed for every sample: the loop has no branches that
    noise-like signs would make unpredictable."""
    batch, channels, steps = y.shape
    per_row = (steps + chunk - 1) // chunk
    tasks = channels * per_row
    for t in numba.prange(batch * tasks):
        b = t // tasks
        r = t - b * tasks
        c = r // per_row
        q = r - c * per_row
        acc = 0.0
        inv = inv_count[b]
        lo = q * chunk
        hi = min(steps, (q + 1) * chunk)
        # one-dimensional views of the task's samples: indexed by a loop counter from 0, the
        # loop vectorises (3x faster than indexing the 3-D arrays with q * chunk + n)
        y_t, la_t, ref_t = y[b, c, lo:hi], log_amp[b, c, lo:hi], ref_db[b, c, lo:hi]
        tgt_t, val_t, grad_t = target[b, c, lo:hi], valid[b, c, lo:hi], grad[b, c, lo:hi]
        for n in range(hi - lo):
            v = float(y_t[n])
            raw = 20.0 * float(la_t[n]) - float(ref_t[n])
            diff = max(raw, floor) - float(tgt_t[n])
            slope = _DB / (abs(v) + AMP_EPS)
            sign_v = math.copysign(1.0, v) if v != 0.0 else 0.0
            sign_d = math.copysign(1.0, diff) if diff != 0.0 else 0.0
            keep = 1.0 if val_t[n] else 0.0
            acc += keep * abs(diff)
            grad_t[n] = keep * sign_d * sign_v * (1.0 if raw >= floor else 0.0) * slope * inv
        partial[b, r] = acc


class _GainMatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, ref_db, target_db, valid, inv_count, floor_db):
        y = y.detach().contiguous()
        batch, channels, steps = y.shape
        log_amp = y.abs().add_(AMP_EPS).log10_()  # vectorised; the kernel does the rest
        partial = torch.zeros(batch, channels * ((steps + CHUNK - 1) // CHUNK),
                              dtype=torch.float64)
        grad = torch.empty_like(y)
        inv = inv_count.to(torch.float64).contiguous()
        _kernel(y.numpy(), log_amp.numpy(), ref_db.contiguous().numpy(),
                target_db.contiguous().numpy(), valid.contiguous().numpy(), inv.numpy(),
                float(floor_db), CHUNK, partial.numpy(), grad.numpy())
        ctx.save_for_backward(grad)
        return (partial.sum(dim=1) * inv).to(y.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_loss):
        (grad,) = ctx.saved_tensors
        if bool((g_loss == 1).all()):  # the usual loss.sum().backward(): no extra pass
            return grad, None, None, None, None, None
        return grad * g_loss.to(grad.dtype)[:, None, None], None, None, None, None, None


def gain_match_loss(y: Tensor, ref_db: Tensor, target_db: Tensor, valid: Tensor,
                    floor_db: float, count: Optional[Tensor] = None) -> Tensor:
    """Per-item mean absolute difference (dB) between the sample-by-sample gain of ``y`` over a
    reference and a target gain: ``(B,)``, differentiable with respect to ``y``.

    ``ref_db``: ``20 log10(|x| + 1e-12)`` of the reference audio x; ``target_db``: the gain to
    match; ``valid``: bool mask of the samples that count (items without any valid sample have
    loss 0). All (B, C, T). ``count``: ``valid.sum(dim=(1, 2))`` when the caller has it (a
    refinement loop calls this with the same mask every step). CPU float32/float64 tensors run
    the fused pass; anything else :func:`gain_match_loss_reference`.
    """
    if y.shape != ref_db.shape or y.shape != target_db.shape or y.shape != valid.shape:
        raise ValueError("gain_match_loss: y, ref_db, target_db and valid must have one shape, "
                         f"got {tuple(y.shape)}, {tuple(ref_db.shape)}, {tuple(target_db.shape)}, "
                         f"{tuple(valid.shape)}")
    if y.device.type != "cpu" or y.dtype not in (torch.float32, torch.float64):
        return gain_match_loss_reference(y, ref_db, target_db, valid, floor_db)
    if count is None:
        count = valid.sum(dim=(1, 2))
    inv_count = 1.0 / count.clamp_min(1).to(torch.float64)
    return _GainMatch.apply(y, ref_db.to(y.dtype), target_db.to(y.dtype), valid.bool(),
                            inv_count, floor_db)


def gain_match_loss_reference(y: Tensor, ref_db: Tensor, target_db: Tensor, valid: Tensor,
                              floor_db: float) -> Tensor:
    """:func:`gain_match_loss` composed of PyTorch operations (any device; the tests' reference)."""
    gain = (20.0 * torch.log10(y.abs() + AMP_EPS) - ref_db).clamp_min(floor_db)
    per_sample = torch.where(valid, (gain - target_db).abs(), torch.zeros_like(gain))
    return per_sample.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp_min(1)
