"""Training runs in-process: every processor trains a step in both input modes, evaluate and
predict work on a checkpoint, resume continues, init_from fine-tunes, wandb logs offline, RNG
states survive a checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import dynfx
from models.data.synth import SynthConfig, generate_clip

from .conftest import compose_config, fdr_overrides, train_tiny
from .test_configs import PROCESSORS


@pytest.mark.parametrize("input_mode", ["wet", "dry_wet"])
@pytest.mark.parametrize("proc", PROCESSORS)
def test_fast_dev_run(proc, input_mode, tmp_path):
    from models.pipeline import train

    encoder = "envelope" if input_mode == "wet" else "mel_env"
    cfg = compose_config(fdr_overrides(tmp_path, f"processor={proc}", f"input_mode={input_mode}",
                                  f"encoder={encoder}", "data.clip_seconds=0.25"))
    results = train(cfg)
    assert math.isfinite(results["model/mrstft"]) and math.isfinite(results["mean/mrstft"])
    assert (tmp_path / "metrics.json").exists()


def test_evaluate_and_predict_on_a_trained_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    from models.data.io import save_audio
    from models.pipeline import evaluate, predict

    train_tiny(tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    ev_dir = tmp_path / "eval"
    cfg = compose_config([f"ckpt_path={ckpt}", f"run_dir={ev_dir}", "logger=wandb"],
                         name="evaluate")
    results = evaluate(cfg)
    assert list((ev_dir / "wandb").glob("offline-run-*")), "evaluate with logger=wandb logs offline"
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
    cfg = compose_config(["mode=predict", f"ckpt_path={ckpt}", f"wet={tmp_path / 'wet.wav'}",
                    f"dry={tmp_path / 'dry.wav'}", f"output={tmp_path / 'pred.json'}",
                    f"run_dir={tmp_path}"], name="evaluate")
    settings = predict(cfg)
    assert set(settings) == set(comp.param_names)
    for name, spec in comp.params.items():
        assert spec.min_val - 1e-6 <= settings[name] <= spec.max_val + 1e-6
    assert json.loads((tmp_path / "pred.json").read_text()) == pytest.approx(settings)


def test_the_report_outputs_are_the_tests_own(tmp_path):
    """What evaluate's report draws (test_outputs) equals an independent pass over the same
    test examples: targets rendered at the true settings, the (refined) estimate, its render."""
    import lightning as L
    from hydra.utils import instantiate

    from models.pipeline import load_checkpoint

    train_tiny(tmp_path / "run", "model.refine_steps=3")
    module, run_cfg = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    data = instantiate(run_cfg.data, num_params=module.processor.count_num_parameters())
    module.keep_test_examples = 2
    L.Trainer(logger=False, enable_checkpointing=False, inference_mode=False,
              enable_progress_bar=False, default_root_dir=str(tmp_path)).test(
        module, datamodule=data, verbose=False)
    out = module.test_outputs()
    test = data.splits["test"]
    assert out["index"].tolist() == list(range(len(test))) and len(out["dry"]) == 2
    dry = torch.stack([test[i]["dry"] for i in range(len(test))])
    true = torch.stack([test[i]["norm_params"] for i in range(len(test))])
    wet, gain = module.make_target(dry, true)
    pred = module.estimate(wet, dry)
    y, gain_pred = module.render_target(dry, pred)
    assert torch.equal(out["true"], true) and torch.allclose(out["pred"], pred, atol=1e-6)
    assert torch.equal(out["dry"], dry[:2]) and torch.allclose(out["wet"], wet[:2])
    assert torch.allclose(out["gain_true"], gain[:2])
    assert torch.allclose(out["y"], y[:2], atol=1e-5)
    assert torch.allclose(out["gain_pred"], gain_pred[:2], atol=1e-3)


def test_resume_from_last_continues_the_step_count(tmp_path):
    train_tiny(tmp_path, "trainer.max_epochs=1")
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    train_tiny(tmp_path, "trainer.max_epochs=2", "ckpt_path=last")
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["epoch"] == 0 and second["epoch"] == 1
    assert second["global_step"] == 2 * first["global_step"] > 0
    assert set(first["rng_states"]) >= {"torch", "numpy", "python"}
    assert first["optimizer_states"] and second["optimizer_states"]


def test_init_from_starts_from_the_weights_with_a_fresh_schedule(tmp_path):
    from models.checkpoint import CheckpointError

    train_tiny(tmp_path / "base", "trainer.max_epochs=1")
    base = torch.load(tmp_path / "base" / "checkpoints" / "last.ckpt", weights_only=False)
    # lr 0: the fine-tuned weights must be exactly the base's after an epoch
    train_tiny(tmp_path / "tuned", "trainer.max_epochs=1", "model.optimizer.lr=0.0",
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
        train_tiny(tmp_path / "other", "trainer.max_epochs=1", "processor=noise_gate",
                    f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")
    with pytest.raises(ValueError, match="exclude each other"):
        train_tiny(tmp_path / "tuned", "trainer.max_epochs=2", "ckpt_path=last",
                    f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")


def test_last_checkpoint_follows_the_latest_epoch_not_the_best(tmp_path):
    """With lr 0 the second epoch's validation loss equals the first's (not a new best): the
    best checkpoint stays epoch 0, last.ckpt is epoch 1 (resumes continue from there)."""
    train_tiny(tmp_path, "trainer.max_epochs=2", "model.optimizer.lr=0.0")
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch*.ckpt")] == ["epoch000.ckpt"]


def test_feedback_stage_trains_on_a_frozen_first_stage(tmp_path):
    """init_from a one-stage run, then encoder.feedback=true with model.trainable=feedback: the
    new stage starts from its own (identity) init and learns; the first stage stays as it was."""
    small = ["encoder=frame", "encoder.widths=[8]", "encoder.dilations=[1,2]",
             "encoder.hidden=16"]
    train_tiny(tmp_path / "base", "trainer.max_epochs=1", *small)
    base = torch.load(tmp_path / "base" / "checkpoints" / "last.ckpt", weights_only=False)
    train_tiny(tmp_path / "fb", "trainer.max_epochs=1", *small, "encoder.feedback=true",
               "model.trainable=feedback",
               f"init_from={tmp_path / 'base' / 'checkpoints' / 'last.ckpt'}")
    fb = torch.load(tmp_path / "fb" / "checkpoints" / "last.ckpt", weights_only=False)
    for k, v in base["state_dict"].items():
        assert torch.equal(fb["state_dict"][k], v), k
    new = [k for k in fb["state_dict"] if k.startswith("encoder.feedback.")]
    assert new and all(k not in base["state_dict"] for k in new)
    assert fb["state_dict"]["encoder.feedback.head.5.bias"].abs().sum() > 0  # it learned
    with pytest.raises(ValueError, match="init_from"):  # nothing trained to build on
        train_tiny(tmp_path / "alone", "trainer.max_epochs=1", *small, "encoder.feedback=true",
                   "model.trainable=feedback")


def test_two_phase_feedback_run_matches_a_one_stage_run_then_trains_the_feedback(tmp_path):
    """feedback_from_epoch=1 of 2: the first epoch is exactly a one-epoch one-stage run (same
    schedule, same data), the second trains the feedback stage alone."""
    small = ["encoder=frame", "encoder.widths=[8]", "encoder.dilations=[1,2]",
             "encoder.hidden=16", "model.scheduler=cosine", "seed=5"]
    train_tiny(tmp_path / "one", "trainer.max_epochs=1", *small)
    one = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=False)
    train_tiny(tmp_path / "two", "trainer.max_epochs=2", *small, "encoder.feedback=true",
               "model.feedback_from_epoch=1")
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=False)
    for k, v in one["state_dict"].items():
        assert torch.allclose(two["state_dict"][k], v, rtol=0, atol=1e-6), k
    assert two["state_dict"]["encoder.feedback.head.5.bias"].abs().sum() > 0
    # the best checkpoint is chosen among the second phase's epochs only (the whole network)
    best = sorted(p.name for p in (tmp_path / "two" / "checkpoints").glob("epoch*.ckpt"))
    assert best == ["epoch001.ckpt"], best
    from hydra.errors import InstantiationException

    with pytest.raises(InstantiationException, match="feedback stage"):
        train_tiny(tmp_path / "bad", "trainer.max_epochs=2", *small,
                   "model.feedback_from_epoch=1")


def test_wandb_offline_run_leaves_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train_tiny(tmp_path, "logger=wandb", "trainer.max_epochs=1")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs, list(tmp_path.rglob("*"))[:20]
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path):
    from models.module import _numpy_state_from_plain, _numpy_state_to_plain

    np.random.seed(123)
    state = _numpy_state_to_plain(np.random.get_state())
    torch.save({"s": state}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["s"]  # as Lightning loads it
    expected = np.random.random(5)
    np.random.set_state(_numpy_state_from_plain(loaded))
    assert np.array_equal(np.random.random(5), expected)


def test_stft_crop_applies_to_training_only():
    """model.stft_crop: the MR-STFT term of a training step sees one crop of that length;
    validation sees the whole clip."""
    from models.encoders import EnvelopeEncoder
    from models.module import EffectEstimator

    proc = dynfx.Compressor(sample_rate=22050)
    enc = EnvelopeEncoder(proc.count_num_parameters(), 22050)
    module = EffectEstimator(enc, proc, w_stft=1.0, stft_crop=2048)
    seen = []

    class FakeSTFT(torch.nn.Module):
        def forward(self, y, wet):
            seen.append((y.shape[-1], wet.shape[-1]))
            return (y - wet).abs().mean()

    module.mrstft = FakeSTFT()
    module.log = lambda *a, **k: None
    batch = {"dry": torch.randn(2, 1, 8192) * 0.1,
             "norm_params": torch.rand(2, proc.count_num_parameters())}
    module._step(batch, "train")
    module._step(batch, "val")
    assert seen == [(2048, 2048), (8192, 8192)]
    with pytest.raises(ValueError, match="stft_crop"):
        EffectEstimator(enc, proc, stft_crop=-1)
