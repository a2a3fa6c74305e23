"""Training must not lie: non-finite steps are skipped and counted, a diverged run stops with a
clear message and a non-zero exit, checkpoints are written atomically and only with finite
weights, resume falls back to the newest intact checkpoint, JSON output is valid JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import (CheckpointError, FiniteModelCheckpoint, atomic_checkpoint_io,
                               atomic_torch_save, check_finite_state, finite_or_none, load_state)
from models.pipeline import _resolve_ckpt

ROOT = Path(__file__).resolve().parent.parent


def _train(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "encoder=envelope", "data.train_size=32",
         "data.val_size=4", "data.test_size=4", "data.batch_size=4", "trainer.max_epochs=2",
         f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=600)


def _assert_no_bad_outputs(run: Path):
    for ckpt in (run / "checkpoints").glob("*.ckpt") if (run / "checkpoints").exists() else []:
        check_finite_state(load_state(ckpt)["state_dict"])  # raises if a weight is NaN/Inf
    assert not list(run.rglob("*.tmp-*"))
    if (run / "metrics.json").exists():
        json.loads((run / "metrics.json").read_text(), parse_constant=pytest.fail)


def test_a_diverging_run_stops_with_a_clear_error(tmp_path):
    out = _train(tmp_path, "model.optimizer.lr=1e3")
    assert out.returncode == 3, out.stderr[-2000:]
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "training stopped" in errors[0] and "in a row" in errors[0]
    assert "skipped" in out.stderr  # the counted warnings before the stop
    _assert_no_bad_outputs(tmp_path / "run")


def test_absurd_amplitude_audio_does_not_train_silently(tmp_path):
    import soundfile as sf

    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "huge.wav", (1e30 * np.random.default_rng(0).standard_normal(44100))
             .astype(np.float32), 22050, subtype="FLOAT")
    out = _train(tmp_path, "data=folder", f"data.root={folder}")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "error:" in out.stderr
    _assert_no_bad_outputs(tmp_path / "run")


def test_checkpoints_with_non_finite_weights_are_not_written(tmp_path):
    io = atomic_checkpoint_io()
    good = {"state_dict": {"w": torch.ones(3)}}
    io.save_checkpoint(good, tmp_path / "a.ckpt")
    assert load_state(tmp_path / "a.ckpt")["state_dict"]["w"].sum() == 3
    bad = {"state_dict": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.warns(UserWarning, match="not saving"):
        io.save_checkpoint(bad, tmp_path / "a.ckpt")
    assert torch.isfinite(load_state(tmp_path / "a.ckpt")["state_dict"]["w"]).all()
    assert not FiniteModelCheckpoint(monitor="val/loss").check_monitor_top_k(
        None, torch.tensor(float("nan")))


def test_an_interrupted_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"state_dict": {"w": torch.zeros(2)}}, path)
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        atomic_torch_save({"state_dict": {"w": torch.ones(2)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_state(path)["state_dict"]["w"].sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    atomic_torch_save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, ckpts / "epoch003.ckpt")
    (ckpts / "last.ckpt").write_bytes(b"")  # a save killed at 0 bytes
    with pytest.warns(UserWarning, match="epoch003"):
        got = _resolve_ckpt("last", tmp_path)
    assert Path(got).name == "epoch003.ckpt"
    (ckpts / "epoch003.ckpt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        _resolve_ckpt("last", tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _resolve_ckpt("last", tmp_path / "elsewhere")


def test_json_output_has_no_nan_tokens():
    data = finite_or_none({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert data == {"a": None, "b": [None, 1.5], "c": {"d": None}}
    json.dumps(data, allow_nan=False)


def test_ddp_two_processes_count_every_test_example_once(tmp_path):
    """2 CPU processes (gloo): 15 test examples (not divisible by 2) are reported as 15, and the
    baselines (independent of the weights) equal a single-process run's exactly; rank 0 alone
    prints and writes."""
    common = ["encoder=envelope", "data.train_size=8", "data.val_size=5", "data.test_size=15",
              "data.batch_size=4", "trainer.max_epochs=1"]
    runs = {}
    for name, extra in (("ddp", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]),
                        ("single", [])):
        out = subprocess.run([sys.executable, str(ROOT / "train.py"), *common, *extra,
                              f"hydra.run.dir={tmp_path / name}"],
                             capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.count("Test results (15 examples") == 1
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for key in ("noop/mrstft", "noop/si_sdr", "mean/mrstft", "mean/mae_norm/ratio",
                "mean/gain_mae_db"):
        assert runs["ddp"][key] == pytest.approx(runs["single"][key], rel=1e-6), key
