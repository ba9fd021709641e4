#!/usr/bin/env python3
"""MMLU-style scoring speed: so8t eval in-process vs lm-eval (local-completions) against so8t serve
vs lm-eval against llama.cpp's llama-server, on the same items and GGUF, same machine, same run.

  python bench/eval_vs_lm_eval.py --so8t target/release/so8t [--peers /tmp/peers] [--items 100]

Writes N four-choice questions (deterministic arithmetic, lm-eval's MMLU prompt with a subject)
to a temporary JSONL, then times each way of scoring them (wall clock, model load included for
so8t eval; lm-eval's own start-up is included too, reported separately as the time to its first
request is not observable). Prints a Markdown table with items/s and whether the accuracies agree.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def items(n):
    out = []
    for i in range(n):
        a, b = 3 + i % 17, 5 + (i * 7) % 23
        right = a + b
        choices = [right, right + 1, right - 2, right + 10]
        rot = i % 4
        choices = choices[rot:] + choices[:rot]
        out.append({"id": f"q{i}", "subject": "elementary_mathematics",
                    "question": f"What is {a} + {b}?", "choices": [str(c) for c in choices],
                    "answer": choices.index(right)})
    return out


TASK_YAML = """task: bench_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


def lm_eval(peers, port, tasks_dir, out_dir, n):
    model_args = (f"model=smol,base_url=http://127.0.0.1:{port}/v1/completions,tokenizer_backend=huggingface,"
                  f"tokenizer={peers}/models/smollm2-hf-tokenizer,num_concurrent=1,max_retries=1")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=os.path.join(out_dir, "hf"))
    t0 = time.time()
    p = subprocess.run([f"{peers}/venv/bin/lm_eval", "--model", "local-completions", "--model_args", model_args,
                        "--tasks", "bench_mmlu", "--include_path", tasks_dir, "--output_path", out_dir],
                       capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode != 0:
        return None, wall, (p.stderr.strip().splitlines() or ["failed"])[-1][:160]
    for root, _, files in os.walk(out_dir):
        for f in files:
            if f.startswith("results") and f.endswith(".json"):
                r = json.load(open(os.path.join(root, f)))
                return r["results"]["bench_mmlu"]["acc,none"], wall, ""
    return None, wall, "no results file"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", required=True)
    ap.add_argument("--peers", default="/tmp/peers")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gguf", default=None)
    a = ap.parse_args()
    gguf = a.gguf or f"{a.peers}/models/smollm2-135m-q8_0.gguf"
    tmp = tempfile.mkdtemp(prefix="so8t-evalbench-")
    data = os.path.join(tmp, "mmlu.jsonl")
    with open(data, "w") as f:
        for it in items(a.items):
            f.write(json.dumps(it) + "\n")
    tasks_dir = os.path.join(tmp, "tasks")
    os.makedirs(tasks_dir)
    open(os.path.join(tasks_dir, "bench_mmlu.yaml"), "w").write(TASK_YAML.format(data=data))
    rows = []

    t0 = time.time()
    subprocess.run([a.so8t, "eval", "--model", gguf, "--task", f"mmlu={data}", "--threads", str(a.threads),
                    "--out", os.path.join(tmp, "inproc")], check=True, capture_output=True)
    wall = time.time() - t0
    acc = json.load(open(os.path.join(tmp, "inproc", "summary.json")))["mmlu"]["acc"]
    rows.append(("so8t eval (in-process)", acc, wall, ""))

    port = free_port()
    srv = subprocess.Popen([a.so8t, "serve", "--port", str(port), "--threads", str(a.threads),
                            "--store", os.path.join(tmp, "store"), "--model", f"smol={gguf}", "--no-audit"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/version", srv)
        acc, wall, note = lm_eval(a.peers, port, tasks_dir, os.path.join(tmp, "lm_so8t"), a.items)
        rows.append(("lm-eval → so8t serve", acc, wall, note))
    finally:
        srv.terminate()
        srv.wait()

    port = free_port()
    srv = subprocess.Popen([f"{a.peers}/bin/llama-server", "-m", gguf, "--port", str(port), "-t", str(a.threads)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", srv)
        acc, wall, note = lm_eval(a.peers, port, tasks_dir, os.path.join(tmp, "lm_llama"), a.items)
        rows.append(("lm-eval → llama-server", acc, wall, note))
    finally:
        srv.terminate()
        srv.wait()

    print(f"machine: {os.uname().nodename} {os.cpu_count()} cpus, threads {a.threads}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {a.items} items, {os.path.basename(gguf)}")
    print("| scorer | acc | wall s | items/s | note |")
    print("|---|---|---|---|---|")
    for name, acc, wall, note in rows:
        accs = "n/a" if acc is None else f"{acc:.4f}"
        rate = "n/a" if acc is None else f"{a.items / wall:.1f}"
        print(f"| {name} | {accs} | {wall:.1f} | {rate} | {note} |")


if __name__ == "__main__":
    sys.exit(main())
