#!/usr/bin/env bash
# On the GPU machine: so8t's SFT step beside PyTorch's (bench/torch_so8t_bench.py: transformers +
# PEFT) at Phi-3.5-mini shape, in the same call on the same GPU. Build first with
# scripts/build-cuda.sh and take .gpu-bin/ along (put a PEFT wheel in .gpu-bin/wheels/:
# `pip download --no-deps peft -d .gpu-bin/wheels`).
#   bash bench/gpu-train.sh [SETTINGS...]    settings: "SEQ BATCH CKPT LORA", default "1024 4 0 1"
# Env: MODEL (default /tmp/so8t-phi35: made once by `so8t model init --preset phi3.5-mini`),
#      LAYERS (torch side, default 32), STEPS (default 5), TORCH=0 to skip PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${RUN:-.gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda}"
MODEL=${MODEL:-/tmp/so8t-phi35}
STEPS=${STEPS:-5}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "date: $(date -u +%FT%TZ)"
if [ ! -f "$MODEL/config.json" ]; then
  t=$(date +%s)
  $run model init --preset phi3.5-mini --out "$MODEL" >/dev/null
  echo "model init: $(( $(date +%s) - t )) s"
fi
if [ "${TORCH:-1}" = 1 ] && ! python3 -c 'import peft' 2>/dev/null; then
  pip install -q --no-deps --target /tmp/site .gpu-bin/wheels/peft-*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ $# -gt 0 ] || set -- "1024 4 0 1"
for s in "$@"; do
  read -r seq batch ckpt lora <<<"$s"
  args=(--seq "$seq" --batch "$batch" --steps "$STEPS" --lora-rank $(( lora ? 64 : 0 )))
  [ "$ckpt" = 1 ] && args+=(--checkpointing)
  $run bench train --model "$MODEL" --device cuda --dtype bf16 "${args[@]}" || echo "so8t failed: $s"
  if [ "${TORCH:-1}" = 1 ]; then
    python3 bench/torch_so8t_bench.py --seq "$seq" --batch "$batch" --ckpt "$ckpt" --lora "$lora" \
      --layers "${LAYERS:-32}" --steps "$STEPS" 2>&1 | grep -E "RESULT|built|Error|error" || echo "torch failed: $s"
  fi
done
