"""The fused crossover split: one pass against the separate biquad passes, gradcheck across
chunk boundaries, float32 against float64, input checks and the kernel cache."""

import pytest
import torch

from dynfx._ops import split as split_op
from dynfx.crossover import (crossover_ranges, split_bands, split_bands_stacked, split_coeffs)


def _freqs(n_bands, batch, fs, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for lo, hi in crossover_ranges(n_bands, fs):
        u = torch.rand(batch, generator=g, dtype=torch.float64)
        out.append(torch.exp(torch.log(torch.tensor(lo)) * (1 - u) + torch.log(torch.tensor(hi)) * u)
                   .to(dtype).requires_grad_(True))
    return out


def test_topology_three_bands():
    stages, src, band_of = split_op.split_topology(3)
    # AP1(LP0 LP0 x), LP1 LP1 (HP0 HP0 x), and the last band AP1 (HP0 HP0 x) minus band 1
    assert stages == (("lowpass", 0), ("lowpass", 0), ("allpass", 1), ("highpass", 0),
                      ("highpass", 0), ("lowpass", 1), ("lowpass", 1), ("allpass", 1))
    assert src.tolist() == [-1, 0, 1, -1, 3, 4, 5, 4]
    assert band_of.tolist() == [-1, -1, 0, -1, -1, -1, 1, 2]
    assert split_op.stage_levels(3).tolist() == [0, 1, 2, 0, 1, 2, 3, 2]


@pytest.mark.parametrize("n_bands", [2, 3, 4, 6])
def test_last_band_is_the_high_pass_pair(n_bands):
    # LP^2 + HP^2 = AP for the Linkwitz-Riley sections: the difference band of the fused split
    # is the high-pass pair of the separate passes (float64, any band count)
    from dynfx.crossover import allpass2, lr4_highpass, lr4_lowpass
    fs = 44100
    g = torch.Generator().manual_seed(n_bands)
    x = torch.randn(2, 1, 4000, generator=g, dtype=torch.float64)
    f = _freqs(n_bands, 2, fs, seed=n_bands)[-1].detach()
    torch.testing.assert_close(allpass2(x, f, fs) - lr4_lowpass(x, f, fs),
                               lr4_highpass(x, f, fs), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n_bands", range(2, split_op.FUSED_MAX_BANDS + 1))
@pytest.mark.parametrize("steps", [1, 3, 700, 2 * split_op.CHUNK + 37])
def test_fused_equals_separate_passes(n_bands, steps):
    fs = 44100
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(3, 2, steps, generator=g, dtype=torch.float64, requires_grad=True)
    freqs = _freqs(n_bands, 3, fs, seed=n_bands)
    ref = torch.stack(split_bands(x, freqs, fs), dim=1)  # the biquad op, tested against SciPy
    ours = split_op.fused_split(x, split_coeffs(freqs, fs), n_bands)
    assert ours.shape == (3, n_bands, 2, steps)
    # the same recursion with its terms summed in another order: rounding differs, amplified by
    # poles near z = 1 (as against SciPy in test_multiband)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((ours * w).sum(), [x, *freqs])
    grads_ref = torch.autograd.grad((ref * w).sum(), [x, *freqs])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * (1 + b.abs().max().item()))


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("n_bands", [2, 3, 4])
def test_gradcheck_across_chunk_boundaries(monkeypatch, n_bands, pair):
    # one row per task, or two interleaved (where the stages fit one register; 3 rows: the
    # last runs alone)
    monkeypatch.setattr(split_op, "CHUNK", 7)  # 40 samples: six chunk boundaries, a partial one
    monkeypatch.setattr(split_op, "_pair_rows",
                        lambda rows, n: pair and split_op._registers(n) == 1)
    g = torch.Generator().manual_seed(n_bands)
    x = torch.randn(3, 1, 40, generator=g, dtype=torch.float64, requires_grad=True)
    freqs = [torch.tensor([400.0 * 3**i, 500.0 * 3**i, 450.0 * 3**i], dtype=torch.float64)
             for i in range(n_bands - 1)]  # poles well inside the unit circle
    coef = split_coeffs(freqs, 16000)
    # perturbed off the Butterworth relations: every coefficient's gradient on its own
    coef = coef * (1 + 0.02 * torch.randn(coef.shape, generator=g, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda a, c: split_op.fused_split(a, c, n_bands),
                                    (x, coef.requires_grad_(True)))


def test_float32_matches_float64_and_keeps_dtype():
    fs = 48000
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 1, 3000, generator=g, dtype=torch.float64)
    freqs = [f.detach() for f in _freqs(3, 2, fs)]
    y64 = split_bands_stacked(x, freqs, fs)
    y32 = split_bands_stacked(x.float(), [f.float() for f in freqs], fs)
    assert y32.dtype == torch.float32
    # float64 recursion in both: only the input and output roundings differ
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5)


