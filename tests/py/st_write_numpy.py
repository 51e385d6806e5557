"""st_write_numpy.py — write a safetensors file by hand (numpy + json + struct, no
safetensors package) for tests/test_safetensors.c to read.

Usage: st_write_numpy.py OUT

The header is not padded and an odd number of bytes long, so every tensor's data
starts at an odd, misaligned file offset. Values follow formulas the C test
recomputes (see test_numpy_file there).
"""
import json
import struct
import sys

import numpy as np


def bf16_bits(x32):
    """float32 → bfloat16 bits, round to nearest even (no NaNs here)."""
    u = x32.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    out = sys.argv[1]
    i20 = np.arange(20, dtype=np.float64)
    i21 = np.arange(21, dtype=np.float64)
    tensors = [  # (name, dtype, shape, raw bytes)
        ("f32", "F32", [2, 3], (np.arange(6) * 0.5 - 1).astype("<f4")),
        ("f16", "F16", [4, 5], (i20 * 0.1 - 1).astype(np.float32).astype("<f2")),
        ("bf16", "BF16", [3, 7], bf16_bits((i21 * 0.37 - 3).astype(np.float32)).astype("<u2")),
        ("i32", "I32", [5], np.array([-2, -1, 0, 1, 2**31 - 1], dtype="<i4")),
        ("u8", "U8", [2, 2], np.array([0, 1, 128, 255], dtype=np.uint8)),
        ("i64", "I64", [3], np.array([-(2**40), 0, 2**62], dtype="<i8")),
        ("f64", "F64", [2], np.array([1.0 / 3.0, -2.5], dtype="<f8")),
        ("bool", "BOOL", [3], np.array([True, False, True], dtype=np.bool_)),
        ("scalar", "F32", [], np.array(3.25, dtype="<f4")),
        ("empty", "F32", [0, 4], np.zeros((0, 4), dtype="<f4")),
    ]
    header = {"__metadata__": {"format": "pt", "source": "numpy"}}
    data = b""
    for name, dtype, shape, arr in tensors:
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    if (8 + len(text)) % 2 == 0:
        text += b" "  # make the data start at an odd offset
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)


if __name__ == "__main__":
    main()
