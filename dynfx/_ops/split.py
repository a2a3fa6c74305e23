"""A whole crossover split as one autograd operation: every biquad of every band in one pass.

A split is a directed tree of biquad *stages* (direct form I, ``a0 = 1``, zero initial state):
stage ``k`` filters the input (``src[k] = -1``) or the output of an earlier stage
``src[k] < k``, and some stages are band outputs (``band_of[k] >= 0``)
(:func:`split_topology`). The kernels run it as :data:`LANES` parallel chains, one band per
lane of a 4 x float64 vector register (:func:`lane_layout`, :mod:`dynfx._ops.simd`): every
sample of a row goes through the chains' depths one vector operation at a time, with all states
in registers, and the bands are written as (B, N, C, T), ready to be processed as B x N rows by
the band op without a copy. A stage shared by several bands runs in each of their lanes; its
coefficient gradient is the sum over them.

Backward: the adjoint of a biquad with coefficients ``(b0, b1, b2, a1, a2)`` is the same biquad
run backward in time: ``v[n] = g[n] - a1 v[n+1] - a2 v[n+2]`` and its input gradient
``b0 v[n] + b1 v[n+1] + b2 v[n+2]``; ``d/db_j = sum_n v[n] u[n-j]``, ``d/da_j = -sum_n v[n]
y[n-j]`` (u the stage's input, y its output). The stage outputs are not stored: the forward
pass keeps the two most recent outputs of every depth at the start of every chunk of
:data:`CHUNK` samples; the backward pass, one chunk at a time (last chunk first), runs the
adjoint recursion back through the chunk (it needs no signal values), then recomputes the stage
outputs forward from the stored states and accumulates the coefficient gradients from them as
they are made. Memory: the bands, plus ``8 D T / CHUNK`` float64 values per row (``D`` the depth
of :func:`lane_layout`).

The recursion, the states and the accumulators are float64 whatever the signal's dtype (the
reason is in :mod:`dynfx._ops.biquad`). One row (batch item and channel) per parallel task; the
channels of an item share its coefficients.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .memory import scratch, scratch_like

__all__ = ["split_topology", "lane_layout", "fused_split", "CHUNK", "FUSED_MAX_BANDS", "LANES"]

CHUNK = 256
# States and adjoints below TINY are flushed to 0 at every chunk start: a state decaying through
# silence (or the adjoint of a high-pass fed a constant) would otherwise reach subnormal numbers,
# whose arithmetic is many times slower. The crossover filters' poles lie at radius >= 0.43 (any
# sample rate, the ends of every crossover range), so a value decays by at most 0.37 decades a
# sample: from TINY it needs over 400 samples (more than a chunk) to reach the subnormal range
# (2.2e-308), and the flush catches it first.
TINY = 1e-150
LANES = 4  # float64 lanes of one AVX2 register: one band per lane
IDENTITY = -1  # lane_layout: the band passes through
UNUSED = -2  # lane_layout: no band in this lane
FUSED_MAX_BANDS = LANES


@lru_cache(maxsize=None)
def split_topology(num_bands: int) -> tuple[tuple[tuple[str, int], ...], np.ndarray, np.ndarray]:
    """The stages of the series, allpass-compensated Linkwitz-Riley split into ``num_bands``.

    Returns ``(stages, src, band_of)``: ``stages[k] = (kind, i)``, a biquad of ``kind``
    (``"lowpass"``, ``"highpass"``, ``"allpass"``) at crossover ``i``; ``src[k]`` the stage it
    filters (``-1``: the input); ``band_of[k]`` the band it outputs (``-1``: none). Band ``i < N -
    1`` is ``AP_{N-2} ... AP_{i+1} LP_i LP_i`` of what the lower crossovers' high-passes left; the
    last band is the last high-pass pair's output (:func:`dynfx.crossover.split_bands`).
    """
    stages: list[tuple[str, int]] = []
    src: list[int] = []
    band_of: list[int] = []

    def add(kind: str, i: int, source: int) -> int:
        stages.append((kind, i))
        src.append(source)
        band_of.append(-1)
        return len(stages) - 1

    rest = -1
    for i in range(num_bands - 1):
        low = add("lowpass", i, add("lowpass", i, rest))
        for j in range(i + 1, num_bands - 1):
            low = add("allpass", j, low)
        band_of[low] = i
        rest = add("highpass", i, add("highpass", i, rest))
    band_of[rest] = num_bands - 1
    return tuple(stages), np.asarray(src, dtype=np.int64), np.asarray(band_of, dtype=np.int64)


def lane_layout(num_bands: int) -> np.ndarray:
    """The split as :data:`LANES` parallel chains, one per band: a (depth, LANES) table of stage
    indices, ``IDENTITY`` where a chain is shorter than the longest (its band passes through),
    ``UNUSED`` in the lanes of no band (zero coefficients).

    Band ``i``'s chain is every stage on its path from the input, so a stage shared by several
    bands (the high-passes before a later crossover) runs once in each of their lanes: more
    arithmetic than the tree, but every step of every lane is the same operation on one vector
    register, and no lane waits for another.
    """
    _, src, band_of = split_topology(num_bands)
    chains = []
    for band in range(num_bands):
        k = int(np.flatnonzero(band_of == band)[0])
        chain = []
        while k >= 0:
            chain.append(k)
            k = int(src[k])
        chains.append(chain[::-1])
    depth = max(len(chain) for chain in chains)
    table = np.full((depth, LANES), UNUSED, dtype=np.int64)
    for lane, chain in enumerate(chains):
        table[:, lane] = chain + [IDENTITY] * (depth - len(chain))
    return table


def _coef_lines(depth: int, indent: str) -> list[str]:
    return [indent + "; ".join(f"c{d}_{i} = vload(coef, ((b * {depth} + {d}) * 5 + {i}) * 4)"
                               for i in range(5)) for d in range(depth)]


def _stage_input(d: int) -> tuple[str, str, str]:
    """The names of depth ``d``'s input now and at the two previous samples: the input ``x``
    for the first depth, the depth above (its new output and its two previous ones) after."""
    return ("x0", "x1", "x2") if d == 0 else (f"t_{d - 1}", f"h0_{d - 1}", f"h1_{d - 1}")


def _step_lines(depth: int, indent: str) -> list[str]:
    """One sample through every depth: ``t_d`` from the input ``(u0, u1, u2)`` (the depth above,
    now and at the two previous samples) and the depth's own two previous outputs ``(h0, h1)``.
    The terms are grouped so that the new input enters last: the path from one depth to the next
    within a sample is one multiply-add (the recursion through ``h0`` is two)."""
    lines = []
    for d in range(depth):
        u0, u1, u2 = _stage_input(d)
        lines.append(indent + f"t_{d} = vfma(c{d}_0, {u0}, vfnma(c{d}_3, h0_{d}, vfma(c{d}_1, {u1}, "
                              f"vfnma(c{d}_4, h1_{d}, vmul(c{d}_2, {u2})))))")
    return lines


def _shift_lines(depth: int, indent: str) -> list[str]:
    return [indent + "; ".join(f"h1_{d} = h0_{d}; h0_{d} = t_{d}" for d in range(depth)),
            indent + "x2 = x1; x1 = x0"]


_HEADER = [
    "    batch, channels, steps = x.shape",
    "    n_chunks = (steps + chunk - 1) // chunk",
    "    for r in numba.prange(batch * channels):",
    "        b = r // channels",
    "        c = r - b * channels",
]


def _forward_source(num_bands: int) -> str:
    """The forward kernel: per row, every sample through the depths of :func:`lane_layout`,
    states flushed and stored at the start of every chunk."""
    depth = lane_layout(num_bands).shape[0]
    lines = [
        "def forward(x, coef, chunk, out, states):",
        *_HEADER,
        *_coef_lines(depth, "        "),
        "        x1 = vzero(); x2 = x1",
        "        " + "; ".join(f"h0_{d} = x1; h1_{d} = x1" for d in range(depth)),
        "        for q in range(n_chunks):",
        f"            base = (r * n_chunks + q) * {depth * 8}",
        *(f"            h0_{d} = vflush(h0_{d}, TINY); h1_{d} = vflush(h1_{d}, TINY); "
          f"vstore(states, base + {8 * d}, h0_{d}); vstore(states, base + {8 * d + 4}, h1_{d})"
          for d in range(depth)),
        "            n0 = q * chunk",
        "            m = min(chunk, steps - n0)",
        # one-dimensional views of the chunk, indexed from 0: no negative-index handling
        "            xr = x[b, c, n0:n0 + m]",
        *(f"            o{band} = out[b, {band}, c, n0:n0 + m]" for band in range(num_bands)),
        "            for j in range(m):",
        "                x0 = vsplat(xr[j])",
        *_step_lines(depth, "                "),
        *(f"                o{band}[j] = vget(t_{depth - 1}, {band})"
          for band in range(num_bands)),
        *_shift_lines(depth, "                "),
    ]
    return "\n".join(lines) + "\n"


def _backward_source(num_bands: int) -> str:
    """The backward kernel: per chunk (last first) run the adjoint back through the chunk (it
    depends on the coefficients and the gradients alone) into ``vb``, then recompute every
    depth's outputs forward from the stored states and accumulate the coefficient gradients from
    the registers of that recomputation (chunk-local accumulators, added to ``gcoef``, which the
    caller zeroes): no buffer of recomputed outputs."""
    depth = lane_layout(num_bands).shape[0]
    grads = [f"g{band}[j]" if band < num_bands else "0.0" for band in range(LANES)]
    lines = [
        "def backward(gout, x, coef, chunk, states, gx, gcoef):",
        *_HEADER,
        *_coef_lines(depth, "        "),
        f"        vb = np.empty(chunk * {depth * 4})",
        "        z = vzero()",
        "        " + "; ".join(f"w0_{d} = z; w1_{d} = z" for d in range(depth)),
        "        for qq in range(n_chunks):",
        "            q = n_chunks - 1 - qq",
        "            n0 = q * chunk",
        "            m = min(chunk, steps - n0)",
        "            " + "; ".join(f"w0_{d} = vflush(w0_{d}, TINY); w1_{d} = vflush(w1_{d}, TINY)"
                                  for d in range(depth)),
        *(f"            g{band} = gout[b, {band}, c, n0:n0 + m]" for band in range(num_bands)),
        "            gxr = gx[b, c, n0:n0 + m]",
        "            for j in range(m - 1, -1, -1):",
        f"                e_{depth} = vset({', '.join(grads)})",
    ]
    indent = "                "
    for d in reversed(range(depth)):
        lines += [indent + f"v_{d} = vsub(e_{d + 1}, vfma(c{d}_3, w0_{d}, vmul(c{d}_4, w1_{d})))",
                  indent + f"e_{d} = vfma(c{d}_0, v_{d}, vfma(c{d}_1, w0_{d}, vmul(c{d}_2, w1_{d})))"]
    lines += [indent + f"vstore(vb, (j * {depth} + {d}) * 4, v_{d})" for d in range(depth)]
    lines += [indent + "; ".join(f"w1_{d} = w0_{d}; w0_{d} = v_{d}" for d in range(depth)),
              indent + "gxr[j] = vsum(e_0)"]
    # the recomputation: d/db_i = sum v u[n-i] (u the depth's input: the depth above, or x),
    # d/da_i = -sum v y[n-i], with u and y read from the registers before the shift
    lines += [
        f"            base = (r * n_chunks + q) * {depth * 8}",
        *(f"            h0_{d} = vload(states, base + {8 * d}); "
          f"h1_{d} = vload(states, base + {8 * d + 4})" for d in range(depth)),
        "            " + "; ".join(f"k{d}_{i} = z" for d in range(depth) for i in range(5)),
        "            x1 = vsplat(numba.float64(x[b, c, n0 - 1]) if n0 >= 1 else 0.0)",
        "            x2 = vsplat(numba.float64(x[b, c, n0 - 2]) if n0 >= 2 else 0.0)",
        "            xr = x[b, c, n0:n0 + m]",
        "            for j in range(m):",
        "                x0 = vsplat(xr[j])",
        *_step_lines(depth, indent),
    ]
    for d in range(depth):
        u0, u1, u2 = _stage_input(d)
        lines += [indent + f"v = vload(vb, (j * {depth} + {d}) * 4)",
                  indent + f"k{d}_0 = vfma(v, {u0}, k{d}_0); k{d}_1 = vfma(v, {u1}, k{d}_1); "
                           f"k{d}_2 = vfma(v, {u2}, k{d}_2)",
                  indent + f"k{d}_3 = vfnma(v, h0_{d}, k{d}_3); k{d}_4 = vfnma(v, h1_{d}, k{d}_4)"]
    lines += _shift_lines(depth, indent)
    lines += [f"            k = ((r * {depth} + {d}) * 5 + {i}) * 4; "
              f"vstore(gcoef, k, vadd(vload(gcoef, k), k{d}_{i}))"
              for d in range(depth) for i in range(5)]
    return "\n".join(lines) + "\n"


# multiply-adds written as separate operations in the kernels may fuse (FMA)
_JIT_OPTIONS = {"parallel": True, "fastmath": {"contract"}}


def _cache_dir() -> Path:
    root = os.environ.get("DYNFX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "dynfx")
    return Path(root) / "kernels"


@lru_cache(maxsize=None)
def _kernels(num_bands: int):
    """The compiled (forward, backward) kernels for ``num_bands``.

    The generated source is written to a file (named by its hash, under ``$DYNFX_CACHE_DIR``,
    default ``~/.cache/dynfx``) and imported from there, so that numba's on-disk cache keeps the
    machine code between processes; where no such directory can be written, the source is
    compiled in memory (a few seconds per process and band count)."""
    source = (f"# numba.njit options: {_JIT_OPTIONS!r}\n"
              "import numba\nimport numpy as np\n\n"
              "from dynfx._ops.simd import (vadd, vfma, vfnma, vflush, vget, vload, vmul, vset,\n"
              "                             vsplat, vstore, vsub, vsum, vzero)\n\n"
              f"TINY = {TINY!r}\n\n\n" + _forward_source(num_bands) + "\n\n"
              + _backward_source(num_bands))
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    namespace: dict = {}
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"split{num_bands}_{digest}.py"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(f"dynfx_split{num_bands}_{digest}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # numba's cache finds the module by name
        spec.loader.exec_module(module)
        namespace = vars(module)
        cache = True
    except OSError:
        exec(compile(source, f"<dynfx split {num_bands}>", "exec"), namespace)
        cache = False
    jit = numba.njit(**_JIT_OPTIONS, cache=cache)
    return jit(namespace["forward"]), jit(namespace["backward"])


@lru_cache(maxsize=None)
def _lane_index(num_bands: int) -> tuple[Tensor, int]:
    """The flat (depth x lane) -> stage index of :func:`lane_layout`, with the identity stage at
    ``S`` and the unused lanes at ``S + 1`` (rows appended to the coefficients)."""
    table = lane_layout(num_bands)
    n_stages = len(split_topology(num_bands)[0])
    index = np.where(table == IDENTITY, n_stages, np.where(table == UNUSED, n_stages + 1, table))
    return torch.from_numpy(index.reshape(-1)), table.shape[0]


def _lane_coefs(coef: Tensor, num_bands: int) -> Tensor:
    """(B, S, 5) stage coefficients -> (B, depth, 5, LANES) float64, the kernels' layout."""
    index, depth = _lane_index(num_bands)
    batch = coef.shape[0]
    extra = coef.new_tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 5]).expand(batch, 2, 5)
    full = torch.cat([coef, extra], dim=1)[:, index]  # (B, depth * LANES, 5)
    return full.view(batch, depth, LANES, 5).transpose(2, 3).contiguous()


