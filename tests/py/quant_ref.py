#!/usr/bin/env python3
"""quant_ref.py — an independent numpy version of ggml's reference quantizers
(docs/quantization.md#ggml-block-formats), for tests/test_quant.c.

usage: quant_ref.py IN.f32 N OUTDIR
  IN.f32 holds float32 rows of N elements. For each type T in
  q8_0 q4_0 q4_1 q4_k q6_k f16 bf16 it writes OUTDIR/T.bin (the quantized rows,
  ggml byte layout) and OUTDIR/T.deq.f32 (their dequantization).

Written from the documented rules, vectorised over blocks. Where the rules
depend on the order of float32 operations (sums, the K-quant searches), the
sums run sequentially in float32 exactly as described; every constant is a
np.float32 so that nothing is computed in float64; fp16 rounding is
np.float16 (round to nearest even).
"""
import sys

import numpy as np

F = np.float32
EPS = F(1e-15)   # GROUP_MAX_EPS


def fp16_bits(v):
    return np.asarray(v, dtype=F).astype(np.float16).view(np.uint16)


def fp16_val(bits):
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(F)


def bf16_bits(v):
    u = np.asarray(v, dtype=F).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(v, dtype=F))
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def nearest_int(v):
    """Round half to even through the 1.5*2^23 trick, as ggml does."""
    t = (np.asarray(v, dtype=F) + F(12582912.0)).astype(F)
    return (t.view(np.int32) & 0x007FFFFF) - 0x00400000


def round_away(v):
    """C roundf: ties away from zero, exact for float32."""
    t = np.trunc(v)
    frac = v - t   # exact: |v| < 2^23
    return t + np.sign(v) * (np.abs(frac) >= F(0.5))


def seqsum(terms):
    """Sum columns left to right in float32 (C's `for (i...) s += t[i]`)."""
    s = np.zeros(terms.shape[0], dtype=F)
    for i in range(terms.shape[1]):
        s = (s + terms[:, i]).astype(F)
    return s


# ---- Q8_0, Q4_0, Q4_1 ------------------------------------------------------------------

def q8_0(x):
    b = x.reshape(-1, 32)
    amax = np.max(np.abs(b), axis=1)
    d = (amax / F(127)).astype(F)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, F(1) / d, F(0)).astype(F)
    q = round_away((b * idv[:, None]).astype(F)).astype(np.int8)
    out = np.zeros((b.shape[0], 34), np.uint8)
    out[:, 0:2] = fp16_bits(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out


def dq_q8_0(raw):
    r = raw.reshape(-1, 34)
    d = fp16_val(r[:, 0:2].copy().view(np.uint16)[:, 0])
    return (r[:, 2:].view(np.int8).astype(F) * d[:, None]).astype(F)


def pack_nibbles(q):   # q: [nb, 32] in 0..15 → [nb, 16]: element j low, j+16 high
    return (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)


def q4_0(x):
    b = x.reshape(-1, 32)
    idx = np.argmax(np.abs(b), axis=1)   # first element of largest |x|
    amax = np.abs(b[np.arange(len(b)), idx])
    mx = np.where(amax > 0, b[np.arange(len(b)), idx], F(0)).astype(F)
    d = (mx / F(-8)).astype(F)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, F(1) / d, F(0)).astype(F)
    v = ((b * idv[:, None]).astype(F) + F(8.5)).astype(F)
    q = np.minimum(15, np.trunc(v).astype(np.int32))   # (int8_t) truncation
    out = np.zeros((b.shape[0], 18), np.uint8)
    out[:, 0:2] = fp16_bits(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = pack_nibbles(q)
    return out


def unpack_nibbles(qs):
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def dq_q4_0(raw):
    r = raw.reshape(-1, 18)
    d = fp16_val(r[:, 0:2].copy().view(np.uint16)[:, 0])
    return ((unpack_nibbles(r[:, 2:]) - 8).astype(F) * d[:, None]).astype(F)


def q4_1(x):
    b = x.reshape(-1, 32)
    mn, mx = b[:, 0].copy(), b[:, 0].copy()
    for j in range(1, 32):   # running min/max with strict comparisons: the first of 0.0 / −0.0 stays
        mn = np.where(b[:, j] < mn, b[:, j], mn)
        mx = np.where(b[:, j] > mx, b[:, j], mx)
    d = ((mx - mn).astype(F) / F(15)).astype(F)
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, F(1) / d, F(0)).astype(F)
    v = (((b - mn[:, None]).astype(F) * idv[:, None]).astype(F) + F(0.5)).astype(F)
    q = np.minimum(15, np.trunc(v).astype(np.int32))
    out = np.zeros((b.shape[0], 20), np.uint8)
    out[:, 0:2] = fp16_bits(d).view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = fp16_bits(mn).view(np.uint8).reshape(-1, 2)
    out[:, 4:] = pack_nibbles(q)
    return out


