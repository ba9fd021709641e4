#!/usr/bin/env python3
# The PyTorch side of the GPU training comparison, as the workplace provides it in
# shared/gpu/torch_so8t_bench.py (kept here unchanged so it travels with the tree to the GPU machine).
"""PyTorch reference for the SO8T SFT step at Phi-3.5-mini scale (the anchor so8t's GPU trainer is held to).

  python torch_so8t_bench.py [--seq 1024] [--batch 4] [--ckpt 0|1] [--layers 32] [--steps 10]

Random-init Phi3ForCausalLM with Phi-3.5-mini's shapes (hidden 3072, 32 layers, 32 heads, ffn 8192,
vocab 32064) in bf16 on the GPU, frozen; PEFT LoRA r=64 alpha=128 on qkv_proj, o_proj, gate_up_proj,
down_proj; an SO(8) gate on every layer as a forward pre-hook on o_proj (generators [384, 28] f32,
R = matrix_exp in f32, alpha blend 0.75); loss = CE + PET (final hidden states, lambda 0.05) + orth
diagnostic; AdamW on the trainable parameters; sdpa attention. Prints tokens/s, peak memory, MFU.
"""
import argparse
import threading
import time

import torch
import torch.nn.functional as F
from transformers import Phi3Config, Phi3ForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--ckpt", type=int, default=0)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lora", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    cfg = Phi3Config(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=a.layers,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                     original_max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
                     attn_implementation="sdpa")
    t0 = time.time()
    with torch.device(dev):
        model = Phi3ForCausalLM(cfg).to(torch.bfloat16)
    n_base = sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    if a.lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, lora_dropout=0.0,
                                                 target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]))
    if a.ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    H, nb = 3072, 3072 // 8
    iu = torch.triu_indices(8, 8, offset=1, device=dev)
    gens = []
    alpha = 0.75

    def make_hook(u):
        def hook(mod, args):
            (z,) = args
            U = torch.zeros(nb, 8, 8, device=dev, dtype=torch.float32)
            U[:, iu[0], iu[1]] = u
            R = torch.linalg.matrix_exp(U - U.transpose(1, 2))
            M = (1 - alpha) * torch.eye(8, device=dev) + alpha * R
            B, T, _ = z.shape
            zb = z.float().reshape(B, T, nb, 8)
            return (torch.einsum("nij,btnj->btni", M, zb).reshape(B, T, H).to(z.dtype),)
        return hook

    base = model.get_base_model() if a.lora else model
    for layer in base.model.layers:
        u = torch.nn.Parameter(0.05 * torch.randn(nb, 28, device=dev))
        gens.append(u)
        layer.self_attn.o_proj.register_forward_pre_hook(make_hook(u))
    params = [p for p in model.parameters() if p.requires_grad] + gens
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    print(f"built in {time.time() - t0:.1f}s: base {n_base / 1e9:.2f}B params, trainable {n_train / 1e6:.1f}M, "
          f"seq {a.seq} batch {a.batch} ckpt {a.ckpt} lora {a.lora}", flush=True)
    ids = torch.randint(0, 32064, (a.batch, a.seq), device=dev)

    def step():
        out = model(input_ids=ids, output_hidden_states=True)
        logits = out.logits
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
        h = out.hidden_states[-1].float()
        d = h[:, 2:] - 2 * h[:, 1:-1] + h[:, :-2]
        pet = 0.05 * (d * d).mean()
        loss = ce + pet
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    # The device's used memory (total - free, sampled every 5 ms: context, cuBLAS workspaces and
    # the caching allocator's reserve included), measured as `so8t bench train` measures its own.
    device_peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            free, total = torch.cuda.mem_get_info()
            device_peak[0] = max(device_peak[0], total - free)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.time()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.time() - t) / a.steps
    done.set()
    sampler.join()
    tok = a.batch * a.seq / dt
    # model FLOPs per token (recomputation not counted): forward 2N + input-gradients 2N (the base is
    # frozen, so no weight gradients) + attention 12·L·T·H (forward 4·L·T·H, backward twice that)
    flops = tok * (4 * n_base + 12 * a.layers * a.seq * H)
    print(f"RESULT seq={a.seq} batch={a.batch} ckpt={a.ckpt} lora={a.lora}: {dt * 1000:.0f} ms/step, "
          f"{tok:.0f} tokens/s, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB "
          f"(device {device_peak[0] / 2**30:.1f} GiB), "
          f"~{flops / 1e12:.0f} TFLOP/s model flops (MFU {flops / 989e12 * 100:.0f}% of 989 dense bf16), loss {loss.item():.3f}",
          flush=True)


if __name__ == "__main__":
    main()
