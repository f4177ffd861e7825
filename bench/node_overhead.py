#!/usr/bin/env python3
"""Per-node overhead of the runtime: time per node of a chain of tiny ops.

Builds two ONNX graphs on a [1, 8] f32 input, chains of N1 and N2 nodes
alternating Relu and Add(x, constant), and times `shrink bench` (batch 1,
one thread) on both for each given binary, plus ONNX Runtime, interleaved.
The kernels do ~8 flops each, so (t(N2) − t(N1)) / (N2 − N1) is the cost
the executor adds per node.

  python3 bench/node_overhead.py [--reps 3] [--n1 10] [--n2 60] BIN [BIN ...]
"""
import argparse, json, os, statistics, subprocess, tempfile, time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def chain(n, path):
    nodes, inits = [], [numpy_helper.from_array(np.full(8, 0.01, np.float32), "c")]
    prev = "x"
    for i in range(n):
        out = "y" if i == n - 1 else f"v{i}"
        if i % 2 == 0:
            nodes.append(helper.make_node("Relu", [prev], [out], name=f"relu{i}"))
        else:
            nodes.append(helper.make_node("Add", [prev, "c"], [out], name=f"add{i}"))
        prev = out
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def shrink_time(binary, path):
    out = subprocess.run([binary, "bench", path, "--threads", "1", "--min-time", "1", "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["median_s"]


def ort_time(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = {"x": np.ones((1, 8), np.float32)}
    for _ in range(10):
        s.run(None, x)
    ts = []
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        s.run(None, x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n1", type=int, default=10)
    ap.add_argument("--n2", type=int, default=60)
    a = ap.parse_args()
    d = tempfile.mkdtemp()
    p1, p2 = os.path.join(d, "c1.onnx"), os.path.join(d, "c2.onnx")
    chain(a.n1, p1)
    chain(a.n2, p2)
    names = a.bins + ["onnxruntime"]
    res = {n: ([], []) for n in names}
    for _ in range(a.reps):
        for n in names:
            f = ort_time if n == "onnxruntime" else (lambda p, n=n: shrink_time(n, p))
            res[n][0].append(f(p1))
            res[n][1].append(f(p2))
    print(f"load average: {os.getloadavg()}")
    print(f"| engine | {a.n1}-node chain µs | {a.n2}-node chain µs | µs per node |")
    print("|---|---|---|---|")
    for n in names:
        t1, t2 = statistics.median(res[n][0]) * 1e6, statistics.median(res[n][1]) * 1e6
        print(f"| {n} | {t1:.2f} | {t2:.2f} | {(t2 - t1) / (a.n2 - a.n1):.3f} |")


if __name__ == "__main__":
    main()
