#!/usr/bin/env python3
"""Peer GEMM timings at the shrink-kernels benchmark shapes, as JSON lines.

Peers: NumPy (OpenBLAS) f32, PyTorch CPU f32 / bf16 / torch._int_mm (s8×s8→s32),
ONNX Runtime MatMul (f32) and MatMulInteger (u8×s8→s32, B a constant initializer).
Y = A·B with A: M×K, B: K×N. Same output format as
`cargo run -p shrink-kernels --release --example kernel_table`.

usage: gemm_peers.py THREADS [MIN_SECONDS]
"""
import json
import os
import sys
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
MIN_S = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)

import numpy as np  # noqa: E402  (thread count must be set before import)

SHAPES = [(1024, 1024, 1024), (256, 4096, 1024), (1, 4096, 4096), (64, 784, 300), (3136, 576, 64)]


def median(fn):
    """(wall median, wall min, calling-thread CPU median): with 1 thread every
    peer computes on the calling thread, so its CPU time ignores the time
    other processes hold the (shared) core."""
    fn()
    ts, cs = [], []
    start = time.perf_counter()
    while len(ts) < 5 or (time.perf_counter() - start < MIN_S and len(ts) < 1000):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        cs.append(time.thread_time() - c)
        ts.append(time.perf_counter() - t)
    ts.sort()
    cs.sort()
    return ts[len(ts) // 2], ts[0], cs[len(cs) // 2]


def emit(kernel, shape, times, ops):
    m, k, n = shape
    med, best, cpu = times
    print(json.dumps({"kernel": kernel, "m": m, "k": k, "n": n, "threads": THREADS,
                      "median_s": med, "min_s": best, "cpu_median_s": cpu, "gops": ops / med / 1e9,
                      "gops_best": ops / best / 1e9, "gops_cpu": ops / max(cpu, 1e-9) / 1e9}), flush=True)


def ort_session(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_matmul(b, integer):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    k, n = b.shape
    if integer:
        a_info = helper.make_tensor_value_info("A", TensorProto.UINT8, ["M", k])
        y_info = helper.make_tensor_value_info("Y", TensorProto.INT32, ["M", n])
        inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(3, np.uint8), "za")]
        node = helper.make_node("MatMulInteger", ["A", "B", "za"], ["Y"])
    else:
        a_info = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["M", k])
        y_info = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])
        inits = [numpy_helper.from_array(b, "B")]
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    g = helper.make_graph([node], "mm", [a_info], [y_info], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort_session(model)


def main():
    import torch
    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(7)
    print(json.dumps({"kernel": "versions", "numpy": np.__version__, "torch": torch.__version__,
                      "onnxruntime": __import__("onnxruntime").__version__}), flush=True)
    for shape in SHAPES:
        m, k, n = shape
        ops = 2.0 * m * k * n
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        emit("numpy_f32", shape, median(lambda: np.matmul(a, b, out=out)), ops)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        to = torch.empty(m, n)
        with torch.inference_mode():
            emit("torch_f32", shape, median(lambda: torch.mm(ta, tb, out=to)), ops)
            ha, hb = ta.bfloat16(), tb.bfloat16()
            ho = torch.empty(m, n, dtype=torch.bfloat16)
            emit("torch_bf16", shape, median(lambda: torch.mm(ha, hb, out=ho)), ops)
            ia = torch.randint(-128, 127, (m, k), dtype=torch.int8)
            ib = torch.randint(-128, 127, (k, n), dtype=torch.int8)
            try:
                emit("torch_int_mm", shape, median(lambda: torch._int_mm(ia, ib)), ops)
            except RuntimeError as e:  # _int_mm has shape restrictions
                print(json.dumps({"kernel": "torch_int_mm", "m": m, "k": k, "n": n, "threads": THREADS,
                                  "error": str(e).splitlines()[0]}), flush=True)
        s = ort_matmul(b, False)
        emit("ort_matmul_f32", shape, median(lambda: s.run(None, {"A": a})), ops)
        ua = rng.integers(0, 256, (m, k), dtype=np.uint8)
        sb = rng.integers(-128, 128, (k, n), dtype=np.int8)
        s = ort_matmul(sb, True)
        emit("ort_matmulinteger", shape, median(lambda: s.run(None, {"A": ua})), ops)


if __name__ == "__main__":
    main()
