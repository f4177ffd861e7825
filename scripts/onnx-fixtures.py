#!/usr/bin/env python3
"""Writes the reference fixtures shrink-graph's ONNX tests compare against.

What the `onnx` Python package (1.17) reports about the fashion models in
$SHRINK_SHARED/data/fashion (default /work/shared/data/fashion): nodes,
initializers (Constant node values included, as shrink turns them into
initializers), inputs/outputs, opsets, metadata, and the types onnx's shape
inference (data_prop=True) gives every value; plus small models made with
onnx's helpers (dtypes.onnx: every tensor storage form and Constant variant;
external/: weights in an external file) and their expected values.  Rust tests read the JSON;
they never need Python.

Usage: scripts/onnx-fixtures.py [fashion_dir]
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


# (name, ONNX type, dims, values): values exactly representable in the type.
DTYPE_CASES = [
    ("f32", TensorProto.FLOAT, [2, 2], [1.5, -2.25, 0.0, 3e-8]),
    ("f64", TensorProto.DOUBLE, [3], [1.0 / 3.0, -1e300, 2.5]),
    ("f16", TensorProto.FLOAT16, [3], [1.0, -2.0, 0.099975586]),
    ("bf16", TensorProto.BFLOAT16, [2], [1.5, -2.0]),
    ("i8", TensorProto.INT8, [3], [-128, 0, 127]),
    ("u8", TensorProto.UINT8, [3], [0, 1, 255]),
    ("i16", TensorProto.INT16, [2], [-32768, 32767]),
    ("u16", TensorProto.UINT16, [2], [0, 65535]),
    ("i32", TensorProto.INT32, [2], [-2147483648, 2147483647]),
    ("u32", TensorProto.UINT32, [2], [1, 4000000000]),
    ("i64", TensorProto.INT64, [2], [-(2 ** 62), 2 ** 62 + 1]),
    ("u64", TensorProto.UINT64, [2], [1, 2 ** 63 + 5]),
    ("bool", TensorProto.BOOL, [3], [True, False, True]),
    ("i4", TensorProto.INT4, [5], [-8, -1, 0, 7, 3]),
    ("u4", TensorProto.UINT4, [5], [0, 15, 1, 8, 9]),
]


def jsonable(v):
    return [bool(x) if isinstance(x, (bool, np.bool_)) else (int(x) if isinstance(x, (int, np.integer)) else float(x)) for x in v]


def dtype_fixture(out_dir):
    """A model whose tensors use every storage form shrink must read."""
    inits, expect = [], {}
    for name, dt, dims, vals in DTYPE_CASES:
        for raw in (False, True):
            tname = f"{'raw' if raw else 'typed'}_{name}"
            if raw and dt in (TensorProto.INT4, TensorProto.UINT4):
                # helper.make_tensor(raw=True) wants pre-packed bytes.
                packed = onnx.helper.pack_float32_to_4bit(np.array(vals, np.float32), dt == TensorProto.INT4)
                t = helper.make_tensor(tname, dt, dims, packed.tobytes(), raw=True)
            elif raw:
                t = numpy_helper.from_array(np.array(vals, dtype=helper.tensor_dtype_to_np_dtype(dt)).reshape(dims), tname)
                if dt == TensorProto.BFLOAT16:
                    continue
            else:
                t = helper.make_tensor(tname, dt, dims, vals)
            inits.append(t)
            expect[tname] = {"data_type": dt, "dims": dims, "values": jsonable(vals)}
    strings = helper.make_tensor("typed_string", TensorProto.STRING, [2], [b"hello", "\u00e9t\u00e9".encode()])
    inits.append(strings)
    expect["typed_string"] = {"data_type": TensorProto.STRING, "dims": [2], "values": ["hello", "\u00e9t\u00e9"]}

    consts = [
        ("c_value", helper.make_tensor("v", TensorProto.FLOAT, [2], [1.0, 2.0]), "value", TensorProto.FLOAT, [2], [1.0, 2.0]),
        ("c_float", 0.5, "value_float", TensorProto.FLOAT, [], [0.5]),
        ("c_floats", [0.5, 1.5], "value_floats", TensorProto.FLOAT, [2], [0.5, 1.5]),
        ("c_int", 7, "value_int", TensorProto.INT64, [], [7]),
        ("c_ints", [1, -2, 3], "value_ints", TensorProto.INT64, [3], [1, -2, 3]),
        ("c_string", "abc", "value_string", TensorProto.STRING, [], ["abc"]),
        ("c_strings", ["a", "b"], "value_strings", TensorProto.STRING, [2], ["a", "b"]),
    ]
    nodes = []
    for out, val, attr, dt, dims, vals in consts:
        nodes.append(helper.make_node("Constant", [], [out], **{attr: val}))
        expect[out] = {"data_type": dt, "dims": dims, "values": vals}
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("sv", TensorProto.FLOAT, [2], [5.0, 6.0]),
        helper.make_tensor("si", TensorProto.INT64, [2], [1, 4]), [2, 3])
    nodes.append(helper.make_node("Constant", [], ["c_sparse"], sparse_value=sparse))
    expect["c_sparse"] = {"data_type": TensorProto.FLOAT, "dims": [2, 3], "values": [0, 5, 0, 0, 6, 0]}
    nodes.append(helper.make_node("Add", ["x", "typed_f32"], ["y"], name="add"))

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    # An initializer also listed as a graph input (old PyTorch style).
    w_in = helper.make_tensor_value_info("typed_f32", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    vi = helper.make_tensor_value_info("partial", TensorProto.FLOAT, ["n", 3, None])
    outs = [y] + [helper.make_tensor_value_info(c[0], c[3], c[4]) for c in consts]
    graph = helper.make_graph(nodes, "dtypes", [x, w_in], outs, initializer=inits, value_info=[vi])
    model = helper.make_model(graph, producer_name="fixture", opset_imports=[helper.make_opsetid("", 21)])
    helper.set_model_props(model, {"author": "scripts/onnx-fixtures.py"})
    onnx.save(model, os.path.join(out_dir, "dtypes.onnx"))
    return expect


def external_fixture(out_dir):
    """A model whose weights onnx itself moved to an external file."""
    d = os.path.join(out_dir, "external")
    os.makedirs(d, exist_ok=True)
    w = np.arange(16, dtype=np.float32).reshape(4, 4) / 8.0
    k = np.array([3, -1, 4], dtype=np.int64)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(k, "k")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, os.path.join(d, "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return {"w": {"data_type": 1, "dims": [4, 4], "values": jsonable(w.ravel())},
            "k": {"data_type": 7, "dims": [3], "values": jsonable(k)}}


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
    expect = {"dtypes.onnx": dtype_fixture(OUT), "external/model.onnx": external_fixture(OUT)}
    with open(os.path.join(OUT, "tensors.json"), "w") as fh:
        json.dump(expect, fh, indent=0, sort_keys=True)
        fh.write("\n")
    print(f"wrote dtypes.onnx, external/, tensors.json to {OUT}")


if __name__ == "__main__":
    main()
