#!/usr/bin/env python3
"""The PyTorch side of bench/train_vs_torch.py: SO8T fine-tuning written with transformers + peft,
the way a practitioner does it today. LoRA on every projection, an SO(8) gate on every layer as a
forward pre-hook on o_proj (z'_b = ((1-α)I + α·exp(A_b)) z_b, A_b skew from 28 parameters), CE on
the target tokens + λ·PET on the final hidden states + L_orth, AdamW. Reads the rows so8t
tokenized (JSONL with input_ids/labels) and prints one JSON line: tokens/s over the timed steps.

  python bench/torch_train.py MODEL_DIR ROWS.jsonl --steps 20 --warmup 3 --threads 2
"""
import argparse
import json
import math
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IU = torch.triu_indices(8, 8, offset=1)


class So8Gate(torch.nn.Module):
    def __init__(self, width, scale, gen):
        super().__init__()
        self.nb = width // 8
        self.u = torch.nn.Parameter(torch.randn(self.nb, 28, generator=gen) * scale)
        self.alpha = 1.0

    def rotations(self):
        a = torch.zeros(self.nb, 8, 8)
        a[:, IU[0], IU[1]] = self.u
        return torch.linalg.matrix_exp(a - a.transpose(1, 2))

    def forward(self, z):
        r = self.rotations()
        m = (1 - self.alpha) * torch.eye(8) + self.alpha * r
        zb = z.reshape(*z.shape[:-1], self.nb, 8)
        return torch.einsum("...bj,bij->...bi", zb, m).reshape(z.shape)


def pet(h, mask):
    d = h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]
    valid = mask[:, 2:] * mask[:, 1:-1] * mask[:, :-2]
    n = valid.sum().clamp(min=1) * h.shape[-1]
    return ((d ** 2).sum(-1) * valid).sum() / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("rows")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = [json.loads(l) for l in open(a.rows)]
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    width = cfg.num_attention_heads * (cfg.hidden_size // cfg.num_attention_heads)
    gates = torch.nn.ModuleList()
    for layer in model.base_model.model.model.layers:
        g = So8Gate(width, 0.05, gen)
        gates.append(g)
        layer.self_attn.o_proj.register_forward_pre_hook(lambda mod, args, g=g: (g(args[0]),) + args[1:])
    params = [p for p in model.parameters() if p.requires_grad] + list(gates.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    total = a.warmup + a.steps
    times, tokens = [], 0
    for step in range(total):
        row = rows[step % len(rows)]
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor([row["labels"]])
        mask = torch.ones_like(ids, dtype=torch.float32)
        alpha = 0.382 + 0.618 * (1 - 1 / (1 + math.exp(-(step - total / 2) / (total / 8))))
        for g in gates:
            g.alpha = alpha
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=labels, output_hidden_states=True)
        loss = out.loss + 0.05 * pet(out.hidden_states[-1], mask)
        orth = 0.0
        for g in gates:
            r = g.rotations()
            orth = orth + ((r.transpose(1, 2) @ r - torch.eye(8)) ** 2).sum((1, 2)).mean()
        loss = loss + 1e-4 * orth / len(gates)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
            tokens += ids.shape[1]
    print(json.dumps({"tokens_per_s": tokens / sum(times), "steps": len(times),
                      "sec_per_step": sum(times) / len(times), "last_loss": loss.item()}))


if __name__ == "__main__":
    main()