def dq_q4_1(raw):
    r = raw.reshape(-1, 20)
    d = fp16_val(r[:, 0:2].copy().view(np.uint16)[:, 0])
    m = fp16_val(r[:, 2:4].copy().view(np.uint16)[:, 0])
    return ((unpack_nibbles(r[:, 4:]).astype(F) * d[:, None]).astype(F) + m[:, None]).astype(F)


# ---- Q4_K -------------------------------------------------------------------------------

def make_qkx2(x, w, nmax=15, rmin=F(-1), rdelta=F(0.1), nstep=20):
    """Weighted asymmetric search per row of x [S, n]: returns L [S, n], scale [S], -min [S]."""
    S, n = x.shape
    mn, mx = x[:, 0].copy(), x[:, 0].copy()
    sum_w = w[:, 0].copy()
    sum_x = (sum_w * x[:, 0]).astype(F)
    for i in range(1, n):
        mn = np.where(x[:, i] < mn, x[:, i], mn)
        mx = np.where(x[:, i] > mx, x[:, i], mx)
        sum_w = (sum_w + w[:, i]).astype(F)
        sum_x = (sum_x + (w[:, i] * x[:, i]).astype(F)).astype(F)
    mn = np.where(mn > 0, F(0), mn).astype(F)
    flat = mx == mn
    mn0 = mn.copy()
    rng = np.where(flat, F(1), (mx - mn).astype(F)).astype(F)
    iscale = (F(nmax) / rng).astype(F)
    scale = (F(1) / iscale).astype(F)
    xm = (x - mn[:, None]).astype(F)
    L = np.clip(nearest_int((iscale[:, None] * xm).astype(F)), 0, nmax).astype(F)
    diff = ((scale[:, None] * L).astype(F) + mn[:, None]).astype(F)
    diff = (diff - x).astype(F)
    best = seqsum((w * (diff * diff).astype(F)).astype(F))
    with np.errstate(divide="ignore", invalid="ignore"):
        for step in range(nstep + 1):
            # min is the best candidate's so far (it changes as the search improves)
            rng = np.where(flat, F(1), (mx - mn).astype(F)).astype(F)
            xm = (x - mn[:, None]).astype(F)
            num = F(F(rmin + F(rdelta * F(step))) + F(nmax))
            iscale = (num / rng).astype(F)
            La = np.clip(nearest_int((iscale[:, None] * xm).astype(F)), 0, nmax).astype(F)
            wl = (w * La).astype(F)
            sum_l = seqsum(wl)
            sum_l2 = seqsum((wl * La).astype(F))
            sum_xl = seqsum((wl * x).astype(F))
            D = ((sum_w * sum_l2).astype(F) - (sum_l * sum_l).astype(F)).astype(F)
            ok = D > 0
            s = (((sum_w * sum_xl).astype(F) - (sum_x * sum_l).astype(F)).astype(F) / D).astype(F)
            m = (((sum_l2 * sum_x).astype(F) - (sum_l * sum_xl).astype(F)).astype(F) / D).astype(F)
            pos = m > 0
            m = np.where(pos, F(0), m).astype(F)
            s = np.where(pos, (sum_xl / sum_l2).astype(F), s).astype(F)
            diff = (((s[:, None] * La).astype(F) + m[:, None]).astype(F) - x).astype(F)
            err = seqsum((w * (diff * diff).astype(F)).astype(F))
            better = ok & (err < best)
            L = np.where(better[:, None], La, L)
            best = np.where(better, err, best).astype(F)
            scale = np.where(better, s, scale).astype(F)
            mn = np.where(better, m, mn).astype(F)
    L = np.where(flat[:, None], F(0), L)
    scale = np.where(flat, F(0), scale).astype(F)
    mn = np.where(flat, mn0, mn).astype(F)
    return L.astype(np.int32), scale, (-mn).astype(F)


