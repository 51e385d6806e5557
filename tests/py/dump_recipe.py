"""dump_recipe.py — the recipe of docs/dump-format.md: dump a PyTorch teacher's
top-k log-probabilities as a kd teacher dump with h5py. The part between the
"recipe" marker lines is shown verbatim in the docs (tests/test_dump.c checks
that it is); the rest runs it on a tiny random model for the test.

Usage: dump_recipe.py OUT.h5 REF_PREFIX
  writes OUT.h5 with the recipe, and REF_PREFIX.{tokens,ids,logprobs}.bin: the
  expected int32 tokens, int32 top-k ids and float32 log-probs (float64 maths),
  which the C test compares with what kd reads.
"""
import sys

# --- recipe ---
import h5py
import numpy as np
import torch


def create_dump(path, vocab_size, k, seq_len, teacher, tokenizer=None):
    """An empty top-k dump. vocab_size is the width of the teacher's logits
    (model.config.vocab_size, padded or not). tokenizer: optional dict with
    "model" ("llama" or "gpt2"), "pieces" (list of str), and optionally
    "scores", "types", "bos_id", "eos_id", "unk_id", "add_bos", ...; for "gpt2"
    also "merges" ("left right" strings or (left, right) pairs, by rank) and
    "pre" (GGUF tokenizer.ggml.pre, e.g. "qwen2", "llama-bpe")."""
    f = h5py.File(path, "w")
    f.attrs.update(format="kd-teacher-dump", version=1, vocab_size=vocab_size, k=k,
                   seq_len=seq_len, temperature=1.0, teacher=teacher)
    T, ids = seq_len, (np.uint16 if vocab_size <= 65536 else np.int32)
    for name, shape, dtype in (("tokens", (T + 1,), np.int32), ("loss_mask", (T,), np.uint8),
                               ("topk_ids", (T, k), ids), ("topk_logprobs", (T, k), np.float16)):
        f.create_dataset(name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(1, *shape))
    if tokenizer is not None:
        g = f.create_group("tokenizer")
        pieces = [p.encode("utf-8") for p in tokenizer["pieces"]]
        g["piece_bytes"] = np.frombuffer(b"".join(pieces), np.uint8)
        g["piece_offsets"] = np.cumsum([0] + [len(p) for p in pieces], dtype=np.int64)
        if "merges" in tokenizer:
            merges = [(m if isinstance(m, str) else " ".join(m)).encode("utf-8") for m in tokenizer["merges"]]
            g["merge_bytes"] = np.frombuffer(b"".join(merges), np.uint8)
            g["merge_offsets"] = np.cumsum([0] + [len(m) for m in merges], dtype=np.int64)
        for name, dtype in (("scores", np.float32), ("types", np.int32)):
            if name in tokenizer:
                g[name] = np.asarray(tokenizer[name], dtype)
        g.attrs["model"] = tokenizer["model"]
        if "pre" in tokenizer:
            g.attrs["pre"] = tokenizer["pre"]
        for name in ("bos_id", "eos_id", "unk_id", "pad_id", "add_bos", "add_eos", "add_space_prefix"):
            if name in tokenizer:
                g.attrs[name] = int(tokenizer[name])
    return f


@torch.no_grad()
def append_batch(f, model, tokens, loss_mask=None):
    """tokens: [B, T+1] token ids. The teacher reads tokens[:, :T]; its output at
    position t predicts tokens[:, t+1]. loss_mask: [B, T], 0 where no loss is
    taken (padding, prompt); None means all 1."""
    tokens = torch.as_tensor(tokens)
    out = model(tokens[:, :-1])
    logits = getattr(out, "logits", out)                  # Hugging Face models return an object
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # temperature 1, full vocabulary, float32
    top = torch.topk(logprobs, int(f.attrs["k"]), dim=-1, sorted=True)
    if loss_mask is None:
        loss_mask = torch.ones(tokens.shape[0], tokens.shape[1] - 1)
    n, b = f["tokens"].shape[0], tokens.shape[0]
    for name, value in (("tokens", tokens), ("loss_mask", torch.as_tensor(loss_mask)),
                        ("topk_ids", top.indices), ("topk_logprobs", top.values)):
        f[name].resize(n + b, axis=0)
        f[name][n:] = value.cpu().numpy().astype(f[name].dtype)
    f.flush()
# --- end of recipe ---


def main():
    out, ref = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    V, T, k, dim = 300, 16, 8, 32
    model = torch.nn.Sequential(torch.nn.Embedding(V, dim), torch.nn.Linear(dim, V))
    tok = {"model": "llama", "pieces": ["<unk>", "<s>", "</s>"] + ["▁t%d" % i for i in range(V - 3)],
           "scores": [0.0] * 3 + [-float(i) for i in range(V - 3)], "types": [2, 3, 3] + [1] * (V - 3),
           "bos_id": 1, "eos_id": 2, "unk_id": 0, "add_bos": 1, "add_space_prefix": 1}
    f = create_dump(out, vocab_size=V, k=k, seq_len=T, teacher="tiny-random-torch", tokenizer=tok)
    gen = torch.Generator().manual_seed(1)
    all_tokens = []
    for _ in range(2):
        tokens = torch.randint(0, V, (3, T + 1), generator=gen)
        mask = torch.ones(3, T, dtype=torch.uint8)
        mask[2, T - 4:] = 0   # a padded tail
        append_batch(f, model, tokens, mask)
        all_tokens.append(tokens)
    f.close()
    # a byte-level BPE ("gpt2") tokenizer with merges (strings and pairs) and "pre": OUT.gpt2.h5, no sequences
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE]
    chars = {b: chr(b) for b in keep}
    chars.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in keep)})
    pieces = ["<|endoftext|>"] + [chars[b] for b in range(256)] + ["\u0120t", "he", "\u0120the"]
    bpe = {"model": "gpt2", "pre": "qwen2", "pieces": pieces, "merges": ["\u0120 t", ("h", "e"), ["\u0120t", "he"]],
           "types": [3] + [1] * (len(pieces) - 1), "eos_id": 0}
    create_dump(out + ".gpt2.h5", vocab_size=len(pieces), k=4, seq_len=T, teacher="tiny-gpt2", tokenizer=bpe).close()
    tokens = torch.cat(all_tokens)
    with torch.no_grad():
        lp = torch.log_softmax(model(tokens[:, :-1]).double(), dim=-1)
        top = torch.topk(lp, k, dim=-1, sorted=True)
    tokens.numpy().astype("<i4").tofile(ref + ".tokens.bin")
    top.indices.numpy().astype("<i4").tofile(ref + ".ids.bin")
    top.values.numpy().astype("<f4").tofile(ref + ".logprobs.bin")


if __name__ == "__main__":
    main()
