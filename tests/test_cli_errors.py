"""User errors are one clear line, no traceback: bad sizes, lengths, channels, learning rates,
loss weights, a file given as a folder, a run folder without checkpoints, a checkpoint whose
weights do not match its saved config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from models.checkpoint import CheckpointError, user_message
from models.module import RUN_CONFIG_KEY
from models.pipeline import build, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _build(*overrides, tmp_path="."):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["debug=fdr", f"run_dir={tmp_path}",
                                                      "encoder=envelope", *overrides])
    return build(cfg), cfg


@pytest.mark.parametrize("override,match", [
    ("data.batch_size=0", "batch_size must be at least 1"),
    ("data.batch_size=-4", "batch_size must be at least 1"),
    ("data.train_size=0", "train_size must be at least 1"),
    ("data.channels=0", "channels must be at least 1"),
    ("data.clip_seconds=0", "clip length must be positive"),
    ("data.clip_samples=-5", "clip length must be positive"),
    ("model.w_stft=0 model.w_param=0 model.w_gain=0", "not all 0"),
])
def test_bad_settings_are_clear_errors(override, match):
    with pytest.raises((ValueError, InstantiationException)) as info:
        _build(*override.split())
    assert match in user_message(info.value)


def test_a_file_given_as_the_folder_is_an_error(tmp_path):
    f = tmp_path / "song.wav"
    f.write_bytes(b"RIFF")
    with pytest.raises((ValueError, InstantiationException)) as info:
        _build("data=folder", f"data.root={f}")
    assert "is a file" in user_message(info.value)


def test_a_run_folder_or_mismatched_checkpoint_is_an_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(str(tmp_path / "run"))
    (module, _), cfg = _build()
    config = OmegaConf.to_container(cfg, resolve=True)
    config["processor"] = {"_target_": "dynfx.MultiBandCompressor", "sample_rate": 22050}
    torch.save({"state_dict": module.state_dict(), RUN_CONFIG_KEY: config}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(str(tmp_path / "m.ckpt"))


@pytest.mark.parametrize("args,match", [
    (["data.batch_size=0"], "batch_size must be at least 1"),
    (["model.optimizer.lr=-1"], "learning rate"),
    (["ckpt_path=last"], "no checkpoint"),
])
def test_train_prints_one_line(tmp_path, args, match):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=fdr", "encoder=envelope",
                          f"hydra.run.dir={tmp_path / 'run'}", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr[-1500:]
    assert "Traceback" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and match in errors[0].lower()
