"""The estimation benchmark (protocol v1), the frame encoder, the clip pool and refinement:
checked against direct formulas and on tiny sets (the full N = 256 run is not a test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dynfx
from models import benchmark as bm
from models.data.pool import BuiltinPool, apply_level, generate_pool
from models.encoders import (FrameEncoder, band_levels_db, band_matrix, frame_features,
                             level_motion_profile)
from models.refine import refine_settings

from .conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


def _tone(n=131072, fs=44100, db=-20.0, f=440.0, batch=1):
    t = torch.arange(n, dtype=torch.float64) / fs
    x = (10 ** (db / 20) * np.sqrt(2) * torch.sin(2 * torch.pi * f * t)).float()
    return x.reshape(1, 1, n).repeat(batch, 1, 1)


def test_frame_level_matches_the_float64_definition():
    x = torch.randn(3, 2, 20000) * torch.linspace(0.01, 1.0, 20000)
    got = bm.frame_level_db(x)
    power = x.double().square().mean(dim=1)
    want = torch.stack([10 * torch.log10(power[:, a : a + 1024].mean(dim=1) + 1e-12)
                        for a in range(0, 20000 - 1024 + 1, 256)], dim=1)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-6)


def test_identifiability_follows_the_protocol():
    comp = dynfx.Compressor(44100)
    x = _tone(n=32768, db=-30.0, batch=2)
    # example 0: threshold at 0 dB, far above the -30 dB tone: ratio, knee, attack and release
    # change nothing; makeup always does. Example 1: threshold at -60 dB: ratio matters.
    norm = comp.normalize({"threshold_db": torch.tensor([0.0, -60.0]), "ratio": 4.0,
                           "knee_db": 0.0, "attack_ms": 5.0, "release_ms": 100.0,
                           "makeup_db": 0.0})
    ident = bm.identifiable(comp, x, norm)
    names = list(comp.param_names)
    assert ident.shape == (2, 6)
    assert ident[0, names.index("makeup_db")] and ident[1, names.index("makeup_db")]
    assert not ident[0, names.index("ratio")] and ident[1, names.index("ratio")]
    assert not ident[0, names.index("release_ms")]
    # one direction only (the training-time approximation) never claims more than both
    one = bm.identifiable(comp, x, norm, both=False)
    assert not bool((one & ~ident).any())
    # the criterion itself, recomputed by hand for (example 1, ratio, +0.05)
    moved = norm.clone()
    moved[1, 1] += 0.05
    with torch.no_grad():
        a = bm.frame_level_db(comp(x[1:], norm_params=norm[1:]))
        b = bm.frame_level_db(comp(x[1:], norm_params=moved[1:]))
    assert float((a - b).square().mean().sqrt()) >= bm.IDENT_DB


def test_active_subset_uses_the_applied_gain():
    x = _tone(n=32768, batch=2)
    gain = torch.zeros(2, 32768)
    gain[1] = -3.0
    assert bm.active(gain, x).tolist() == [False, True]


def test_settings_and_builtin_set_are_seeded_and_follow_the_level_rule():
    a = bm.settings_for("Compressor", 6, 4)
    assert torch.equal(a, bm.settings_for("Compressor", 6, 4))
    assert not torch.equal(a, bm.settings_for("Limiter", 6, 4))
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    dry = bm.builtin_set(3, num_samples=16384, progress=False)
    assert dry.shape == (3, 1, 16384)
    assert torch.equal(dry, bm.builtin_set(3, num_samples=16384, progress=False))
    rms_db = 10 * torch.log10(dry.double().square().mean(dim=(1, 2)))
    peak_db = 20 * torch.log10(dry.abs().amax(dim=(1, 2)).double())
    assert bool((peak_db <= -1.0 + 1e-4).all())
    assert bool((rms_db <= -10.0 + 1e-4).all()) and bool((rms_db >= -60).all())


def test_apply_level_scales_down_to_the_peak_limit():
    x = np.zeros((1, 1000), dtype=np.float32)
    x[0, 0] = 1.0  # all energy in one sample: the RMS target would put the peak far above 0 dB
    y = apply_level(x, np.random.default_rng(0), (-20.0, -20.0), -1.0)
    assert abs(20 * np.log10(np.abs(y).max()) + 1.0) < 1e-4


def test_summary_statistics_and_subsets():
    per = {"mrstft": np.array([1.0, 2.0, 3.0, 10.0]),
           "norm_err/ratio": np.array([0.1, 0.2, 0.3, 0.9])}
    ident = np.array([[True], [True], [False], [True]])
    act = np.array([True, False, True, True])
    recs = bm.summarize("builtin", "X", "dry_wet", "model", per, ident, act, ["ratio"])
    look = {(r["metric"], r["subset"], r["stat"]): r["value"] for r in recs}
    assert look[("mrstft", "all", "median")] == 2.5
    assert look[("mrstft", "active", "mean")] == pytest.approx(14 / 3)
    assert look[("mrstft", "all", "p90")] == pytest.approx(np.percentile([1, 2, 3, 10], 90))
    assert look[("norm_err/ratio", "identifiable", "median")] == pytest.approx(0.2)
    assert ("norm_err/ratio", "active", "median") not in look
    for r in recs:
        assert set(r) == {"set", "processor", "mode", "estimator", "metric", "subset", "stat",
                          "value"}


def test_merge_replaces_only_the_groups_run_again():
    old = [{"set": "builtin", "processor": "A", "mode": "wet", "value": 1},
           {"set": "builtin", "processor": "B", "mode": "wet", "value": 2}]
    new = [{"set": "builtin", "processor": "A", "mode": "wet", "value": 3}]
    merged = bm.merge_records(old, new)
    assert [r["value"] for r in merged] == [2, 3]


def _compressor_case(dry, true):
    """A Compressor, its output on ``dry`` at ``true`` and the middle-of-range start."""
    comp = dynfx.Compressor(44100)
    with torch.no_grad():
        wet = comp(dry, norm_params=true)
    return comp, wet, torch.full_like(true, 0.5)


@pytest.mark.parametrize("method", ["gauss-newton", "adam"])
def test_refinement_snapshots_and_convergence(method):
    torch.manual_seed(0)
    dry = (torch.randn(2, 1, 16384) * torch.linspace(0.02, 0.3, 16384)).float()
    true = torch.tensor([[0.6, 0.5, 0.3, 0.4, 0.5, 0.5], [0.7, 0.6, 0.5, 0.5, 0.4, 0.6]])
    comp, wet, init = _compressor_case(dry, true)
    times = {}
    final, snaps = refine_settings(comp, dry, wet, init, 30, 0.05, snapshots=[0, 10, 30],
                                   times=times, method=method)
    ten, _ = refine_settings(comp, dry, wet, init, 10, 0.05, method=method)
    assert torch.allclose(snaps[10], ten, atol=1e-6)  # a snapshot = running that many steps
    assert torch.equal(snaps[30], final) and torch.equal(snaps[0], init)
    assert 0 < times[10] <= times[30]

    def gain_err(u):
        with torch.no_grad():
            y = comp(dry, norm_params=u)
        return float(bm.envelope_error_db(y, wet, dry).mean())

    assert gain_err(final) < 0.5 * gain_err(init)


def test_gauss_newton_refinement_recovers_determined_settings():
    # a level ramp through the threshold: every setting but the knee shapes the gain; from the
    # middle of every range, Gauss-Newton lands on the true settings (Adam's 30 steps do not)
    torch.manual_seed(0)
    ramp = torch.logspace(-2.5, -0.3, 44100)
    bursts = 1.0 + 0.8 * torch.sign(torch.sin(torch.arange(44100) / 2000.0))
    dry = (torch.randn(2, 1, 44100) * ramp * bursts).float()
    true = torch.tensor([[0.6, 0.4, 0.3, 0.4, 0.5, 0.55], [0.75, 0.6, 0.5, 0.3, 0.4, 0.45]])
    comp, wet, init = _compressor_case(dry, true)
    gn, _ = refine_settings(comp, dry, wet, init, 30)
    adam, _ = refine_settings(comp, dry, wet, init, 30, 0.05, method="adam")
    determined = [i for i, n in enumerate(comp.param_names) if n != "knee_db"]
    gn_err = (gn - true)[:, determined].abs()
    assert gn_err.max() < 0.01, gn_err
    assert gn_err.mean() < 0.2 * (adam - true)[:, determined].abs().mean()


def test_gauss_newton_bounds_its_memory_without_changing_the_result(monkeypatch):
    # a long recording: the processor sees one row a call and the normal equations are summed
    # slice by slice; the steps are those of one call over everything
    import models.refine as mr
    torch.manual_seed(3)
    dry = (torch.randn(2, 2, 6000) * torch.linspace(0.01, 0.4, 6000)).float()
    true = torch.tensor([[0.6, 0.4, 0.3, 0.4, 0.5, 0.55], [0.7, 0.6, 0.5, 0.3, 0.4, 0.45]])
    comp, wet, init = _compressor_case(dry, true)
    whole, _ = refine_settings(comp, dry, wet, init, 6)
    monkeypatch.setattr(mr, "GN_EVAL_SAMPLES", 1)
    monkeypatch.setattr(mr, "GN_SUM_SAMPLES", 1000)
    sliced, _ = refine_settings(comp, dry, wet, init, 6)
    torch.testing.assert_close(sliced, whole, rtol=0, atol=1e-4)


def test_refinement_method_is_checked_and_auto_picks_by_size():
    from models.refine import DEFAULT_STEPS, resolve_method
    comp = dynfx.Compressor(44100)
    x = torch.zeros(1, 1, 64)
    with pytest.raises(ValueError, match="method must be one of"):
        refine_settings(comp, x, x, torch.full((1, 6), 0.5), 2, method="lbfgs")
    # auto: Gauss-Newton for the single-band processors, Adam for the multi-band ones
    assert resolve_method("auto", comp.count_num_parameters()) == "gauss-newton"
    mb = dynfx.MultiBandCompressor(44100).count_num_parameters()
    assert resolve_method("auto", mb) == "adam" and resolve_method("gauss-newton", mb) == (
        "gauss-newton")
    assert DEFAULT_STEPS == {"gauss-newton": 20, "adam": 50}


def test_frame_features_read_a_constant_gain_exactly():
    dry = _tone(n=4096, db=-20.0, f=44100 * 4 / 128)  # 4 whole periods per 128-sample frame
    wet = dry * 0.5  # -6.02 dB everywhere
    f = frame_features(wet, dry, 128) * 20.0
    assert f.shape == (1, 6, 32)
    assert torch.allclose(f[0, 2], torch.full((32,), -6.0206), atol=1e-3)  # RMS gain
    assert torch.allclose(f[0, 4], torch.full((32,), -6.0206), atol=1e-3)  # gain at the peak
    assert torch.allclose(f[0, 0], torch.full((32,), -20.0), atol=1e-3)  # dry RMS level
    assert frame_features(wet, None, 128).shape == (1, 3, 32)
    # four parts per frame: a gain step inside a frame shows in the parts, not in the frame
    step = dry.clone()
    step[..., 64 + 128 * 5 :] *= 0.25  # -12.04 dB from the middle of frame 5 on
    f4 = frame_features(step, dry, 128, sub_blocks=4) * 20.0
    assert f4.shape == (1, 12, 32)
    gains = f4[0, 7:11, 5]  # the gain at the peak of each part of frame 5
    assert torch.allclose(gains, torch.tensor([0.0, 0.0, -12.0412, -12.0412]), atol=1e-3)
    with pytest.raises(ValueError, match="divide"):
        frame_features(wet, dry, 128, sub_blocks=3)


def test_band_levels_read_a_sine_in_its_band_and_noise_power():
    m = band_matrix(12, 1024, 44100)
    assert m.shape == (12, 513) and bool((m.sum(1) >= 1).all()) and float(m.sum(0).max()) == 1.0
    t = torch.arange(44100, dtype=torch.float64) / 44100
    sine = torch.sin(2 * math.pi * 1000.0 * t)[None, None].repeat(1, 2, 1)
    lev = band_levels_db(sine, m.double(), 512, 64)[0, :, 10:60]
    band = int(lev.mean(-1).argmax())  # 1 kHz lies in the band of 937-1561 Hz
    assert torch.allclose(lev[band], torch.full_like(lev[band], -3.0103), atol=1e-3)
    assert float(lev[band - 1].max()) < -40.0 and float(lev[band + 1].max()) < -40.0
    # white noise: the bands sum to the power inside 40 Hz-16 kHz (72.5 % of 0-22.05 kHz)
    noise = torch.randn(1, 1, 44100 * 4, generator=torch.Generator().manual_seed(0)).double()
    total = (10 ** (band_levels_db(noise, m.double(), 512, 300)[0] / 10)).sum(0)[10:-10].mean()
    assert abs(float(total) - (16000 - 40) / 22050) < 0.02


def test_level_motion_profile_reads_the_rate_of_a_level_ramp():
    level = torch.linspace(-80.0, 0.0, 801, dtype=torch.float64)[None]  # +0.1 dB per frame
    prof = level_motion_profile(level).reshape(1, 4, 3, 30)
    centres = torch.linspace(-90.0, 0.0, 30)
    inner = (centres > -70) & (centres < -10)  # bins well inside the ramp
    assert torch.allclose(prof[0, 0, 1, inner] * 10.0, torch.full((int(inner.sum()),), 0.1,
                          dtype=torch.float64), atol=1e-3)  # the rise per frame
    assert float(prof[0, :, 2].abs().max()) < 1e-9  # it never falls
    # the falling ramp mirrors it, and at a 5-frame span the step is 5 x 0.1 dB
    prof_f = level_motion_profile(level.flip(-1)).reshape(1, 4, 3, 30)
    assert torch.allclose(prof_f[0, 1, 2, inner] * 10.0, torch.full((int(inner.sum()),), -0.5,
                          dtype=torch.float64), atol=1e-2)
    enc = FrameEncoder(4, 44100, input_mode="wet", stem_stride=2, wet_profile=True)
    assert enc(torch.randn(2, 1, 16384) * 0.1).shape == (2, 4)


@pytest.mark.parametrize("mode", ["dry_wet", "wet"])
def test_frame_encoder_band_traces(mode):
    enc = FrameEncoder(5, 44100, input_mode=mode, stem_stride=2, bands=6)
    x = torch.randn(2, 2, 16384) * 0.1
    feats, profile = enc._band_traces(torch.zeros(2, 0, 16384 // enc.hop), x * 0.5,
                                      x if mode == "dry_wet" else None)
    assert feats.shape == (2, 18 if mode == "dry_wet" else 6, 16384 // enc.hop)
    if mode == "dry_wet":  # the band gain of a -6 dB copy, in every frame
        assert torch.allclose(feats[:, 12:] * 20.0, torch.full_like(feats[:, 12:], -6.0206),
                              atol=1e-3)
        assert profile.shape == (2, 6 * 60)
    else:
        assert profile is None
    out = enc(x * 0.5, x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match="bands"):
        FrameEncoder(5, 44100, bands=-1)


@pytest.mark.parametrize("mode", ["dry_wet", "wet"])
def test_frame_encoder_band_split_stage(mode):
    """The second stage replaces the band settings and keeps the first stage's crossovers."""
    torch.manual_seed(0)
    enc = FrameEncoder(20, 44100, input_mode=mode, stem_stride=2, widths=(16,),
                       dilations=(1, 2), band_split=3)
    x = torch.randn(2, 1, 16384) * 0.1
    dry = x if mode == "dry_wet" else None
    out = enc(x * 0.5, dry)
    assert out.shape == (2, 20) and float(out.min()) >= 0 and float(out.max()) <= 1
    enc.band_split = 0  # the first stage alone
    first = enc(x * 0.5, dry)
    enc.band_split = 3
    assert torch.equal(out[:, 18:], first[:, 18:])  # crossovers: the first stage's
    assert not torch.allclose(out[:, :18], first[:, :18])
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match="band_split"):
        FrameEncoder(20, 44100, band_split=4)


