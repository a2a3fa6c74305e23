"""Signal-sized CPU buffers backed by huge pages where the kernel allows it.

A fresh tensor of tens of MiB comes from its own memory mapping, and every 4 KiB page of it costs
a page fault the first time it is written: on the project's machine allocating and filling a
48 MiB tensor takes about 20 ms, of which about 15 ms are faults (a multi-band batch of
16 x 2 x 131072 samples allocates several such tensors per step). Asking the kernel to back the
mapping with 2 MiB pages (``madvise(MADV_HUGEPAGE)``, honoured when transparent huge pages are
in ``madvise`` or ``always`` mode) before the first write cuts that to a few milliseconds. The
tensors are ordinary tensors; where the call is unavailable (not Linux, no libc, huge pages
off) :func:`empty` is ``torch.empty``. ``DYNFX_HUGEPAGES=0`` switches the advice off.

The pages of a fresh mapping still have to be cleared by the kernel, every step of a training
loop again. :func:`scratch` serves an operation's large intermediate arrays from a bounded pool
instead: a pooled array is handed out again only once no tensor refers to it any more (the
pool's NumPy arrays are reference-counted by every tensor made from them, autograd's saved
tensors included), so reuse never aliases live data. The pool keeps at most
``DYNFX_POOL_BYTES`` bytes (default 1 GiB; 0 turns it off): when a new array would exceed that,
the least recently used free arrays are dropped first, and if that is not enough the new array
is an ordinary allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["empty", "empty_like", "scratch", "scratch_like", "release_pool", "HUGE_MIN_BYTES"]

HUGE_MIN_BYTES = 4 << 20  # below this a buffer is (or soon is) served from the malloc heap
_HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


@lru_cache(maxsize=None)
def _madvise():
    if not sys.platform.startswith("linux") or os.environ.get("DYNFX_HUGEPAGES", "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _advise(t: Tensor) -> Tensor:
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_MIN_BYTES or t.device.type != "cpu":
        return t
    fn = _madvise()
    if fn is None:
        return t
    start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE  # the whole huge pages inside the buffer
    stop = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if stop > start:
        fn(start, stop - start, _MADV_HUGEPAGE)  # advice only: a refusal changes nothing
    return t


def empty(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """An uninitialised contiguous CPU tensor, large ones advised onto huge pages."""
    return _advise(torch.empty(shape, dtype=dtype))


def empty_like(t: Tensor) -> Tensor:
    """:func:`empty` with ``t``'s shape and dtype (contiguous)."""
    return empty(*t.shape, dtype=t.dtype)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_pool: list[np.ndarray] = []
_pool_lock = threading.Lock()


def _pool_limit() -> int:
    try:
        return int(os.environ.get("DYNFX_POOL_BYTES", 1 << 30))
    except ValueError:
        return 1 << 30


def _refs(a: np.ndarray) -> int:
    return sys.getrefcount(a)


def _free_refs() -> int:
    """The reference count :func:`_refs` sees for a pooled array nothing else refers to (the
    pool's list, the loop variable, the arguments), measured the way :func:`scratch` looks."""
    for a in [np.empty(1)]:
        return _refs(a)
    raise AssertionError


_FREE_REFS = _free_refs()


def scratch(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """An uninitialised contiguous CPU tensor for an operation's intermediate values: large ones
    come from the pool of arrays no tensor uses any more (or a new, pooled one while the pool is
    under its limit); small ones, and dtypes other than float32/float64, are :func:`empty`."""
    n = math.prod(shape)
    np_dtype = _NUMPY.get(dtype)
    limit = _pool_limit()
    if np_dtype is None or limit <= 0 or n * np.dtype(np_dtype).itemsize < HUGE_MIN_BYTES:
        return empty(*shape, dtype=dtype)
    with _pool_lock:
        for i in range(len(_pool)):  # (enumerate's reused tuple would hold one more reference)
            a = _pool[i]
            if a.size == n and a.dtype == np_dtype and _refs(a) <= _FREE_REFS:
                _pool.append(_pool.pop(i))  # most recently used last
                return torch.from_numpy(a).view(shape)
        a = np.empty(n, dtype=np_dtype)
        t = _advise(torch.from_numpy(a))
        # over the limit: forget the least recently used free arrays (other sizes, older
        # shapes) to make room; arrays in use stay
        held = sum(b.nbytes for b in _pool)
        if held + a.nbytes > limit:
            free = [_refs(b) <= _FREE_REFS for b in _pool]  # b: a loop variable, as in the scan
            keep = []
            for b, is_free in zip(_pool, free):
                if is_free and held + a.nbytes > limit:
                    held -= b.nbytes
                else:
                    keep.append(b)
            _pool[:] = keep
        if held + a.nbytes <= limit:
            _pool.append(a)
        return t.view(shape)


def scratch_like(t: Tensor) -> Tensor:
    """:func:`scratch` with ``t``'s shape and dtype."""
    return scratch(*t.shape, dtype=t.dtype)


def release_pool() -> None:
    """Drop the pool's references (its free arrays are freed; arrays still in use live on with
    their tensors). For measuring peak memory, or handing memory back between phases."""
    with _pool_lock:
        _pool.clear()
