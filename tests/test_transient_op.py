"""The fused transient-shaper op against the same computation composed of PyTorch operations
(ballistics op, level, smoothsteps), in float64 and float32, and gradcheck."""

import pytest
import torch

from dynfx import functional as F
from dynfx._ops import transient as transient_op
from dynfx._ops.transient import transient_reference, transient_shaper

FS = 44100


def _case(dtype, channels=2, steps=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps, dtype=torch.float64)
    # decaying bursts every 1000 samples, with silence between: onsets, sustains and tails
    shape = torch.exp(-(t % 1000) / 150.0) * ((t % 1000) < 600)
    x = (torch.randn(2, channels, steps, generator=g, dtype=torch.float64) * shape).to(dtype)
    attack = torch.tensor([6.0, -12.0], dtype=dtype)
    sustain = torch.tensor([-6.0, 9.0], dtype=dtype)
    ms = {"fast_ms": torch.tensor([0.5, 3.0], dtype=dtype),
          "slow_ms": torch.tensor([20.0, 60.0], dtype=dtype),
          "release_ms": torch.tensor([40.0, 250.0], dtype=dtype)}
    return x, attack, sustain, ms


def _grads(fn, x, attack, sustain, ms, smooth_type, detector, seed=1):
    leaves = [t.clone().requires_grad_(True) for t in (x, attack, sustain, *ms.values())]
    k = F.transient_coefs(*leaves[3:], FS, smooth_type)
    y, gain = fn(leaves[0], leaves[1], leaves[2], k, detector)
    g = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    wg = torch.randn(gain.shape, generator=g, dtype=torch.float64).to(y.dtype)
    grads = torch.autograd.grad((y * wy).sum() + (gain * wg).sum(), leaves)
    return y.detach(), gain.detach(), grads


@pytest.mark.parametrize("detector", ["rms", "peak"])
@pytest.mark.parametrize("smooth_type", ["ballistics", "iir"])
@pytest.mark.parametrize("channels", [1, 2])
def test_fused_equals_composed_float64(detector, smooth_type, channels):
    x, attack, sustain, ms = _case(torch.float64, channels)  # 3000 samples: 12 chunks
    if detector == "peak" and channels == 2:
        x[0, 1, 10] = -x[0, 0, 10]  # a tie between channels: the gradient is shared
    ours = _grads(transient_shaper, x, attack, sustain, ms, smooth_type, detector)
    ref = _grads(transient_reference, x, attack, sustain, ms, smooth_type, detector)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-10, atol=1e-10)
    for a, b in zip(ours[2], ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * (1 + b.abs().max().item()))


def test_fused_float32_close_to_float64():
    x, attack, sustain, ms = _case(torch.float64)
    y64, g64, _ = _grads(transient_shaper, x, attack, sustain, ms, "ballistics", "rms")
    y32, g32, grads32 = _grads(transient_shaper, x.float(), attack.float(), sustain.float(),
                               {k: v.float() for k, v in ms.items()}, "ballistics", "rms")
    assert y32.dtype == g32.dtype == torch.float32
    assert all(g.dtype == torch.float32 for g in grads32)
    # float64 recursion and gain inside both: float32 input/output rounding only
    torch.testing.assert_close(g32.double(), g64, rtol=0, atol=1e-4)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("detector", ["rms", "peak"])
def test_gradcheck(monkeypatch, detector):
    monkeypatch.setattr(transient_op, "CHUNK", 16)  # 60 samples: chunk boundaries, a partial one
    x, attack, sustain, ms = _case(torch.float64, channels=2, steps=60, seed=3)
    x = x + 0.05  # no exact zeros: the peak detector's kink stays away from the samples
    k = F.transient_coefs(*ms.values(), 8000, "ballistics")

    def fn(xx, a, s, kk):
        return transient_shaper(xx, a, s, kk, detector)

    inputs = [t.clone().requires_grad_(True) for t in (x, attack, sustain, k)]
    assert torch.autograd.gradcheck(fn, inputs)


def test_empty_and_zero_settings():
    x, _, _, ms = _case(torch.float32)
    k = F.transient_coefs(*ms.values(), FS)
    zero = torch.zeros(2)
    y, gain = transient_shaper(x, zero, zero, k, "rms")
    assert torch.equal(y, x) and torch.equal(gain, torch.zeros_like(gain))
    y, gain = transient_shaper(x[..., :0], zero, zero, k, "rms")
    assert y.shape == (2, 2, 0) and gain.shape == (2, 0)


@pytest.mark.parametrize("pick", [0, 1])
def test_loss_on_one_output_only(pick):
    # the other output's gradient is None inside the op (not materialised as zeros)
    x, attack, sustain, ms = _case(torch.float64, steps=700)
    results = []
    for fn in (transient_shaper, transient_reference):
        leaves = [t.clone().requires_grad_(True) for t in (x, attack, sustain, *ms.values())]
        k = F.transient_coefs(*leaves[3:], FS, "ballistics")
        out = fn(leaves[0], leaves[1], leaves[2], k, "rms")[pick]
        results.append(torch.autograd.grad(out.square().sum(), leaves))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * (1 + b.abs().max().item()))
