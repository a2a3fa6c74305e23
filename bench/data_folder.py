"""Benchmark of the streaming folder dataset (``data=folder``): start-up time, memory and
clips per second, on generated folders.

    python bench/data_folder.py                 # builds the folders once (.cache/dynfx/bench-folder)
    python bench/data_folder.py --workers 0 2 4 --batches 24

Two folders: ``many`` (1,000 files of 2-8 s: wav and flac, mono and stereo, at 22.05, 44.1
and 48 kHz) and ``long`` (one 20-minute 44.1 kHz stereo 16-bit WAV, 212 MB). Every case runs in
its own process; for each it reports the start-up time with the index cached (the DataModule's
setup: index read, splits, first batch excluded) and without it (first run: every file
probed), the peak memory of the process tree (sum of proportional set sizes, sampled every
20 ms, so shared pages are not counted twice; and the main process's peak RSS) and training
clips per second (44.1 kHz, 131072 samples, batch 16) with 0, 2 and 4 DataLoader workers.
Writes ``bench/data_folder.json`` and prints a Markdown table (copied into data/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------
# the folders
# --------------------------------------------------------------------------------------------
def build_folders(base: Path) -> dict[str, Path]:
    import numpy as np
    import soundfile as sf
    from tqdm.auto import tqdm

    from models.data.synth import SynthConfig, generate_clip

    many, long = base / "many", base / "long"
    if not (many / "done").exists():
        many.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        rates = (22050, 44100, 48000)
        for k in tqdm(range(1000), desc="building the 1,000-file folder", unit="file"):
            sr = int(rates[k % 3])
            ch = 1 + k % 2
            seconds = float(rng.uniform(2.0, 8.0))
            clip, _ = generate_clip(SynthConfig(sr, seconds, ch), 77, k)
            sub = many / f"{k // 100:02d}"
            sub.mkdir(exist_ok=True)
            ext = ".flac" if k % 4 == 0 else ".wav"
            sf.write(sub / f"clip{k:04d}{ext}", clip.T, sr, subtype="PCM_16")
        (many / "done").write_text("ok")
    if not (long / "done").exists():
        long.mkdir(parents=True, exist_ok=True)
        sr, minutes = 44100, 20
        cfg = SynthConfig(sr, 30.0, 2)
        with sf.SoundFile(str(long / "session.wav"), "w", sr, 2, subtype="PCM_16") as f:
            for k in tqdm(range(minutes * 2), desc="building the 20-minute file", unit="30 s"):
                clip, _ = generate_clip(cfg, 78, k)
                f.write(0.5 * clip.T)
        (long / "done").write_text("ok")
    return {"many": many, "long": long}


# --------------------------------------------------------------------------------------------
# memory of a process tree
# --------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def _kib(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Peak of the summed proportional set size of this process and its descendants."""

    def __init__(self, every: float = 0.02):
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            todo, total = [os.getpid()], 0
            while todo:
                pid = todo.pop()
                total += _kib(pid, "smaps_rollup", "Pss:")
                todo += _children(pid)
            self.peak_pss_kib = max(self.peak_pss_kib, total)
            time.sleep(every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# one case, in its own process
# --------------------------------------------------------------------------------------------
def run_case(root: str, workers: int, batches: int, cache_dir: str) -> dict:
    import resource

    import torch

    from models.data.datamodule import EffectDataModule

    torch.set_num_threads(1)
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        dm = EffectDataModule(source="folder", root=root, sample_rate=44100, clip_samples=131072,
                              train_size=batches * 16, val_size=16, test_size=16, batch_size=16,
                              num_workers=workers, num_params=6, level_db=None,
                              cache_dir=cache_dir)
        dm.setup("fit")
        loader = dm.train_dataloader()
        startup = time.perf_counter() - t0
        it = iter(loader)
        next(it)  # workers started, first batch
        t1 = time.perf_counter()
        n = 0
        for batch in it:
            n += batch["dry"].shape[0]
        rate = n / (time.perf_counter() - t1)
        del it, loader
    return {"startup_s": startup, "clips_per_s": rate,
            "peak_pss_mb": mem.peak_pss_kib / 1024,
            "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "skipped": dm._index.skipped, "files": len(dm._index.files)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", default=str(ROOT / ".cache" / "dynfx" / "bench-folder"))
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    ap.add_argument("--batches", type=int, default=24, help="training batches (of 16) timed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "data_folder.json"))
    ap.add_argument("--case", nargs=4, metavar=("ROOT", "WORKERS", "BATCHES", "CACHE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        root, workers, batches, cache = args.case
        print(json.dumps(run_case(root, int(workers), int(batches), cache)))
        return 0

    folders = build_folders(Path(args.base))
    results = []

    def case(name: str, workers: int, cache: Path) -> dict:
        cmd = [sys.executable, __file__, "--case", str(folders[name]), str(workers),
               str(args.batches), str(cache)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(f"case {name} workers={workers} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r.update(folder=name, workers=workers)
        return r

    for name in ("many", "long"):
        cache = Path(args.base) / f"index-{name}"
        for f in cache.glob("folder-index-*.json"):
            f.unlink()  # the first run indexes from scratch
        cold = case(name, args.workers[0], cache)
        cold["index"] = "built"
        results.append(cold)
        print(f"{name}: index built in {cold['startup_s']:.1f} s", flush=True)
        for w in args.workers:
            r = case(name, w, cache)
            r["index"] = "cached"
            results.append(r)
            print(f"{name} workers={w}: start-up {r['startup_s']:.2f} s, "
                  f"{r['clips_per_s']:.1f} clips/s, peak {r['peak_pss_mb']:.0f} MB", flush=True)
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "batches": args.batches, "clip": "44.1 kHz, 131072 samples, batch 16",
            "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print("\n| folder | index | workers | start-up (s) | clips/s | peak memory, tree PSS (MB) "
          "| main process peak RSS (MB) |\n|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['folder']} ({r['files']} files) | {r['index']} | {r['workers']} | "
              f"{r['startup_s']:.2f} | {r['clips_per_s']:.1f} | {r['peak_pss_mb']:.0f} | "
              f"{r['peak_rss_main_mb']:.0f} |")
    print(json.dumps({"wrote": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
