#!/usr/bin/env python3
"""Correctness of so8t on a CUDA GPU, run on the GPU machine (no PyTorch needed).

1. The reference fixtures' logits (plain and SO(8)-gated, made by HF transformers in f32) from
   `so8t model logits --device cuda` in f32 (tolerance 1e-4 absolute, as on the CPU) and in bf16
   (tolerance: 3 % of the logits' range, bf16 keeps 8 bits of mantissa through every layer).
2. The serve engine on CUDA (`so8t bench infer --check`: candle's kernels on the GPU against the
   native CPU engine, half the tokens as one prompt pass and the rest one token a pass) on the
   fixture folders: f32 within 1e-4 of the largest logit, bf16 within 5 %.
3. A few training steps of the tiny model (examples/train-tiny.yaml, f32) on the CPU and on CUDA
   in the same call: the per-step losses agree within 1e-3 relative.
4. The same in bf16 on CUDA, batches of 4 padded rows, unpacked and packed: the flash attention
   kernels against cuBLAS scores + additive mask (SO8T_FLASH=0), losses within 3e-2 relative.

  python3 bench/gpu_check.py --so8t '.gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda' \
      --fixtures .gpu-bin/fixtures [--steps 5]

Prints one line per check and `ALL OK` or the failures; exits 1 on a failure.
"""
import argparse
import json
import os
import shlex
import sqlite3
import subprocess
import sys
import tempfile

FAILED = []


def check(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def logits(so8t, model, ids, device, dtype, gates=None):
    cmd = so8t + ["model", "logits", "--model", model, "--ids", ",".join(map(str, ids)),
                  "--device", device, "--dtype", dtype, "--json"]
    if gates:
        cmd += ["--gates", gates, "--alpha", "0.75"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["logits"]


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def span(a):
    flat = [x for r in a for x in r]
    return max(flat) - min(flat)


def fixtures(so8t, root):
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        ref_path = os.path.join(d, "reference.json")
        if not os.path.exists(ref_path):
            continue
        ref = json.load(open(ref_path))
        gates = os.path.join(d, "so8t_gates.safetensors")
        runs = [("plain", None, ref["cases"])]
        if "so8t" in ref and os.path.exists(gates):
            runs.append(("gated", gates, ref["so8t"]["cases"]))
        for kind, g, cases in runs:
            for i, case in enumerate(cases):
                want = case["logits"]
                got = logits(so8t, d, case["input_ids"], "cuda", "f32", g)
                e = max_diff(got, want)
                check(f"{name} {kind} case {i} f32", e < 1e-4, f"max |Δ| {e:.2e} (tolerance 1e-4)")
                got = logits(so8t, d, case["input_ids"], "cuda", "bf16", g)
                e, s = max_diff(got, want), span(want)
                check(f"{name} {kind} case {i} bf16", e < 0.03 * s,
                      f"max |Δ| {e:.3f} of a {s:.2f} range (tolerance 3 %)")


def engine(so8t, root):
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "reference.json")):
            continue
        for dtype, tol in [("f32", 1e-4), ("bf16", 0.05)]:
            out = subprocess.run(so8t + ["bench", "infer", "--model", d, "--device", "cuda", "--dtype",
                                         dtype, "--check", "--prompt", "16", "--json"],
                                 check=True, capture_output=True, text=True).stdout
            g = json.loads(out)
            check(f"{name} serve engine {dtype}", g["max_rel"] < tol,
                  f"vs the native CPU engine: max |Δ|/max|logit| {g['max_rel']:.2e} (tolerance {tol:g}), "
                  f"same top token {100 * g['top1']:.0f} %")


def losses(run_dir):
    db = sqlite3.connect(f"file:{os.path.join(run_dir, 'run.db')}?mode=ro", uri=True)
    return [r[0] for r in db.execute("SELECT loss FROM metrics ORDER BY step")]


def training(so8t, steps, config):
    with tempfile.TemporaryDirectory() as tmp:
        seqs = {}
        for dev in ["cpu", "cuda"]:
            rd = os.path.join(tmp, dev)
            subprocess.run(so8t + ["train", "--config", config, "--run-dir", rd,
                                   "--max-steps", str(steps), "--device", dev],
                           check=True, capture_output=True, text=True)
            seqs[dev] = losses(rd)
        cpu, gpu = seqs["cpu"], seqs["cuda"]
        rel = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(cpu, gpu)) if cpu else 1.0
        check(f"train-tiny {steps} steps cpu vs cuda (f32)", len(cpu) == len(gpu) == steps and rel < 1e-3,
              f"losses cpu {[round(x, 5) for x in cpu]} cuda {[round(x, 5) for x in gpu]}, "
              f"max relative difference {rel:.2e} (tolerance 1e-3)")


def flash_training(so8t, steps, config):
    """bf16 training of the tiny model (heads of 16) on CUDA with the flash attention kernels
    against the same run with them off (SO8T_FLASH=0: cuBLAS scores + additive mask), with
    padded batches of 4 rows, unpacked and packed (windows of sequences and padding)."""
    base = open(config).read()
    for packing in ["false", "true"]:
        text = (base.replace("dtype: f32", "dtype: bf16")
                .replace("batch_size: 1", "batch_size: 4")
                .replace("packing: false", f"packing: {packing}"))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "train.yaml")
            with open(cfg, "w") as f:
                f.write(text)
            seqs = {}
            for flash in ["1", "0"]:
                rd = os.path.join(tmp, f"flash{flash}")
                env = dict(os.environ, SO8T_FLASH=flash)
                subprocess.run(so8t + ["train", "--config", cfg, "--run-dir", rd,
                                       "--max-steps", str(steps), "--device", "cuda"],
                               check=True, capture_output=True, text=True, env=env)
                seqs[flash] = losses(rd)
            on, off = seqs["1"], seqs["0"]
            rel = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(on, off)) if on else 1.0
            check(f"train-tiny bf16 flash vs cuBLAS attention (packing {packing})",
                  len(on) == len(off) == steps and rel < 3e-2,
                  f"losses flash {[round(x, 5) for x in on]} cuBLAS {[round(x, 5) for x in off]}, "
                  f"max relative difference {rel:.2e} (tolerance 3e-2)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", required=True, help="command that runs the CUDA build")
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--config", default="examples/train-tiny.yaml")
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    so8t = shlex.split(a.so8t)
    fixtures(so8t, a.fixtures)
    engine(so8t, a.fixtures)
    training(so8t, a.steps, a.config)
    flash_training(so8t, a.steps, a.config)
    print("ALL OK" if not FAILED else f"FAILED: {', '.join(FAILED)}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