def test_more_bands_than_fused_use_the_separate_passes():
    fs = 44100
    n = split_op.FUSED_MAX_BANDS + 1
    x = torch.randn(1, 1, 500, dtype=torch.float64)
    freqs = [f.detach() for f in _freqs(n, 1, fs)]
    torch.testing.assert_close(split_bands_stacked(x, freqs, fs),
                               torch.stack(split_bands(x, freqs, fs), dim=1))
    with pytest.raises(ValueError, match="num_bands must be in"):
        split_op.fused_split(x, torch.zeros(1, 4 * n, 5, dtype=torch.float64), n)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"coef \(2, 3, 5\)"):
        split_op.fused_split(torch.zeros(2, 1, 10), torch.zeros(2, 4, 5, dtype=torch.float64), 2)


def test_kernel_source_is_cached_on_disk_or_compiled_in_memory(monkeypatch, tmp_path):
    # an unwritable cache location: the kernels compile from memory and still run
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("DYNFX_CACHE_DIR", str(blocker))
    split_op._kernels.cache_clear()
    try:
        x = torch.randn(1, 1, 50, dtype=torch.float64)
        freqs = [torch.tensor([1000.0], dtype=torch.float64)]
        out = split_op.fused_split(x, split_coeffs(freqs, 44100), 2)
        assert not list(tmp_path.glob("**/split2_*.py"))
        torch.testing.assert_close(out, torch.stack(split_bands(x, freqs, 44100), dim=1))
    finally:
        split_op._kernels.cache_clear()
    # a writable one: the generated source lands there, named by its hash
    monkeypatch.setenv("DYNFX_CACHE_DIR", str(tmp_path / "cache"))
    try:
        split_op._kernels(2)
        assert list((tmp_path / "cache" / "kernels").glob("split2_*.py"))
    finally:
        split_op._kernels.cache_clear()


def test_silence_after_sound_and_constant_gradients_flush_to_zero_not_nan():
    # decaying states and adjoints are flushed below TINY (no subnormal slow-down); NaN stays
    fs = 44100
    freqs = [torch.tensor([200.0], dtype=torch.float64), torch.tensor([3000.0], dtype=torch.float64)]
    x = torch.zeros(1, 1, 200000, dtype=torch.float64)
    x[..., :100] = 1.0
    y = split_bands_stacked(x.requires_grad_(True), freqs, fs)
    assert torch.isfinite(y).all() and (y[..., -1000:] == 0).all()  # exact silence at the end
    y.backward(torch.ones_like(y))  # a constant gradient: the high-pass adjoints see DC
    assert torch.isfinite(x.grad).all()
    bad = torch.zeros(1, 1, 300, dtype=torch.float64)
    bad[0, 0, 50] = float("nan")
    assert torch.isnan(split_bands_stacked(bad, freqs, fs)[..., 60:]).all()


@pytest.mark.parametrize("n_bands", [2, 3, 4, 6])
def test_split_coeffs_are_the_stages_biquad_coeffs(n_bands):
    from dynfx.crossover import biquad_coeffs
    freqs = _freqs(n_bands, 4, 48000, seed=n_bands)
    coef = split_coeffs(freqs, 48000)
    stages, _, _ = split_op.split_topology(n_bands)
    for k, (kind, i) in enumerate(stages):
        b, a = biquad_coeffs(kind, freqs[i], 48000)
        assert torch.equal(coef[:, k], torch.cat([b, a[:, 1:]], dim=1)), (k, kind)
    # gradients reach the frequencies through every kind of stage
    grads = torch.autograd.grad(coef.square().sum(), freqs)
    assert all(torch.isfinite(g).all() and (g != 0).all() for g in grads)
