"""dtype and device contract of SPEC section 1."""

import pytest
import torch

import dynfx

from .conftest import ALL

CUDA = pytest.mark.cuda  # skipped without a CUDA device (conftest.py)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_float32_float64_preserved(cls, dtype):
    proc = cls()
    x = (0.3 * torch.randn(2, 2, 2000)).to(dtype)
    u = torch.rand(2, proc.count_num_parameters())  # float32 parameters are cast to x's dtype
    y, g = proc(x, norm_params=u, return_gain=True)
    assert y.dtype == dtype and g.dtype == dtype and y.shape == x.shape
    # the computation really happens in that precision: float32 and float64 agree closely
    y64 = proc(x.double(), norm_params=u.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-3
    assert torch.allclose(y.double(), y64, rtol=tol, atol=tol * y64.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_half_precision_accepted(cls, dtype):
    proc = cls()
    x32 = 0.3 * torch.randn(2, 2, 2000)
    u = torch.rand(2, proc.count_num_parameters())
    y = proc(x32.to(dtype), norm_params=u)
    assert y.dtype == dtype
    ref = proc(x32.to(dtype).float(), norm_params=u)  # computed in float32, cast back
    assert torch.equal(y, ref.to(dtype))


def test_any_channel_count_and_length():
    comp = dynfx.Compressor()
    for shape in [(1, 1, 1), (3, 5, 7), (1, 8, 100)]:
        x = torch.randn(*shape)
        y = comp(x, norm_params=torch.rand(shape[0], 6))
        assert y.shape == x.shape and torch.isfinite(y).all()


@CUDA
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_cuda_matches_cpu(cls):
    proc = cls()
    x = 0.3 * torch.randn(2, 2, 4000, dtype=torch.float64)
    u = torch.rand(2, proc.count_num_parameters(), dtype=torch.float64)
    y_cpu = proc(x, norm_params=u)
    x_gpu = x.cuda().requires_grad_(True)
    y_gpu = proc(x_gpu, norm_params=u.cuda())
    assert y_gpu.is_cuda
    assert torch.allclose(y_gpu.cpu(), y_cpu, rtol=1e-9, atol=1e-12)
    y_gpu.sum().backward()
    assert x_gpu.grad.is_cuda and torch.isfinite(x_gpu.grad).all()
