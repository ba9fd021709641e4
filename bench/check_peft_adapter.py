#!/usr/bin/env python3
"""PEFT compatibility both ways for so8t's LoRA: PEFT makes a random adapter (B != 0) for an HF model,
so8t applies it (`so8t model logits --adapter`), and the logits must equal PEFT's.

  python bench/check_peft_adapter.py --so8t target/release/so8t --model DIR --work DIR
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", default="target/release/so8t")
    ap.add_argument("--model", default="/tmp/so8t-peers/models/smollm2-hf")
    ap.add_argument("--work", default="/tmp/so8t-peft-check")
    a = ap.parse_args()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg).eval()
    adapter = os.path.join(a.work, "adapter")
    model.save_pretrained(adapter)
    ids = [1, 504, 3458, 282, 4649, 314, 19, 1345, 28, 2]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0]
    out = subprocess.run([a.so8t, "model", "logits", "--model", a.model, "--adapter", adapter, "--ids",
                          ",".join(map(str, ids)), "--json"], check=True, capture_output=True, text=True).stdout
    got = torch.tensor(json.loads(out)["logits"])
    with torch.no_grad(), model.disable_adapter():
        plain = model(torch.tensor([ids])).logits[0]
    d = (got - want).abs().max().item()
    print(f"PEFT adapter {adapter}: max |logits(so8t) - logits(PEFT)| = {d:.3e}"
          + f" (the adapter itself moves logits by up to {(want - plain).abs().max().item():.3f})")
    sys.exit(0 if d < 1e-4 else 1)


if __name__ == "__main__":
    main()
