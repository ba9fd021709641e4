#!/usr/bin/env python3
"""RL step timings of `so8t rl` beside TRL's GRPOTrainer (bench/trl_grpo.py): same model, same
prompts, same batch (P prompts × G answers), answers forced to the same length, LoRA of the same
rank on the attention projections, β, one update per batch, the same dtype, device and thread count. Interleaved
runs, medians, a Markdown table.

  python bench/rl_vs_trl.py --so8t target/release/so8t --model /tmp/so8t-peers/models/smollm2-hf \
      --torch-python /tmp/peers/venv-torch/bin/python [--threads 2] [--steps 4] [--runs 2]
  python bench/rl_vs_trl.py --model builtin:tiny ...   # the embedded tiny Phi-3 (made by so8t)
  # on the GPU machine (bench/gpu-rl.sh): bf16 on CUDA, so8t through run-cuda.sh
  python3 bench/rl_vs_trl.py --so8t ".gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda" --device cuda --dtype bf16 \
      --torch-python python3 --model /tmp/phi35 --prompts 4 --group 8 --max-new 128

Rows: so8t GRPO without gates (what TRL does), so8t GRPO with SO(8) gates on every layer and α
annealing (the SO8T recipe), so8t PPO (value head, GAE; TRL 1.16 has no PPO trainer any more),
TRL GRPO. Columns: rollout tokens/s (tokens sampled / seconds sampling), update seconds per step
(everything else: reference and old log-probabilities, the loss, backward, AdamW), step seconds.
"""
import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["ALLOW", "ESCALATION", "DENY", "REFUSE"]
TOPICS = ["convert 68 degrees Fahrenheit to Celsius", "center a div with CSS", "sort a list in Python",
          "write a polite e-mail declining a meeting", "explain what a hash table is",
          "plan a three-day trip to Kyoto", "compute 17 times 23", "summarize the water cycle"]

CONFIG = """model: {model}
algorithm: {algo}
data:
  train: {prompts}
  format: tags
  max_prompt_len: 512
rollout:
  prompts_per_step: {p}
  group_size: {g}
  max_new_tokens: {n}
  min_new_tokens: {n}
  temperature: 1.0
ppo:
  epochs: 1
  minibatch_size: {batch}
  micro_batch_size: {micro}
kl:
  beta: 0.04
so8t:
  enabled: {gates}
  layer_indices: all
lora:
  enabled: true
  r: {rank}
  alpha: {alpha}
  dropout: 0.0
  target_modules: [{targets}]
optimizer:
  lr: 1.0e-5
  warmup_steps: 0
training:
  max_steps: {steps}
  seed: 42
  dtype: {dtype}
  device: {device}
checkpoint:
  every_steps: 0
  every_minutes: 0
"""


def write_prompts(path, n=16):
    """Short four-class chats (system + user; the assistant turn is not used as a prompt)."""
    with open(path, "w") as f:
        for i in range(n):
            msgs = [{"role": "system", "content": "Think inside <think-task>, then answer inside <final> "
                                                  "starting with 分類: and one of ALLOW, ESCALATION, DENY, REFUSE."},
                    {"role": "user", "content": f"Request {i}: please tell me how to {TOPICS[i % len(TOPICS)]}."},
                    {"role": "assistant", "content": f"<final>分類: {CLASSES[i % 4]}</final>"}]
            f.write(json.dumps({"id": f"rl{i:03d}", "four_class_label": CLASSES[i % 4], "messages": msgs},
                               ensure_ascii=False) + "\n")


class GpuPeak:
    """Peak GPU memory in use (nvidia-smi, every 0.2 s) while the block runs; None on CPU."""

    def __init__(self, on):
        self.on, self.peak, self.stop = on, None, threading.Event()

    def __enter__(self):
        if self.on:
            self.thread = threading.Thread(target=self.poll, daemon=True)
            self.thread.start()
        return self

    def poll(self):
        while not self.stop.is_set():
            try:
                mib = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                         capture_output=True, text=True, check=True).stdout.split()[0])
                self.peak = max(self.peak or 0, mib)
            except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
                return
            time.sleep(0.2)

    def __exit__(self, *_):
        self.stop.set()
        if self.on:
            self.thread.join()


