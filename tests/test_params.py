"""Parameter tables, normalisation, overrides and every error case of SPEC section 1."""

import math
import re

import pytest
import torch

import dynfx
from dynfx import EffectParam

from .conftest import ALL, MULTI, mid_dsp

def _count(cls, num_bands: int = 3) -> int:
    """The parameter count from the class's table: per band and one crossover between bands."""
    if cls in MULTI:
        return len(cls.band_table) * num_bands + num_bands - 1
    return len(cls.param_table)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_counts(cls):
    p = cls()
    assert p.count_num_parameters() == _count(cls) > 0
    assert len(p.param_names) == len(p.params) == _count(cls)


def test_counts_of_the_spec():
    """SPEC section 1's counts for the nine classes it defines (a new class adds none here)."""
    spec = {"Compressor": 6, "Limiter": 6, "Expander": 6, "NoiseGate": 5, "TransientShaper": 5,
            "MultiBandCompressor": 20, "MultiBandLimiter": 20, "MultiBandExpander": 17,
            "MultiBandNoiseGate": 17}
    for name, count in spec.items():
        assert getattr(dynfx, name)().count_num_parameters() == count, name


@pytest.mark.parametrize("cls", MULTI, ids=lambda c: c.__name__)
@pytest.mark.parametrize("n", range(2, 9))
def test_multiband_counts(cls, n):
    assert cls(num_bands=n).count_num_parameters() == _count(cls, n)


RANGE = re.compile(r"(?:band\{i\}_)?([a-z]+_?[a-z]*) \[(-?[\d.]+), (-?[\d.]+)\]( \(log\))?")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_docstring_ranges_match_the_tables(cls):
    """Where a class docstring states a range, it is the table's (ranges are not restated by
    hand without a check)."""
    table = cls.band_table if cls in MULTI else cls.param_table
    for name, lo, hi, log in RANGE.findall(cls.__doc__ or ""):
        if name not in table:
            continue  # a range of something else (e.g. the crossover slices)
        spec = table[name]
        assert (float(lo), float(hi)) == (spec.min_val, spec.max_val), (cls.__name__, name)
        assert (spec.scale == "log") == bool(log), (cls.__name__, name)


def test_docstrings_state_ranges():
    """The regex of the check above finds the ranges it is meant to check."""
    found = RANGE.findall(dynfx.Compressor.__doc__)
    assert ("ratio", "1", "20", " (log)") in found and len(found) == 6
    assert len(RANGE.findall(dynfx.MultiBandCompressor.__doc__)) == 6


def test_order_single():
    assert dynfx.Compressor().param_names == (
        "threshold_db", "ratio", "knee_db", "attack_ms", "release_ms", "makeup_db"
    )
    assert dynfx.NoiseGate().param_names == (
        "threshold_db", "range_db", "knee_db", "attack_ms", "release_ms"
    )
    assert dynfx.TransientShaper().param_names == (
        "attack_db", "sustain_db", "fast_ms", "slow_ms", "release_ms"
    )


def test_order_multiband():
    names = dynfx.MultiBandCompressor(num_bands=3).param_names
    per = ["threshold_db", "ratio", "knee_db", "attack_ms", "release_ms", "makeup_db"]
    expected = [f"band{i}_{n}" for i in range(3) for n in per] + ["crossover0_freq", "crossover1_freq"]
    assert list(names) == expected
    gate = dynfx.MultiBandNoiseGate(num_bands=2).param_names
    assert gate[:5] == tuple(f"band0_{n}" for n in dynfx.NoiseGate().param_names)
    assert gate[-1] == "crossover0_freq"