def test_frame_encoder_feedback_stage():
    """The feedback stage starts as the identity (the first estimate), renders through the
    attached processor, and with ``trainable="feedback"`` only it learns."""
    from models.module import EffectEstimator

    torch.manual_seed(0)
    proc = dynfx.Compressor(sample_rate=44100)
    P = proc.count_num_parameters()
    enc = FrameEncoder(P, 44100, widths=(16,), dilations=(1, 2), feedback=True)
    dry = torch.randn(2, 1, 16384) * 0.1
    wet = proc(dry, norm_params=torch.rand(2, P), validate=False)
    with pytest.raises(RuntimeError, match="attach_processor"):
        enc(wet, dry)
    module = EffectEstimator(enc, proc, w_stft=0.0, trainable="feedback")
    out = enc(wet, dry)
    first, final = enc.stage_preds
    assert final is out and torch.allclose(out, first)  # zero-initialised correction
    assert not first.requires_grad and out.requires_grad  # the first stage is frozen
    # a nudged output layer moves the estimate up; the backward pass reaches the feedback
    # stage only
    with torch.no_grad():
        enc.feedback.head[-1].bias.fill_(0.3)
    moved = enc(wet, dry)
    assert torch.all(moved > first)
    moved.sum().backward()
    assert all(p.grad is None for n, p in enc.named_parameters() if not n.startswith("feedback"))
    assert all(p.grad is not None for p in enc.feedback.parameters())
    trainable = [p for p in module.encoder.parameters() if p.requires_grad]
    assert len(trainable) == len(list(enc.feedback.parameters()))
    with pytest.raises(ValueError, match="names no part"):
        EffectEstimator(FrameEncoder(P, 44100, widths=(16,), dilations=(1,)), proc,
                        trainable="feedback")
    with pytest.raises(ValueError, match="dry_wet"):
        FrameEncoder(P, 44100, input_mode="wet", feedback=True)


