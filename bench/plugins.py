"""Third-party plugins (pedalboard's Compressor, Limiter, NoiseGate) as targets: how closely dynfx
imitates each plugin, and how well a trained network recovers the plugin's own settings.

    python bench/plugins.py                        # imitation table (all three plugins)
    python bench/plugins.py --ckpt outputs/<run>/checkpoints/epochNNN.ckpt   # recovery (repeat)
    python bench/plugins.py --readme               # only regenerate the README section

Imitation, on the estimation benchmark's builtin clips (protocol v1 format: 44.1 kHz, 131072
samples, mono) at random plugin settings: ``mapped`` renders dynfx's imitation at the plugin's
true settings through the documented mapping (models/plugins.py); ``direct`` fits the imitation's
settings to the plugin's output from the middle of every range (the benchmark's ``direct``
estimator: Adam on the gain, 50 steps, and 200); ``noop`` is the dry signal. Recovery runs the
benchmark's estimators on plugin renders with a checkpoint trained on them (``processor=plugin_*``).
Records go to ``bench/plugins/results.json`` (same format as bench/estimation), tables to
``bench/plugins/results.md`` and the README section between the ``plugins`` markers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/estimation.py: the checkpoint loader

OUT = ROOT / "bench" / "plugins"
START, END = "<!-- plugins:start -->", "<!-- plugins:end -->"


def mapped_records(proc, dry, pm, set_name: str, seed: int) -> list[dict]:
    """The imitation at the true settings against the plugin's output."""
    import numpy as np
    import torch

    name = f"pedalboard.{proc.plugin}"
    n, P = dry.shape[0], proc.count_num_parameters()
    true = pm.settings_for(name, P, n, seed)
    wet, y = [], []
    with torch.no_grad():
        for a in range(0, n, 32):
            s = slice(a, min(n, a + 32))
            wet.append(proc.render_plugin(dry[s], true[s]))
            y.append(proc(dry[s], norm_params=true[s], validate=False))
    wet, y = torch.cat(wet), torch.cat(y)
    m = pm.example_metrics(proc, dry, wet, y, None, true)
    m["max_abs_diff"] = (y - wet).abs().flatten(1).amax(dim=1).double().numpy()
    out = []
    for metric, values in m.items():
        for stat in ("median", "mean", "p90"):
            out.append({"set": set_name, "processor": name, "mode": "dry_wet",
                        "estimator": "mapped", "metric": metric, "subset": "all",
                        "stat": stat, "value": pm._stat(np.asarray(values), stat)})
    return out


