"""A folder of the user's audio as a streaming dataset.

The folder is indexed once (path, frames, sample rate, channels, peak; cached as JSON and
refreshed for files whose size or modification time changed); every example then reads only the
crop it needs from disk (seeking, never decoding a whole file) and resamples that crop. Memory is
bounded by the crops in flight, not by the size of the folder.

Splits are by file: ``root/train``, ``root/val`` and ``root/test`` subfolders when they exist,
otherwise a seeded split of the files (``val_fraction``, ``test_fraction``; a file's split depends
only on its relative path and ``split_seed``, so adding files never moves the others, except to
fill a split that would otherwise be empty). A folder
with fewer than three usable files is split by time instead: each file's first 80 % trains, the
next 10 % validates, the last 10 % tests (a warning says so).

Files are skipped, with one warning each and counted in ``FolderIndex.skipped``, when they are
unreadable, empty, contain NaN or Inf, are digital silence (peak below ``silence_db``) or have an
absurd amplitude (peak above ``MAX_PEAK`` = 16, i.e. +24 dBFS: no real recording, even in float,
gets there). A folder without one usable file is a ``ValueError`` naming it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["AUDIO_EXTENSIONS", "MAX_PEAK", "INDEX_VERSION", "FileInfo", "FolderIndex",
           "FolderClips", "split_key"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MAX_PEAK = 16.0  # files whose peak exceeds this (+24 dBFS) are skipped as absurd
INDEX_VERSION = 1
SPLITS = ("train", "val", "test")
TIME_SPLIT = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
_SCAN_BLOCK = 1 << 16  # frames read at a time while indexing


def split_key(key, epoch: int) -> tuple[int, int]:
    """An example key from a sampler: an index ``i`` (at ``epoch``) or an ``(epoch, i)`` pair."""
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(epoch), int(key)


@dataclass
class FileInfo:
    """One indexed file: ``path`` relative to the root; ``why`` is empty for usable files."""

    path: str
    size: int
    mtime_ns: int
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0
    peak: float = 0.0
    why: str = ""


def _probe(path: Path, rel: str, st: os.stat_result) -> FileInfo:
    """Header and one streaming pass (peak, finiteness) over a file, a block at a time."""
    import soundfile as sf

    info = FileInfo(rel, st.st_size, st.st_mtime_ns)
    try:
        with sf.SoundFile(str(path)) as f:
            info.frames, info.sample_rate, info.channels = f.frames, f.samplerate, f.channels
            peak, finite = 0.0, True
            if info.frames > 0:
                for block in f.blocks(blocksize=_SCAN_BLOCK, dtype="float32", always_2d=True):
                    if not np.isfinite(block).all():
                        finite = False
                        break
                    if block.size:
                        peak = max(peak, float(np.abs(block).max()))
    except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
        info.why = f"unreadable ({exc.__class__.__name__}: {exc})"
        return info
    info.peak = peak
    if info.frames <= 0:
        info.why = "empty"
    elif not finite:
        info.why = "contains NaN or Inf"
    return info


class FolderIndex:
    """The audio files below ``root`` (searched recursively), probed once and cached.

    ``cache_dir``: where the index is kept (``folder-index-<hash of the root>.json``); ``None``
    keeps nothing. Entries are reused while a file's size and modification time are unchanged.
    ``files``: the usable files; ``skipped``: how many were not (one warning each).
    """

    def __init__(self, root: str | Path, cache_dir: Optional[str | Path] = ".cache/dynfx",
                 silence_db: float = -60.0, max_peak: float = MAX_PEAK, progress: bool = True):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            what = "is a file, not a folder" if self.root.exists() else "does not exist"
            raise ValueError(f"audio folder {str(self.root)!r} {what}")
        paths = sorted(p for p in self.root.rglob("*")
                       if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        cache_path = None
        if cache_dir is not None:
            digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:16]
            cache_path = Path(cache_dir) / f"folder-index-{digest}.json"
        cached = self._load(cache_path)
        entries: list[FileInfo] = []
        todo = []
        for p in paths:
            rel = p.relative_to(self.root).as_posix()
            st = p.stat()
            old = cached.get(rel)
            if old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns:
                entries.append(old)
            else:
                todo.append((len(entries), p, rel, st))
                entries.append(None)  # type: ignore[arg-type]
        if todo:
            bar = None
            if progress and len(todo) >= 50:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(todo), desc=f"indexing {self.root.name}", unit="file")
            for slot, p, rel, st in todo:
                entries[slot] = _probe(p, rel, st)
                if bar:
                    bar.update()
            if bar:
                bar.close()
        if cache_path is not None and (todo or len(cached) != len(entries)):
            self._save(cache_path, entries)
        self.files: list[FileInfo] = []
        self.skipped = 0
        silence = 10 ** (silence_db / 20)
        for e in entries:
            why = e.why
            if not why and e.peak > max_peak:
                why = f"absurd amplitude (peak {e.peak:.3g} > {max_peak:g})"
            elif not why and e.peak < silence:
                why = f"digital silence (peak below {silence_db:g} dBFS)"
            if why:
                self.skipped += 1
                warnings.warn(f"skipping {self.root / e.path}: {why}", stacklevel=2)
            else:
                self.files.append(e)
        if not self.files:
            raise ValueError(
                f"no usable audio file ({'/'.join(AUDIO_EXTENSIONS)}) in folder {str(self.root)!r}"
                f" ({len(paths)} found, {self.skipped} skipped)")

    @staticmethod
    def _load(path: Optional[Path]) -> dict[str, FileInfo]:
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if data.get("version") != INDEX_VERSION:
                return {}
            return {d["path"]: FileInfo(**d) for d in data["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # a damaged index is rebuilt

    def _save(self, path: Path, entries: Sequence[FileInfo]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"version": INDEX_VERSION, "root": str(self.root.resolve()),
                                       "files": [asdict(e) for e in entries]}))
            os.replace(tmp, path)  # readers never see a half-written index
        except OSError as exc:
            warnings.warn(f"could not cache the folder index in {path}: {exc}", stacklevel=3)

    def has_split_folders(self) -> bool:
        return all((self.root / s).is_dir() for s in SPLITS)

    def split(self, split: Optional[str], split_seed: int = 0, val_fraction: float = 0.1,
              test_fraction: float = 0.1) -> list[tuple[FileInfo, float, float]]:
        """The files of ``split`` (``None``: every file, whole) as ``(file, start, stop)``, the
        part of each file (fractions of its length) that belongs to the split."""
        if split is None:
            return [(f, 0.0, 1.0) for f in self.files]
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if self.has_split_folders():
            chosen = [(f, 0.0, 1.0) for f in self.files if f.path.split("/", 1)[0] == split]
            if not chosen:
                raise ValueError(f"no usable audio file in {str(self.root / split)!r}")
            return chosen
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
                and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must be in [0, 1) and sum below 1, "
                             f"got {val_fraction} and {test_fraction}")
        if len(self.files) < 3:
            warnings.warn(f"{str(self.root)!r} has {len(self.files)} usable file(s): the splits "
                          "are by time (the first 80 % of each file trains, the next 10 % "
                          "validates, the last 10 % tests)", stacklevel=2)
            a, b = TIME_SPLIT[split]
            return [(f, a, b) for f in self.files]
        # each file's split follows from a seeded hash of its path alone, so adding or removing
        # files never moves the others; a split left empty takes the train files nearest to it
        u = {f.path: int(hashlib.sha1(f"{split_seed}:{f.path}".encode()).hexdigest()[:12], 16)
             / 16 ** 12 for f in self.files}
        parts: dict[str, list[FileInfo]] = {"train": [], "val": [], "test": []}
        for f in self.files:
            x = u[f.path]
            name = "test" if x < test_fraction else "val" if x < test_fraction + val_fraction else "train"
            parts[name].append(f)
        for name, frac in (("test", test_fraction), ("val", val_fraction)):
            if frac > 0 and not parts[name] and len(parts["train"]) > 1:
                nearest = min(parts["train"], key=lambda f: u[f.path])
                parts["train"].remove(nearest)
                parts[name].append(nearest)
        if not parts[split]:
            raise ValueError(f"the {split} split of {str(self.root)!r} is empty "
                             f"(val_fraction={val_fraction}, test_fraction={test_fraction})")
        return [(f, 0.0, 1.0) for f in parts[split]]


class FolderClips(Dataset):
    """Crops of ``num_samples`` (``clip_seconds`` at ``sample_rate``) from a folder's files,
    streamed from disk: mono or stereo files mixed to ``channels``, each crop resampled on its
    own. Example ``i`` is drawn from a generator seeded by (seed, i) (``fixed``: validation and
    test) or (seed, epoch, i) (training): a file with probability proportional to its length, a
    start, and, with ``level_db``, an RMS level (the benchmark's rule; ``None`` keeps the file's
    level). Crops quieter than ``silence_db`` are redrawn up to 8 times.

    Args:
        root: the folder, or a ready ``FolderIndex`` (shared by the splits of one run).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (every file).
    """

    def __init__(self, root, size: int, seed: int, sample_rate: int = 22050,
                 clip_seconds: float = 1.0, channels: int = 1, silence_db: float = -60.0,
                 fixed: bool = False, split: Optional[str] = None, split_seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.1,
                 level_db: Optional[Sequence[float]] = None, peak_db: float = -1.0,
                 cache_dir: Optional[str | Path] = ".cache/dynfx", num_samples: Optional[int] = None):
        index = root if isinstance(root, FolderIndex) else FolderIndex(
            root, cache_dir=cache_dir, silence_db=silence_db)
        if size < 1:
            raise ValueError(f"FolderClips: size must be at least 1, got {size}")
        self.root, self.skipped = index.root, index.skipped
        self.size, self.seed, self.fixed = int(size), int(seed), bool(fixed)
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.num_samples = int(num_samples or round(sample_rate * clip_seconds))
        self.silence_db = float(silence_db)
        self.level_db = tuple(level_db) if level_db is not None else None
        self.peak_db = float(peak_db)
        # plain lists: cheap to send to DataLoader workers
        parts = index.split(split, split_seed, val_fraction, test_fraction)
        self.paths = [str(index.root / f.path) for f, _, _ in parts]
        self.rates = [f.sample_rate for f, _, _ in parts]
        self.ranges = [(int(f.frames * a), max(int(f.frames * a) + 1, int(f.frames * b)))
                       for f, a, b in parts]
        lengths = np.array([b - a for a, b in self.ranges], dtype=np.float64)
        self.cum = np.cumsum(lengths / lengths.sum())
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def _read(self, k: int, rng: np.random.Generator) -> torch.Tensor:
        """A crop of file ``k`` at a random start within its range, at ``sample_rate``."""
        import soundfile as sf

        sr, (a, b) = self.rates[k], self.ranges[k]
        need = int(math.ceil(self.num_samples * sr / self.sample_rate))
        # resampled crops start on the grid where both rates' samples coincide (every
        # sr / gcd frames), so a crop equals the same stretch of the whole file resampled
        step = sr // math.gcd(sr, self.sample_rate)
        margin = 0 if sr == self.sample_rate else step * -(-64 // step)  # resampler context
        start = a + int(rng.integers(0, max(1, b - a - need + 1)))
        start -= start % step
        if start < a:
            start += step
        lo, hi = max(0, start - margin), min(b + margin, start + need + margin)
        with sf.SoundFile(self.paths[k]) as f:
            f.seek(lo)
            data = f.read(hi - lo, dtype="float32", always_2d=True)
        audio = torch.from_numpy(np.ascontiguousarray(data.T))
        if audio.shape[0] != self.channels:
            audio = audio.mean(dim=0, keepdim=True).expand(self.channels, -1)
        head = start - lo
        if sr != self.sample_rate:
            import torchaudio.functional as AF

            audio = AF.resample(audio.contiguous(), sr, self.sample_rate)
            head = int(round(head * self.sample_rate / sr))
        audio = audio[:, head:head + self.num_samples]
        if audio.shape[-1] < self.num_samples:  # files shorter than a clip are zero-padded
            audio = torch.nn.functional.pad(audio, (0, self.num_samples - audio.shape[-1]))
        return audio.contiguous()

    def __getitem__(self, key) -> torch.Tensor:
        epoch, i = split_key(key, self.epoch)
        seed = [self.seed, i] if self.fixed else [self.seed, epoch, i]
        rng = np.random.default_rng([*seed, 23])
        from .pool import apply_level, first_audible

        def draw():
            k = min(int(np.searchsorted(self.cum, rng.random(), side="right")), len(self.paths) - 1)
            return self._read(k, rng)

        crop = first_audible(draw, self.silence_db)  # silent crops are redrawn (bounded)
        if self.level_db is not None:
            crop = torch.from_numpy(apply_level(crop.numpy(), rng, self.level_db, self.peak_db))
        return crop

