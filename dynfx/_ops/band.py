"""One band of dynamics: on CPU the whole chain as one autograd operation, without
intermediate graph nodes; on other devices the chain of separate PyTorch operations.

detector (linked across channels) -> ballistics recursion -> level in dB -> gain computer ->
``y = x * 10^((g + makeup) / 20)``, with a hand-written backward pass (the adjoint of each stage).
Elementwise work runs as vectorised PyTorch operations, the recursion and the gain computer as
numba kernels. It computes exactly what :func:`band_dynamics_reference` computes with separate
PyTorch operations (the tests hold the two together), without the intermediate tensors.

The kernel's gain computer is selected by the registry's integer code
(:data:`dynfx.functional.GAIN_COMPUTERS`); its amount is the slope ``1/R - 1`` for a compressor,
``R - 1`` for an expander and ``range_db`` for a gate (the registry's ``kernel_amount``).
The gain computer's scalars are computed in float64 and stored in the signal's dtype.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .ballistics import _backward_kernel as _ballistics_backward
from .ballistics import _forward_kernel as _ballistics_forward
from .ballistics import ballistics
from .memory import empty, scratch, scratch_like

__all__ = ["band_dynamics", "band_dynamics_reference", "KNEES", "DETECTOR_CODES"]

KNEES = {"hard": 0, "quadratic": 1, "exponential": 2}
DETECTOR_CODES = {"rms": 0, "peak": 1}

_LN10_20 = math.log(10.0) / 20.0
_DB_POW = 10.0 / math.log(10.0)  # d(10 log10 e)/de * e
_DB_AMP = 20.0 / math.log(10.0)  # d(20 log10 e)/de * e
_RMS_EPS = 1e-12
_PEAK_EPS = 1e-6
_MIN_KNEE_DB = 1e-6


@numba.njit(inline="always")
def _softplus(z):
    if z > 20.0:
        return z
    if z < -30.0:
        return math.exp(z)
    return math.log1p(math.exp(z))


@numba.njit(inline="always")
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@numba.njit(inline="always")
def _gain(kind, knee, v, amt, w):  # pragma: no cover - compiled
    """Gain (dB) and its partial derivatives (d/dv, d/damount, d/dwidth), v = L - threshold."""
    soft = knee != 0 and w > _MIN_KNEE_DB
    if kind == 0:  # compressor, amt = slope s <= 0
        if soft and knee == 1:
            if abs(v) < 0.5 * w:
                q = v + 0.5 * w
                return amt * q * q / (2.0 * w), amt * q / w, q * q / (2.0 * w), amt * (
                    q / (2.0 * w) - q * q / (2.0 * w * w)
                )
        elif soft:
            k = 4.0 / w
            z = k * v
            sp = _softplus(z)
            sg = _sigmoid(z)
            return amt * sp / k, amt * sg, sp / k, amt * (sp / 4.0 - sg * v / w)
        if v > 0.0:
            return amt * v, amt, v, 0.0
        return 0.0, 0.0, 0.0, 0.0
    if kind == 1:  # expander, amt = r >= 0
        if soft and knee == 1:
            if abs(v) < 0.5 * w:
                q = v - 0.5 * w
                return -amt * q * q / (2.0 * w), -amt * q / w, -q * q / (2.0 * w), amt * (
                    q / (2.0 * w) + q * q / (2.0 * w * w)
                )
        elif soft:
            k = 4.0 / w
            z = -k * v
            sp = _softplus(z)
            sg = _sigmoid(z)
            return -amt * sp / k, amt * sg, -sp / k, -amt * (sp / 4.0 + sg * v / w)
        if v < 0.0:
            return amt * v, amt, v, 0.0
        return 0.0, 0.0, 0.0, 0.0
    # gate, amt = range_db <= 0; g = amt * (1 - s)
    if soft and knee == 1:
        u = v / w + 0.5
        if u <= 0.0:
            return amt, 0.0, 1.0, 0.0
        if u >= 1.0:
            return 0.0, 0.0, 0.0, 0.0
        s = u * u * (3.0 - 2.0 * u)
        ds = 6.0 * u * (1.0 - u)
        return amt * (1.0 - s), -amt * ds / w, 1.0 - s, amt * ds * v / (w * w)
    if soft:
        z = 4.0 * v / w
        s = _sigmoid(z)
        ds = s * (1.0 - s)
        return amt * (1.0 - s), -amt * ds * 4.0 / w, 1.0 - s, amt * ds * 4.0 * v / (w * w)
    if v > 0.0:
        return 0.0, 0.0, 0.0, 0.0
    return amt, 0.0, 1.0, 0.0


@numba.njit(parallel=True, cache=True)
def _gain_kernel(level, thr, amt, kw, kind, knee, gain):  # pragma: no cover - compiled
    rows, steps = level.shape
    for b in numba.prange(rows):
        t_b, a_b, w_b = float(thr[b]), float(amt[b]), float(kw[b])
        for n in range(steps):
            g, _, _, _ = _gain(kind, knee, float(level[b, n]) - t_b, a_b, w_b)
            gain[b, n] = g


@numba.njit(parallel=True, cache=True)
def _gain_backward_kernel(
    sxy, gg, has_gg, level, amp, env, thr, amt, kw, kind, knee, det, g_env, g_thr, g_amt, g_kw,
    g_mk,
):  # pragma: no cover - compiled
    """Adjoint of level -> gain -> amplitude, sample by sample (no recursion): the gradient with
    respect to the envelope, and the per-row parameter gradients. ``gg``, the gradient of the
    gain output, is read only when ``has_gg``. ``g_env`` may be ``sxy`` (each sample is read
    before its slot is written)."""
    rows, steps = level.shape
    eps = _RMS_EPS if det == 0 else _PEAK_EPS
    db = _DB_POW if det == 0 else _DB_AMP
    for b in numba.prange(rows):
        t_b, a_b, w_b = float(thr[b]), float(amt[b]), float(kw[b])
        acc_thr = 0.0
        acc_amt = 0.0
        acc_kw = 0.0
        acc_mk = 0.0
        for n in range(steps):
            _, dg_dv, dg_da, dg_dw = _gain(kind, knee, float(level[b, n]) - t_b, a_b, w_b)
            d_total = float(sxy[b, n]) * float(amp[b, n]) * _LN10_20  # dloss / d(g + makeup)
            acc_mk += d_total
            d_g = d_total + float(gg[b, n]) if has_gg else d_total
            acc_thr -= d_g * dg_dv
            acc_amt += d_g * dg_da
            acc_kw += d_g * dg_dw
            g_env[b, n] = d_g * dg_dv * db / (float(env[b, n]) + eps)
        g_thr[b] = acc_thr
        g_amt[b] = acc_amt
        g_kw[b] = acc_kw
        g_mk[b] = acc_mk


@numba.njit(parallel=True, cache=True)
def _power_kernel(x, d):  # pragma: no cover - compiled
    """d[b, n] = mean_c x[b, c, n]^2 (the rms detector), channels in the outer loop so that the
    inner loop runs over contiguous samples."""
    rows, channels, steps = x.shape
    for b in numba.prange(rows):
        for n in range(steps):
            d[b, n] = x[b, 0, n] * x[b, 0, n]
        for c in range(1, channels):
            for n in range(steps):
                d[b, n] += x[b, c, n] * x[b, c, n]
        if channels > 1:
            for n in range(steps):
                d[b, n] /= channels


@numba.njit(parallel=True, cache=True)
def _channel_dot_kernel(gy, x, out, group):  # pragma: no cover - compiled
    """out[b, n] = sum_c gy[b // group, c, n] x[b, c, n]."""
    rows, channels, steps = x.shape
    for b in numba.prange(rows):
        g = b // group
        for n in range(steps):
            out[b, n] = gy[g, 0, n] * x[b, 0, n]
        for c in range(1, channels):
            for n in range(steps):
                out[b, n] += gy[g, c, n] * x[b, c, n]


@numba.njit(parallel=True, cache=True)
def _input_grad_rms_kernel(gy, x, amp, g_d, gx, group):  # pragma: no cover - compiled
    """gx = gy * amp + g_d * 2 x / C: the gain path plus the rms detector path (gy of row
    b // group)."""
    rows, channels, steps = x.shape
    for b in numba.prange(rows):
        g = b // group
        for c in range(channels):
            for n in range(steps):
                gx[b, c, n] = gy[g, c, n] * amp[b, n] + g_d[b, n] * (2.0 / channels) * x[b, c, n]


@numba.njit(parallel=True, cache=True)
def _peak_kernel(x, d):  # pragma: no cover - compiled
    """d[b, n] = max_c |x[b, c, n]| (the peak detector)."""
    rows, channels, steps = x.shape
    for b in numba.prange(rows):
        for n in range(steps):
            d[b, n] = abs(x[b, 0, n])
        for c in range(1, channels):
            for n in range(steps):
                v = abs(x[b, c, n])
                if v > d[b, n]:
                    d[b, n] = v


@numba.njit(parallel=True, cache=True)
def _input_grad_peak_kernel(gy, x, amp, d, g_d, gx, group):  # pragma: no cover - compiled
    """gx = gy * amp + the peak detector path: g_d goes to the channel(s) holding the maximum,
    with the sign of the sample, shared equally between ties (as torch.amax does); gy of row
    b // group. Every loop runs over contiguous samples of one-dimensional views without
    branches (the tie count and the share in a buffer of a block of samples), so that it
    vectorises (indexing the 3-D arrays inside the loops kept it scalar: 5x slower)."""
    rows, channels, steps = x.shape
    block = 2048  # samples per pass: the share buffer stays small (16 KiB)
    for b in numba.prange(rows):
        g = b // group
        share = np.empty(block)
        for n0 in range(0, steps, block):
            n1 = min(steps, n0 + block)
            m = n1 - n0
            db = d[b, n0:n1]
            xc = x[b, 0, n0:n1]
            for j in range(m):
                share[j] = abs(xc[j]) == db[j]
            for c in range(1, channels):
                xc = x[b, c, n0:n1]
                for j in range(m):
                    share[j] += abs(xc[j]) == db[j]
            gdb = g_d[b, n0:n1]
            for j in range(m):
                share[j] = gdb[j] / share[j]
            ab = amp[b, n0:n1]
            for c in range(channels):
                xc, gyc, gxc = x[b, c, n0:n1], gy[g, c, n0:n1], gx[b, c, n0:n1]
                for j in range(m):
                    v = xc[j]
                    s = share[j] if v > 0 else -share[j]
                    gxc[j] = gyc[j] * ab[j] + (s if (abs(v) == db[j]) & (v != 0) else 0.0)


@numba.njit(parallel=True, cache=True)
def _apply_gain_kernel(x, amp, group, y):  # pragma: no cover - compiled
    """y[g, c, n] = sum_i x[g * group + i, c, n] amp[g * group + i, n]: the gains applied and
    each group of rows (the bands of one item) summed, without a per-row output."""
    rows, channels, steps = y.shape
    for task in numba.prange(rows * channels):
        g = task // channels
        c = task - g * channels
        b = g * group
        for n in range(steps):
            y[g, c, n] = x[b, c, n] * amp[b, n]
        for i in range(1, group):
            for n in range(steps):
                y[g, c, n] += x[b + i, c, n] * amp[b + i, n]


class _FusedBand(torch.autograd.Function):
    """Forward: linked detector and log10/exp as vectorised PyTorch operations, the attack/release
    recursion and the gain computer as numba kernels, no autograd graph in between. Backward: the
    adjoint of each stage, the recursion by the ballistics backward kernel. With ``group > 1``
    the output is the sum of each group of ``group`` consecutive rows (``group`` divides B)."""

    @staticmethod
    def forward(ctx, x, thr, amt, kw, ka, kr, mk, kind, knee, det, group):
        x = x.detach().contiguous()
        thr, amt, kw, ka, kr, mk = (p.detach().contiguous() for p in (thr, amt, kw, ka, kr, mk))
        rows, channels, steps = x.shape
        # the signal-sized arrays (dynfx._ops.memory): the intermediates from the scratch pool,
        # the outputs fresh; written in place
        d, env, level, amp = (scratch(rows, steps, dtype=x.dtype) for _ in range(4))
        gain = empty(rows, steps, dtype=x.dtype)
        y = empty(rows // group, channels, steps, dtype=x.dtype)
        eps, db = (_RMS_EPS, 10.0) if det == 0 else (_PEAK_EPS, 20.0)
        (_power_kernel if det == 0 else _peak_kernel)(x.numpy(), d.numpy())
        _ballistics_forward(d.numpy(), ka.numpy(), kr.numpy(), env.numpy())
        torch.add(env, eps, out=level).log10_().mul_(db)
        _gain_kernel(level.numpy(), thr.numpy(), amt.numpy(), kw.numpy(), kind, knee, gain.numpy())
        torch.add(gain, mk[:, None], out=amp).mul_(_LN10_20).exp_()
        _apply_gain_kernel(x.numpy(), amp.numpy(), group, y.numpy())
        ctx.save_for_backward(x, d, env, level, amp, thr, amt, kw, ka, kr)
        ctx.codes = (kind, knee, det, group)
        ctx.set_materialize_grads(False)  # an unused output's gradient is None, not zeros
        return y, gain

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gg):
        x, d, env, level, amp, thr, amt, kw, ka, kr = ctx.saved_tensors
        kind, knee, det, group = ctx.codes
        rows, channels, steps = x.shape
        gy = (x.new_zeros(rows // group, channels, steps) if gy is None else
              gy.to(x.dtype).contiguous())
        has_gg = gg is not None
        gg = gg.to(x.dtype).contiguous() if has_gg else x.new_zeros(rows, 1)
        gy_, x_ = gy.numpy(), x.numpy()
        work = scratch(rows, steps, dtype=x.dtype)  # sxy, then the envelope's, then d's gradient
        w = work.numpy()
        _channel_dot_kernel(gy_, x_, w, group)
        # in place: each sample of w is read before its slot is written
        g_thr, g_amt, g_kw, g_mk = (torch.zeros_like(thr) for _ in range(4))
        _gain_backward_kernel(
            w, gg.numpy(), has_gg, level.numpy(), amp.numpy(), env.numpy(), thr.numpy(),
            amt.numpy(), kw.numpy(), kind, knee, det,
            w, g_thr.numpy(), g_amt.numpy(), g_kw.numpy(), g_mk.numpy(),
        )
        g_ka, g_kr = torch.zeros_like(ka), torch.zeros_like(kr)
        _ballistics_backward(w, d.numpy(), env.numpy(), ka.numpy(), kr.numpy(), w, g_ka.numpy(),
                             g_kr.numpy())
        if not ctx.needs_input_grad[0]:  # fixed audio (training on dry clips): no input pass
            return None, g_thr, g_amt, g_kw, g_ka, g_kr, g_mk, None, None, None, None
        gx = scratch_like(x)
        if det == 0:
            _input_grad_rms_kernel(gy_, x_, amp.numpy(), w, gx.numpy(), group)
        else:
            _input_grad_peak_kernel(gy_, x_, amp.numpy(), d.numpy(), w, gx.numpy(), group)
        return gx, g_thr, g_amt, g_kw, g_ka, g_kr, g_mk, None, None, None, None


def band_dynamics(
    x: Tensor,
    threshold_db: Tensor,
    amount: Tensor,
    knee_db: Tensor,
    k_att: Tensor,
    k_rel: Tensor,
    makeup_db: Tensor,
    computer,
    knee_type: str,
    detector: str,
    group: int = 1,
) -> tuple[Tensor, Tensor]:
    """One band of dynamics: ``(y, gain_db)`` for (B, C, T) audio.

    All parameters are (B,) tensors of x's dtype; ``amount`` is the gain computer's own amount
    parameter (ratio or range_db); ``computer`` is an entry of
    :data:`dynfx.functional.GAIN_COMPUTERS` (its curve, kernel code and kernel amount);
    ``k_att``/``k_rel`` are new-sample weights (equal for "iir" smoothing). CPU tensors run the
    fused kernel, other devices (and a gain computer without a kernel branch, ``code=None``)
    :func:`band_dynamics_reference`. ``group > 1``: the rows are the bands of B / group items
    (``group`` consecutive rows each), and ``y`` is their sum, (B / group, C, T).
    """
    if group < 1 or x.shape[0] % group:
        raise ValueError(f"band_dynamics: group must be a positive divisor of the batch "
                         f"{x.shape[0]}, got {group}")
    if x.device.type != "cpu" or computer.code is None:
        return band_dynamics_reference(x, threshold_db, amount, knee_db, k_att, k_rel,
                                       makeup_db, computer, knee_type, detector, group)
    return _FusedBand.apply(
        x, threshold_db, computer.kernel_amount(amount), knee_db, k_att, k_rel, makeup_db,
        computer.code, KNEES[knee_type], DETECTOR_CODES[detector], group,
    )


def band_dynamics_reference(x, threshold_db, amount, knee_db, k_att, k_rel, makeup_db,
                            computer, knee_type: str, detector: str,
                            group: int = 1) -> tuple[Tensor, Tensor]:
    """The same chain composed of separate PyTorch operations around the ballistics op (any
    device; the reference of the fused kernel in the tests)."""
    from .. import functional as F  # the functional layer imports this module

    env = ballistics(F.detect(x, detector), k_att, k_rel)  # (B, T)
    gain_db = computer.fn(F.level_db(env, detector), threshold_db, amount, knee_db, knee_type)
    y = x * F.db_to_amp(gain_db + makeup_db[:, None])[:, None, :]
    if group > 1:
        y = y.view(-1, group, *y.shape[1:]).sum(dim=1)
    return y, gain_db
