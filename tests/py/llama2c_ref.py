"""llama2c_ref.py — a straightforward implementation of llama2.c's forward
pass (run.c's `forward`, one token at a time with a KV cache) on the original
.bin file, in float64 numpy. Used to check kd's llama2.c import
(tests/test_student.c) and, as a module, the distributions `kd teacher dump`
stores (tests/py/teacher_dump_check.py):

    model = load("aidreams260K.bin")
    logits = forward(model, [1, 403, 407])   # float64 [3, vocab]

usage: llama2c_ref.py MODEL.bin "1 5 9 ..." OUT.f32   (writes logits [n, vocab] float32)
"""
import sys

import numpy as np


def load(path):
    """The weights and shape of a llama2.c .bin file, as a dict of float64 arrays and ints."""
    raw = open(path, "rb").read()
    dim, hidden, L, H, Hkv, V, T = (int(x) for x in np.frombuffer(raw[:28], dtype="<i4"))
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

    m = dict(dim=dim, hidden=hidden, L=L, H=H, Hkv=Hkv, V=V, T=T, hd=hd, kvd=kvd)
    m["emb"] = take(V, dim)
    m["rms_att"] = take(L, dim)
    m["wq"], m["wk"], m["wv"], m["wo"] = take(L, dim, dim), take(L, kvd, dim), take(L, kvd, dim), take(L, dim, dim)
    m["rms_ffn"] = take(L, dim)
    m["w1"], m["w2"], m["w3"] = take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    m["rms_final"] = take(dim)
    take(T, hd // 2)
    take(T, hd // 2)
    m["wcls"] = m["emb"] if shared else take(V, dim)
    return m


def forward(m, toks):
    """Logits [len(toks), V] (float64) of the sequence toks, position by position."""
    dim, L, H, Hkv, hd, kvd = m["dim"], m["L"], m["H"], m["Hkv"], m["hd"], m["kvd"]
    if len(toks) > m["T"]:
        raise ValueError("%d tokens, the model's seq_len is %d" % (len(toks), m["T"]))

    def rmsnorm(x, w):
        return w * x / np.sqrt(np.mean(x * x) + 1e-5)

    # llama2.c: rotate adjacent pairs (i, i+1) of q (and of k for i < kv_dim) by p·freq(i)
    pair = np.arange(0, dim, 2)
    freq = 1.0 / 10000.0 ** ((pair % hd) / hd)

    def rope(vec, p):
        n = len(vec) // 2
        c, s = np.cos(p * freq[:n]), np.sin(p * freq[:n])
        a, b = vec[0::2].copy(), vec[1::2].copy()
        vec[0::2], vec[1::2] = a * c - b * s, a * s + b * c

    kc = np.zeros((L, len(toks), kvd))
    vc = np.zeros((L, len(toks), kvd))
    out = []
    for p, tok in enumerate(toks):
        x = m["emb"][tok].copy()
        for l in range(L):
            xb = rmsnorm(x, m["rms_att"][l])
            q, k, v = m["wq"][l] @ xb, m["wk"][l] @ xb, m["wv"][l] @ xb
            rope(q, p)
            rope(k, p)
            kc[l, p], vc[l, p] = k, v
            att_out = np.zeros(dim)
            for h in range(H):
                kvh = h // (H // Hkv)
                qh = q[h * hd:(h + 1) * hd]
                sc = kc[l, :p + 1, kvh * hd:(kvh + 1) * hd] @ qh / np.sqrt(hd)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att_out[h * hd:(h + 1) * hd] = sc @ vc[l, :p + 1, kvh * hd:(kvh + 1) * hd]
            x = x + m["wo"][l] @ att_out
            xb = rmsnorm(x, m["rms_ffn"][l])
            h1, h3 = m["w1"][l] @ xb, m["w3"][l] @ xb
            x = x + m["w2"][l] @ (h1 / (1 + np.exp(-h1)) * h3)
        x = rmsnorm(x, m["rms_final"])
        out.append(m["wcls"] @ x)
    return np.asarray(out)


def main():
    path, toks, outp = sys.argv[1], [int(t) for t in sys.argv[2].split()], sys.argv[3]
    np.asarray(forward(load(path), toks), dtype="<f4").tofile(outp)


if __name__ == "__main__":
    main()
