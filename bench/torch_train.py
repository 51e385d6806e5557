"""torch_train.py — the PyTorch reference for bench_train: the same Llama
architecture (RMSNorm, RoPE, GQA, SwiGLU, tied or untied head), the same KD
loss shape (CE + T²·KL against a top-k teacher, top-k renormalised), AdamW,
batch, sequence length and threads, on synthetic data. Prints tokens/s.

usage: /usr/bin/python3 torch_train.py CONFIG.json BATCH SEQ [STEPS]
OpenBLAS kernels: run with the same OPENBLAS_CORETYPE as kd (bench/run_all.sh does).
"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        C, H = c["hidden_size"], c["num_attention_heads"]
        Hkv = c.get("num_key_value_heads") or H
        D = c.get("head_dim") or C // H
        Fd = c["intermediate_size"]
        self.H, self.Hkv, self.D, self.eps = H, Hkv, D, c.get("rms_norm_eps", 1e-5)
        self.n1 = torch.nn.Parameter(torch.ones(C))
        self.n2 = torch.nn.Parameter(torch.ones(C))
        self.q = torch.nn.Linear(C, H * D, bias=False)
        self.k = torch.nn.Linear(C, Hkv * D, bias=False)
        self.v = torch.nn.Linear(C, Hkv * D, bias=False)
        self.o = torch.nn.Linear(H * D, C, bias=False)
        self.g = torch.nn.Linear(C, Fd, bias=False)
        self.u = torch.nn.Linear(C, Fd, bias=False)
        self.d = torch.nn.Linear(Fd, C, bias=False)

    def norm(self, x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        h = self.norm(x, self.n1)
        q = self.q(h).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k(h).view(B, T, self.Hkv, self.D).transpose(1, 2)
        v = self.v(h).view(B, T, self.Hkv, self.D).transpose(1, 2)

        def rot(t):
            d = t.shape[-1] // 2
            return t * cos + torch.cat((-t[..., d:], t[..., :d]), -1) * sin
        q, k = rot(q), rot(k)
        rep = self.H // self.Hkv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.D)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        a = torch.softmax(s, -1) @ v   # torch 1.13 has no fused scaled_dot_product_attention
        x = x + self.o(a.transpose(1, 2).reshape(B, T, -1))
        h = self.norm(x, self.n2)
        return x + self.d(F.silu(self.g(h)) * self.u(h))


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))   # same threads as kd
    c = json.load(open(sys.argv[1]))
    B, T = int(sys.argv[2]), int(sys.argv[3])
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.manual_seed(0)
    C, V = c["hidden_size"], c["vocab_size"]
    D = c.get("head_dim") or C // c["num_attention_heads"]
    emb = torch.nn.Embedding(V, C)
    blocks = torch.nn.ModuleList([Block(c) for _ in range(c["num_hidden_layers"])])
    norm = torch.nn.Parameter(torch.ones(C))
    head = None if c.get("tie_word_embeddings") else torch.nn.Linear(C, V, bias=False)
    params = list(emb.parameters()) + list(blocks.parameters()) + [norm] + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, D, 2).float() / D))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat((ang, ang), -1).cos(), torch.cat((ang, ang), -1).sin()
    tok = torch.randint(0, V, (B, T))
    lab = torch.randint(0, V, (B * T,))
    K = 64
    ids = (lab[:, None] + torch.arange(K)[None, :] * 7919) % V
    lp = -1.0 - 0.1 * torch.arange(K).float()[None, :].expand(B * T, K)
    q = torch.softmax(lp / 2.0, -1)
    best = 1e30
    for s in range(steps + 1):
        t0 = time.time()
        opt.zero_grad()
        x = emb(tok)
        for b in blocks:
            x = b(x, cos, sin)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm
        logits = (x @ emb.weight.T if head is None else head(x)).view(B * T, V)
        ce = F.cross_entropy(logits, lab)
        lps = torch.log_softmax(logits / 2.0, -1).gather(1, ids)
        kl = (q * (torch.log(q) - lps)).sum(-1).mean()
        loss = 0.5 * ce + 0.5 * 4.0 * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        t = time.time() - t0
        if s > 0:
            best = min(best, t)
    print(f"torch {sys.argv[1]:<28} B={B} T={T} threads={torch.get_num_threads()}: {B * T / best:8.0f} tokens/s"
          f"  {best:.3f} s/step  (torch {torch.__version__})")


if __name__ == "__main__":
    main()