@pytest.mark.parametrize("mode", ["dry_wet", "wet"])
def test_frame_encoder_shapes_modes_and_errors(mode):
    enc = FrameEncoder(6, 44100, input_mode=mode, stem_stride=2)
    x = torch.randn(2, 1, 16384) * 0.1
    out = enc(x, x * 0.5)
    assert out.shape == (2, 6) and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    if mode == "wet":  # the dry audio is ignored
        assert torch.equal(out, enc(x, None))
    else:
        with pytest.raises(ValueError, match="needs the dry audio"):
            enc(x, None)
    with pytest.raises(ValueError, match="too short"):
        enc(x[..., :512], x[..., :512])
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_pool_examples_are_seeded_by_epoch_and_cached(tmp_path):
    kw = dict(sample_rate=8000, num_samples=4000, pool_size=4, pool_samples=6000,
              cache_dir=str(tmp_path), workers=1)
    pool = BuiltinPool(6, seed=3, **kw)
    a0 = pool[2]
    assert torch.equal(a0, BuiltinPool(6, seed=3, **kw)[2])  # same (seed, epoch, index)
    assert len(list(tmp_path.glob("pool-*.npy"))) == 1  # the second one loaded the cache
    pool.set_epoch(1)
    assert not torch.equal(a0, pool[2])  # a new crop and level every epoch
    rms_db = 10 * torch.log10(a0.double().square().mean())
    assert -30.0 - 1e-3 <= float(rms_db) <= -10.0 + 1e-3 or float(a0.abs().max()) <= 0.8913
    fixed = BuiltinPool(3, seed=5, fixed=True, **kw)
    fixed.set_epoch(4)
    assert torch.equal(fixed[1], BuiltinPool(3, seed=5, fixed=True, **kw)[1])
    np.testing.assert_array_equal(generate_pool(2, 9, 8000, 100, 1, workers=1),
                                  generate_pool(2, 9, 8000, 100, 1, workers=2))


