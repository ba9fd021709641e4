#!/usr/bin/env bash
# The dashboard's scale benchmark: 100 runs x 200,000 metric rows (about 5 GB of run.db files,
# written once into target/tmp and reused), then the page's first load in headless Chromium,
# API latencies and the server's peak memory. Needs chromium + chromedriver (.ci/setup-browser).
# Sizes: SO8T_SCALE_RUNS, SO8T_SCALE_STEPS. Results go into docs/PERFORMANCE.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup-browser >/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
cargo test --release -p so8t-cli --test dashboard_scale -- --ignored --nocapture
