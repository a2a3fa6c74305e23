"""The transient shaper, detector to output, as one autograd operation on CPU.

Per row, one forward loop over the samples: the linked detector, the three followers (fast on
the detector signal; slow and hold on the fast envelope), the two level differences (each the
logarithm of a ratio of envelopes), the onset weight ``phi``, the sounding weight ``psi``, the
gain ``g = attack phi + sustain (1 - phi) psi`` and ``y = x 10^(g / 20)``; the three envelopes
at the start of every chunk of :data:`CHUNK` samples are kept (float64), and per sample the two
smoothstep arguments and the amplitude (in the signal's dtype: their logarithms and exponential
are the expensive part of a sample). The backward pass takes the chunks last first: it
recomputes a chunk's envelopes (the followers only) into a small buffer, then runs back through
it: the adjoint of the gain formula and of the level differences, the three reverse-time
follower recursions together (hold and slow feed their input gradient into the fast one at the
same sample), then the detector. It computes what :func:`transient_reference` computes with
separate PyTorch operations (the tests hold the two together); scalars are float64 inside the
kernels, arrays in the signal's dtype. Formulas: :func:`dynfx.functional.transient_gain`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .band import DETECTOR_CODES
from .memory import empty, empty_like, scratch

__all__ = ["transient_shaper", "transient_reference", "transient_gain_reference", "TRANSIENT_FULL_DB", "HOLD_RELEASE_FACTOR",
           "SOUNDING_LOW_DB", "SOUNDING_HIGH_DB"]

TRANSIENT_FULL_DB = 6.0  # fast-minus-slow level difference at which a sample counts as all onset
HOLD_RELEASE_FACTOR = 10.0  # the hold follower releases this many times slower than release_ms
SOUNDING_LOW_DB = -50.0  # slow level this far below the hold level: silence (psi = 0)
SOUNDING_HIGH_DB = -30.0  # ... and this close to it: a sounding note (psi = 1)

_LN10_20 = math.log(10.0) / 20.0
_RMS_EPS = 1e-12
_PEAK_EPS = 1e-6
_SOUND_SPAN = SOUNDING_HIGH_DB - SOUNDING_LOW_DB
CHUNK = 256  # samples recomputed at a time in the backward pass (buffers stay in L1)


@numba.njit(inline="always")
def _detector(x, b, n, det):  # pragma: no cover - compiled
    channels = x.shape[1]
    if det == 0:
        acc = 0.0
        for c in range(channels):
            v = float(x[b, c, n])
            acc += v * v
        return acc / channels
    m = 0.0
    for c in range(channels):
        v = abs(float(x[b, c, n]))
        if v > m:
            m = v
    return m


@numba.njit(inline="always")
def _floor(det):  # pragma: no cover - compiled
    """(the epsilon added before the dB conversion, dB per neper: 10 or 20 / ln 10)."""
    if det == 0:
        return _RMS_EPS, 10.0 / math.log(10.0)
    return _PEAK_EPS, 20.0 / math.log(10.0)


@numba.njit(inline="always")
def _smoothstep(z):  # pragma: no cover - compiled
    """(smoothstep(clamp(z, 0, 1)), its derivative with respect to z)."""
    if z <= 0.0:
        return 0.0, 0.0
    if z >= 1.0:
        return 1.0, 0.0
    return z * z * (3.0 - 2.0 * z), 6.0 * z * (1.0 - z)


@numba.njit(inline="always")
def _followers(d, ef, es, eh, kfa, kfr, ksa, ksr, kha, khr):  # pragma: no cover - compiled
    """One sample of the three followers: fast on the detector signal, slow and hold on the fast
    envelope."""
    ef += (kfa if d > ef else kfr) * (d - ef)
    es += (ksa if ef > es else ksr) * (ef - es)
    eh += (kha if ef > eh else khr) * (ef - eh)
    return ef, es, eh


@numba.njit(inline="always")
def _shape(ef, es, eh, eps, db, r_phi, r_low, r_high, a_b, s_b, amp_att,
           amp_sus):  # pragma: no cover - compiled
    """One sample, from its three envelopes: the smoothstep arguments u (phi) and w (psi), the
    gain and its amplitude.

    The level differences are logarithms of envelope ratios, needed only inside the
    smoothsteps' ramps (a few dB): outside, comparing the ratio with the ramp's ends settles
    phi and psi, and the gain is 0, attack_db or sustain_db exactly, whose amplitudes are
    computed once per row."""
    ff, fs_, fh = ef + eps, es + eps, eh + eps
    if ff <= fs_:
        u = 0.0
    elif ff >= fs_ * r_phi:
        u = 1.0
    else:
        u = db * math.log(ff / fs_) / TRANSIENT_FULL_DB
    if fs_ <= fh * r_low:
        w = 0.0
    elif fs_ >= fh * r_high:
        w = 1.0
    else:
        w = (db * math.log(fs_ / fh) - SOUNDING_LOW_DB) / _SOUND_SPAN
    phi, _ = _smoothstep(u)
    psi, _ = _smoothstep(w)
    g = a_b * phi + s_b * (1.0 - phi) * psi
    if phi == 1.0:
        a = amp_att
    elif phi == 0.0 and psi == 1.0:
        a = amp_sus
    elif phi == 0.0 and psi == 0.0:
        a = 1.0
    else:
        a = math.exp(g * _LN10_20)
    return u, w, g, a


@numba.njit(inline="always")
def _follower_adjoint(lam, g, k_next, inp, e_prev, ka, kr):  # pragma: no cover - compiled
    """One reverse-time step of a follower's adjoint (see :mod:`dynfx._ops.ballistics`):
    ``lam[n] = g[n] + (1 - k[n+1]) lam[n+1]``; returns lam[n], the weight k[n] the forward step
    used (attack while ``inp`` rose above the previous envelope) and the step's contribution to
    the attack and to the release weight's gradient (one of them 0)."""
    lam = g + (1.0 - k_next) * lam
    up = 1.0 if inp > e_prev else 0.0
    t = lam * (inp - e_prev)
    return lam, ka * up + kr * (1.0 - up), t * up, t * (1.0 - up)


