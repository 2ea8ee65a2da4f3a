"""Private helpers of the 2-3 bit IQK kernels (iq2_k, iq2_ks, iq3_k, iq3_ks, iq2_kl): value
tables as float32, importance weights, nearest-value search, the AVX2 horizontal sum.
No fast-math: every fused multiply-add of the reference build (read from GCC 12's tree dump of
iqk_quantize.cpp) is written out as fma32; everything else is rounded operation by operation.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from iqk_studio.quant import grids
from iqk_studio.quant.common import F, fma32
from iqk_studio.quant.kernels import MODE_DEFAULT, MODE_IMATRIX, MODE_UNIFORM  # noqa: F401

IQ2NL = grids.iq2nl_values.astype(np.float32)  # (8,) base | shifted
IQ3NL = grids.iq3nl_values.astype(np.float32)  # (16,) base | shifted
# iqk_quantize.cpp iq3nl_index[111]: entries < 8 are final, 8 + i means "i or i + 1"
IQ3NL_INDEX = np.array(
    [0] * 11 + [8, 8] + [1] * 18 + [9, 9] + [2] * 13 + [10, 10] + [3] * 10 + [11, 11]
    + [4] * 10 + [12] + [5] * 12 + [13, 13] + [6] * 15 + [14, 14] + [7] * 9, dtype=np.int64)
assert IQ3NL_INDEX.shape[0] == 111


@njit(nogil=True, cache=True)
def hsum8(v):
    """hsum_float_8 of iqk_common.h: ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))."""
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


@njit(nogil=True, cache=True)
def sum_sq(x, j0, n):
    """Σx² in order with each x² rounded (GCC vectorizes it as an in-order reduction)."""
    s = F(0.0)
    for j in range(j0, j0 + n):
        s += x[j] * x[j]
    return s


@njit(nogil=True, cache=True)
def weights_sigma(w, x, qw, j0, n, sigma2, mode, fused):
    """IQ2_K/IQ2_KS/IQ3_K weights: qw·sqrt(σ²+x²) with imatrix, else 0.25·σ² + x² (or 1).

    Without imatrix GCC emitted fma(x, x, 0.25·σ²) in some functions and a separately rounded
    x² in others (when the squares are shared with another vectorized use): `fused` selects."""
    c = F(0.25) * sigma2
    for j in range(n):
        xj = x[j0 + j]
        if mode == MODE_IMATRIX:
            w[j] = qw[j0 + j] * np.sqrt(fma32(xj, xj, sigma2))
        elif mode == MODE_UNIFORM:
            w[j] = F(1.0)
        elif fused:
            w[j] = fma32(xj, xj, c)
        else:
            w[j] = c + xj * xj


@njit(nogil=True, cache=True)
def best_index_iq2nl(values, off, x):
    """iqk best_index_iq2nl on values[off:off+4]: nearest, ties to the higher index."""
    idx = 0 if x < values[off + 1] else (2 if x > values[off + 2] else 1)
    return idx if x - values[off + idx] < values[off + idx + 1] - x else idx + 1


@njit(nogil=True, cache=True)
def best_index_iq3nl(values, off, x):
    """iqk best_index_iq3nl on values[off:off+8] via the iq3nl_index table (trunc of x)."""
    ix = np.int64(np.int32(x)) - np.int64(values[off])
    if ix < 0:
        return 0
    if ix >= 111:
        return 7
    ix = IQ3NL_INDEX[ix]
    if ix < 8:
        return ix
    return ix - 8 if x - values[off + ix - 8] < values[off + ix - 7] - x else ix - 7


@intrinsic
def dot32_lanes(typingctx, a, b):
    """Σ a·b over a[0:32], b[0:32] exactly as the AVX2 code sums it: lane l accumulates elements
    l, l+8, l+16, l+24 with FMA from +0, then hsum_float_8. Emitted as <8 x float> FMAs (LLVM
    does not vectorize the scalar form). a, b: C-contiguous float32 1-D arrays, >= 32 long."""
    for t in (a, b):
        if not (isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C"
                and t.dtype == types.float32):
            return None
    sig = types.float32(a, b)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        v8 = ir.VectorType(f32, 8)
        fma = builder.module.globals.get("llvm.fma.v8f32")
        if fma is None:
            fma = ir.Function(builder.module, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
        ptrs = []
        for ty, val in zip(signature.args, args, strict=True):
            arr = context.make_array(ty)(context, builder, val)
            ptrs.append(builder.bitcast(arr.data, v8.as_pointer()))
        acc = ir.Constant(v8, [0.0] * 8)
        for k in range(4):
            idx = [ir.Constant(ir.IntType(64), k)]
            va = builder.load(builder.gep(ptrs[0], idx), align=4)
            vb = builder.load(builder.gep(ptrs[1], idx), align=4)
            acc = builder.call(fma, [va, vb, acc])
        lane = [builder.extract_element(acc, ir.Constant(ir.IntType(32), i)) for i in range(8)]
        s04, s26 = builder.fadd(lane[0], lane[4]), builder.fadd(lane[2], lane[6])
        s15, s37 = builder.fadd(lane[1], lane[5]), builder.fadd(lane[3], lane[7])
        return builder.fadd(builder.fadd(s04, s26), builder.fadd(s15, s37))

    return sig, codegen


def _splat(builder, v8, scalar):
    """<8 x float> with every lane = scalar."""
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(v8, ir.Undefined), scalar, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(v8, ir.Undefined), ir.Constant(ir.VectorType(i32, 8), [0] * 8))


def _hsum8_ir(builder, acc):
    lane = [builder.extract_element(acc, ir.Constant(ir.IntType(32), i)) for i in range(8)]
    s04, s26 = builder.fadd(lane[0], lane[4]), builder.fadd(lane[2], lane[6])
    s15, s37 = builder.fadd(lane[1], lane[5]), builder.fadd(lane[3], lane[7])
    return builder.fadd(builder.fadd(s04, s26), builder.fadd(s15, s37))


@intrinsic
def label4_sums(typingctx, xb, w, v, t):
    """compute_1block_iq2ks's labelling and sums in its AVX2 form: for each of the 32 x, the
    t_j of the nearest v_j ((x - v_j)² smallest, ties to the lower j) and of the nearest -v_j
    ((x + v_j)²); returns (Σw·q·x, Σw·q²) for both labellings as 8-lane FMA chains + hsum8.
    xb, w: 32 float32; v = d·t (4 float32); t: the 4 values. Emitted as <8 x float> IR."""
    for a in (xb, w, v, t):
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype == types.float32):
            return None
    sig = types.UniTuple(types.float32, 4)(xb, w, v, t)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        v8 = ir.VectorType(f32, 8)
        fma = builder.module.globals.get("llvm.fma.v8f32")
        if fma is None:
            fma = ir.Function(builder.module, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
        data = [context.make_array(ty)(context, builder, val).data
                for ty, val in zip(signature.args, args, strict=True)]
        i64 = ir.IntType(64)
        px, pw = (builder.bitcast(p, v8.as_pointer()) for p in data[:2])
        vx = [builder.load(builder.gep(px, [ir.Constant(i64, k)]), align=4) for k in range(4)]
        vw = [builder.load(builder.gep(pw, [ir.Constant(i64, k)]), align=4) for k in range(4)]
        vv = [_splat(builder, v8, builder.load(builder.gep(data[2], [ir.Constant(i64, j)])))
              for j in range(4)]
        tt = [_splat(builder, v8, builder.load(builder.gep(data[3], [ir.Constant(i64, j)])))
              for j in range(4)]
        sums = []
        for sign in (0, 1):
            best, q = [], []
            for k in range(4):
                diff = builder.fsub(vx[k], vv[0]) if sign == 0 else builder.fadd(vx[k], vv[0])
                best.append(builder.fmul(diff, diff))
                q.append(tt[0])
            for j in range(1, 4):
                for k in range(4):
                    diff = builder.fsub(vx[k], vv[j]) if sign == 0 else builder.fadd(vx[k], vv[j])
                    dd = builder.fmul(diff, diff)
                    m = builder.fcmp_ordered("<", dd, best[k])
                    best[k] = builder.select(m, dd, best[k])
                    q[k] = builder.select(m, tt[j], q[k])
            aqx = ir.Constant(v8, [0.0] * 8)
            aq2 = ir.Constant(v8, [0.0] * 8)
            for k in range(4):
                wq = builder.fmul(vw[k], q[k])
                aqx = builder.call(fma, [wq, vx[k], aqx])
                aq2 = builder.call(fma, [wq, q[k], aq2])
            sums += [_hsum8_ir(builder, aqx), _hsum8_ir(builder, aq2)]
        return context.make_tuple(builder, signature.return_type, sums)

    return sig, codegen


@intrinsic
def split_hit16(typingctx, sumx, sumw, par, i2):
    """IQ2_K split pre-test in <16 x float>: bit i3 of the result (i3 in [i2, 16)) is set when
    some value order p passes sumq2 > 0 and sumqx² > best·sumq2, with _split_sums's float32
    expressions
    sumqx = fma(sx[16] - sx[i3], v3, fma(sx[i3] - sx[i2], v2, bx)),
    sumq2 = fma((sw[16] - sw[i3])·v3, v3, fma((sw[i3] - sw[i2])·v2, v2, bw))?
    sumx, sumw: 17 float32 prefix sums; par: bx[4], bw[4], (v2, v3)[4], best (17 float32)."""
    for a in (sumx, sumw, par):
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype == types.float32):
            return None
    if not isinstance(i2, types.Integer):
        return None
    sig = types.int64(sumx, sumw, par, i2)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        v16 = ir.VectorType(f32, 16)
        fma = builder.module.globals.get("llvm.fma.v16f32")
        if fma is None:
            fma = ir.Function(builder.module, ir.FunctionType(v16, [v16] * 3), "llvm.fma.v16f32")
        px, pw, pp = (context.make_array(ty)(context, builder, val).data
                      for ty, val in zip(signature.args[:3], args[:3], strict=True))
        j2 = context.cast(builder, args[3], signature.args[3], types.int64)

        def scalar(ptr, idx):
            return builder.load(builder.gep(ptr, [idx]))

        def splat(v):
            one = builder.insert_element(ir.Constant(v16, ir.Undefined), v, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(v16, ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, 16), [0] * 16))

        def c(k):
            return ir.Constant(i64, k)

        vsx = builder.load(builder.bitcast(px, v16.as_pointer()), align=4)
        vsw = builder.load(builder.bitcast(pw, v16.as_pointer()), align=4)
        tx = builder.fsub(splat(scalar(px, c(16))), vsx)
        ux = builder.fsub(vsx, splat(scalar(px, j2)))
        tw = builder.fsub(splat(scalar(pw, c(16))), vsw)
        uw = builder.fsub(vsw, splat(scalar(pw, j2)))
        vbest = splat(scalar(pp, c(16)))
        zero = ir.Constant(v16, [0.0] * 16)
        lanes = ir.Constant(ir.VectorType(i64, 16), list(range(16)))
        hit = builder.icmp_signed(">=", lanes, builder.shuffle_vector(
            builder.insert_element(ir.Constant(ir.VectorType(i64, 16), ir.Undefined), j2,
                                   ir.Constant(i32, 0)),
            ir.Constant(ir.VectorType(i64, 16), ir.Undefined),
            ir.Constant(ir.VectorType(i32, 16), [0] * 16)))
        anyp = None
        for p in range(4):
            bx = splat(scalar(pp, c(p)))
            bw = splat(scalar(pp, c(4 + p)))
            v2 = splat(scalar(pp, c(8 + 2 * p)))
            v3 = splat(scalar(pp, c(9 + 2 * p)))
            qx = builder.call(fma, [tx, v3, builder.call(fma, [ux, v2, bx])])
            q2 = builder.call(fma, [builder.fmul(tw, v3), v3,
                                    builder.call(fma, [builder.fmul(uw, v2), v2, bw])])
            m = builder.and_(builder.fcmp_ordered(">", q2, zero),
                             builder.fcmp_ordered(">", builder.fmul(qx, qx),
                                                  builder.fmul(vbest, q2)))
            anyp = m if anyp is None else builder.or_(anyp, m)
        bits = builder.bitcast(builder.and_(anyp, hit), ir.IntType(16))
        return builder.zext(bits, i64)

    return sig, codegen


@intrinsic
def nearest4_rmse(typingctx, xb, w, v, t, idx):
    """compute_1block_iq2ks_rmse in its AVX2 form: idx[e] (as float) = the j whose v_j is nearest
    to x[e] ((x - v_j)² smallest, ties to the lower j); returns Σ w·(x - d·t_j)² with
    diff = fma(-d, t_j, x) as 8-lane FMA chains + hsum8. xb, w, idx: 32 float32;
    v: d·t (4 float32) then -d; t: the 4 values."""
    for a in (xb, w, v, t, idx):
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype == types.float32):
            return None
    sig = types.float32(xb, w, v, t, idx)

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        v8 = ir.VectorType(f32, 8)
        fma = builder.module.globals.get("llvm.fma.v8f32")
        if fma is None:
            fma = ir.Function(builder.module, ir.FunctionType(v8, [v8] * 3), "llvm.fma.v8f32")
        data = [context.make_array(ty)(context, builder, val).data
                for ty, val in zip(signature.args, args, strict=True)]
        i64 = ir.IntType(64)
        px, pw, pi = (builder.bitcast(data[k], v8.as_pointer()) for k in (0, 1, 4))
        vx = [builder.load(builder.gep(px, [ir.Constant(i64, k)]), align=4) for k in range(4)]
        vw = [builder.load(builder.gep(pw, [ir.Constant(i64, k)]), align=4) for k in range(4)]
        vv = [_splat(builder, v8, builder.load(builder.gep(data[2], [ir.Constant(i64, j)])))
              for j in range(5)]
        tt = [_splat(builder, v8, builder.load(builder.gep(data[3], [ir.Constant(i64, j)])))
              for j in range(4)]
        jj = [ir.Constant(v8, [float(j)] * 8) for j in range(4)]
        acc = ir.Constant(v8, [0.0] * 8)
        for k in range(4):
            diff = builder.fsub(vx[k], vv[0])
            best = builder.fmul(diff, diff)
            q, ib = tt[0], jj[0]
            for j in range(1, 4):
                diff = builder.fsub(vx[k], vv[j])
                dd = builder.fmul(diff, diff)
                m = builder.fcmp_ordered("<", dd, best)
                best = builder.select(m, dd, best)
                q = builder.select(m, tt[j], q)
                ib = builder.select(m, jj[j], ib)
            builder.store(ib, builder.gep(pi, [ir.Constant(i64, k)]), align=4)
            diff = builder.call(fma, [vv[4], q, vx[k]])
            acc = builder.call(fma, [builder.fmul(vw[k], diff), diff, acc])
        return _hsum8_ir(builder, acc)

    return sig, codegen
