"""st_read_numpy.py — check a safetensors file written by kd (tests/test_safetensors.c,
test_kd_to_numpy) with numpy + json + struct only, and with torch when present.

Usage: st_read_numpy.py FILE

Checks the layout (header padded with spaces to a multiple of 8, "__metadata__"
first with format "pt", tensors contiguous in insertion order covering the whole
data buffer) and the values, which follow the formulas in the C test. Exits
non-zero with a message on the first mismatch.
"""
import json
import struct
import sys
from collections import OrderedDict

import numpy as np


def fail(msg):
    print("st_read_numpy.py: " + msg, file=sys.stderr)
    sys.exit(1)


def bf16_bits(x32):
    u = x32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    path = sys.argv[1]
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    if n % 8:
        fail(f"header length {n} is not a multiple of 8")
    text = blob[8 : 8 + n]
    body = text.rstrip(b" ")
    if not body.endswith(b"}"):
        fail("header is not padded with spaces only")
    header = json.loads(body, object_pairs_hook=OrderedDict)
    data = blob[8 + n :]
    keys = list(header.keys())
    if keys[0] != "__metadata__" or header["__metadata__"].get("format") != "pt":
        fail(f"__metadata__ must come first and hold format=pt, got {keys[0]!r}: {header.get('__metadata__')}")
    if header["__metadata__"].get("note") != 'quote " and backslash \\':
        fail(f"metadata 'note' is {header['__metadata__'].get('note')!r}")
    expect_order = ["w_f32", "w_f16", "w_bf16", "w_i32", "w_u8", "w_empty"]
    if keys[1:] != expect_order:
        fail(f"tensor order {keys[1:]}, expected {expect_order}")
    off = 0
    arrays = {}
    np_dtypes = {"F32": "<f4", "F16": "<u2", "BF16": "<u2", "I32": "<i4", "U8": "u1"}
    for k in expect_order:
        e = header[k]
        b, en = e["data_offsets"]
        if b != off:
            fail(f"{k}: begins at {b}, expected {off} (contiguous)")
        off = en
        arrays[k] = np.frombuffer(data[b:en], dtype=np_dtypes[e["dtype"]]).reshape(e["shape"])
    if off != len(data):
        fail(f"tensors end at {off}, data buffer is {len(data)} bytes")

    def check(name, dtype, shape, want):
        e = header[name]
        if e["dtype"] != dtype or e["shape"] != shape:
            fail(f"{name}: dtype {e['dtype']} shape {e['shape']}, expected {dtype} {shape}")
        got = arrays[name].reshape(-1)
        want = np.asarray(want).reshape(-1)
        if got.dtype != want.dtype or not np.array_equal(got, want):
            fail(f"{name}: values {got[:8]}..., expected {want[:8]}...")

    x12 = (np.arange(12) * 0.25 - 1).astype(np.float32)
    x10 = (np.arange(10, dtype=np.float64) * 0.1 - 0.5).astype(np.float32)
    x12b = (np.arange(12, dtype=np.float64) * 0.37 - 3).astype(np.float32)
    check("w_f32", "F32", [3, 4], x12)
    check("w_f16", "F16", [2, 5], x10.astype("<f2").view("<u2"))
    check("w_bf16", "BF16", [4, 3], bf16_bits(x12b))
    check("w_i32", "I32", [4], np.array([-7, 0, 7, 2**31 - 1], dtype="<i4"))
    check("w_u8", "U8", [3], np.array([0, 200, 255], dtype="u1"))
    check("w_empty", "F32", [0], np.zeros(0, dtype="<f4"))

    try:
        import torch
    except ImportError:
        return
    # torch's own float32 → bfloat16 rounding must give the same bits
    tb = torch.from_numpy(x12b.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    if not np.array_equal(tb, arrays["w_bf16"].reshape(-1)):
        fail("w_bf16: bits differ from torch's float32 → bfloat16 conversion")


if __name__ == "__main__":
    main()