def q4_k(x):
    b = x.reshape(-1, 256)
    nb = b.shape[0]
    sub = b.reshape(-1, 32)
    sum_x2 = seqsum((sub * sub).astype(F))
    av_x = np.sqrt((sum_x2 / F(32)).astype(F)).astype(F)
    w = (av_x[:, None] + np.abs(sub)).astype(F)
    L, scales, mins = make_qkx2(sub, w)
    L = L.reshape(nb, 256)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    # running maxima from +0 with strict '>' (so −0.0 never replaces +0)
    max_scale = np.where(scales.max(axis=1) > 0, scales.max(axis=1), F(0)).astype(F)
    max_min = np.where(mins.max(axis=1) > 0, mins.max(axis=1), F(0)).astype(F)
    with np.errstate(divide="ignore"):
        inv_s = np.where(max_scale > 0, F(63) / max_scale, F(0)).astype(F)
        inv_m = np.where(max_min > 0, F(63) / max_min, F(0)).astype(F)
    ls = np.minimum(63, nearest_int((inv_s[:, None] * scales).astype(F)) & 0xFF)
    lm = np.minimum(63, nearest_int((inv_m[:, None] * mins).astype(F)) & 0xFF)
    sc = np.zeros((nb, 12), np.int32)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    d = fp16_bits((max_scale / F(63)).astype(F))
    dmin = fp16_bits((max_min / F(63)).astype(F))
    dsub = (fp16_val(d)[:, None] * ls.astype(F)).astype(F)
    dm = (fp16_val(dmin)[:, None] * lm.astype(F)).astype(F)
    xs = b.reshape(nb, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        Lf = np.clip(nearest_int(((xs + dm[:, :, None]).astype(F) / dsub[:, :, None]).astype(F)), 0, 15)
    L = np.where((dsub != 0)[:, :, None], Lf, L.reshape(nb, 8, 32)).reshape(nb, 4, 2, 32)
    qs = (L[:, :, 0, :] | (L[:, :, 1, :] << 4)).reshape(nb, 128)
    out = np.zeros((nb, 144), np.uint8)
    out[:, 0:2] = d.view(np.uint8).reshape(-1, 2)
    out[:, 2:4] = dmin.view(np.uint8).reshape(-1, 2)
    out[:, 4:16] = sc
    out[:, 16:] = qs
    return out


def dq_q4_k(raw):
    r = raw.reshape(-1, 144)
    d = fp16_val(r[:, 0:2].copy().view(np.uint16)[:, 0])
    dmin = fp16_val(r[:, 2:4].copy().view(np.uint16)[:, 0])
    q = r[:, 4:16].astype(np.int32)
    ls = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 0x0F) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    lm = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    qs = r[:, 16:].reshape(-1, 4, 32).astype(np.int32)
    lev = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(F)
    dl = (d[:, None] * ls.astype(F)).astype(F)
    ml = (dmin[:, None] * lm.astype(F)).astype(F)
    return ((dl[:, :, None] * lev).astype(F) - ml[:, :, None]).astype(F).reshape(-1, 256)


# ---- Q6_K -------------------------------------------------------------------------------

def make_qx(x, nmax=32):
    """Symmetric search (weights x^2) per row of x [S, n]: returns L [S, n] (l + nmax) and scale [S]."""
    S, n = x.shape
    idx = np.argmax(np.abs(x), axis=1)   # first element of largest |x|
    mx = x[np.arange(S), idx]
    amax = np.abs(mx)
    zero = amax < EPS
    mx = np.where(zero, F(1), mx).astype(F)
    w = (x * x).astype(F)
    wx = (w * x).astype(F)

    def sums(iscale):
        lv = np.clip(nearest_int((iscale[:, None] * x).astype(F)), -nmax, nmax - 1)
        lf = lv.astype(F)
        return lv, seqsum((wx * lf).astype(F)), seqsum(((w * lf).astype(F) * lf).astype(F))

    iscale = (F(-nmax) / mx).astype(F)
    lv, sumlx, suml2 = sums(iscale)
    L = lv + nmax
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, (sumlx / suml2).astype(F), F(0)).astype(F)
        best = (scale * sumlx).astype(F)
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = (-F(F(nmax) + F(F(0.1) * F(step))) / mx).astype(F)
            lv, sumlx, suml2 = sums(iscale)
            better = (suml2 > 0) & ((sumlx * sumlx).astype(F) > (best * suml2).astype(F))
            L = np.where(better[:, None], lv + nmax, L)
            scale = np.where(better, (sumlx / suml2).astype(F), scale).astype(F)
            best = np.where(better, (scale * sumlx).astype(F), best).astype(F)
    L = np.where(zero[:, None], 0, L)
    scale = np.where(zero, F(0), scale).astype(F)
    return L, scale


