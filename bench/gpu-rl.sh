#!/usr/bin/env bash
# On the GPU machine: `so8t rl` (GRPO, GRPO + SO(8) gates, PPO) beside TRL's GRPOTrainer at
# Phi-3.5-mini shape (bench/make_phi35_shaped.py: random bf16 weights, SmolLM2's tokenizer), bf16 on
# CUDA, in the same call on the same GPU (bench/rl_vs_trl.py). Take along, under .gpu-bin/:
#   so8t-cuda + run-cuda.sh   scripts/build-cuda.sh (so8t-cuda.xz is unpacked first: the binary is
#                             88 MB, over the 64 MiB the device runner carries; xz makes it 14 MB)
#   wheels/                   TRL and what it needs beyond the GPU machine's torch/transformers/peft:
#                             pip download --no-deps --python-version 3.12 --only-binary=:all: \
#                               -d .gpu-bin/wheels trl==1.16.0 datasets dill multiprocess
#   tok/                      the tokenizer files of /tmp/so8t-peers/models/smollm2-hf
#   bash bench/gpu-rl.sh [rl_vs_trl.py args...]   default: --prompts 4 --group 8 --max-new 128
# Env: MODEL (default /tmp/phi35: made on first use), LAYERS (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-/tmp/phi35}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "date: $(date -u +%FT%TZ)"
[ -x .gpu-bin/so8t-cuda ] || xz -dk .gpu-bin/so8t-cuda.xz
if ! python3 -c 'import trl, datasets' 2>/dev/null; then
  pip install -q --no-deps --target /tmp/site .gpu-bin/wheels/*.whl
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
if [ ! -f "$MODEL/config.json" ]; then
  t=$(date +%s)
  python3 bench/make_phi35_shaped.py --tokenizer .gpu-bin/tok --layers "${LAYERS:-32}" "$MODEL"
  echo "model made in $(( $(date +%s) - t )) s"
fi
[ $# -gt 0 ] || set -- --prompts 4 --group 8 --max-new 128
python3 bench/rl_vs_trl.py --so8t ".gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda" --device cuda --dtype bf16 \
  --torch-python python3 --model "$MODEL" --threads 16 "$@"
