"""llama_ref.py — an independent PyTorch implementation of the Hugging Face
Llama forward pass, used to check kd's student.

usage: llama_ref.py CKPT_DIR INPUT.safetensors OUTPUT.safetensors

INPUT holds "tokens" [B, T] and "targets" [B, T] (int32, -100 = ignored).
OUTPUT gets "logits" [B, T, V], "loss" (mean CE over valid targets) and
"grad.<param>" for every parameter. Computed in float64 from kd's float32
weights, following transformers' LlamaForCausalLM: rotate_half RoPE, repeat_kv
for grouped-query attention, RMSNorm in float, SwiGLU MLP; plus Mistral-style
sliding-window masking when config.json sets sliding_window.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from kdref import load_safetensors, save_safetensors  # noqa: E402


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def forward(cfg, p, tokens):
    B, T = tokens.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    window = cfg.get("sliding_window")
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    i = torch.arange(T)
    allowed = i[None, :] <= i[:, None]
    if window:
        allowed &= i[None, :] > i[:, None] - window
    mask = torch.zeros(T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))

    x = p["model.embed_tokens.weight"][tokens.long()]
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        h = rms_norm(x, p[pre + "input_layernorm.weight"], eps)
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D) + mask
        a = torch.softmax(att, dim=-1) @ v
        a = a.transpose(1, 2).reshape(B, T, H * D)
        x = x + a @ p[pre + "self_attn.o_proj.weight"].T
        h = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        g = h @ p[pre + "mlp.gate_proj.weight"].T
        u = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
    x = rms_norm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else p["lm_head.weight"]
    return x @ head.T


def main():
    ckpt, inp, outp = sys.argv[1:4]
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    w = load_safetensors(os.path.join(ckpt, "model.safetensors"))
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    io = load_safetensors(inp)
    tokens = torch.tensor(io["tokens"])
    targets = torch.tensor(io["targets"]).long()
    logits = forward(cfg, p, tokens)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    out = {"logits": logits.detach().numpy(), "loss": loss.detach().reshape(1).numpy()}
    for k, t in p.items():
        out["grad." + k] = t.grad.numpy()
    save_safetensors(outp, out)


if __name__ == "__main__":
    main()
