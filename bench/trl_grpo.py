#!/usr/bin/env python3
"""TRL's GRPOTrainer on the prompts `rl_vs_trl.py` gives so8t, with the same settings; prints one
JSON line of timings. Runs in the torch venv (torch, transformers, peft, trl, datasets).

  python bench/trl_grpo.py MODEL_DIR PROMPTS.jsonl --steps 6 --warmup 1 --prompts-per-step 4 --group 4 \
      --max-new 64 --rank 16 --threads 2 [--targets q_proj,k_proj,v_proj,o_proj] [--device cpu|cuda] [--dtype f32|bf16]

Per step: the wall time (a trainer callback), the time inside `generate` (the policy's generate
wrapped) and the tokens it produced. Answers are forced to `max-new` tokens (min_new_tokens), as
`so8t rl` does with rollout.min_new_tokens, so both sides sample and train on the same shapes.
The reward is the class term of so8t's four-class reward (the `分類:` line's class is the label);
its cost is negligible beside generation and the update.
"""
import argparse
import json
import re
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj", help="LoRA target modules")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    rows = [json.loads(l) for l in open(a.prompts)]
    data = Dataset.from_list([{"prompt": [m for m in r["messages"] if m["role"] != "assistant"],
                               "label": r["four_class_label"]} for r in rows])

    def reward_class(completions, label, **_):
        out = []
        for c, want in zip(completions, label):
            text = c[0]["content"] if isinstance(c, list) else c
            m = re.search(r"分類\s*[:：]\s*([A-Z]+)", text)
            out.append(1.0 if m and m.group(1) == want else 0.0)
        return out

    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype).to(a.device)
    batch = a.prompts_per_step * a.group
    cfg = GRPOConfig(
        output_dir="/tmp/trl-grpo-bench", max_steps=a.warmup + a.steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, num_generations=a.group, max_completion_length=a.max_new,
        generation_kwargs={"min_new_tokens": a.max_new}, temperature=1.0, top_p=1.0, top_k=0,
        beta=a.beta, num_iterations=1, learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no", seed=42,
        use_cpu=a.device == "cpu", bf16=a.dtype == "bf16", dataloader_num_workers=0, shuffle_dataset=True,
        gradient_checkpointing=False,  # TRL turns it on by default; so8t rl does not checkpoint
    )
    lora = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                      target_modules=a.targets.split(","), task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward_class, args=cfg, train_dataset=data,
                          processing_class=tok, peft_config=lora)

    gen = {"secs": 0.0, "tokens": 0}
    policy = trainer.model
    inner = policy.generate

    def timed_generate(*args, **kw):
        t0 = time.perf_counter()
        out = inner(*args, **kw)
        if a.device == "cuda":
            torch.cuda.synchronize()
        gen["secs"] += time.perf_counter() - t0
        ids = kw.get("input_ids", args[0] if args else None)
        seqs = out.sequences if hasattr(out, "sequences") else out
        gen["tokens"] += (seqs.shape[1] - ids.shape[1]) * seqs.shape[0]
        return out

    policy.generate = timed_generate
    steps = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_args, **_kw):
            self.t0 = time.perf_counter()
            gen["secs"], gen["tokens"] = 0.0, 0

        def on_step_end(self, *_args, **_kw):
            if a.device == "cuda":
                torch.cuda.synchronize()
            steps.append({"step_secs": time.perf_counter() - self.t0, "rollout_secs": gen["secs"],
                          "tokens": gen["tokens"]})

    trainer.add_callback(Clock())
    trainer.train()
    timed = steps[a.warmup:]
    if not timed or any(s["tokens"] == 0 for s in timed):
        raise SystemExit(f"generation was not timed: {steps}")
    n = len(timed)
    print(json.dumps({
        "steps": n,
        "rollout_tokens_per_s": sum(s["tokens"] for s in timed) / sum(s["rollout_secs"] for s in timed),
        "update_secs": sum(s["step_secs"] - s["rollout_secs"] for s in timed) / n,
        "step_secs": sum(s["step_secs"] for s in timed) / n,
        "tokens_per_step": sum(s["tokens"] for s in timed) / n,
    }))


if __name__ == "__main__":
    main()
