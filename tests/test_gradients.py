"""Gradients of every processor: gradcheck in float64 and a non-zero gradient for every parameter."""

import pytest
import torch

import dynfx

from .conftest import ALL, drum_hit, level_sweep


def _short_signal(b=2, c=2, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    env = torch.linspace(0.05, 1.0, n, dtype=torch.float64)
    return torch.randn(b, c, n, generator=g, dtype=torch.float64) * env


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_gradcheck_processor(cls):
    kwargs = {"num_bands": 2} if "MultiBand" in cls.__name__ else {}
    # a high sample rate makes the short test signal span several time constants
    proc = cls(sample_rate=8000, **kwargs)
    x = _short_signal().requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    u = (0.15 + 0.7 * torch.rand(2, proc.count_num_parameters(), generator=g, dtype=torch.float64))
    u.requires_grad_(True)

    def fn(x, u):
        y, gain = proc(x, norm_params=u, return_gain=True)
        return y, gain

    assert torch.autograd.gradcheck(fn, (x, u), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("smooth_type", ["ballistics", "iir"])
@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_parameter_gets_a_gradient(cls, smooth_type):
    """With each processor's default knee, every registered parameter gets a finite non-zero
    gradient on a signal that crosses the threshold."""
    proc = cls(smooth_type=smooth_type)
    if cls is dynfx.TransientShaper:  # needs onsets and decays rather than a slow sweep
        x = torch.cat([drum_hit()[0], 0.3 * drum_hit()[0]]).requires_grad_(True)
    else:
        # up to +30 dBFS so that narrow low bands also cross their thresholds
        x = level_sweep(batch=2, seconds=0.4, hi_db=30.0).requires_grad_(True)
    n_params = proc.count_num_parameters()
    leaves = {  # distinct settings per parameter (equal attack_db and sustain_db would hide phi)
        n: p.denormalize(
            torch.tensor([0.3 + 0.4 * i / n_params, 0.7 - 0.4 * i / n_params], dtype=torch.float64)
        ).requires_grad_(True)
        for i, (n, p) in enumerate(proc.params.items())
    }
    y = proc(x, dsp_params=leaves)
    # a loss that every parameter influences: weighted output energy
    w = torch.randn_like(y)
    (y * w).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, leaf in leaves.items():
        assert leaf.grad is not None, name
        assert torch.isfinite(leaf.grad).all(), name
        assert (leaf.grad.abs() > 0).all(), (name, leaf.grad)


def test_hard_gate_trains_only_range():
    gate = dynfx.NoiseGate(knee_type="hard")
    x = level_sweep(batch=1)
    u = torch.full((1, 5), 0.5, dtype=torch.float64, requires_grad=True)
    gate(x, norm_params=u).square().sum().backward()
    grad = dict(zip(gate.param_names, u.grad[0].tolist()))
    assert grad["range_db"] != 0.0
    assert grad["threshold_db"] == grad["attack_ms"] == grad["release_ms"] == grad["knee_db"] == 0.0


def test_norm_params_tensor_gradient_flows_from_a_controller():
    comp = dynfx.Compressor()
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Sigmoid())
    x = level_sweep(batch=3, dtype=torch.float32)
    y = comp(x, norm_params=net(torch.randn(3, 4)))
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
