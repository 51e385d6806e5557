#!/usr/bin/env python3
"""tok_ref.py — reference encoder for tests/test_tokenizer.c: llama2.c's encode()
algorithm in plain Python (standard library only), reading a llama2.c tokenizer.bin.

usage: tok_ref.py TOKENIZER_BIN INPUT OUTPUT [--bos]

INPUT holds UTF-8 texts separated by NUL bytes; OUTPUT gets one line per text with
the token ids separated by spaces.

The algorithm, as in llama2.c run.c: (optional BOS = 1), a dummy-prefix token " "
when the text is not empty, then one token per UTF-8 character (a lead byte plus up
to 3 continuation bytes) or, when that character is not in the vocabulary, one byte
token per byte (id = byte + 3); then repeatedly merge the adjacent pair whose
concatenated piece exists with the highest score (the leftmost pair on ties) until
no pair merges. Pieces use plain spaces, as stored in the file.
"""
import struct
import sys


def load(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, pieces, scores = 4, [], []
    while off < len(data):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + n])
        scores.append(score)
        off += n
    assert all(len(p) <= max_len for p in pieces)
    return pieces, scores


def encode(text, pieces, scores, lookup, bos):
    ids = [1] if bos else []
    if text:
        ids.append(lookup[b" "])
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and j - i < 4 and (text[j] & 0xC0) == 0x80:
            j += 1
        ch = text[i:j]
        if ch in lookup:
            ids.append(lookup[ch])
        else:
            ids.extend(b + 3 for b in ch)
        i = j
    while True:
        best, best_id, best_at = -1e10, -1, -1
        for k in range(len(ids) - 1):
            cand = lookup.get(pieces[ids[k]] + pieces[ids[k + 1]])
            if cand is not None and scores[cand] > best:
                best, best_id, best_at = scores[cand], cand, k
        if best_at < 0:
            break
        ids[best_at:best_at + 2] = [best_id]
    return ids


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    pieces, scores = load(sys.argv[1])
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    bos = "--bos" in sys.argv[4:]
    texts = open(sys.argv[2], "rb").read().split(b"\0")
    with open(sys.argv[3], "w") as out:
        for t in texts:
            out.write(" ".join(str(i) for i in encode(t, pieces, scores, lookup, bos)) + "\n")


if __name__ == "__main__":
    main()
