"""The streaming folder dataset: index and cache, skipped files, crops read from disk (exact and
resampled), seeded splits by file, reproducibility, workers and resume."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from models.data import folder as fd
from models.data.datamodule import EffectDataModule
from models.data.datasets import EffectPairs, EpochSampler
from models.data.folder import FolderClips, FolderIndex


def _tone(seconds: float, sr: int, freq: float = 220.0, channels: int = 1, amp: float = 0.3,
          seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = amp * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def _folder(tmp_path, n: int = 6, sr: int = 8000, seconds: float = 1.0):
    root = tmp_path / "audio"
    root.mkdir()
    for k in range(n):
        sf.write(root / f"f{k:02d}.wav", _tone(seconds, sr, 100 + 50 * k, seed=k), sr,
                 subtype="FLOAT")
    return root


def test_index_is_cached_and_refreshed_for_changed_files(tmp_path, monkeypatch):
    root = _folder(tmp_path, n=4)
    cache = tmp_path / "cache"
    probes = []
    real = fd._probe
    monkeypatch.setattr(fd, "_probe", lambda p, rel, st: probes.append(rel) or real(p, rel, st))
    idx = FolderIndex(root, cache_dir=cache)
    assert sorted(probes) == [f"f{k:02d}.wav" for k in range(4)]
    assert len(list(cache.glob("folder-index-*.json"))) == 1
    f0 = next(f for f in idx.files if f.path == "f00.wav")
    assert (f0.frames, f0.sample_rate, f0.channels) == (8000, 8000, 1)
    assert f0.peak == pytest.approx(float(np.abs(_tone(1.0, 8000, 100, seed=0)).max()), rel=1e-6)

    probes.clear()
    FolderIndex(root, cache_dir=cache)
    assert probes == []  # nothing changed: nothing decoded

    sf.write(root / "f01.wav", _tone(2.0, 8000, seed=9), 8000, subtype="FLOAT")  # changed
    sf.write(root / "new.wav", _tone(0.5, 8000, seed=8), 8000, subtype="FLOAT")  # added
    (root / "f03.wav").unlink()  # removed
    idx = FolderIndex(root, cache_dir=cache)
    assert sorted(probes) == ["f01.wav", "new.wav"]
    assert {f.path: f.frames for f in idx.files} == {"f00.wav": 8000, "f01.wav": 16000,
                                                     "f02.wav": 8000, "new.wav": 4000}


def test_bad_files_are_skipped_with_one_warning_each_and_counted(tmp_path):
    root = _folder(tmp_path, n=1)
    sr = 8000
    sf.write(root / "nan.wav", np.full(sr, np.nan, dtype=np.float32), sr, subtype="FLOAT")
    sf.write(root / "empty.wav", np.zeros((0, 1), dtype=np.float32), sr)
    sf.write(root / "silent.wav", np.zeros(sr, dtype=np.float32), sr, subtype="FLOAT")
    sf.write(root / "huge.wav", 1e30 * _tone(1.0, sr), sr, subtype="FLOAT")
    (root / "corrupt.flac").write_bytes(b"definitely not a flac file")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        idx = FolderIndex(root, cache_dir=None)
    assert idx.skipped == 5 and [f.path for f in idx.files] == ["f00.wav"]
    msgs = sorted(str(x.message) for x in w if "skipping" in str(x.message))
    assert len(msgs) == 5
    for name, why in (("nan.wav", "NaN"), ("empty.wav", "empty"), ("silent.wav", "silence"),
                      ("huge.wav", "absurd amplitude"), ("corrupt.flac", "unreadable")):
        assert any(name in m and why in m for m in msgs), (name, msgs)


def test_a_folder_without_usable_audio_is_one_clear_error(tmp_path):
    root = tmp_path / "silence"
    root.mkdir()
    for k in range(3):  # digital silence only: nothing to learn from
        sf.write(root / f"s{k}.wav", np.zeros(8000, dtype=np.float32), 8000)
    with pytest.warns(UserWarning, match="digital silence"):
        with pytest.raises(ValueError, match=f"no usable audio file.*{root.name}.*3 skipped"):
            FolderIndex(root, cache_dir=None)
    with pytest.raises(ValueError, match="does not exist"):
        FolderIndex(tmp_path / "missing", cache_dir=None)
    with pytest.raises(ValueError, match="is a file"):
        FolderIndex(root / "s0.wav", cache_dir=None)


def test_crops_are_exact_slices_read_by_seeking(tmp_path, monkeypatch):
    sr, n = 8000, 1000
    root = tmp_path / "one"
    root.mkdir()
    data = _tone(10.0, sr, channels=2, seed=3)
    sf.write(root / "long.wav", data, sr, subtype="FLOAT")
    reads = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **k):
        reads.append(frames)
        return real_read(self, frames, *a, **k)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    ds = FolderClips(root, size=8, seed=1, sample_rate=sr, num_samples=n, channels=2,
                     cache_dir=None)
    mono = FolderClips(root, size=8, seed=1, sample_rate=sr, num_samples=n, channels=1,
                       cache_dir=None)
    reads.clear()
    for i in range(8):
        crop = ds[i]
        assert crop.shape == (2, n) and crop.dtype == torch.float32
        hits = [s for s in range(data.shape[0] - n + 1)
                if np.array_equal(data[s:s + n, 0], crop[0].numpy())]
        assert len(hits) == 1  # an exact slice of the file
        assert torch.equal(mono[i][0], crop.mean(dim=0))  # same draw, mixed to mono
    assert reads and max(reads) == n  # only the crop was read, never the whole file


def test_resampled_crops_match_the_resampled_file(tmp_path):
    import torchaudio.functional as AF

    src, dst, n = 16000, 22050, 4096
    root = tmp_path / "rs"
    root.mkdir()
    data = _tone(3.0, src, freq=440.0, seed=4)[:, 0]
    sf.write(root / "a.wav", data, src, subtype="FLOAT")
    whole = AF.resample(torch.from_numpy(data), src, dst).numpy()
    ds = FolderClips(root, size=4, seed=2, sample_rate=dst, num_samples=n, cache_dir=None)
    for i in range(4):
        crop = ds[i][0].numpy()
        assert crop.shape == (n,)
        # the best-aligned stretch of the whole-file resampling, away from the crop's edges
        inner = crop[64:-64]
        errs = [np.abs(whole[s + 64:s + n - 64] - inner).max()
                for s in range(0, whole.size - n + 1)]
        assert min(errs) < 2e-3


def test_crops_and_settings_are_seeded_by_seed_epoch_and_index(tmp_path):
    root = _folder(tmp_path)
    kw = dict(sample_rate=8000, num_samples=800, cache_dir=None)
    a = FolderClips(root, 6, seed=5, **kw)
    b = FolderClips(root, 6, seed=5, **kw)
    for i in range(6):
        assert torch.equal(a[i], b[i])
        assert torch.equal(a[(3, i)], b[(3, i)])
    assert not torch.equal(a[(0, 0)], a[(1, 0)])  # training: new crops every epoch
    fixed = FolderClips(root, 6, seed=5, fixed=True, **kw)
    assert torch.equal(fixed[(0, 2)], fixed[(7, 2)])  # validation/test: never change
    levelled = FolderClips(root, 6, seed=5, level_db=(-20.0, -20.0), **kw)
    rms = levelled[0].square().mean().sqrt()
    assert float(20 * torch.log10(rms)) == pytest.approx(-20.0, abs=1e-3)


def test_seeded_split_by_file_is_disjoint_complete_and_stable(tmp_path):
    root = _folder(tmp_path, n=30, seconds=0.2)
    idx = FolderIndex(root, cache_dir=None)
    parts = {s: {f.path for f, _, _ in idx.split(s, 0, 0.2, 0.2)} for s in ("train", "val", "test")}
    assert set.union(*parts.values()) == {f.path for f in idx.files}
    assert sum(len(p) for p in parts.values()) == 30 and all(parts.values())
    other = {s: {f.path for f, _, _ in idx.split(s, 1, 0.2, 0.2)} for s in parts}
    assert other != parts  # the split seed matters
    for k in range(30, 40):  # more files: the old ones keep their split
        sf.write(root / f"f{k:02d}.wav", _tone(0.2, 8000, seed=k), 8000, subtype="FLOAT")
    idx = FolderIndex(root, cache_dir=None)
    grown = {s: {f.path for f, _, _ in idx.split(s, 0, 0.2, 0.2)} for s in parts}
    for s in parts:
        assert parts[s] <= grown[s]
    ds = FolderClips(idx, 4, 0, sample_rate=8000, num_samples=400, split="test",
                     val_fraction=0.2, test_fraction=0.2)
    assert {p.rsplit("/", 1)[-1] for p in ds.paths} == grown["test"]


def test_split_subfolders_and_the_time_split_of_a_single_file(tmp_path):
    root = tmp_path / "sub"
    for k, s in enumerate(("train", "train", "val", "test")):
        (root / s).mkdir(parents=True, exist_ok=True)
        sf.write(root / s / f"x{k}.wav", _tone(0.5, 8000, seed=k), 8000, subtype="FLOAT")
    idx = FolderIndex(root, cache_dir=None)
    assert [f.path for f, _, _ in idx.split("train")] == ["train/x0.wav", "train/x1.wav"]
    assert [f.path for f, _, _ in idx.split("test")] == ["test/x3.wav"]

    one = _folder(tmp_path, n=1, seconds=10.0)
    idx = FolderIndex(one, cache_dir=None)
    with pytest.warns(UserWarning, match="by time"):
        ranges = {s: FolderClips(idx, 2, 0, sample_rate=8000, num_samples=400, split=s).ranges[0]
                  for s in ("train", "val", "test")}
    assert ranges == {"train": (0, 64000), "val": (64000, 72000), "test": (72000, 80000)}


def test_epoch_sampler_and_pairs_carry_the_epoch(tmp_path):
    root = _folder(tmp_path)
    clips = FolderClips(root, 6, seed=0, sample_rate=8000, num_samples=400, cache_dir=None)
    pairs = EffectPairs(clips, num_params=3, seed=0, train=True)
    s = EpochSampler(6, seed=0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert {k[0] for k in e0} == {0} and {k[0] for k in e1} == {1}
    assert sorted(k[1] for k in e1) == list(range(6)) and e0 != e1
    item = pairs[(1, 2)]
    pairs.set_epoch(1)
    same = pairs[2]  # plain indices use the dataset's own epoch
    assert item["index"] == 2 and torch.equal(item["dry"], same["dry"])
    assert torch.equal(item["norm_params"], same["norm_params"])


def _recorded_training(root, tmp_path, workers: int, epochs: int, resume=None):
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, _):
            self.seen.append((self.current_epoch, batch["index"].tolist(),
                              batch["norm_params"].clone(), batch["dry"].sum(dim=(1, 2))))
            return (self.w * batch["dry"].mean()).sum() + self.w.square().sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = EffectDataModule(source="folder", root=str(root), sample_rate=8000, clip_samples=400,
                          train_size=8, val_size=2, test_size=2, batch_size=4,
                          num_workers=workers, num_params=3, level_db=None,
                          cache_dir=str(tmp_path / "cache"))
    module = Recorder()
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False,
                        enable_checkpointing=resume is None and workers == 0,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=str(tmp_path / f"run{workers}"))
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    return module.seen, trainer


def test_workers_see_new_targets_every_epoch_and_resumes_are_exact(tmp_path):
    root = _folder(tmp_path)
    base, _ = _recorded_training(root, tmp_path, workers=0, epochs=2)
    with_workers, _ = _recorded_training(root, tmp_path, workers=2, epochs=2)
    assert len(base) == len(with_workers) == 4
    for (e, idx, p, d), (e2, idx2, p2, d2) in zip(base, with_workers):
        assert (e, idx) == (e2, idx2) and torch.equal(p, p2) and torch.equal(d, d2)
    # epoch 1 drew new settings (and crops) for the same indices
    by_epoch = {e: {i: (pp, dd) for b in base if b[0] == e for i, pp, dd in zip(b[1], b[2], b[3])}
                for e in (0, 1)}
    assert not any(torch.equal(by_epoch[0][i][0], by_epoch[1][i][0]) for i in range(8))
    # a run stopped after epoch 0 and resumed draws exactly what the uninterrupted run drew
    ckpt = next((tmp_path / "run0").rglob("*.ckpt"))
    first, trainer = _recorded_training(root, tmp_path / "r", workers=2, epochs=1)
    ckpt_path = tmp_path / "one_epoch.ckpt"
    trainer.save_checkpoint(ckpt_path)
    resumed, _ = _recorded_training(root, tmp_path / "r2", workers=2, epochs=2,
                                    resume=str(ckpt_path))
    assert ckpt.exists() and [b[0] for b in resumed] == [1, 1]
    for (e, idx, p, d), (e2, idx2, p2, d2) in zip(base[2:], resumed):
        assert (e, idx) == (e2, idx2) and torch.equal(p, p2) and torch.equal(d, d2)


def test_mix_source_joins_the_builtin_pool_and_the_folder(tmp_path):
    root = _folder(tmp_path, n=10, sr=8000, seconds=1.0)
    kw = dict(source="mix", root=str(root), sample_rate=8000, clip_samples=400, pool_size=4,
              pool_seconds=0.1, level_db=(-30.0, -10.0), cache_dir=str(tmp_path / "cache"),
              train_size=10, val_size=4, test_size=4, num_params=3, mix_fraction=0.3)
    dm = EffectDataModule(**kw)
    dm.setup("fit")
    train = dm.splits["train"]
    assert len(train) == 10
    pool_part, folder_part = train.source.parts
    assert (len(pool_part), len(folder_part)) == (7, 3)
    items = [train[(0, i)]["dry"] for i in range(10)]
    assert all(x.shape == (1, 400) for x in items)
    # the folder's crops come from its training files: tones of 100 + 50 k Hz, not the pool's
    assert torch.equal(items[8], folder_part[(0, 1)])
    assert torch.equal(items[2], pool_part[(0, 2)])
    # new crops every epoch in both parts; validation fixed across data modules
    assert not torch.equal(train[(1, 8)]["dry"], items[8])
    assert not torch.equal(train[(1, 2)]["dry"], items[2])
    dm2 = EffectDataModule(**kw)
    dm2.setup("fit")
    assert all(torch.equal(dm.splits["val"][i]["dry"], dm2.splits["val"][i]["dry"])
               for i in range(4))
    with pytest.raises(ValueError, match="mix_fraction"):
        EffectDataModule(**{**kw, "mix_fraction": 1.0})
    with pytest.raises(ValueError, match="needs data.root"):
        EffectDataModule(**{**kw, "root": None})


def test_folder_dataset_skips_bad_files_and_counts_them(tmp_path):
    import soundfile as sf

    sr = 16000
    sf.write(tmp_path / "good.wav", 0.3 * np.sin(np.arange(sr) * 0.05)[:, None].repeat(2, 1), sr)
    sf.write(tmp_path / "nan.wav", np.full(sr, np.nan, dtype=np.float32), sr, subtype="FLOAT")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), sr)
    (tmp_path / "corrupt.flac").write_bytes(b"definitely not a flac file")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = FolderClips(tmp_path, size=5, seed=0, sample_rate=22050, clip_seconds=0.2,
                         cache_dir=None)
    assert ds.skipped == 3
    assert len([x for x in w if "skipping" in str(x.message)]) == 3
    crop = ds[0]
    assert crop.shape == (1, int(0.2 * 22050)) and torch.isfinite(crop).all()
    assert crop.abs().max() > 0.1  # resampled from 16 kHz, mixed to mono, not silent


def test_folder_without_usable_files_is_a_clear_error(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....")
    with pytest.warns(UserWarning, match="skipping"):
        with pytest.raises(ValueError, match=f"no usable audio file.*{tmp_path.name}"):
            FolderClips(tmp_path, size=2, seed=0, cache_dir=None)
    with pytest.raises(ValueError, match="does not exist"):
        FolderClips(tmp_path / "missing", size=2, seed=0, cache_dir=None)
