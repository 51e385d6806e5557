"""hf_ckpt_ref.py — tiny Llama / Mistral checkpoints written the way transformers
4.x and 5.x write them, with reference logits from llama_ref.py's independent
forward (tests/test_hf_config.c).

usage: hf_ckpt_ref.py OUTDIR

For each variant below, OUTDIR/NAME/ gets config.json (4.x spelling: top-level
rope_theta + rope_scaling; 5.x spelling: rope_parameters holding rope_theta and
rope_type and the scaling keys), the weights (F32 or BF16, one file or sharded
with model.safetensors.index.json; a tied model has no lm_head.weight), and
ref_logits.f32: float32 [T, V] logits of OUTDIR/tokens.i32 (int32 [T]),
computed in float64 from the stored weights. OUTDIR/variants.txt lists the
names, one a line.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from llama_ref import forward  # noqa: E402

V, T = 512, 40

VARIANTS = [
    # name, spelling, rope (None: default), theta, tied, dtype, shards, extra config keys
    ("v4_default_500k", 4, None, 500000.0, False, "F32", 1, {}),
    ("v5_default_500k_bf16_tied", 5, None, 500000.0, True, "BF16", 1, {}),
    ("v4_llama3_sharded", 4, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 8.0, "original_max_position_embeddings": 256},
     10000.0, False, "F32", 3, {}),
    ("v5_llama3_bf16_tied", 5, {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
     500000.0, True, "BF16", 1, {}),
    ("v4_linear_legacy_type", 4, {"type": "linear", "factor": 4.0}, 10000.0, False, "F32", 1, {}),
    ("v5_linear_sharded_bf16", 5, {"rope_type": "linear", "factor": 2.0}, 10000.0, False, "BF16", 2, {}),
    ("mistral_window", 4, None, 10000.0, False, "F32", 1,
     {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": 8}),
]


def config(name, spelling, rope, theta, tied, dtype, extra):
    head_dim = 32 if "llama3_sharded" in name else 16
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 64 // head_dim, "num_key_value_heads": 1 if head_dim == 32 else 2,
        "head_dim": head_dim, "vocab_size": V, "max_position_embeddings": 131072 if rope else 2048,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0,
        "mlp_bias": False, "initializer_range": 0.02, "pretraining_tp": 1, "use_cache": True,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": tied,
    }
    if spelling == 4:
        c["rope_theta"] = theta
        c["rope_scaling"] = rope
        c["torch_dtype"] = "bfloat16" if dtype == "BF16" else "float32"
        c["transformers_version"] = "4.46.0"
    else:
        rp = {"rope_theta": theta, "rope_type": "default"}
        rp.update(rope or {})
        c["rope_parameters"] = rp
        c["dtype"] = "bfloat16" if dtype == "BF16" else "float32"
        c["transformers_version"] = "5.0.0"
    c.update(extra)
    return c


def to_bf16(a):
    """float32 → bfloat16 bits (round to nearest even) and the float32 value they hold."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r, (r.astype(np.uint32) << 16).view(np.float32)


def write_st(path, tensors):
    """{name: (dtype, numpy array)} → safetensors."""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dt, arr) in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def weights(cfg, rng):
    C, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, Hkv, D = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    w = {"model.embed_tokens.weight": rng.normal(0, 1.0, (V, C))}
    for l in range(L):
        pre = f"model.layers.{l}."
        w[pre + "input_layernorm.weight"] = 1 + 0.1 * rng.normal(size=C)
        w[pre + "self_attn.q_proj.weight"] = rng.normal(0, 0.3, (H * D, C))
        w[pre + "self_attn.k_proj.weight"] = rng.normal(0, 0.3, (Hkv * D, C))
        w[pre + "self_attn.v_proj.weight"] = rng.normal(0, 0.2, (Hkv * D, C))
        w[pre + "self_attn.o_proj.weight"] = rng.normal(0, 0.1, (C, H * D))
        w[pre + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.normal(size=C)
        w[pre + "mlp.gate_proj.weight"] = rng.normal(0, 0.15, (F, C))
        w[pre + "mlp.up_proj.weight"] = rng.normal(0, 0.15, (F, C))
        w[pre + "mlp.down_proj.weight"] = rng.normal(0, 0.1, (C, F))
    w["model.norm.weight"] = 1 + 0.1 * rng.normal(size=C)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, 0.2, (V, C))
    return {k: v.astype(np.float32) for k, v in w.items()}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    tokens = rng.integers(3, V, T).astype(np.int32)
    tokens.tofile(os.path.join(out, "tokens.i32"))
    for name, spelling, rope, theta, tied, dtype, shards, extra in VARIANTS:
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        cfg = config(name, spelling, rope, theta, tied, dtype, extra)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        w = weights(cfg, rng)
        stored, values = {}, {}
        for k, a in w.items():
            if dtype == "BF16":
                bits, vals = to_bf16(a)
                stored[k], values[k] = ("BF16", bits), vals
            else:
                stored[k], values[k] = ("F32", a), a
        names = list(stored)
        if shards == 1:
            write_st(os.path.join(d, "model.safetensors"), stored)
        else:
            wmap, total = {}, 0
            for s in range(shards):
                fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
                part = {k: stored[k] for k in names[s::shards]}
                write_st(os.path.join(d, fn), part)
                for k, (_, a) in part.items():
                    wmap[k] = fn
                    total += a.nbytes
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2)
        p = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
        with torch.no_grad():
            logits = forward(cfg, p, torch.tensor(tokens).reshape(1, T))[0]
        logits.numpy().astype(np.float32).tofile(os.path.join(d, "ref_logits.f32"))
    with open(os.path.join(out, "variants.txt"), "w") as f:
        f.write("".join(v[0] + "\n" for v in VARIANTS))


if __name__ == "__main__":
    main()
