"""The estimation benchmark, protocol v1: evaluate trained checkpoints (and the baselines).

    python bench/estimation.py --ckpt outputs/<run>/checkpoints/last.ckpt [--ckpt ...]
    python bench/estimation.py --ckpt ... --realistic /path/to/recordings   # also the realistic set
    python bench/estimation.py --baseline compressor:dry_wet                # baselines only

Writes ``bench/estimation/results.json`` (records merged with earlier runs: a (set, processor,
mode) group that is run again replaces its old records), ``results.md`` and the per-example
values in ``per_example/``. See ``models/benchmark.py`` for the protocol.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _model_case(ckpt: str, pm, log):
    import torch
    import torchaudio.functional as AF
    from hydra.utils import instantiate

    from models.pipeline import load_checkpoint

    module, run_cfg = load_checkpoint(ckpt)
    fs_model = int(run_cfg.data.sample_rate)
    proc = instantiate(run_cfg.processor, sample_rate=pm.FS)
    encoder = module.encoder.eval()

    def model(wet, dry):
        if fs_model != pm.FS:  # the network sees audio at its training rate
            wet = AF.resample(wet, pm.FS, fs_model)
            dry = None if dry is None else AF.resample(dry, pm.FS, fs_model)
        with torch.no_grad():
            return encoder(wet, dry)

    info = {"train_seconds": float(module.train_seconds),
            "train_examples": float(module.train_examples)}
    log(f"{ckpt}: {type(proc).__name__}, input_mode={module.input_mode}, trained at {fs_model} Hz")
    return pm.BenchCase(proc, module.input_mode, model, train_info=info)


def _baseline_case(spec: str, pm):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    name, _, mode = spec.partition(":")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"processor={name}", "run_dir=."])
    proc = instantiate(cfg.processor, sample_rate=pm.FS)
    return pm.BenchCase(proc, mode or "dry_wet")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ckpt", action="append", default=[], help="a trained checkpoint (repeat)")
    ap.add_argument("--baseline", action="append", default=[],
                    help="processor:mode without a network, e.g. limiter:wet (repeat)")
    ap.add_argument("--realistic", default=None, help="folder of recordings: the realistic set")
    ap.add_argument("--no-builtin", action="store_true", help="skip the builtin set")
    ap.add_argument("--n", type=int, default=256, help="clips per set (protocol: 256)")
    ap.add_argument("--seed", type=int, default=None,
                    help="test-set seed (default: the protocol's; another seed = a validation set)")
    ap.add_argument("--steps", type=int, default=None, help="refinement steps (default 50)")
    ap.add_argument("--lr", type=float, default=None, help="refinement learning rate")
    ap.add_argument("--step-counts", default="10,25,50,100,200",
                    help="step counts of the refinement report ('' for none)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench" / "estimation"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--readme", nargs="?", const=str(ROOT / "README.md"), default=None,
                    help="regenerate the README's results section from results.json (alone: "
                         "without running anything)")
    args = ap.parse_args(argv)
    if args.readme and not args.ckpt and not args.baseline:
        from models import benchmark as pm

        records = json.loads((Path(args.out) / "results.json").read_text())
        if not pm.update_readme(Path(args.readme), records):
            ap.error(f"{args.readme} has no results markers")
        print(f"updated {args.readme} from {Path(args.out) / 'results.json'}")
        return 0
    if not args.ckpt and not args.baseline:
        ap.error("give at least one --ckpt or --baseline")
    if args.n <= 0:
        ap.error("--n must be positive")

    import torch

    from models import benchmark as pm

    if args.threads:
        torch.set_num_threads(args.threads)
    seed = pm.BUILTIN_SEED if args.seed is None else args.seed
    steps = pm.REFINE_STEPS if args.steps is None else args.steps
    lr = pm.REFINE_LR if args.lr is None else args.lr
    counts = [int(c) for c in args.step_counts.split(",") if c.strip()]
    out = Path(args.out)
    log = print

    cases = [_model_case(c, pm, log) for c in args.ckpt] + [_baseline_case(b, pm)
                                                            for b in args.baseline]
    sets = []
    if not args.no_builtin:
        sets.append(("builtin", pm.builtin_set(args.n, seed)))
    if args.realistic:
        sets.append(("realistic", pm.folder_set(args.realistic, args.n, seed)))
    if not sets:
        ap.error("nothing to run: --no-builtin without --realistic")
    set_suffix = "" if seed == pm.BUILTIN_SEED else f"-seed{seed}"
    hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    for set_name, dry in sets:
        for case in cases:
            t0 = time.perf_counter()
            records, per_example = pm.run_benchmark(case, dry, set_name + set_suffix, seed, steps,
                                                    lr, counts, batch=args.batch)
            tag = f"{set_name}{set_suffix}_{case.name}_{case.mode}"
            per_example["meta"] = {"protocol": pm.PROTOCOL_VERSION, "n": args.n, "seed": seed,
                                   "refine_steps": steps, "refine_lr": lr, "hardware": hardware,
                                   "seconds": time.perf_counter() - t0}
            path = pm.write_outputs(out, records, per_example, tag)
            print(f"{tag}: {time.perf_counter() - t0:.0f} s -> {path}")
    print((out / "results.md").read_text())
    if args.readme:
        records = json.loads((out / "results.json").read_text())
        if pm.update_readme(Path(args.readme), records):
            print(f"updated the results section of {args.readme}")
    print(json.dumps({"wrote": str(out / "results.json")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
