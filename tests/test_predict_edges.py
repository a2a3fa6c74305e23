"""predict's edge cases: too-short inputs, silent or unprocessed inputs, the output path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from models.module import RUN_CONFIG_KEY
from models.pipeline import build, predict

ROOT = Path(__file__).resolve().parent.parent
FS = 22050


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["debug=fdr", f"run_dir={tmp}",
                                                      "encoder=frame"])
    module, _ = build(cfg)
    path = tmp / "m.ckpt"
    torch.save({"state_dict": module.state_dict(),
                RUN_CONFIG_KEY: OmegaConf.to_container(cfg, resolve=True)}, path)
    return path


def _wav(path: Path, x: np.ndarray) -> Path:
    sf.write(path, x.astype(np.float32), FS)
    return path


def _cfg(ckpt, wet, dry, out):
    return OmegaConf.create({"ckpt_path": str(ckpt), "wet": str(wet), "dry": str(dry),
                             "output": str(out), "run_dir": str(Path(out).parent)})


def test_too_short_input_states_the_minimum(ckpt, tmp_path):
    x = _wav(tmp_path / "short.wav", 0.1 * np.random.default_rng(0).standard_normal(110))
    with pytest.raises(ValueError, match=r"too short.*at least \d+ samples"):
        predict(_cfg(ckpt, x, x, tmp_path / "p.json"))


def test_silent_and_unprocessed_inputs_are_flagged(ckpt, tmp_path):
    noise = 0.1 * np.random.default_rng(1).standard_normal(FS)
    dry = _wav(tmp_path / "dry.wav", noise)
    same = predict(_cfg(ckpt, dry, dry, tmp_path / "same.json"))
    assert "not determined" in same["warning"]
    silent = _wav(tmp_path / "silent.wav", np.zeros(FS))
    res = predict(_cfg(ckpt, silent, dry, tmp_path / "silent.json"))
    assert "silent" in res["warning"]
    assert "warning" in json.loads((tmp_path / "silent.json").read_text())
    loud = _wav(tmp_path / "wet.wav", 0.5 * noise)
    assert "warning" not in predict(_cfg(ckpt, loud, dry, tmp_path / "ok.json"))


def test_output_is_checked_before_any_computation(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    # the checkpoint does not even exist: the output error must come first
    with pytest.raises(ValueError, match="is a folder"):
        predict(_cfg(tmp_path / "missing.ckpt", tmp_path / "x.wav", tmp_path / "x.wav", folder))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create"):
        predict(_cfg(tmp_path / "missing.ckpt", tmp_path / "x.wav", tmp_path / "x.wav",
                     blocker / "sub" / "p.json"))


def test_output_folder_is_created(ckpt, tmp_path):
    x = _wav(tmp_path / "x.wav", 0.1 * np.random.default_rng(2).standard_normal(FS))
    out = tmp_path / "new" / "deeper" / "p.json"
    predict(_cfg(ckpt, x, x, out))
    assert out.exists()
