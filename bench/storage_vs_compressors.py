#!/usr/bin/env python3
"""Deep Compression storage vs general-purpose compressors (issue #7 acceptance).

Magnitude-prunes LeNet-300-100's weight matrices to 90% per layer, shares the
survivors' weights with 5-bit linear-init k-means (32 centroids per layer),
stores the model with shrink (relative indices + codebook + Huffman, `dc5`)
and compares the bytes with zstd -19, xz -9 and zlib -9 over the same codes.

"The same codes": one byte per weight, 0 = pruned, 1..32 = cluster index + 1
(row-major, layers concatenated) plus each layer's 32 f32 centroids — the
information shrink stores for the weights. The general compressors also get a
second chance on the raw pruned+shared f32 weights.

Usage: python3 bench/storage_vs_compressors.py [--shrink target/release/shrink]
Needs numpy and onnx (Python), the `zstd` and `xz` CLI tools (else skipped).
Writes bench/out/lenet300100_p90_q5.{onnx,shrink} and prints a Markdown table.
"""
import argparse, json, os, shutil, struct, subprocess, sys, time, zlib, lzma
import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "/work/shared/data/fashion"


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", (k, v["dtype"])
        out[k] = np.frombuffer(blob[a:b], dtype=np.float32).reshape(v["shape"])
    return out


def kmeans_linear(x, k, iters=30):
    """1-D k-means, centroids initialised linearly over [min, max] (Han et al.)."""
    c = np.linspace(x.min(), x.max(), k).astype(np.float64)
    xs = x.astype(np.float64)
    for _ in range(iters):
        idx = np.abs(xs[:, None] - c[None, :]).argmin(1)
        for j in range(k):
            m = idx == j
            if m.any():
                c[j] = xs[m].mean()
    idx = np.abs(xs[:, None] - c[None, :]).argmin(1)
    return c.astype(np.float32), idx


