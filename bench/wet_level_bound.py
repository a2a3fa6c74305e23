"""How well can *any* wet-only estimator read a Compressor's threshold and makeup on the
benchmark's ``builtin`` set? A bound from the level invariance.

A compressor's gain depends on the input level minus the threshold, so raising the input by
d dB, the threshold by d dB and lowering the makeup by d dB gives the same wet audio sample for
sample (checked below on the set itself). From the wet audio alone, the dry level is therefore
known only through the protocol's level rule: an RMS level drawn uniformly in [-30, -10] dBFS,
then scaled down to a -1 dBFS peak if the peak is higher. Along that line of equivalent
hypotheses (d), the posterior is uniform over the levels that are possible and were not
peak-limited, plus a point mass for "it was peak-limited" (all drawn levels above
-1 dBFS - crest map to one dry signal), each cut to the settings' ranges. The estimator that
minimises the expected absolute error takes the posterior median of d; its error is |median|
dB on both the threshold and the makeup (normalised: / 60 and / 24). This assumes the estimator
knows everything else exactly (the other settings, the dry clip's crest factor), so no
wet-only network can do better on average: other ambiguities (a clip that stays above the
threshold trades the ratio against the threshold) only add error.

    python bench/wet_level_bound.py            # the protocol's N = 256 test set
    python bench/wet_level_bound.py --n 64 --seed 777

Prints the median normalised errors over the identifiable instances, next to the trained
wet network's when ``bench/estimation/per_example/builtin_Compressor_wet.json`` exists (the
protocol set only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LEVEL_DB = (-30.0, -10.0)  # the protocol's level rule (models.benchmark)
PEAK_DB = -1.0


def posterior_median(lo: float, hi: float, mass_at: float, mass: float) -> float:
    """Median of a density 1 on [lo, hi] (empty if hi <= lo) plus a point ``mass`` at
    ``mass_at`` (outside or at the end of the interval)."""
    width = max(0.0, hi - lo)
    total = width + mass
    if total <= 0.0:
        return 0.0
    half = total / 2.0
    if mass > 0.0 and mass_at <= lo:
        if mass >= half:
            return mass_at
        return lo + (half - mass)
    if width >= half:  # the point mass (if any) lies at or above hi
        return lo + half
    return mass_at


def level_bound(dry: np.ndarray, thr_db: np.ndarray, makeup_db: np.ndarray,
                thr_range=(-60.0, 0.0), makeup_range=(-12.0, 12.0)) -> np.ndarray:
    """|posterior median of d| in dB per example: the Bayes (L1) error of the threshold and
    the makeup from the wet audio alone, under the level invariance (see the module doc)."""
    out = np.empty(len(dry))
    for i, x in enumerate(dry):
        x = x.astype(np.float64).ravel()
        rms = 10 * np.log10(np.mean(x * x) + 1e-30)
        crest = 20 * np.log10(np.abs(x).max() + 1e-30) - rms
        # a shift d is possible: the level, the threshold and the makeup stay in range
        lo_c = max(thr_range[0] - thr_db[i], makeup_db[i] - makeup_range[1])
        hi_c = min(thr_range[1] - thr_db[i], makeup_db[i] - makeup_range[0])
        lo = max(LEVEL_DB[0] - rms, lo_c)
        d_limited = PEAK_DB - crest - rms  # the shift at which the dry peak reaches -1 dBFS
        hi = min(LEVEL_DB[1] - rms, d_limited, hi_c)  # not peak-limited: a drawn level
        mass = max(0.0, min(LEVEL_DB[1] - LEVEL_DB[0], LEVEL_DB[1] - (PEAK_DB - crest)))
        if not lo_c - 1e-9 <= d_limited <= hi_c + 1e-9:
            mass = 0.0
        out[i] = abs(posterior_median(lo, hi, d_limited, mass))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=None, help="default: the protocol's test seed")
    args = ap.parse_args(argv)

    import dynfx
    from models import benchmark as bm

    seed = bm.BUILTIN_SEED if args.seed is None else args.seed
    dry = bm.builtin_set(args.n, seed)
    comp = dynfx.Compressor(sample_rate=bm.FS)
    names = list(comp.param_names)
    true = bm.settings_for("Compressor", len(names), args.n, seed)
    spec = {n: comp.params[n] for n in ("threshold_db", "makeup_db")}
    assert all(p.scale == "linear" for p in spec.values())
    thr = spec["threshold_db"].denormalize(true[:, names.index("threshold_db")].double()).numpy()
    mk = spec["makeup_db"].denormalize(true[:, names.index("makeup_db")].double()).numpy()

    # the invariance itself, on the first clips: +d dB in, +d threshold, -d makeup
    k = min(8, args.n)
    d = 6.0
    shifted = true[:k].clone()
    shifted[:, names.index("threshold_db")] += d / 60.0
    shifted[:, names.index("makeup_db")] -= d / 24.0
    ok = ((shifted >= 0) & (shifted <= 1)).all(dim=1)
    with torch.no_grad():
        a = comp(dry[:k][ok].double(), norm_params=true[:k][ok].double(), validate=False)
        b = comp(dry[:k][ok].double() * 10 ** (d / 20), norm_params=shifted[ok].double(),
                 validate=False)
    rel = float((a - b).abs().max() / a.abs().max())
    print(f"invariance check ({int(ok.sum())} clips, d = {d} dB): max |difference| / peak = "
          f"{rel:.2e}")

    err_db = level_bound(dry.numpy(), thr, mk,
                         (spec["threshold_db"].min_val, spec["threshold_db"].max_val),
                         (spec["makeup_db"].min_val, spec["makeup_db"].max_val))
    ident_path = ROOT / "bench/estimation/per_example/builtin_Compressor_wet.json"
    per = json.loads(ident_path.read_text()) if ident_path.exists() and args.seed is None \
        and args.n == 256 else None
    if per is not None:
        ident = np.array(per["identifiable"], dtype=bool)
    else:
        ident = bm.identifiable(comp, dry, true).numpy()
    rows = [(n, p.max_val - p.min_val) for n, p in spec.items()]
    print(f"\nset seed {seed}, n = {args.n}: the Bayes (L1) estimator under the level "
          "invariance, median normalised error over identifiable instances")
    print("| setting | bound | bound (dB) | wet network |")
    print("|---|---|---|---|")
    for name, span in rows:
        j = names.index(name)
        m = ident[:, j]
        net = "-"
        if per is not None:
            net = f"{np.median(np.array(per['model'][f'norm_err/{name}'])[m]):.3f}"
        print(f"| {name} | {np.median(err_db[m] / span):.3f} | {np.median(err_db[m]):.2f} | "
              f"{net} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
