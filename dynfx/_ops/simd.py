"""Eight float64 lanes as one value in numba kernels: LLVM's ``<8 x double>``, which AVX-512
keeps in one register, with the handful of operations the fused kernels need.

numba has no SIMD type of its own and its auto-vectoriser does not reliably pack independent
recursions (such as the biquads of a crossover split) into vector registers; these intrinsics
let generated kernel code say exactly what runs in one register. On machines without 512-bit
vectors LLVM splits each operation into narrower ones (same results, less speed).

All loads and stores take a C-contiguous float64 array and a *flat* element index (the caller
computes it), so arrays of any rank work and no views are made inside hot loops.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

__all__ = ["LANES", "vec", "vzero", "vsplat", "vset", "vload", "vstore", "vget", "vfma", "vfnma",
           "vmul", "vadd", "vsub", "vflush", "vshuffle"]

LANES = 8
_LL = ir.VectorType(ir.DoubleType(), LANES)
_I32 = ir.IntType(32)


class VecType(types.Type):
    """:data:`LANES` float64 lanes (LLVM ``<8 x double>``)."""

    def __init__(self):
        super().__init__(name=f"Vec{LANES}")


vec = VecType()


@register_model(VecType)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _LL)


def _splat(builder, value):
    one = builder.insert_element(ir.Constant(_LL, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(_LL, ir.Undefined),
                                  ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _call(builder, name, args):
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_LL, [_LL] * len(args)), name)
    return builder.call(fn, args)


def _lane_ptr(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [index]), _LL.as_pointer())


def _check_array(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.float64 and arr.layout == "C"):
        raise TypeError(f"expected a C-contiguous float64 array, got {arr}")


@intrinsic
def vzero(typingctx):
    """All lanes 0."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_LL, [0.0] * LANES)
    return vec(), codegen


@intrinsic
def vsplat(typingctx, x):
    """``x`` (a float) in every lane."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.float64)
        return _splat(builder, value)
    return vec(x), codegen


@intrinsic
def vset(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """The lanes ``(a0, ..., a7)`` (floats)."""
    def codegen(context, builder, sig, args):
        v = ir.Constant(_LL, ir.Undefined)
        for lane, (value, ty) in enumerate(zip(args, sig.args)):
            value = context.cast(builder, value, ty, types.float64)
            v = builder.insert_element(v, value, ir.Constant(_I32, lane))
        return v
    return vec(a0, a1, a2, a3, a4, a5, a6, a7), codegen


@intrinsic
def vload(typingctx, arr, index):
    """``arr.flat[index:index + LANES]`` (C-contiguous float64 ``arr``)."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        return builder.load(_lane_ptr(context, builder, sig.args[0], args[0], args[1]), align=8)
    return vec(arr, types.intp), codegen


@intrinsic
def vstore(typingctx, arr, index, v):
    """``arr.flat[index:index + LANES] = v``."""
    _check_array(arr)

    def codegen(context, builder, sig, args):
        builder.store(args[2], _lane_ptr(context, builder, sig.args[0], args[0], args[1]),
                      align=8)
        return context.get_dummy_value()
    return types.none(arr, types.intp, vec), codegen


@intrinsic
def vget(typingctx, v, lane):
    """Lane ``lane`` of ``v``, a float."""
    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], builder.trunc(args[1], _I32))
    return types.float64(vec, types.intp), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` with one rounding, lane by lane."""
    def codegen(context, builder, sig, args):
        return _call(builder, f"llvm.fma.v{LANES}f64", list(args))
    return vec(vec, vec, vec), codegen


@intrinsic
def vfnma(typingctx, a, b, c):
    """``c - a * b`` with one rounding, lane by lane."""
    def codegen(context, builder, sig, args):
        return _call(builder, f"llvm.fma.v{LANES}f64", [builder.fneg(args[0]), args[1], args[2]])
    return vec(vec, vec, vec), codegen


@intrinsic
def vmul(typingctx, a, b):
    """``a * b`` lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fmul(*args)
    return vec(vec, vec), codegen


@intrinsic
def vadd(typingctx, a, b):
    """``a + b`` lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(*args)
    return vec(vec, vec), codegen


@intrinsic
def vsub(typingctx, a, b):
    """``a - b`` lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fsub(*args)
    return vec(vec, vec), codegen


@intrinsic
def vflush(typingctx, v, tiny):
    """Lanes with ``|v| < tiny`` become 0 (NaN stays NaN)."""
    def codegen(context, builder, sig, args):
        small = builder.fcmp_ordered("<", _call(builder, f"llvm.fabs.v{LANES}f64", [args[0]]),
                                     _splat(builder, args[1]))
        return builder.select(small, ir.Constant(_LL, [0.0] * LANES), args[0])
    return vec(vec, types.float64), codegen


@intrinsic(prefer_literal=True)
def vshuffle(typingctx, a, b, mask):
    """Lane ``i`` of the result is lane ``m[i]`` of the concatenation ``(a, b)`` (``m[i] <
    2 LANES``), where ``mask`` is the string literal ``"m0,m1,...,m7"``: one permute instruction
    where the target has it."""
    if not isinstance(mask, types.StringLiteral):
        return None
    index = [int(m) for m in mask.literal_value.split(",")]
    if len(index) != LANES or not all(0 <= m < 2 * LANES for m in index):
        raise ValueError(f"vshuffle: the mask needs {LANES} lane indices in [0, {2 * LANES}), "
                         f"got {mask.literal_value!r}")

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[1],
                                      ir.Constant(ir.VectorType(_I32, LANES), index))
    return vec(vec, vec, mask), codegen
