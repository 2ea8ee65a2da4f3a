"""Float primitives shared by the quantizers: explicit FMA (fma32/fma64), fp16 (RNE) and bf16
conversion, ggml's nearest_int. Import them from iqk_studio.quant.common.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F = np.float32


@intrinsic
def fma32(typingctx, a, b, c):
    """float32 a*b + c with one rounding (llvm.fma.f32)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        t = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t] * 3))
        return builder.call(fn, args)
    return sig, codegen


@intrinsic
def fma64(typingctx, a, b, c):
    """float64 a*b + c with one rounding (llvm.fma.f64)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        t = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t] * 3))
        return builder.call(fn, args)
    return sig, codegen

# f(h) for every half bit pattern (exact, so a table is as good as F16C)
FP16_TABLE = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def fp32_to_fp16(f):
    """IEEE half bits (int) of float32 f, round to nearest even (F16C _cvtss_sh(x, 0))."""
    u = np.int64(np.float32(f).view(np.uint32))
    sign = (u >> 16) & 0x8000
    ex = (u >> 23) & 0xFF
    mant = u & 0x7FFFFF
    if ex == 255:
        return sign | 0x7C00 | (0x200 if mant else 0)
    e = ex - 112
    if e >= 31:
        return sign | 0x7C00
    if e <= 0:  # half subnormal (or zero): units of 2^-24
        s = 14 - e
        if s > 25:
            return sign
        m = mant | 0x800000
        q = m >> s
        rem = m & ((1 << s) - 1)
        half = 1 << (s - 1)
        if rem > half or (rem == half and (q & 1)):
            q += 1
        return sign | q
    h = (e << 10) | (mant >> 13)
    rem = mant & 0x1FFF
    if rem > 0x1000 or (rem == 0x1000 and (h & 1)):
        h += 1
    return sign | h


@njit(nogil=True, cache=True, error_model="numpy")
def fp16_to_fp32(h):
    return FP16_TABLE[h & 0xFFFF]


@njit(nogil=True, cache=True, error_model="numpy")
def fp16_round(f):
    """float32 value of fp16(f): what a stored half scale reads back as."""
    return FP16_TABLE[fp32_to_fp16(f)]


@njit(nogil=True, cache=True, error_model="numpy")
def fp32_to_bf16(f):
    """bf16 bits of f as ggml_compute_fp32_to_bf16: NaN quieted, else round to nearest even."""
    u = np.int64(np.float32(f).view(np.uint32))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@njit(nogil=True, cache=True, error_model="numpy")
def bf16_to_fp32(h):
    return np.uint32((np.int64(h) & 0xFFFF) << 16).view(np.float32)


@njit(nogil=True, cache=True, error_model="numpy")
def nearest_int(v):
    """ggml nearest_int: add 1.5*2^23 in float32 and read the mantissa (round half to even)."""
    t = np.float32(np.float32(v) + F(12582912.0))
    return np.int64(t.view(np.int32) & 0x007FFFFF) - 0x00400000


@njit(nogil=True, cache=True, error_model="numpy")
def nearest_int_mul(a, b):
    """nearest_int(a*b) as GCC compiles it: fma(a, b, 1.5*2^23), i.e. the exact product rounded."""
    t = np.float32(fma32(np.float32(a), np.float32(b), F(12582912.0)))
    return np.int64(t.view(np.int32) & 0x007FFFFF) - 0x00400000


@njit(nogil=True, cache=True, error_model="numpy")
def put_fp16(out, pos, f):
    """Store fp16(f) little-endian at out[pos:pos+2]."""
    h = fp32_to_fp16(f)
    out[pos] = h & 0xFF
    out[pos + 1] = h >> 8


@njit(nogil=True, cache=True, error_model="numpy")
def get_fp16(raw, pos):
    return FP16_TABLE[np.int64(raw[pos]) | (np.int64(raw[pos + 1]) << 8)]
