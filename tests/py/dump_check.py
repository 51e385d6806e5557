"""dump_check.py — the h5py side of tests/test_dump.c (teacher dumps, docs/dump-format.md).

Usage:
  dump_check.py read-kd DUMP REF_PREFIX   check a dump kd wrote: attributes, dtypes,
        chunking and values equal to REF_PREFIX.{tokens,mask,ids,values}.bin (what
        kd meant to store, already rounded to the stored dtype; ids absent for full
        logits) and the tokenizer pieces of the C test's formula
  dump_check.py write-variants DIR        write DIR/good.h5 (a valid top-k dump built
        with numpy) and one corrupted copy per case of CASES, for kd to reject
  dump_check.py read-example DUMP         run the reading example of the docs on the recipe's dump
  dump_check.py doc-sync DOC RECIPE       the recipe part of RECIPE and the reading example
        (read_example below, dedented) appear verbatim in DOC
Exits non-zero with a message on the first problem.
"""
import os
import sys

import h5py
import numpy as np

N, T, K, V = 4, 8, 4, 50   # the variants' shape


def fail(msg):
    print("dump_check.py: " + msg, file=sys.stderr)
    sys.exit(1)


def test_pieces(n):
    """The tokenizer pieces test_dump.c writes."""
    return ["<unk>", "<s>", "</s>", "é"] + ["▁w%d" % i for i in range(4, n)]


