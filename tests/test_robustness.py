"""Bad input is never silent: non-finite or overflowing audio, boolean/complex settings, NumPy
scalars, the meta device, and physically meaningless parameter ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynfx
from dynfx import EffectParam

from .conftest import ALL, mid_dsp


def _knees(cls):
    return [None] if cls is dynfx.TransientShaper else ["hard", "quadratic", "exponential"]


def _make(cls, knee):
    return cls(44100) if knee is None else cls(44100, knee_type=knee)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e20])
def test_bad_samples_raise_or_poison_the_item(cls, bad):
    torch.manual_seed(0)
    x = 0.3 * torch.randn(2, 2, 4096)
    for knee in _knees(cls):
        proc = _make(cls, knee)
        norm = torch.full((2, proc.count_num_parameters()), 0.5)
        xb = x.clone()
        xb[1, 1, 700] = bad
        xb[1, 0, 900] = bad
        with pytest.raises(ValueError, match=r"item 1, channel 1, sample 700"):
            proc(xb, norm_params=norm)
        y, g = proc(xb, norm_params=norm, validate=False, return_gain=True)
        # never a silent switch-off: the bad item is NaN throughout, the other one untouched
        assert bool(torch.isnan(y[1]).all()) and bool(torch.isnan(g[1]).all())
        y0 = proc(x[:1], norm_params=norm[:1])
        torch.testing.assert_close(y[:1], y0)


def test_overflow_bound_is_per_dtype():
    comp = dynfx.Compressor(44100)
    dsp = mid_dsp(comp)
    x = torch.zeros(1, 1, 256, dtype=torch.float64)
    x[0, 0, 10] = 1e20  # fine in float64 (power 1e40 is far from overflow)
    comp(x, dsp_params=dsp)
    with pytest.raises(ValueError, match="sample 10"):
        comp(x.float(), dsp_params=dsp)


def test_boolean_complex_and_meta_settings_are_errors():
    comp = dynfx.Compressor(44100)
    x = 0.1 * torch.randn(1, 1, 512)
    dsp = mid_dsp(comp)
    with pytest.raises(ValueError, match="boolean"):
        comp(x, dsp_params={**dsp, "ratio": torch.tensor(True)})
    with pytest.raises(ValueError, match="expected a number"):
        comp(x, dsp_params={**dsp, "ratio": True})
    with pytest.raises(ValueError, match="real tensor"):
        comp(x, norm_params=torch.rand(1, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match="real tensor"):
        comp(x, norm_params={n: torch.tensor([0.5 + 0j]) for n in comp.param_names})
    with pytest.raises(ValueError, match="meta"):
        comp(torch.empty(1, 1, 512, device="meta"), dsp_params=dsp)
    with pytest.raises(ValueError, match="meta"):
        comp(x, norm_params=torch.empty(1, 6, device="meta"))
    with pytest.raises(ValueError, match="meta"):
        comp(x, dsp_params={**dsp, "ratio": torch.empty((), device="meta")})


def test_numpy_scalars_count_as_numbers():
    comp = dynfx.Compressor(44100)
    x = 0.1 * torch.randn(1, 1, 2048)
    dsp = mid_dsp(comp)
    ref = comp(x, dsp_params={**dsp, "ratio": 4.0, "knee_db": 4.0})
    got = comp(x, dsp_params={**dsp, "ratio": np.float32(4.0), "knee_db": np.int64(4)})
    torch.testing.assert_close(got, ref)
    norm = comp.normalize({**dsp, "ratio": np.float64(4.0)})
    assert norm.shape == (1, 6)


@pytest.mark.parametrize("name,spec,match", [
    ("ratio", EffectParam(0.5, 4.0), "ratio below 1"),
    ("attack_ms", EffectParam(-1.0, 10.0), "negative"),
    ("release_ms", EffectParam(-5.0, 10.0), "negative"),
    ("knee_db", EffectParam(-3.0, 3.0), "knee width"),
])
def test_meaningless_param_ranges_are_refused(name, spec, match):
    with pytest.raises(ValueError, match=match):
        dynfx.Compressor(44100, param_range={name: spec})


def test_empty_reversed_and_log_ranges_and_crossovers_are_refused():
    with pytest.raises(ValueError, match="min_val < max_val"):
        EffectParam(4.0, 4.0)
    with pytest.raises(ValueError, match="min_val < max_val"):
        EffectParam(10.0, 1.0)
    with pytest.raises(ValueError, match="log scale"):
        EffectParam(0.0, 10.0, scale="log")
    with pytest.raises(ValueError, match="crossover"):
        dynfx.MultiBandCompressor(44100, param_range={
            "crossover0_freq": EffectParam(20.0, 30000.0, "log")})
    gate = dynfx.NoiseGate(44100, param_range={"attack_ms": EffectParam(0.0, 10.0)})
    assert gate.params["attack_ms"].min_val == 0.0  # zero is a valid (instant) time
