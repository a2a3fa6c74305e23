"""Analysis by synthesis: refine estimated settings by gradient steps through the processor."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor

from dynfx import functional as F

from .metrics import GAIN_FLOOR_DB

__all__ = ["refine_settings", "sample_gain_db"]

VALID_AMPLITUDE = 1e-4  # dry samples below -80 dBFS carry no gain information
AMP_EPS = 1e-12  # added to |x| before the dB conversion (the loss's own epsilon)


def sample_gain_db(y: Tensor, x: Tensor) -> Tensor:
    """Gain of ``y`` against ``x`` sample by sample in dB, floored at -100 dB."""
    return (F.amp_to_db(y.abs(), AMP_EPS) - F.amp_to_db(x.abs(), AMP_EPS)).clamp_min(GAIN_FLOOR_DB)


def refine_settings(processor, dry: Tensor, wet: Tensor, init: Tensor, steps: int,
                    lr: float = 0.05, snapshots: Iterable[int] = (),
                    times: Optional[dict] = None) -> tuple[Tensor, dict[int, Tensor]]:
    """Adam on the logits of the normalised settings, minimising the mean absolute difference
    (dB) between the observed gain ``20 log10 |wet| / |dry|`` and that of
    ``processor(dry, settings)``, sample by sample (dry samples below -80 dBFS are ignored).

    Every batch item is refined independently (the loss is a sum over items, Adam works
    element-wise). Returns the settings after ``steps`` steps and, for every step count in
    ``snapshots`` (<= ``steps``), the settings after that many steps; ``times``, when given,
    receives the wall time (s) from the start to each snapshot.
    """
    import time

    start = time.perf_counter()
    wanted = sorted({int(s) for s in snapshots if 0 <= int(s) <= steps})
    saved: dict[int, Tensor] = {}
    with torch.inference_mode(False), torch.enable_grad():
        dry, wet = dry.detach().clone(), wet.detach().clone()
        logits = torch.logit(init.detach().clone().clamp(1e-4, 1 - 1e-4)).requires_grad_(True)
        if 0 in wanted:
            saved[0] = init.detach().clone()
        if steps <= 0:
            return init.detach().clone(), saved
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

