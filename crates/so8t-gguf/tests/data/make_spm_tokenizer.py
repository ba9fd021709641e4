#!/usr/bin/env python3
"""Writes OUT/tokenizer.json: a Llama-2 / Phi-3 style SentencePiece BPE (▁ for spaces, a
prepended ▁, byte fallback with <0xXX> tokens, <unk> <s> </s>), trained with HF `tokenizers` on
a small EN/JA/emoji corpus to VOCAB tokens — the vocabulary kind llama.cpp calls `llama`.

  python make_spm_tokenizer.py OUT VOCAB
"""
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, trainers

out, vocab = sys.argv[1], int(sys.argv[2])
corpus = [
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog.",
    "Hello world! Rotation gates act on eight-dimensional blocks of the hidden state.",
    "日本の首都は東京です。今日は良い天気ですね。機械学習のモデルを訓練します。",
    "Numbers 3 33 333 3333 and emoji 🚀 🦙 are common in chats.",
] * 50
specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                 decoders.Strip(" ", 1, 0)])
trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, limit_alphabet=120,
                              show_progress=False)
tok.train_from_iterator(corpus, trainer)
tok.save(f"{out}/tokenizer.json")
print(tok.get_vocab_size())
