#!/usr/bin/env bash
# Inference on a GPU, in one run: so8t's serve engine (`so8t bench infer`, candle's kernels on the
# GGUF blocks) on the Phi-3.5-mini-shaped model as BF16 and Q4_K_M GGUF files and as its HF folder
# (bf16), beside transformers' bf16 forward-with-cache loop (bench/hf_generate.py) on the same GPU.
# Before the timings, each GGUF is checked against the native CPU engine (`--check`).
#
#   bash bench/gpu-infer.sh            (on the GPU machine, from the project root)
# env: SO8T (the command that runs the CUDA build; default .gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda),
#      MODEL (default /tmp/so8t-phi35, made with `so8t model init --preset phi3.5-mini` if absent),
#      P prompt tokens (512), N generated tokens (128), R repetitions (3), QUANTS (bf16,q4_k_m).
# Prints one `RESULT {json}` line per engine and model file.
set -euo pipefail
S=${SO8T:-.gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda}
M=${MODEL:-/tmp/so8t-phi35}
P=${P:-512}; N=${N:-128}; R=${R:-3}; QUANTS=${QUANTS:-bf16,q4_k_m}
[ -f "$M/config.json" ] || $S model init --preset phi3.5-mini --out "$M" >/dev/null
G=$M-gguf
if ! ls "$G"/*.gguf >/dev/null 2>&1; then
  $S export gguf --model "$M" --out "$G" --quant "$QUANTS" | tail -1
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# Accuracy: each file on the GPU against the native CPU engine on the same file, and against the
# BF16 file; beside it the native engine's own distance from the quantized file to the BF16 one.
ref=$(ls "$G"/*bf16*.gguf | head -1)
for f in "$G"/*.gguf; do
  echo "CHECK gpu $(basename "$f") vs cpu same $($S bench infer --model "$f" --device cuda --check --prompt 160 --json)"
  echo "CHECK gpu $(basename "$f") vs cpu bf16 $($S bench infer --model "$f" --device cuda --check --prompt 160 --reference "$ref" --json)"
  echo "CHECK cpu $(basename "$f") vs cpu bf16 $($S bench infer --model "$f" --device cpu --check --prompt 160 --reference "$ref" --json)"
done
for f in "$G"/*.gguf "$M"; do
  echo "RESULT $($S bench infer --model "$f" --device cuda -p "$P" -n "$N" -r "$R" --json)"
done
# transformers: the same P prompt tokens.
echo "RESULT {\"engine\": \"transformers\", \"run\": $(python3 bench/hf_generate.py "$M" --prompt-tokens "$P" \
  --max-tokens "$N" --dtype bf16 --device cuda --repeats "$R" | python3 -c 'import json,sys; r=json.load(sys.stdin); r.pop("tokens"); print(json.dumps(r))')}"
# The server on the GPU: one Ollama /api/generate request against the Q4_K_M file.
q=$(ls "$G"/*q4_k_m*.gguf | head -1)
$S serve --model "phi35q=$q" --device cuda --port 11500 --no-audit > /tmp/so8t-serve.log 2>&1 &
pid=$!
for _ in $(seq 1 120); do curl -s localhost:11500/api/version >/dev/null && break; sleep 1; done
echo "SERVE $(curl -s localhost:11500/api/generate -d '{"model": "phi35q", "prompt": "Hello", "stream": false,
  "options": {"num_predict": 32, "temperature": 0}}' | python3 -c 'import json,sys; r=json.load(sys.stdin);
print(json.dumps({k: r.get(k) for k in ["done", "eval_count", "eval_duration", "prompt_eval_count", "prompt_eval_duration"]}))')"
kill $pid; wait $pid 2>/dev/null || true
