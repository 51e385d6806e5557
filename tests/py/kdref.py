"""kdref.py — small helpers shared by kd's Python reference scripts.

Reads and writes safetensors with numpy alone (no safetensors package), so the
references depend only on Debian's python3-numpy and python3-torch.
"""
import json
import struct

import numpy as np

_DT = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
       "I8": "i1", "U8": "u1", "BOOL": "?"}


def load_safetensors(path):
    """Return {name: numpy array} (BF16 converted to float32)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = buf[base + b:base + e]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_DT[info["dtype"]])
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def save_safetensors(path, tensors):
    """Write {name: numpy array} (float32/float64/int32/int64 kept as is)."""
    rev = {np.dtype(v).str: k for k, v in _DT.items()}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        data = arr.tobytes()
        header[name] = {"dtype": rev[arr.dtype.str], "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for d in blobs:
            f.write(d)