def q6_k(x):
    b = x.reshape(-1, 256)
    nb = b.shape[0]
    L, scales = make_qx(b.reshape(-1, 16))
    L, scales = L.reshape(nb, 256), scales.reshape(nb, 16)
    idx = np.argmax(np.abs(scales), axis=1)   # first largest |scale|, with its sign
    max_scale = scales[np.arange(nb), idx]
    zero = np.abs(max_scale) < EPS
    max_scale = np.where(zero, F(1), max_scale).astype(F)
    iscale = (F(-128) / max_scale).astype(F)
    d = fp16_bits((F(1) / iscale).astype(F))
    sc = np.minimum(127, nearest_int((iscale[:, None] * scales).astype(F)))
    dsub = (fp16_val(d)[:, None] * sc.astype(F)).astype(F)
    xs = b.reshape(nb, 16, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        Lf = np.clip(nearest_int((xs / dsub[:, :, None]).astype(F)), -32, 31) + 32
    L = np.where((dsub != 0)[:, :, None], Lf, L.reshape(nb, 16, 16)).reshape(nb, 2, 4, 32)
    ql = np.concatenate([(L[:, :, 0] & 0x0F) | ((L[:, :, 2] & 0x0F) << 4),
                         (L[:, :, 1] & 0x0F) | ((L[:, :, 3] & 0x0F) << 4)], axis=2).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    out = np.zeros((nb, 210), np.uint8)
    out[:, 0:128] = ql
    out[:, 128:192] = qh
    out[:, 192:208] = sc.astype(np.int8).view(np.uint8)
    out[:, 208:210] = d.view(np.uint8).reshape(-1, 2)
    out[zero] = 0
    return out


def dq_q6_k(raw):
    r = raw.reshape(-1, 210)
    nb = r.shape[0]
    ql = r[:, 0:128].reshape(nb, 2, 64).astype(np.int32)
    qh = r[:, 128:192].reshape(nb, 2, 32).astype(np.int32)
    sc = r[:, 192:208].view(np.int8).astype(F)
    d = fp16_val(r[:, 208:210].copy().view(np.uint16)[:, 0])
    parts = [(ql[:, :, 0:32] & 0x0F) | ((qh & 3) << 4),
             (ql[:, :, 32:64] & 0x0F) | (((qh >> 2) & 3) << 4),
             (ql[:, :, 0:32] >> 4) | (((qh >> 4) & 3) << 4),
             (ql[:, :, 32:64] >> 4) | (((qh >> 6) & 3) << 4)]
    q = (np.stack(parts, axis=2) - 32).astype(F).reshape(nb, 16, 16)   # [nb, half·part·(l/16), 16]
    return ((d[:, None, None] * sc[:, :, None]).astype(F) * q).astype(F).reshape(nb, 256)


# ---- driver -------------------------------------------------------------------------------

def f16_row(x):
    return fp16_bits(x).view(np.uint8)


def dq_f16(raw):
    return fp16_val(raw.view(np.uint16))


def bf16_row(x):
    return bf16_bits(x).view(np.uint8)


def dq_bf16(raw):
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(F)


TYPES = {
    "q8_0": (q8_0, dq_q8_0), "q4_0": (q4_0, dq_q4_0), "q4_1": (q4_1, dq_q4_1),
    "q4_k": (q4_k, dq_q4_k), "q6_k": (q6_k, dq_q6_k), "f16": (f16_row, dq_f16), "bf16": (bf16_row, dq_bf16),
}


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    n = int(sys.argv[2])
    x = np.fromfile(sys.argv[1], dtype=F).reshape(-1, n)
    for name, (quant, dequant) in TYPES.items():
        raw = np.ascontiguousarray(quant(x.reshape(-1))).reshape(-1).astype(np.uint8)
        raw.tofile(f"{sys.argv[3]}/{name}.bin")
        dequant(raw.copy()).reshape(-1).astype(F).tofile(f"{sys.argv[3]}/{name}.deq.f32")


if __name__ == "__main__":
    main()
