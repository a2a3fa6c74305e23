"""A pool of built-in clips for long training runs, and the level rule of the estimation benchmark.

Generating a 3 s clip at 44.1 kHz costs about 0.1 s on one core, far more than rendering its
target, so long runs draw their training examples from a pool made once (in parallel, cached on
disk): each example is a random crop of a pool clip at a random level, with new settings every
epoch. Examples are seeded by (seed, epoch, index), so runs are reproducible and resumes exact.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .folder import split_key
from .synth import SynthConfig, generate_clip

__all__ = ["apply_level", "BuiltinPool", "GENERATOR_VERSION", "SILENCE_DB", "first_audible"]

GENERATOR_VERSION = 1  # bump when generate_clip changes what it makes (invalidates caches)
SILENCE_DB = -60.0  # clips quieter than this (RMS) are redrawn
REDRAWS = 8  # at most this many draws of a crop


def first_audible(draw, silence_db: float = SILENCE_DB, tries: int = REDRAWS):
    """Call ``draw()`` until its crop (array or tensor) has an RMS level above ``silence_db``
    dBFS, at most ``tries`` times; the last crop when none is."""
    for _ in range(max(1, int(tries))):
        crop = draw()
        power = np.mean(np.square(np.asarray(crop, dtype=np.float64)))
        if 10 * np.log10(power + 1e-20) > silence_db:
            break
    return crop


def apply_level(audio: np.ndarray, rng: np.random.Generator, level_db=(-30.0, -10.0),
                peak_db: float = -1.0) -> np.ndarray:
    """The benchmark's level rule: scale to an RMS level drawn uniformly in ``level_db`` (dBFS),
    then down to a peak of ``peak_db`` if the peak is higher. ``rng`` draws the level.

    >>> x = np.ones((1, 100))
    >>> y = apply_level(x, np.random.default_rng(0), (-20.0, -20.0))
    >>> round(float(20 * np.log10(np.sqrt(np.mean(y ** 2)))), 6)
    -20.0
    """
    level = rng.uniform(*level_db)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) + 1e-12
    out = audio * (10 ** (level / 20) / rms)
    peak = float(np.abs(out).max()) + 1e-12
    limit = 10 ** (peak_db / 20)
    if peak > limit:
        out = out * (limit / peak)
    return out.astype(np.float32)


def _make(args):
    fs, n, channels, seed, index = args
    cfg = SynthConfig(fs, n / fs, channels)
    clip, _ = generate_clip(cfg, seed, index)
    return clip[:, :n]


def _cache_file(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"pool-{digest}.npy"


def generate_pool(size: int, seed: int, sample_rate: int, num_samples: int, channels: int,
                  workers: Optional[int] = None, cache_dir: Optional[str | Path] = None,
                  progress: bool = True) -> np.ndarray:
    """``size`` generator clips of ``num_samples`` samples: (size, C, T) float32, made in parallel
    and cached as a ``.npy`` file in ``cache_dir`` (keyed by every argument and the generator
    version), so the next run loads them in a second."""
    key = {"size": size, "seed": seed, "fs": sample_rate, "n": num_samples, "ch": channels,
           "version": GENERATOR_VERSION}
    path = _cache_file(Path(cache_dir), key) if cache_dir else None
    if path is not None and path.exists():
        try:
            pool = np.load(path, mmap_mode="r")
            if pool.shape == (size, channels, num_samples):
                return pool
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    jobs = [(sample_rate, num_samples, channels, seed, i) for i in range(size)]
    pool = np.empty((size, channels, num_samples), dtype=np.float32)
    bar = None
    if progress and size >= 64:
        from tqdm.auto import tqdm

        bar = tqdm(total=size, desc="generating built-in clips", unit="clip")
    if workers > 1 and size >= 16:
        with ProcessPoolExecutor(workers) as ex:
            for i, clip in enumerate(ex.map(_make, jobs, chunksize=8)):
                pool[i] = clip
                if bar:
                    bar.update()
    else:
        for i, job in enumerate(jobs):
            pool[i] = _make(job)
            if bar:
                bar.update()
    if bar:
        bar.close()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, pool)
        os.replace(tmp, path)  # readers never see a half-written cache
    return pool


class BuiltinPool(Dataset):
    """Examples drawn from a pool of built-in clips: a random crop of ``num_samples`` from a pool
    clip of ``pool_samples`` (or the whole clip for fixed splits), at a random level (the
    benchmark's rule), seeded by (seed, epoch, index) for training and by (seed, index) otherwise.

    Args:
        size: examples per epoch. pool_size: clips in the pool (training: fewer than ``size``
            gives every clip several crops, levels and settings per epoch).
        fixed: validation/test: example ``i`` never changes.
    """

    def __init__(self, size: int, seed: int, sample_rate: int = 44100, num_samples: int = 131072,
                 channels: int = 1, pool_size: Optional[int] = None, pool_samples: Optional[int] = None,
                 level_db=(-30.0, -10.0), peak_db: float = -1.0, fixed: bool = False,
                 cache_dir: Optional[str] = None, workers: Optional[int] = None):
        if size <= 0 or num_samples <= 0:
            raise ValueError(f"BuiltinPool: size and num_samples must be positive, got "
                             f"{size} and {num_samples}")
        self.size, self.seed, self.fixed = size, seed, fixed
        self.num_samples = int(num_samples)
        pool_size = size if fixed or not pool_size else int(pool_size)
        pool_samples = self.num_samples if fixed else max(int(pool_samples or 0), self.num_samples)
        self.level_db, self.peak_db = tuple(level_db), float(peak_db)
        self.pool = generate_pool(pool_size, seed, sample_rate, pool_samples, channels,
                                  workers=workers, cache_dir=cache_dir)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key) -> torch.Tensor:
        epoch, i = split_key(key, self.epoch)
        key = (self.seed, i) if self.fixed else (self.seed, epoch, i)
        rng = np.random.default_rng([*key, 17])

        def draw():
            idx = i if self.fixed else int(rng.integers(len(self.pool)))
            clip = self.pool[idx]
            start = int(rng.integers(0, clip.shape[-1] - self.num_samples + 1))
            return np.asarray(clip[:, start : start + self.num_samples])

        # silent crops are redrawn (bounded); fixed splits keep their one crop
        crop = first_audible(draw, SILENCE_DB, 1 if self.fixed else REDRAWS)
        return torch.from_numpy(apply_level(crop, rng, self.level_db, self.peak_db))
