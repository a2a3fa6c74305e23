#!/usr/bin/env python
"""Speed and peak memory of every dynfx processor, and of the Compressor against other libraries.

    python bench/bench_processors.py --device cpu            # or --device cuda
    python bench/bench_processors.py --device cpu --json bench/results-cpu.json --reps 15

Times forward (no autograd) and forward+backward (gradients with respect to the audio and every
parameter) at 1x1x65536 and 16x2x131072 (batch x channels x samples), float32, 44.1 kHz. The
Compressor runs at threshold -20 dB, ratio 4, attack 5 ms, release 50 ms, knee 6 dB (where the
library has a knee); the other processors at the middle of every normalised range. Reference
libraries (torchcomp 0.2.1, diffFx-pytorch 0.0.5; ``pip install -e ".[bench]"``, diffFx with
``--no-deps``) run in the same process, interleaved with dynfx round by round, and the table reports
medians and ratios. Missing libraries are skipped with a note.

Peak memory (forward+backward): on CUDA the allocator's peak above the starting point; on CPU the
growth of the process's resident set during one call (VmHWM after resetting it, above VmRSS
before, after dynfx's scratch pool has been released and glibc's malloc_trim has returned free
memory to the system, so pooled buffers count as allocated by the call).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import dynfx  # noqa: E402
from dynfx._ops.memory import release_pool  # noqa: E402

FS = 44100
COMP = {"threshold_db": -20.0, "ratio": 4.0, "knee_db": 6.0, "attack_ms": 5.0,
        "release_ms": 50.0, "makeup_db": 0.0}


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _read_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_memory(fn: Callable[[], None], device: str) -> Optional[float]:
    """Peak memory (MiB) that one call of fn adds."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not Path("/proc/self/clear_refs").exists():
        return None
    release_pool()  # dynfx's scratch arrays are allocated again inside the call: they count
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base = _read_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the resident-set high-water mark
    fn()
    return max(_read_status("VmHWM") - base, 0) / 2**20


class Case:
    """One implementation at one size: callables for fwd and fwd+bwd."""

    def __init__(self, impl: str, proc: str, size: tuple, fwd: Callable, fwdbwd: Callable):
        self.impl, self.proc, self.size = impl, proc, size
        self.fwd, self.fwdbwd = fwd, fwdbwd
        self.times: dict[str, list[float]] = {"fwd": [], "fwdbwd": []}
        self.peak_mib: Optional[float] = None
        self.bands = 1


def run_rounds(cases: list[Case], device: str, reps: int, warmup: int = 2) -> None:
    for case in cases:
        for _ in range(warmup):
            case.fwd()
            case.fwdbwd()
        _sync(device)
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(reps):
        # interleaved, so that every implementation sees the same machine state, and in a new
        # (seeded) order every round, so that none always runs first or after the same
        # neighbour: in a fixed order the first case, the Compressor (after diffFx-pytorch, which
        # allocates and frees hundreds of MiB), once measured 1.42x the Limiter at 16x2x131072,
        # which costs 0.94-1.0x it in other runs
        shuffle(order)
        for case in order:
            for key in ("fwd", "fwdbwd"):
                _sync(device)
                t0 = time.perf_counter()
                getattr(case, key)()
                _sync(device)
                case.times[key].append(time.perf_counter() - t0)
    for case in cases:
        case.peak_mib = peak_memory(case.fwdbwd, device)


# ----------------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------------
def _audio(size, device) -> torch.Tensor:
    """The same seeded test signal for every implementation."""
    g = torch.Generator().manual_seed(0)
    return (0.3 * torch.randn(*size, generator=g)).to(device)


def _case(impl: str, proc: str, size, run: Callable[[bool], None]) -> Case:
    """A Case from ``run(grad)``: forward under no_grad, or forward+backward."""
    def fwd():
        with torch.no_grad():
            run(False)

    return Case(impl, proc, size, fwd, lambda: run(True))


def dynfx_case(cls, size, device, impl: str = "dynfx") -> Case:
    """A dynfx processor class (of this or another copy of the package, see
    ``compare_revisions.py``) at ``size``: the Compressor at the reference settings, the others
    at the middle of every normalised range."""
    b = size[0]
    x = _audio(size, device)
    proc = cls(sample_rate=FS)

    def run(grad):
        xx = x.detach().requires_grad_(grad)
        if cls.__name__ == "Compressor":
            kw = {"dsp_params": {k: torch.full((b,), v, device=device, requires_grad=grad)
                                 for k, v in COMP.items()}}
        else:
            u = torch.full((b, proc.count_num_parameters()), 0.5, device=device)
            kw = {"norm_params": u.requires_grad_(grad)}
        y = proc(xx, **kw)
        if grad:
            y.sum().backward()

    case = _case(impl, cls.__name__, size, run)
    case.bands = getattr(proc, "num_bands", None) or 1
    return case


