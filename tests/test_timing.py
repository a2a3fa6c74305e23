"""Ballistics timing, "iir" smoothing, and stereo linking."""

import math

import numpy as np
import pytest
import torch

import dynfx

from .conftest import ALL, UNBANDED, mid_dsp

RATES = [22050, 44100, 96000]


def _steps(fs, a_db, b_db, seconds=(0.3, 0.6, 0.6)):
    """DC signal: level a_db, then b_db, then a_db again; returns x (1, 2, T) and step indices."""
    n1, n2, n3 = (int(s * fs) for s in seconds)
    amp = torch.cat([torch.full((n1,), 10 ** (a_db / 20)), torch.full((n2,), 10 ** (b_db / 20)),
                     torch.full((n3,), 10 ** (a_db / 20))]).to(torch.float64)
    return amp.expand(1, 2, -1).clone(), n1, n1 + n2


def _crossing(sig, start, target, rising):
    """Fractional number of samples from `start` (first sample of the new level, counted as 1)
    until `sig` crosses `target` (linear interpolation)."""
    s = sig[start:]
    idx = np.nonzero(s >= target if rising else s <= target)[0][0]
    prev = s[idx - 1] if idx > 0 else sig[start - 1]
    frac = (target - prev) / (s[idx] - prev)
    return idx + frac


def _check_times(env, fs, n_up, n_down, a, b, attack_ms, release_ms):
    target_up = a + (1 - math.exp(-1)) * (b - a)
    target_down = a + math.exp(-1) * (b - a)
    t_att = _crossing(env, n_up, target_up, rising=b > a) * 1000 / fs
    t_rel = _crossing(env, n_down, target_down, rising=a > b) * 1000 / fs
    assert abs(t_att / attack_ms - 1) < 0.02, (t_att, attack_ms)
    assert abs(t_rel / release_ms - 1) < 0.02, (t_rel, release_ms)


@pytest.mark.parametrize("fs", RATES)
def test_compressor_timing(fs):
    proc = dynfx.Compressor(sample_rate=fs, knee_type="hard")
    x, n_up, n_down = _steps(fs, -30.0, -6.0)
    att, rel = 5.0, 50.0
    dsp = mid_dsp(proc) | {"threshold_db": -60.0, "ratio": 4.0, "attack_ms": att, "release_ms": rel}
    _, g = proc(x, dsp_params=dsp, return_gain=True)
    level = -60.0 + g[0].numpy() / (1 / 4 - 1)
    env = 10 ** (level / 10) - 1e-12  # power
    _check_times(env, fs, n_up, n_down, 10 ** (-3.0), 10 ** (-0.6), att, rel)


@pytest.mark.parametrize("fs", RATES)
def test_limiter_timing(fs):
    proc = dynfx.Limiter(sample_rate=fs, knee_type="hard")
    x, n_up, n_down = _steps(fs, -30.0, -6.0)
    att, rel = 1.0, 20.0
    dsp = mid_dsp(proc) | {"threshold_db": -60.0, "ratio": 20.0, "attack_ms": att, "release_ms": rel}
    _, g = proc(x, dsp_params=dsp, return_gain=True)
    level = -60.0 + g[0].numpy() / (1 / 20 - 1)
    env = 10 ** (level / 20) - 1e-6  # amplitude (peak detector)
    _check_times(env, fs, n_up, n_down, 10 ** (-1.5), 10 ** (-0.3), att, rel)


@pytest.mark.parametrize("fs", RATES)
def test_expander_timing_attack_is_rising(fs):
    proc = dynfx.Expander(sample_rate=fs, knee_type="hard")
    x, n_up, n_down = _steps(fs, -60.0, -20.0)
    att, rel = 3.0, 80.0
    dsp = mid_dsp(proc) | {"threshold_db": 0.0, "ratio": 2.0, "attack_ms": att, "release_ms": rel}
    _, g = proc(x, dsp_params=dsp, return_gain=True)
    level = 0.0 + g[0].numpy() / (2.0 - 1)
    env = 10 ** (level / 10) - 1e-12
    _check_times(env, fs, n_up, n_down, 1e-6, 1e-2, att, rel)


