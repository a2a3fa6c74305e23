"""The biquad op: numba kernels against a slow PyTorch loop, SciPy's lfilter, and gradcheck."""

import numpy as np
import pytest
import scipy.signal as sps
import torch

from dynfx._ops.biquad import biquad_filter, biquad_reference
from dynfx.crossover import biquad_coeffs


@pytest.mark.parametrize("kind", ["lowpass", "highpass", "allpass"])
@pytest.mark.parametrize("shape", [(3, 2, 500), (1, 1, 1), (2, 3, 2), (1, 2, 700)])
def test_kernel_equals_reference_and_scipy(kind, shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    f = torch.linspace(30.0, 15000.0, shape[0], dtype=torch.float64).requires_grad_(True)
    b, a = biquad_coeffs(kind, f, 44100)
    y = biquad_filter(x, b, a)
    y_ref = biquad_reference(x, b, a)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for i in range(shape[0]):
        for c in range(shape[1]):
            ref = sps.lfilter(b[i].detach().numpy(), a[i].detach().numpy(), x[i, c].detach().numpy())
            # SciPy runs another filter structure (transposed direct form II): rounding differs
            assert np.allclose(y[i, c].detach().numpy(), ref, rtol=1e-9, atol=1e-9)
    w = torch.randn(y.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((y * w).sum(), (x, f), retain_graph=True)
    grads_ref = torch.autograd.grad((y_ref * w).sum(), (x, f))
    for a_, b_ in zip(grads, grads_ref):
        assert torch.allclose(a_, b_, rtol=1e-9, atol=1e-9 * (1 + b_.abs().max().item()))


def test_gradcheck_coefficients_and_input():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 30, generator=g, dtype=torch.float64, requires_grad=True)
    b = (0.3 * torch.randn(2, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    a = torch.tensor([[1.0, -0.6, 0.2], [1.0, 0.4, 0.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(biquad_filter, (x, b, a))


def test_float32_close_to_float64():
    x = torch.randn(2, 2, 20000, dtype=torch.float64)
    b, a = biquad_coeffs("lowpass", torch.tensor([25.0, 8000.0], dtype=torch.float64), 48000)
    y64 = biquad_filter(x, b, a)
    y32 = biquad_filter(x.float(), b.float(), a.float())
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), y64, atol=1e-3 * y64.abs().max().item())
