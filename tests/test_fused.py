"""The fused single-band CPU operation against the composition of separate PyTorch operations."""


import pytest
import torch

import dynfx
from dynfx._ops.band import band_dynamics
from dynfx.functional import GAIN_COMPUTERS, process_band, process_band_reference

from .conftest import SINGLE, level_sweep

# every single-band class (each runs process_band), and every gain computer with a kernel branch
# with the class whose range sets its test amounts
CLASSES = SINGLE
KERNEL_COMPUTERS = {name: next(c for c in SINGLE if c.gain_computer == name)
                    for name, gc in GAIN_COMPUTERS.items() if gc.code is not None}


def _band(proc, x, p, reference=False):
    fn = process_band_reference if reference else process_band
    return fn(x, p, proc.gain_computer, proc.knee_type, proc.detector, proc.smooth_type,
              proc.sample_rate)


@pytest.mark.parametrize("detector", ["rms", "peak"])
@pytest.mark.parametrize("smooth_type", ["ballistics", "iir"])
@pytest.mark.parametrize("knee", ["hard", "quadratic", "exponential"])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_fused_equals_reference(cls, knee, smooth_type, detector):
    proc = cls(knee_type=knee, smooth_type=smooth_type, detector=detector)
    x = level_sweep(batch=3, channels=2, seconds=0.1, hi_db=10.0).requires_grad_(True)
    u = torch.rand(3, proc.count_num_parameters(), dtype=torch.float64)
    p = {n: v.detach().requires_grad_(True) for n, v in proc.denormalize(u).items()}
    y, g = _band(proc, x, p)
    y_ref, g_ref = _band(proc, x, p, reference=True)
    assert torch.allclose(y, y_ref, rtol=1e-9, atol=1e-12)
    assert torch.allclose(g, g_ref, rtol=1e-9, atol=1e-9)
    wy, wg = torch.randn_like(y), torch.randn_like(g)  # a loss through both outputs
    leaves = (x, *p.values())
    grads = torch.autograd.grad((y * wy).sum() + (g * wg).sum(), leaves, allow_unused=True)
    grads_ref = torch.autograd.grad((y_ref * wy).sum() + (g_ref * wg).sum(), leaves,
                                    allow_unused=True)
    for name, a, b in zip(["x", *p], grads, grads_ref):
        if b is None:  # unused by the reference (e.g. knee_db under the hard knee): zero here
            assert a is None or torch.all(a == 0), name
            continue
        # 1e-6 relative to the gradient's scale over the batch (sums of many terms cancel)
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item()), name


@pytest.mark.parametrize("kind", sorted(KERNEL_COMPUTERS))
@pytest.mark.parametrize("knee", ["hard", "quadratic", "exponential"])
@pytest.mark.parametrize("detector", ["rms", "peak"])
def test_fused_gradcheck(kind, knee, detector):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 2, 40, generator=g, dtype=torch.float64)
         * torch.linspace(0.01, 1.0, 40, dtype=torch.float64)).requires_grad_(True)

    def col(*vals):
        return torch.tensor(vals, dtype=torch.float64, requires_grad=True)

    # the amount (ratio, range) at 40 % and 70 % of the range of a class that uses this curve
    spec = KERNEL_COMPUTERS[kind].param_table[GAIN_COMPUTERS[kind].amount]
    amount = col(*(float(spec.denormalize(torch.tensor(u, dtype=torch.float64)))
                   for u in (0.4, 0.7)))
    params = (col(-25.0, -15.0), amount, col(6.0, 3.0), col(0.3, 0.5), col(0.05, 0.1),
              col(1.0, -2.0))

    def fn(x, *p):
        return band_dynamics(x, *p, GAIN_COMPUTERS[kind], knee, detector)

    assert torch.autograd.gradcheck(fn, (x, *params), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("detector", ["rms", "peak"])
def test_fixed_audio_skips_the_input_gradient_only(detector):
    # training renders fixed dry audio: the op then skips the input-gradient pass, and the
    # parameters' gradients are those of a call whose audio needs a gradient
    proc = dynfx.Compressor(detector=detector)
    x = level_sweep(batch=2, channels=2, seconds=0.05, hi_db=10.0)
    u = torch.rand(2, proc.count_num_parameters(), dtype=torch.float64)
    p = {n: v.detach().requires_grad_(True) for n, v in proc.denormalize(u).items()}
    grads = []
    for audio in (x, x.clone().requires_grad_(True)):
        y, g = _band(proc, audio, p)
        grads.append(torch.autograd.grad((y * y).sum() + g.sum(), list(p.values())))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_peak_detector_ties_share_the_gradient():
    x = torch.full((1, 2, 50), 0.5, dtype=torch.float64, requires_grad=True)  # identical channels
    proc = dynfx.Limiter()
    p = {n: v.detach() for n, v in proc.denormalize(torch.full((1, 6), 0.3, dtype=torch.float64)).items()}
    y, _ = _band(proc, x, p)
    (gx,) = torch.autograd.grad(y.sum(), x)
    y_ref, _ = _band(proc, x, p, reference=True)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    assert torch.allclose(gx, gx_ref, rtol=1e-9)
    assert torch.allclose(gx[:, 0], gx[:, 1])


@pytest.mark.parametrize("detector", ["rms", "peak"])
def test_summed_rows_equal_the_sum_of_the_bands(detector):
    # sum_rows: consecutive rows are the bands of one item; the op returns their sum directly
    proc = dynfx.Compressor(detector=detector)
    x = level_sweep(batch=6, channels=2, seconds=0.05, hi_db=10.0).requires_grad_(True)
    u = torch.rand(6, proc.count_num_parameters(), dtype=torch.float64)
    p = {n: v.detach().requires_grad_(True) for n, v in proc.denormalize(u).items()}
    args = (proc.gain_computer, proc.knee_type, detector, proc.smooth_type, proc.sample_rate)
    y, g = process_band(x, p, *args, sum_rows=3)
    y_bands, g_bands = process_band(x, p, *args)
    y_ref, g_ref = process_band_reference(x, p, *args, sum_rows=3)
    assert y.shape == (2, 2, x.shape[-1]) and g.shape == (6, x.shape[-1])
    torch.testing.assert_close(y, y_bands.view(2, 3, 2, -1).sum(dim=1), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g, g_bands, rtol=0, atol=0)
    wy, wg = torch.randn_like(y), torch.randn_like(g)
    leaves = (x, *p.values())
    grads = torch.autograd.grad((y * wy).sum() + (g * wg).sum(), leaves)
    grads_ref = torch.autograd.grad((y_ref * wy).sum() + (g_ref * wg).sum(), leaves)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())
    # a loss on one output only (the other's gradient is None inside the op)
    for pick in (0, 1):
        out = process_band(x, p, *args, sum_rows=3)[pick]
        ref = process_band_reference(x, p, *args, sum_rows=3)[pick]
        grads = torch.autograd.grad(out.square().sum(), leaves, allow_unused=True)
        grads_ref = torch.autograd.grad(ref.square().sum(), leaves, allow_unused=True)
        for a, b in zip(grads, grads_ref):
            if b is None:
                assert a is None or torch.all(a == 0)
                continue
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * b.abs().max().item())
    with pytest.raises(ValueError, match="divisor"):
        process_band(x, p, *args, sum_rows=4)
