#!/usr/bin/env python3
"""Writes a random LoRA adapter in llama.cpp's GGUF adapter format for a base GGUF file, with
gguf-py (the peers' venv): for the listed matrices of the listed layers, `NAME.weight.lora_a`
(rank × in) and `NAME.weight.lora_b` (out × rank) in F32, `adapter.lora.alpha`.

  python make_lora_gguf.py BASE.gguf OUT.gguf [--rank 4] [--alpha 8] [--seed 0]
"""
import argparse

import gguf
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="attn_q,attn_v,attn_output,ffn_down,ffn_gate")
    ap.add_argument("--layers", default="0,1,5,17")
    a = ap.parse_args()
    base = gguf.GGUFReader(a.base)
    arch = bytes(base.fields["general.architecture"].parts[-1]).decode()
    shapes = {t.name: [int(x) for x in t.shape] for t in base.tensors}  # ne order: [in, out]
    rng = np.random.default_rng(a.seed)
    w = gguf.GGUFWriter(a.out, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", a.alpha)
    for layer in [int(x) for x in a.layers.split(",")]:
        for t in a.targets.split(","):
            name = f"blk.{layer}.{t}.weight"
            n_in, n_out = shapes[name]
            # numpy shapes are (rows, cols): A is rank × in, B is out × rank.
            w.add_tensor(name + ".lora_a", (rng.standard_normal((a.rank, n_in)) * 0.05).astype(np.float32))
            w.add_tensor(name + ".lora_b", (rng.standard_normal((n_out, a.rank)) * 0.05).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
