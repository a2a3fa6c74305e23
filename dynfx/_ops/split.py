"""A whole crossover split as one autograd operation: every biquad of every band in one pass.

A split is a directed tree of biquad *stages* (direct form I, ``a0 = 1``, zero initial state):
stage ``k`` filters the input (``src[k] = -1``) or the output of an earlier stage
``src[k] < k``, and some stages are band outputs (:func:`split_topology`). The last band is a
difference: the allpass at the last crossover of what the lower high-passes left, minus band
``N - 2`` (its low-pass pair). For the Linkwitz-Riley sections of
:func:`dynfx.crossover.split_coeffs` the low-pass pair plus the high-pass pair *is* that allpass,
so the difference is the high-pass pair's output, computed with one stage instead of two.

**Skewed lanes.** Every stage is one lane of :data:`~dynfx._ops.simd.LANES`-wide float64 vector
registers (:mod:`dynfx._ops.simd`; 3 bands: 8 stages, one register). A stage at tree depth
``L`` (its *level*) runs ``L`` samples late: at step ``s`` it takes sample ``s - L``, whose
input its source stage (level ``L - 1``) produced at step ``s - 1``. So one step is one
permute of the previous step's outputs (the new input of every lane, the audio sample for the
first level) and one vector biquad update of all stages at once, with no dependency inside a
step; the bands are read off their lanes ``L`` samples late, and the run takes ``T + max L``
steps. (The earlier kernel ran one band per lane with the stages of a band in sequence: four
vector biquads a sample for 3 bands, twice the arithmetic.) The bands are written as
(B, N, C, T), ready to be processed as B x N rows by the band op without a copy.

Backward: the adjoint of a biquad with coefficients ``(b0, b1, b2, a1, a2)`` is the same biquad
run backward in time: ``v[s] = E[s] - a1 v[s+1] - a2 v[s+2]``, where ``E`` is the gradient of
the stage's output (from the band it feeds, and ``e[s + 1]`` of the stages it feeds), and the
gradient of its input ``e[s] = b0 v[s] + b1 v[s+1] + b2 v[s+2]``; ``d/db_j = sum_s v[s]
u[s-j]``, ``d/da_j = -sum_s v[s] y[s-j]`` (u the stage's input, y its output). In the skewed
steps the reverse pass is again one transposed permute (a sum where a stage feeds two) and one
vector update per step. The stage outputs are not stored: the forward pass keeps the two most
recent outputs and inputs of every lane at the start of every chunk of :data:`CHUNK` steps; the
backward pass, one chunk at a time (last chunk first), runs the adjoint back through the chunk
(it needs no signal values), then recomputes the stage outputs forward from the stored states
and accumulates the coefficient gradients from them as they are made. Memory: the bands, plus
``32 V (T + max L) / CHUNK`` float64 values per row (``V`` registers of stages).

The recursion, the states and the accumulators are float64 whatever the signal's dtype (the
reason is in :mod:`dynfx._ops.biquad`). One row (batch item and channel) per parallel task, or
two interleaved (independent instructions to fill the time one step's latency leaves) where
there are enough rows for every thread and the stages fit one register.
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
from .simd import LANES

__all__ = ["split_topology", "stage_levels", "fused_split", "CHUNK", "FUSED_MAX_BANDS", "LANES"]

CHUNK = 512
# States and adjoints below TINY are flushed to 0 at every chunk start: a state decaying through
# silence (or the adjoint of a high-pass fed a constant) would otherwise reach subnormal numbers,
# whose arithmetic is many times slower. The crossover filters' poles lie at radius >= 0.43 (any
# sample rate, the ends of every crossover range), so a value decays by at most 0.37 decades a
# sample: from TINY it needs over 560 samples (more than a chunk) to reach the subnormal range
# (2.2e-308), and the flush catches it first. (512 steps a chunk: 0.93x the time of 256.)
TINY = 1e-100
FUSED_MAX_BANDS = 4
_STATES = 4  # vectors kept per register of stages at a chunk start: y[s-1], y[s-2], u[s-1], u[s-2]


@lru_cache(maxsize=None)
def split_topology(num_bands: int) -> tuple[tuple[tuple[str, int], ...], np.ndarray, np.ndarray]:
    """The stages of the series, allpass-compensated Linkwitz-Riley split into ``num_bands``.

    Returns ``(stages, src, band_of)``: ``stages[k] = (kind, i)``, a biquad of ``kind``
    (``"lowpass"``, ``"highpass"``, ``"allpass"``) at crossover ``i``; ``src[k]`` the stage it
    filters (``-1``: the input); ``band_of[k]`` the band it outputs (``-1``: none). Band ``i < N -
    1`` is ``AP_{N-2} ... AP_{i+1} LP_i LP_i`` of what the lower crossovers' high-passes left; the
    last band is ``AP_{N-2}`` of that, minus band ``N - 2`` (the high-pass pair
    ``HP_{N-2} HP_{N-2}`` of :func:`dynfx.crossover.split_bands`, for Linkwitz-Riley sections).
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
        if i < num_bands - 2:
            rest = add("highpass", i, add("highpass", i, rest))
    band_of[add("allpass", num_bands - 2, rest)] = num_bands - 1
    return tuple(stages), np.asarray(src, dtype=np.int64), np.asarray(band_of, dtype=np.int64)


