#!/usr/bin/env python3
"""llama.cpp's tokenizer for a GGUF file (vocab only), for the GGUF tokenizer tests. Reads
{"gguf": PATH, "texts": [...]} on stdin, prints one JSON object:

  n_vocab, bos, eos, add_bos, eog (ids llama.cpp's llama_vocab_is_eog accepts),
  texts: [{"plain": ids (add_special=False), "bos": ids (add_special=True)}] (parse_special=True),
  pieces_special / pieces: hex of llama_token_to_piece(id, lstrip=0, special=True / False) for
  every id.
"""
import ctypes
import json
import sys

import llama_cpp
from llama_cpp import Llama


def piece(vocab, tok, special, buf):
    n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, tok, buf, len(buf), 0, special)
    return bytes(buf[:n]).hex()


def main():
    req = json.load(sys.stdin)
    llm = Llama(model_path=req["gguf"], vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(256)
    out = {
        "n_vocab": n,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "eog": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "texts": [
            {
                "plain": llm.tokenize(t.encode("utf-8"), add_bos=False, special=True),
                "bos": llm.tokenize(t.encode("utf-8"), add_bos=True, special=True),
            }
            for t in req["texts"]
        ],
        "pieces_special": [piece(vocab, i, True, buf) for i in range(n)],
        "pieces": [piece(vocab, i, False, buf) for i in range(n)],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
