#!/usr/bin/env python3
"""llama.cpp's view of a GGUF file, for the export tests: loads it with llama-cpp-python (F32 KV
cache), evaluates token ids and prints the logits of every position, and tokenizes texts with
the file's own vocabulary. Prints one JSON object.

  python llama_cpp_peer.py FILE.gguf --ids 1,2,3 --texts '["Hello", "日本"]' [--lora ADAPTER.gguf]
"""
import argparse
import json

import numpy as np
from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--ids", default="")
    ap.add_argument("--texts", default="[]")
    ap.add_argument("--lora", default=None, help="a GGUF LoRA adapter to apply (scale 1)")
    a = ap.parse_args()
    llm = Llama(model_path=a.gguf, n_ctx=512, logits_all=True, verbose=False, n_threads=2,
                type_k=0, type_v=0, lora_path=a.lora)  # GGML_TYPE_F32 KV cache
    out = {"arch": llm.metadata.get("general.architecture"), "n_vocab": llm.n_vocab()}
    if a.ids:
        ids = [int(x) for x in a.ids.split(",")]
        llm.reset()
        llm.eval(ids)
        out["logits"] = np.asarray(llm.scores[: len(ids)], dtype=np.float64).tolist()
    out["tokens"] = [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in json.loads(a.texts)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
