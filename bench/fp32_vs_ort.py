#!/usr/bin/env python3
"""fp32 throughput of shrink against ONNX Runtime, same machine, same run.

For every (model, batch) pair this times ONNX Runtime (CPU EP, intra-op threads
= --threads) and then `shrink bench` on the same ONNX file with the same batch
and thread count, interleaving the two so machine noise hits both alike.
Reports medians and the ratio shrink/ORT throughput (> 1 means shrink is faster).

  python3 bench/fp32_vs_ort.py [--threads 1] [--reps 5] [--out bench/results/fp32.md]
                               [--baseline OTHER_SHRINK_BIN] [--models lenet5,mobilenetv2_tiny,minilm]

--baseline times a second shrink build (e.g. the previous commit) in the same
interleaving and adds its ratio to ORT, for a before/after under equal load.

Needs: pip install onnxruntime numpy; cargo build --release; scripts/fetch-assets.
MiniLM is exported to ONNX by shrink itself (`shrink export`), so both engines run
the very same graph.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.environ.get("SHRINK_SHARED", os.path.join(os.path.dirname(ROOT), "shared")), "data")
CACHE = os.environ.get("SHRINK_CACHE", os.path.expanduser("~/.cache/shrink"))
SHRINK = os.environ.get("SHRINK_BIN", os.path.join(ROOT, "target", "release", "shrink"))


def ort_time(path, feeds, threads, min_time=1.0):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        s.run(None, feeds)
    times = []
    t_end = time.perf_counter() + min_time
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shrink_time(path, batch, threads, extra, min_time=1.0, binary=None):
    cmd = [binary or SHRINK, "bench", path, "--batch", str(batch), "--threads", str(threads),
           "--min-time", str(min_time), "--json"] + extra
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline", default=None, help="another shrink binary to time alongside")
    ap.add_argument("--models", default="lenet5,mobilenetv2_tiny,minilm",
                    help="comma-separated: Fashion-MNIST model names and/or minilm")
    args = ap.parse_args()
    models = args.models.split(",")

    cases = []
    for m in [m for m in models if m != "minilm"]:
        p = os.path.join(SHARED, "fashion", m + ".onnx")
        for b in [1, 256]:
            x = np.random.RandomState(0).rand(b, 1, 28, 28).astype(np.float32)
            cases.append((m, p, b, {"input": x}, []))
    if "minilm" in models:
        tmp = tempfile.mkdtemp()
        minilm_onnx = os.path.join(tmp, "minilm.onnx")
        subprocess.run([SHRINK, "export", os.path.join(CACHE, "minilm"), "-o", minilm_onnx], check=True)
        ids = np.load(os.path.join(SHARED, "minilm", "public_input_ids.npy"))
        mask = np.load(os.path.join(SHARED, "minilm", "public_attention_mask.npy"))
    for b in ([1, 32] if "minilm" in models else []):
        rows = slice(0, b)
        L = int(mask[rows].sum(1).max())
        feeds = {"input_ids": ids[rows, :L].astype(np.int64), "attention_mask": mask[rows, :L].astype(np.int64)}
        cases.append(("minilm", minilm_onnx, b, feeds, ["--seq", str(L)]))

    rows_out = []
    for name, path, b, feeds, extra in cases:
        o, s, base = [], [], []
        for _ in range(args.reps):
            o.append(ort_time(path, feeds, args.threads))
            s.append(shrink_time(path, b, args.threads, extra))
            if args.baseline:
                base.append(shrink_time(path, b, args.threads, extra, binary=args.baseline))
        om, sm = statistics.median(o), statistics.median(s)
        r = om / sm
        rb = om / statistics.median(base) if base else None
        rows_out.append((name, b, b / om, b / sm, r, rb))
        extra_txt = f"  (baseline ratio {rb:.2f})" if rb else ""
        print(f"{name:18s} batch {b:4d}: ORT {b/om:10.1f}/s  shrink {b/sm:10.1f}/s  ratio {r:.2f}{extra_txt}", flush=True)

    head = f"| model | batch | ORT {ort.__version__} (items/s) | shrink (items/s) | shrink / ORT |"
    rule = "|---|---|---|---|---|"
    if args.baseline:
        head += " baseline / ORT |"
        rule += "---|"
    lines = [head, rule]
    for name, b, ot, st, r, rb in rows_out:
        line = f"| {name} | {b} | {ot:.1f} | {st:.1f} | {r:.2f} |"
        if args.baseline:
            line += f" {rb:.2f} |"
        lines.append(line)
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"threads = {args.threads}, medians of {args.reps} interleaved repetitions\n\n{table}\n")


if __name__ == "__main__":
    sys.exit(main())
