"""LightningDataModule: source clips (built-in synthetic or a folder) and seeded settings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from torch.utils.data import DataLoader

from .datasets import EffectPairs, EpochSampler, MixedClips, SyntheticClips
from .folder import FolderClips, FolderIndex
from .pool import BuiltinPool

__all__ = ["EffectDataModule"]


class EffectDataModule(L.LightningDataModule):
    """Train/val/test splits of (dry clip, normalised settings).

    Args:
        source: ``"synthetic"`` (the built-in generator, clips made once per split),
            ``"pool"`` (the built-in generator for long runs: a cached pool of clips, random
            crops at the estimation benchmark's levels, new every epoch) or ``"folder"``
            (``root`` required: streamed from disk, see ``folder.FolderClips``) or ``"mix"``
            (``pool`` and ``folder`` together: a ``mix_fraction`` share of every split from the
            folder, each from its own split of it).
        num_params: the processor's parameter count (from the processor; set by the pipeline).
        sizes: clips per split; seeds: generator seeds per split (val and test are fixed by them).
        clip_samples: clip length in samples (overrides ``clip_seconds``).
        pool_size, pool_seconds: ``pool`` source: clips in the training pool and their length
            (training crops are cut from them at random); ``level_db``: RMS level range (dBFS);
            ``cache_dir``: where generated pools and folder indexes are cached (``null``: none).
        split_seed, val_fraction, test_fraction: ``folder`` source without ``train``/``val``/
            ``test`` subfolders: the seeded split of its files. ``level_db`` ``null`` keeps the
            files' own levels.
    """

    def __init__(self, source: str = "synthetic", root: Optional[str] = None,
                 sample_rate: int = 22050, clip_seconds: float = 1.0, channels: int = 1,
                 train_size: int = 512, val_size: int = 64, test_size: int = 128,
                 seed: int = 0, batch_size: int = 16, num_workers: int = 0,
                 num_params: int = 0, pool_size: Optional[int] = None,
                 pool_seconds: Optional[float] = None, level_db=(-30.0, -10.0),
                 cache_dir: Optional[str] = ".cache/dynfx", clip_samples: Optional[int] = None,
                 split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 mix_fraction: float = 0.5):
        super().__init__()
        if source not in ("synthetic", "pool", "folder", "mix"):
            raise ValueError("data source must be 'synthetic', 'pool', 'folder' or 'mix', got "
                             f"{source!r}")
        if source in ("folder", "mix") and not root:
            raise ValueError(f"data source {source!r} needs data.root=/path/to/audio")
        if not 0.0 < float(mix_fraction) < 1.0:
            raise ValueError(f"data.mix_fraction must be in (0, 1), got {mix_fraction}")
        for name, value in (("batch_size", batch_size), ("channels", channels),
                            ("train_size", train_size), ("val_size", val_size),
                            ("test_size", test_size)):
            if int(value) < 1:
                raise ValueError(f"data.{name} must be at least 1, got {value}")
        if (clip_samples is not None and int(clip_samples) < 1) or float(clip_seconds) <= 0:
            raise ValueError(f"the clip length must be positive, got clip_seconds={clip_seconds}, "
                             f"clip_samples={clip_samples}")
        if int(num_workers) < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if source in ("folder", "mix") and root and Path(root).exists() and not Path(root).is_dir():
            raise ValueError(f"data.root={root} is a file; it must be a folder of audio files")
        self.source, self.root = source, root
        if clip_samples:  # an exact length in samples (the benchmark's 131072) wins
            clip_seconds = int(clip_samples) / sample_rate
        self.sample_rate, self.clip_seconds, self.channels = sample_rate, clip_seconds, channels
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seeds = {"train": seed, "val": seed + 1_000_003, "test": seed + 2_000_003}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.num_params = num_params
        self.pool_size, self.pool_seconds = pool_size, pool_seconds
        self.level_db = tuple(level_db) if level_db is not None else None
        if self.level_db is None and source in ("pool", "mix"):
            raise ValueError(f"data.level_db is required for the {source} source")
        self.mix_fraction = float(mix_fraction)
        self.cache_dir = cache_dir
        self.split_seed, self.fractions = int(split_seed), (float(val_fraction), float(test_fraction))
        self.splits: dict[str, EffectPairs] = {}
        self._index: Optional[FolderIndex] = None
        self._train_sampler: Optional[EpochSampler] = None

    def _clips(self, split: str, size: Optional[int] = None, source: Optional[str] = None):
        size = self.sizes[split] if size is None else size
        source = source or self.source
        kw = dict(sample_rate=self.sample_rate, clip_seconds=self.clip_seconds,
                  channels=self.channels)
        if source == "synthetic":
            return SyntheticClips(size, self.seeds[split], **kw)
        if source == "mix":
            n_folder = min(size - 1, max(1, int(round(size * self.mix_fraction))))
            return MixedClips(self._clips(split, size - n_folder, "pool"),
                              self._clips(split, n_folder, "folder"))
        if source == "pool":
            n = int(round(self.sample_rate * self.clip_seconds))
            pool_n = int(round(self.sample_rate * (self.pool_seconds or self.clip_seconds)))
            return BuiltinPool(size, self.seeds[split], self.sample_rate, n,
                               self.channels, pool_size=self.pool_size if split == "train" else None,
                               pool_samples=pool_n, level_db=self.level_db,
                               fixed=split != "train", cache_dir=self.cache_dir)
        if self._index is None:  # indexed once, shared by the splits
            self._index = FolderIndex(self.root, cache_dir=self.cache_dir)
        return FolderClips(self._index, size, self.seeds[split], fixed=split != "train",
                           split=split, split_seed=self.split_seed,
                           val_fraction=self.fractions[0], test_fraction=self.fractions[1],
                           level_db=self.level_db, **kw)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.num_params <= 0:
            raise ValueError("EffectDataModule.num_params must be set to the processor's count")
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  None: ("train", "val", "test")}.get(stage, ("test",))
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = EffectPairs(self._clips(split), self.num_params,
                                                 self.seeds[split], train=split == "train")

    def set_epoch(self, epoch: int) -> None:
        """New training crops and settings for ``epoch`` (the sampler carries the epoch into the
        DataLoader workers; the dataset's own copy serves direct indexing)."""
        if "train" in self.splits:
            self.splits["train"].set_epoch(epoch)
        if self._train_sampler is not None:
            self._train_sampler.set_epoch(epoch)

    def _loader(self, split: str, sampler=None) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.batch_size, sampler=sampler,
                          shuffle=False, num_workers=self.num_workers, drop_last=False,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        self._train_sampler = EpochSampler(self.sizes["train"], self.seeds["train"])
        trainer = getattr(self, "trainer", None)
        self.set_epoch(trainer.current_epoch if trainer is not None else 0)  # exact on resume
        return self._loader("train", self._train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
