"""Multi-band: allpass band sum, LR4 against SciPy, per-item crossovers, crossover ranges."""

import math

import numpy as np
import pytest
import scipy.signal as sps
import torch

import dynfx
from dynfx.crossover import crossover_ranges, split_bands, split_bands_stacked

from .conftest import MULTI, mid_dsp, neutral_dsp


def _scipy_lr4(kind, f, fs):
    sos = sps.butter(2, f, btype=kind, fs=fs, output="sos")
    return np.concatenate([sos, sos])


def scipy_bands(x, freqs, fs):
    """Reference split with SciPy (float64): allpass_f = LR4 low + LR4 high at f."""
    def lp(v, f):
        return sps.sosfilt(_scipy_lr4("lowpass", f, fs), v)

    def hp(v, f):
        return sps.sosfilt(_scipy_lr4("highpass", f, fs), v)

    bands, rest = [], x
    for i, f in enumerate(freqs):
        low = lp(rest, f)
        for g in freqs[i + 1 :]:
            low = lp(low, g) + hp(low, g)
        bands.append(low)
        rest = hp(rest, f)
    bands.append(rest)
    return bands


@pytest.mark.parametrize("n_bands", [2, 3, 5])
@pytest.mark.parametrize("fs", [44100, 48000])
def test_lr4_bands_match_scipy(n_bands, fs):
    rng = np.random.default_rng(n_bands)
    x = rng.standard_normal(8192)
    x[:10] = 0
    x[10] = 5.0  # an impulse on top of noise
    ranges = crossover_ranges(n_bands, fs)
    freqs = [float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) for lo, hi in ranges]
    ref = scipy_bands(x, freqs, fs)
    xt = torch.from_numpy(x)[None, None]
    ft = [torch.tensor([f], dtype=torch.float64) for f in freqs]
    ours = split_bands(xt, ft, fs)
    stacked = split_bands_stacked(xt, ft, fs)  # the fused pass where the band count allows
    for i, r in enumerate(ref):
        assert np.max(np.abs(ours[i][0, 0].numpy() - r)) < 1e-9
        assert np.max(np.abs(stacked[0, i, 0].numpy() - r)) < 1e-9


def _neutral_sum_error_db(cls, n_bands, fs, norm_xover, n=1 << 16):
    proc = cls(sample_rate=fs, num_bands=n_bands)
    dsp = neutral_dsp(proc)
    for i in range(n_bands - 1):
        name = f"crossover{i}_freq"
        dsp[name] = proc.params[name].denormalize(torch.tensor(norm_xover[i])).item()
    x = torch.zeros(1, 1, n, dtype=torch.float64)
    x[0, 0, 0] = 0.5  # impulse below 0 dBFS (a limiter at threshold 0 dB does nothing)
    y = proc(x, dsp_params=dsp)
    h = np.fft.rfft(y[0, 0].numpy()) / 0.5
    f = np.fft.rfftfreq(n, 1 / fs)
    band = (f >= 20) & (f <= 20000)
    return np.max(np.abs(20 * np.log10(np.abs(h[band]))))


@pytest.mark.parametrize("n_bands", range(2, 9))
@pytest.mark.parametrize("cls", MULTI, ids=lambda c: c.__name__)
def test_neutral_band_sum_is_flat(cls, n_bands):
    rng = np.random.default_rng(n_bands)
    settings = [np.zeros(n_bands - 1), np.ones(n_bands - 1), rng.uniform(size=n_bands - 1)]
    for fs in (44100, 96000):
        for u in settings:
            assert _neutral_sum_error_db(cls, n_bands, fs, u) < 0.01


