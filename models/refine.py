"""Analysis by synthesis: refine estimated settings by gradient steps through the processor."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from dynfx import functional as F

from .metrics import GAIN_FLOOR_DB

__all__ = ["refine_settings", "sample_gain_db", "REFINE_METHODS", "resolve_method",
           "DEFAULT_STEPS"]

VALID_AMPLITUDE = 1e-4  # dry samples below -80 dBFS carry no gain information
AMP_EPS = 1e-12  # added to |x| before the dB conversion (the loss's own epsilon)


def sample_gain_db(y: Tensor, x: Tensor) -> Tensor:
    """Gain of ``y`` against ``x`` sample by sample in dB, floored at -100 dB."""
    return (F.amp_to_db(y.abs(), AMP_EPS) - F.amp_to_db(x.abs(), AMP_EPS)).clamp_min(GAIN_FLOOR_DB)


REFINE_METHODS = ("auto", "gauss-newton", "adam")
# auto: Gauss-Newton up to this many settings (its step costs P + 1 forward passes), Adam above.
# Measured: Compressor (6 settings), validation seed 777 from the network: Gauss-Newton 20 steps
# threshold 0.013, the rest below 0.001, against Adam 50 steps 0.031 / 0.019-0.026;
# MultiBandCompressor (20 settings), 8 validation clips from 0.05 off the truth: Gauss-Newton
# 20 steps 4.0 s a clip, median error 0.030, MR-STFT 0.052; Adam 50 steps 0.3 s, 0.025, 0.042.
# Limiter, Expander, TransientShaper, NoiseGate (16 validation clips each, 0.1 off the truth):
# Gauss-Newton 20 steps fits the audio better in all four (README, "Refinement").
GN_MAX_SETTINGS = 8
DEFAULT_STEPS = {"gauss-newton": 20, "adam": 50}  # the benchmark's budgets
GN_FD_STEP = 1e-2  # finite-difference step of the Jacobian, in logit units
GN_IRLS_DB = 0.05  # residuals below this (dB) weigh as this in the L1 reweighting
GN_LAMBDA0 = 1e-2  # initial Levenberg-Marquardt damping (relative to the diagonal)
GN_MAX_STEP = 2.0  # the largest move of one logit in one step
GN_GROUP = 8  # clips per group of the Jacobian's batched evaluation (bounds its memory)
LOGIT_MAX = 9.2  # |logit| bound: settings within [1e-4, 1 - 1e-4]


def resolve_method(method: str, n_settings: int) -> str:
    """``auto`` -> ``gauss-newton`` for at most :data:`GN_MAX_SETTINGS` settings, else
    ``adam``; the others unchanged (a clear error for an unknown name)."""
    if method not in REFINE_METHODS:
        raise ValueError(f"refine_settings: method must be one of {REFINE_METHODS}, got {method!r}")
    if method == "auto":
        return "gauss-newton" if n_settings <= GN_MAX_SETTINGS else "adam"
    return method


def refine_settings(processor, dry: Tensor, wet: Tensor, init: Tensor, steps: int,
                    lr: float = 0.05, snapshots: Iterable[int] = (),
                    times: Optional[dict] = None,
                    method: str = "auto") -> tuple[Tensor, dict[int, Tensor]]:
    """Refine the normalised settings ``init`` (B, P) so that ``processor(dry, settings)``
    reproduces the observed gain ``20 log10 |wet| / |dry|``: minimise the mean absolute
    difference (dB), sample by sample (dry samples below -80 dBFS are ignored), over the logits
    of the settings.

    ``method="auto"`` (default): Gauss-Newton for processors with at most
    :data:`GN_MAX_SETTINGS` settings, Adam for more (see the measurements there).
    ``method="gauss-newton"``: Levenberg-Marquardt steps on the per-sample residuals,
    reweighted to minimise their absolute values (iteratively reweighted least squares), with
    the Jacobian by finite differences (all P + 1 settings of a clip in one batched call of the
    processor): it follows the correlated directions of the settings (threshold, ratio and
    makeup move together when a clip rarely falls below its threshold) that a first-order
    method crawls along, and it stops a clip once its steps no longer change it. A step costs
    about P + 1 forward passes. ``method="adam"``: Adam at ``lr`` on the same loss (one
    forward and backward pass a step).

    Every batch item is refined independently. Returns the settings after ``steps`` steps and,
    for every step count in ``snapshots`` (<= ``steps``), the settings after that many steps
    (a snapshot equals a run of that many steps); ``times``, when given, receives the wall time
    (s) from the start to each snapshot.
    """
    method = resolve_method(method, init.shape[-1])
    wanted = sorted({int(s) for s in snapshots if 0 <= int(s) <= steps})
    saved: dict[int, Tensor] = {}
    if 0 in wanted:
        saved[0] = init.detach().clone()
    if steps <= 0:
        return init.detach().clone(), saved
    with torch.inference_mode(False), torch.enable_grad():
        dry, wet = dry.detach().clone(), wet.detach().clone()
        if method == "adam":
            return _refine_adam(processor, dry, wet, init, steps, lr, wanted, saved, times)
        return _refine_gauss_newton(processor, dry, wet, init, steps, wanted, saved, times)


def _refine_adam(processor, dry, wet, init, steps, lr, wanted, saved, times):
    import time

    start = time.perf_counter()
    logits = torch.logit(init.detach().clone().clamp(1e-4, 1 - 1e-4)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr, foreach=False)
    valid = dry.abs() > VALID_AMPLITUDE
    count = valid.sum(dim=(1, 2))
    target = sample_gain_db(wet, dry)
    dry_db = F.amp_to_db(dry.abs(), AMP_EPS)  # the same every step
    for step in range(1, steps + 1):
        y = processor(dry, norm_params=torch.sigmoid(logits), validate=False)
        # one fused pass: the per-item mean |gain(y over dry) - target| and its gradient
        per_item = F.gain_match_loss(y, dry_db, target, valid, GAIN_FLOOR_DB, count)
        opt.zero_grad(set_to_none=True)
        per_item.sum().backward()
        opt.step()
        if step in wanted:
            saved[step] = torch.sigmoid(logits).detach().clone()
            if times is not None:
                times[step] = time.perf_counter() - start
    return torch.sigmoid(logits).detach(), saved


GN_EVAL_SAMPLES = 1 << 23  # samples (rows x channels x time) per processor call of a step
GN_SUM_SAMPLES = 1 << 18  # samples per slice of the normal equations' float64 sums


def _residuals(processor, dry, dry_db, target, pts):
    """(K, P + 1, C T) float32 gain residuals (dB) of the K clips at their P + 1 points ``pts``
    (K (P + 1), P) in logits; the processor runs on as many rows at once as
    :data:`GN_EVAL_SAMPLES` allows (a long recording: one row a call)."""
    K, per = dry.shape[0], pts.shape[0] // dry.shape[0]
    clip = dry[0].numel()
    rows = max(1, GN_EVAL_SAMPLES // max(clip, 1))
    out = torch.empty(K * per, clip, dtype=dry.dtype)
    owner = torch.arange(K).repeat_interleave(per)
    for a in range(0, K * per, rows):
        sl = slice(a, min(K * per, a + rows))
        who = owner[sl]
        y = processor(dry[who], norm_params=torch.sigmoid(pts[sl]).to(dry.dtype), validate=False)
        gain = (F.amp_to_db(y.abs(), AMP_EPS) - dry_db[who]).clamp_min(GAIN_FLOOR_DB)
        out[sl] = (gain - target[who]).flatten(1)
    return out.view(K, per, clip)


def _normal_equations(res, valid):
    """``A = J^T W J`` and ``g = J^T W r`` (float64) of K clips from their residuals (K, P + 1,
    N): the base point first, then one per setting (finite differences); ``W`` the L1 weights
    ``1 / max(|r|, GN_IRLS_DB)`` on valid samples. Summed slice by slice of the samples (no
    float64 copy of the whole Jacobian)."""
    K, per, N = res.shape
    A = torch.zeros(K, per - 1, per - 1, dtype=torch.float64)
    g = torch.zeros(K, per - 1, dtype=torch.float64)
    for a in range(0, N, GN_SUM_SAMPLES):
        sl = slice(a, min(N, a + GN_SUM_SAMPLES))
        r0 = res[:, 0, sl].double()
        jac = (res[:, 1:, sl].double() - r0[:, None]) / GN_FD_STEP
        wt = torch.where(valid[:, sl], 1.0 / r0.abs().clamp_min(GN_IRLS_DB), 0.0)
        A += torch.einsum("kpn,kn,kqn->kpq", jac, wt, jac)
        g += torch.einsum("kpn,kn,kn->kp", jac, wt, r0)
    return A, g


@torch.no_grad()
def _refine_gauss_newton(processor, dry, wet, init, steps, wanted, saved, times):
    """Levenberg-Marquardt with L1 reweighting, group by group of :data:`GN_GROUP` clips; per
    clip: a trial point is accepted when its loss is lower (the damping then shrinks), else the
    damping grows and the next trial starts again from the accepted point. A clip is frozen
    once its damping is so large, or its step so small, that it no longer moves."""
    import time

    n, P = init.shape
    out = init.detach().clone()
    snaps = {k: init.detach().clone() for k in wanted}
    elapsed = {k: 0.0 for k in wanted}
    eye = torch.eye(P, dtype=torch.float64)
    shifts = torch.cat([torch.zeros(1, P, dtype=torch.float64), GN_FD_STEP * eye])  # (P + 1, P)
    for a in range(0, n, GN_GROUP):
        start = time.perf_counter()
        idx = slice(a, min(n, a + GN_GROUP))
        d, w = dry[idx], wet[idx]
        B = d.shape[0]
        valid = d.abs() > VALID_AMPLITUDE
        count = valid.sum(dim=(1, 2)).clamp_min(1).double()
        target = sample_gain_db(w, d)
        dry_db = F.amp_to_db(d.abs(), AMP_EPS)
        theta = torch.logit(init[idx].double().clamp(1e-4, 1 - 1e-4))  # the accepted point
        trial = theta.clone()
        loss = torch.full((B,), float("inf"), dtype=torch.float64)
        A = torch.zeros(B, P, P, dtype=torch.float64)
        g = torch.zeros(B, P, dtype=torch.float64)
        lam = torch.full((B,), GN_LAMBDA0, dtype=torch.float64)
        live = torch.ones(B, dtype=torch.bool)
        for step in range(1, steps + 1):
            rows = live.nonzero().flatten()
            if len(rows):
                K = len(rows)
                res = _residuals(processor, d[rows], dry_db[rows], target[rows],
                                 (trial[rows, None, :] + shifts[None]).reshape(K * (P + 1), P))
                m = valid[rows].flatten(1)
                new_loss = torch.where(m, res[:, 0].abs(), 0.0).double().sum(dim=1) / count[rows]
                better = new_loss < loss[rows]
                # accepted trials: the new point, its normal equations (L1 by reweighting)
                acc = rows[better]
                if len(acc):
                    A[acc], g[acc] = _normal_equations(res[better], m[better])
                    # converged: an accepted step that hardly moved (not the first evaluation)
                    still = ((trial[acc] - theta[acc]).abs().amax(dim=1) < 1e-6) & (
                        loss[acc] < float("inf"))
                    theta[acc] = trial[acc]
                    loss[acc] = new_loss[better]
                    lam[acc] /= 3.0
                    live[acc[still]] = False
                lam[rows[~better]] *= 10.0
                live &= lam < 1e8  # no step along which the loss still falls
                # the next trial from the accepted point
                lam.clamp_(min=1e-7)
                diag = torch.diagonal(A, dim1=1, dim2=2)
                # a small ridge keeps the system regular where a setting has no effect at all
                ridge = 1e-9 * diag.mean(dim=1, keepdim=True) + 1e-12
                M = A + torch.diag_embed(lam[:, None] * diag + ridge)
                step_ = -torch.linalg.solve(M, g[..., None])[..., 0]
                trial = (theta + step_.clamp(-GN_MAX_STEP, GN_MAX_STEP)).clamp(-LOGIT_MAX,
                                                                                 LOGIT_MAX)
            if step in wanted:
                snaps[step][idx] = torch.sigmoid(theta).to(init.dtype)
                elapsed[step] += time.perf_counter() - start
        out[idx] = torch.sigmoid(theta).to(init.dtype)
    for k in wanted:
        if k > 0:
            saved[k] = snaps[k]
            if times is not None:
                times[k] = elapsed[k]
    return out, saved
