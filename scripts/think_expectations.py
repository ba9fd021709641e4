#!/usr/bin/env python3
"""Render `so8t data think` chats with HF transformers' `apply_chat_template`, for so8t's tests
to compare its own renderings with (spec §4: the text must equal transformers' rendering).

  python think_expectations.py TOKENIZER_DIR STEPS.jsonl TAGS.jsonl OUT.jsonl

Picks the first English and the first Japanese record of each class from each file, renders the
messages with so8t's built-in Phi-3.5 template (eos `<|endoftext|>`, as Phi-3.5's tokenizer has)
and with TOKENIZER_DIR's own template (e.g. SmolLM2's ChatML), both with and without the
generation prompt (the prompt rendering is what training masks are found from).
"""
import json
import os
import sys

from transformers import AutoTokenizer


def main():
    tok_dir, steps, tags, out = sys.argv[1:5]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "../crates/so8t-model/assets/phi35_chat_template.jinja"), encoding="utf-8") as f:
        phi35 = f.read()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    own = tok.chat_template
    rows = []
    for path in (steps, tags):
        seen = set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                key = (r["four_class_label"], r["lang"])
                if key in seen:
                    continue
                seen.add(key)
                msgs = r["messages"]
                eos = tok.eos_token
                tok.eos_token = "<|endoftext|>"
                phi = tok.apply_chat_template(msgs, chat_template=phi35, tokenize=False)
                phi_prompt = tok.apply_chat_template(msgs[:-1], chat_template=phi35, tokenize=False,
                                                     add_generation_prompt=True)
                tok.eos_token = eos
                rows.append({
                    "id": r["id"], "format": r["format"], "messages": msgs,
                    "phi35": phi, "phi35_prompt": phi_prompt,
                    "own": tok.apply_chat_template(msgs, tokenize=False),
                    "own_prompt": tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True),
                })
    with open(out, "w", encoding="utf-8") as f:
        f.write(json.dumps({"own_template": own, "own_bos": tok.bos_token, "own_eos": tok.eos_token},
                           ensure_ascii=False) + "\n")
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
