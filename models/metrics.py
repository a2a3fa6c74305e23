"""Evaluation metrics: parameter errors (physical, log and normalised units) and audio metrics.

Every function returns per-example values (a (B,) tensor) so that results can be averaged over a
whole test set.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["param_errors", "si_sdr", "gain_mae_db", "GAIN_FLOOR_DB"]

GAIN_FLOOR_DB = -100.0  # gains below this (deep gating/expansion) count as this in gain_mae_db


def param_errors(processor, pred_norm: Tensor, true_norm: Tensor) -> dict[str, Tensor]:
    """Absolute errors per parameter and example.

    Keys: ``mae_norm/<name>`` (normalised units), ``mae/<name>`` (physical units: dB, ratio, ms,
    Hz), and for log-scaled parameters ``log_err/<name>`` = |ln(pred / true)| (0.1 ~ 10 %).
    """
    out: dict[str, Tensor] = {}
    pred = processor.denormalize(pred_norm)
    true = processor.denormalize(true_norm)
    for i, (name, spec) in enumerate(processor.params.items()):
        out[f"mae_norm/{name}"] = (pred_norm[:, i] - true_norm[:, i]).abs()
        out[f"mae/{name}"] = (pred[name] - true[name]).abs()
        if spec.scale == "log":
            out[f"log_err/{name}"] = torch.log(pred[name] / true[name]).abs()
    return out


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SDR in dB of (B, C, T) signals, channels concatenated: (B,)."""
    est = estimate.flatten(1)
    ref = reference.flatten(1)
    est = est - est.mean(dim=1, keepdim=True)
    ref = ref - ref.mean(dim=1, keepdim=True)
    alpha = (est * ref).sum(dim=1, keepdim=True) / (ref.square().sum(dim=1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    return 10 * torch.log10((target.square().sum(dim=1) + eps) / (noise.square().sum(dim=1) + eps))


def gain_mae_db(gain_pred: Tensor, gain_true: Tensor) -> Tensor:
    """Mean absolute difference of two gain curves in dB ((B, T) or (B, bands, T)): (B,).
    Gains below -100 dB are clamped to -100 dB (inaudible either way)."""
    diff = gain_pred.clamp_min(GAIN_FLOOR_DB) - gain_true.clamp_min(GAIN_FLOOR_DB)
    return diff.abs().flatten(1).mean(dim=1)
