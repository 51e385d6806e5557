"""ops_ref.py — PyTorch references for kd's autograd ops (float64).

usage: ops_ref.py IN.safetensors OUT.safetensors

For every case "<name>" in IN (inputs "<name>.in0", "<name>.in1", ...,
upstream gradient "<name>.dy", integer arguments "<name>.ids"), computes
"<name>.out" and the gradients "<name>.grad0", ... with torch.autograd.
The op of a case is the part of its name before any '#'.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from kdref import load_safetensors, save_safetensors  # noqa: E402

F = torch.nn.functional


def rope(x, H, theta, pairs):
    B, T, HD = x.shape
    D = HD // H
    inv = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)     # [T, D/2]
    cos, sin = ang.cos(), ang.sin()
    x = x.view(B, T, H, D)
    if pairs:   # (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
    else:       # (i, i + D/2)
        a, b = x[..., :D // 2], x[..., D // 2:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    ra, rb = a * c - b * s, a * s + b * c
    if pairs:
        out = torch.stack((ra, rb), dim=-1).reshape(B, T, H, D)
    else:
        out = torch.cat((ra, rb), dim=-1)
    return out.reshape(B, T, HD)


def attention(q, k, v, H, Hkv, window):
    B, T, _ = q.shape
    D = q.shape[-1] // H
    q = q.view(B, T, H, D).transpose(1, 2)
    k = k.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    v = v.view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    i = torch.arange(T)
    ok = i[None, :] <= i[:, None]
    if window > 0:
        ok &= i[None, :] > i[:, None] - window
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    s = s.masked_fill(~ok, float("-inf"))
    return (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, H * D)


def run(op, ins, ids):
    if op == "add":
        return ins[0] + ins[1]
    if op == "mul":
        return ins[0] * ins[1]
    if op == "scale":
        return -1.7 * ins[0]
    if op == "sum":
        return ins[0].sum().reshape(1)
    if op == "mean":
        return ins[0].mean().reshape(1)
    if op.startswith("matmul"):
        ta, tb = int(op[-2]), int(op[-1])
        a = ins[0].T if ta else ins[0]
        b = ins[1].T if tb else ins[1]
        return a @ b
    if op == "linear":
        return ins[0] @ ins[1].T
    if op == "embedding":
        return ins[0][ids.long()]
    if op == "rmsnorm":
        x, w = ins
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    if op == "rope_half":
        return rope(ins[0], 3, 10000.0, False)
    if op == "rope_pairs":
        return rope(ins[0], 3, 10000.0, True)
    if op.startswith("attention"):
        window = int(op.split("_w")[1])
        return attention(ins[0], ins[1], ins[2], 4, 2, window)
    if op == "swiglu":
        return F.silu(ins[0]) * ins[1]
    if op == "cross_entropy":
        return F.cross_entropy(ins[0], ids.long(), ignore_index=-100).reshape(1)
    raise SystemExit(f"ops_ref.py: unknown op {op}")


def main():
    src = load_safetensors(sys.argv[1])
    cases = sorted({k.split(".")[0] for k in src})
    out = {}
    for case in cases:
        op = case.split("#")[0]
        ins = []
        while f"{case}.in{len(ins)}" in src:
            ins.append(torch.tensor(src[f"{case}.in{len(ins)}"], dtype=torch.float64, requires_grad=True))
        ids = torch.tensor(src[f"{case}.ids"]) if f"{case}.ids" in src else None
        y = run(op, ins, ids)
        y.backward(torch.tensor(src[f"{case}.dy"], dtype=torch.float64).reshape(y.shape))
        out[f"{case}.out"] = y.detach().numpy()
        for i, t in enumerate(ins):
            out[f"{case}.grad{i}"] = t.grad.numpy()
    save_safetensors(sys.argv[2], out)


if __name__ == "__main__":
    main()
