#!/usr/bin/env python3
"""gguf_check.py — read a GGUF with llama.cpp's own Python reader (the `gguf`
package, gguf-py) and report what it sees, for tests/test_export.c.

usage: gguf_check.py FILE.gguf OUT_PREFIX
  prints a listing (KVs with types, tensors with types and shapes) to stderr;
  writes OUT_PREFIX.json:
    {"kv": {key: {"type": "UINT32" | "ARRAY[STRING]" | ..., "value": scalar or
            string (arrays: null), "count": array length or null}},
     "tensors": [{"name", "type", "ne": [...], "offset", "n"}]}
  and OUT_PREFIX.f32: every tensor dequantized by gguf.quants.dequantize, as
  float32 in tensor order (tensor i at float offset "offset").
Exits non-zero if the reader refuses the file.
"""
import json
import sys

import numpy as np
import gguf


def type_name(field):
    t = field.types
    if not t:
        return "INVALID"
    if t[0] == gguf.GGUFValueType.ARRAY:
        return "ARRAY[%s]" % (t[1].name if len(t) > 1 else "?")
    return t[0].name


def scalar_value(field):
    t = field.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        return None
    v = field.contents()
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        v = str(v)
    return v


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, prefix = sys.argv[1], sys.argv[2]
    r = gguf.GGUFReader(path)
    kv = {}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        arr = f.types[0] == gguf.GGUFValueType.ARRAY
        kv[key] = {"type": type_name(f), "value": scalar_value(f), "count": len(f.data) if arr else None}
        shown = kv[key]["value"] if not arr else "[%d elements]" % len(f.data)
        print("kv  %-45s %-16s %s" % (key, kv[key]["type"], shown), file=sys.stderr)
    tensors, offset = [], 0
    with open(prefix + ".f32", "wb") as out:
        for t in r.tensors:
            deq = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            ne = [int(v) for v in t.shape]
            assert deq.size == int(np.prod(ne)), (t.name, deq.size, ne)
            tensors.append({"name": t.name, "type": t.tensor_type.name, "ne": ne, "offset": offset, "n": int(deq.size)})
            print("tensor %-28s %-5s ne=%s" % (t.name, t.tensor_type.name, ne), file=sys.stderr)
            out.write(deq.astype("<f4").tobytes())
            offset += int(deq.size)
    with open(prefix + ".json", "w") as f:
        json.dump({"kv": kv, "tensors": tensors}, f)
    print("gguf-py %s read %s: %d KVs, %d tensors" % (getattr(gguf, "__version__", "?"), path, len(kv), len(tensors)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