def test_tiny_benchmark_run_writes_every_output(tmp_path):
    comp = dynfx.Compressor(44100)
    dry = bm.builtin_set(3, num_samples=16384, progress=False)
    case = bm.BenchCase(comp, "dry_wet", model=lambda wet, dry: torch.full((len(wet), 6), 0.4))
    records, per = bm.run_benchmark(case, dry, refine_steps=3, step_counts=(1, 3), batch=2,
                                    progress=False, log=lambda s: None)
    ests = {r["estimator"] for r in records}
    assert ests == {"mean", "noop", "model", "model+refine", "direct"}
    look = {(r["estimator"], r["metric"], r["subset"], r["stat"]): r["value"] for r in records}
    # the model's constant 0.4 against the seeded truth, recomputed here
    true = bm.settings_for("Compressor", 6, 3)
    err = (0.4 - true[:, 0]).abs().double().numpy()
    ident = np.array(per["identifiable"])[:, 0]
    assert look[("model", "norm_err/threshold_db", "all", "mean")] == pytest.approx(err.mean())
    if ident.any():
        assert look[("model", "norm_err/threshold_db", "identifiable", "median")] == (
            pytest.approx(float(np.median(err[ident]))))
    assert ("model+refine", "steps1/mrstft", "all", "median") in look
    assert look[("model+refine", "refine_steps", "all", "mean")] == 3
    path = bm.write_outputs(tmp_path, records, per, "tiny")
    data = json.loads(path.read_text())  # valid JSON, no NaN tokens
    assert len(data) == len(records)
    assert "builtin / Compressor / dry_wet" in (tmp_path / "results.md").read_text()
    assert len(per["noop"]["mrstft"]) == 3


