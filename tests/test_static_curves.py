"""Static curves: long constant inputs against the SPEC formulas (an independent NumPy float64
implementation written from SPEC section 3), knee 0 = hard, identities, no NaN at boundaries."""

import numpy as np
import pytest
import torch

import dynfx
from dynfx.functional import GAIN_COMPUTERS

from .conftest import FS, SINGLE, mid_dsp


def _softplus(v):
    return np.logaddexp(0.0, v)


def spec_gain(kind, knee, L, T, R, W):
    """SPEC section 3, one level at a time (float64); ``kind`` is the gain computer's name in
    the registry (``dynfx.functional.GAIN_COMPUTERS``), ``R`` its amount (ratio or range)."""
    if kind == "compressor":
        s = 1.0 / R - 1.0
        if knee == "hard" or W == 0:
            return s * (L - T) if L > T else 0.0
        if knee == "quadratic":
            if L <= T - W / 2:
                return 0.0
            if L >= T + W / 2:
                return s * (L - T)
            return s * (L - T + W / 2) ** 2 / (2 * W)
        k = 4.0 / W
        return s * _softplus(k * (L - T)) / k
    if kind == "expander":
        r = R - 1.0
        if knee == "hard" or W == 0:
            return r * (L - T) if L < T else 0.0
        if knee == "quadratic":
            if L >= T + W / 2:
                return 0.0
            if L <= T - W / 2:
                return r * (L - T)
            return -r * (L - T - W / 2) ** 2 / (2 * W)
        k = 4.0 / W
        return -r * _softplus(-k * (L - T)) / k
    assert kind == "gate", f"no independent reference for the gain computer {kind!r}"
    if knee == "hard" or W == 0:
        s = 1.0 if L > T else 0.0
    elif knee == "quadratic":
        u = min(max((L - T + W / 2) / W, 0.0), 1.0)
        s = 3 * u**2 - 2 * u**3
    else:
        s = 1.0 / (1.0 + np.exp(-4.0 * (L - T) / W))
    return R * (1.0 - s)


def constant_levels(proc, dsp, levels_db, n=4410):
    """Process DC inputs at the given levels (one batch item each); return the final gain."""
    amp = torch.tensor([10 ** (lv / 20) for lv in levels_db], dtype=torch.float64)
    x = amp[:, None, None].expand(len(levels_db), 2, n).clone()
    _, g = proc(x, dsp_params=dsp, return_gain=True)
    return amp, g[:, -1]


def _detector_level(proc, amp):
    if proc.detector == "rms":
        return 10 * np.log10(amp**2 + 1e-12)
    return 20 * np.log10(amp + 1e-6)


@pytest.mark.parametrize("knee", ["hard", "quadratic", "exponential"])
@pytest.mark.parametrize("cls", SINGLE, ids=lambda c: c.__name__)
def test_static_curve_matches_spec(cls, knee):
    proc = cls(knee_type=knee)
    dsp = mid_dsp(proc)
    spec = proc.params
    dsp["threshold_db"] = spec["threshold_db"].min_val + 0.6 * (
        spec["threshold_db"].max_val - spec["threshold_db"].min_val
    )
    dsp["knee_db"] = spec["knee_db"].max_val
    dsp["attack_ms"] = spec["attack_ms"].min_val
    dsp["release_ms"] = spec["release_ms"].min_val
    if "makeup_db" in dsp:
        dsp["makeup_db"] = 3.0
    T, W = dsp["threshold_db"], dsp["knee_db"]
    grid = list(np.arange(-95.0, 0.01, 2.5)) + list(T + W * np.linspace(-0.6, 0.6, 13))
    amp, g = constant_levels(proc, dsp, grid, n=int(0.05 * FS) + 4410)
    amount = dsp[GAIN_COMPUTERS[cls.gain_computer].amount]
    for a, gain in zip(amp.numpy(), g.numpy()):
        L = _detector_level(proc, a)
        expected = spec_gain(cls.gain_computer, knee, L, T, amount, W)
        assert abs(gain - expected) < 0.01, (L, gain, expected)
    # makeup is applied on top of the gain (and is not part of gain_db)
    if "makeup_db" in dsp:
        x = torch.full((1, 1, 4410), 0.05, dtype=torch.float64)
        y, g1 = proc(x, dsp_params=dsp, return_gain=True)
        assert torch.allclose(y[0, 0, -1] / x[0, 0, -1], 10 ** ((g1[0, -1] + 3.0) / 20))