def torchcomp_case(size, device) -> Optional[Case]:
    try:
        import torchcomp
    except ImportError:
        return None
    b = size[0]
    x = _audio(size, device)

    def run(grad):
        xx = x.detach().requires_grad_(grad)
        full = lambda v: torch.full((b,), v, device=device, requires_grad=grad)  # noqa: E731
        thr, ratio, att, rel = full(-20.0), full(4.0), full(5.0), full(50.0)
        power = xx.square().mean(dim=1).clamp_min(1e-10)
        gain = torchcomp.compexp_gain(power, thr, ratio, -1000.0, 0.5,
                                      torchcomp.ms2coef(att, FS), torchcomp.ms2coef(rel, FS))
        y = xx * gain[:, None, :]
        if grad:
            y.sum().backward()

    return _case("torchcomp 0.2.1", "Compressor", size, run)


def difffx_case(size, device) -> Optional[Case]:
    try:
        from diffFx_pytorch.processors.dynamics import Compressor
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None
    b = size[0]
    x = _audio(size, device)
    proc = Compressor(sample_rate=FS, knee_type="quadratic")

    def run(grad):
        xx = x.detach().requires_grad_(grad)
        p = {k: torch.full((b,), v, device=device, requires_grad=grad) for k, v in COMP.items()}
        y = proc(xx, dsp_params=p)
        if grad:
            y.sum().backward()

    return _case("diffFx-pytorch 0.0.5", "Compressor", size, run)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# refinement (analysis by synthesis): cost of a step against the processor's own fwd+bwd
# ----------------------------------------------------------------------------------------------
REFINE_SIZES = ((1, 1, 131072), (1, 2, 131072))
CLIP_SECONDS = 3.0
CLIP_STEPS = 50


def refinement_rows(classes, device: str, reps: int, batch: int) -> list[dict]:
    """Per processor: at each of REFINE_SIZES, the processor's fwd+bwd as a refinement step
    calls it (normalised settings with gradient, validate=False, fixed audio) and one step of
    :func:`models.refine.refine_settings` (the mean over 10 steps of one call), interleaved;
    then the wall time of 50 steps on one 3-second stereo clip and per clip on ``batch`` clips
    refined together in one batch. Adam steps (``method="adam"``: one forward and backward
    pass a step, the per-step overhead this table measures); the default Gauss-Newton
    refinement's time per clip is in the estimation benchmark (``sec_per_clip``)."""
    from models.refine import refine_settings

    rows = []
    for cls in classes:
        proc = cls(sample_rate=FS)
        n_par = proc.count_num_parameters()
        g = torch.Generator().manual_seed(1)
        for size in REFINE_SIZES:
            dry = _audio(size, device)
            true = torch.rand(size[0], n_par, generator=g).to(device)
            with torch.no_grad():
                wet = proc(dry, norm_params=true)
            init = torch.full_like(true, 0.5)
            u = init.clone().requires_grad_(True)

            def fwdbwd():
                proc(dry, norm_params=u, validate=False).sum().backward()

            def step(k=10):
                refine_settings(proc, dry, wet, init, k, method="adam")

            case = Case("dynfx", cls.__name__, size, fwdbwd, lambda: step())
            run_rounds([case], device, reps, warmup=1)
            fb = statistics.median(case.times["fwd"]) * 1e3
            st = statistics.median(case.times["fwdbwd"]) * 1e3 / 10
            rows.append({"processor": cls.__name__, "what": "step", "size": "x".join(map(str, size)),
                         "fwdbwd_ms": fb, "step_ms": st, "steps_per_s": 1e3 / st,
                         "step_vs_fwdbwd": st / fb})
        n = int(CLIP_SECONDS * FS)
        for b in (1, batch):
            dry = _audio((b, 2, n), device)
            true = torch.rand(b, n_par, generator=g).to(device)
            with torch.no_grad():
                wet = proc(dry, norm_params=true)
            init = torch.full_like(true, 0.5)
            refine_settings(proc, dry[:1, :, :4096], wet[:1, :, :4096], init[:1], 2,
                            method="adam")  # warm
            times = []
            for _ in range(3):
                _sync(device)
                t0 = time.perf_counter()
                refine_settings(proc, dry, wet, init, CLIP_STEPS, method="adam")
                _sync(device)
                times.append(time.perf_counter() - t0)
            rows.append({"processor": cls.__name__, "what": f"{CLIP_STEPS} steps, 3-s clip",
                         "size": f"{b}x2x{n}", "s_per_clip": statistics.median(times) / b})
    return rows


def print_refinement(rows: list[dict]) -> None:
    head = ["processor", "size", "fwd+bwd ms", "step ms", "steps / s", "step / fwd+bwd",
            f"s per clip ({CLIP_STEPS} steps)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["processor"], r["size"], _fmt(r.get("fwdbwd_ms")), _fmt(r.get("step_ms")),
            _fmt(r.get("steps_per_s"), ".0f"), _fmt(r.get("step_vs_fwdbwd"), ".2f"),
            _fmt(r.get("s_per_clip"), ".2f"),
        ]) + " |")
    print("\n".join(lines))


