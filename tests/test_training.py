"""The training framework: configs compose, every processor trains a step, evaluate/predict work,
resume continues, multirun, folder data, wandb offline, metrics, the generator's determinism."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

import dynfx
from models.data.datasets import FolderClips
from models.data.synth import KINDS, SynthConfig, generate_clip
from models.metrics import gain_mae_db, param_errors, si_sdr

ROOT = Path(__file__).resolve().parent.parent
CONF = str(ROOT / "conf")
# the dynfx processors; conf/processor/plugin_*.yaml are the third-party plugin targets
# (models/plugins.py, tests/test_plugins.py)
PROCESSORS = sorted(p.stem for p in (ROOT / "conf" / "processor").glob("*.yaml")
                    if not p.stem.startswith("plugin_"))
PLUGIN_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "processor").glob("plugin_*.yaml"))


def _compose(overrides, name="train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=False)


def _fdr_overrides(tmp_path, *extra):
    return ["debug=fdr", f"run_dir={tmp_path}", *extra]


def test_every_processor_class_has_a_config():
    def snake(name):
        out = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
        return out.replace("multi_band", "multiband")

    assert sorted(snake(c.__name__) for c in dynfx.PROCESSORS) == PROCESSORS


@pytest.mark.parametrize("name", PLUGIN_CONFIGS)
def test_plugin_target_configs_instantiate(name):
    from models.plugins import PluginProcessor

    p = instantiate(_compose([f"processor={name}", "run_dir=."]).processor)
    assert isinstance(p, PluginProcessor) and p.count_num_parameters() >= 2


@pytest.mark.parametrize("proc", PROCESSORS)
def test_every_processor_knee_smoothing_combination_instantiates(proc):
    knees = [None] if proc == "transient_shaper" else ["hard", "quadratic", "exponential"]
    for knee in knees:
        for smooth in ("ballistics", "iir"):
            over = [f"processor={proc}", f"processor.smooth_type={smooth}", "run_dir=."]
            if knee:
                over.append(f"processor.knee_type={knee}")
            cfg = _compose(over)
            p = instantiate(cfg.processor)
            assert isinstance(p, dynfx.DynamicsProcessor)
            assert p.smooth_type == smooth and (knee is None or p.knee_type == knee)


def test_wrong_group_option_lists_valid_options():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        _compose(["processor=compresor"])
    assert "compressor" in str(e.value) and "limiter" in str(e.value)


@pytest.mark.parametrize("input_mode", ["wet", "dry_wet"])
@pytest.mark.parametrize("proc", PROCESSORS)
def test_fast_dev_run(proc, input_mode, tmp_path):
    from models.pipeline import train

    encoder = "envelope" if input_mode == "wet" else "mel_env"
    cfg = _compose(_fdr_overrides(tmp_path, f"processor={proc}", f"input_mode={input_mode}",
                                  f"encoder={encoder}", "data.clip_seconds=0.25"))
    results = train(cfg)
    assert math.isfinite(results["model/mrstft"]) and math.isfinite(results["mean/mrstft"])
    assert (tmp_path / "metrics.json").exists()


def _train_tiny(tmp_path, *extra):
    from models.pipeline import train

    cfg = _compose([f"run_dir={tmp_path}", "encoder=envelope", "data.clip_seconds=0.25",
                    "data.train_size=8", "data.val_size=4", "data.test_size=4",
                    "data.batch_size=4", "trainer.max_epochs=2", "logger=csv", *extra])
    return train(cfg), cfg


def test_evaluate_and_predict_on_a_trained_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    from models.data.io import save_audio
    from models.pipeline import evaluate, predict

    _train_tiny(tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    ev_dir = tmp_path / "eval"
    cfg = _compose([f"ckpt_path={ckpt}", f"run_dir={ev_dir}", "wandb=true"], name="evaluate")
    results = evaluate(cfg)
    assert list((ev_dir / "wandb").glob("offline-run-*")), "evaluate with wandb=true logs offline"
    for name in ("metrics.json", "metrics.csv", "results.md", "params_true_vs_pred.png",
                 "curves.png", "example0_dry.wav", "example0_target.wav",
                 "example0_prediction.wav"):
        assert (ev_dir / name).exists(), name
    assert json.loads((ev_dir / "metrics.json").read_text()) == pytest.approx(results)
    # predict on "a user's recording": a clip compressed with known settings
    x = torch.from_numpy(generate_clip(SynthConfig(22050, 0.5), 5, 0)[0])
    comp = dynfx.Compressor(22050)
    wet = comp(x[None], dsp_params={"threshold_db": -30.0, "ratio": 4.0, "knee_db": 6.0,
                                    "attack_ms": 5.0, "release_ms": 100.0, "makeup_db": 3.0})[0]
    save_audio(tmp_path / "dry.wav", x, 22050)
    save_audio(tmp_path / "wet.wav", wet, 22050)
    cfg = _compose(["mode=predict", f"ckpt_path={ckpt}", f"wet={tmp_path / 'wet.wav'}",
                    f"dry={tmp_path / 'dry.wav'}", f"output={tmp_path / 'pred.json'}",
                    f"run_dir={tmp_path}"], name="evaluate")
    settings = predict(cfg)
    assert set(settings) == set(comp.param_names)
    for name, spec in comp.params.items():
        assert spec.min_val - 1e-6 <= settings[name] <= spec.max_val + 1e-6
    assert json.loads((tmp_path / "pred.json").read_text()) == pytest.approx(settings)


def test_resume_from_last_continues_the_step_count(tmp_path):
    _train_tiny(tmp_path, "trainer.max_epochs=1")
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    _train_tiny(tmp_path, "trainer.max_epochs=2", "ckpt_path=last")
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 0 and second["epoch"] == 1
    assert second["global_step"] == 2 * first["global_step"] > 0
    assert set(first["rng_states"]) >= {"torch", "numpy", "python"}
    assert first["optimizer_states"] and second["optimizer_states"]


def test_init_from_starts_from_the_weights_with_a_fresh_schedule(tmp_path):
    from models.checkpoint import CheckpointError

    _train_tiny(tmp_path / "base", "trainer.max_epochs=1")
    base = torch.load(tmp_path / "base" / "checkpoints" / "last.ckpt", weights_only=False)
    # lr 0: the fine-tuned weights must be exactly the base's after an epoch
    _train_tiny(tmp_path / "tuned", "trainer.max_epochs=1", "optimizer.lr=0.0",
                f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")
    tuned = torch.load(tmp_path / "tuned" / "checkpoints" / "last.ckpt", weights_only=False)
    assert tuned["epoch"] == 0 and tuned["global_step"] == base["global_step"]
    for k, v in base["state_dict"].items():
        assert torch.equal(tuned["state_dict"][k], v), k
    info = "dynfx_train_info"
    assert tuned[info]["train_examples"] == 2 * base[info]["train_examples"] > 0
    assert tuned[info]["train_seconds"] > base[info]["train_seconds"]
    # another processor's weights do not fit: one clear error
    with pytest.raises(CheckpointError, match="do not fit"):
        _train_tiny(tmp_path / "other", "trainer.max_epochs=1", "processor=noise_gate",
                    f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(ValueError, match="exclude each other"):
        _train_tiny(tmp_path / "tuned", "trainer.max_epochs=2", "ckpt_path=last",
                    f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")


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


def test_wandb_offline_run_leaves_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    _train_tiny(tmp_path, "logger=wandb", "trainer.max_epochs=1")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, list(tmp_path.rglob("*"))[:20]
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


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


def test_generator_is_deterministic_per_seed():
    cfg = SynthConfig(22050, 0.5)
    for kind in KINDS:
        a, _ = generate_clip(cfg, 7, 3, kind)
        b, _ = generate_clip(cfg, 7, 3, kind)
        c, _ = generate_clip(cfg, 8, 3, kind)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        rms_db = 20 * np.log10(np.sqrt(np.mean(a**2)))
        assert -30.5 <= rms_db <= -5.5 and np.abs(a).max() <= 10 ** (-1 / 20) + 1e-6


def test_metrics_against_hand_computed_values():
    comp = dynfx.Compressor()
    true = torch.zeros(1, 6, dtype=torch.float64)
    pred = torch.zeros(1, 6, dtype=torch.float64)
    pred[0, 0] = 0.5  # threshold -60 -> -30 dB
    pred[0, 1] = 1.0  # ratio 1 -> 20
    err = param_errors(comp, pred, true)
    assert err["mae/threshold_db"].item() == pytest.approx(30.0)
    assert err["mae_norm/threshold_db"].item() == pytest.approx(0.5)
    assert err["mae/ratio"].item() == pytest.approx(19.0)
    assert err["log_err/ratio"].item() == pytest.approx(math.log(20.0))
    ref = torch.tensor([[[1.0, -1.0, 2.0, 0.0]]])
    noise = torch.tensor([[[0.1, 0.1, -0.1, -0.1]]])
    # by hand: centred ref [0.5, -1.5, 1.5, -0.5] (energy 5), <noise, ref> = -0.2, so the
    # projection scale is 0.96: target energy 0.96^2 * 5 = 4.608, residual
    # [0.12, 0.04, -0.04, -0.12] (energy 0.032); SI-SDR = 10 log10(4.608 / 0.032) = 10 log10(144)
    assert si_sdr(ref + noise, ref).item() == pytest.approx(10 * math.log10(144.0), rel=1e-5)
    assert si_sdr(3.0 * ref, ref).item() > 60  # scale-invariant
    g1 = torch.tensor([[0.0, -10.0, -300.0]])
    g2 = torch.tensor([[-2.0, -10.0, -100.0]])
    assert gain_mae_db(g1, g2).item() == pytest.approx(2.0 / 3.0)


def test_validation_and_test_sets_are_fixed_by_seed():
    from models.data.datamodule import EffectDataModule

    def items():
        dm = EffectDataModule(train_size=2, val_size=3, test_size=3, clip_seconds=0.2,
                              num_params=6)
        dm.setup("test")
        return [dm.splits["test"][i] for i in range(3)]

    a, b = items(), items()
    for x, y in zip(a, b):
        assert torch.equal(x["dry"], y["dry"]) and torch.equal(x["norm_params"], y["norm_params"])


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


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path):
    from models.module import _numpy_state_from_plain, _numpy_state_to_plain

    np.random.seed(123)
    state = _numpy_state_to_plain(np.random.get_state())
    torch.save({"s": state}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["s"]  # as Lightning loads it
    expected = np.random.random(5)
    np.random.set_state(_numpy_state_from_plain(loaded))
    assert np.array_equal(np.random.random(5), expected)
