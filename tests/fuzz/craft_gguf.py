#!/usr/bin/env python3
"""tests/fuzz/craft_gguf.py SEED OUTDIR — hostile GGUF files made from a seed
(tests/fuzz/corpus/gguf/tiny-f32-spm.gguf): every llama.* hyper-parameter set to
0, to values that overflow sizes or do not divide, non-finite epsilons and RoPE
bases, a NaN in output_norm, a tokenizer larger than the embedding, and zero or
huge embedding dimensions. Kept in tests/fuzz/crashers/gguf (the classes of
issue 17); the fuzz_replay test runs them through the GGUF target."""
import math, os, struct, sys

seed, out = sys.argv[1], sys.argv[2]
data = bytearray(open(seed, 'rb').read())
os.makedirs(out, exist_ok=True)

def parse(b):
    """(kv: key -> (type offset, value offset), tensors: name -> (dims offset, n_dims, type, data offset))"""
    p = 4 + 4
    n_t, n_kv = struct.unpack_from('<QQ', b, p); p += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(t, p):
        if t == 8:
            n, = struct.unpack_from('<Q', b, p); return p + 8 + n
        if t == 9:
            et, n = struct.unpack_from('<IQ', b, p); p += 12
            for _ in range(n): p = skip(et, p)
            return p
        return p + sizes[t]
    kv = {}
    for _ in range(n_kv):
        n, = struct.unpack_from('<Q', b, p); key = bytes(b[p + 8:p + 8 + n]).decode(); p += 8 + n
        t, = struct.unpack_from('<I', b, p); kv[key] = (p, p + 4); p = skip(t, p + 4)
    tensors = {}
    for _ in range(n_t):
        n, = struct.unpack_from('<Q', b, p); name = bytes(b[p + 8:p + 8 + n]).decode(); p += 8 + n
        nd, = struct.unpack_from('<I', b, p); dims = p + 4; p += 4 + 8 * nd
        ty, off = struct.unpack_from('<IQ', b, p); p += 12
        tensors[name] = (dims, nd, ty, off)
    align = 32
    return kv, tensors, (p + align - 1) // align * align

kv, tensors, data_start = parse(data)

def write(name, b):
    open(os.path.join(out, name), 'wb').write(b)

def set_u32(key, v, name):
    b = bytearray(data); struct.pack_into('<I', b, kv[key][1], v); write(name, b)

def set_f32(key, v, name):
    b = bytearray(data); struct.pack_into('<f', b, kv[key][1], v); write(name, b)

for key, short in [('llama.attention.head_count', 'head_count'), ('llama.attention.head_count_kv', 'head_count_kv'),
                   ('llama.embedding_length', 'embedding_length'), ('llama.feed_forward_length', 'ffn_length'),
                   ('llama.block_count', 'block_count'), ('llama.context_length', 'context_length'),
                   ('llama.rope.dimension_count', 'rope_dims')]:
    if key not in kv: continue
    for v, what in [(0, 'zero'), (3, 'three'), (0xFFFFFFFF, 'u32max'), (0x7FFFFFFF, 'i32max'), (1 << 20, '2p20')]:
        set_u32(key, v, f'{short}-{what}.gguf')
for v, what in [(-1.0, 'negative'), (-math.inf, 'minus-inf'), (math.inf, 'inf'), (math.nan, 'nan'), (0.0, 'zero')]:
    set_f32('llama.attention.layer_norm_rms_epsilon', v, f'rms_eps-{what}.gguf')
    if 'llama.rope.freq_base' in kv: set_f32('llama.rope.freq_base', v, f'freq_base-{what}.gguf')
# NaN / Inf in output_norm (F32)
dims, nd, ty, off = tensors['output_norm.weight']
for v, what in [(math.nan, 'nan'), (math.inf, 'inf')]:
    b = bytearray(data); struct.pack_into('<f', b, data_start + off + 4, v); write(f'output_norm-{what}.gguf', b)
# token_embd.weight rows: fewer than the tokenizer's pieces, zero, huge
dims, nd, ty, off = tensors['token_embd.weight']
for v, what in [(30, 'smaller-than-tokenizer'), (0, 'zero'), (1 << 40, '2p40'), (0xFFFFFFFFFFFFFFFF, 'u64max')]:
    b = bytearray(data); struct.pack_into('<Q', b, dims + 8, v); write(f'token_embd-rows-{what}.gguf', b)
for v, what in [(0, 'zero'), (1 << 62, '2p62')]:
    b = bytearray(data); struct.pack_into('<Q', b, dims, v); write(f'token_embd-cols-{what}.gguf', b)
# the same without the key llama.vocab_size (renamed): the tokenizer check itself
if 'llama.vocab_size' in kv:
    b = bytearray(data); struct.pack_into('<Q', b, tensors['token_embd.weight'][0] + 8, 30)
    i = b.find(b'llama.vocab_size'); b[i:i + 16] = b'llama.vocab_sizX'
    write('token_embd-rows-smaller-than-tokenizer-no-vocab-key.gguf', b)
