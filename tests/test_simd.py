"""The 4-lane float64 vector operations of the fused kernels, against NumPy."""

import math

import numba
import numpy as np
import pytest

from dynfx._ops.simd import (vadd, vflush, vfma, vfnma, vget, vload, vmul, vset, vsplat, vstore,
                             vsum, vzero)


@numba.njit
def _lanes(a, b, c, out):
    va, vb, vc = vload(a, 0), vload(b, 0), vload(c, 4)  # c: lanes 4..7 (a flat offset)
    vstore(out, 0, vfma(va, vb, vc))
    vstore(out, 4, vfnma(va, vb, vc))
    vstore(out, 8, vmul(va, vb))
    vstore(out, 12, vadd(va, vb))
    vstore(out, 16, vsplat(a[2]))
    vstore(out, 20, vset(a[0], numba.float32(b[1]), 7.0, -1.5))
    vstore(out, 24, vflush(va, 1e-3))
    vstore(out, 28, vzero())
    return vsum(va), vget(vb, 3)


def test_lane_operations_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(4)
    a[1] = 1e-5  # flushed
    a[3] = math.nan  # stays NaN
    b = rng.standard_normal(4)
    c = rng.standard_normal((2, 4))
    out = np.full(32, 99.0)
    total, last = _lanes(a, b, c, out)
    np.testing.assert_allclose(out[0:4], a * b + c[1], rtol=1e-15)
    np.testing.assert_allclose(out[4:8], c[1] - a * b, rtol=1e-15)
    np.testing.assert_array_equal(out[8:12], a * b)
    np.testing.assert_array_equal(out[12:16], a + b)
    np.testing.assert_array_equal(out[16:20], np.full(4, a[2]))
    np.testing.assert_array_equal(out[20:24], [a[0], np.float32(b[1]), 7.0, -1.5])
    np.testing.assert_array_equal(out[24:28], [a[0], 0.0, a[2], math.nan])
    np.testing.assert_array_equal(out[28:32], np.zeros(4))
    assert math.isnan(total) and last == b[3]


def test_fma_rounds_once():
    # (1 + 2^-30)^2 - (1 + 2^-29) = 2^-60 exactly; a separate multiply rounds it away
    a = np.full(4, 1.0 + 2.0**-30)
    c = np.full((2, 4), -(1.0 + 2.0**-29))
    out = np.empty(32)
    _lanes(a, a, c, out)
    assert out[0] == 2.0**-60


def test_loads_need_contiguous_float64():
    with pytest.raises((TypeError, numba.core.errors.TypingError), match="C-contiguous float64"):
        _lanes(np.zeros(4, dtype=np.float32), np.zeros(4), np.zeros((2, 4)), np.zeros(32))
