"""A whole crossover split as one autograd operation: every biquad of every band in one pass.

A split is a directed tree of biquad *stages* (direct form I, ``a0 = 1``, zero initial state):
stage ``k`` filters the input (``src[k] = -1``) or the output of an earlier stage
``src[k] < k``, and some stages are band outputs (``band_of[k] >= 0``). The forward kernel walks
the samples of one row once, running every stage on each sample with all states in registers
(local arrays), and writes the bands as (B, N, C, T): ready to be processed as N x B rows by the
band op, without a copy.

Backward: the adjoint of a biquad with coefficients ``(b0, b1, b2, a1, a2)`` is the same biquad
run backward in time: ``v[n] = g[n] - a1 v[n+1] - a2 v[n+2]`` and its input gradient
``b0 v[n] + b1 v[n+1] + b2 v[n+2]``; ``d/db_j = sum_n v[n] u[n-j]``, ``d/da_j = -sum_n v[n]
y[n-j]`` (u the stage's input, y its output). The stage outputs are not stored: the forward
pass keeps the two most recent outputs of every stage at the start of every chunk of
:data:`CHUNK` samples, and the backward pass recomputes one chunk at a time (last chunk first)
into a small buffer, then runs the adjoint recursion through it. Memory: the bands, plus
``2 S T / CHUNK`` float64 values per row.

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

__all__ = ["split_topology", "fused_split", "CHUNK", "FUSED_MAX_BANDS"]

CHUNK = 512
TINY = 1e-200  # far below any value that matters, far above the subnormal range (2.2e-308)
# The kernels are generated per band count as straight-line code; their compile time grows
# quickly with the number of stages (about 5 s forward and 10-20 s backward per dtype for 3-4
# bands on the 2-core machine, minutes for 8), so larger splits use the separate biquad passes.
FUSED_MAX_BANDS = 4


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


def _coef_lines(n_stages: int, indent: str) -> list[str]:
    return [indent + "; ".join(f"c{k}_{i} = coef[b, {k}, {i}]" for i in range(5))
            for k in range(n_stages)]


def _stage_inputs(k: int, src: np.ndarray) -> tuple[str, str, str]:
    s = int(src[k])
    return ("x0", "x1", "x2") if s < 0 else (f"y0_{s}", f"y1_{s}", f"y2_{s}")


def _stage_update(k: int, u0: str, u1: str, u2: str) -> str:
    # the terms known from earlier samples first, the new input last: the dependency chain
    # through the stages of one sample is then one multiply-add per stage
    return (f"y0_{k} = (c{k}_1 * {u1} + c{k}_2 * {u2} - c{k}_4 * y2_{k} - c{k}_3 * y1_{k})"
            f" + c{k}_0 * {u0}; " + _flush(f"y0_{k}"))


def _flush(name: str) -> str:
    """Values below TINY become 0 (NaN stays NaN): a state decaying through silence, or the
    adjoint of a high-pass fed a constant, would otherwise reach subnormal numbers, whose
    arithmetic is many times slower (3x for the whole backward pass of a constant gradient)."""
    return f"{name} = 0.0 if abs({name}) < {TINY!r} else {name}"


def _forward_source(num_bands: int) -> str:
    """The forward kernel for ``num_bands``: straight-line code, one scalar per state."""
    stages, src, band_of = split_topology(num_bands)
    n_stages = len(stages)
    lines = [
        "def forward(x, coef, chunk, out, states):",
        "    batch, channels, steps = x.shape",
        "    n_chunks = (steps + chunk - 1) // chunk",
        "    for r in numba.prange(batch * channels):",
        "        b = r // channels",
        "        c = r - b * channels",
        *_coef_lines(n_stages, "        "),
        "        x1 = 0.0; x2 = 0.0",
        *(f"        y1_{k} = 0.0; y2_{k} = 0.0" for k in range(n_stages)),
        "        for q in range(n_chunks):",
        *(f"            states[r, q, {k}, 0] = y1_{k}; states[r, q, {k}, 1] = y2_{k}"
          for k in range(n_stages)),
        "            for n in range(q * chunk, min(steps, (q + 1) * chunk)):",
        "                x0 = numba.float64(x[b, c, n])",
    ]
    for k in range(n_stages):
        u0, u1, u2 = _stage_inputs(k, src)
        lines.append("                " + _stage_update(k, u0, u1, u2))
        if band_of[k] >= 0:
            lines.append(f"                out[b, {band_of[k]}, c, n] = y0_{k}")
    lines += [f"                y2_{k} = y1_{k}; y1_{k} = y0_{k}" for k in range(n_stages)]
    lines.append("                x2 = x1; x1 = x0")
    return "\n".join(lines) + "\n"


def _backward_source(num_bands: int) -> str:
    """The backward kernel for ``num_bands``: per chunk (last first), recompute the stage
    outputs into ``buf`` from the stored states, then run the adjoint back through it."""
    stages, src, band_of = split_topology(num_bands)
    n_stages = len(stages)
    consumers = {k: [j for j in range(n_stages) if src[j] == k] for k in range(n_stages)}
    lines = [
        "def backward(gout, x, coef, chunk, states, gx, gcoef):",
        "    batch, channels, steps = x.shape",
        "    n_chunks = (steps + chunk - 1) // chunk",
        "    for r in numba.prange(batch * channels):",
        "        b = r // channels",
        "        c = r - b * channels",
        *_coef_lines(n_stages, "        "),
        f"        buf = np.empty((chunk + 2, {n_stages}))",
        "        xb = np.empty(chunk + 2)",
        *(f"        v1_{k} = 0.0; v2_{k} = 0.0; " + "; ".join(f"a{k}_{i} = 0.0" for i in range(5))
          for k in range(n_stages)),
        "        for qq in range(n_chunks):",
        "            q = n_chunks - 1 - qq",
        "            n0 = q * chunk",
        "            m = min(chunk, steps - n0)",
        "            xb[0] = numba.float64(x[b, c, n0 - 2]) if n0 >= 2 else 0.0",
        "            xb[1] = numba.float64(x[b, c, n0 - 1]) if n0 >= 1 else 0.0",
        "            for j in range(m):",
        "                xb[j + 2] = numba.float64(x[b, c, n0 + j])",
        "            x1 = xb[1]; x2 = xb[0]",
    ]
    for k in range(n_stages):
        lines.append(f"            y1_{k} = states[r, q, {k}, 0]; y2_{k} = states[r, q, {k}, 1]; "
                     f"buf[1, {k}] = y1_{k}; buf[0, {k}] = y2_{k}")
    lines += ["            for j in range(2, m + 2):", "                x0 = xb[j]"]
    for k in range(n_stages):
        u0, u1, u2 = _stage_inputs(k, src)
        lines.append("                " + _stage_update(k, u0, u1, u2))
        lines.append(f"                buf[j, {k}] = y0_{k}")
    lines += [f"                y2_{k} = y1_{k}; y1_{k} = y0_{k}" for k in range(n_stages)]
    lines.append("                x2 = x1; x1 = x0")
    # the adjoint walks back through the chunk with the stage outputs at j, j - 1 in scalars
    # (z0, z1) and loads only those at j - 2 (z2) from the buffer
    lines.append("            xz0 = xb[m + 1]; xz1 = xb[m]")
    lines += [f"            z0_{k} = buf[m + 1, {k}]; z1_{k} = buf[m, {k}]" for k in range(n_stages)]
    lines += ["            for j in range(m + 1, 1, -1):", "                n = n0 + j - 2",
              "                xz2 = xb[j - 2]"]
    lines += [f"                z2_{k} = buf[j - 2, {k}]" for k in range(n_stages)]
    for k in reversed(range(n_stages)):
        terms = [f"gi_{j}" for j in consumers[k]]
        if band_of[k] >= 0:
            terms.insert(0, f"numba.float64(gout[b, {band_of[k]}, c, n])")
        g = " + ".join(terms) if terms else "0.0"
        s = int(src[k])
        u = ("xz0", "xz1", "xz2") if s < 0 else (f"z0_{s}", f"z1_{s}", f"z2_{s}")
        lines += [
            f"                v0 = (-c{k}_4 * v2_{k} - c{k}_3 * v1_{k}) + ({g}); " + _flush("v0"),
            f"                gi_{k} = (c{k}_1 * v1_{k} + c{k}_2 * v2_{k}) + c{k}_0 * v0",
            f"                a{k}_0 += v0 * {u[0]}; a{k}_1 += v0 * {u[1]}; a{k}_2 += v0 * {u[2]}",
            f"                a{k}_3 -= v0 * z1_{k}; a{k}_4 -= v0 * z2_{k}",
            f"                v2_{k} = v1_{k}; v1_{k} = v0",
        ]
    lines += [f"                z0_{k} = z1_{k}; z1_{k} = z2_{k}" for k in range(n_stages)]
    lines.append("                xz0 = xz1; xz1 = xz2")
    gx_terms = " + ".join(f"gi_{k}" for k in range(n_stages) if src[k] < 0)
    lines.append(f"                gx[b, c, n] = {gx_terms}")
    for k in range(n_stages):
        lines.append("        " + "; ".join(f"gcoef[r, {k}, {i}] = a{k}_{i}" for i in range(5)))
    return "\n".join(lines) + "\n"


# multiply-adds may fuse (FMA): about 20 % faster forward, 10 % backward, rounding no worse
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
              "import numba\nimport numpy as np\n\n\n" + _forward_source(num_bands) + "\n\n"
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


class _FusedSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, num_bands: int) -> Tensor:
        x = x.detach().contiguous()
        ctx.coef_dtype = coef.dtype
        coef = coef.detach().double().contiguous()
        batch, channels, steps = x.shape
        out = x.new_empty(batch, num_bands, channels, steps)
        n_chunks = max((steps + CHUNK - 1) // CHUNK, 1)
        states = torch.empty(batch * channels, n_chunks, coef.shape[1], 2, dtype=torch.float64)
        if x.numel():
            _kernels(num_bands)[0](x.numpy(), coef.numpy(), CHUNK, out.numpy(), states.numpy())
        ctx.save_for_backward(x, coef, states)
        ctx.num_bands = num_bands
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        x, coef, states = ctx.saved_tensors
        batch, channels, _ = x.shape
        gx = torch.zeros_like(x)
        gcoef = torch.zeros(batch * channels, coef.shape[1], 5, dtype=torch.float64)
        if x.numel():
            _kernels(ctx.num_bands)[1](gout.to(x.dtype).contiguous().numpy(), x.numpy(),
                                       coef.numpy(), CHUNK, states.numpy(), gx.numpy(),
                                       gcoef.numpy())
        gcoef = gcoef.view(batch, channels, -1, 5).sum(dim=1).to(ctx.coef_dtype)
        return gx, gcoef, None


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