def tool_size(cmd, data):
    if shutil.which(cmd[0]) is None:
        return None
    return len(subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shrink", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "shrink"))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--bits", type=int, default=5)
    args = ap.parse_args()
    out_dir = os.path.join(HERE, "out")
    os.makedirs(out_dir, exist_ok=True)

    sd = load_safetensors(os.path.join(DATA, "lenet300100.safetensors"))
    model = onnx.load(os.path.join(DATA, "lenet300100.onnx"))
    k = 1 << args.bits
    codes_all, centroid_bytes, raw_f32 = [], b"", b""
    layers = []
    for init in model.graph.initializer:
        w = sd[init.name]
        assert np.array_equal(w, numpy_helper.to_array(init)), init.name
        if w.ndim != 2:
            continue
        flat = w.ravel()
        keep = int(round(flat.size * (1 - args.sparsity)))
        thr = np.sort(np.abs(flat))[::-1][keep - 1]
        mask = np.abs(flat) >= thr
        c, idx = kmeans_linear(flat[mask], k)
        q = np.zeros_like(flat)
        q[mask] = c[idx]
        codes = np.zeros(flat.size, dtype=np.uint8)
        codes[mask] = idx.astype(np.uint8) + 1
        codes_all.append(codes)
        centroid_bytes += c.tobytes()
        raw_f32 += q.astype(np.float32).tobytes()
        init.CopyFrom(numpy_helper.from_array(q.reshape(w.shape), init.name))
        layers.append((init.name, w.shape, int(mask.sum()), len(np.unique(q[mask]))))
    codes = np.concatenate(codes_all).tobytes() + centroid_bytes
    onnx_path = os.path.join(out_dir, "lenet300100_p90_q5.onnx")
    shrink_path = os.path.join(out_dir, "lenet300100_p90_q5.shrink")
    onnx.save(model, onnx_path)

    t0 = time.perf_counter()
    subprocess.run([args.shrink, "encode", onnx_path, "--weights", f"dc{args.bits}", "-o", shrink_path], check=True)
    t_enc = time.perf_counter() - t0
    decoded = os.path.join(out_dir, "decoded.onnx")
    t0 = time.perf_counter()
    subprocess.run([args.shrink, "export", shrink_path, "-o", decoded], check=True, stderr=subprocess.DEVNULL)
    t_dec = time.perf_counter() - t0
    # the decoded model holds exactly the pruned + shared weights
    back = {t.name: numpy_helper.to_array(t) for t in onnx.load(decoded).graph.initializer}
    for init in model.graph.initializer:
        assert np.array_equal(back[init.name], numpy_helper.to_array(init)), init.name
    info = json.loads(subprocess.run([args.shrink, "inspect", shrink_path, "--json"], check=True,
                                     stdout=subprocess.PIPE).stdout)
    weight_rows = [t for t in info["tensors"] if len(t["shape"]) == 2]
    shrink_weights = sum(t["stored_bytes"] for t in weight_rows)

    rows = [("shrink relative index + codebook + Huffman (dc5), weight tensors", shrink_weights)]
    rows.append(("shrink whole .shrink file (biases, graph, provenance, headers)", info["file_bytes"]))
    for name, cmd in [("zstd -19", ["zstd", "-19", "-c", "-q"]), ("xz -9", ["xz", "-9", "-c"]),
                      ("xz -9e", ["xz", "-9e", "-c"])]:
        s = tool_size(cmd, codes)
        if s is not None:
            rows.append((f"{name} over the codes (1 byte/weight + centroids)", s))
    rows.append(("zlib -9 over the codes", len(zlib.compress(codes, 9))))
    for name, cmd in [("zstd -19", ["zstd", "-19", "-c", "-q"]), ("xz -9", ["xz", "-9", "-c"])]:
        s = tool_size(cmd, raw_f32)
        if s is not None:
            rows.append((f"{name} over the pruned+shared f32 weights", s))
    rows.append(("zlib -9 over the pruned+shared f32 weights", len(zlib.compress(raw_f32, 9))))

    print(f"LeNet-300-100, per-layer magnitude pruning to {args.sparsity:.0%}, "
          f"{args.bits}-bit linear k-means per layer")
    for name, shape, kept, uniq in layers:
        print(f"  {name} {list(shape)}: {kept} kept, {uniq} shared values")
    print(f"\n| storage | bytes | KB |\n|---|---:|---:|")
    for name, size in rows:
        print(f"| {name} | {size} | {size / 1000:.1f} |")
    print("\nper layer (shrink inspect):")
    print("| tensor | kept % | idx bits | stored B | P | P+Q | P+Q+H |\n|---|---:|---:|---:|---:|---:|---:|")
    for t in weight_rows:
        print(f"| {t['name']} | {t['kept_percent']:.2f} | {t['index_bits']} | {t['stored_bytes']} | "
              f"{t['bytes_after_p']} | {t['bytes_after_pq']} | {t['bytes_after_pqh']} |")
    print("\nHuffman streams (coded vs order-0 entropy):")
    print("| tensor | stream | symbols | entropy B | stored B | over entropy |\n|---|---|---:|---:|---:|---:|")
    for t in weight_rows:
        for s in t["streams"]:
            if s["huffman"]:
                h = s["entropy_bits"] / 8
                print(f"| {t['name']} | {s['name']} | {s['symbols']} | {h:.1f} | {s['stored_bytes']} | "
                      f"{100 * (s['stored_bytes'] / h - 1):+.2f}% |")
    fp32 = info["fp32_bytes"]
    print(f"\nfp32 weights {fp32} B; .shrink file {info['file_bytes']} B = {fp32 / info['file_bytes']:.1f}x")
    print(f"shrink encode (process, incl. ONNX load) {t_enc * 1e3:.0f} ms; "
          f"shrink export of the .shrink (decode + ONNX write) {t_dec * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
