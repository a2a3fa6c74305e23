"""Speed of this checkout's dynfx against another checkout's, in one process, interleaved.

    git worktree add /tmp/dynfx-base <commit>
    python bench/compare_revisions.py --base /tmp/dynfx-base --json bench/compare-cpu.json

The other checkout's ``dynfx`` package is imported under the name ``dynfx_base`` (its relative
imports resolve inside that copy), so both versions run the same seeded audio at the same
settings in alternating rounds, as in ``bench_processors.py``; the table gives the median times
and the ratio this / base per processor and size (above 1: slower than the base).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_processors as bp  # noqa: E402
import dynfx  # noqa: E402


def load_base(checkout: Path):
    """The ``dynfx`` package of ``checkout`` as the module ``dynfx_base``."""
    init = checkout / "dynfx" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--base {checkout}: no dynfx/__init__.py there (a checkout of this "
                         "repository, e.g. from `git worktree add`)")
    spec = importlib.util.spec_from_file_location("dynfx_base", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["dynfx_base"] = module
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout's folder")
    ap.add_argument("--sizes", default="1x1x65536,16x2x131072")
    ap.add_argument("--processors", default="", help="comma-separated class names (default: all)")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    base = load_base(args.base.resolve())
    names = ([n for n in args.processors.split(",") if n] or
             [c.__name__ for c in dynfx.PROCESSORS if hasattr(base, c.__name__)])
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    cases = [bp.dynfx_case(getattr(lib, n), s, "cpu", impl=label) for s in sizes for n in names
             for lib, label in ((base, "base"), (dynfx, "this"))]
    bp.run_rounds(cases, "cpu", args.reps)
    rows, records = [], []
    for i in range(0, len(cases), 2):
        b, t = cases[i], cases[i + 1]
        rec = {"processor": t.proc, "size": "x".join(map(str, t.size))}
        for key in ("fwd", "fwdbwd"):
            mb, mt = statistics.median(b.times[key]), statistics.median(t.times[key])
            rec[f"{key}_base_ms"], rec[f"{key}_this_ms"] = 1e3 * mb, 1e3 * mt
            rec[f"{key}_ratio"] = mt / mb
        records.append(rec)
        rows.append(f"| {rec['processor']} | {rec['size']} | {rec['fwd_base_ms']:.1f} | "
                    f"{rec['fwd_this_ms']:.1f} | {rec['fwd_ratio']:.3f} | "
                    f"{rec['fwdbwd_base_ms']:.1f} | {rec['fwdbwd_this_ms']:.1f} | "
                    f"{rec['fwdbwd_ratio']:.3f} |")
    info = bp.machine("cpu")
    print(f"{info['date']}, {info.get('cpu', '')} torch {info['torch']}, {info['threads']} "
          f"threads, median of {args.reps} interleaved rounds; base: {args.base}")
    print("| processor | size | fwd base ms | fwd this ms | this / base | fwd+bwd base ms | "
          "fwd+bwd this ms | this / base |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    ratios = [r[f"{k}_ratio"] for r in records for k in ("fwd", "fwdbwd")]
    print(f"\nworst ratio {max(ratios):.3f}, geometric mean "
          f"{statistics.geometric_mean(ratios):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "base": str(args.base),
                                         "reps": args.reps, "results": records}, indent=2))


if __name__ == "__main__":
    main()
