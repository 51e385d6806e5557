"""llama_ref.py — an independent PyTorch implementation of the Hugging Face
Llama forward pass, used to check kd's student.

usage: llama_ref.py CKPT_DIR INPUT.safetensors OUTPUT.safetensors

INPUT holds "tokens" [B, T] and "targets" [B, T] (int32, -100 = ignored).
OUTPUT gets "logits" [B, T, V], "loss" (mean CE over valid targets) and
"grad.<param>" for every parameter. Computed in float64 from kd's float32
weights, following transformers' LlamaForCausalLM: rotate_half RoPE, repeat_kv
for grouped-query attention, RMSNorm in float, SwiGLU MLP; plus Mistral-style
sliding-window masking when config.json sets sliding_window. RoPE follows
transformers' modeling_rope_utils: rope_type default, linear and llama3, read
from either spelling of config.json (4.x: top-level rope_theta + rope_scaling,
whose type key may be the older "type"; 5.x: rope_parameters).
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


def rope_params(cfg):
    """(theta, dict of the scaling parameters with "rope_type") from either config spelling."""
    rp = cfg.get("rope_parameters") or {}
    rs = cfg.get("rope_scaling") or {}
    d = dict(rs)
    d.update(rp)
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    d["rope_type"] = d.get("rope_type", d.get("type", "default"))
    return theta, d


def rope_inv_freq(cfg, D):
    """inv_freq [D/2] in float64, as transformers' _compute_{default,linear_scaling,llama3}_parameters."""
    theta, d = rope_params(cfg)
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    kind = d["rope_type"]
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / d["factor"]
    if kind == "llama3":
        factor, lo, hi = d["factor"], d["low_freq_factor"], d["high_freq_factor"]
        old = d["original_max_position_embeddings"]
        low_wl, high_wl = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
        return torch.where(medium, smoothed, out)
    raise ValueError(f"rope_type {kind} not implemented by the reference")


def forward(cfg, p, tokens):
    B, T = tokens.shape
    C = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or H
    D = cfg.get("head_dim") or C // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    window = cfg.get("sliding_window")
    if cfg.get("use_sliding_window") is False:
        window = None
    inv_freq = rope_inv_freq(cfg, D)
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