@pytest.mark.parametrize("fs", RATES)
def test_gate_opens_with_attack_and_closes_with_release(fs):
    a_db, b_db = -80.0, -30.0
    pa, pb = 10 ** (a_db / 10), 10 ** (b_db / 10)
    att, rel = 4.0, 60.0
    x, n_up, n_down = _steps(fs, a_db, b_db)
    proc = dynfx.NoiseGate(sample_rate=fs, knee_type="hard")
    base = {"range_db": -60.0, "knee_db": 0.0, "attack_ms": att, "release_ms": rel}
    # threshold at 63.2 % of the rise: the gate opens after attack_ms
    t_open = 10 * math.log10(pa + (1 - math.exp(-1)) * (pb - pa))
    _, g = proc(x, dsp_params=base | {"threshold_db": t_open}, return_gain=True)
    opened = np.nonzero(g[0, n_up:].numpy() == 0.0)[0][0] + 1
    assert abs(opened * 1000 / fs / att - 1) < 0.02
    # threshold at 36.8 % of the way back: the gate closes after release_ms
    t_close = 10 * math.log10(pa + math.exp(-1) * (pb - pa))
    _, g = proc(x, dsp_params=base | {"threshold_db": t_close}, return_gain=True)
    closed = np.nonzero(g[0, n_down:].numpy() < 0.0)[0][0] + 1
    assert abs(closed * 1000 / fs / rel - 1) < 0.02


@pytest.mark.parametrize("fs", RATES)
def test_functional_smooth_timing(fs):
    d = torch.cat([torch.zeros(100), torch.ones(int(0.5 * fs)), torch.zeros(int(0.5 * fs))])
    d = d.to(torch.float64)[None]
    att, rel = torch.tensor([7.0], dtype=torch.float64), torch.tensor([70.0], dtype=torch.float64)
    e = dynfx.functional.smooth(d, att, rel, fs, "ballistics")[0].numpy()
    _check_times(e, fs, 100, 100 + int(0.5 * fs), 0.0, 1.0, 7.0, 70.0)


# --- "iir" smoothing ------------------------------------------------------------------------------
def test_iir_constant_input_no_bias_no_dip_batch():
    fs = 44100
    proc = dynfx.Compressor(sample_rate=fs, smooth_type="iir", knee_type="hard")
    levels = [-40.0, -25.0, -12.0, -3.0]
    amp = torch.tensor([10 ** (v / 20) for v in levels], dtype=torch.float64)
    x = amp[:, None, None].expand(4, 2, fs).clone()  # 1 s of DC per item
    dsp = {"threshold_db": -30.0, "ratio": 4.0, "knee_db": 0.0, "attack_ms": 5.0,
           "release_ms": 15.0, "makeup_db": 0.0}
    _, g = proc(x, dsp_params=dsp, return_gain=True)
    for i, lv in enumerate(levels):
        level = 10 * math.log10(amp[i].item() ** 2 + 1e-12)
        static = (1 / 4 - 1) * max(level - (-30.0), 0.0)
        # no bias: the settled gain is exactly the static curve
        assert abs(g[i, -1].item() - static) < 1e-9
        # no start-up dip: the envelope rises from silence, so the gain never goes below it
        assert g[i].min().item() >= static - 1e-9
        # batch items are independent
        _, gi = proc(x[i : i + 1], dsp_params=dsp, return_gain=True)
        assert torch.allclose(gi[0], g[i], rtol=0, atol=1e-12)
    # the iir time constant is the mean of attack and release: 63.2 % of a step in 10 ms
    d = torch.cat([torch.zeros(1, 10), torch.ones(1, fs)], dim=1).to(torch.float64)
    t = torch.tensor([5.0], dtype=torch.float64), torch.tensor([15.0], dtype=torch.float64)
    e = dynfx.functional.smooth(d, *t, fs, "iir")[0].numpy()
    assert abs(_crossing(e, 10, 1 - math.exp(-1), True) * 1000 / fs / 10.0 - 1) < 0.02


# --- stereo linking -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_anti_phase_stereo_is_processed_like_mono(cls):
    proc = cls()
    mono = torch.randn(2, 1, 4000, dtype=torch.float64) * torch.logspace(-4, 0, 4000, dtype=torch.float64)
    stereo = torch.cat([mono, -mono], dim=1)
    u = torch.rand(2, proc.count_num_parameters(), dtype=torch.float64)
    y_mono = proc(mono, norm_params=u)
    y_st = proc(stereo, norm_params=u)
    assert torch.allclose(y_st[:, :1], y_mono, rtol=1e-12, atol=1e-14)
    assert torch.allclose(y_st[:, 1:], -y_mono, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", UNBANDED, ids=lambda c: c.__name__)
def test_every_channel_gets_the_same_gain(cls):
    proc = cls()
    x = torch.randn(2, 3, 4000, dtype=torch.float64) + 0.05
    u = torch.rand(2, proc.count_num_parameters(), dtype=torch.float64)
    y, g = proc(x, norm_params=u, return_gain=True)
    ratio = y / x
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-12)
    makeup = proc.denormalize(u).get("makeup_db", torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(ratio[:, 0], 10 ** ((g + makeup[:, None]) / 20), rtol=1e-12)
