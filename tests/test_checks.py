"""The one-pass input check against a direct search, and the composed fallback."""

import math

import pytest
import torch

from dynfx._ops.checks import first_bad_samples


def _expected(x, limit):
    out = torch.full(x.shape[:2], -1, dtype=torch.int64)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for n, v in enumerate(x[b, c].tolist()):
                if not abs(v) <= limit:
                    out[b, c] = n
                    break
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_first_bad_samples(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 50, generator=g).to(dtype)
    x[0, 1, 7] = math.nan
    x[0, 1, 30] = math.inf  # after the first bad one: not reported
    x[1, 0, 49] = -math.inf
    x[2, 2, 0] = 1e4  # over the limit
    x[2, 0, 10] = 999.0  # under it
    got = first_bad_samples(x, 1e3)
    assert torch.equal(got, _expected(x.double(), 1e3))
    assert got.tolist()[3] == [-1, -1, -1]
