#!/usr/bin/env python3
"""Checks shrink's ONNX export against ONNX Runtime.

1. Each fashion model is loaded by shrink and saved again (inline, and with
   external data for tensors >= 1 KiB) through the `onnx_resave` example; the
   copy must pass onnx.checker (full check) and give bit-identical outputs to
   the original in ONNX Runtime on the 256 sample test images.
2. With --backend: every ONNX backend node test model shrink imports is
   re-saved the same way and run in ONNX Runtime on its test inputs, original
   and copy; outputs must be identical (NaN in the same places). Models ORT
   itself cannot run are counted and skipped.

Usage: scripts/check-onnx-export.py [--backend] [fashion_dir]
"""
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ort.set_default_logger_severity(3)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def same(a, b):
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) \
            and all(same(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return np.array_equal(a, b, equal_nan=True)
    return np.array_equal(a, b)


def resave_tool():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "shrink-graph", "--example", "onnx_resave"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "examples", "onnx_resave")


def check_fashion(exe, fashion, tmp):
    x = (np.load(os.path.join(fashion, "test_sample_x.npy")).astype(np.float32) / 255.0)[:, None]
    failures = 0
    for f in sorted(os.listdir(fashion)):
        if not f.endswith(".onnx"):
            continue
        src = os.path.join(fashion, f)
        s = session(src)
        ref = s.run(None, {s.get_inputs()[0].name: x})
        for mode, extra in (("inline", []), ("external", ["--external-threshold", "1024"])):
            out = os.path.join(tmp, mode, f)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            subprocess.run([exe, *extra, src, out], check=True)
            onnx.checker.check_model(out, full_check=True)
            s2 = session(out)
            got = s2.run(None, {s2.get_inputs()[0].name: x})
            ok = len(ref) == len(got) and all(same(a, b) for a, b in zip(ref, got))
            diff = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in zip(ref, got))
            ext = os.path.exists(out + ".data")
            print(f"{f:42s} {mode:8s} ext_file={ext!s:5s} max|diff|={diff:.3g} {'OK' if ok else 'MISMATCH'}")
            failures += not ok
    return failures


def check_backend(exe, tmp):
    cache = os.environ.get("SHRINK_CACHE", os.path.expanduser("~/.cache/shrink"))
    dirs = sorted(d for d in glob.glob(os.path.join(cache, "onnx-backend/node/*")) if os.path.isfile(os.path.join(d, "model.onnx")))
    args = []
    for d in dirs:
        args += [os.path.join(d, "model.onnx"), os.path.join(tmp, "backend", os.path.basename(d) + ".onnx")]
    os.makedirs(os.path.join(tmp, "backend"), exist_ok=True)
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    not_imported = sum(1 for line in r.stderr.splitlines() if line.startswith("FAIL"))
    counts = {"identical": 0, "mismatch": 0, "nondeterministic": 0, "ort_rejects_original": 0, "ort_rejects_copy": 0, "not_imported": not_imported}
    for d in dirs:
        copy = os.path.join(tmp, "backend", os.path.basename(d) + ".onnx")
        if not os.path.exists(copy):
            continue
        try:
            feeds = {}
            s = session(os.path.join(d, "model.onnx"))
            names = [i.name for i in s.get_inputs()]
            for k, name in enumerate(names):
                t = onnx.TensorProto()
                with open(os.path.join(d, "test_data_set_0", f"input_{k}.pb"), "rb") as fh:
                    t.ParseFromString(fh.read())
                feeds[name] = numpy_helper.to_array(t)
            ref = s.run(None, feeds)
            again = session(os.path.join(d, "model.onnx")).run(None, feeds)
        except Exception:
            counts["ort_rejects_original"] += 1
            continue
        if not (len(ref) == len(again) and all(same(a, b) for a, b in zip(ref, again))):
            counts["nondeterministic"] += 1  # random ops without a seed
            continue
        try:
            got = session(copy).run(None, feeds)
        except Exception as e:
            counts["ort_rejects_copy"] += 1
            print(f"ORT rejects shrink's copy of {os.path.basename(d)}: {str(e)[:200]}")
            continue
        if len(ref) == len(got) and all(same(a, b) for a, b in zip(ref, got)):
            counts["identical"] += 1
        else:
            counts["mismatch"] += 1
            print(f"MISMATCH {os.path.basename(d)}")
    print("backend node models:", counts)
    return counts["mismatch"] + counts["ort_rejects_copy"]


def main():
    argv = sys.argv[1:]
    backend = "--backend" in argv
    argv = [a for a in argv if a != "--backend"]
    fashion = argv[0] if argv else os.path.join(os.environ.get("SHRINK_SHARED", "/work/shared"), "data/fashion")
    exe = resave_tool()
    with tempfile.TemporaryDirectory() as tmp:
        failures = check_fashion(exe, fashion, tmp)
        print("fashion: all exported models match ONNX Runtime bit for bit" if failures == 0 else f"fashion: {failures} mismatches")
        if backend:
            failures += check_backend(exe, tmp)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
