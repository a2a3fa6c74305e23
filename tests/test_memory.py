"""Signal-sized buffers (dynfx._ops.memory): plain tensors, huge-page advice or not."""

import torch

from dynfx._ops import memory


def test_buffers_are_ordinary_writable_tensors(monkeypatch):
    for n in (10, memory.HUGE_MIN_BYTES // 4 + 12345):  # below and above the advice threshold
        t = memory.empty(3, n, dtype=torch.float32)
        assert t.shape == (3, n) and t.dtype == torch.float32 and t.is_contiguous()
        t.fill_(2.0)
        assert float(t.sum()) == 6.0 * n
        u = memory.empty_like(t.double())
        assert u.shape == t.shape and u.dtype == torch.float64
    # switched off (or unavailable): the same tensors without the advice
    memory._madvise.cache_clear()
    monkeypatch.setenv("DYNFX_HUGEPAGES", "0")
    try:
        assert memory._madvise() is None
        t = memory.empty(2, memory.HUGE_MIN_BYTES, dtype=torch.float64)
        t.fill_(1.0)
        assert float(t.sum()) == 2.0 * memory.HUGE_MIN_BYTES
    finally:
        memory._madvise.cache_clear()
