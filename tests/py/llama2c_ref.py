"""llama2c_ref.py — a straightforward implementation of llama2.c's forward
pass (run.c's `forward`, one token at a time with a KV cache) on the original
.bin file, in float64 numpy. Used to check kd's llama2.c import.

usage: llama2c_ref.py MODEL.bin "1 5 9 ..." OUT.f32   (writes logits [n, vocab] float32)
"""
import sys

import numpy as np


def main():
    path, toks, outp = sys.argv[1], [int(t) for t in sys.argv[2].split()], sys.argv[3]
    raw = open(path, "rb").read()
    dim, hidden, L, H, Hkv, V, T = np.frombuffer(raw[:28], dtype="<i4")
    shared = V > 0
    V = abs(V)
    hd = dim // H
    kvd = dim * Hkv // H
    f = np.frombuffer(raw[28:], dtype="<f4").astype(np.float64)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = f[pos:pos + n].reshape(shape)
        pos += n
        return a

    emb = take(V, dim)
    rms_att = take(L, dim)
    wq, wk, wv, wo = take(L, dim, dim), take(L, kvd, dim), take(L, kvd, dim), take(L, dim, dim)
    rms_ffn = take(L, dim)
    w1, w2, w3 = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    rms_final = take(dim)
    take(T, hd // 2)
    take(T, hd // 2)
    wcls = emb if shared else take(V, dim)

    def rmsnorm(x, w):
        return w * x / np.sqrt(np.mean(x * x) + 1e-5)

    kc = np.zeros((L, T, kvd))
    vc = np.zeros((L, T, kvd))
    out = []
    for p, tok in enumerate(toks):
        x = emb[tok].copy()
        for l in range(L):
            xb = rmsnorm(x, rms_att[l])
            q, k, v = wq[l] @ xb, wk[l] @ xb, wv[l] @ xb
            for i in range(0, dim, 2):          # llama2.c: rotate adjacent pairs
                freq = 1.0 / 10000.0 ** ((i % hd) / hd)
                c, s = np.cos(p * freq), np.sin(p * freq)
                for vec in ((q, k) if i < kvd else (q,)):
                    a, b = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = a * c - b * s, a * s + b * c
            kc[l, p], vc[l, p] = k, v
            att_out = np.zeros(dim)
            for h in range(H):
                kvh = h // (H // Hkv)
                qh = q[h * hd:(h + 1) * hd]
                sc = kc[l, :p + 1, kvh * hd:(kvh + 1) * hd] @ qh / np.sqrt(hd)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att_out[h * hd:(h + 1) * hd] = sc @ vc[l, :p + 1, kvh * hd:(kvh + 1) * hd]
            x = x + wo[l] @ att_out
            xb = rmsnorm(x, rms_ffn[l])
            h1, h3 = w1[l] @ xb, w3[l] @ xb
            x = x + w2[l] @ (h1 / (1 + np.exp(-h1)) * h3)
        x = rmsnorm(x, rms_final)
        out.append(wcls @ x)
    np.asarray(out, dtype="<f4").tofile(outp)


if __name__ == "__main__":
    main()
