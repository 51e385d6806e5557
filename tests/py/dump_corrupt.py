"""dump_corrupt.py — damage files for tests/test_faults.c, and check kd's dump checksums.

  dump_corrupt.py DUMP S keep              change token 5 of sequence S (still valid: only the checksum can tell)
  dump_corrupt.py DUMP S drop              delete seq_checksum and set the log-probs of sequence S to 0 (invalid)
  dump_corrupt.py DUMP S value OUT X       copy DUMP to OUT with topk_logprobs[S, 3, 0] = X
  dump_corrupt.py DUMP 0 verify            recompute every seq_checksum as docs/dump-format.md defines it
  dump_corrupt.py BIN I header OUT X       copy a llama2.c BIN to OUT with header field I = X
"""
import shutil
import struct
import sys

import h5py
import numpy as np

M64 = (1 << 64) - 1


def fold(h, words):
    for w in words:
        h = ((h ^ int(w)) * 0x9E3779B97F4A7C15) & M64
        h ^= h >> 32
    return h


def checksum(f, s):
    """The checksum of sequence s: four parts (tokens, mask, ids, values) folded into a seed."""
    t = f["tokens"][s].astype(np.int32).view(np.uint32)
    m = f["loss_mask"][s].astype(np.uint32) if "loss_mask" in f else np.ones(f.attrs["seq_len"], np.uint32)
    parts = [fold(1, t), fold(2, m), 3, 4]
    if "topk_ids" in f:
        parts[2] = fold(3, f["topk_ids"][s].astype(np.int32).reshape(-1).view(np.uint32))
    vals = "topk_logprobs" if "topk_logprobs" in f else "logits" if "logits" in f else None
    if vals:
        parts[3] = fold(4, f[vals][s].astype(np.float32).reshape(-1).view(np.uint32))
    h = 0x6B642D64756D7031
    for p in parts:
        h = fold(h, [p & 0xFFFFFFFF, p >> 32])
    return h


def main():
    path, s, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "header":
        b = bytearray(open(path, "rb").read())
        b[4 * s:4 * s + 4] = struct.pack("<i", int(sys.argv[5]))
        open(sys.argv[4], "wb").write(b)
        return 0
    if mode == "value":
        shutil.copy(path, sys.argv[4])
        with h5py.File(sys.argv[4], "r+") as f:
            f["topk_logprobs"][s, 3, 0] = float(sys.argv[5])
        return 0
    with h5py.File(path, "r" if mode == "verify" else "r+") as f:
        if mode == "keep":
            t = f["tokens"][s]
            t[5] = (t[5] + 1) % int(f.attrs["vocab_size"])
            f["tokens"][s] = t
        elif mode == "drop":
            del f["seq_checksum"]
            f["topk_logprobs"][s] = 0
        elif mode == "verify":
            n = int(f.attrs["n_seq"])
            sums = f["seq_checksum"][...]
            if sums.shape != (n,):
                print("seq_checksum shape %r, expected (%d,)" % (sums.shape, n))
                return 1
            for i in range(n):
                if int(sums[i]) != checksum(f, i):
                    print("sequence %d: seq_checksum %016x, recomputed %016x" % (i, int(sums[i]), checksum(f, i)))
                    return 1
            print("dump_corrupt.py: %d checksums verified" % n)
        else:
            print("unknown mode " + mode)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