def test_ranges_match_spec():
    c = dynfx.Compressor().params
    assert (c["ratio"].min_val, c["ratio"].max_val, c["ratio"].scale) == (1, 20, "log")
    assert c["attack_ms"] == EffectParam(0.1, 100, "log")
    lim = dynfx.Limiter().params
    assert lim["knee_db"] == EffectParam(0, 1) and lim["release_ms"] == EffectParam(5, 500, "log")
    exp = dynfx.Expander().params
    assert exp["threshold_db"] == EffectParam(-80, 0) and exp["ratio"] == EffectParam(1, 8, "log")
    gate = dynfx.NoiseGate().params
    assert gate["threshold_db"] == EffectParam(-90, -20)
    mbe = dynfx.MultiBandExpander().params
    assert mbe["band1_threshold_db"] == EffectParam(-80, -30)
    mbc = dynfx.MultiBandCompressor().params
    assert mbc["band2_makeup_db"] == EffectParam(-24, 24)
    assert mbc["band0_attack_ms"] == EffectParam(1, 500, "log")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_normalize_denormalize_round_trip(cls):
    p = cls()
    u = torch.rand(5, p.count_num_parameters(), dtype=torch.float64)
    dsp = p.denormalize(u)
    assert list(dsp) == list(p.param_names)
    assert torch.allclose(p.normalize(dsp), u, atol=1e-12, rtol=0)
    dsp2 = p.denormalize(p.normalize(dsp))
    for n in dsp:
        assert torch.allclose(dsp2[n], dsp[n], rtol=1e-12, atol=1e-12)
    # dict form of norm_params gives the same values
    as_dict = {n: u[:, i] for i, n in enumerate(p.param_names)}
    for n, v in p.denormalize(as_dict).items():
        assert torch.equal(v, dsp[n])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_matrix_mapping_equals_column_by_column(cls, dtype):
    # a (B, P) norm_params tensor is checked and mapped as one matrix inside a call: the same
    # values and gradients, bit for bit, as mapping each column with its EffectParam
    proc = cls(param_range={proc_name: EffectParam(0.5, 8.0, "log")
                            for proc_name in cls().param_names[:1]})
    g = torch.Generator().manual_seed(3)
    u = torch.rand(4, proc.count_num_parameters(), generator=g, dtype=torch.float64)
    u[0] = 0.0
    u[1] = 1.0
    u = u.to(dtype).requires_grad_(True)
    x = torch.zeros(4, 1, 8, dtype=dtype)
    fast = proc._resolve(x, u, None, validate=True)
    w = torch.randn(4, len(fast), generator=g, dtype=torch.float64).to(dtype)
    grad_fast, = torch.autograd.grad(sum((v * w[:, i]).sum() for i, v in enumerate(fast.values())), u)
    ref = {n: spec.denormalize(u[:, i]) for i, (n, spec) in enumerate(proc.params.items())}
    grad_ref, = torch.autograd.grad(sum((v * w[:, i]).sum() for i, v in enumerate(ref.values())), u)
    assert list(fast) == list(ref)
    for n in ref:
        assert torch.equal(fast[n], ref[n]), n
    assert torch.equal(grad_fast, grad_ref)


def test_normalize_accepts_numbers():
    p = dynfx.Compressor()
    u = p.normalize(mid_dsp(p))
    assert u.shape == (1, 6)
    assert torch.allclose(u, torch.full((1, 6), 0.5, dtype=u.dtype), atol=1e-6)


def test_log_scale_mapping():
    p = EffectParam(0.1, 1000.0, "log")
    u = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.1, 1.0, 10.0, 1000.0], dtype=torch.float64)
    assert torch.allclose(p.denormalize(u), expected, rtol=1e-12)
    lin = EffectParam(-60.0, 0.0)
    assert torch.allclose(lin.denormalize(u), torch.tensor([-60.0, -45.0, -30.0, 0.0], dtype=torch.float64))
    ratio = dynfx.Compressor().params["ratio"]
    assert math.isclose(ratio.denormalize(torch.tensor(0.5, dtype=torch.float64)).item(), math.sqrt(20.0))


def test_effect_param_errors():
    with pytest.raises(ValueError, match="scale"):
        EffectParam(0, 1, "cubic")
    with pytest.raises(ValueError, match="min_val < max_val"):
        EffectParam(1, 1)
    with pytest.raises(ValueError, match="log"):
        EffectParam(0, 1, "log")


def test_param_range_override():
    comp = dynfx.Compressor(param_range={"threshold_db": EffectParam(-40.0, -10.0)})
    assert comp.params["threshold_db"] == EffectParam(-40.0, -10.0)
    assert comp.param_names == dynfx.Compressor().param_names
    dsp = comp.denormalize(torch.zeros(1, 6))
    assert dsp["threshold_db"].item() == -40.0
    with pytest.raises(ValueError, match="unknown parameter 'depth_db'.*threshold_db"):
        dynfx.Compressor(param_range={"depth_db": EffectParam(0.0, 1.0)})
    with pytest.raises(ValueError, match="EffectParam"):
        dynfx.Compressor(param_range={"ratio": (1.0, 4.0)})


# --- errors of SPEC section 1 ---------------------------------------------------------------
def _x(b=2):
    return 0.1 * torch.randn(b, 2, 256)


@pytest.mark.parametrize(
    "bad",
    [torch.randn(2, 256), torch.randn(1, 2, 3, 4), torch.zeros(2, 2, 8, dtype=torch.int32),
     torch.zeros(2, 2, 8, dtype=torch.complex64), torch.zeros(0, 2, 8), torch.zeros(1, 0, 8),
     torch.zeros(1, 2, 0)],
    ids=["rank2", "rank4", "int", "complex", "B0", "C0", "T0"],
)
def test_bad_input_tensor(bad):
    comp = dynfx.Compressor()
    with pytest.raises(ValueError, match=r"shape \(batch, channels, samples\).*got"):
        comp(bad, dsp_params=mid_dsp(comp))


def test_not_a_tensor():
    with pytest.raises(ValueError, match="shape"):
        dynfx.Compressor()([[0.0]], dsp_params={})


def test_exactly_one_param_source():
    comp = dynfx.Compressor()
    with pytest.raises(ValueError, match="exactly one"):
        comp(_x())
    with pytest.raises(ValueError, match="exactly one"):
        comp(_x(), norm_params=torch.rand(2, 6), dsp_params=mid_dsp(comp))


