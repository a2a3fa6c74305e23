"""The estimation benchmark, protocol v1 (``shared`` BENCHMARK.md; summary in the README).

Test sets: ``builtin`` (the seeded generator) and ``realistic`` (crops of a folder of recordings),
44.1 kHz mono clips of 131072 samples at an RMS level drawn in [-30, -10] dBFS (peak <= -1 dBFS).
Settings are drawn uniformly in normalised space, seeded per (processor, clip).

Estimators on the same examples: ``mean`` (every normalised setting 0.5), ``noop`` (the dry
audio, audio metrics only), ``model`` (one forward pass of a trained network), ``model+refine``
(dry+wet only: the network's estimate refined through the differentiable processor) and
``direct`` (the same refinement from ``mean``, same step budget).

Per example: normalised, physical and log errors of every setting, whether each setting is
identifiable (moving it by 0.05 in normalised units changes the output's frame level by at least
0.25 dB RMS over valid frames), MR-STFT (auraloss defaults), envelope error and SI-SDR.
Statistics: median, mean and 90th percentile over all examples and the active subset (audio),
over identifiable instances (parameter errors); the identifiable share per setting.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from dynfx import functional as F

from .checkpoint import finite_or_none
from .encoders import uses_dry
from .data.pool import SILENCE_DB, apply_level
from .data.synth import SynthConfig, generate_clip
from .metrics import si_sdr
from .refine import DEFAULT_STEPS, refine_settings, resolve_method

__all__ = [
    "PROTOCOL_VERSION", "FS", "NUM_SAMPLES", "BUILTIN_SEED", "ESTIMATORS", "REFINE_STEPS",
    "REFINE_METHOD", "STEP_COUNTS", "frame_level_db", "builtin_set", "folder_set", "settings_for",
    "identifiable", "active", "example_metrics", "summarize", "run_benchmark",
    "markdown_tables", "merge_records", "BenchCase", "target_rows", "target_table",
    "training_data_table",
]

PROTOCOL_VERSION = 1
FS = 44100
NUM_SAMPLES = 131072
BUILTIN_SEED = 9_000_011  # the builtin test set; training splits use seed, seed+1000003, seed+2000003
ESTIMATORS = ("mean", "noop", "model", "model+refine", "direct")
# the refinement of model+refine and direct (models.refine.refine_settings): Gauss-Newton, 20 steps
# by default (on the validation seed 777, Compressor dry_wet: threshold 0.0195 / 0.0134 / 0.0083
# at 10 / 20 / 50 steps, every other setting below 0.001 from 10 steps; Adam at 0.05 after 50
# steps: threshold 0.031, ratio 0.019, attack 0.026); "auto" takes Adam (50 steps) for the
# multi-band processors (models.refine.resolve_method)
REFINE_STEPS = DEFAULT_STEPS["gauss-newton"]
REFINE_METHOD = "auto"
REFINE_LR = 0.05  # Adam's
STEP_COUNTS = (10, 25, 50, 100, 200)
FRAME, FRAME_HOP = 1024, 256
VALID_DB = -60.0  # frames of the dry audio above this level are valid
IDENT_DELTA, IDENT_DB = 0.05, 0.25
ACTIVE_DB = 1.0
STATS = ("median", "mean", "p90")


# --------------------------------------------------------------------------------------------
# test sets
# --------------------------------------------------------------------------------------------
def frame_level_db(x: Tensor, frame: int = FRAME, hop: int = FRAME_HOP) -> Tensor:
    """Frame RMS level in dB of (B, C, T) audio (channels linked): (B, F), floored at -120 dB.
    Frames of ``frame`` samples every ``hop`` (no padding: F = (T - frame) // hop + 1)."""
    power = x.square().mean(dim=1)  # (B, T)
    if frame % hop == 0:  # sums of hop-sized blocks, then of frame // hop neighbouring blocks
        k = frame // hop
        n_blocks = power.shape[-1] // hop
        blocks = power[:, : n_blocks * hop].reshape(power.shape[0], n_blocks, hop).double()
        blocks = blocks.sum(dim=-1)
        frames = blocks.unfold(-1, k, 1).sum(dim=-1) / frame
    else:
        frames = power.double().unfold(-1, frame, hop).mean(dim=-1)
    return F.power_to_db(frames, 1e-12).clamp_min(-120.0)


def _level_rule(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return apply_level(audio, rng, (-30.0, -10.0), -1.0)


def builtin_set(n: int, seed: int = BUILTIN_SEED, sample_rate: int = FS,
                num_samples: int = NUM_SAMPLES, progress: bool = True) -> Tensor:
    """The ``builtin`` test set: clip ``i`` is the generator's clip (seed, i) (redrawn as
    (seed, i + 10^6 k) while its RMS is below -60 dBFS), at the protocol's level: (n, 1, T)."""
    cfg = SynthConfig(sample_rate, num_samples / sample_rate, 1)
    clips = []
    for i in _progress(range(n), progress, "building the builtin set"):
        for k in range(10):
            clip, _ = generate_clip(cfg, seed, i + 1_000_000 * k)
            clip = clip[:, :num_samples]
            if 10 * np.log10(np.mean(np.square(clip, dtype=np.float64)) + 1e-20) > SILENCE_DB:
                break
        clips.append(_level_rule(clip, np.random.default_rng([seed, i, 1])))
    return torch.from_numpy(np.stack(clips))


def folder_set(root: str | Path, n: int, seed: int = BUILTIN_SEED, sample_rate: int = FS,
               num_samples: int = NUM_SAMPLES) -> Tensor:
    """The ``realistic`` test set: ``n`` fixed crops of the audio files below ``root`` (mono,
    resampled to 44.1 kHz; silent crops redrawn), at the protocol's level: (n, 1, T)."""
    from .data.datasets import FolderClips

    clips = FolderClips(root, n, seed, sample_rate=sample_rate,
                        clip_seconds=num_samples / sample_rate, channels=1, fixed=True)
    out = []
    for i in range(n):
        crop = clips[i].numpy()[:, :num_samples]
        out.append(_level_rule(crop, np.random.default_rng([seed, i, 1])))
    return torch.from_numpy(np.stack(out))


def settings_for(processor_name: str, num_params: int, n: int, seed: int = BUILTIN_SEED) -> Tensor:
    """Normalised settings of the test examples, uniform in [0, 1], seeded per (processor, clip)."""
    key = zlib.crc32(processor_name.encode())
    rows = [np.random.default_rng([seed, key, i]).random(num_params) for i in range(n)]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


# --------------------------------------------------------------------------------------------
# identifiability and activity
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def identifiable(processor, dry: Tensor, norm: Tensor, both: bool = True,
                 chunk: int = 256) -> Tensor:
    """(B, P) bool: moving setting j of example i by +0.05 or -0.05 (clamped to [0, 1]; one of
    the two suffices), all else fixed, changes the output's frame level by at least 0.25 dB RMS
    over valid frames (dry frame level above -60 dBFS). ``both=False`` tries one direction only
    (towards the middle of the range: half the cost, used as a training-time approximation)."""
    B, P = norm.shape
    valid = frame_level_db(dry) > VALID_DB
    count = valid.sum(dim=1).clamp_min(1)
    base = frame_level_db(processor(dry, norm_params=norm, validate=False))
    signs = (1.0, -1.0) if both else (None,)
    moved = []  # one copy of the settings per (setting, direction)
    for j in range(P):
        for s in signs:
            m = norm.clone()
            if s is None:
                step = torch.where(norm[:, j] <= 0.5, IDENT_DELTA, -IDENT_DELTA)
            else:
                step = torch.full_like(norm[:, j], s * IDENT_DELTA)
            m[:, j] = (norm[:, j] + step).clamp(0.0, 1.0)
            moved.append(m)
    jobs = len(moved)
    all_moved = torch.cat(moved)  # (jobs * B, P), job-major
    rows = torch.arange(jobs * B) % B
    levels = []
    for a in range(0, jobs * B, chunk):
        idx = rows[a : a + chunk]
        levels.append(frame_level_db(processor(dry[idx], norm_params=all_moved[a : a + chunk],
                                               validate=False)))
    diff = torch.cat(levels).reshape(jobs, B, -1) - base
    rms = torch.sqrt(torch.where(valid, diff.square(), 0.0).sum(dim=-1) / count)  # (jobs, B)
    hit = (rms >= IDENT_DB).cpu().reshape(P, len(signs), B).any(dim=1)  # (P, B)
    return hit.T.contiguous()


def frame_gain_db(gain_db: Tensor, frame: int = FRAME, hop: int = FRAME_HOP) -> Tensor:
    """Mean gain (dB, floored at -100) per frame; multi-band gains are averaged over bands."""
    g = gain_db.double().clamp_min(-100.0)
    if g.dim() == 3:
        g = g.mean(dim=1)
    return g.unfold(-1, frame, hop).mean(dim=-1)


def active(gain_db: Tensor, dry: Tensor) -> Tensor:
    """(B,) bool: the true applied gain (the processor's gain, without makeup) averages more than
    1 dB in magnitude over valid frames."""
    valid = frame_level_db(dry) > VALID_DB
    g = frame_gain_db(gain_db).abs()
    mean = torch.where(valid, g, 0.0).sum(dim=1) / valid.sum(dim=1).clamp_min(1)
    return mean > ACTIVE_DB


# --------------------------------------------------------------------------------------------
# per-example metrics
# --------------------------------------------------------------------------------------------
_MRSTFT = None


def mrstft_per_example(y: Tensor, wet: Tensor) -> Tensor:
    """auraloss' MultiResolutionSTFTLoss with its defaults, one value per example."""
    global _MRSTFT
    if _MRSTFT is None:
        import auraloss

        _MRSTFT = auraloss.freq.MultiResolutionSTFTLoss()
    with torch.no_grad():
        return torch.stack([_MRSTFT(y[i : i + 1].float(), wet[i : i + 1].float())
                            for i in range(len(y))])


def envelope_error_db(y: Tensor, wet: Tensor, dry: Tensor) -> Tensor:
    """Mean |frame level of y - frame level of wet| (dB) over valid frames: (B,)."""
    valid = frame_level_db(dry) > VALID_DB
    diff = (frame_level_db(y) - frame_level_db(wet)).abs()
    return torch.where(valid, diff, 0.0).sum(dim=1) / valid.sum(dim=1).clamp_min(1)


def example_metrics(processor, dry: Tensor, wet: Tensor, y: Tensor, pred: Optional[Tensor],
                    true: Tensor) -> dict[str, np.ndarray]:
    """Every per-example metric of one estimator: audio metrics of ``y`` against ``wet``, and
    (when ``pred`` is given) the errors of every setting."""
    out = {
        "mrstft": mrstft_per_example(y, wet),
        "env_db": envelope_error_db(y, wet, dry),
        "si_sdr": si_sdr(y.double(), wet.double()),
    }
    if pred is not None:
        p_dsp = processor.denormalize(pred.double())
        t_dsp = processor.denormalize(true.double())
        for j, (name, spec) in enumerate(processor.params.items()):
            out[f"norm_err/{name}"] = (pred[:, j].double() - true[:, j].double()).abs()
            out[f"abs_err/{name}"] = (p_dsp[name] - t_dsp[name]).abs()
            if spec.scale == "log":
                out[f"log_err/{name}"] = torch.log(p_dsp[name] / t_dsp[name]).abs()
    return {k: v.detach().double().cpu().numpy() for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# statistics and records
# --------------------------------------------------------------------------------------------
def _stat(values: np.ndarray, stat: str) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    if stat == "median":
        return float(np.median(values))
    if stat == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, 90))


def summarize(set_name: str, processor_name: str, mode: str, estimator: str,
              per_example: dict[str, np.ndarray], ident: np.ndarray, is_active: np.ndarray,
              param_names: Sequence[str], extra: Optional[dict[str, float]] = None) -> list[dict]:
    """Records ``{set, processor, mode, estimator, metric, subset, stat, value}``: audio metrics
    over ``all`` and ``active``; parameter errors over ``identifiable`` (and ``all``)."""
    base = {"set": set_name, "processor": processor_name, "mode": mode, "estimator": estimator}
    recs = []

    def add(metric, subset, values):
        for stat in STATS:
            v = _stat(values, stat)
            recs.append({**base, "metric": metric, "subset": subset, "stat": stat,
                         "value": None if math.isnan(v) else v})

    for metric, values in per_example.items():
        parts = metric.split("/")
        if (len(parts) >= 2 and parts[-2] in ("norm_err", "abs_err", "log_err")
                and parts[-1] in param_names):
            j = list(param_names).index(parts[-1])
            add(metric, "identifiable", values[ident[:, j]])
            add(metric, "all", values)
        else:
            add(metric, "all", values)
            add(metric, "active", values[is_active])
    for k, v in (extra or {}).items():
        recs.append({**base, "metric": k, "subset": "all", "stat": "mean", "value": v})
    return recs


def merge_records(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` without the (set, processor, mode) groups that ``new`` holds, then ``new``."""
    groups = {(r["set"], r["processor"], r["mode"]) for r in new}
    kept = [r for r in old if (r["set"], r["processor"], r["mode"]) not in groups]
    return kept + new


def _progress(it, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, leave=False)


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------
@dataclass
class BenchCase:
    """One (processor, input mode) to benchmark: the processor (at 44.1 kHz) and, when a trained
    network is given, ``model(wet, dry) -> (B, P)`` normalised settings (``dry`` is None in
    ``wet`` mode)."""

    processor: torch.nn.Module
    mode: str
    model: Optional[Callable[[Tensor, Optional[Tensor]], Tensor]] = None
    name: str = ""
    train_info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.uses_dry = uses_dry(self.mode)  # a clear error for an unknown mode
        # a third-party plugin target is named by its package: "pedalboard.Compressor"
        plugin = getattr(self.processor, "plugin", None)
        self.name = self.name or (f"pedalboard.{plugin}" if plugin else
                                  type(self.processor).__name__)


def _batched(fn, n: int, batch: int):
    """``fn`` over slices of ``range(n)``, joined; ``fn`` may return a tensor or a tuple."""
    outs = [fn(slice(a, min(n, a + batch))) for a in range(0, n, batch)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def run_benchmark(case: BenchCase, dry: Tensor, set_name: str = "builtin",
                  seed: int = BUILTIN_SEED, refine_steps: Optional[int] = None,
                  refine_lr: float = REFINE_LR, step_counts: Sequence[int] = STEP_COUNTS,
                  batch: int = 32, progress: bool = True, refine_method: str = REFINE_METHOD,
                  log: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Every estimator of the protocol on ``dry`` (N, 1, T) for one case. Returns the records
    and the per-example values ``{estimator: {metric: list}}`` (plus ``identifiable`` and
    ``active`` flags and the true settings)."""
    proc = case.processor
    n, P = dry.shape[0], proc.count_num_parameters()
    names = list(proc.param_names)
    # the refinement: its method (auto: by the number of settings) and its default budget
    refine_method = resolve_method(refine_method, P)
    if refine_steps is None:
        refine_steps = DEFAULT_STEPS[refine_method]
    true = settings_for(case.name, P, n, seed)
    with torch.no_grad():
        if hasattr(proc, "render_target"):  # a plugin: its real output and measured gain
            wet, gain = _batched(lambda s: proc.render_target(dry[s], true[s]), n, batch)
        else:
            wet, gain = proc(dry, norm_params=true, return_gain=True, validate=False)
    t0 = time.perf_counter()
    ident = identifiable(proc, dry, true).numpy()
    is_active = active(gain, dry).numpy()
    log(f"[{case.name} {case.mode}] identifiability checked in {time.perf_counter() - t0:.1f} s; "
        f"active {is_active.mean():.0%}; identifiable share: "
        + ", ".join(f"{k} {v:.0%}" for k, v in zip(names, ident.mean(axis=0))))

    estimates: dict[str, tuple[Tensor, dict]] = {}
    mean = torch.full_like(true, 0.5)
    estimates["mean"] = (mean, {})
    if case.model is not None:
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = _batched(lambda s: case.model(wet[s], dry[s] if case.uses_dry
                                                 else None).float(), n, batch)
        estimates["model"] = (pred.clamp(0, 1), {"sec_per_clip": (time.perf_counter() - t0) / n})
    curves: dict[str, dict[int, Tensor]] = {}
    if case.uses_dry and refine_steps > 0:
        starts = [("direct", mean)] + ([("model+refine", estimates["model"][0])]
                                       if "model" in estimates else [])
        last = max([refine_steps, *step_counts])
        for est, init in starts:
            t0 = time.perf_counter()
            snaps: dict[int, list[Tensor]] = {}
            t_default = 0.0
            for a in _progress(range(0, n, batch), progress, f"{case.name} {est}"):
                s = slice(a, min(n, a + batch))
                times: dict[int, float] = {}
                _, sv = refine_settings(proc, dry[s], wet[s], init[s], last, refine_lr,
                                        snapshots=[refine_steps, *step_counts], times=times,
                                        method=refine_method)
                t_default += times[refine_steps]  # wall time up to the default budget
                for k, v in sv.items():
                    snaps.setdefault(k, []).append(v)
            snap = {k: torch.cat(v) for k, v in snaps.items()}
            extra = {"sec_per_clip": t_default / n + estimates.get(
                "model", (None, {"sec_per_clip": 0.0}))[1]["sec_per_clip"] * (est != "direct"),
                "refine_steps": float(refine_steps),
                # 1: Gauss-Newton, 0: Adam (older records have no such entry: Adam)
                "refine_gauss_newton": float(refine_method == "gauss-newton")}
            estimates[est] = (snap[refine_steps], extra)
            curves[est] = snap
            log(f"[{case.name} {case.mode}] {est}: {time.perf_counter() - t0:.1f} s")

    records: list[dict] = []
    per_example: dict = {"true": true.tolist(), "identifiable": ident.tolist(),
                         "active": is_active.tolist()}
    noop = example_metrics(proc, dry, wet, dry, None, true)
    records += summarize(set_name, case.name, case.mode, "noop", noop, ident, is_active, names)
    per_example["noop"] = {k: v.tolist() for k, v in noop.items()}
    for est, (pred, extra) in estimates.items():
        with torch.no_grad():
            y = _batched(lambda s: proc(dry[s], norm_params=pred[s], validate=False), n, batch)
        m = example_metrics(proc, dry, wet, y, pred, true)
        for steps, p in curves.get(est, {}).items():
            if steps == refine_steps or steps not in step_counts:
                continue
            with torch.no_grad():
                ys = _batched(lambda s: proc(dry[s], norm_params=p[s], validate=False), n, batch)
            ms = example_metrics(proc, dry, wet, ys, p, true)
            m.update({f"steps{steps}/{k}": v for k, v in ms.items()
                      if k == "mrstft" or k.startswith("norm_err/")})
        share = {f"identifiable/{k}": float(v) for k, v in zip(names, ident.mean(axis=0))}
        share["active_share"] = float(is_active.mean())
        records += summarize(set_name, case.name, case.mode, est, m, ident, is_active, names,
                             extra={**extra, **share})
        per_example[est] = {"pred": pred.tolist(), **{k: v.tolist() for k, v in m.items()}}
        log(f"[{case.name} {case.mode}] {est}: median MR-STFT {np.median(m['mrstft']):.3f}")
    for k, v in case.train_info.items():
        records.append({"set": set_name, "processor": case.name, "mode": case.mode,
                        "estimator": "model", "metric": k, "subset": "all", "stat": "mean",
                        "value": v})
    return records, per_example


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
def _groups(records: Iterable[dict]) -> list[tuple]:
    """The (set, processor, mode) groups of ``records``, in first-seen order."""
    return list(dict.fromkeys((r["set"], r["processor"], r["mode"]) for r in records))


def _lookup(records: Iterable[dict]) -> dict:
    return {(r["set"], r["processor"], r["mode"], r["estimator"], r["metric"], r["subset"],
             r["stat"]): r["value"] for r in records}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and (math.isnan(v)):
        return "-"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def markdown_tables(records: list[dict], param_names: Optional[dict[str, Sequence[str]]] = None
                    ) -> str:
    """One table per (set, processor, mode): a row per estimator with the median normalised
    error of every setting (identifiable instances), MR-STFT median and p90, envelope error
    median (all examples) and seconds per clip; then the identifiable share per setting."""
    look = _lookup(records)
    groups = _groups(records)
    out = []
    for g in groups:
        names = (param_names or {}).get(g[1])
        if names is None:
            names = []
            for r in records:
                if (r["set"], r["processor"], r["mode"]) == g and r["metric"].startswith(
                        "norm_err/") and r["metric"].count("/") == 1:
                    n = r["metric"].split("/", 1)[1]
                    if n not in names:
                        names.append(n)
        ests = [e for e in ESTIMATORS if any((*g, e, "mrstft", "all", "median") == k[:7]
                                             for k in look)]
        head = ["estimator", *names, "MR-STFT med", "MR-STFT p90", "env dB med", "s/clip"]
        lines = [f"**{g[0]} / {g[1]} / {g[2]}** (median normalised error over identifiable "
                 "instances; refinement: GN = Gauss-Newton, Adam, and its steps)", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for e in ests:
            cells = [e]
            steps = look.get((*g, e, "refine_steps", "all", "mean"))
            if steps is not None:  # the refinement: its method (older records: Adam) and steps
                gn = look.get((*g, e, "refine_gauss_newton", "all", "mean"))
                cells = [f"{e} ({'GN' if gn else 'Adam'} {int(steps)})"]
            for n in names:
                cells.append(_fmt(look.get((*g, e, f"norm_err/{n}", "identifiable", "median"))))
            cells += [_fmt(look.get((*g, e, "mrstft", "all", "median"))),
                      _fmt(look.get((*g, e, "mrstft", "all", "p90"))),
                      _fmt(look.get((*g, e, "env_db", "all", "median")))]
            sec = look.get((*g, e, "sec_per_clip", "all", "mean"))
            cells.append("-" if sec is None else f"{sec:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        shares = [look.get((*g, e, f"identifiable/{n}", "all", "mean")) for n in names
                  for e in ("mean",)]
        lines.append("| identifiable share | " + " | ".join(
            "-" if s is None else f"{s:.0%}" for s in shares) + " | | | | |")
        act = look.get((*g, "mean", "active_share", "all", "mean"))
        if act is not None:
            lines.append("")
            lines.append(f"Active examples: {act:.0%}.")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


TARGET_RATIO = {"dry_wet": 0.5, "wet": 0.75}  # model median <= ratio x mean median
TARGET_SHARE = 0.30  # ... on every setting identifiable in at least this share of examples


def target_rows(records: list[dict]) -> list[dict]:
    """The every-processor check of the benchmark's targets, per (set, processor, mode) with a
    network: for each setting identifiable in at least 30 % of examples, the ratio of the
    network's median normalised error to the ``mean`` baseline's (target: at most 0.5 with the
    dry signal, 0.75 wet-only), and the network's median MR-STFT against ``mean``'s (target:
    lower)."""
    look = _lookup(records)
    rows = []
    for g in _groups(records):
        if (*g, "model", "mrstft", "all", "median") not in look:
            continue
        limit = TARGET_RATIO.get(g[2], 0.5)
        ratios = {}
        for r in records:
            if ((r["set"], r["processor"], r["mode"], r["estimator"]) != (*g, "mean")
                    or not r["metric"].startswith("identifiable/")
                    or (r["subset"], r["stat"]) != ("all", "mean")):
                continue
            name = r["metric"].split("/", 1)[1]
            if r["value"] is None or r["value"] < TARGET_SHARE:
                continue
            m = look.get((*g, "model", f"norm_err/{name}", "identifiable", "median"))
            b = look.get((*g, "mean", f"norm_err/{name}", "identifiable", "median"))
            if m is not None and b:
                ratios[name] = m / b
        stft = (look[(*g, "model", "mrstft", "all", "median")],
                look.get((*g, "mean", "mrstft", "all", "median")))
        worst = max(ratios.items(), key=lambda kv: kv[1]) if ratios else (None, None)
        ok = (all(v <= limit for v in ratios.values())
              and stft[1] is not None and stft[0] < stft[1])
        rows.append({"set": g[0], "processor": g[1], "mode": g[2], "limit": limit,
                     "ratios": ratios, "worst": worst, "mrstft_model": stft[0],
                     "mrstft_mean": stft[1], "met": ok})
    return rows


def target_table(records: list[dict]) -> str:
    """:func:`target_rows` as a Markdown table."""
    rows = target_rows(records)
    if not rows:
        return ""
    lines = ["| set | processor | mode | model / mean, median error per setting (identifiable "
             ">= 30 %) | target | MR-STFT model | MR-STFT mean | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()) or "-"
        lines.append(f"| {r['set']} | {r['processor']} | {r['mode']} | {per} | "
                     f"<= {r['limit']:.2f} | {_fmt(r['mrstft_model'])} | "
                     f"{_fmt(r['mrstft_mean'])} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def step_table(records: list[dict], set_name: str, processor: str, mode: str,
               names: Sequence[str], step_counts: Sequence[int] = STEP_COUNTS,
               default_steps: int = REFINE_STEPS) -> str:
    """Refinement quality against step count: median MR-STFT (all) and median normalised errors
    (identifiable) of ``model+refine`` and ``direct``."""
    look = _lookup(records)
    head = ["estimator", "steps", "MR-STFT med", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    g = (set_name, processor, mode)
    for e in ("model+refine", "direct"):
        for s in step_counts:
            pre = "" if s == default_steps else f"steps{s}/"
            mr = look.get((*g, e, f"{pre}mrstft", "all", "median"))
            if mr is None:
                continue
            cells = [e, str(s), _fmt(mr)]
            cells += [_fmt(look.get((*g, e, f"{pre}norm_err/{n}", "identifiable", "median")))
                      for n in names]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(out_dir: Path, records: list[dict], per_example: dict, tag: str) -> Path:
    """Per-example JSON ``per_example/<tag>.json``; ``results.json`` merged with earlier runs
    (groups re-run here replace theirs); ``results.md``. Returns the results.json path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "per_example").mkdir(exist_ok=True)
    (out_dir / "per_example" / f"{tag}.json").write_text(json.dumps(finite_or_none(per_example)))
    path = out_dir / "results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    merged = merge_records(old, records)
    path.write_text(json.dumps(finite_or_none(merged), indent=1))
    (out_dir / "results.md").write_text(markdown_tables(merged))
    return path


def training_data_table(runs: Sequence[tuple[str, list[dict]]], processor: str) -> str:
    """Networks of one processor trained on different data, side by side: a row per (set, mode,
    training data) with the ``model`` median normalised error of every setting (identifiable
    instances), MR-STFT medians of ``model``, ``model+refine`` and ``mean``. ``runs``: (label,
    records) pairs, one per training-data choice."""
    names: list[str] = []
    for _, recs in runs:
        for r in recs:
            if (r["processor"] == processor and r["estimator"] == "model"
                    and r["metric"].startswith("norm_err/") and r["metric"].count("/") == 1
                    and r["subset"] == "identifiable"):
                n = r["metric"].split("/", 1)[1]
                if n not in names:
                    names.append(n)
    head = ["set", "mode", "trained on", *names, "MR-STFT model", "model+refine", "mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    sets = list(dict.fromkeys(r["set"] for _, recs in runs for r in recs))
    for set_name in sets:
        for mode in ("dry_wet", "wet"):
            for label, recs in runs:
                look = _lookup(recs)
                g = (set_name, processor, mode)
                if (*g, "model", "mrstft", "all", "median") not in look:
                    continue
                cells = [set_name, mode, label]
                cells += [_fmt(look.get((*g, "model", f"norm_err/{n}", "identifiable",
                                         "median"))) for n in names]
                cells += [_fmt(look.get((*g, e, "mrstft", "all", "median")))
                          for e in ("model", "model+refine", "mean")]
                steps = look.get((*g, "model+refine", "refine_steps", "all", "mean"))
                if steps is not None and cells[-2] != "-":  # the refinement behind the value
                    gn = look.get((*g, "model+refine", "refine_gauss_newton", "all", "mean"))
                    cells[-2] += f" ({'GN' if gn else 'Adam'} {int(steps)})"
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- estimation-results:begin (generated by bench/estimation.py --readme) -->"
README_END = "<!-- estimation-results:end -->"


def readme_section(records: list[dict]) -> str:
    """The README's results section, generated from ``results.json`` records: the tables of
    :func:`markdown_tables`, the training time of each checkpoint, and the refinement-versus-steps
    table of every dry_wet group with a network."""
    look = _lookup(records)
    parts = []
    targets = target_table(records)
    if targets:
        parts.append("Every trained network against the `mean` baseline (the benchmark's "
                     "every-processor target):\n\n" + targets.rstrip())
    parts.append(markdown_tables(records).rstrip())
    groups = _groups(records)
    train_rows = []
    for g in groups:
        secs = look.get((*g, "model", "train_seconds", "all", "mean"))
        ex = look.get((*g, "model", "train_examples", "all", "mean"))
        if secs is not None:
            train_rows.append(f"| {g[1]} | {g[2]} | {secs / 60:.1f} | "
                              f"{'-' if ex is None else f'{ex:,.0f}'} |")
    if train_rows:
        parts.append("Training time of each checkpoint (wall time of the training epochs):\n\n"
                     "| processor | mode | minutes | examples seen |\n|---|---|---|---|\n"
                     + "\n".join(dict.fromkeys(train_rows)))
    for g in groups:
        if g[2] != "dry_wet" or (*g, "model+refine", "mrstft", "all", "median") not in look:
            continue
        names = [r["metric"].split("/", 1)[1] for r in records
                 if (r["set"], r["processor"], r["mode"], r["estimator"]) == (*g, "model")
                 and r["metric"].startswith("norm_err/") and r["subset"] == "identifiable"
                 and r["stat"] == "median"]
        steps = int(look.get((*g, "model+refine", "refine_steps", "all", "mean")) or REFINE_STEPS)
        gn = look.get((*g, "model+refine", "refine_gauss_newton", "all", "mean"))
        how = "Gauss-Newton" if gn else "Adam"
        parts.append(f"Refinement against step count, {g[0]} / {g[1]} / dry_wet ({how}; default: "
                     f"{steps} steps):\n\n" + step_table(records, *g, names, default_steps=steps)
                     .rstrip())
    return "\n\n".join(parts) + "\n"


def replace_section(path: Path, begin: str, end: str, middle: str) -> bool:
    """Replace the text between the markers ``begin`` and ``end`` of the file ``path`` with
    ``middle``; False (the file untouched) when a marker is absent."""
    text = path.read_text()
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    path.write_text(head + begin + middle + end + rest.split(end, 1)[1])
    return True


def update_readme(readme: Path, records: list[dict]) -> bool:
    """Replace the text between the README's result markers; False when the markers are absent."""
    return replace_section(readme, README_BEGIN, README_END,
                           "\n\n" + readme_section(records) + "\n")
