#!/usr/bin/env python3
"""HF transformers side of the generation benchmark: prefill and greedy decode tokens/s.

  python hf_generate.py MODEL_DIR (--prompt TEXT | --prompt-tokens P) --max-tokens N --dtype f32|bf16 --threads T [--device cuda]

Prints one JSON line with the same keys as `so8t generate --json`.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", help="the prompt text")
    ap.add_argument("--prompt-tokens", type=int, help="instead of --prompt: this many token ids "
                    "(as so8t bench infer makes them: ((p * 7919) %% 1000 + 100))")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device).eval()
    if a.prompt_tokens:
        ids = torch.tensor([[(p * 7919) % 1000 + 100 for p in range(a.prompt_tokens)]], device=a.device)
    else:
        ids = tok(a.prompt, return_tensors="pt")["input_ids"].to(a.device)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    best = None
    with torch.inference_mode():
        for _ in range(a.repeats):
            sync()
            t0 = time.perf_counter()
            out = model(ids, use_cache=True)
            sync()
            t1 = time.perf_counter()
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            toks = [int(nxt)]
            t2 = time.perf_counter()
            for _ in range(a.max_tokens - 1):
                out = model(nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                toks.append(int(nxt))
            t3 = time.perf_counter()
            r = {"prompt_tokens": ids.shape[1], "tokens": toks, "prefill_secs": t1 - t0, "decode_secs": t3 - t2,
                 "prefill_tokens_per_sec": ids.shape[1] / (t1 - t0), "decode_tokens_per_sec": (a.max_tokens - 1) / (t3 - t2)}
            if best is None or r["decode_secs"] < best["decode_secs"]:
                best = r
    print(json.dumps(best))


if __name__ == "__main__":
    main()
