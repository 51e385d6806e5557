"""bpe_ref.py — an independent byte-level BPE reference (GPT-2's encoder) for
tests/test_bpe_vocab.c.

usage: python3 bpe_ref.py TOKENIZER.h5 STRINGS.json OUT.json

Reads the tokenizer from a kd checkpoint's tokenizer.h5 with h5py (root
attributes format = "kd-tokenizer", version = 1; group "tokenizer" as in
docs/dump-format.md), checks its layout, and writes {"ids": [[...], ...],
"decoded": [...]}: each string pre-tokenized with the pattern of the
tokenizer's "pre" ("gpt-2", "llama-bpe" or "qwen2"; Python's Unicode classes
stand in for \\p{L} and \\p{N}), mapped to GPT-2's byte characters and
merged by rank, as openai/gpt-2's encoder.py does.
"""
import json
import re
import sys

import h5py
import numpy as np

# The pre-tokenizer patterns (llama.cpp's names), with Python's classes: \p{L} = [^\W\d_], \p{N} = \d.
GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,%d}| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|"""
          r"""\s+(?!\S)|\s+""")
PATTERNS = {"gpt-2": GPT2, "llama-bpe": LLAMA3 % 3, "qwen2": LLAMA3 % 1}


def byte_chars():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def load(path):
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] in ("kd-tokenizer", b"kd-tokenizer"), f.attrs["format"]
        assert int(f.attrs["version"]) == 1
        g = f["tokenizer"]
        model = g.attrs["model"]
        model = model.decode() if isinstance(model, bytes) else model
        assert model == "gpt2", model
        pb, po = g["piece_bytes"][()].tobytes(), g["piece_offsets"][()]
        mb, mo = g["merge_bytes"][()].tobytes(), g["merge_offsets"][()]
        assert po[0] == 0 and po[-1] == len(pb) and np.all(np.diff(po) >= 0)
        pieces = [pb[po[i]:po[i + 1]].decode("utf-8") for i in range(len(po) - 1)]
        merges = [mb[mo[i]:mo[i + 1]].decode("utf-8") for i in range(len(mo) - 1)]
        pre = g.attrs.get("pre", "")
        pre = pre.decode() if isinstance(pre, bytes) else pre
    return pieces, merges, pre


def bpe(word, ranks):
    parts = list(word)
    while len(parts) > 1:
        pairs = [(ranks.get((parts[i], parts[i + 1]), None), i) for i in range(len(parts) - 1)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def main():
    pieces, merges, pre = load(sys.argv[1])
    strings = json.load(open(sys.argv[2], encoding="utf-8"))
    ranks = {}
    for r, m in enumerate(merges):
        a, b = m.split(" ", 1)
        ranks.setdefault((a, b), r)
    ids = {p: i for i, p in enumerate(pieces)}
    bc = byte_chars()
    inv = {c: b for b, c in bc.items()}
    out = []
    for s in strings:
        row = []
        for w in re.findall(PATTERNS[pre], s):
            chars = "".join(bc[b] for b in w.encode("utf-8"))
            for part in bpe(chars, ranks):
                row.extend([ids[part]] if part in ids else [ids[c] for c in part if c in ids])
        out.append(row)
    decoded = [bytes(inv[c] for c in "".join(pieces[i] for i in row)).decode("utf-8") for row in out]
    assert decoded == strings, (decoded, strings)
    json.dump({"ids": out, "decoded": decoded, "pre": pre}, open(sys.argv[3], "w"))


if __name__ == "__main__":
    main()
