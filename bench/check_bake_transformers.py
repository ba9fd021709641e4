#!/usr/bin/env python3
"""Check that a folder written by `so8t bake` loads in HF transformers and gives so8t's logits.

  python bench/check_bake_transformers.py BAKED_DIR SO8T_LOGITS.json

SO8T_LOGITS.json is the output of `so8t model logits --model BAKED_DIR --ids ... --json`
(with "input_ids" and "logits"). Prints the max |Δ| and exits 1 above 1e-4.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    baked, ref = sys.argv[1], json.load(open(sys.argv[2]))
    model = AutoModelForCausalLM.from_pretrained(baked, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ref["input_ids"]])).logits[0]
    d = (logits - torch.tensor(ref["logits"])).abs().max().item()
    print(f"transformers loaded {baked} ({type(model).__name__}); max |logits(transformers) - logits(so8t)| = {d:.3e}")
    sys.exit(0 if d < 1e-4 else 1)


if __name__ == "__main__":
    main()
