"""Third-party plugins as targets (models/plugins.py): dynfx's imitation of the pedalboard
Compressor, Limiter and NoiseGate against the plugins themselves, the documented mapping,
gradients, and training a module on plugin targets."""

from __future__ import annotations

import math

import pytest
import torch

from models.plugins import PLUGINS, PluginProcessor, measured_gain_db, pedalboard_available

pytestmark = pytest.mark.skipif(not pedalboard_available(), reason="pedalboard not installed")

SR = 44100


def _bursts(batch: int = 6, seconds: float = 1.0, channels: int = 1, seed: int = 0):
    """Noise bursts alternating loud (-20 dBFS RMS) and quiet (-50 dBFS) every 125 ms, each item
    scaled by its own gain: levels that cross every threshold in the plugins' ranges."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    env = torch.where((t % 0.25) < 0.125, 0.1, 0.003)
    scale = 10 ** (torch.rand(batch, 1, 1, generator=g) * 1.5 - 0.5)  # -10..+20 dB
    x = torch.randn(batch, 1, n, generator=g) * env * scale
    return x.repeat(1, channels, 1).float()


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_imitation_matches_the_plugin_on_mono_audio(plugin):
    proc = PluginProcessor(plugin, SR)
    x = _bursts()
    norm = torch.rand(x.shape[0], proc.count_num_parameters(),
                      generator=torch.Generator().manual_seed(1))
    wet = proc.render_plugin(x, norm)
    y = proc(x, norm_params=norm)
    assert not torch.allclose(wet, x, atol=1e-3), "the plugins act on this audio"
    assert float((y - wet).abs().max()) < 2e-4  # float32 rounding, samples up to about 1


def test_identical_stereo_channels_match_and_differing_ones_are_linked():
    proc = PluginProcessor("Compressor", SR)
    norm = torch.full((2, 4), 0.5)
    x = _bursts(batch=2, channels=2)
    assert float((proc(x, norm_params=norm) - proc.render_plugin(x, norm)).abs().max()) < 2e-4
    x[:, 1] *= 0.1  # pedalboard detects each channel on its own, dynfx links them (max)
    y, wet = proc(x, norm_params=norm), proc.render_plugin(x, norm)
    assert float((y[:, 0] - wet[:, 0]).abs().max()) < 2e-4  # the louder channel leads
    assert float((y[:, 1] - wet[:, 1]).abs().max()) > 1e-3


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_training_gain_is_measured_on_the_plugin_output(plugin):
    """The gain-curve target is read off the plugin's output: it equals the gain that turns
    dry into the plugin's wet, and the imitation's gain (independently computed) within
    float rounding where the dry signal is audible; silent samples take the fill."""
    proc = PluginProcessor(plugin, SR)
    x = _bursts(batch=3, channels=2)
    x[:, 1] *= 0.5
    x[:, :, :441] = 0.0  # 10 ms of digital silence
    norm = torch.rand(3, proc.count_num_parameters(), generator=torch.Generator().manual_seed(4))
    wet, gain = proc.render_target(x, norm)
    assert torch.equal(wet, proc.render_plugin(x, norm))
    _, imitation = proc(x, norm_params=norm, return_gain=True)
    audible = x[:, 0].abs() > 1e-3
    rebuilt = x[:, 0] * 10 ** (gain / 20)
    assert float((rebuilt - wet[:, 0])[audible].abs().max()) < 1e-5
    assert float((gain - imitation).clamp(-100, 100)[audible].abs().median()) < 1e-3
    assert torch.equal(gain[:, :441], imitation[:, :441])
    fill = torch.full_like(gain, 7.0)
    assert torch.equal(measured_gain_db(wet, x, fill)[:, :441], fill[:, :441])


def test_mapping_of_times_and_the_limiter_gain():
    comp = PluginProcessor("Compressor", SR)
    s = {"threshold_db": torch.tensor([-20.0]), "ratio": torch.tensor([4.0]),
         "attack_ms": torch.tensor([10.0]), "release_ms": torch.tensor([200.0])}
    (stage,), makeup = comp.dynfx_settings(s)
    # JUCE's follower exp(-2 pi 1000 / (fs t)) is dynfx's exp(-1000 / (fs t')) at t' = t / 2 pi
    assert math.isclose(float(stage["attack_ms"]), 10.0 / (2 * math.pi), rel_tol=1e-6)
    assert math.isclose(float(stage["release_ms"]), 200.0 / (2 * math.pi), rel_tol=1e-6)
    assert float(stage["knee_db"]) == 0.0 and float(makeup) == 0.0
    lim = PluginProcessor("Limiter", SR)
    _, makeup = lim.dynfx_settings({"threshold_db": torch.tensor([-12.0]),
                                    "release_ms": torch.tensor([100.0])})
    assert math.isclose(float(makeup), 3.75 + 12.0, rel_tol=1e-6)


def test_static_gate_curve_reads_the_peak_level():
    """A steady sine 6 dB under the threshold at ratio 3: (3 - 1) x -6 = -12 dB (the gate's
    first follower holds the peaks), in the plugin and in the imitation."""
    proc = PluginProcessor("NoiseGate", SR)
    t = torch.arange(SR) / SR
    x = (torch.sin(2 * math.pi * 1000 * t) * 10 ** (-46 / 20))[None, None].float()
    norm = proc.normalize({"threshold_db": -40.0, "ratio": 3.0, "attack_ms": 5.0,
                           "release_ms": 100.0})
    for y in (proc(x, norm_params=norm), proc.render_plugin(x, norm)):
        gain = 20 * math.log10(float(y[..., -4410:].abs().max()) / float(x[..., -4410:].abs().max()))
        assert abs(gain - (-12.0)) < 0.1


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_every_setting_gets_a_gradient(plugin):
    proc = PluginProcessor(plugin, SR)
    x = _bursts(batch=4, seconds=0.5)
    norm = torch.rand(4, proc.count_num_parameters(),
                      generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    wet = proc.render_plugin(x, torch.full_like(norm, 0.5))
    (proc(x, norm_params=norm) - wet).abs().mean().backward()
    assert torch.isfinite(norm.grad).all()
    assert bool((norm.grad.abs().sum(0) > 0).all())


def test_errors_name_the_choices():
    with pytest.raises(ValueError, match="Compressor"):
        PluginProcessor("Reverb", SR)
    proc = PluginProcessor("Limiter", SR)
    with pytest.raises(ValueError, match="threshold_db"):
        proc(torch.zeros(1, 1, 100), dsp_params={"threshold_db": 5.0, "release_ms": 100.0})


def test_a_module_trains_on_plugin_targets():
    """The LightningModule's target is the plugin's real output (not the imitation's), and a
    few steps of the parameter + audio loss run."""
    from models.encoders import FrameEncoder
    from models.module import EffectEstimator

    proc = PluginProcessor("Compressor", SR)
    enc = FrameEncoder(4, SR, input_mode="wet", stem_stride=2, widths=(16,), dilations=(1, 2))
    module = EffectEstimator(enc, proc, input_mode="wet", w_stft=0.1, w_param=1.0,
                                  w_gain=0.0)
    x = _bursts(batch=2, seconds=0.4)
    norm = torch.rand(2, 4, generator=torch.Generator().manual_seed(3))
    calls = []
    real = proc.render_plugin
    proc.render_plugin = lambda a, b: calls.append(1) or real(a, b)
    wet, _ = module.make_target(x, norm)
    assert calls and torch.equal(wet, real(x, norm))
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    for _ in range(2):
        loss, _ = module._step({"dry": x, "norm_params": norm}, "val")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_plugin_bench_runs_and_a_recovery_keeps_the_imitation_rows(tmp_path):
    """bench/plugins.py on two clips: the imitation table; then recovery records of the same
    plugin (as a --ckpt run adds them) must not drop its imitation rows."""
    from .conftest import load_script

    bench = load_script("bench/plugins.py", "bench_plugins")
    assert bench.main(["--n", "2", "--plugins", "NoiseGate", "--out", str(tmp_path)]) == 0
    records = __import__("json").loads((tmp_path / "results.json").read_text())
    mapped = [r for r in records if r["estimator"] == "mapped" and r["metric"] == "max_abs_diff"]
    assert mapped and all(r["value"] < 1e-3 for r in mapped)
    table = (tmp_path / "results.md").read_text()
    assert "| NoiseGate |" in table and "Recovery" not in table
    recovery = [dict(r, estimator="model") for r in records if r["estimator"] == "mean"]
    merged = bench.merge_by_estimator(records, recovery)
    assert {r["estimator"] for r in merged} == {"mapped", "direct", "noop", "mean", "model"}
    assert len(merged) == len(records) + len(recovery)
    body = bench.tables(merged)
    assert "| NoiseGate |" in body and "Recovery" in body
