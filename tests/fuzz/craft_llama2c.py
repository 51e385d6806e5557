#!/usr/bin/env python3
"""tests/fuzz/craft_llama2c.py SEED OUTDIR — llama2.c .bin files with hostile
headers made from a seed (tests/fuzz/corpus/llama2c/tied.bin): each of the 7
int32 fields set to 0, -1, INT32_MIN, INT32_MAX, 2^20 and 2^20 + 1, and all
sizes at 2^20 at once (products that overflowed int64 before they were range
checked). Kept in tests/fuzz/crashers/llama2c."""
import os, struct, sys

seed, out = sys.argv[1], sys.argv[2]
data = open(seed, 'rb').read()
os.makedirs(out, exist_ok=True)
names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len']
for i, name in enumerate(names):
    for v, what in [(0, 'zero'), (-1, 'minus1'), (-2**31, 'int32min'), (2**31 - 1, 'int32max'), (1 << 20, '2p20'),
                    ((1 << 20) + 1, '2p20plus1')]:
        b = bytearray(data)
        struct.pack_into('<i', b, 4 * i, v)
        open(os.path.join(out, f'{name}-{what}.bin'), 'wb').write(b)
b = bytearray(data)
struct.pack_into('<7i', b, 0, *([1 << 20] * 7))
open(os.path.join(out, 'all-2p20.bin'), 'wb').write(b)
