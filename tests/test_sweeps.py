"""Hydra multirun and the Optuna sweep, through the command line (subprocesses: slow, run with
`make test-all`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_multirun_two_jobs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "processor=compressor,limiter", "debug=fdr",
         "encoder=envelope", "data.clip_seconds=0.25", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        assert (tmp_path / job / "metrics.json").exists()


def test_optuna_sweep_runs_trials(tmp_path):
    proc = subprocess.run(
        [sys.executable, "train.py", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
         "debug=fdr", "encoder=envelope", "data.clip_seconds=0.25",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "optimization_results.yaml").exists()
    assert len(list(tmp_path.glob("*/metrics.json"))) == 2