def merge_by_estimator(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` without the (set, processor, mode, estimator) groups that ``new`` holds, then
    ``new``: a recovery run (model, model+refine, mean, noop) keeps the imitation run's
    `mapped` and `direct` records of the same plugin, and the other way round."""
    key = ("set", "processor", "mode", "estimator")
    groups = {tuple(r[k] for k in key) for r in new}
    return [r for r in old if tuple(r[k] for k in key) not in groups] + new


def _f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 \
        else f"{v:.1e}"


def tables(records: list[dict]) -> str:
    from models.benchmark import _lookup
    from models.plugins import PLUGINS

    values = _lookup(records)

    def _get(proc, mode, est, metric, subset="all", stat="median"):
        return values.get(("builtin", proc, mode, est, metric, subset, stat))

    lines = ["Imitation of each plugin by dynfx (builtin clips at random plugin settings, N = {n}; "
             "medians over the clips; `mapped`: dynfx at the plugin's own settings through the "
             "mapping; `direct fit`: the imitation's settings fitted to the plugin's output from "
             "the middle of every range, the benchmark's `direct`; MR-STFT: auraloss defaults; "
             "envelope: mean |frame level difference| in dB):".format(n=int(_get("pedalboard.Compressor",
                                                            "dry_wet", "mapped", "n") or 0) or
                                                 "see results.json"),
             "",
             "| plugin | mapped: max abs difference (median) | mapped: MR-STFT | mapped: "
             "envelope dB | direct fit, 50 steps: MR-STFT (p90) | direct fit, 50 steps: "
             "envelope dB | 200 steps: MR-STFT | no-op MR-STFT |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for plugin in PLUGINS:
        p = f"pedalboard.{plugin}"
        if _get(p, "dry_wet", "mapped", "mrstft") is None:
            continue
        lines.append(
            f"| {plugin} | {_f(_get(p, 'dry_wet', 'mapped', 'max_abs_diff'))} "
            f"| {_f(_get(p, 'dry_wet', 'mapped', 'mrstft'))} "
            f"| {_f(_get(p, 'dry_wet', 'mapped', 'env_db'))} "
            f"| {_f(_get(p, 'dry_wet', 'direct', 'mrstft'))} "
            f"({_f(_get(p, 'dry_wet', 'direct', 'mrstft', stat='p90'))}) "
            f"| {_f(_get(p, 'dry_wet', 'direct', 'env_db'))} "
            f"| {_f(_get(p, 'dry_wet', 'direct', 'steps200/mrstft'))} "
            f"| {_f(_get(p, 'dry_wet', 'noop', 'mrstft'))} |")
    rec = [r for r in records if r["estimator"] == "model"]
    groups = sorted({(r["processor"], r["mode"]) for r in rec})
    if groups:
        lines += ["", "Recovery of the plugin's own settings by a network trained on plugin "
                  "renders (median normalised error over identifiable instances; the `mean` "
                  "baseline in brackets; `model+refine`: the network's estimate refined for the "
                  "benchmark's default steps against the plugin's output; identifiable share; "
                  "MR-STFT of the imitation at the estimate against the plugin's output; train min: "
                  "wall time of the training epochs, `experiment=est_plugin` on the 2-core CPU):", "",
                  "| plugin | mode | setting | model (mean) | model+refine | identifiable | "
                  "MR-STFT model / model+refine / mean | train min |",
                  "|---|---|---|---|---|---:|---|---:|"]
        for proc, mode in groups:
            plugin = proc.split(".", 1)[1]
            first = True
            for name in PLUGINS.get(plugin, {}):
                m = _get(proc, mode, "model", f"norm_err/{name}", "identifiable")
                b = _get(proc, mode, "mean", f"norm_err/{name}", "identifiable")
                r = _get(proc, mode, "model+refine", f"norm_err/{name}", "identifiable")
                share = _get(proc, mode, "model", f"identifiable/{name}", stat="mean")
                secs = _get(proc, mode, "model", "train_seconds", stat="mean")
                minutes = ("-" if secs is None else f"{secs / 60:.1f}") if first else ""
                audio = (f"{_f(_get(proc, mode, 'model', 'mrstft'))} / "
                         f"{_f(_get(proc, mode, 'model+refine', 'mrstft'))} / "
                         f"{_f(_get(proc, mode, 'mean', 'mrstft'))}") if first else ""
                lines.append(f"| {plugin if first else ''} | {mode if first else ''} | {name} | "
                             f"{_f(m)} ({_f(b)}) | {_f(r)} | {'-' if share is None else f'{share:.0%}'} "
                             f"| {audio} | {minutes} |")
                first = False
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, body: str) -> bool:
    from models.benchmark import replace_section

    return replace_section(readme, START, END, "\n" + body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt", action="append", default=[], help="a checkpoint trained on plugin "
                    "targets (processor=plugin_*): its recovery (repeat)")
    ap.add_argument("--plugins", default="Compressor,Limiter,NoiseGate")
    ap.add_argument("--n", type=int, default=64, help="clips (imitation and recovery)")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--readme", nargs="?", const=str(ROOT / "README.md"), default=None,
                    help="update the README section (alone: only that)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    path = out / "results.json"
    records = json.loads(path.read_text()) if path.exists() else []
    from models import benchmark as pm

    run_imitation = not args.ckpt and args.readme is None  # --readme alone: tables only
    if args.n <= 0:
        ap.error("--n must be positive")
    new: list[dict] = []
    if run_imitation or args.ckpt:
        dry = pm.builtin_set(args.n)
        seed = pm.BUILTIN_SEED
    if run_imitation:
        from models.plugins import PLUGINS, PluginProcessor

        for plugin in [p.strip() for p in args.plugins.split(",") if p.strip()]:
            if plugin not in PLUGINS:
                ap.error(f"unknown plugin {plugin!r}; choose from {', '.join(PLUGINS)}")
            proc = PluginProcessor(plugin, pm.FS)
            t0 = time.perf_counter()
            recs = mapped_records(proc, dry, pm, "builtin", seed)
            r2, _ = pm.run_benchmark(pm.BenchCase(proc, "dry_wet"), dry, "builtin", seed,
                                     pm.REFINE_STEPS, pm.REFINE_LR, [200])
            recs += [r for r in r2 if r["estimator"] in ("noop", "mean", "direct")]
            recs.append({"set": "builtin", "processor": f"pedalboard.{plugin}",
                         "mode": "dry_wet", "estimator": "mapped", "metric": "n",
                         "subset": "all", "stat": "median", "value": float(args.n)})
            new += recs
            print(f"{plugin}: {time.perf_counter() - t0:.0f} s")
    if args.ckpt:
        import estimation as cli
        for ck in args.ckpt:
            case = cli._model_case(ck, pm, print)
            if not hasattr(case.processor, "render_plugin"):
                ap.error(f"{ck} was not trained on a plugin target (processor=plugin_*)")
            r, _ = pm.run_benchmark(case, dry, "builtin", seed, pm.REFINE_STEPS, pm.REFINE_LR,
                                    [])
            # the imitation run's `direct` (with its 200-step point) stays
            new += [x for x in r if x["estimator"] != "direct"]
    if new:
        records = merge_by_estimator(records, new)
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1))
    body = tables(records)
    (out / "results.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(body)
    print(body)
    if args.readme:
        if not update_readme(Path(args.readme), body):
            ap.error(f"{args.readme} has no {START} / {END} markers")
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
