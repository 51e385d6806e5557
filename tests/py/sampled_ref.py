"""sampled_ref.py — references for sampled-class dumps (distribution "sampled", RS-KD).

usage: sampled_ref.py loss IN.safetensors OUT.safetensors
       sampled_ref.py write DUMP.h5 N SEED       a sampled dump written with h5py (the recipe of
                                                docs/dump-format.md, "Sampled dumps")
       sampled_ref.py check DUMP.h5             the schema, read back with h5py
       sampled_ref.py corrupt DUMP.h5 OUT.h5    a copy whose counts at sequence 1, position 2 no
                                                longer add up to N (one less)

loss: written from the definition (kd_loss.h, KD_TEACHER_SAMPLED), not from kd's gradient
formulas. IN holds "hidden" [R, C], "head" [V, C], "labels" [R] (int32, -100 = ignored),
"ids" [R, k] (int32, distinct drawn ids, padding -1 or any id with count 0), "counts" [R, k]
(float32) and "opts" = [alpha, N]. The student is s = softmax(hidden @ head.T) over the FULL
vocabulary; the target p^ = counts / N; per valid row
    l = (1 - alpha) * CE(label) + alpha * sum_i p^_i (log p^_i - log s_i)
and L = mean over valid rows. OUT gets "loss", "ce", "kl" ([1]) and "dh" [R, C], "dW" [V, C]
from torch.autograd (computed in float64, stored as float32).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from kdref import load_safetensors, save_safetensors  # noqa: E402


def loss(inp, out):
    import torch

    t = load_safetensors(inp)
    h = torch.tensor(t["hidden"], dtype=torch.float64, requires_grad=True)
    W = torch.tensor(t["head"], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(t["labels"].astype(np.int64))
    ids = torch.tensor(t["ids"].astype(np.int64))
    counts = torch.tensor(t["counts"], dtype=torch.float64)
    alpha, N = float(t["opts"][0]), float(t["opts"][1])
    valid = labels != -100
    ls = torch.log_softmax(h @ W.T, dim=-1)                     # student at T = 1, full vocabulary
    ce = -ls[valid].gather(1, labels[valid][:, None]).squeeze(1)
    ph = counts / N                                             # the sampled target
    used = ph > 0
    lsg = ls.gather(1, ids.clamp(min=0))
    lph = torch.where(used, ph.clamp(min=1e-300).log(), torch.zeros_like(ph))
    kl = torch.where(used, ph * (lph - lsg), torch.zeros_like(ph)).sum(-1)[valid]
    L = ((1 - alpha) * ce + alpha * kl).mean()
    L.backward()
    f32 = np.float32
    save_safetensors(out, {"loss": np.array([L.item()], f32), "ce": np.array([ce.mean().item()], f32),
                           "kl": np.array([kl.mean().item()], f32), "dh": h.grad.numpy().astype(f32),
                           "dW": W.grad.numpy().astype(f32)})


# ---- the h5py recipe (docs/dump-format.md, "Sampled dumps") ---------------------------------------
def create_sampled_dump(path, vocab_size, n_samples, seq_len, teacher):
    """An empty sampled dump: n_samples draws per position, stored as distinct ids + uint8 counts."""
    import h5py

    f = h5py.File(path, "w")
    f.attrs.update(format="kd-teacher-dump", version=1, vocab_size=vocab_size, k=n_samples, seq_len=seq_len,
                   temperature=1.0, teacher=teacher, distribution="sampled", n_samples=n_samples)
    T, N, ids = seq_len, n_samples, (np.uint16 if vocab_size <= 65536 else np.int32)
    for name, shape, dtype in (("tokens", (T + 1,), np.int32), ("loss_mask", (T,), np.uint8),
                               ("sample_ids", (T, N), ids), ("sample_counts", (T, N), np.uint8)):
        extra = {"shuffle": True, "compression": "gzip", "compression_opts": 1} if name.startswith("sample") else {}
        f.create_dataset(name, (0, *shape), dtype, maxshape=(None, *shape), chunks=(1, *shape), **extra)
    return f


def sample_positions(logprobs, n_samples, rng):
    """logprobs: [P, V] teacher log-probs at T = 1. Returns ids, counts [P, N]: the distinct ids of
    N i.i.d. draws per position, by count descending (ties: smaller id first), then count-0 slots."""
    P, V = logprobs.shape
    p = np.exp(logprobs - logprobs.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ids = np.zeros((P, n_samples), np.int64)
    counts = np.zeros((P, n_samples), np.int64)
    for i in range(P):
        c = rng.multinomial(n_samples, p[i])
        drawn = np.flatnonzero(c)
        order = np.lexsort((drawn, -c[drawn]))               # count descending, then id ascending
        ids[i, :len(drawn)] = drawn[order]
        counts[i, :len(drawn)] = c[drawn][order]
    return ids, counts


def append_sampled(f, tokens, logprobs, rng, loss_mask=None):
    """tokens: [B, T+1]; logprobs: [B, T, V] the teacher's log-probs at T = 1 (position t predicts
    tokens[:, t+1])."""
    B, T, V = logprobs.shape
    ids, counts = sample_positions(logprobs.reshape(B * T, V), int(f.attrs["n_samples"]), rng)
    if loss_mask is None:
        loss_mask = np.ones((B, T), np.uint8)
    n = f["tokens"].shape[0]
    for name, value in (("tokens", tokens), ("loss_mask", loss_mask), ("sample_ids", ids.reshape(B, T, -1)),
                        ("sample_counts", counts.reshape(B, T, -1))):
        f[name].resize(n + B, axis=0)
        f[name][n:] = np.asarray(value).astype(f[name].dtype)
    f.flush()
# ---- end of the recipe -------------------------------------------------------------------------------


def write(path, n_samples, seed):
    rng = np.random.default_rng(seed)
    V, T, B = 50, 6, 3
    f = create_sampled_dump(path + ".partial", V, n_samples, T, "random-logits")
    for _ in range(2):
        z = rng.normal(size=(B, T, V)) * 2.0
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        mask = np.ones((B, T), np.uint8)
        mask[-1, -2:] = 0                                   # a padded tail: its slots may stay anything
        append_sampled(f, rng.integers(0, V, size=(B, T + 1)), lp, rng, mask)
    f.close()
    os.replace(path + ".partial", path)


def check(path):
    import h5py

    with h5py.File(path, "r") as f:
        N, T = int(f.attrs["n_samples"]), int(f.attrs["seq_len"])
        assert f.attrs["distribution"] == "sampled", f.attrs["distribution"]
        assert int(f.attrs["k"]) == N, (f.attrs["k"], N)
        assert f["sample_counts"].dtype == np.uint8 and f["sample_ids"].shape == f["sample_counts"].shape
        assert "topk_ids" not in f and "topk_logprobs" not in f and "logits" not in f
        c = f["sample_counts"][:].astype(np.int64)
        mask = f["loss_mask"][:] if "loss_mask" in f else np.ones(c.shape[:2], np.uint8)
        s = c.sum(-1)[mask == 1]
        assert (s == N).all(), f"counts do not add up to {N}: {s[s != N][:5]}"
        assert (np.diff(c, axis=-1)[mask == 1] <= 0).all(), "counts not descending"
        print(f"ok: {c.shape[0]} sequences x {T} positions, N = {N}, "
              f"{(c[mask == 1] > 0).sum(-1).mean():.2f} distinct ids per position")


def corrupt(src, dst):
    import shutil

    import h5py

    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        c = f["sample_counts"][1]
        c[2, np.flatnonzero(c[2])[-1]] -= 1                 # the last drawn id loses one draw
        f["sample_counts"][1] = c


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "loss":
        loss(sys.argv[2], sys.argv[3])
    elif cmd == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "check":
        check(sys.argv[2])
    elif cmd == "corrupt":
        corrupt(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
