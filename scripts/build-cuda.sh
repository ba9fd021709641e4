#!/usr/bin/env bash
# Builds `so8t` with CUDA (`-p so8t-cli --features cuda`) for an NVIDIA GPU on a machine with NO CUDA
# toolkit and NO GPU (Debian 12, rustup toolchain, network to PyPI/crates.io); the recipe of the
# workplace's shared/gpu/build-cuda.sh, made a project script.
#
#   1. pip-downloads the CUDA 13.0 toolkit pieces NVIDIA publishes as wheels (nvcc, crt headers,
#      nvvm, cudart, cccl, nvrtc, curand, cublas) into $CUDA_DIR/nvidia/cu13 (= CUDA_ROOT);
#   2. makes it look like a toolkit: lib64 -> lib, unversioned lib*.so links, and a link-time stub
#      libcuda.so (SONAME libcuda.so.1); the real one comes from the driver on the GPU machine;
#   3. cargo build --release -p so8t-cli --features cuda with PATH/NVCC/CUDA_ROOT/CUDA_COMPUTE_CAP;
#   4. copies the stripped binary (.gpu-bin/so8t-cuda) and scripts/run-cuda.sh into OUT_DIR
#      (default .gpu-bin/, added to .git/info/exclude, never committed).
#
# usage: scripts/build-cuda.sh            (from anywhere; builds this checkout)
# env:   OUT_DIR (default .gpu-bin), CUDA_DIR (default /tmp/cuda13/cuda), WHEEL_DIR (default
#        /tmp/cuda13/wheels), TARGET_DIR (default /tmp/cuda13/target), CUDA_COMPUTE_CAP (default 90
#        = H100/H200; the binary then runs on Hopper only), CARGO_ARGS (default
#        "-p so8t-cli --features cuda").
# Then on the GPU machine, from the project root:  .gpu-bin/run-cuda.sh .gpu-bin/so8t-cuda ARGS
# A cold build takes about 10 minutes on 2 cores (candle-kernels compiles its kernels for sm_90a).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proj=$(cd "$here/.." && pwd)
bin=so8t
OUT_DIR=${OUT_DIR:-$proj/.gpu-bin}
CARGO_ARGS=${CARGO_ARGS:--p so8t-cli --features cuda}
CUDA_DIR=${CUDA_DIR:-/tmp/cuda13/cuda}
WHEEL_DIR=${WHEEL_DIR:-/tmp/cuda13/wheels}
TARGET_DIR=${TARGET_DIR:-/tmp/cuda13/target}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

# CUDA 13.0.x to match the GPU machine's driver (580 = CUDA 13.0; nvcc 13.0 writes PTX ISA 9.0).
# Not tried, but expected: a newer nvcc (pip's latest is 13.5) writes a newer PTX ISA that this
# driver refuses to JIT (CUDA_ERROR_UNSUPPORTED_PTX_VERSION); candle loads all its kernels as PTX.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88     # nvcc, ptxas, fatbinary, nvlink
  nvidia-cuda-crt==13.0.88      # include/crt/*.h (needed by nvcc)
  nvidia-nvvm==13.0.88          # cicc + libdevice (needed by nvcc)
  nvidia-cuda-runtime==13.0.96  # cuda_runtime.h, libcudart.so.13 (candle-kernels links -lcudart)
  nvidia-cuda-cccl==13.0.85     # include/cccl (cuda/std, cub, thrust)
  nvidia-cuda-nvrtc==13.0.88    # libnvrtc.so.13 (cudarc links -lnvrtc)
  nvidia-curand==10.4.0.35      # libcurand.so.10 (cudarc links -lcurand)
  nvidia-cublas==13.0.2.14      # libcublas.so.13, libcublasLt.so.13 (cudarc links both); ~600 MB
)
CU=$CUDA_DIR/nvidia/cu13

t0=$(date +%s)
if [ ! -x "$CU/bin/nvcc" ] || [ ! -e "$CU/lib/libcublasLt.so.13" ]; then
  echo ">> downloading CUDA 13.0 wheels into $WHEEL_DIR"
  mkdir -p "$WHEEL_DIR" "$CUDA_DIR"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$WHEEL_DIR" "${WHEELS[@]%%#*}"
  for w in "$WHEEL_DIR"/*.whl; do unzip -q -o "$w" 'nvidia/*' -d "$CUDA_DIR"; done
fi

echo ">> preparing toolkit layout in $CU"
ln -sfn lib "$CU/lib64"                       # cudaforge looks in \$root/lib64
for l in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
  ln -sf "$l" "$CU/lib/${l%%.so*}.so"         # -lfoo needs libfoo.so
done

# Link-time stub for the driver library. cudarc (candle enables its `dynamic-linking` feature)
# emits -lcuda; the wheels don't ship libcuda. Symbols: every cu* function cuda.h declares plus
# every one cudarc's driver bindings name (all CUDA versions). Only names matter for linking.
if [ ! -e "$CU/lib/stubs/libcuda.so" ]; then
  echo ">> generating stub libcuda.so"
  mkdir -p "$CU/lib/stubs"
  (cd "$proj" && cargo fetch -q)
  cudarc_src=$(cd "$proj" && cargo metadata --format-version 1 --all-features 2>/dev/null |
    python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
  {
    gcc -E -P -I"$CU/include" "$CU/include/cuda.h" | grep -oP '\bcu[A-Z]\w*(?=\s*\()'
    grep -ohP '^\s+fn \Kcu\w+(?=\()' "$cudarc_src"/src/driver/sys/*.rs
  } | sort -u | awk '{print "void " $1 "(void){}"}' > "$CU/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -o "$CU/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$CU/lib/stubs/cuda_stub.c"
fi
t1=$(date +%s)

echo ">> cargo build (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
export PATH="$CU/bin:$PATH"       # cudarc's build.rs runs `nvcc --version` from PATH to pick cuda-13000
export NVCC="$CU/bin/nvcc"        # cudaforge (candle-kernels' build helper)
export CUDA_ROOT="$CU"            # cudarc's link search: \$CUDA_ROOT/lib, lib/stubs
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}  # default is half the cores
# shellcheck disable=SC2086
(cd "$proj" && cargo build --release $CARGO_ARGS --target-dir "$TARGET_DIR")
t2=$(date +%s)

mkdir -p "$OUT_DIR"
cp "$TARGET_DIR/release/$bin" "$OUT_DIR/$bin-cuda"
strip "$OUT_DIR/$bin-cuda"             # carry limit is 64 MiB for everything that travels
cp "$here/run-cuda.sh" "$OUT_DIR/run-cuda.sh"
ex="$proj/.git/info/exclude"; rel="/${OUT_DIR#"$proj"/}/"
if [ -d "$proj/.git" ] && ! grep -qxF "$rel" "$ex" 2>/dev/null; then mkdir -p "$proj/.git/info"; echo "$rel" >> "$ex"; fi
echo ">> toolkit setup $((t1-t0))s, cargo build $((t2-t1))s"
ls -la "$OUT_DIR/$bin-cuda"
echo ">> dynamic deps:"; readelf -d "$OUT_DIR/$bin-cuda" | grep NEEDED
