#!/usr/bin/env python3
"""Training tokens/s and peak RSS of `so8t train` beside PyTorch (transformers + peft), same model,
same rows, same config, same thread count, interleaved runs, medians as a Markdown table.

The rows: the bundled sample's chats are longer than 256 tokens (so8t drops a chat whose `分類:`
line does not fit), so this script writes short synthetic /think-style chats (`CHATS` below, 60–200
tokens each) that so8t tokenizes and packs into rows of at most 256 tokens.

Config on both sides: SmolLM2-135M-Instruct in f32, LoRA r=16 (alpha 32, no dropout) on every
projection, an SO(8) gate on every layer (PyTorch: a forward pre-hook on o_proj), CE + λ·PET +
L_orth, AdamW, batch 1 of packed 256-token rows. so8t tokenizes the chats (the rows land in its run
folder) and the PyTorch side trains on exactly those rows (bench/torch_train.py).

  python bench/train_vs_torch.py --so8t target/release/so8t --model /tmp/so8t-peers/models/smollm2-hf \
      --torch-python /tmp/peers/venv-torch/bin/python [--threads 2] [--steps 20] [--runs 2]

Peak RSS is each process's own maximum resident set (wait4's ru_maxrss).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG = """model: {model}
data:
  train: {chats}
  max_seq_len: {seq}
  packing: true
so8t:
  enabled: true
  layer_indices: all
pet:
  enabled: true
lora:
  enabled: true
  r: {rank}
  alpha: {alpha}
  dropout: 0.0
  target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
optimizer:
  lr: 1.0e-4
  warmup_steps: 0
training:
  batch_size: 1
  gradient_accumulation_steps: 1
  max_steps: {steps}
  dtype: f32
  gradient_checkpointing: {ckpt}
checkpoint:
  every_steps: 0
  every_minutes: 0
"""


TOPICS = ["convert 68 degrees Fahrenheit to Celsius", "center a div with CSS", "sort a list in Python",
          "write a polite e-mail declining a meeting", "explain what a hash table is",
          "plan a three-day trip to Kyoto", "compute 17 times 23", "summarize the water cycle",
          "choose a name for a bakery", "fix a flat bicycle tyre", "learn the basics of chess",
          "explain compound interest"]
CLASSES = ["ALLOW", "ESCALATION", "DENY", "REFUSE"]


def write_chats(path, n=96):
    """Deterministic short chats in the OpenAI `messages` format with a `分類:` line."""
    with open(path, "w") as f:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            cls = CLASSES[i % len(CLASSES)]
            steps = " ".join(f"Step {k + 1}: think about part {k + 1} of how to {topic} and check it."
                             for k in range(1 + i % 7))
            msgs = [{"role": "system", "content": "Think inside <think-task>, classify the request, "
                                                  "then answer inside <final> starting with 分類."},
                    {"role": "user", "content": f"Request {i}: please tell me how to {topic}."},
                    {"role": "assistant", "content": f"<think-task>The user wants to {topic}. {steps}"
                                                     f"</think-task><final>分類: {cls}\nHere is how to {topic}: "
                                                     f"{steps}</final>"}]
            f.write(json.dumps({"id": f"bench{i:03d}", "messages": msgs}, ensure_ascii=False) + "\n")


def run_measured(cmd, env=None):
    """Runs cmd and returns (stdout, peak RSS MiB) using wait4 on exactly that child."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env or os.environ)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {os.waitstatus_to_exitcode(status)}")
    return b"".join(chunks).decode(), ru.ru_maxrss / 1024.0


def so8t_once(a, so8t, work, ckpt):
    run_dir = os.path.join(work, f"run-{time.time_ns()}")
    cfg = os.path.join(work, "train.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(model=a.model, chats=os.path.join(work, "chats.jsonl"), seq=a.seq, rank=a.rank, alpha=2 * a.rank,
                              steps=a.warmup + a.steps, ckpt="true" if ckpt else "false"))
    _, rss = run_measured([so8t, "--threads", str(a.threads), "train", "--config", cfg, "--run-dir", run_dir])
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    timed_steps = [m for m in lines if m["step"] > a.warmup]
    secs = sum(m["tokens"] / m["tokens_per_s"] for m in timed_steps)
    toks = sum(m["tokens"] for m in timed_steps)
    rows = os.path.join(run_dir, "data", "train_tokens.jsonl")
    keep = os.path.join(work, "rows.jsonl")
    shutil.copy(rows, keep)
    shutil.rmtree(run_dir)
    return toks / secs, rss, keep


def torch_once(a, rows):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    out, rss = run_measured([a.torch_python, os.path.join(HERE, "torch_train.py"), a.model, rows,
                             "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
                             "--rank", str(a.rank)], env)
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"], rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", nargs="+", default=["target/release/so8t"],
                    help="one or more so8t binaries (several: each is a row, e.g. before/after a change)")
    ap.add_argument("--model", default="/tmp/so8t-peers/models/smollm2-hf")
    ap.add_argument("--torch-python", default="/tmp/peers/venv-torch/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--with-checkpointing", action="store_true",
                    help="also run so8t with gradient checkpointing")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="so8t-train-bench-")
    write_chats(os.path.join(work, "chats.jsonl"))
    names = {b: ("so8t" if len(a.so8t) == 1 else f"so8t ({b})") for b in a.so8t}
    res = {}
    for b in a.so8t:
        res[names[b]] = []
        if a.with_checkpointing:
            res[names[b] + ", gradient checkpointing"] = []
    res["PyTorch (transformers + peft)"] = []
    for _ in range(a.runs):  # interleaved, so machine noise hits all alike
        for b in a.so8t:
            tps, rss, rows = so8t_once(a, b, work, False)
            res[names[b]].append((tps, rss))
            if a.with_checkpointing:
                res[names[b] + ", gradient checkpointing"].append(so8t_once(a, b, work, True)[:2])
        res["PyTorch (transformers + peft)"].append(torch_once(a, rows))
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · {a.threads} threads · {time.strftime('%Y-%m-%d')} · "
          f"SmolLM2-135M f32, LoRA r={a.rank} + SO(8) gates on all layers + PET, seq {a.seq}, batch 1, "
          f"{a.steps} timed steps after {a.warmup}, median of {a.runs} runs\n")
    print("| trainer | tokens/s | peak RSS (MiB) |\n| --- | ---: | ---: |")
    base = statistics.median(t for t, _ in res["PyTorch (transformers + peft)"])
    for who, rs in res.items():
        tps = statistics.median(t for t, _ in rs)
        rss = statistics.median(r for _, r in rs)
        print(f"| {who} | {tps:.1f} ({tps / base:.2f}×) | {rss:.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