def test_cli_runs_the_baselines_of_a_wet_case(tmp_path, capsys):
    cli = load_script("bench/estimation.py", "bench_estimation")
    assert cli.main(["--baseline", "noise_gate:wet", "--n", "2", "--out", str(tmp_path),
                     "--step-counts", ""]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert {r["estimator"] for r in data} == {"mean", "noop"}  # no refinement in wet mode
    assert {r["mode"] for r in data} == {"wet"}
    assert (tmp_path / "per_example" / "builtin_NoiseGate_wet.json").exists()
    with pytest.raises(SystemExit):
        cli.main(["--n", "2"])
    # two sources for one (processor, mode) group: refused before any work (one would be lost)
    with pytest.raises(SystemExit):
        cli.main(["--baseline", "noise_gate:wet", "--baseline", "noise_gate:wet", "--n", "2",
                  "--out", str(tmp_path / "twice")])
    assert "both NoiseGate / wet" in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()


def test_cli_baseline_from_the_command_line(tmp_path):
    """The script composes the processor's config on its own (a fresh process: nothing
    registered by the test session)."""
    import subprocess
    import sys

    from .conftest import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "bench" / "estimation.py"), "--baseline",
                          "expander:wet", "--n", "1", "--step-counts", "", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert {r["processor"] for r in json.loads((tmp_path / "results.json").read_text())} == {
        "Expander"}


