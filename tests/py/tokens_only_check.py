"""tokens_only_check.py — the h5py side of tests/test_tokens_only.c (tokens-only
teacher dumps: attribute distribution = "none", docs/dump-format.md).

Usage:
  tokens_only_check.py write-doc DOC DIR   run the h5py snippet of DOC's "Tokens-only dumps"
        section (verbatim) to write DIR/text.h5 (N sequences, a tokenizer, a loss_mask with
        zeros), with DIR/text_ref.{tokens,mask}.bin holding what it stored; plus variants
        for kd to accept or reject (DIR/<case>.h5, see VARIANTS)
  tokens_only_check.py read-kd DUMP REF_PREFIX   check a tokens-only dump kd wrote:
        attributes, exactly the datasets tokens and loss_mask, chunking, values equal to
        REF_PREFIX.{tokens,mask}.bin
Exits non-zero with a message on the first problem.
"""
import os
import re
import sys

import h5py
import numpy as np

N, T, V = 5, 8, 50


def fail(msg):
    print("tokens_only_check.py: " + msg, file=sys.stderr)
    sys.exit(1)


def doc_snippet(doc):
    """The first python block after the tokens-only section's h5py paragraph."""
    text = open(doc, encoding="utf-8").read()
    at = text.find("## Tokens-only dumps")
    if at < 0:
        fail("%s has no '## Tokens-only dumps' section" % doc)
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, at)
    if not m:
        fail("no python block in the tokens-only section of %s" % doc)
    return m.group(1)


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (N, T + 1)).astype(np.int32)
    mask = np.ones((N, T), np.uint8)
    mask[N - 1, T - 3:] = 0   # a padded tail
    return tokens, mask


def write_doc(doc, out):
    tokens, mask = arrays()
    pieces = ["<unk>", "<s>", "</s>"] + ["\u2581w%d" % i for i in range(3, V)]
    snippet, cwd = doc_snippet(doc), os.getcwd()
    os.chdir(out)
    try:
        scope = {"h5py": h5py, "np": np, "T": T, "pieces": pieces}
        exec(snippet, scope)     # creates f = text.h5.partial
        f = scope["f"]
        for name, value in (("tokens", tokens), ("loss_mask", mask)):
            f[name].resize(N, axis=0)
            f[name][:] = value
        g = f.create_group("tokenizer")
        blob = [p.encode("utf-8") for p in pieces]
        g["piece_bytes"] = np.frombuffer(b"".join(blob), np.uint8)
        g["piece_offsets"] = np.cumsum([0] + [len(p) for p in blob], dtype=np.int64)
        g.attrs.update(model="llama", bos_id=1, eos_id=2, unk_id=0)
        f.close()
        os.replace("text.h5.partial", "text.h5")
    finally:
        os.chdir(cwd)
    out = os.path.abspath(out)
    tokens.tofile(os.path.join(out, "text_ref.tokens.bin"))
    mask.tofile(os.path.join(out, "text_ref.mask.bin"))
    write_variants(out, tokens, mask)


def write(path, attrs, data):
    a = dict(format="kd-teacher-dump", version=1, vocab_size=V, k=0, seq_len=T, temperature=1.0, teacher="",
             distribution="none")
    a.update(attrs)
    with h5py.File(path, "w") as f:
        for name, value in a.items():
            if value is not None:
                f.attrs[name] = value
        for name, x in data.items():
            f.create_dataset(name, data=x, chunks=(1,) + x.shape[1:], maxshape=(None,) + x.shape[1:])


def write_variants(out, tokens, mask):
    topk = {"topk_ids": np.zeros((N, T, 4), np.uint16), "topk_logprobs": np.full((N, T, 4), -1.5, np.float16)}
    logits = {"logits": np.zeros((N, T, V), np.float16)}
    base = {"tokens": tokens, "loss_mask": mask}
    bad_tok, bad_mask = tokens.copy(), mask.copy()
    bad_tok[2, 5] = V + 3
    bad_mask[1, 3] = 2
    cases = {
        "nomask": ({}, {"tokens": tokens}),                                    # valid: all positions
        "bytes_none": ({"distribution": np.bytes_(b"none")}, base),            # valid: fixed-length string
        "none_topk": ({}, {**base, **topk}),
        "none_logits": ({}, {**base, **logits}),
        "none_k4": ({"k": 4}, {**base, **topk}),
        "topk_missing": ({"k": 4, "distribution": "topk"}, base),
        "logits_missing": ({"distribution": "logits"}, base),
        "inferred_missing": ({"distribution": None}, base),
        "bogus": ({"distribution": "probs"}, base),
        "tokrange": ({}, {"tokens": bad_tok, "loss_mask": mask}),
        "mask2": ({}, {"tokens": tokens, "loss_mask": bad_mask}),
        "topk_ok": ({"k": 4, "distribution": "topk"}, {**base, "topk_ids": np.tile(np.arange(4, dtype=np.uint16),
                                                                                    (N, T, 1)),
                                                       "topk_logprobs": np.tile(np.log([0.4, 0.3, 0.2, 0.1])
                                                                                .astype(np.float16), (N, T, 1))}),
    }
    for name, (attrs, data) in cases.items():
        write(os.path.join(out, name + ".h5"), attrs, data)


def read_kd(path, ref):
    with h5py.File(path, "r") as f:
        a = f.attrs
        if a["format"] != "kd-teacher-dump" or a["version"] != 1 or a["temperature"] != 1.0:
            fail("root attributes %r" % dict(a))
        if a["distribution"] != "none" or int(a["k"]) != 0:
            fail("distribution %r, k %r: expected 'none', 0" % (a["distribution"], a["k"]))
        t, n = int(a["seq_len"]), int(a["n_seq"])
        names = sorted(name for name in f if isinstance(f[name], h5py.Dataset))
        if names not in (["loss_mask", "tokens"], ["loss_mask", "seq_checksum", "tokens"]):
            fail("datasets %r, expected exactly loss_mask and tokens (and kd's optional seq_checksum)" % names)
        if "seq_checksum" in names and f["seq_checksum"].shape != (int(a["n_seq"]),):
            fail("seq_checksum shape %r, expected (n_seq,)" % (f["seq_checksum"].shape,))
        for name, dt, shape in (("tokens", "int32", (n, t + 1)), ("loss_mask", "uint8", (n, t))):
            d = f[name]
            if str(d.dtype) != dt or d.shape != shape or d.maxshape[0] is not None or d.chunks[0] != 1:
                fail("%s: dtype %s shape %s maxshape %s chunks %s" % (name, d.dtype, d.shape, d.maxshape, d.chunks))
        for name, suffix, dt in (("tokens", "tokens", np.int32), ("loss_mask", "mask", np.uint8)):
            want = np.fromfile(ref + "." + suffix + ".bin", dt).reshape(f[name].shape)
            got = f[name][()]
            if not np.array_equal(got, want):
                i = np.argwhere(got != want)[0]
                fail("%s%s: h5py reads %r, kd meant %r" % (name, list(i), got[tuple(i)], want[tuple(i)]))
        # the reading example of the docs works on it (labels from tokens and mask)
        mask = f["loss_mask"][0] if "loss_mask" in f else np.ones(t, np.uint8)
        labels = np.where(mask == 1, f["tokens"][0][1:], -100)
        if labels.shape != (t,):
            fail("labels shape %r" % (labels.shape,))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "write-doc":
        write_doc(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "read-kd":
        read_kd(sys.argv[2], sys.argv[3])
    else:
        fail("usage: see the docstring")


if __name__ == "__main__":
    main()
