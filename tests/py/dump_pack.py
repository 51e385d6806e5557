"""dump_pack.py IN.h5 OUT.h5 [STEP KNEE] — the documented h5py/numpy encoder of
the compressed top-k layout "topk-packed-v1" (docs/dump-format.md, "Compressed
dumps"): rewrites the plain top-k dump IN.h5 as OUT.h5. The part between the
recipe markers appears verbatim in the docs (tests/test_dump_pack.c checks it
and has kd read, validate and compare the output)."""
import os
import sys

import h5py
import numpy as np

# --- recipe ---
QMAX, Q0_BITS, DC_BITS, GAP_MAX = 16, 24, 16, 64.0
BANDS = ((0, 1), (1, 4), (4, 16), (16, 1 << 30))   # slots of band 0, 1, 2, 3


def rice_len(x, r, wide):
    q = x >> r
    return np.where(q < QMAX, q + 1 + r, QMAX + wide)


def best_r(x, wide):
    """The Rice parameter (0..15) that codes x in the fewest bits (the first one on a tie)."""
    return int(np.argmin([rice_len(x, r, wide).sum() for r in range(16)])) if x.size else 0


def rice_fields(x, r, wide):
    """Rice codes of x as two (value, width) fields each: q ones and a zero, then r low bits;
    or the escape: 16 ones, then x in `wide` bits."""
    q = x >> r
    esc = q >= QMAX
    unary = np.where(esc, (1 << QMAX) - 1, (1 << np.minimum(q, QMAX)) - 1)
    return (np.stack([unary, np.where(esc, x, x & ((1 << r) - 1))], -1),
            np.stack([np.where(esc, QMAX, q + 1), np.where(esc, wide, r)], -1))


def pack_bits(values, widths):
    """Fields (value, width), in order, least significant bit first, into bytes."""
    values, widths = values.ravel().astype(np.int64), widths.ravel().astype(np.int64)
    starts = np.cumsum(widths) - widths
    bits = np.zeros(int(widths.sum()) + 7, np.uint8)
    for i in range(int(widths.max(initial=0))):
        sel = widths > i
        bits[starts[sel] + i] = (values[sel] >> i) & 1
    return np.packbits(bits[: len(bits) // 8 * 8], bitorder="little").tobytes()


def encode_sequence(ids, lp, mask, rank, step, knee, id_bits, cmax):
    """One sequence's record. ids, lp: [T, k] (sorted top-k); mask: [T]."""
    ids, lp = ids[mask == 1].astype(np.int64), lp[mask == 1].astype(np.float64)   # masked: nothing stored
    P, k = lp.shape
    kb = int(np.ceil(np.log2(k))) if k > 1 else 0
    nfin = np.isfinite(lp).sum(1)                      # unfilled (-inf) slots come last
    valid = np.arange(k)[None, :] < nfin[:, None]
    q0 = np.clip(np.rint(-lp[:, 0] / step), 0, (1 << Q0_BITS) - 1)
    gap = np.clip(-q0[:, None] * step - lp, 0, GAP_MAX)   # gap from the quantized top
    code = np.minimum(np.rint(knee / step * np.log1p(gap / knee)), cmax).astype(np.int64)
    code[:, 0] = 0
    code = np.maximum.accumulate(np.where(valid, code, 0), axis=1)
    dc, rk, q0 = np.diff(code, axis=1), rank[ids], q0.astype(np.int64)   # dc[:, j - 1]: slot j
    band = np.array([next(b for b, (lo, hi) in enumerate(BANDS) if lo <= j < hi) for j in range(k)])
    r_id = [best_r(rk[:, band == b][valid[:, band == b]], id_bits) for b in range(4)]
    r_val = [best_r(q0, Q0_BITS)] + [best_r(dc[:, band[1:] == b][valid[:, 1:][:, band[1:] == b]], DC_BITS)
                                     for b in (1, 2, 3)]
    # stream A, per position: full (1 bit), n_fin - 1 (kb bits, when not full), q0, then the code differences
    full = nfin == k
    v0, w0 = rice_fields(q0, r_val[0], Q0_BITS)
    vd, wd = rice_fields(dc, np.array([r_val[b] for b in band[1:]]), DC_BITS)
    wd = wd * valid[:, 1:, None]
    a = pack_bits(np.concatenate([full[:, None], nfin[:, None] - 1, v0, vd.reshape(P, -1)], 1),
                  np.concatenate([np.ones((P, 1), np.int64), np.where(full, 0, kb)[:, None], w0,
                                  wd.reshape(P, -1)], 1))
    # stream B: the ids' frequency ranks
    vi, wi = rice_fields(rk, np.array([r_id[b] for b in band]), id_bits)
    b = pack_bits(vi, wi * valid[:, :, None])
    head = sum(r << (4 * i) for i, r in enumerate(r_id)) + sum(r << (16 + 4 * i) for i, r in enumerate(r_val))
    return (head + (len(a) << 32)).to_bytes(8, "little") + a + b


def pack_dump(src, dst, step=1 / 16, knee=2.0):
    """Rewrite the plain top-k dump src as dst in the layout "topk-packed-v1"."""
    with h5py.File(src, "r") as f, h5py.File(dst + ".partial", "w") as g:
        k, V = int(f.attrs["k"]), int(f.attrs["vocab_size"])
        for name, value in f.attrs.items():
            g.attrs[name] = value
        g.attrs.update(layout="topk-packed-v1", lp_step=step, lp_knee=knee)
        for name in ("tokens", "loss_mask", "tokenizer"):
            if name in f:
                f.copy(f[name], g, name)
        ids, lp = f["topk_ids"], f["topk_logprobs"]
        n = ids.shape[0]
        mask = f["loss_mask"][:] if "loss_mask" in f else np.ones(ids.shape[:2], np.uint8)
        order = np.argsort(-np.bincount(ids[:].ravel(), minlength=V), kind="stable")   # rank -> id
        rank = np.argsort(order)                                                       # id -> rank
        id_bits = max(1, int(np.ceil(np.log2(V))))
        cmax = min(int(np.ceil(knee / step * np.log1p(GAP_MAX / knee))), 65535)
        records = [encode_sequence(ids[s], lp[s], mask[s], rank, step, knee, id_bits, cmax) for s in range(n)]
        g.create_dataset("topk_packed", data=np.frombuffer(b"".join(records), np.uint8), maxshape=(None,),
                         chunks=(65536,))
        g.create_dataset("topk_offsets", data=np.cumsum([len(r) for r in records], dtype=np.uint64),
                         maxshape=(None,), chunks=(4096,))
        g["topk_id_order"] = order.astype(np.int32)
    os.replace(dst + ".partial", dst)
# --- end of recipe ---


if __name__ == "__main__":
    args = sys.argv[1:]
    pack_dump(args[0], args[1], *(float(a) for a in args[2:4]))
