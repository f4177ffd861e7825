#!/usr/bin/env python3
"""Writes the reference fixtures shrink-graph's ONNX tests compare against.

What the `onnx` Python package (1.17) reports about the fashion models in
$SHRINK_SHARED/data/fashion (default /work/shared/data/fashion): nodes,
initializers (Constant node values included, as shrink turns them into
initializers), inputs/outputs, opsets, metadata, and the types onnx's shape
inference (data_prop=True) gives every value.  Rust tests read the JSON;
they never need Python.

Usage: scripts/onnx-fixtures.py [fashion_dir]
"""
import json
import os
import sys

import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/shrink-graph/tests/fixtures")


def dims_of(vi):
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(d.dim_value)
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append("?")
    return out


def value(vi):
    return {"name": vi.name, "elem_type": vi.type.tensor_type.elem_type, "dims": dims_of(vi)}


def describe(path):
    m = onnx.load(path)
    g = m.graph
    inits = {}
    for t in g.initializer:
        a = numpy_helper.to_array(t)
        inits[t.name] = {"data_type": t.data_type, "dims": list(t.dims),
                         "sum": float(a.astype("float64").sum())}
    nodes = []
    for n in g.node:
        if n.op_type == "Constant":
            t = n.attribute[0].t
            a = numpy_helper.to_array(t)
            inits[n.output[0]] = {"data_type": t.data_type, "dims": list(t.dims),
                                  "sum": float(a.astype("float64").sum())}
            continue
        nodes.append({"name": n.name, "op_type": n.op_type, "domain": n.domain,
                      "inputs": list(n.input), "outputs": list(n.output),
                      "attrs": sorted(a.name for a in n.attribute)})
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True).graph
    produced = {o for n in g.node for o in n.output}
    # ORT's quantizer leaves stale value_info entries for values it renamed.
    shapes = {v.name: value(v) for v in list(inferred.value_info) + list(inferred.output)
              if v.name in produced}
    # Reference MACs per sample for the compute ops, from onnx's inferred shapes.
    known = dict(shapes)
    for t in g.initializer:
        known[t.name] = {"dims": list(t.dims)}
    for n in g.node:
        if n.op_type == "Constant":
            known[n.output[0]] = {"dims": list(n.attribute[0].t.dims)}

    def per_sample(dims):
        out = 1
        for d in dims:
            if isinstance(d, int):
                out *= d
        return out

    macs = {}
    for n in g.node:
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = known[n.input[3 if n.op_type == "QLinearConv" else 1]]["dims"]
            k = 1
            for d in w[1:]:
                k *= d
            macs[n.name] = per_sample(known[n.output[0]]["dims"]) * k
        elif n.op_type == "Gemm":
            a = known[n.input[0]]["dims"]
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            macs[n.name] = per_sample(known[n.output[0]]["dims"]) * (a[0] if trans_a else a[1])
        elif n.op_type in ("MatMul", "MatMulInteger"):
            macs[n.name] = per_sample(known[n.output[0]]["dims"]) * known[n.input[0]]["dims"][-1]
    return {
        "macs": macs,
        "inferred": shapes,
        "ir_version": m.ir_version,
        "producer_name": m.producer_name,
        "opsets": {o.domain: o.version for o in m.opset_import},
        "metadata_props": {p.key: p.value for p in m.metadata_props},
        "inputs": [value(v) for v in g.input],
        "outputs": [value(v) for v in g.output],
        "nodes": nodes,
        "initializers": inits,
    }


def main():
    fashion = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.environ.get("SHRINK_SHARED", "/work/shared"), "data/fashion")
    models = {}
    for f in sorted(os.listdir(fashion)):
        if f.endswith(".onnx"):
            models[f] = describe(os.path.join(fashion, f))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "fashion_onnx.json"), "w") as fh:
        json.dump({"onnx_version": onnx.__version__, "models": models}, fh, indent=0, sort_keys=True)
        fh.write("\n")
    print(f"wrote {len(models)} models to {OUT}/fashion_onnx.json")


if __name__ == "__main__":
    main()
