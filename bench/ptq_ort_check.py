#!/usr/bin/env python3
"""ORT check for shrink's post-training quantisation exports (issue #6).

Runs each QDQ model `shrink compress` wrote in ONNX Runtime (CPU EP, which
fuses the QDQ patterns into QLinearConv / QLinearMatMul integer kernels) on
the Fashion-MNIST test images, and compares ORT's top-1 with shrink's own
accuracy for the same file (read from the JSON report `shrink compress --json`
wrote next to it). Passes when |ORT - shrink| <= 0.05 pt for every model.

QOperator exports (JSON "format": "qoperator", from `shrink compress
--qoperator`, bench/ptq_qoperator.sh) are compared with shrink's accuracy on
the QDQ model of the same run ("compressed"); shrink's own accuracy on the
QOperator graph ("qoperator") is printed beside it.

usage: bench/ptq_ort_check.py RESULTS_DIR [--limit N]
  RESULTS_DIR holds NAME.onnx + NAME.json pairs from bench/ptq_run.sh.
"""
import argparse, gzip, json, os, sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load_test(limit):
    cache = Path(os.environ.get("SHRINK_CACHE", Path.home() / ".cache" / "shrink")) / "fashion-mnist"
    def idx(name):
        p = cache / name
        raw = gzip.open(p).read() if p.suffix == ".gz" else open(p, "rb").read()
        return raw
    x = np.frombuffer(idx("t10k-images-idx3-ubyte.gz"), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    y = np.frombuffer(idx("t10k-labels-idx1-ubyte.gz"), np.uint8, offset=8).astype(np.int64)
    x = (x.astype(np.float32) / np.float32(255.0))
    return x[:limit], y[:limit]


def ort_accuracy(path, x, y):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 500]})[0].argmax(1) for i in range(0, len(x), 500)])
    return 100.0 * float((pred == y).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--tolerance", type=float, default=0.05)
    a = ap.parse_args()
    x, y = load_test(a.limit)
    ok = True
    rows = []
    for js in sorted(Path(a.results).glob("*.json")):
        rep = json.loads(js.read_text())
        model = Path(rep["output"])
        if not model.is_absolute():
            model = Path.cwd() / model
        acc = rep.get("accuracy")
        if acc is None:
            continue
        if acc["samples"] != len(y):
            print(f"{js.name}: shrink evaluated {acc['samples']} images, ORT {len(y)}; rerun with --limit {acc['samples']}")
            ok = False
            continue
        o = ort_accuracy(model, x, y)
        d = o - acc["compressed"]
        good = abs(d) <= a.tolerance + 1e-9
        ok &= good
        qop = acc.get("qoperator")
        rows.append((js.stem, acc["fp32"], acc["compressed"], o, d, good, rep.get("format", "qdq"), qop))
    print(f"{'model':<36}{'format':>10}{'fp32':>8}{'shrink':>8}{'shrinkQOp':>10}{'ORT':>8}{'diff':>8}")
    for r in rows:
        q = f"{r[7]:>10.2f}" if r[7] is not None else f"{'':>10}"
        print(f"{r[0]:<36}{r[6]:>10}{r[1]:>8.2f}{r[2]:>8.2f}{q}{r[3]:>8.2f}{r[4]:>+8.2f}  {'ok' if r[5] else 'FAIL'}")
    sys.exit(0 if ok and rows else 1)


if __name__ == "__main__":
    main()
