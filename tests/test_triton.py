"""The Triton (CUDA) ballistics kernels: compiled for a CUDA target, run in Triton's interpreter on
CPU tensors, and on a real GPU when one is present."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

HERE = Path(__file__).resolve().parent


def test_kernels_in_triton_interpreter():
    """Forward, backward, edge cases, the sequential fallback and gradcheck (float64), on CPU
    tensors in Triton's interpreter, in a fresh process (the interpreter is chosen at import)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_interpret_check.py")],
        env=env, cwd=HERE.parent, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ok gradcheck" in proc.stdout


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