def test_target_rows_check_every_identifiable_setting_against_mean():
    def rec(est, metric, value, subset="identifiable", stat="median", mode="wet"):
        return {"set": "builtin", "processor": "Limiter", "mode": mode, "estimator": est,
                "metric": metric, "subset": subset, "stat": stat, "value": value}

    records = [rec("mean", "identifiable/a", 0.9, "all", "mean"),
               rec("mean", "identifiable/a", 1.0, "all", "median"),  # not the share
               rec("mean", "identifiable/b", 0.2, "all", "mean"),  # too rarely identifiable
               rec("mean", "norm_err/a", 0.20), rec("model", "norm_err/a", 0.14),
               rec("mean", "norm_err/b", 0.20), rec("model", "norm_err/b", 0.30),
               rec("mean", "mrstft", 1.0, "all"), rec("model", "mrstft", 0.5, "all")]
    (row,) = bm.target_rows(records)
    assert row["limit"] == 0.75 and row["ratios"] == {"a": pytest.approx(0.7)}
    assert row["met"]
    records[4] = rec("model", "norm_err/a", 0.16)  # 0.8 x mean: over the wet target
    assert not bm.target_rows(records)[0]["met"]
    dry = [dict(r, mode="dry_wet") for r in records[:3]] + [
        dict(r, mode="dry_wet") for r in records[3:]]
    assert bm.target_rows(dry)[0]["limit"] == 0.5 and not bm.target_rows(dry)[0]["met"]
    table = bm.target_table(records)
    assert "| builtin | Limiter | wet | a 0.80 | <= 0.75 | 0.500 | 1.000 | **no** |" in table


