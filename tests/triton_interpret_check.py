"""Run by tests/test_triton.py in a subprocess with TRITON_INTERPRET=1: the Triton ballistics
kernels on CPU tensors in Triton's interpreter, against the pure-PyTorch reference."""

import os
import sys

import torch

from dynfx import ballistics_reference
from dynfx.functional import ms_to_coef


def coefs(b, att_ms, rel_ms, dtype):
    return (ms_to_coef(torch.full((b,), att_ms, dtype=dtype), 44100.0),
            ms_to_coef(torch.full((b,), rel_ms, dtype=dtype), 44100.0))


def check(name, d, ka, kr, rtol, max_rounds=64):
    from dynfx._ops.ballistics_triton import ballistics_triton

    shared = ka is kr
    d = d.clone().requires_grad_(True)
    ka = ka.clone().requires_grad_(True)
    kr = ka if shared else kr.clone().requires_grad_(True)
    e = ballistics_triton(d, ka, kr, max_rounds)
    e_ref = ballistics_reference(d, ka, kr)
    scale = e_ref.abs().max().item() or 1.0
    assert torch.allclose(e, e_ref, rtol=rtol, atol=rtol * scale), name
    w = torch.randn(e.shape, dtype=e.dtype, generator=torch.Generator().manual_seed(1))
    leaves = (d, ka) if shared else (d, ka, kr)
    grads = torch.autograd.grad((e * w).sum(), leaves, retain_graph=True)
    grads_ref = torch.autograd.grad((e_ref * w).sum(), leaves)
    for g, g_ref in zip(grads, grads_ref):
        scale = g_ref.abs().max().item() or 1.0
        assert torch.allclose(g, g_ref, rtol=rtol, atol=rtol * scale), name
    print("ok", name)


def main():
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    gen = torch.Generator().manual_seed(0)
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        noise = torch.rand(2, 300, generator=gen, dtype=torch.float64).pow(4).to(dtype)
        bursts = noise * (torch.arange(300) % 60 < 15).to(dtype)
        check(f"{dtype} noise", noise, *coefs(2, 1.0, 50.0, dtype), rtol)
        check(f"{dtype} bursts", bursts, *coefs(2, 0.1, 1000.0, dtype), rtol)
        check(f"{dtype} attack slower than release", noise, *coefs(2, 100.0, 10.0, dtype), rtol)
        check(f"{dtype} very long release", bursts, *coefs(2, 1.0, 1e5, dtype), rtol)
        check(f"{dtype} T=1", noise[:, :1], *coefs(2, 1.0, 50.0, dtype), rtol)
        check(f"{dtype} B=1", noise[:1], *coefs(1, 5.0, 50.0, dtype), rtol)
        check(f"{dtype} silence", torch.zeros(2, 100, dtype=dtype), *coefs(2, 1.0, 50.0, dtype), rtol)
        check(f"{dtype} fallback after one round", noise, *coefs(2, 1.0, 50.0, dtype), rtol,
              max_rounds=1)
        k = coefs(2, 20.0, 20.0, dtype)[0]
        check(f"{dtype} iir (one shared coefficient)", noise, k, k, rtol)
        check(f"{dtype} equal attack and release, two tensors", noise,
              *coefs(2, 20.0, 20.0, dtype), rtol)
    # the longer signal spans several blocks of the scan (block carries)
    long = torch.rand(1, 2500, generator=gen, dtype=torch.float64).pow(4)
    check("float64 several blocks", long, *coefs(1, 2.0, 80.0, torch.float64), 1e-10)
    from dynfx._ops.ballistics_triton import ballistics_triton, solve_forward

    _, _, rounds = solve_forward(long, *coefs(1, 2.0, 80.0, torch.float64))
    assert rounds <= 64, rounds
    d = torch.rand(2, 40, dtype=torch.float64, generator=gen, requires_grad=True)
    ka = torch.tensor([0.3, 0.5], dtype=torch.float64, requires_grad=True)
    kr = torch.tensor([0.05, 0.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, a, r: ballistics_triton(d, a, r), (d, ka, kr))
    print("ok gradcheck")
    return 0


if __name__ == "__main__":
    sys.exit(main())