@numba.njit(inline="always")
def _row_constants(det, att_b, sus_b):  # pragma: no cover - compiled
    eps, db = _floor(det)
    r_phi = math.exp(TRANSIENT_FULL_DB / db)  # envelope ratios at the ramps' ends
    r_low = math.exp(SOUNDING_LOW_DB / db)
    r_high = math.exp(SOUNDING_HIGH_DB / db)
    return (eps, db, r_phi, r_low, r_high, math.exp(att_b * _LN10_20),
            math.exp(sus_b * _LN10_20))


@numba.njit(parallel=True, cache=True, fastmath={"contract", "arcp"})
def _forward_kernel(x, att, sus, k, det, chunk, y, gain, states,
                    uwa):  # pragma: no cover - compiled
    """k: (B, 6) new-sample weights (fast att/rel, slow att/rel, hold att/rel); states
    (B, n_chunks, 3) float64: the three envelopes before each chunk of ``chunk`` samples;
    uwa (3, B, T): the smoothstep arguments u, w and the amplitude of every sample, kept for
    the backward pass (whose recomputation then runs the followers only)."""
    batch, channels, steps = x.shape
    for b in numba.prange(batch):
        kfa, kfr, ksa, ksr, kha, khr = k[b, 0], k[b, 1], k[b, 2], k[b, 3], k[b, 4], k[b, 5]
        a_b, s_b = float(att[b]), float(sus[b])
        eps, db, r_phi, r_low, r_high, amp_att, amp_sus = _row_constants(det, a_b, s_b)
        env = np.empty((chunk, 3))
        amp = np.empty(chunk)
        ef = 0.0
        es = 0.0
        eh = 0.0
        for q in range((steps + chunk - 1) // chunk):
            states[b, q, 0] = ef
            states[b, q, 1] = es
            states[b, q, 2] = eh
            n0 = q * chunk
            m = min(chunk, steps - n0)
            # the recursions alone first, then the per-sample work from the buffered envelopes:
            # that loop's data-dependent branches then never stall the recursions
            for j in range(m):
                ef, es, eh = _followers(_detector(x, b, n0 + j, det), ef, es, eh, kfa, kfr,
                                        ksa, ksr, kha, khr)
                env[j, 0] = ef
                env[j, 1] = es
                env[j, 2] = eh
            for j in range(m):
                n = n0 + j
                u, w, g, a = _shape(env[j, 0], env[j, 1], env[j, 2], eps, db, r_phi, r_low,
                                    r_high, a_b, s_b, amp_att, amp_sus)
                amp[j] = a
                gain[b, n] = g
                uwa[0, b, n] = u
                uwa[1, b, n] = w
                uwa[2, b, n] = a
            for c in range(channels):  # over contiguous samples (1-D views: it vectorises)
                y_c, x_c = y[b, c, n0:n0 + m], x[b, c, n0:n0 + m]
                for j in range(m):
                    y_c[j] = x_c[j] * amp[j]


@numba.njit(parallel=True, cache=True, fastmath={"contract", "arcp"})
def _backward_kernel(gy, gg, has_gg, x, att, sus, k, det, chunk, states, uwa, gx, g_att, g_sus,
                     g_k):  # pragma: no cover - compiled
    """Per row, the chunks last first: recompute the chunk's envelopes from the stored states
    into a small buffer, then run the adjoint back through it (smoothstep arguments and
    amplitudes as the forward pass kept them in ``uwa``). ``gg`` (the gain output's gradient)
    is read only when ``has_gg``."""
    batch, channels, steps = x.shape
    n_chunks = (steps + chunk - 1) // chunk
    for b in numba.prange(batch):
        kfa, kfr, ksa, ksr, kha, khr = k[b, 0], k[b, 1], k[b, 2], k[b, 3], k[b, 4], k[b, 5]
        a_b, s_b = float(att[b]), float(sus[b])
        eps, db, r_phi, r_low, r_high, amp_att, amp_sus = _row_constants(det, a_b, s_b)
        env = np.empty((chunk + 1, 3))  # row 0: the envelopes before the chunk
        dd = np.empty(chunk)  # the detector signal
        gdd = np.empty(chunk)  # its gradient
        genv = np.empty((chunk, 3))  # the gradients reaching the three envelopes
        sxy = np.empty(chunk)  # the gradient reaching the amplitude, summed over channels
        lam_f = 0.0
        lam_s = 0.0
        lam_h = 0.0
        kf_next = 0.0  # the weights the recursions used at n + 1
        ks_next = 0.0
        kh_next = 0.0
        acc_a = 0.0
        acc_s = 0.0
        acc_fa = 0.0
        acc_fr = 0.0
        acc_sa = 0.0
        acc_sr = 0.0
        acc_ha = 0.0
        acc_hr = 0.0
        for qq in range(n_chunks):
            q = n_chunks - 1 - qq
            n0 = q * chunk
            m = min(chunk, steps - n0)
            ef, es, eh = states[b, q, 0], states[b, q, 1], states[b, q, 2]
            env[0, 0] = ef
            env[0, 1] = es
            env[0, 2] = eh
            for j in range(m):
                d = _detector(x, b, n0 + j, det)
                ef, es, eh = _followers(d, ef, es, eh, kfa, kfr, ksa, ksr, kha, khr)
                dd[j] = d
                env[j + 1, 0] = ef
                env[j + 1, 1] = es
                env[j + 1, 2] = eh
            # three loops per chunk, so that the per-sample branches (ramps, ties) never stall
            # a recursion: the gain formula's adjoint (no recursion), the three followers'
            # reverse-time recursions alone, then the input gradient
            for j in range(m):
                sxy[j] = 0.0
            for c in range(channels):  # sum_c gy x, over contiguous samples (1-D views)
                gy_c, x_c = gy[b, c, n0:n0 + m], x[b, c, n0:n0 + m]
                for j in range(m):
                    sxy[j] += float(gy_c[j]) * float(x_c[j])
            for jj in range(m):
                j = m - 1 - jj
                n = n0 + j
                a = float(uwa[2, b, n])
                dg = sxy[j] * a * _LN10_20
                if has_gg:
                    dg += float(gg[b, n])
                phi, dphi = _smoothstep(float(uwa[0, b, n]))
                psi, dpsi = _smoothstep(float(uwa[1, b, n]))
                acc_a += dg * phi
                acc_s += dg * (1.0 - phi) * psi
                gu = dg * (a_b - s_b * psi) * dphi / TRANSIENT_FULL_DB
                gw = dg * s_b * (1.0 - phi) * dpsi / _SOUND_SPAN
                if gu != 0.0 or gw != 0.0:  # inside a ramp; elsewhere skip the divisions
                    genv[j, 0] = gu * db / (env[j + 1, 0] + eps)
                    genv[j, 1] = (gw - gu) * db / (env[j + 1, 1] + eps)
                    genv[j, 2] = -gw * db / (env[j + 1, 2] + eps)
                else:
                    genv[j, 0] = 0.0
                    genv[j, 1] = 0.0
                    genv[j, 2] = 0.0
            for jj in range(m):
                j = m - 1 - jj
                ef = env[j + 1, 0]
                ef_p, es_p, eh_p = env[j, 0], env[j, 1], env[j, 2]
                # hold and slow: input ef, their input gradients join the fast envelope's
                lam_h, kh, t_att, t_rel = _follower_adjoint(lam_h, genv[j, 2], kh_next, ef, eh_p,
                                                            kha, khr)
                acc_ha += t_att
                acc_hr += t_rel
                lam_s, ks, t_att, t_rel = _follower_adjoint(lam_s, genv[j, 1], ks_next, ef, es_p,
                                                            ksa, ksr)
                acc_sa += t_att
                acc_sr += t_rel
                lam_f, kf, t_att, t_rel = _follower_adjoint(
                    lam_f, genv[j, 0] + lam_h * kh + lam_s * ks, kf_next, dd[j], ef_p, kfa, kfr)
                acc_fa += t_att
                acc_fr += t_rel
                kh_next, ks_next, kf_next = kh, ks, kf
                gdd[j] = lam_f * kf
            if det == 0:
                a_c = uwa[2, b, n0:n0 + m]
                for c in range(channels):
                    gx_c, gy_c, x_c = gx[b, c, n0:n0 + m], gy[b, c, n0:n0 + m], x[b, c, n0:n0 + m]
                    for j in range(m):
                        gx_c[j] = (float(gy_c[j]) * float(a_c[j])
                                   + gdd[j] * 2.0 * float(x_c[j]) / channels)
            else:
                for j in range(m):
                    n = n0 + j
                    a = float(uwa[2, b, n])
                    gd = gdd[j]
                    d = dd[j]
                    ties = 0
                    for c in range(channels):
                        if abs(float(x[b, c, n])) == d:
                            ties += 1
                    share = gd / ties
                    for c in range(channels):
                        v = float(x[b, c, n])
                        extra = 0.0
                        if abs(v) == d:
                            extra = share if v > 0 else (-share if v < 0 else 0.0)
                        gx[b, c, n] = float(gy[b, c, n]) * a + extra
        g_att[b] = acc_a
        g_sus[b] = acc_s
        g_k[b, 0] = acc_fa
        g_k[b, 1] = acc_fr
        g_k[b, 2] = acc_sa
        g_k[b, 3] = acc_sr
        g_k[b, 4] = acc_ha
        g_k[b, 5] = acc_hr


class _FusedTransient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, att, sus, k, det):
        x = x.detach().contiguous()
        att, sus = att.detach().contiguous(), sus.detach().contiguous()
        k64 = k.detach().double().contiguous()
        batch, channels, steps = x.shape
        y = empty_like(x)
        gain = empty(batch, steps, dtype=x.dtype)
        states = torch.empty(batch, max((steps + CHUNK - 1) // CHUNK, 1), 3, dtype=torch.float64)
        uwa = scratch(3, batch, steps, dtype=x.dtype)
        if x.numel():
            _forward_kernel(x.numpy(), att.numpy(), sus.numpy(), k64.numpy(), det, CHUNK,
                            y.numpy(), gain.numpy(), states.numpy(), uwa.numpy())
        ctx.save_for_backward(x, att, sus, k64, states, uwa)
        ctx.det = det
        ctx.k_dtype = k.dtype
        ctx.set_materialize_grads(False)  # an unused output's gradient is None, not zeros
        return y, gain

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, gg):
        x, att, sus, k64, states, uwa = ctx.saved_tensors
        gx = empty_like(x)
        g_att = torch.zeros(x.shape[0], dtype=torch.float64)
        g_sus = torch.zeros_like(g_att)
        g_k = torch.zeros_like(k64)
        gy = torch.zeros_like(x) if gy is None else gy.to(x.dtype).contiguous()
        has_gg = gg is not None
        gg = gg.to(x.dtype).contiguous() if has_gg else x.new_zeros(x.shape[0], 1)
        if x.numel():
            _backward_kernel(gy.numpy(), gg.numpy(), has_gg, x.numpy(), att.numpy(), sus.numpy(),
                             k64.numpy(), ctx.det, CHUNK, states.numpy(), uwa.numpy(),
                             gx.numpy(),
                             g_att.numpy(), g_sus.numpy(), g_k.numpy())
        return gx, g_att.to(att.dtype), g_sus.to(sus.dtype), g_k.to(ctx.k_dtype), None


def transient_shaper(x: Tensor, attack_db: Tensor, sustain_db: Tensor, k: Tensor,
                     detector: str) -> tuple[Tensor, Tensor]:
    """``(y, gain_db)`` of the transient shaper for (B, C, T) audio.

    ``attack_db``, ``sustain_db``: (B,); ``k``: (B, 6), the new-sample weights of the fast
    (attack, release), slow (attack, release) and hold (attack, release) followers. CPU float32 and
    float64 tensors run the fused kernels; anything else :func:`transient_reference`.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return transient_reference(x, attack_db, sustain_db, k, detector)
    return _FusedTransient.apply(x, attack_db, sustain_db, k, DETECTOR_CODES[detector])


def _smoothstep_t(u: Tensor) -> Tensor:
    u = torch.clamp(u, 0.0, 1.0)
    return u.square() * (3.0 - 2.0 * u)


def transient_gain_reference(d: Tensor, attack_db: Tensor, sustain_db: Tensor, k: Tensor,
                             detector: str) -> Tensor:
    """The gain (dB), (B, T), from a (B, T) detector signal, composed of separate PyTorch
    operations around the ballistics op (any device; the reference of the fused kernels)."""
    from .. import functional as F  # the functional layer imports this module
    from .ballistics import ballistics

    fast = ballistics(d, k[:, 0], k[:, 1])
    # The slow follower smooths the fast envelope rather than d itself: the fast envelope has no
    # detector ripple, and once a note decays faster than the release both release together, so
    # the level difference falls below 0 in tails instead of freezing at its onset value.
    slow = ballistics(fast, k[:, 2], k[:, 3])
    hold = ballistics(fast, k[:, 4], k[:, 5])
    l_fast, l_slow, l_hold = (F.level_db(e, detector) for e in (fast, slow, hold))
    phi = _smoothstep_t((l_fast - l_slow) / TRANSIENT_FULL_DB)
    psi = _smoothstep_t((l_slow - l_hold - SOUNDING_LOW_DB) / _SOUND_SPAN)
    return attack_db[:, None] * phi + sustain_db[:, None] * (1.0 - phi) * psi


def transient_reference(x: Tensor, attack_db: Tensor, sustain_db: Tensor, k: Tensor,
                        detector: str) -> tuple[Tensor, Tensor]:
    """:func:`transient_shaper` composed of separate PyTorch operations."""
    from .. import functional as F

    gain_db = transient_gain_reference(F.detect(x, detector), attack_db, sustain_db, k, detector)
    return x * F.db_to_amp(gain_db)[:, None, :], gain_db