def read_kd(path, ref):
    f = h5py.File(path, "r")
    a = f.attrs
    if a["format"] != "kd-teacher-dump" or a["version"] != 1 or a["temperature"] != 1.0:
        fail("root attributes %r" % dict(a))
    k, t, v, n = int(a["k"]), int(a["seq_len"]), int(a["vocab_size"]), int(a["n_seq"])
    if a["teacher"] != "kd-test-teacher":
        fail("teacher %r" % a["teacher"])
    if a.get("distribution") != ("topk" if k else "logits"):
        fail("distribution %r for k = %d" % (a.get("distribution"), k))
    want = {"tokens": ("int32", (n, t + 1)), "loss_mask": ("uint8", (n, t))}
    if k:
        want["topk_ids"] = ("uint16" if v <= 65536 else "int32", (n, t, k))
        want["topk_logprobs"] = ("float16", (n, t, k))
    else:
        want["logits"] = ("float32", (n, t, v))
    for name, (dt, shape) in want.items():
        d = f[name]
        if str(d.dtype) != dt or d.shape != shape or d.maxshape[0] is not None or d.chunks[0] != 1:
            fail("%s: dtype %s shape %s maxshape %s chunks %s, expected %s %s" % (
                name, d.dtype, d.shape, d.maxshape, d.chunks, dt, shape))
    checks = [("tokens", "tokens", np.int32), ("loss_mask", "mask", np.uint8)]
    checks += [("topk_ids", "ids", np.int32), ("topk_logprobs", "values", np.float32)] if k else \
        [("logits", "values", np.float32)]
    for name, suffix, dt in checks:
        expected = np.fromfile(ref + "." + suffix + ".bin", dt).reshape(f[name].shape)
        got = f[name][()].astype(dt)
        if not np.array_equal(got, expected):
            i = np.argwhere(got != expected)[0]
            fail("%s%s: h5py reads %r, kd meant %r" % (name, list(i), got[tuple(i)], expected[tuple(i)]))
    g = f["tokenizer"]
    off, blob = g["piece_offsets"][()], g["piece_bytes"][()].tobytes()
    pieces = [blob[off[i]:off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
    if pieces != test_pieces(len(pieces)) or g.attrs["model"] != "llama" or g.attrs["bos_id"] != 1:
        fail("tokenizer pieces %r... model %r" % (pieces[:6], g.attrs["model"]))
    if not np.array_equal(g["scores"][()], -np.arange(len(pieces), dtype=np.float32)):
        fail("tokenizer scores")


def good_arrays(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (N, T + 1)).astype(np.int32)
    ids = np.stack([rng.permutation(V)[:K] for _ in range(N * T)]).reshape(N, T, K).astype(np.uint16)
    p = rng.dirichlet(np.ones(K), N * T) * 0.9
    lp = np.log(-np.sort(-p, axis=1)).reshape(N, T, K).astype(np.float16)
    mask = np.ones((N, T), np.uint8)
    mask[3, T - 2:] = 0
    return {"tokens": tokens, "loss_mask": mask, "topk_ids": ids, "topk_logprobs": lp}


def write(path, arrays, attrs=None, layout="chunked", drop=(), dtypes=None, compression=None):
    a = dict(format="kd-teacher-dump", version=1, vocab_size=V, k=K, seq_len=T, temperature=1.0,
             teacher="numpy-test")
    a.update(attrs or {})
    with h5py.File(path, "w") as f:
        for name, value in a.items():
            if value is not None:
                f.attrs[name] = value
        for name, x in arrays.items():
            if name in drop:
                continue
            x = x.astype((dtypes or {}).get(name, x.dtype))
            if layout == "contiguous":
                f.create_dataset(name, data=x)
            else:
                f.create_dataset(name, data=x, chunks=(1,) + x.shape[1:], maxshape=(None,) + x.shape[1:],
                                 compression=compression)


def write_variants(out):
    g = good_arrays()
    write(os.path.join(out, "good.h5"), g)

    def variant(name, edit=None, **kw):
        arrays = {key: value.copy() for key, value in g.items()}
        if edit:
            edit(arrays)
        write(os.path.join(out, name + ".h5"), arrays, **kw)

    def setv(name, index, value):
        def edit(a):
            a[name][index] = value
        return edit

    def sum_gt_1(a):
        a["topk_logprobs"][3, 0] = np.log([0.6, 0.5, 0.1, 0.05])

    def unsorted(a):
        a["topk_logprobs"][1, 3, [0, 2]] = a["topk_logprobs"][1, 3, [2, 0]]

    def dup(a):
        a["topk_ids"][2, 2, 1] = a["topk_ids"][2, 2, 0]

    variant("nan", setv("topk_logprobs", (2, 5, 1), np.nan))
    variant("posinf", setv("topk_logprobs", (0, 0, 0), np.inf))
    variant("unsorted", unsorted)
    variant("sum", sum_gt_1)
    variant("idrange", setv("topk_ids", (0, 7, 3), V))
    variant("dupid", dup)
    variant("tokrange", setv("tokens", (1, 4), V + 10))
    variant("masknan", setv("topk_logprobs", (3, T - 1, 0), np.nan))   # masked: valid
    variant("gzipnan", setv("topk_logprobs", (1, 1, 1), np.nan), compression="gzip")
    variant("contignan", setv("topk_logprobs", (2, 6, 3), np.nan), layout="contiguous")
    variant("lp_int32", dtypes={"topk_logprobs": np.int32})
    variant("lp_f64", dtypes={"topk_logprobs": np.float64})
    variant("ids_f32", dtypes={"topk_ids": np.float32})
    variant("mask_bool", dtypes={"loss_mask": np.bool_})
    variant("ids_narrow", attrs={"vocab_size": 70000})
    variant("no_vocab", attrs={"vocab_size": None})
    variant("bad_format", attrs={"format": "something-else"})
    variant("version2", attrs={"version": 2})
    variant("temp2", attrs={"temperature": 2.0})
    variant("nseq", attrs={"n_seq": 3})
    variant("no_lp", drop=("topk_logprobs",))
    variant("bad_shape", lambda a: a.update(topk_ids=np.zeros((N, T, K + 1), np.uint16)))
    variant("bytes_attrs", attrs={"format": np.bytes_(b"kd-teacher-dump"), "k": np.array([K], np.int32)})
    with h5py.File(os.path.join(out, "not_dump.h5"), "w") as f:
        f["x"] = np.arange(3)
    with open(os.path.join(out, "good.h5"), "rb") as src, open(os.path.join(out, "truncated.h5"), "wb") as dst:
        data = src.read()
        dst.write(data[: len(data) // 2])
    with open(os.path.join(out, "text.h5"), "w") as f:
        f.write("not an HDF5 file\n")


def read_example(path):
    """Runs the reading example of docs/dump-format.md on the recipe's dump."""
    # --- reading example ---
    with h5py.File(path, "r") as f:
        T, k = int(f.attrs["seq_len"]), int(f.attrs["k"])
        tokens = f["tokens"][2]                                   # [T+1]
        mask = f["loss_mask"][2] if "loss_mask" in f else np.ones(T, np.uint8)
        labels = np.where(mask == 1, tokens[1:], -100)            # position t predicts tokens[t+1]
        ids = f["topk_ids"][2].astype(np.int64)                   # [T, k]
        p = np.exp(f["topk_logprobs"][2].astype(np.float32))      # [T, k], descending
        tail = 1.0 - p.sum(axis=-1)                               # teacher mass outside the top k
    # --- end of reading example ---
    if labels.shape != (T,) or (labels == -100).sum() != 4 or ids.shape != (T, k):
        fail("reading example: labels %r" % labels)
    if not (tail > 0).all() or not (np.diff(p, axis=-1) <= 0).all():
        fail("reading example: tail %r" % tail)


def doc_sync(doc, *sources):
    text = open(doc, encoding="utf-8").read()
    for src, begin, end in sources:
        part = open(src, encoding="utf-8").read().split(begin + "\n")[1].split(end)[0]
        lines = [line[4:] if line.startswith("    ") else line for line in part.split("\n")]
        if part not in text and "\n".join(lines) not in text:
            fail("%s: the part between '%s' and '%s' is not in %s verbatim" % (src, begin, end, doc))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "read-kd":
        read_kd(sys.argv[2], sys.argv[3])
    elif mode == "write-variants":
        write_variants(sys.argv[2])
    elif mode == "read-example":
        read_example(sys.argv[2])
    elif mode == "doc-sync":
        doc_sync(sys.argv[2], (sys.argv[3], "# --- recipe ---", "# --- end of recipe ---"),
                 (os.path.abspath(__file__), "    # --- reading example ---", "    # --- end of reading example ---"))
    else:
        fail("unknown mode " + mode)
