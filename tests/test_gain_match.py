"""The fused gain-matching loss of refinement against the same loss composed of PyTorch ops."""

import pytest
import torch

from dynfx import functional as F
from dynfx._ops import gain_match as gm


def _case(dtype, shape=(3, 2, 5000), seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(shape, generator=g, dtype=torch.float64)
    y[0, 0, :50] = 0.0  # exact zeros: |y| has slope 0 there
    y[1, 1, :50] = 1e-9  # far below the floor: clamped, no gradient
    ref_db = 20 * torch.log10(torch.rand(shape, generator=g, dtype=torch.float64) + 1e-3)
    target = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    target[2, 0, :20] = -100.0  # at the floor
    valid = torch.rand(shape, generator=g) > 0.2
    valid[2, 1] = False
    return y.to(dtype), ref_db.to(dtype), target.to(dtype), valid


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("chunk", [gm.CHUNK, 700])  # 700: several tasks per channel
def test_fused_equals_reference(monkeypatch, dtype, tol, chunk):
    monkeypatch.setattr(gm, "CHUNK", chunk)
    y, ref_db, target, valid = _case(dtype)
    a, b = y.clone().requires_grad_(True), y.clone().requires_grad_(True)
    ours = F.gain_match_loss(a, ref_db, target, valid, -100.0)
    theirs = gm.gain_match_loss_reference(b, ref_db, target, valid, -100.0)
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    w = torch.tensor([0.5, 2.0, -1.0], dtype=dtype)  # non-unit upstream gradients
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=tol, atol=tol * b.grad.abs().max().item())
    # unit upstream gradient (the refinement loop's sum): the kept gradient as it is
    a2, b2 = y.clone().requires_grad_(True), y.clone().requires_grad_(True)
    F.gain_match_loss(a2, ref_db, target, valid, -100.0).sum().backward()
    gm.gain_match_loss_reference(b2, ref_db, target, valid, -100.0).sum().backward()
    torch.testing.assert_close(a2.grad, b2.grad, rtol=tol, atol=tol * b2.grad.abs().max().item())


def test_count_argument_and_empty_item():
    y, ref_db, target, valid = _case(torch.float64)
    valid[1] = False
    loss = F.gain_match_loss(y, ref_db, target, valid, -100.0, valid.sum(dim=(1, 2)))
    torch.testing.assert_close(loss, F.gain_match_loss(y, ref_db, target, valid, -100.0))
    assert loss[1] == 0.0


def test_shape_mismatch_is_an_error():
    y, ref_db, target, valid = _case(torch.float32)
    with pytest.raises(ValueError, match="one shape"):
        F.gain_match_loss(y, ref_db[:, :1], target, valid, -100.0)
