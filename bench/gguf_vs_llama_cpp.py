#!/usr/bin/env python3
"""F16 + Q8_0 + Q4_K_M from an HF folder: `so8t export gguf` (one pass) beside llama.cpp's tools
(`convert_hf_to_gguf.py --outtype f16`, then `llama-quantize` F16 → Q8_0 and F16 → Q4_K_M), on
the same machine in the same run. Wall time and peak RSS of each process (wait4's ru_maxrss);
outputs are deleted after each side so a 3.8 B model fits on a small disk.

  python3 bench/gguf_vs_llama_cpp.py --model DIR [--so8t target/release/so8t] [--threads 2]
"""
import argparse
import os
import platform
import shutil
import tempfile
import time

P = "/tmp/peers"
CONVERT = f"{P}/src/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"


def measured(cmd, env=None):
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env or os.environ)
    _, status, ru = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return time.time() - t0, ru.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--so8t", default="target/release/so8t")
    ap.add_argument("--torch-python", default=f"{P}/venv-torch/bin/python")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="gguf-bench-", dir=os.environ.get("BENCH_DIR", "/tmp"))
    rows = []
    t, rss = measured([a.so8t, "--threads", str(a.threads), "export", "gguf", "--model", a.model,
                       "--out", work, "--name", "m", "--quant", "f16,q8_0,q4_k_m"])
    sizes = {q: os.path.getsize(os.path.join(work, f"m-{q}.gguf")) for q in ["f16", "q8_0", "q4_k_m"]}
    rows.append(("so8t export gguf (F16 + Q8_0 + Q4_K_M, one pass)", t, rss))
    shutil.rmtree(work)
    os.makedirs(work)
    f16 = os.path.join(work, "l-f16.gguf")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    t1, r1 = measured([a.torch_python, CONVERT, a.model, "--outtype", "f16", "--outfile", f16], env)
    rows.append(("  llama.cpp convert_hf_to_gguf.py --outtype f16", t1, r1))
    t2, r2 = measured([f"{P}/bin/llama-quantize", f16, os.path.join(work, "l-q8_0.gguf"), "Q8_0", str(a.threads)])
    rows.append(("  llama-quantize F16 → Q8_0", t2, r2))
    t3, r3 = measured([f"{P}/bin/llama-quantize", f16, os.path.join(work, "l-q4_k_m.gguf"), "Q4_K_M", str(a.threads)])
    rows.append(("  llama-quantize F16 → Q4_K_M", t3, r3))
    rows.append(("llama.cpp tools, end to end", t1 + t2 + t3, max(r1, r2, r3)))
    shutil.rmtree(work)
    print(f"\n{platform.node()} · {os.cpu_count()} CPUs · {a.threads} threads · {time.strftime('%Y-%m-%d')} · {a.model}"
          f" · so8t sizes MiB: " + ", ".join(f"{q} {s / 2**20:.0f}" for q, s in sizes.items()) + "\n")
    print("| step | wall (s) | peak RSS (MiB) |\n| --- | ---: | ---: |")
    for name, t, r in rows:
        print(f"| {name} | {t:.1f} | {r:.0f} |")
    print(f"\nso8t is {rows[-1][1] / rows[0][1]:.2f}× faster end to end.")


if __name__ == "__main__":
    main()
