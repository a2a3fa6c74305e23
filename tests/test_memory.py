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


def test_scratch_buffers_are_reused_only_when_nothing_refers_to_them(monkeypatch):
    monkeypatch.setattr(memory, "_pool", [])
    n = memory.HUGE_MIN_BYTES // 4  # float32 elements: pooled size
    a = memory.scratch(2, n)
    pa = a.data_ptr()
    b = memory.scratch(2, n)
    assert b.data_ptr() != pa  # a is alive
    view = a[1:]
    del a
    c = memory.scratch(2, n)
    assert c.data_ptr() not in (pa, b.data_ptr())  # a's view keeps it alive

    # a tensor autograd saved for backward keeps its buffer until the backward pass is done
    class Saves(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kept):
            ctx.save_for_backward(kept)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (kept,) = ctx.saved_tensors
            assert float(kept[0, 0]) == 7.0  # not overwritten meanwhile
            return g * 2, None

    view.fill_(7.0)
    x = torch.ones(3, requires_grad=True)
    y = Saves.apply(x, view)
    del view
    others = [memory.scratch(2, n) for _ in range(3)]
    assert pa not in [t.data_ptr() for t in others]
    for t in others:
        t.fill_(-1.0)
    y.sum().backward()
    del y, others
    # once every reference is gone, the buffer comes back
    del b, c
    reused = memory.scratch(2, n)
    assert reused.data_ptr() == pa
    assert reused.shape == (2, n) and reused.dtype == torch.float32


def test_scratch_pool_limit(monkeypatch):
    monkeypatch.setattr(memory, "_pool", [])
    n = memory.HUGE_MIN_BYTES // 8
    monkeypatch.setenv("DYNFX_POOL_BYTES", str(3 * memory.HUGE_MIN_BYTES))
    held = [memory.scratch(n, dtype=torch.float64) for _ in range(5)]
    assert len(memory._pool) == 3  # the others are ordinary allocations
    assert len({t.data_ptr() for t in held}) == 5
    monkeypatch.setenv("DYNFX_POOL_BYTES", "0")
    memory._pool.clear()
    memory.scratch(n, dtype=torch.float64)
    assert memory._pool == []
    small = memory.scratch(3, 4, dtype=torch.float64)  # below the pooled size: plain tensor
    assert small.shape == (3, 4)


def test_release_pool_drops_free_buffers(monkeypatch):
    monkeypatch.setattr(memory, "_pool", [])
    n = memory.HUGE_MIN_BYTES // 4
    kept = memory.scratch(n)
    memory.scratch(n)  # dropped at once: free in the pool
    assert len(memory._pool) == 2
    memory.release_pool()
    assert memory._pool == []
    kept.fill_(1.0)  # the live one is untouched
    assert float(kept[0]) == 1.0


def test_scratch_pool_drops_least_recently_used_free_arrays(monkeypatch):
    monkeypatch.setattr(memory, "_pool", [])
    unit = memory.HUGE_MIN_BYTES // 8  # float64 elements of one pooled unit
    monkeypatch.setenv("DYNFX_POOL_BYTES", str(3 * memory.HUGE_MIN_BYTES))
    live = memory.scratch(unit, dtype=torch.float64)  # in use throughout
    memory.scratch(2 * unit, dtype=torch.float64)  # free at once: pooled, then stale
    assert [a.size for a in memory._pool] == [unit, 2 * unit]
    # a new size that does not fit: the stale free array goes, the live one stays
    other = memory.scratch(unit + 1, dtype=torch.float64)
    assert sorted(a.size for a in memory._pool) == [unit, unit + 1]
    live.fill_(3.0)
    other.fill_(4.0)
    assert float(live.sum()) == 3.0 * unit and float(other.sum()) == 4.0 * (unit + 1)
    # nothing free to drop and no room: an ordinary allocation, the pool unchanged
    extra = memory.scratch(2 * unit, dtype=torch.float64)
    assert sorted(a.size for a in memory._pool) == [unit, unit + 1]
    assert extra.shape == (2 * unit,)