def test_missing_and_unknown_names():
    comp = dynfx.Compressor()
    dsp = mid_dsp(comp)
    del dsp["release_ms"]
    with pytest.raises(ValueError, match="missing.*release_ms"):
        comp(_x(), dsp_params=dsp)
    dsp = mid_dsp(comp) | {"mix": 0.5}
    with pytest.raises(ValueError, match="unknown.*'mix'.*threshold_db, ratio"):
        comp(_x(), dsp_params=dsp)
    norm = {n: torch.rand(2) for n in comp.param_names if n != "ratio"}
    with pytest.raises(ValueError, match="missing.*ratio"):
        comp(_x(), norm_params=norm)


def test_wrong_batch_size():
    comp = dynfx.Compressor()
    dsp = mid_dsp(comp) | {"attack_ms": torch.tensor([1.0, 2.0, 3.0])}
    with pytest.raises(ValueError, match="attack_ms.*\\(2,\\).*\\(3,\\)"):
        comp(_x(2), dsp_params=dsp)
    with pytest.raises(ValueError, match=r"norm_params must have shape \(2, 6\).*\(3, 6\)"):
        comp(_x(2), norm_params=torch.rand(3, 6))
    with pytest.raises(ValueError, match=r"\(2, 6\).*\(2, 5\)"):
        comp(_x(2), norm_params=torch.rand(2, 5))
    norm = {n: torch.rand(2) for n in comp.param_names} | {"knee_db": torch.rand(4)}
    with pytest.raises(ValueError, match="knee_db"):
        comp(_x(2), norm_params=norm)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_out_of_range_dsp_values_name_parameter(cls):
    proc = cls()
    for name, spec in proc.params.items():
        for bad in (spec.min_val - 0.1 * (spec.max_val - spec.min_val) - 1e-3,
                    spec.max_val + 0.1 * (spec.max_val - spec.min_val) + 1e-3):
            dsp = mid_dsp(proc) | {name: bad}
            with pytest.raises(ValueError, match=rf"'{name}'.*outside the allowed range \[") as e:
                proc(_x(1), dsp_params=dsp)
            assert f"{spec.min_val:g}" in str(e.value) and f"{spec.max_val:g}" in str(e.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values(value):
    comp = dynfx.Compressor()
    with pytest.raises(ValueError, match="'ratio'.*not finite.*1, 20"):
        comp(_x(), dsp_params=mid_dsp(comp) | {"ratio": value})
    u = torch.rand(2, 6)
    u[1, 3] = value
    with pytest.raises(ValueError, match="'attack_ms'.*not finite"):
        comp(_x(), norm_params=u)


def test_norm_values_outside_unit_interval():
    comp = dynfx.Compressor()
    u = torch.full((2, 6), 0.5)
    u[0, 3] = -0.2
    with pytest.raises(ValueError, match=r"norm_params\['attack_ms'\] = -0.2.*\[0, 1\]"):
        comp(_x(), norm_params=u)
    u[0, 3] = 1.3
    with pytest.raises(ValueError, match="'attack_ms'.*1.3"):
        comp(_x(), norm_params=u)
    # validate=False skips the check (the caller takes responsibility)
    u[0, 3] = 1.001
    y = comp(_x(), norm_params=u, validate=False)
    assert torch.isfinite(y).all()


def test_dsp_param_wrong_type():
    comp = dynfx.Compressor()
    with pytest.raises(ValueError, match="ratio"):
        comp(_x(), dsp_params=mid_dsp(comp) | {"ratio": "4"})
    with pytest.raises(ValueError, match="ratio.*\\(2, 2\\)"):
        comp(_x(), dsp_params=mid_dsp(comp) | {"ratio": torch.ones(2, 2) * 4})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"knee_type": "soft"}, "knee_type.*'hard', 'quadratic', 'exponential'"),
        ({"smooth_type": "fir"}, "smooth_type.*'ballistics', 'iir'"),
        ({"detector": "lufs"}, "detector.*'rms', 'peak'"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": float("nan")}, "sample_rate"),
        ({"sample_rate": "44100"}, "sample_rate"),
    ],
)
def test_bad_constructor_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dynfx.Compressor(**kwargs)


@pytest.mark.parametrize("n", [1, 9, 2.5, True])
def test_bad_num_bands(n):
    with pytest.raises(ValueError, match=r"num_bands must be one of \(2, 3, 4, 5, 6, 7, 8\)"):
        dynfx.MultiBandCompressor(num_bands=n)


def test_transient_shaper_options():
    with pytest.raises(ValueError, match="smooth_type"):
        dynfx.TransientShaper(smooth_type="x")
    with pytest.raises(TypeError):
        dynfx.TransientShaper(knee_type="hard")


def test_dsp_params_accept_numbers_0d_and_batch_tensors():
    comp = dynfx.Compressor()
    x = _x(3)
    base = mid_dsp(comp)
    y1 = comp(x, dsp_params=base)
    y2 = comp(x, dsp_params={n: torch.tensor(v) for n, v in base.items()})
    y3 = comp(x, dsp_params={n: torch.full((3,), v, dtype=torch.float64) for n, v in base.items()})
    assert torch.equal(y1, y2)
    assert torch.allclose(y1, y3, rtol=1e-6, atol=1e-7)
    assert y3.dtype == torch.float32  # parameters are cast to x's dtype
