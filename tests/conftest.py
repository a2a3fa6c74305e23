"""Shared helpers: synthetic signals are made here, inside the tests; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import dynfx

FS = 44100
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def load_script(relpath: str, name: str):
    """A script of the repository (bench/, data/: not packages) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the training framework's configs (Hydra), composed in-process ------------------------------
CONF = str(ROOT / "conf")

import models.configs  # noqa: E402,F401 - the processor entries generated from dynfx.PROCESSORS


def compose_config(overrides, name="train"):
    """The composed Hydra config ``conf/<name>.yaml`` with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=False)


def fdr_overrides(tmp_path, *extra):
    """A one-batch run (``debug=fdr``) writing into ``tmp_path``."""
    return ["debug=fdr", f"run_dir={tmp_path}", *extra]


def train_tiny(tmp_path, *extra):
    """Train a tiny run (8 clips of 0.25 s, 2 epochs) into ``tmp_path``: (results, config)."""
    from models.pipeline import train

    cfg = compose_config([f"run_dir={tmp_path}", "encoder=envelope", "data.clip_seconds=0.25",
                          "data.train_size=8", "data.val_size=4", "data.test_size=4",
                          "data.batch_size=4", "trainer.max_epochs=2", "logger=csv", *extra])
    return train(cfg), cfg


# every processor class, from the package's one list: multi-band classes have a per-band table,
# single-band dynamics a gain computer of the registry
ALL = dynfx.PROCESSORS
MULTI = tuple(c for c in ALL if hasattr(c, "band_table"))
SINGLE = tuple(c for c in ALL if c not in MULTI and hasattr(c, "gain_computer"))
UNBANDED = tuple(c for c in ALL if c not in MULTI)


def neutral_dsp(proc) -> dict:
    """Settings that leave audio below 0 dBFS untouched: ratio 1, makeup 0, gate range 0, shaper
    0 dB; a limiter (no ratio 1) gets threshold 0 dB and knee 0 instead."""
    out = mid_dsp(proc)
    for name, spec in proc.params.items():
        base = name.split("_", 1)[1] if name.startswith("band") else name
        if base in ("makeup_db", "range_db", "attack_db", "sustain_db"):
            out[name] = 0.0
        elif base == "ratio" and spec.min_val == 1.0:
            out[name] = 1.0
        elif base == "ratio":
            prefix = name[: -len("ratio")]
            out[prefix + "threshold_db"] = 0.0
            out[prefix + "knee_db"] = 0.0
    return out


def mid_dsp(proc) -> dict:
    """Every parameter at the middle of its normalised range."""
    return {
        n: p.denormalize(torch.tensor(0.5, dtype=torch.float64)).item()
        for n, p in proc.params.items()
    }


def level_sweep(
    batch: int = 2,
    channels: int = 2,
    seconds: float = 0.25,
    fs: int = FS,
    lo_db: float = -100.0,
    hi_db: float = 0.0,
    dtype=torch.float64,
    seed: int = 0,
) -> torch.Tensor:
    """Broadband noise whose level rises from lo_db to hi_db and falls back (crosses every
    threshold of every processor), (B, C, T)."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * fs)
    t = torch.linspace(0.0, 1.0, n, dtype=dtype)
    level = lo_db + (hi_db - lo_db) * (1.0 - (2.0 * t - 1.0).abs())
    noise = torch.randn(batch, channels, n, generator=g, dtype=dtype) / math.sqrt(2.0)
    return noise * torch.pow(10.0, level / 20.0)


def drum_hit(fs: int = FS, onset_s: float = 0.05, length_s: float = 0.5, channels: int = 2):
    """A synthetic drum hit: a pitched body with an 80 ms decay plus a short noise click.
    Returns (x of shape (1, C, T) float64, onset sample)."""
    g = torch.Generator().manual_seed(1)
    onset = int(onset_s * fs)
    n = int(length_s * fs)
    t = torch.arange(n - onset, dtype=torch.float64) / fs
    body = torch.sin(2 * math.pi * (160.0 + 80.0 * torch.exp(-t / 0.03)) * t) * torch.exp(-t / 0.08)
    click = 0.5 * torch.randn(n - onset, generator=g, dtype=torch.float64) * torch.exp(-t / 0.008)
    x = torch.zeros(1, channels, n, dtype=torch.float64)
    for c in range(channels):
        x[0, c, onset:] = (0.5 - 0.05 * c) * (body + click)
    return x, onset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
