"""Checkpoints never run code: pickled payloads and foreign ``_target_`` entries in the saved
config are refused before anything runs; missing, corrupt and non-finite checkpoints are one clear
error line."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from models.checkpoint import CheckpointError, check_targets
from models.module import RUN_CONFIG_KEY
from models.pipeline import build, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


class _Payload:
    """Unpickling this touches a file: the proof that a checkpoint ran code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _checkpoint(tmp_path, **extra) -> tuple[Path, dict]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["debug=fdr", f"run_dir={tmp_path}",
                                                      "encoder=envelope"])
    module, _ = build(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    state = {"state_dict": module.state_dict(), RUN_CONFIG_KEY: config, **extra}
    path = tmp_path / "model.ckpt"
    torch.save(state, path)
    return path, config


def test_a_clean_checkpoint_loads(tmp_path):
    path, _ = _checkpoint(tmp_path)
    module, cfg = load_checkpoint(str(path))
    assert cfg.input_mode == "dry_wet" and not module.training


def test_a_checkpoint_from_before_the_model_group_loads(tmp_path):
    """Run configs saved with a ``loss`` group and a top-level ``optimizer`` (checkpoints
    written before the ``model`` group) load with the same module settings."""
    _, config = _checkpoint(tmp_path)
    old = {k: v for k, v in config.items() if k != "model"}
    model = dict(config["model"])
    old["optimizer"] = {**model.pop("optimizer"), "lr": 3.0e-4}
    old["loss"] = {**model, "w_gain": 0.25}
    module, _ = build(OmegaConf.create(config))
    torch.save({"state_dict": module.state_dict(), RUN_CONFIG_KEY: old}, tmp_path / "old.ckpt")
    module, cfg = load_checkpoint(str(tmp_path / "old.ckpt"))
    assert "loss" not in cfg and cfg.model.w_gain == 0.25 and cfg.model.optimizer.lr == 3.0e-4
    assert module.weights["gain"] == 0.25 and module.optimizer_factory.keywords["lr"] == 3.0e-4


def test_pickled_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path, _ = _checkpoint(tmp_path, evil=_Payload(str(marker)))
    with pytest.raises(CheckpointError, match="only pickle"):
        load_checkpoint(str(path))
    assert not marker.exists()


def test_foreign_target_in_the_saved_config_builds_nothing(tmp_path):
    marker = tmp_path / "created_by_open"
    path, config = _checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state[RUN_CONFIG_KEY]["encoder"] = {"_target_": "builtins.open", "file": str(marker),
                                        "mode": "w"}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="builtins.open"):
        load_checkpoint(str(path))
    assert not marker.exists()
    # nested and listed targets are found too
    with pytest.raises(CheckpointError, match=r"a\.b\[1\]"):
        check_targets({"a": {"b": [1, {"_target_": "pathlib.Path.touch"}]}})
    check_targets({"p": {"_target_": "dynfx.Compressor"}, "o": {"_target_": "torch.optim.Adam"},
                   "t": {"_target_": "lightning.Trainer"}})
    with pytest.raises(CheckpointError):  # an exact name is not a prefix
        check_targets({"t": {"_target_": "lightning.TrainerEvil"}})


def test_non_finite_missing_and_corrupt_checkpoints_are_clear_errors(tmp_path):
    path, _ = _checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] = state["state_dict"][name].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(str(tmp_path / "nan.ckpt"))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "missing.ckpt"))
    data = path.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(tmp_path / "cut.ckpt"))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(str(tmp_path / "empty.ckpt"))


def test_predict_with_a_payload_checkpoint_is_one_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path, _ = _checkpoint(tmp_path, evil=_Payload(str(marker)))
    wav = tmp_path / "x.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(22050)).astype("float32"),
             22050)
    out = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "mode=predict", f"ckpt_path={path}",
         f"wet={wav}", f"dry={wav}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint") and "pickle" in lines[0]
    assert not marker.exists()
