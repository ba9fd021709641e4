#!/usr/bin/env python3
"""Prefill and decode tokens/s of `so8t generate` beside HF transformers, same model, same prompt,
same thread count, interleaved runs in one process tree, medians reported as a Markdown table.
Both get a warm-up: so8t one untimed prefill (`--warmup 1`), transformers keeps the better of two
passes.

  python bench/generate_vs_transformers.py --so8t target/release/so8t --model DIR \
      --torch-python /tmp/peers/venv-torch/bin/python [--threads 2] [--runs 5] [--max-tokens 64]
  # on the GPU machine: bf16 on CUDA, so8t through run-cuda.sh
  python3 bench/generate_vs_transformers.py --so8t ".gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda" \
      --device cuda --dtypes bf16 --torch-python python3 --model /tmp/phi35 --max-tokens 128

Needs: a release build of so8t, and a Python with torch + transformers (PEERS_WITH_TORCH=1 bash
../shared/peers/setup.sh makes /tmp/peers/venv-torch). Model: SmolLM2-135M-Instruct as an HF folder
(scripts/setup-test-peers.sh makes /tmp/so8t-peers/models/smollm2-hf).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)


def run_so8t(a, dtype):
    out = subprocess.run([*shlex.split(a.so8t), "--threads", str(a.threads), "generate", "--model", a.model,
                          "--prompt", PROMPT, "--temperature", "0", "--max-tokens", str(a.max_tokens), "--dtype",
                          dtype, "--device", a.device, "--json", "--warmup", "1"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def run_hf(a, dtype):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    out = subprocess.run([a.torch_python, os.path.join(HERE, "hf_generate.py"), a.model, "--prompt", PROMPT,
                          "--max-tokens", str(a.max_tokens), "--dtype", dtype, "--threads", str(a.threads), "--repeats", "2",
                          "--device", a.device],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", default="target/release/so8t")
    ap.add_argument("--model", default="/tmp/so8t-peers/models/smollm2-hf")
    ap.add_argument("--torch-python", default="/tmp/peers/venv-torch/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (both engines)")
    ap.add_argument("--dtypes", default="f32,bf16")
    a = ap.parse_args()
    rows = []
    for dtype in a.dtypes.split(","):
        res = {"so8t": [], "transformers": []}
        for _ in range(a.runs):  # interleaved, so machine noise hits both alike
            res["so8t"].append(run_so8t(a, dtype))
            res["transformers"].append(run_hf(a, dtype))
        for who, rs in res.items():
            rows.append((dtype, who, rs[0]["prompt_tokens"],
                         statistics.median(r["prefill_tokens_per_sec"] for r in rs),
                         statistics.median(r["decode_tokens_per_sec"] for r in rs)))
        same = res["so8t"][0]["tokens"][: len(res["transformers"][0]["tokens"])] == res["transformers"][0]["tokens"]
        rows.append((dtype, "greedy tokens identical", "", "yes" if same else "no", ""))
    where = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {a.threads} threads"
             if a.device == "cpu" else subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                                      capture_output=True, text=True).stdout.strip())
    print(f"{time.strftime('%Y-%m-%d')}, {where}, {a.runs} interleaved runs, medians, {a.max_tokens} new tokens greedy\n")
    print("| dtype | engine | prompt tokens | prefill tok/s | decode tok/s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(f"{x:.1f}" if isinstance(x, float) else str(x) for x in r) + " |")


if __name__ == "__main__":
    main()
