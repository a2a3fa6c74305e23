"""Run by tests/test_triton.py in a subprocess with TRITON_INTERPRET=1: the Triton biquad
kernels on CPU tensors in Triton's interpreter, against the numba kernels (float64 state, like the
Triton ones) and the one-sample-per-step PyTorch reference."""

import os
import sys

import torch

from dynfx._ops.biquad import biquad_filter, biquad_reference
from dynfx.crossover import biquad_coeffs


def coeffs(kind, freqs, dtype=torch.float64):
    return biquad_coeffs(kind, torch.tensor(freqs, dtype=torch.float64), 44100.0)


def check(name, x, b, a, rtol, block=16, group=16):
    from dynfx._ops.biquad_triton import biquad_triton

    x = x.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    a = a.clone().requires_grad_(True)
    y = biquad_triton(x, b, a, block, group)
    y_ref = biquad_filter(x, b, a)
    assert y.dtype == x.dtype, name
    scale = y_ref.abs().max().item() or 1.0
    err = (y - y_ref).abs().max().item()
    assert err <= rtol * scale, (name, err, scale)
    w = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((y * w).sum(), (x, b, a), allow_unused=True)
    grads_ref = torch.autograd.grad((y_ref * w).sum(), (x, b, a), allow_unused=True)
    for what, g, g_ref in zip("xba", grads, grads_ref):
        if g_ref is None:  # a0 (fixed at 1) gets no gradient on either path
            continue
        g = g if what == "x" else g[:, 1:] if what == "a" else g
        g_ref = g_ref if what != "a" else g_ref[:, 1:]
        scale = g_ref.abs().max().item() or 1.0
        err = (g - g_ref).abs().max().item()
        assert err <= rtol * scale, (name, what, err, scale)
    print("ok", name)


def accuracy_near_dc():
    """A 20 Hz low-pass and high-pass at 44.1 kHz (poles near z = 1): the scan (coupled form)
    against a sequential loop in extended precision (numpy longdouble), relative to the peak: the
    order of the sequential float64 loop's error (the numba kernel) on the same signal, at most
    twice it. Measured: scan 2.7e-15 / 3.2e-13, loop 1.9e-13 / 3.0e-13 (low-pass / high-pass);
    a scan in the companion form reached 5e-11 at this low-pass."""
    import numpy as np

    from dynfx._ops.biquad_triton import biquad_triton

    x = 0.3 * torch.randn(1, 1, 3000, generator=torch.Generator().manual_seed(5),
                          dtype=torch.float64)
    for kind in ("lowpass", "highpass"):
        b, a = coeffs(kind, [20.0])
        bl, al = b[0].numpy().astype(np.longdouble), a[0].numpy().astype(np.longdouble)
        xl = x[0, 0].numpy().astype(np.longdouble)
        ref = np.zeros(xl.shape, dtype=np.longdouble)
        x1 = x2 = y1 = y2 = np.longdouble(0.0)
        for n, xn in enumerate(xl):
            yn = bl[0] * xn + bl[1] * x1 + bl[2] * x2 - al[1] * y1 - al[2] * y2
            ref[n] = yn
            x2, x1, y2, y1 = x1, xn, y1, yn
        peak = np.abs(ref).max()
        y = biquad_triton(x, b, a)[0, 0].numpy().astype(np.longdouble)
        err = float(np.abs(y - ref).max() / peak)
        y_loop = biquad_filter(x, b, a)[0, 0].numpy().astype(np.longdouble)
        err_loop = float(np.abs(y_loop - ref).max() / peak)
        assert err <= 2.0 * err_loop + 1e-15, (kind, err, err_loop)
    print("ok accuracy near z = 1")


def main():
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    gen = torch.Generator().manual_seed(0)
    b, a = coeffs("lowpass", [60.0, 3000.0])  # two batch items, each with its own section
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-6)):
        noise = torch.randn(2, 1, 100, generator=gen, dtype=torch.float64).to(dtype)
        check(f"{dtype} lowpass, chunks of 32", noise, b, a, rtol, block=32)
    noise = torch.randn(2, 2, 17, generator=gen, dtype=torch.float64)
    for steps in (1, 3, 17):  # shorter than, and just past, one chunk; two channels
        check(f"float64 T={steps}", noise[..., :steps], b, a, 1e-10)
    noise = torch.randn(2, 1, 150, generator=gen, dtype=torch.float64)
    check("float64 highpass, default block", noise, *coeffs("highpass", [200.0, 8000.0]), 1e-10,
          None, None)
    check("float64 allpass, default block", noise, *coeffs("allpass", [100.0, 1000.0]), 1e-10,
          None, None)
    # several groups of chunk summaries: 100 samples in chunks of 16 = 7 chunks, groups of 4
    long = torch.randn(1, 1, 100, generator=gen, dtype=torch.float64)
    check("float64 several carry groups", long, *coeffs("lowpass", [40.0]), 1e-10, 16, 4)
    # real poles (0.7 and 0.5): the companion form
    br = torch.tensor([[0.2, 0.1, 0.05], [1.0, -0.5, 0.25]], dtype=torch.float64)
    ar = torch.tensor([[1.0, -1.2, 0.35], [1.0, -1.2, 0.35]], dtype=torch.float64)
    check("float64 real poles", noise[:, :, :100], br, ar, 1e-10, 32, 4)
    accuracy_near_dc()
    from dynfx._ops.biquad_triton import biquad_triton

    # rows are independent: a NaN in one row's audio leaves the others' output untouched
    bad = torch.randn(2, 1, 40, generator=gen, dtype=torch.float64)
    clean = biquad_triton(bad, b, a, 16, 4)
    bad[0, 0, 5] = float("nan")
    y = biquad_triton(bad, b, a, 16, 4)
    assert torch.equal(y[1], clean[1]) and torch.isnan(y[0, 0, 5:]).all()
    print("ok rows independent")
    # the slow reference once (it shares no code with either kernel)
    x = torch.randn(2, 1, 60, generator=gen, dtype=torch.float64)
    y = biquad_triton(x, b, a, 16, 4)
    assert torch.allclose(y, biquad_reference(x, b, a), rtol=1e-10, atol=1e-12)
    print("ok reference")
    x = torch.randn(1, 1, 20, dtype=torch.float64, generator=gen, requires_grad=True)
    b1 = b[:1].clone().requires_grad_(True)
    a1 = a[:1].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, b, a: biquad_triton(x, b, a, 16, 4), (x, b1, a1))
    print("ok biquad gradcheck")
    return 0


if __name__ == "__main__":
    sys.exit(main())
