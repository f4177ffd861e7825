#!/usr/bin/env python3
"""int8 (QDQ) throughput: shrink's integer execution against ONNX Runtime.

For every shared Fashion-MNIST model and batch this times, interleaved so that
machine noise hits all alike: ONNX Runtime on the fp32 model, ONNX Runtime on
the int8 QDQ model (ORT fuses the QDQ patterns into its QLinear/int8 kernels),
`shrink bench` on the fp32 model and `shrink bench` on the int8 QDQ model
(lowered to shrink's integer kernels). Same files, same batch, same threads,
same inputs. Reports medians of --reps repetitions and the ratios
shrink int8 / shrink fp32 and shrink int8 / ORT int8 (> 1: shrink int8 faster).

  python3 bench/int8_vs_ort.py [--threads 1] [--reps 3] [--out bench/results/int8_t1.md]
                               [--data fashion|synthetic] [--baseline OTHER_SHRINK_BIN]

--data fashion (the default) feeds every tool the first BATCH Fashion-MNIST test
images (pixel / 255, as the models were trained); --data synthetic feeds
`shrink bench`'s own synthetic values and uniform random values to ORT, as
before session 5. Real images matter to shrink's int8 GEMM, which skips the
all-zero activation quads of the first layer (half of every image's pixels
are 0); ONNX Runtime's speed does not depend on the values.

--baseline also times a second shrink build (fp32 and int8) in the same interleaving and adds
its ratios, for a before/after under equal load.

Needs: pip install onnxruntime numpy; cargo build --release -p shrink.
"""
import argparse, json, os, statistics, subprocess, sys, time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.environ.get("SHRINK_SHARED", os.path.join(os.path.dirname(ROOT), "shared")), "data")
SHRINK = os.environ.get("SHRINK_BIN", os.path.join(ROOT, "target", "release", "shrink"))
MODELS = ["lenet300100", "lenet5", "lenet5_bn", "mobilenetv2_tiny", "mobilenetv2_tiny_relu"]


def ort_time(path, feeds, threads, min_time):
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


def fashion_images(batch):
    """The first `batch` Fashion-MNIST test images as [B, 1, 28, 28] f32 in [0, 1]."""
    import gzip
    cache = os.environ.get("SHRINK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "shrink"))
    path = os.path.join(cache, "fashion-mnist", "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run scripts/fetch-assets fashion")
    with gzip.open(path) as f:
        raw = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)
    return (raw[:batch].astype(np.float32) / np.float32(255.0))


DATA = "synthetic"


def shrink_time(path, batch, threads, min_time, binary=None):
    cmd = [binary or SHRINK, "bench", path, "--batch", str(batch), "--threads", str(threads),
           "--min-time", str(min_time), "--json"]
    if DATA == "fashion":
        cmd += ["--data", "fashion-mnist"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.7)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--out", default=None)
    ap.add_argument("--baseline", default=None, help="another shrink binary to time alongside")
    ap.add_argument("--data", choices=["fashion", "synthetic"], default="fashion")
    args = ap.parse_args()
    global DATA
    DATA = args.data

    rows = []
    for m in args.models.split(","):
        fp32 = os.path.join(SHARED, "fashion", m + ".onnx")
        int8 = os.path.join(SHARED, "fashion", m + ".int8_qdq_pc.onnx")
        for b in [int(v) for v in args.batches.split(",")]:
            if args.data == "fashion":
                feeds = {"input": fashion_images(b)}
            else:
                feeds = {"input": np.random.RandomState(0).rand(b, 1, 28, 28).astype(np.float32)}
            t = {"of": [], "oi": [], "sf": [], "si": []}
            if args.baseline:
                t.update({"bf": [], "bi": []})
            for _ in range(args.reps):
                t["of"].append(ort_time(fp32, feeds, args.threads, args.min_time))
                t["oi"].append(ort_time(int8, feeds, args.threads, args.min_time))
                t["sf"].append(shrink_time(fp32, b, args.threads, args.min_time))
                t["si"].append(shrink_time(int8, b, args.threads, args.min_time))
                if args.baseline:
                    t["bf"].append(shrink_time(fp32, b, args.threads, args.min_time, args.baseline))
                    t["bi"].append(shrink_time(int8, b, args.threads, args.min_time, args.baseline))
            ips = {k: b / statistics.median(v) for k, v in t.items()}
            rows.append((m, b, ips))
            print(f"{m:22s} batch {b:4d}: ORT fp32 {ips['of']:9.1f}  ORT int8 {ips['oi']:9.1f}  "
                  f"shrink fp32 {ips['sf']:9.1f}  shrink int8 {ips['si']:9.1f}  "
                  f"int8/fp32 {ips['si']/ips['sf']:.2f}  vs ORT int8 {ips['si']/ips['oi']:.2f}"
                  + (f"  baseline fp32/ORT fp32 {ips['bf']/ips['of']:.2f} int8/ORT int8 {ips['bi']/ips['oi']:.2f}"
                     if args.baseline else ""), flush=True)

    lines = [f"| model | batch | ORT {ort.__version__} fp32 | ORT int8 QDQ | shrink fp32 | shrink int8 "
             "| shrink int8 / shrink fp32 | shrink int8 / ORT int8 |"
             + (" baseline fp32 / ORT fp32 | baseline int8 / ORT int8 |" if args.baseline else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if args.baseline else "")]
    for m, b, ips in rows:
        lines.append(f"| {m} | {b} | {ips['of']:.1f} | {ips['oi']:.1f} | {ips['sf']:.1f} | {ips['si']:.1f} "
                     f"| {ips['si']/ips['sf']:.2f} | {ips['si']/ips['oi']:.2f} |"
                     + (f" {ips['bf']/ips['of']:.2f} | {ips['bi']/ips['oi']:.2f} |" if args.baseline else ""))
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"items/s; threads = {args.threads}, medians of {args.reps} interleaved repetitions "
                    f"(min {args.min_time}s each); inputs: {args.data}\n\n{table}\n")


if __name__ == "__main__":
    sys.exit(main())