class _FusedSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, num_bands: int) -> Tensor:
        x = x.detach().contiguous()
        ctx.coef_dtype = coef.dtype
        lanes = _lane_coefs(coef.detach().double(), num_bands)
        batch, channels, steps = x.shape
        out = scratch(batch, num_bands, channels, steps, dtype=x.dtype)
        n_chunks = max((steps + CHUNK - 1) // CHUNK, 1)
        states = scratch(batch * channels, n_chunks, lanes.shape[1], 2, LANES,
                         dtype=torch.float64)  # every value is written
        if x.numel():
            _kernels(num_bands)[0](x.numpy(), lanes.numpy(), CHUNK, out.numpy(), states.numpy())
        ctx.save_for_backward(x, lanes, states)
        ctx.num_bands, ctx.n_stages, ctx.chunk = num_bands, coef.shape[1], CHUNK
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        x, lanes, states = ctx.saved_tensors
        batch, channels, _ = x.shape
        depth = lanes.shape[1]
        gx = scratch_like(x)  # every sample is written
        glanes = torch.zeros(batch * channels, depth, 5, LANES, dtype=torch.float64)
        if x.numel():
            _kernels(ctx.num_bands)[1](gout.to(x.dtype).contiguous().numpy(), x.numpy(),
                                       lanes.numpy(), ctx.chunk, states.numpy(), gx.numpy(),
                                       glanes.numpy())
        # a stage that runs in several lanes gets the sum of their gradients
        glanes = glanes.view(batch, channels, depth, 5, LANES).sum(dim=1)
        glanes = glanes.transpose(2, 3).reshape(batch, depth * LANES, 5)
        index, _ = _lane_index(ctx.num_bands)
        gcoef = glanes.new_zeros(batch, ctx.n_stages + 2, 5).index_add_(1, index, glanes)
        return gx, gcoef[:, :ctx.n_stages].to(ctx.coef_dtype), None


def fused_split(x: Tensor, coef: Tensor, num_bands: int) -> Tensor:
    """Run the split of :func:`split_topology` on (B, C, T) CPU audio (float32 or float64),
    ``num_bands <= FUSED_MAX_BANDS``.

    ``coef``: (B, S, 5), the ``(b0, b1, b2, a1, a2)`` of every stage (``a0 = 1``), per batch
    item. Returns the bands as (B, num_bands, C, T) in x's dtype; differentiable with respect to
    x and coef (exact adjoint, recomputed chunk by chunk).
    """
    if not 2 <= num_bands <= FUSED_MAX_BANDS:
        raise ValueError(f"fused_split: num_bands must be in [2, {FUSED_MAX_BANDS}], got {num_bands}")
    stages, _, _ = split_topology(num_bands)
    if x.dim() != 3 or coef.shape != (x.shape[0], len(stages), 5):
        batch = x.shape[0] if x.dim() else "B"
        raise ValueError(f"fused_split: x must be (B, C, T) and coef ({batch}, {len(stages)}, 5), "
                         f"got {tuple(x.shape)} and {tuple(coef.shape)}")
    return _FusedSplit.apply(x, coef, num_bands)
