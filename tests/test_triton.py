"""The Triton (CUDA) kernels (ballistics, biquads): compiled for a CUDA target, run in Triton's
interpreter on CPU tensors, and on a real GPU when one is present."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

HERE = Path(__file__).resolve().parent


def _interpreted(script: str) -> str:
    """Run a check script of this folder with TRITON_INTERPRET=1 in a fresh process (the
    interpreter is chosen at import); its stdout, after asserting that it succeeded."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(HERE / script)],
        env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_kernels_in_triton_interpreter():
    """Forward, backward, edge cases, the sequential fallback and gradcheck (float64), on CPU
    tensors in Triton's interpreter."""
    assert "ok gradcheck" in _interpreted("triton_interpret_check.py")


def test_biquad_kernels_in_triton_interpreter():
    """The biquad scan (chunk summaries, carries across chunks and groups, backward, real and
    complex poles, accuracy near z = 1) against the numba kernels, an extended-precision loop and
    the slow reference, and gradcheck (float64), in Triton's interpreter."""
    out = _interpreted("triton_biquad_check.py")
    assert "ok accuracy near z = 1" in out and "ok biquad gradcheck" in out


@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_biquad_kernels_compile_for_cuda(dtype):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import dynfx._ops.biquad_triton as M

    p = f"*{dtype}"
    kernels = {
        M._summary_kernel: ({"x_ptr": p, "coef_ptr": "*fp64", "sum_ptr": "*fp64", "T": "i32",
                             "NCH": "i32", "BLOCK": "constexpr"}, {"BLOCK": M.MAX_BLOCK}),
        M._carry_kernel: ({"sum_ptr": "*fp64", "state_ptr": "*fp64", "NCH": "i32",
                           "GROUP_": "constexpr"}, {"GROUP_": M.GROUP}),
        M._apply_kernel: ({"x_ptr": p, "coef_ptr": "*fp64", "state_ptr": "*fp64", "y_ptr": p,
                           "T": "i32", "NCH": "i32", "BLOCK": "constexpr"},
                          {"BLOCK": M.MAX_BLOCK}),
    }
    for fn, (sig, consts) in kernels.items():
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                  target=GPUTarget("cuda", 90, 32))
        assert "ptx" in compiled.asm and len(compiled.asm["ptx"]) > 1000, fn.__name__


@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_kernels_compile_for_cuda(dtype):
    """Compile every kernel to GPU code for an sm_90 target (no GPU needed): catches what the
    interpreter accepts but the compiler does not."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import dynfx._ops.ballistics_triton as M

    p = f"*{dtype}"
    kernels = {
        M._scan_forward_kernel: {"d_ptr": p, "ka_ptr": p, "kr_ptr": p, "mask_ptr": "*i8",
                                 "e_ptr": p, "T": "i32", "BLOCK": "constexpr"},
        M._mask_kernel: {"d_ptr": p, "e_ptr": p, "mask_ptr": "*i8", "changed_ptr": "*i32",
                         "T": "i32", "BLOCK": "constexpr"},
        M._sequential_kernel: {"d_ptr": p, "ka_ptr": p, "kr_ptr": p, "mask_ptr": "*i8",
                               "e_ptr": p, "T": "i32"},
        M._scan_backward_kernel: {"g_ptr": p, "d_ptr": p, "e_ptr": p, "ka_ptr": p, "kr_ptr": p,
                                  "mask_ptr": "*i8", "gd_ptr": p, "gka_ptr": p, "gkr_ptr": p,
                                  "T": "i32", "BLOCK": "constexpr"},
    }
    for fn, sig in kernels.items():
        consts = {"BLOCK": 4096} if "BLOCK" in sig else {}
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                  target=GPUTarget("cuda", 90, 32))
        assert "ptx" in compiled.asm and len(compiled.asm["ptx"]) > 1000, fn.__name__


CUDA = pytest.mark.cuda  # skipped without a CUDA device (conftest.py)


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_triton_matches_cpu_kernel(dtype):
    from dynfx import ballistics
    from dynfx.functional import ms_to_coef

    d = torch.rand(16, 131072, dtype=dtype).pow(4)
    ka = ms_to_coef(torch.full((16,), 1.0, dtype=dtype), 44100.0)
    kr = ms_to_coef(torch.full((16,), 100.0, dtype=dtype), 44100.0)
    e_cpu = ballistics(d, ka, kr)
    e_gpu = ballistics(d.cuda(), ka.cuda(), kr.cuda())
    rtol = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.allclose(e_gpu.cpu(), e_cpu, rtol=rtol, atol=rtol * e_cpu.abs().max().item())


@CUDA
def test_cuda_gradcheck():
    from dynfx._ops.ballistics_triton import ballistics_triton

    d = torch.rand(3, 200, dtype=torch.float64, device="cuda", requires_grad=True)
    ka = torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64, device="cuda", requires_grad=True)
    kr = torch.tensor([0.05, 0.1, 0.01], dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, a, r: ballistics_triton(d, a, r), (d, ka, kr))


@CUDA
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_biquad_matches_cpu_kernel(dtype):
    """Values and gradients of the Triton biquad against the numba kernels over many chunks."""
    from dynfx._ops.biquad import biquad

    from dynfx.crossover import biquad_coeffs

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 50000, generator=g, dtype=dtype)
    b, a = biquad_coeffs("lowpass", torch.tensor([30.0, 500.0, 9000.0], dtype=torch.float64),
                         44100.0)
    w = torch.randn(x.shape, generator=g, dtype=dtype)
    out = []
    for dev in ("cpu", "cuda"):
        xx = x.detach().to(dev).requires_grad_(True)  # a leaf on either device
        bb = b.detach().to(dev).requires_grad_(True)
        aa = a.detach().to(dev).requires_grad_(True)
        y = biquad(xx, bb, aa)
        assert y.device.type == dev and y.dtype == dtype
        (y * w.to(dev)).sum().backward()
        out.append([t.detach().cpu() for t in (y, xx.grad, bb.grad, aa.grad[:, 1:])])
    rtol = 1e-10 if dtype == torch.float64 else 2e-6
    for name, t_cpu, t_gpu in zip(("y", "gx", "gb", "ga"), *out):
        scale = t_cpu.abs().max().item()
        assert (t_gpu.double() - t_cpu.double()).abs().max().item() <= rtol * scale, name


@CUDA
def test_cuda_multiband_float32_matches_cpu():
    import dynfx

    proc = dynfx.MultiBandCompressor()
    g = torch.Generator().manual_seed(4)
    x = 0.3 * torch.randn(2, 2, 30000, generator=g)
    u = torch.rand(2, proc.count_num_parameters(), generator=g)
    grads = []
    for dev in ("cpu", "cuda"):
        xx = x.detach().to(dev).requires_grad_(True)
        uu = u.detach().to(dev).requires_grad_(True)
        y = proc(xx, norm_params=uu)
        y.square().sum().backward()
        grads.append((y.detach().cpu(), xx.grad.cpu(), uu.grad.cpu()))
    for name, t_cpu, t_gpu in zip(("y", "gx", "gu"), *grads):
        scale = t_cpu.abs().max().item()
        tol = 1e-3 if name == "gu" else 1e-4  # parameter gradients: sums over every sample
        assert (t_gpu - t_cpu).abs().max().item() <= tol * scale, name
