"""Dumps a GGUF file as gguf-py's GGUFReader sees it, as JSON, for tests/container.rs.

Usage: python gguf_dump.py FILE [--hash-tensors]
Output: {"alignment", "data_offset", "fields": [{"name", "types", "value"}],
         "tensors": [{"name", "type", "shape", "n_bytes", "data_offset", "sha256"?}]}
Nested arrays come out flattened (gguf-py's ReaderField.contents does that).
"""
import hashlib
import json
import math
import sys

from gguf import GGUFReader


def clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, list):
        return [clean(x) for x in v]
    return v


def main():
    path = sys.argv[1]
    hash_tensors = "--hash-tensors" in sys.argv[2:]
    r = GGUFReader(path)
    fields = []
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            value = clean(f.contents())
        except Exception as e:  # nested arrays of odd shapes
            value = {"error": str(e)}
        fields.append({"name": name, "types": [int(t) for t in f.types], "value": value})
    tensors = []
    for t in r.tensors:
        d = {
            "name": t.name,
            "type": int(t.tensor_type),
            "shape": [int(x) for x in t.shape],
            "n_bytes": int(t.n_bytes),
            "data_offset": int(t.data_offset),
        }
        if hash_tensors:
            d["sha256"] = hashlib.sha256(t.data.tobytes()).hexdigest()
        tensors.append(d)
    json.dump(
        {"alignment": int(r.alignment), "data_offset": int(r.data_offset), "fields": fields,
         "tensors": tensors},
        sys.stdout,
    )


main()
