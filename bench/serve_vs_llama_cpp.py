#!/usr/bin/env python3
"""so8t serve vs llama.cpp on the same GGUF files, same threads, same run.

  python bench/serve_vs_llama_cpp.py --so8t target/release/so8t [--peers /tmp/peers] [--threads 2]

For each SmolLM2 file (F16, Q8_0, Q4_K_M):
- engine against engine: `llama-bench -p 256 -n 64 -t THREADS -r 3` and `so8t bench infer
  -p 256 -n 64 -r 3` (the same tests in process: one 256-token pass, 64 one-token passes; the
  mean of the repetitions, as llama-bench's avg_ts), run one after the other;
- the server: `so8t serve` with the same file and threads, one request with a 235-token raw
  prompt and 64 generated tokens (rates from the response's prompt_eval_count/duration and
  eval_count/duration; best of 3), then 16 concurrent clients each generating 32 tokens
  (requests/s and generated tokens/s).
Prints a Markdown table.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request


def post(url, body, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def llama_bench(peers, gguf, threads):
    out = subprocess.run([f"{peers}/bin/llama-bench", "-m", gguf, "-p", "256", "-n", "64", "-t", str(threads),
                          "-r", "3", "-o", "json"], capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return pp, tg


def so8t_infer(so8t, gguf, threads):
    out = subprocess.run([so8t, "--threads", str(threads), "bench", "infer", "--model", gguf, "-p", "256", "-n", "64",
                          "-r", "3", "--json"], capture_output=True, text=True, check=True).stdout
    tests = {t["test"]: t["avg_ts"] for t in json.loads(out)["tests"]}
    return tests["pp256"], tests["tg64"]


def so8t_bench(so8t, gguf, threads):
    port = free_port()
    env = dict(os.environ, SO8T_HOME=f"/tmp/so8t-bench-home-{port}")
    srv = subprocess.Popen([so8t, "--threads", str(threads), "serve", "--port", str(port), "--parallel", "16",
                            "--no-audit", "--model", f"m={gguf}"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        srv.stderr.readline()
        base = f"http://127.0.0.1:{port}"
        # ~256 tokens of plain text; the exact count comes back in prompt_eval_count.
        words = "the quick brown fox jumps over the lazy dog while seven small birds sing".split()
        prompt = " ".join(words[i % len(words)] for i in range(235))
        opts = {"temperature": 0, "num_predict": 64, "seed": 1}
        post(f"{base}/api/generate", {"model": "m", "prompt": "hi", "raw": True, "stream": False, "options": {"num_predict": 2}})
        pp, tg, n_prompt = 0.0, 0.0, 0
        for _ in range(3):
            r = post(f"{base}/api/generate", {"model": "m", "prompt": prompt, "raw": True, "stream": False, "options": opts})
            n_prompt = r["prompt_eval_count"]
            pp = max(pp, r["prompt_eval_count"] / (r["prompt_eval_duration"] / 1e9))
            if r["eval_count"] > 1:
                tg = max(tg, (r["eval_count"] - 1) / (r["eval_duration"] / 1e9))
        # 16 concurrent clients.
        done, toks = [], []

        def client(i):
            r = post(f"{base}/api/generate", {"model": "m", "prompt": f"Story {i}: once upon a time", "raw": True,
                                              "stream": False, "options": {"temperature": 0, "num_predict": 32}})
            done.append(1)
            toks.append(r["eval_count"])
        t0 = time.time()
        th = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        [t.start() for t in th]
        [t.join() for t in th]
        dt = time.time() - t0
        return pp, tg, n_prompt, len(done) / dt, sum(toks) / dt
    finally:
        srv.terminate()
        srv.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so8t", default="target/release/so8t")
    ap.add_argument("--peers", default="/tmp/peers")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", default="f16,q8_0,q4_k_m")
    a = ap.parse_args()
    print(f"machine: {os.uname().nodename} {os.cpu_count()} cpus, threads {a.threads}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| file | llama-bench pp256 | so8t bench infer pp256 | pp ratio | llama-bench tg64 | so8t bench infer tg64 "
          "| tg ratio | so8t serve pp | so8t serve tg | serve, 16 clients: req/s | generated t/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for q in a.files.split(","):
        f = f"{a.peers}/models/smollm2-135m-{q}.gguf"
        lpp, ltg = llama_bench(a.peers, f, a.threads)
        ipp, itg = so8t_infer(a.so8t, f, a.threads)
        spp, stg, n, rps, gts = so8t_bench(a.so8t, f, a.threads)
        print(f"| {q.upper()} | {lpp:.0f} | {ipp:.0f} | {ipp / lpp:.2f}× | {ltg:.1f} | {itg:.1f} | {itg / ltg:.2f}× "
              f"| {spp:.0f} ({n} tokens) | {stg:.1f} | {rps:.2f} | {gts:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
