"""The ballistics op: kernel against the pure-PyTorch reference, exact backward, gradcheck."""

import pytest
import torch

from dynfx import ballistics, ballistics_reference
from dynfx.functional import coef_to_ms, ms_to_coef

CASES = {
    "noise": lambda g: torch.rand(3, 400, generator=g, dtype=torch.float64) ** 4,
    "T=1": lambda g: torch.rand(2, 1, generator=g, dtype=torch.float64),
    "B=1": lambda g: torch.rand(1, 300, generator=g, dtype=torch.float64),
    "silence": lambda g: torch.zeros(2, 200, dtype=torch.float64),
    "bursts": lambda g: (torch.rand(2, 500, generator=g, dtype=torch.float64)
                         * (torch.arange(500) % 100 < 30).to(torch.float64)),
}


def _coefs(b, att_ms, rel_ms, fs=44100.0):
    att = torch.full((b,), att_ms, dtype=torch.float64)
    rel = torch.full((b,), rel_ms, dtype=torch.float64)
    return ms_to_coef(att, fs), ms_to_coef(rel, fs)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "att_ms, rel_ms",
    [(0.1, 1000.0), (5.0, 50.0), (100.0, 10.0), (1.0, 1.0e5)],
    ids=["fast-att", "typical", "attack-slower-than-release", "very-long-release"],
)
def test_kernel_equals_reference(case, att_ms, rel_ms):
    g = torch.Generator().manual_seed(0)
    d = CASES[case](g).requires_grad_(True)
    ka, kr = _coefs(d.shape[0], att_ms, rel_ms)
    ka.requires_grad_(True)
    kr.requires_grad_(True)
    e = ballistics(d, ka, kr)
    e_ref = ballistics_reference(d, ka, kr)
    scale = e_ref.abs().max().clamp_min(1e-300)
    assert torch.allclose(e, e_ref, rtol=1e-6, atol=1e-6 * scale.item())
    w = torch.randn(e.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((e * w).sum(), (d, ka, kr))
    grads_ref = torch.autograd.grad((e_ref * w).sum(), (d, ka, kr))
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9 * (1 + b.abs().max().item()))


def test_kernel_float32_close_to_float64_reference():
    d = torch.rand(4, 5000, dtype=torch.float64) ** 3
    ka, kr = _coefs(4, 2.0, 80.0)
    e64 = ballistics_reference(d, ka, kr)
    e32 = ballistics(d.float(), ka.float(), kr.float())
    assert e32.dtype == torch.float32
    assert torch.allclose(e32.double(), e64, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", ["noise", "T=1", "B=1", "bursts"])
def test_gradcheck(case):
    g = torch.Generator().manual_seed(1)
    d = CASES[case](g)[:, :60].clone().requires_grad_(True)
    ka = torch.rand(d.shape[0], generator=g, dtype=torch.float64).mul(0.5).add(0.3)
    kr = torch.rand(d.shape[0], generator=g, dtype=torch.float64).mul(0.2).add(0.01)
    ka.requires_grad_(True)
    kr.requires_grad_(True)
    assert torch.autograd.gradcheck(ballistics, (d, ka, kr))


def test_gradcheck_shared_coefficient():
    """The "iir" use: one tensor passed as both coefficients."""
    d = torch.rand(2, 50, dtype=torch.float64, requires_grad=True)
    k = torch.tensor([0.2, 0.05], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d, k: ballistics(d, k, k), (d, k))


def test_recursion_formula():
    d = torch.tensor([[0.0, 1.0, 1.0, 0.2, 0.0, 0.5]], dtype=torch.float64)
    ka, kr = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)
    e, expected = 0.0, []
    for v in d[0].tolist():
        k = 0.5 if v > e else 0.1
        e = (1 - k) * e + k * v
        expected.append(e)
    assert torch.allclose(ballistics(d, ka, kr)[0], torch.tensor(expected, dtype=torch.float64))


def test_ms_coef_round_trip():
    t = torch.logspace(-2, 4, 50, dtype=torch.float64)
    for fs in (8000.0, 44100.0, 192000.0):
        assert torch.allclose(coef_to_ms(ms_to_coef(t, fs), fs), t, rtol=1e-10)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        ballistics(torch.rand(2, 2, 5), torch.rand(2), torch.rand(2))
    with pytest.raises(ValueError, match="k_rel"):
        ballistics(torch.rand(2, 5), torch.rand(2), torch.rand(3))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    d = torch.rand(4, 1000, dtype=torch.float64) ** 3
    ka, kr = _coefs(4, 1.0, 50.0)
    e_cpu = ballistics(d, ka, kr)
    e_gpu = ballistics(d.cuda(), ka.cuda(), kr.cuda())
    assert e_gpu.is_cuda
    assert torch.allclose(e_gpu.cpu(), e_cpu, rtol=1e-12)
