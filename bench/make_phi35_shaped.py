#!/usr/bin/env python3
"""A Phi-3.5-mini-shaped random model (phi3 layout: hidden 3072, 32 layers, 32 heads, ffn 8192,
bf16, ≈3.9 B parameters) that llama.cpp's convert_hf_to_gguf.py also accepts: it borrows
SmolLM2's byte-level BPE tokenizer (49152 tokens, a vocabulary llama.cpp recognizes) instead of
Phi-3.5's SentencePiece model, which is not on this machine. Written shard by shard (2 GB), so
memory stays low. Needs torch + safetensors (the peers' venv-torch).

  /tmp/peers/venv-torch/bin/python bench/make_phi35_shaped.py --tokenizer /tmp/so8t-peers/models/smollm2-hf OUT
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokenizer", default="/tmp/so8t-peers/models/smollm2-hf")
    ap.add_argument("--layers", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    h, ff, nh, vocab, L = 3072, 8192, 32, 49152, a.layers
    cfg = {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": h,
        "intermediate_size": ff, "num_hidden_layers": L, "num_attention_heads": nh,
        "num_key_value_heads": nh, "hidden_act": "silu", "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "vocab_size": vocab, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 2, "sliding_window": 2047, "torch_dtype": "bfloat16",
        "attention_bias": False, "rope_scaling": None,
    }
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    for f in ["tokenizer.json", "chat_template.jinja", "special_tokens_map.json"]:
        p = os.path.join(a.tokenizer, f)
        if os.path.exists(p):
            shutil.copy(p, a.out)
    tc = json.load(open(os.path.join(a.tokenizer, "tokenizer_config.json")))
    tc["tokenizer_class"] = "GPT2Tokenizer"
    json.dump(tc, open(os.path.join(a.out, "tokenizer_config.json"), "w"), indent=2)
    torch.manual_seed(0)
    shapes = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(L):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.qkv_proj.weight", (3 * h, h)),
                   (p + "self_attn.o_proj.weight", (h, h)), (p + "post_attention_layernorm.weight", (h,)),
                   (p + "mlp.gate_up_proj.weight", (2 * ff, h)), (p + "mlp.down_proj.weight", (h, ff))]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    shard, size, n, index = {}, 0, 0, {}
    def flush():
        nonlocal shard, size, n
        if shard:
            n += 1
            name = f"model-{n:05d}.safetensors"
            save_file(shard, os.path.join(a.out, name), metadata={"format": "pt"})
            for k in shard:
                index[k] = name
            shard, size = {}, 0
    for name, shape in shapes:
        t = torch.ones(shape, dtype=torch.bfloat16) if len(shape) == 1 else (torch.randn(shape) * 0.02).to(torch.bfloat16)
        shard[name] = t
        size += t.numel() * 2
        if size > 2 << 30:
            flush()
    flush()
    total = sum(torch.Size(s).numel() for _, s in shapes)
    json.dump({"metadata": {"total_size": total * 2}, "weight_map": index},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    print(f"{a.out}: {total / 1e9:.2f} B parameters in {n} shards")


if __name__ == "__main__":
    main()
