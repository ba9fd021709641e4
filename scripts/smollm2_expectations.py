#!/usr/bin/env python3
"""Write what HF transformers produces for a model folder, for so8t's tests to compare with:
token ids of English / Japanese / emoji strings and chat-template renderings.

  python smollm2_expectations.py MODEL_DIR OUT.json
"""
import json
import os
import sys

from transformers import AutoTokenizer

STRINGS = [
    "What is the capital of France?",
    "Hello, world! It's 2026-11-23; prices rose 3.5% (¥1,200 → ¥1,242).",
    "日本の首都は東京です。安全な質問には丁寧に答えます。",
    "カタカナとひらがな、漢字が混ざった文：ＳＯ８Ｔは回転ゲートを使う。",
    "Emoji: 😀👍🏽 🇯🇵 👨‍👩‍👧‍👦 and ✨sparkles✨",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "<|im_start|>user\nspecial tokens inline<|im_end|>",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a careful assistant."},
     {"role": "user", "content": "日本の首都はどこですか？"},
     {"role": "assistant", "content": "東京です。"},
     {"role": "user", "content": "Thanks! 😀"}],
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(model_dir)
    strings = [{"text": s, "ids": tok(s)["input_ids"],
                "ids_no_special": tok(s, add_special_tokens=False)["input_ids"]} for s in STRINGS]
    chats = []
    for msgs in CHATS:
        for gen in (True, False):
            chats.append({"messages": msgs, "add_generation_prompt": gen,
                          "rendered": tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)})
    # so8t's built-in Phi-3.5 template (the default of `so8t model init`), rendered by transformers.
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "../crates/so8t-model/assets/phi35_chat_template.jinja"), encoding="utf-8") as f:
        phi35 = f.read()
    phi35_chats = []
    for msgs in CHATS:
        for gen in (True, False):
            phi35_chats.append({"messages": msgs, "add_generation_prompt": gen, "rendered": tok.apply_chat_template(
                msgs, chat_template=phi35, tokenize=False, add_generation_prompt=gen)})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model_dir": model_dir, "strings": strings, "chats": chats, "phi35_chats": phi35_chats},
                  f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
