"""The 8-lane float64 vector operations of the fused kernels, against NumPy."""

import math

import numba
import numpy as np
import pytest

from dynfx._ops.simd import (LANES, vadd, vflush, vfma, vfnma, vget, vload, vmul, vset, vshuffle,
                             vsplat, vstore, vsub, vzero)

W = LANES


@numba.njit
def _lanes(a, b, c, out):
    va, vb, vc = vload(a, 0), vload(b, 0), vload(c, 8)  # c: its second row (a flat offset)
    vstore(out, 0, vfma(va, vb, vc))
    vstore(out, 8, vfnma(va, vb, vc))
    vstore(out, 16, vmul(va, vb))
    vstore(out, 24, vadd(va, vb))
    vstore(out, 32, vsplat(a[2]))
    vstore(out, 40, vset(a[0], numba.float32(b[1]), 7.0, -1.5, 0.0, 1.0, 2.0, 3.0))
    vstore(out, 48, vflush(va, 1e-3))
    vstore(out, 56, vzero())
    vstore(out, 64, vsub(va, vb))
    vstore(out, 72, vshuffle(va, vb, "15,0,8,1,9,2,10,3"))
    return vget(vb, 3)


def test_lane_operations_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(W)
    a[1] = 1e-5  # flushed
    a[3] = math.nan  # stays NaN
    b = rng.standard_normal(W)
    c = rng.standard_normal((2, W))
    out = np.full(80, 99.0)
    last = _lanes(a, b, c, out)
    np.testing.assert_allclose(out[0:8], a * b + c[1], rtol=1e-15)
    np.testing.assert_allclose(out[8:16], c[1] - a * b, rtol=1e-15)
    np.testing.assert_array_equal(out[16:24], a * b)
    np.testing.assert_array_equal(out[24:32], a + b)
    np.testing.assert_array_equal(out[32:40], np.full(W, a[2]))
    np.testing.assert_array_equal(out[40:48], [a[0], np.float32(b[1]), 7.0, -1.5, 0, 1, 2, 3])
    np.testing.assert_array_equal(out[48:56], np.where(np.abs(a) < 1e-3, 0.0, a))
    assert math.isnan(out[51])
    np.testing.assert_array_equal(out[56:64], np.zeros(W))
    np.testing.assert_array_equal(out[64:72], a - b)
    both = np.concatenate([a, b])
    np.testing.assert_array_equal(out[72:80], both[[15, 0, 8, 1, 9, 2, 10, 3]])
    assert last == b[3]


def test_fma_rounds_once():
    # (1 + 2^-30)^2 - (1 + 2^-29) = 2^-60 exactly; a separate multiply rounds it away
    a = np.full(W, 1.0 + 2.0**-30)
    c = np.full((2, W), -(1.0 + 2.0**-29))
    out = np.empty(80)
    _lanes(a, a, c, out)
    assert out[0] == 2.0**-60


def test_loads_need_contiguous_float64():
    with pytest.raises((TypeError, numba.core.errors.TypingError), match="C-contiguous float64"):
        _lanes(np.zeros(W, dtype=np.float32), np.zeros(W), np.zeros((2, W)), np.zeros(80))


def test_shuffle_mask_is_checked():
    @numba.njit
    def bad(a):
        v = vload(a, 0)
        return vget(vshuffle(v, v, "0,1,2,16,4,5,6,7"), 0)

    with pytest.raises(Exception, match="lane indices"):
        bad(np.zeros(W))