def machine(device: str) -> dict:
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = f"{names[0]} x {len(names)}" if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def summarise(cases: list[Case]) -> list[dict]:
    rows = []
    ref = {c.size: c for c in cases if c.impl.startswith("torchcomp")}
    for c in cases:
        fwd = statistics.median(c.times["fwd"]) * 1e3
        fb = statistics.median(c.times["fwdbwd"]) * 1e3
        row = {"impl": c.impl, "processor": c.proc, "size": "x".join(map(str, c.size)),
               "fwd_ms": fwd, "fwdbwd_ms": fb, "peak_mib": c.peak_mib, "bands": c.bands}
        r = ref.get(c.size)
        if r is not None:
            row["fwd_vs_torchcomp"] = fwd / (statistics.median(r.times["fwd"]) * 1e3)
            row["fwdbwd_vs_torchcomp"] = fb / (statistics.median(r.times["fwdbwd"]) * 1e3)
            row["peak_vs_torchcomp"] = (
                c.peak_mib / r.peak_mib if c.peak_mib is not None and r.peak_mib else None
            )
        rows.append(row)
    comp = {r["size"]: r for r in rows if r["impl"] == "dynfx" and r["processor"] == "Compressor"}
    for r in rows:
        if r["impl"] == "dynfx" and r["size"] in comp:
            c = comp[r["size"]]
            r["fwdbwd_vs_dynfx_compressor"] = r["fwdbwd_ms"] / c["fwdbwd_ms"]
            if r["peak_mib"] is not None and c["peak_mib"]:
                r["peak_per_band_vs_dynfx_compressor"] = r["peak_mib"] / (r["bands"] * c["peak_mib"])
    return rows


def _fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = ["impl", "processor", "size", "fwd ms", "fwd+bwd ms", "peak MiB", "fwd / tc",
            "fwd+bwd / tc", "peak / tc", "fwd+bwd / Comp", "peak per band / Comp"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["impl"], r["processor"], r["size"], _fmt(r["fwd_ms"]), _fmt(r["fwdbwd_ms"]),
            _fmt(r["peak_mib"]), _fmt(r.get("fwd_vs_torchcomp"), ".2f"),
            _fmt(r.get("fwdbwd_vs_torchcomp"), ".2f"), _fmt(r.get("peak_vs_torchcomp"), ".2f"),
            _fmt(r.get("fwdbwd_vs_dynfx_compressor"), ".2f"),
            _fmt(r.get("peak_per_band_vs_dynfx_compressor"), ".2f"),
        ]) + " |")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--reps", type=int, default=11, help="timed rounds (median reported)")
    ap.add_argument("--sizes", default="1x1x65536,16x2x131072", help="comma-separated BxCxT")
    ap.add_argument("--processors", default="all", help="comma-separated class names, or all")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    ap.add_argument("--refine", default="Compressor",
                    help="comma-separated class names whose refinement steps are timed, all, or "
                         "none")
    ap.add_argument("--refine-batch", type=int, default=8,
                    help="clips refined together in the batched clip timing")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    classes = [c for c in dynfx.PROCESSORS
               if args.processors == "all" or c.__name__ in args.processors.split(",")]
    notes = []
    rows = []
    for size in sizes:
        cases = [dynfx_case(cls, size, args.device) for cls in classes]
        for name, make in (("torchcomp 0.2.1", torchcomp_case), ("diffFx-pytorch 0.0.5", difffx_case)):
            case = make(size, args.device)
            if case is None:
                note = f"{name} is not installed: skipped (pip install -e '.[bench]')"
                if note not in notes:
                    notes.append(note)
                continue
            try:  # a reference library that fails on this machine is skipped, not fatal
                case.fwd()
                case.fwdbwd()
            except Exception as err:  # noqa: BLE001 - report whatever it raised
                msg = str(err).strip().splitlines()
                notes.append(f"{name} failed on {args.device} at {'x'.join(map(str, size))}: "
                             f"{type(err).__name__}: {msg[-1] if msg else ''} (skipped)")
                continue
            cases.append(case)
        print(f"running {len(cases)} cases at {'x'.join(map(str, size))} ...", file=sys.stderr)
        run_rounds(cases, args.device, args.reps)
        rows += summarise(cases)
    refine_classes = [] if args.refine == "none" else [
        c for c in dynfx.PROCESSORS if args.refine == "all" or c.__name__ in args.refine.split(",")]
    refine = []
    if refine_classes:
        print(f"timing refinement steps of {len(refine_classes)} processor(s) ...",
              file=sys.stderr)
        refine = refinement_rows(refine_classes, args.device, args.reps, args.refine_batch)
    info = machine(args.device)
    print(f"\n{info['date']}, {info.get('gpu', info['cpu'])}, torch {info['torch']}, "
          f"{info['threads']} threads, median of {args.reps} interleaved rounds\n")
    print_table(rows)
    if refine:
        print("\nRefinement (models.refine.refine_settings; step / fwd+bwd: the cost of a step "
              "against the processor's own forward+backward, interleaved):\n")
        print_refinement(refine)
    for note in notes:
        print(f"\nnote: {note}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "reps": args.reps, "notes": notes,
                                         "results": rows, "refinement": refine}, indent=2))
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
