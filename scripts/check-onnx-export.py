#!/usr/bin/env python3
"""Checks shrink's ONNX export against ONNX Runtime.

Each fashion model is loaded by shrink and saved again (inline, and with
external data for tensors >= 1 KiB) through the `onnx_resave` example; the
copy must pass onnx.checker (full check) and give bit-identical outputs to the
original in ONNX Runtime on the 256 sample test images.

Usage: scripts/check-onnx-export.py [fashion_dir]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def main():
    fashion = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("SHRINK_SHARED", "/work/shared"), "data/fashion")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "shrink-graph", "--example", "onnx_resave"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    exe = os.path.join(target, "release", "examples", "onnx_resave")
    x = (np.load(os.path.join(fashion, "test_sample_x.npy")).astype(np.float32) / 255.0)[:, None]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for f in sorted(os.listdir(fashion)):
            if not f.endswith(".onnx"):
                continue
            src = os.path.join(fashion, f)
            ref = run(src, x)
            for mode, extra in (("inline", []), ("external", ["1024"])):
                out = os.path.join(tmp, mode, f)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                subprocess.run([exe, src, out, *extra], check=True)
                onnx.checker.check_model(out, full_check=True)
                got = run(out, x)
                same = all(np.array_equal(a, b) for a, b in zip(ref, got)) and len(ref) == len(got)
                diff = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(ref, got))
                ext = os.path.exists(out + ".data")
                print(f"{f:42s} {mode:8s} ext_file={ext!s:5s} max|diff|={diff:.3g} {'OK' if same else 'MISMATCH'}")
                failures += not same
    print("all exported models match ONNX Runtime bit for bit" if failures == 0 else f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