def test_training_data_table_and_its_readme_section(tmp_path):
    def rec(est, metric, value, set_name="builtin", mode="dry_wet", subset="identifiable"):
        return {"set": set_name, "processor": "Compressor", "mode": mode, "estimator": est,
                "metric": metric, "subset": subset, "stat": "median", "value": value}

    base = [rec("model", "norm_err/ratio", 0.10), rec("model", "mrstft", 0.2, subset="all"),
            rec("mean", "mrstft", 1.0, subset="all"),
            rec("model", "norm_err/ratio", 0.30, "realistic", "wet"),
            rec("model", "mrstft", 0.5, "realistic", "wet", "all")]
    mix = [rec("model", "norm_err/ratio", 0.12), rec("model", "mrstft", 0.25, subset="all"),
           rec("model+refine", "mrstft", 0.03, subset="all"),
           # the refinement behind model+refine (records without the method entry: Adam)
           {**rec("model+refine", "refine_steps", 20.0, subset="all"), "stat": "mean"}]
    table = bm.training_data_table([("A", base), ("B", mix)], "Compressor")
    lines = table.splitlines()
    assert lines[0] == ("| set | mode | trained on | ratio | MR-STFT model | model+refine | "
                        "mean |")
    assert lines[2:] == ["| builtin | dry_wet | A | 0.100 | 0.200 | - | 1.000 |",
                         "| builtin | dry_wet | B | 0.120 | 0.250 | 0.030 (Adam 20) | - |",
                         "| realistic | wet | A | 0.300 | 0.500 | - | - |"]
    cli = load_script("bench/estimation.py", "bench_estimation")
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{cli.MIX_BEGIN}\nSTALE ROW\n{cli.MIX_END}\nbottom\n")
    assert not cli.update_training_data_section(readme, base, tmp_path / "none")
    (tmp_path / "mix").mkdir()
    (tmp_path / "mix" / "results.json").write_text(json.dumps(mix))
    assert cli.update_training_data_section(readme, base, tmp_path / "mix")
    text = readme.read_text()
    assert "STALE ROW" not in text
    assert "| builtin | dry_wet | built-in + realistic (fine-tuned) | 0.120 |" in text
    assert text.startswith("top\n") and text.endswith(f"{cli.MIX_END}\nbottom\n")


def test_wet_level_bound_invariance_and_posterior():
    """bench/wet_level_bound.py: a Compressor is invariant to (+d dB in, +d threshold, -d
    makeup) sample for sample, and the bound is the posterior median of that shift."""
    wb = load_script("bench/wet_level_bound.py", "bench_wet_level_bound")
    comp = dynfx.Compressor(sample_rate=44100)
    torch.manual_seed(1)
    dry = (torch.randn(3, 1, 8192, dtype=torch.float64) * 0.05)
    dsp = {"threshold_db": torch.tensor([-30.0, -20.0, -40.0], dtype=torch.float64),
           "ratio": 4.0, "knee_db": 6.0, "attack_ms": 3.0, "release_ms": 80.0,
           "makeup_db": torch.tensor([2.0, -3.0, 5.0], dtype=torch.float64)}
    d = 7.5
    moved = dict(dsp, threshold_db=dsp["threshold_db"] + d, makeup_db=dsp["makeup_db"] - d)
    a = comp(dry, dsp_params=dsp)
    b = comp(dry * 10 ** (d / 20), dsp_params=moved)
    assert float((a - b).abs().max()) < 1e-9 * float(a.abs().max())
    # the posterior median: an interval alone, a dominating point mass, a mass beside it
    assert wb.posterior_median(-4.0, 6.0, 8.0, 0.0) == pytest.approx(1.0)
    assert wb.posterior_median(-4.0, 0.0, 0.0, 10.0) == pytest.approx(0.0)
    assert wb.posterior_median(-4.0, 0.0, 0.0, 2.0) == pytest.approx(-1.0)
    # a clip far below the peak limit: every level of the range is possible, cut by the
    # makeup range (0 dB makeup can move down by 12 dB at most: shifts up to +12 dB)
    x = np.zeros((1, 1, 1000))
    x[..., ::2] = 0.1  # RMS -23 dBFS, crest 3 dB: never peak-limited
    rms = 10 * np.log10(np.mean(x ** 2))
    err = wb.level_bound(x, np.array([-30.0]), np.array([0.0]))
    assert err[0] == pytest.approx(abs((-30 - rms + min(-10 - rms, 12.0)) / 2), abs=1e-6)