def stage_levels(num_bands: int) -> np.ndarray:
    """Each stage's depth in the tree (0: it filters the input): the samples it runs late."""
    _, src, _ = split_topology(num_bands)
    level = np.zeros(len(src), dtype=np.int64)
    for k, s in enumerate(src):
        level[k] = 0 if s < 0 else level[s] + 1
    return level


def _registers(num_bands: int) -> int:
    return -(-len(split_topology(num_bands)[0]) // LANES)


def _lag(num_bands: int) -> int:
    """Steps beyond the signal's length: the deepest band's level."""
    _, _, band_of = split_topology(num_bands)
    return int(stage_levels(num_bands)[band_of >= 0].max())


@lru_cache(maxsize=None)
def lane_order(num_bands: int) -> np.ndarray:
    """Each stage's lane (flat over the registers): the bands' stages first, then the stages
    that filter the input, then the rest, so that the values read or written every step (the
    bands, the audio's gradient) sit in the lowest lanes, where a lane costs the fewest
    instructions to reach."""
    _, src, band_of = split_topology(num_bands)
    order = [int(np.flatnonzero(band_of == b)[0]) for b in range(num_bands - 1)]
    order += [k for k in range(len(src)) if src[k] < 0 and k not in order]
    last = int(np.flatnonzero(band_of == num_bands - 1)[0])
    order += [last] if last not in order else []
    order += [k for k in range(len(src)) if k not in order]
    pos = np.empty(len(src), dtype=np.int64)
    pos[order] = np.arange(len(src))
    return pos


# ---------------------------------------------------------------------------------------------
# Code generation. Stage k is lane P % LANES of register P // LANES, P = lane_order[k]; the
# names of a register's
# values carry its index and the row's suffix ("a", or "b" for the second interleaved row).

def _gather(picks: list, names: dict, zero: str) -> str:
    """An expression whose lane ``l`` is ``picks[l]``: a ``(source, lane)`` pair (``source`` a
    key of ``names``: a register or the audio sample) or ``None`` (0, from the register named
    ``zero``), in one :func:`vshuffle` of two operands or two of three."""
    picks = [(zero, 0) if p is None else p for p in picks]
    used = list(dict.fromkeys(source for source, _ in picks))
    if used == [zero]:
        return zero
    if len(used) == 1:
        used.append(used[0])
    if len(used) > 3:
        raise ValueError("a register draws from at most three sources")

    def name(key):
        return names.get(key, key)

    operand = {used[0]: 0, used[1]: 1}
    inner = ",".join(str(operand[s] * LANES + lane) if s in operand else str(i)
                     for i, (s, lane) in enumerate(picks))
    expr = f'vshuffle({name(used[0])}, {name(used[1])}, "{inner}")'
    if len(used) == 3:  # the third operand's lanes over the first two's
        outer = ",".join(str(LANES + lane) if s == used[2] else str(i)
                         for i, (s, lane) in enumerate(picks))
        expr = f'vshuffle({expr}, {name(used[2])}, "{outer}")'
    return expr


# a chunk's forward steps: the start and the end with range checks, the middle without
_FORWARD_RANGES = ((True, "s0", "lo"), (False, "lo", "hi"), (True, "hi", "e1"))


class _Gen:
    """The pieces of both kernels for one band count."""

    def __init__(self, num_bands: int):
        _, src, band_of = split_topology(num_bands)
        self.n = num_bands
        self.src = [int(s) for s in src]
        self.band_of = [int(b) for b in band_of]
        self.level = [int(v) for v in stage_levels(num_bands)]
        self.regs = _registers(num_bands)
        self.stages = len(self.src)
        self.lag = _lag(num_bands)
        self.band_stage = {b: k for k, b in enumerate(self.band_of) if b >= 0}
        self.children = [[j for j, s in enumerate(self.src) if s == k] for k in range(self.stages)]
        self.pos = [int(v) for v in lane_order(num_bands)]
        self.stage_at = {lane: k for k, lane in enumerate(self.pos)}
        # the stages that filter the input, all in one register (lane_order puts them low)
        self.firsts = [k for k in range(self.stages) if self.src[k] < 0]
        self.first_reg = self.at(self.firsts[0])[0]
        assert all(self.at(k)[0] == self.first_reg for k in self.firsts)
        # a row of the backward's chunk buffer: every register's adjoint v, then the first
        # level register's e
        self.row = (self.regs + 1) * LANES

    def lanes_of(self, i: int) -> list[int]:
        """The stage in each lane of register ``i`` (-1: none)."""
        return [self.stage_at.get(lane, -1) for lane in range(i * LANES, (i + 1) * LANES)]

    def at(self, k: int) -> tuple[int, int]:
        """Stage ``k``'s (register, lane)."""
        return divmod(self.pos[k], LANES)

    # -- shared pieces --------------------------------------------------------------------
    def row_lines(self, p: str, row: str, indent: str) -> list[str]:
        """A row's batch item ``b{p}`` and channel ``ch{p}``, its audio ``xr{p}`` and the
        coefficient registers of its item."""
        return [indent + f"b{p} = {row} // channels; ch{p} = {row} - b{p} * channels",
                *(indent + "; ".join(f"c{j}_{i}{p} = vload(coef, ((b{p} * {self.regs} + {i}) * 5 "
                                     f"+ {j}) * {LANES})" for j in range(5))
                  for i in range(self.regs)),
                indent + f"xr{p} = x[b{p}, ch{p}]"]

    def state_base(self, row: str, i: int) -> str:
        """The flat index of register ``i``'s stored states of chunk ``q`` of ``row``."""
        return f"(({row} * n_chunks + q) * {self.regs} + {i}) * {_STATES * LANES}"

    def input_lines(self, p: str, indent: str) -> list[str]:
        """``u0_i``: each lane's new input, its source's output of the previous step
        (``h0``) or the audio sample; a lane of no stage feeds itself (it stays 0)."""
        names = {("h", i): f"h0_{i}{p}" for i in range(self.regs)}
        names["x"] = f"xs{p}"
        lines = []
        for i in range(self.regs):
            picks = []
            for lane, k in enumerate(self.lanes_of(i)):
                if k < 0:
                    picks.append((("h", i), lane))
                elif self.src[k] < 0:
                    picks.append(("x", 0))
                else:
                    reg, at = self.at(self.src[k])
                    picks.append((("h", reg), at))
            lines.append(indent + f"u0_{i}{p} = " + _gather(picks, names, "zv"))
        return lines

    def step_lines(self, p: str, indent: str) -> list[str]:
        """The biquad update of every register; the new input enters last."""
        return [indent + f"t_{i}{p} = vfma(c0_{i}{p}, u0_{i}{p}, vfnma(c3_{i}{p}, h0_{i}{p}, "
                         f"vfma(c1_{i}{p}, u1_{i}{p}, vfnma(c4_{i}{p}, h1_{i}{p}, "
                         f"vmul(c2_{i}{p}, u2_{i}{p})))))" for i in range(self.regs)]

    def shift_lines(self, p: str, indent: str) -> list[str]:
        return [indent + "; ".join(f"u2_{i}{p} = u1_{i}{p}; u1_{i}{p} = u0_{i}{p}; "
                                   f"h1_{i}{p} = h0_{i}{p}; h0_{i}{p} = t_{i}{p}"
                                   for i in range(self.regs))]

    def state_names(self, p: str, i: int) -> list[str]:
        return [f"h0_{i}{p}", f"h1_{i}{p}", f"u1_{i}{p}", f"u2_{i}{p}"]

    def get(self, reg: str, k: int, p: str) -> str:
        """Stage ``k``'s lane of register value ``reg`` (``t``, ``h0``, ``e``) of row ``p``."""
        i, lane = self.at(k)
        return f"vget({reg}_{i}{p}, {lane})"

    # -- forward ---------------------------------------------------------------------------
    def forward_rows(self, rows: list[tuple[str, str]], indent: str) -> list[str]:
        """The forward pass over the chunks of the rows ``(suffix, row index)``, interleaved."""
        ind2, ind3 = indent + "    ", indent + "        "
        lines = []
        for p, row in rows:
            lines += self.row_lines(p, row, indent)
            lines += [indent + "; ".join(f"{v} = zv" for i in range(self.regs)
                                         for v in self.state_names(p, i))]
            lines += [indent + f"o{band}{p} = out[b{p}, {band}, ch{p}]" for band in range(self.n)]
        lines += [indent + "for q in range(n_chunks):"]
        for p, row in rows:
            for i in range(self.regs):
                names = self.state_names(p, i)
                lines += [ind2 + "; ".join(f"{v} = vflush({v}, TINY)" for v in names)]
                lines += [ind2 + f"base = {self.state_base(row, i)}"]
                lines += [ind2 + "; ".join(f"vstore(states, base + {LANES * m}, {v})"
                                           for m, v in enumerate(names))]
        lines += [ind2 + "s0 = q * chunk"]
        lines += self.ranges(ind2)
        for guarded, lo, hi in _FORWARD_RANGES:
            lines += [ind2 + f"for s in range({lo}, {hi}):"]
            for p, _ in rows:
                lines += [ind3 + f"xs{p} = vsplat({self.x_read(p, guarded)})"]
                lines += self.input_lines(p, ind3)
                lines += self.step_lines(p, ind3)
            for p, _ in rows:
                lines += self.write_lines(p, ind3, guarded)
                lines += self.shift_lines(p, ind3)
        return lines

    def ranges(self, indent: str) -> list[str]:
        """The steps ``[lo, hi)`` of the chunk ``[s0, e1)`` where every band has a sample and
        the audio one (most of the signal): there without the range checks of the ends."""
        return [indent + "e1 = min(s0 + chunk, total)",
                indent + f"hi = max(min(e1, steps), s0); lo = min(max(s0, {self.lag}), hi)"]

    @staticmethod
    def g_read(band: int, lag: int, p: str, guarded: bool) -> str:
        """Band ``band``'s gradient at the step's sample for a lane ``lag`` late (0 outside the
        signal where ``guarded``)."""
        if not guarded:
            return f"numba.float64(g{band}{p}[s - {lag}])"
        return f"g{band}{p}[s - {lag}] if s >= {lag} and s < steps + {lag} else 0.0"

    @staticmethod
    def x_read(p: str, guarded: bool) -> str:
        return f"xr{p}[s] if s < steps else 0.0" if guarded else f"xr{p}[s]"

    def write_lines(self, p: str, indent: str, guarded: bool) -> list[str]:
        """The band outputs of this step: band ``b`` from its stage's lane, ``level`` samples
        late; the last band the allpass of the previous step minus band ``N - 2``."""
        lines = []
        last, low = self.n - 1, self.n - 2
        inner = indent + "    " if guarded else indent
        for band in range(self.n - 1):
            k = self.band_stage[band]
            lag = self.level[k]
            if guarded:
                lines += [indent + f"if s >= {lag} and s < steps + {lag}:"]
            if band == low:
                ap = self.band_stage[last]
                assert self.level[ap] == lag - 1  # its output of the previous step: the sample
                lines += [inner + f"ylo = {self.get('t', k, p)}",
                          inner + f"o{band}{p}[s - {lag}] = ylo",
                          inner + f"o{last}{p}[s - {lag}] = {self.get('h0', ap, p)} - ylo"]
            else:
                lines += [inner + f"o{band}{p}[s - {lag}] = {self.get('t', k, p)}"]
        return lines

    # -- backward --------------------------------------------------------------------------
    def grad_lines(self, p: str, indent: str, guarded: bool) -> list[str]:
        """``E_i``: the gradient of every lane's output at this step: from the bands (the last
        band's gradient to the allpass lane, and with a minus to band ``N - 2``'s) and from the
        stages each lane feeds (their ``e`` of the step after: a transposed permute, two where
        a stage feeds two). ``guarded``: the step may lie where a band has no sample."""
        last, low = self.n - 1, self.n - 2
        lines = []

        def read(band, lag):
            return self.g_read(band, lag, p, guarded)

        for band in range(self.n - 1):
            k = self.band_stage[band]
            lines += [indent + f"gb{band} = {read(band, self.level[k])}"]
        # the last band's gradient goes to the allpass lane and, one sample later, to band
        # N - 2's: the value read now is the allpass lane's at the next (earlier) step
        k_low = self.band_stage[low]
        assert self.level[self.band_stage[last]] == self.level[k_low] - 1
        lines += [indent + f"gb{last} = gcar{p}",
                  indent + f"gcar{p} = {read(last, self.level[k_low])}"]
        contrib = {}
        for band in range(self.n):
            contrib.setdefault(self.band_stage[band], []).append(f"gb{band}")
        gl = f"gb{low} - gcar{p}"
        names = {("e", i): f"ep_{i}{p}" for i in range(self.regs)}
        for i in range(self.regs):
            # a band's stage feeds no stage, so the band gradients and the first fed-back e of
            # every other lane come in one permute, from e and a vector of the gradients
            # (packed into its lowest lanes, the rest 0)
            grads = []
            for k in self.lanes_of(i):
                if k == k_low:
                    grads.append(gl)
                elif k in contrib:
                    grads.append(" + ".join(contrib[k]))
            names[("g", i)] = f"gv_{i}{p}"
            if grads:
                padded = grads + ["0.0"] * (LANES - len(grads))
                lines += [indent + f"gv_{i}{p} = vset({', '.join(padded)})"]
            zero = (("g", i), LANES - 1) if grads else None
            exprs = []
            for order in range(2):
                picks, slot = [], 0
                for k in self.lanes_of(i):
                    kids = self.children[k] if k >= 0 else []
                    if order == 0 and (k == k_low or k in contrib):
                        picks.append((("g", i), slot))
                        slot += 1
                    elif len(kids) > order:
                        picks.append((("e", self.at(kids[order])[0]), self.at(kids[order])[1]))
                    else:
                        picks.append(zero if order == 0 else None)
                if any(pk is not None for pk in picks):
                    exprs.append(_gather(picks, names, "zv"))
            expr = (f"vadd({exprs[0]}, {exprs[1]})" if len(exprs) == 2 else
                    exprs[0] if exprs else "zv")
            lines += [indent + f"E_{i}{p} = {expr}"]
        return lines

    def adjoint_rows(self, rows: list[tuple[str, str]], indent: str, guarded: bool) -> list[str]:
        """One reverse step for every row: the adjoint into the chunk buffer ``vb{p}``, the
        audio's gradient from the first level's lanes."""
        lines = []
        for p, _ in rows:
            lines += self.grad_lines(p, indent, guarded)
            for i in range(self.regs):
                lines += [indent + f"v_{i}{p} = vsub(E_{i}{p}, vfma(c3_{i}{p}, w0_{i}{p}, "
                                   f"vmul(c4_{i}{p}, w1_{i}{p})))",
                          indent + f"e_{i}{p} = vfma(c0_{i}{p}, v_{i}{p}, vfma(c1_{i}{p}, "
                                   f"w0_{i}{p}, vmul(c2_{i}{p}, w1_{i}{p})))",
                          indent + f"vstore(vb{p}, (s - s0) * {self.row} + {LANES * i}, v_{i}{p})"]
            # e of the first level's register, for the audio's gradient (summed from the buffer
            # in the recomputation's loop: no lane extraction here)
            lines += [indent + f"vstore(vb{p}, (s - s0) * {self.row} + {self.regs * LANES}, "
                               f"e_{self.first_reg}{p})"]
            lines += [indent + "; ".join(f"w1_{i}{p} = w0_{i}{p}; w0_{i}{p} = v_{i}{p}; "
                                         f"ep_{i}{p} = e_{i}{p}" for i in range(self.regs))]
        return lines

    def recompute_rows(self, rows: list[tuple[str, str]], indent: str,
                       guarded: bool) -> list[str]:
        """One forward step of the recomputation for every row, the coefficient gradients
        accumulated from its registers."""
        lines = []
        for p, _ in rows:
            lines += [indent + f"xs{p} = vsplat({self.x_read(p, guarded)})"]
            lines += self.input_lines(p, indent)
            lines += self.step_lines(p, indent)
            gx = (f"gxr{p}[s] = " + " + ".join(f"vb{p}[(s - s0) * {self.row} + "
                                               f"{self.regs * LANES + self.at(k)[1]}]"
                                               for k in self.firsts))
            lines += [indent + "if s < steps:", indent + "    " + gx] if guarded else [indent + gx]
            for i in range(self.regs):
                q = f"_{i}{p}"
                lines += [indent + f"v = vload(vb{p}, (s - s0) * {self.row} + {LANES * i})",
                          indent + f"k0{q} = vfma(v, u0{q}, k0{q}); k1{q} = vfma(v, u1{q}, k1{q}); "
                                   f"k2{q} = vfma(v, u2{q}, k2{q})",
                          indent + f"k3{q} = vfnma(v, h0{q}, k3{q}); "
                                   f"k4{q} = vfnma(v, h1{q}, k4{q})"]
            lines += self.shift_lines(p, indent)
        return lines

    def backward_rows(self, rows: list[tuple[str, str]], indent: str) -> list[str]:
        """The backward pass over the chunks of the rows, last chunk first, interleaved."""
        ind2, ind3 = indent + "    ", indent + "        "
        lines = []
        for p, row in rows:
            lines += self.row_lines(p, row, indent)
            lines += [indent + "; ".join(f"w0_{i}{p} = zv; w1_{i}{p} = zv; ep_{i}{p} = zv"
                                         for i in range(self.regs))]
            lines += [indent + f"gxr{p} = gx[b{p}, ch{p}]"]
            lines += [indent + f"g{band}{p} = gout[b{p}, {band}, ch{p}]" for band in range(self.n)]
            lines += [indent + f"vb{p} = np.empty(chunk * {self.row})"]
        lines += [indent + "for qq in range(n_chunks):",
                  ind2 + "q = n_chunks - 1 - qq",
                  ind2 + "s0 = q * chunk"]
        for p, _ in rows:
            lines += [ind2 + "; ".join(f"{v}_{i}{p} = vflush({v}_{i}{p}, TINY)"
                                       for i in range(self.regs) for v in ("w0", "w1", "ep"))]
        # the reverse steps: where every band has a sample (most of the signal) without the
        # per-band range checks, the ends with them
        lines += self.ranges(ind2)
        lag_ap = self.level[self.band_stage[self.n - 1]]
        for p, _ in rows:
            lines += [ind2 + f"s = e1 - 1; gcar{p} = {self.g_read(self.n - 1, lag_ap, p, True)}"]
        lines += [ind2 + "for s in range(e1 - 1, hi - 1, -1):",
                  *self.adjoint_rows(rows, ind3, True),
                  ind2 + "for s in range(hi - 1, lo - 1, -1):",
                  *self.adjoint_rows(rows, ind3, False),
                  ind2 + "for s in range(lo - 1, s0 - 1, -1):",
                  *self.adjoint_rows(rows, ind3, True)]
        for p, row in rows:
            for i in range(self.regs):
                lines += [ind2 + f"base = {self.state_base(row, i)}"]
                lines += [ind2 + "; ".join(f"{v} = vload(states, base + {LANES * m})"
                                           for m, v in enumerate(self.state_names(p, i)))]
            lines += [ind2 + "; ".join(f"k{j}_{i}{p} = zv" for i in range(self.regs)
                                       for j in range(5))]
        for guarded, lo, hi in _FORWARD_RANGES:
            lines += [ind2 + f"for s in range({lo}, {hi}):"]
            lines += self.recompute_rows(rows, ind3, guarded)
        for p, row in rows:
            lines += [ind2 + f"k = (({row} * {self.regs} + {i}) * 5 + {j}) * {LANES}; "
                             f"vstore(gcoef, k, vadd(vload(gcoef, k), k{j}_{i}{p}))"
                      for i in range(self.regs) for j in range(5)]
        return lines


_HEADER = [
    "    batch, channels, steps = x.shape",
    "    rows = batch * channels",
    "    zv = vzero()",
    "    n_chunks = (total + chunk - 1) // chunk",
    "    tasks = (rows + 1) // 2 if pair else rows",
    "    for t in numba.prange(tasks):",
    "        task = np.int64(t)  # the parallel index may be unsigned: keep the arithmetic signed",
]


def _kernel_source(gen: _Gen, name: str, signature: str, method) -> str:
    """A kernel whose task is one row, or two interleaved (``pair``) where the registers allow;
    an odd last row runs alone."""
    lines = [f"def {name}({signature}):", *_HEADER]
    if gen.regs == 1:
        lines += ["        if pair and 2 * task + 1 < rows:",
                  "            ra = 2 * task; rb = ra + 1",
                  *method([("a", "ra"), ("b", "rb")], "            "),
                  "        else:",
                  "            ra = 2 * task if pair else task",
                  *method([("a", "ra")], "            ")]
    else:
        lines += ["        ra = task", *method([("a", "ra")], "        ")]
    return "\n".join(lines) + "\n"


def _forward_source(num_bands: int) -> str:
    """The forward kernel: every step, the permuted inputs and one biquad update per register;
    the bands read off their lanes; states flushed and stored at the start of every chunk."""
    gen = _Gen(num_bands)
    return _kernel_source(gen, "forward", "x, coef, chunk, total, pair, out, states",
                          gen.forward_rows)


def _backward_source(num_bands: int) -> str:
    """The backward kernel: per chunk (last first) the adjoint back through the chunk into
    ``vb`` (it depends on the coefficients and the gradients alone), then every stage's outputs
    recomputed forward from the stored states, the coefficient gradients accumulated from the
    registers of that recomputation (chunk-local accumulators, added to ``gcoef``, which the
    caller zeroes): no buffer of recomputed outputs."""
    gen = _Gen(num_bands)
    return _kernel_source(gen, "backward",
                          "gout, x, coef, chunk, total, pair, states, gx, gcoef",
                          gen.backward_rows)


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
              "                             vshuffle, vsplat, vstore, vsub, vzero)\n\n"
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


def _stage_coefs(coef: Tensor, num_bands: int) -> Tensor:
    """(B, S, 5) stage coefficients -> (B, V, 5, LANES) float64, the kernels' layout (stage k in
    its lane of :func:`lane_order`; the lanes of no stage all 0)."""
    batch, n_stages, _ = coef.shape
    regs = _registers(num_bands)
    full = coef.new_zeros(batch, regs * LANES, 5)
    full[:, torch.from_numpy(lane_order(num_bands))] = coef
    return full.view(batch, regs, LANES, 5).transpose(2, 3).contiguous()


def _pair_rows(rows: int, num_bands: int) -> bool:
    """Two rows per task where the stages fit one register and every thread still gets a
    task."""
    return _registers(num_bands) == 1 and rows >= 2 * numba.get_num_threads()


class _FusedSplit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, coef: Tensor, num_bands: int) -> Tensor:
        x = x.detach().contiguous()
        ctx.coef_dtype = coef.dtype
        lanes = _stage_coefs(coef.detach().double(), num_bands)
        batch, channels, steps = x.shape
        out = scratch(batch, num_bands, channels, steps, dtype=x.dtype)
        total = steps + _lag(num_bands)
        n_chunks = (total + CHUNK - 1) // CHUNK
        states = scratch(batch * channels, n_chunks, lanes.shape[1], _STATES, LANES,
                         dtype=torch.float64)  # every value is written
        pair = _pair_rows(batch * channels, num_bands)
        if x.numel():
            _kernels(num_bands)[0](x.numpy(), lanes.numpy(), CHUNK, total, pair, out.numpy(),
                                   states.numpy())
        ctx.save_for_backward(x, lanes, states)
        ctx.num_bands, ctx.n_stages, ctx.chunk = num_bands, coef.shape[1], CHUNK
        ctx.total, ctx.pair = total, pair
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, gout: Tensor):
        x, lanes, states = ctx.saved_tensors
        batch, channels, _ = x.shape
        regs = lanes.shape[1]
        gx = scratch_like(x)  # every sample is written
        glanes = torch.zeros(batch * channels, regs, 5, LANES, dtype=torch.float64)
        if x.numel():
            _kernels(ctx.num_bands)[1](gout.to(x.dtype).contiguous().numpy(), x.numpy(),
                                       lanes.numpy(), ctx.chunk, ctx.total, ctx.pair,
                                       states.numpy(), gx.numpy(), glanes.numpy())
        # the channels of an item share its coefficients
        glanes = glanes.view(batch, channels, regs, 5, LANES).sum(dim=1)
        gcoef = glanes.transpose(2, 3).reshape(batch, regs * LANES, 5)[
            :, torch.from_numpy(lane_order(ctx.num_bands))]
        return gx, gcoef.to(ctx.coef_dtype), None


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