def so8t_once(a, work, algo, gates):
    run_dir = os.path.join(work, f"run-{time.time_ns()}")
    cfg = os.path.join(work, "rl.yaml")
    p, g = (a.prompts, a.group) if algo == "grpo" else (a.prompts * a.group, 1)
    with open(cfg, "w") as f:
        f.write(CONFIG.format(model=a.model, algo=algo, prompts=os.path.join(work, "prompts.jsonl"), p=p, g=g,
                              n=a.max_new, batch=p * g, gates="true" if gates else "false", rank=a.rank,
                              alpha=2 * a.rank, targets=", ".join(a.targets), steps=a.warmup + a.steps,
                              dtype=a.dtype, device=a.device, micro=a.micro))
    with GpuPeak(a.device == "cuda") as mem:
        out = subprocess.run([*shlex.split(a.so8t), "--threads", str(a.threads), "rl", "--config", cfg,
                              "--run-dir", run_dir], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0"))
    if out.returncode != 0:
        raise SystemExit(f"so8t rl failed ({out.returncode}):\n{out.stderr[:3000]}")
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    timed = [m for m in lines if m["step"] > a.warmup]
    if a.model == "builtin:tiny" and not os.path.isdir(os.path.join(work, "tiny")):
        shutil.copytree(os.path.join(run_dir, "model"), os.path.join(work, "tiny"))
    shutil.rmtree(run_dir)
    n = len(timed)
    return {"rollout_tokens_per_s": sum(m["tokens"] for m in timed) / sum(m["rollout_secs"] for m in timed),
            "update_secs": sum(m["step_secs"] - m["rollout_secs"] for m in timed) / n,
            "step_secs": sum(m["step_secs"] for m in timed) / n,
            "tokens_per_step": sum(m["tokens"] for m in timed) / n, "peak_gib": mem.peak and mem.peak / 1024}


def trl_once(a, work):
    model = os.path.join(work, "tiny") if a.model == "builtin:tiny" else a.model
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads),
               TOKENIZERS_PARALLELISM="false")
    with GpuPeak(a.device == "cuda") as mem:
        out = subprocess.run([a.torch_python, os.path.join(HERE, "trl_grpo.py"), model,
                              os.path.join(work, "prompts.jsonl"), "--steps", str(a.steps), "--warmup",
                              str(a.warmup), "--prompts-per-step", str(a.prompts), "--group", str(a.group),
                              "--max-new", str(a.max_new), "--rank", str(a.rank), "--threads", str(a.threads),
                              "--targets", ",".join(a.targets), "--device", a.device, "--dtype", a.dtype],
                             capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"trl_grpo.py failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "peak_gib": mem.peak and mem.peak / 1024}


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "GPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", default="target/release/so8t", help="the so8t command (split like a shell)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (both trainers)")
    ap.add_argument("--dtype", default="f32", help="f32 | bf16 (both trainers)")
    ap.add_argument("--model", default="/tmp/so8t-peers/models/smollm2-hf")
    ap.add_argument("--torch-python", default="/tmp/peers/venv-torch/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=4, help="prompts per step (P)")
    ap.add_argument("--group", type=int, default=4, help="answers per prompt (G)")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--micro", type=int, default=0,
                    help="so8t's ppo.micro_batch_size (answers per forward/backward; 0: the whole batch)")
    ap.add_argument("--rows", default="grpo,gates,ppo,trl",
                    help="which trainers to run: grpo (so8t GRPO), gates (GRPO + SO(8) gates), ppo, trl")
    a = ap.parse_args()
    want = set(a.rows.split(","))
    tiny = a.model == "builtin:tiny"
    fused = tiny or json.load(open(os.path.join(a.model, "config.json"))).get("model_type") == "phi3"
    a.targets = ["qkv_proj", "o_proj"] if fused else ["q_proj", "k_proj", "v_proj", "o_proj"]
    work = tempfile.mkdtemp(prefix="so8t-rl-bench-")
    write_prompts(os.path.join(work, "prompts.jsonl"))
    rows = {"so8t GRPO": ("grpo", False, "grpo"), "so8t GRPO + SO(8) gates, α annealed": ("grpo", True, "gates"),
            "so8t PPO + SO(8) gates (value head, GAE)": ("ppo", True, "ppo")}
    rows = {k: v for k, v in rows.items() if v[2] in want}
    trl = "TRL 1.16 GRPOTrainer (transformers + peft)"
    res = {k: [] for k in [*rows, *([trl] if "trl" in want else [])]}
    for _ in range(a.runs):  # interleaved, so machine noise hits both alike
        for name, (algo, gates, _) in rows.items():
            res[name].append(so8t_once(a, work, algo, gates))
            print(name, json.dumps(res[name][-1]), flush=True)
        if trl in res:
            res[trl].append(trl_once(a, work))
            print(trl, json.dumps(res[trl][-1]), flush=True)
    label = "embedded tiny Phi-3 (hidden 64, 2 layers)" if tiny else os.path.basename(a.model.rstrip("/"))
    where = f"{os.cpu_count()} CPUs · {a.threads} threads" if a.device == "cpu" else gpu_name()
    print(f"\n{platform.node()} · {where} · {time.strftime('%Y-%m-%d')} · "
          f"{label} {a.dtype}, {a.prompts} prompts × {a.group} answers of {a.max_new} tokens per step, LoRA r={a.rank} on "
          f"{'/'.join(a.targets)}, β 0.04, one update per batch, {a.steps} timed steps after {a.warmup}, "
          f"median of {a.runs} runs\n")
    gpu = a.device == "cuda"
    print("| trainer | rollout tokens/s | update s/step | step s |" + (" peak GPU GiB |" if gpu else "") +
          "\n| --- | ---: | ---: | ---: |" + (" ---: |" if gpu else ""))
    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    base = res.get(trl)
    for who, rs in res.items():
        tps, upd, step = med(rs, "rollout_tokens_per_s"), med(rs, "update_secs"), med(rs, "step_secs")
        peak = f" {max(r['peak_gib'] or 0 for r in rs):.1f} |" if gpu else ""
        if base:
            print(f"| {who} | {tps:.0f} ({tps / med(base, 'rollout_tokens_per_s'):.2f}×) | "
                  f"{upd:.2f} ({med(base, 'update_secs') / upd:.2f}×) | "
                  f"{step:.2f} ({med(base, 'step_secs') / step:.2f}×) |{peak}")
        else:
            print(f"| {who} | {tps:.0f} | {upd:.2f} | {step:.2f} |{peak}")
    print("\n(×: speed relative to TRL, higher is faster)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
