"""Signal-sized CPU buffers backed by huge pages where the kernel allows it.

A fresh tensor of tens of MiB comes from its own memory mapping, and every 4 KiB page of it costs
a page fault the first time it is written: on the project's machine allocating and filling a
48 MiB tensor takes about 20 ms, of which about 15 ms are faults (a multi-band batch of
16 x 2 x 131072 samples allocates several such tensors per step). Asking the kernel to back the
mapping with 2 MiB pages (``madvise(MADV_HUGEPAGE)``, honoured when transparent huge pages are
in ``madvise`` or ``always`` mode) before the first write cuts that to a few milliseconds. The
tensors are ordinary tensors; where the call is unavailable (not Linux, no libc, huge pages
off) :func:`empty` is ``torch.empty``. ``DYNFX_HUGEPAGES=0`` switches the advice off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["empty", "empty_like", "HUGE_MIN_BYTES"]

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