@pytest.mark.parametrize("cls", MULTI, ids=lambda c: c.__name__)
def test_batch_with_per_item_crossovers_equals_items(cls):
    proc = cls(num_bands=4)
    x = torch.randn(3, 2, 3000, dtype=torch.float64) * torch.logspace(-3, 0, 3000, dtype=torch.float64)
    u = torch.rand(3, proc.count_num_parameters(), dtype=torch.float64)
    y, g = proc(x, norm_params=u, return_gain=True)
    assert g.shape == (3, 4, 3000)
    for i in range(3):
        yi, gi = proc(x[i : i + 1], norm_params=u[i : i + 1], return_gain=True)
        assert torch.allclose(yi[0], y[i], rtol=0, atol=1e-6 * x.abs().max().item())
        assert torch.allclose(gi[0], g[i], rtol=0, atol=1e-6)
    # channels share their item's filters: swapping channels swaps the outputs
    y_sw = proc(x.flip(1), norm_params=u)
    assert torch.allclose(y_sw, y.flip(1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fs", [8000, 22050, 44100, 48000, 96000, 192000])
@pytest.mark.parametrize("n_bands", range(2, 9))
def test_crossover_ranges_ordered_and_disjoint(fs, n_bands):
    proc = dynfx.MultiBandCompressor(sample_rate=fs, num_bands=n_bands)
    ranges = [(proc.params[f"crossover{i}_freq"].min_val, proc.params[f"crossover{i}_freq"].max_val)
              for i in range(n_bands - 1)]
    assert ranges == crossover_ranges(n_bands, fs)
    assert ranges[0][0] == 20.0
    assert ranges[-1][1] == pytest.approx(min(20000.0, 0.45 * fs))
    for (lo, hi), (lo2, _) in zip(ranges, ranges[1:]):
        assert lo < hi and hi == pytest.approx(lo2)
    ratios = [hi / lo for lo, hi in ranges]
    assert np.allclose(ratios, ratios[0])  # log-spaced slices of equal width
    assert all(proc.params[f"crossover{i}_freq"].scale == "log" for i in range(n_bands - 1))


def test_crossover_ranges_three_bands_44k():
    (lo0, hi0), (lo1, hi1) = crossover_ranges(3, 44100)
    assert (lo0, round(hi0), round(lo1), hi1) == (20.0, 630, 630, 19845.0)


def test_bands_are_processed_independently():
    """Compressing only the top band leaves a low sine untouched."""
    fs = 44100
    proc = dynfx.MultiBandCompressor(sample_rate=fs, num_bands=3)
    t = torch.arange(fs // 2, dtype=torch.float64) / fs
    low = 0.5 * torch.sin(2 * np.pi * 60 * t)
    high = 0.5 * torch.sin(2 * np.pi * 8000 * t)
    dsp = neutral_dsp(proc) | {"crossover0_freq": 200.0, "crossover1_freq": 2000.0,
                               "band2_ratio": 20.0, "band2_threshold_db": -40.0}
    y_low = proc(low[None, None], dsp_params=dsp)[0, 0]
    y_high = proc(high[None, None], dsp_params=dsp)[0, 0]
    tail = slice(fs // 4, None)
    rms = lambda v: v[tail].pow(2).mean().sqrt().item()  # noqa: E731
    assert abs(20 * np.log10(rms(y_low) / rms(low))) < 0.05
    assert 20 * np.log10(rms(y_high) / rms(high)) < -20


def test_midpoint_settings_run_for_all_band_counts():
    for n in range(2, 9):
        proc = dynfx.MultiBandNoiseGate(num_bands=n)
        y, g = proc(0.1 * torch.randn(1, 2, 2048), dsp_params=mid_dsp(proc), return_gain=True)
        assert y.shape == (1, 2, 2048) and g.shape == (1, n, 2048) and torch.isfinite(y).all()


PAIRS = [
    (dynfx.MultiBandCompressor, dynfx.Compressor,
     {"threshold_db": -30.0, "ratio": 5.0, "knee_db": 4.0, "attack_ms": 3.0, "release_ms": 80.0,
      "makeup_db": 2.0}),
    (dynfx.MultiBandLimiter, dynfx.Limiter,
     {"threshold_db": -25.0, "ratio": 30.0, "knee_db": 0.5, "attack_ms": 0.5, "release_ms": 40.0,
      "makeup_db": -1.0}),
    (dynfx.MultiBandExpander, dynfx.Expander,
     {"threshold_db": -40.0, "ratio": 3.0, "knee_db": 2.0, "attack_ms": 2.0, "release_ms": 150.0}),
    (dynfx.MultiBandNoiseGate, dynfx.NoiseGate,
     {"threshold_db": -45.0, "range_db": -40.0, "knee_db": 3.0, "attack_ms": 1.0,
      "release_ms": 60.0}),
]


@pytest.mark.parametrize("mb_cls, single_cls, band", PAIRS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("smooth_type", ["ballistics", "iir"])
def test_each_band_is_the_single_band_processor(mb_cls, single_cls, band, smooth_type):
    """Every band runs the single-band chain (detector linked across channels, the same attack =
    rising semantics, gain computer, makeup) on its own band signal."""
    fs = 44100
    mb = mb_cls(sample_rate=fs, num_bands=3, smooth_type=smooth_type)
    single = single_cls(sample_rate=fs, smooth_type=smooth_type)
    x = torch.randn(2, 2, 6000, dtype=torch.float64) * torch.logspace(-3, 0, 6000, dtype=torch.float64)
    freqs = [torch.tensor([150.0, 300.0], dtype=torch.float64),
             torch.tensor([3000.0, 1500.0], dtype=torch.float64)]
    dsp = {f"band{i}_{n}": v for i in range(3) for n, v in band.items()}
    dsp |= {"crossover0_freq": freqs[0], "crossover1_freq": freqs[1]}
    y, g = mb(x, dsp_params=dsp, return_gain=True)
    expected = torch.zeros_like(x)
    single_dsp = band | ({} if "makeup_db" in band or single_cls is dynfx.NoiseGate else {"makeup_db": 0.0})
    for i, b in enumerate(split_bands(x, freqs, fs)):
        yb, gb = single(b, dsp_params=single_dsp, return_gain=True)
        expected += yb
        assert torch.allclose(g[:, i], gb, rtol=0, atol=1e-10)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)


def _level_change_db(x, y, fs: int, f_tone: float) -> float:
    """RMS level of y over x (dB) over the whole periods of the tone in the second half (past
    the filters' start-up): a partial period would bias the RMS of a phase-shifted tone."""
    n = x.shape[-1]
    periods = math.floor((n // 2) * f_tone / fs)
    window = int(round(periods * fs / f_tone))
    rms = lambda s: s.double()[..., n - window:].square().mean().sqrt()  # noqa: E731
    return float(20 * torch.log10(rms(y) / rms(x)))


def _tone_sum_error_db(fs: int, f_xo: float, f_tone: float, dtype) -> float:
    """Level change (dB) of a steady tone through the 2-band split's band sum."""
    n = int(fs * 1.0)
    t = torch.arange(n, dtype=torch.float64) / fs
    x = torch.sin(2 * math.pi * f_tone * t).to(dtype).reshape(1, 1, n)
    y = sum(split_bands(x, [torch.tensor([f_xo], dtype=dtype)], fs))
    return _level_change_db(x, y, fs, f_tone)


@pytest.mark.parametrize("fs", [44100, 48000, 96000, 192000])
def test_float32_band_sum_is_allpass_at_the_extreme_crossovers(fs):
    lo_range, hi_range = crossover_ranges(2, fs)[0]
    for f_xo, f_tone in ((lo_range, 1.25 * lo_range), (hi_range, 0.9 * hi_range)):
        err = _tone_sum_error_db(fs, f_xo, f_tone, torch.float32)
        assert abs(err) < 0.01, (fs, f_xo, err)


@pytest.mark.parametrize("fs", [44100, 192000])
def test_float32_multiband_processor_is_flat_at_the_lowest_crossover(fs):
    proc = dynfx.MultiBandCompressor(sample_rate=fs, num_bands=3)
    dsp = neutral_dsp(proc)
    dsp["crossover0_freq"] = proc.params["crossover0_freq"].min_val
    n = fs // 2
    t = torch.arange(n, dtype=torch.float64) / fs
    x = (0.25 * torch.sin(2 * math.pi * 25.0 * t)).float().reshape(1, 1, n)
    assert abs(_level_change_db(x, proc(x, dsp_params=dsp), fs, 25.0)) < 0.01
