#!/usr/bin/env python3
"""Peer side of so8t-gguf's quantizer tests: runs llama.cpp's `llama-quantize` with gguf-py.

Called by crates/so8t-gguf/tests/quant.rs with /tmp/peers/venv/bin/python (peers are made by
`bash /work/shared/peers/setup.sh`). Nothing here holds expected results: they are computed by
llama.cpp at test time.

  quant_peer.py quantize WORKDIR QUANTIZE_BIN
      WORKDIR/manifest.json: {"tensors": [{"name": str, "shape": [ne0, ne1, ...]}],
                              "types": ["Q8_0", ...]}
      WORKDIR/<name>.f32: the tensor's raw little-endian f32 data (row-major, ne0 fastest).
      Writes WORKDIR/in.gguf (F32, minimal `llama` metadata), runs
      `llama-quantize --pure in.gguf TYPE.gguf TYPE` per type, and writes
      WORKDIR/out/TYPE/<name>.bin (the quantized bytes) and WORKDIR/out/TYPE/types.json.

  quant_peer.py mix WORKDIR QUANTIZE_BIN
      WORKDIR/manifest.json: {"arch": str, "kv": {key: int|float}, "tensors": [{"name", "shape"}]}
      Writes an F32 file with small random data of those shapes, runs
      `llama-quantize in.gguf out.gguf Q4_K_M` and writes WORKDIR/types.json
      ({name: type name}).

  quant_peer.py types MODEL.gguf OUT.json
      Writes [{"name", "type", "shape"}] for every tensor of MODEL.gguf (shape in ggml order).
"""

import json
import os
import subprocess
import sys

import numpy as np
import gguf


def write_f32_gguf(path, arch, kv, tensors):
    w = gguf.GGUFWriter(path, arch)
    for key, val in kv.items():
        if isinstance(val, float):
            w.add_float32(key, val)
        else:
            w.add_uint32(key, int(val))
    for name, arr in tensors:
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run_quantize(bin_path, src, dst, ty, pure):
    cmd = [bin_path] + (["--pure"] if pure else []) + [src, dst, ty, "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        raise SystemExit(f"llama-quantize failed for {ty}")


def tensor_types(path):
    rd = gguf.GGUFReader(path)
    return rd, {t.name: t.tensor_type.name for t in rd.tensors}


def llama_kv(n_embd):
    return {
        "llama.block_count": 1,
        "llama.context_length": 128,
        "llama.embedding_length": n_embd,
        "llama.feed_forward_length": n_embd,
        "llama.attention.head_count": 1,
        "llama.attention.head_count_kv": 1,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
    }


def cmd_quantize(work, qbin):
    man = json.load(open(os.path.join(work, "manifest.json")))
    tensors = []
    for t in man["tensors"]:
        raw = np.fromfile(os.path.join(work, t["name"] + ".f32"), dtype="<f4")
        tensors.append((t["name"], raw.reshape(list(reversed(t["shape"])))))
    src = os.path.join(work, "in.gguf")
    write_f32_gguf(src, "llama", llama_kv(256), tensors)
    for ty in man["types"]:
        dst = os.path.join(work, ty + ".gguf")
        run_quantize(qbin, src, dst, ty, pure=True)
        rd, types = tensor_types(dst)
        od = os.path.join(work, "out", ty)
        os.makedirs(od, exist_ok=True)
        for t in rd.tensors:
            with open(os.path.join(od, t.name + ".bin"), "wb") as f:
                f.write(np.ascontiguousarray(t.data).tobytes())
        json.dump(types, open(os.path.join(od, "types.json"), "w"))
        del rd
        os.remove(dst)


def cmd_mix(work, qbin):
    man = json.load(open(os.path.join(work, "manifest.json")))
    rng = np.random.default_rng(0)
    tensors = []
    for t in man["tensors"]:
        shape = list(reversed(t["shape"]))
        tensors.append((t["name"], rng.standard_normal(shape).astype(np.float32)))
    src = os.path.join(work, "in.gguf")
    dst = os.path.join(work, "out.gguf")
    write_f32_gguf(src, man["arch"], man["kv"], tensors)
    run_quantize(qbin, src, dst, "Q4_K_M", pure=False)
    _, types = tensor_types(dst)
    json.dump(types, open(os.path.join(work, "types.json"), "w"))


def cmd_types(model, out):
    rd = gguf.GGUFReader(model)
    rows = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape]}
            for t in rd.tensors]
    json.dump(rows, open(out, "w"))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    cmd = sys.argv[1]
    if cmd == "quantize":
        cmd_quantize(sys.argv[2], sys.argv[3])
    elif cmd == "mix":
        cmd_mix(sys.argv[2], sys.argv[3])
    elif cmd == "types":
        cmd_types(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