@pytest.mark.parametrize("knee", ["quadratic", "exponential"])
@pytest.mark.parametrize("cls", SINGLE, ids=lambda c: c.__name__)
def test_knee_zero_equals_hard(cls, knee):
    dsp = mid_dsp(cls()) | {"knee_db": 0.0}
    x = 10 ** (torch.linspace(-100, 0, 2000, dtype=torch.float64) / 20)
    x = (x * torch.sign(torch.randn(2000, dtype=torch.float64)))[None, None].repeat(2, 2, 1)
    y_soft, g_soft = cls(knee_type=knee)(x, dsp_params=dsp, return_gain=True)
    y_hard, g_hard = cls(knee_type="hard")(x, dsp_params=dsp, return_gain=True)
    assert torch.equal(g_soft, g_hard)
    assert torch.equal(y_soft, y_hard)


@pytest.mark.parametrize("knee", ["hard", "quadratic", "exponential"])
@pytest.mark.parametrize("cls", [dynfx.Compressor, dynfx.Expander, dynfx.NoiseGate])
def test_ratio_one_and_range_zero_are_identity(cls, knee):
    proc = cls(knee_type=knee)
    dsp = mid_dsp(proc)
    dsp["range_db" if cls is dynfx.NoiseGate else "ratio"] = 0.0 if cls is dynfx.NoiseGate else 1.0
    if "makeup_db" in dsp:
        dsp["makeup_db"] = 0.0
    x = torch.randn(2, 2, 3000, dtype=torch.float64) * torch.logspace(-5, 0, 3000, dtype=torch.float64)
    y, g = proc(x, dsp_params=dsp, return_gain=True)
    assert torch.equal(g, torch.zeros_like(g))
    assert torch.equal(y, x)


def _boundary_cases(proc):
    spec = proc.params
    base = mid_dsp(proc)
    cases = []
    for name in ("threshold_db", "knee_db", "ratio", "range_db", "attack_ms", "release_ms"):
        if name in spec:
            cases.append(base | {name: spec[name].min_val})
            cases.append(base | {name: spec[name].max_val})
    cases.append({n: p.min_val for n, p in spec.items()})
    cases.append({n: p.max_val for n, p in spec.items()})
    return cases


DEAD_UNDER_HARD_GATE = ("threshold_db", "knee_db", "attack_ms", "release_ms")


@pytest.mark.parametrize("knee", ["hard", "quadratic", "exponential"])
@pytest.mark.parametrize("cls", SINGLE, ids=lambda c: c.__name__)
def test_no_nan_at_boundaries(cls, knee):
    proc = cls(knee_type=knee)
    n = 2048
    silence = torch.zeros(1, 2, n, dtype=torch.float64)
    square = torch.sign(torch.sin(torch.arange(n, dtype=torch.float64) * 0.05)).expand(1, 2, n)
    square = torch.where(square == 0, torch.ones_like(square), square)
    ramp = torch.randn(1, 2, n, dtype=torch.float64) * torch.logspace(-6, 0, n, dtype=torch.float64)
    for dsp in _boundary_cases(proc):
        for sig in (silence, square, ramp):
            x = sig.clone().requires_grad_(True)
            params = {k: torch.tensor([v], dtype=torch.float64, requires_grad=True)
                      for k, v in dsp.items()}
            y, g = proc(x, dsp_params=params, return_gain=True)
            assert torch.isfinite(y).all() and torch.isfinite(g).all()
            (y.sum() + g.sum()).backward()
            assert torch.isfinite(x.grad).all()
            for k, v in params.items():
                if v.grad is None:  # parameters without effect under the hard knee (SPEC 3)
                    assert knee == "hard"
                    assert k in (DEAD_UNDER_HARD_GATE if cls is dynfx.NoiseGate else ("knee_db",))
                    continue
                assert torch.isfinite(v.grad).all(), (k, dsp)
    # silence stays silence
    assert torch.equal(proc(silence, dsp_params=mid_dsp(proc)), silence)


def test_expander_never_boosts():
    proc = dynfx.Expander(knee_type="exponential")
    x = torch.randn(3, 1, 5000, dtype=torch.float64) * torch.logspace(-6, 0, 5000, dtype=torch.float64)
    _, g = proc(x, norm_params=torch.rand(3, 6, dtype=torch.float64), return_gain=True)
    assert (g <= 0).all()
