//! ONNX import against what the `onnx` Python package reports
//! (tests/fixtures/fashion_onnx.json, made by scripts/onnx-fixtures.py), and
//! over the whole ONNX backend node-test corpus.

mod common;

use serde_json::Value;
use shrink_graph::{onnx, DType, Dim, Graph, GraphError};
use std::collections::BTreeMap;

fn fixture() -> Value {
    let text = std::fs::read_to_string(common::fixture("fashion_onnx.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn dims_json(dims: &Option<Vec<Dim>>) -> Value {
    match dims {
        None => Value::Null,
        Some(d) => Value::Array(
            d.iter()
                .map(|d| match d {
                    Dim::Known(n) => Value::from(*n),
                    Dim::Symbol(s) => Value::from(s.as_str()),
                })
                .collect(),
        ),
    }
}

fn check_model(file: &str, want: &Value, g: &Graph) {
    let ctx = |what: &str| format!("{file}: {what}");
    // Opsets: "ai.onnx" and "" are one domain.
    let opsets: BTreeMap<String, i64> = want["opsets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let k = if k == "ai.onnx" { "" } else { k.as_str() };
            (k.to_string(), v.as_i64().unwrap())
        })
        .collect();
    assert_eq!(g.opsets, opsets, "{}", ctx("opsets"));
    assert_eq!(
        g.metadata.get("producer_name").map(String::as_str),
        want["producer_name"].as_str(),
        "{}",
        ctx("producer")
    );
    for (k, v) in want["metadata_props"].as_object().unwrap() {
        assert_eq!(
            g.metadata.get(k),
            Some(&v.as_str().unwrap().to_string()),
            "{}",
            ctx(k)
        );
    }

    let wn = want["nodes"].as_array().unwrap();
    assert_eq!(g.nodes.len(), wn.len(), "{}", ctx("node count"));
    for (n, w) in g.nodes.iter().zip(wn) {
        assert_eq!(n.name, w["name"].as_str().unwrap(), "{}", ctx("node order"));
        assert_eq!(
            n.op_type,
            w["op_type"].as_str().unwrap(),
            "{}",
            ctx(&n.name)
        );
        assert_eq!(n.domain, w["domain"].as_str().unwrap(), "{}", ctx(&n.name));
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(n.inputs, strs(&w["inputs"]), "{}", ctx(&n.name));
        assert_eq!(n.outputs, strs(&w["outputs"]), "{}", ctx(&n.name));
        let attrs: Vec<String> = n.attrs.keys().cloned().collect();
        assert_eq!(attrs, strs(&w["attrs"]), "{}", ctx(&n.name));
    }

    let wi = want["initializers"].as_object().unwrap();
    assert_eq!(
        g.initializers.len(),
        wi.len(),
        "{}",
        ctx("initializer count")
    );
    for (name, w) in wi {
        let t = g
            .initializers
            .get(name)
            .unwrap_or_else(|| panic!("{}", ctx(name)));
        assert_eq!(
            t.dtype().onnx_code() as i64,
            w["data_type"].as_i64().unwrap(),
            "{}",
            ctx(name)
        );
        let dims: Vec<u64> = w["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(shape, dims, "{}", ctx(name));
        let sum: f64 = t.to_f64_vec().iter().sum();
        let wsum = w["sum"].as_f64().unwrap();
        assert!(
            (sum - wsum).abs() <= 1e-6 * wsum.abs().max(1.0),
            "{}: sum {sum} vs {wsum}",
            ctx(name)
        );
    }

    for (key, vis) in [("inputs", &g.inputs), ("outputs", &g.outputs)] {
        let w = want[key].as_array().unwrap();
        assert_eq!(vis.len(), w.len(), "{}", ctx(key));
        for (v, w) in vis.iter().zip(w) {
            assert_eq!(v.name, w["name"].as_str().unwrap());
            assert_eq!(
                v.dtype.map_or(0, |d| d.onnx_code() as i64),
                w["elem_type"].as_i64().unwrap(),
                "{}",
                ctx(&v.name)
            );
            assert_eq!(dims_json(&v.shape), w["dims"], "{}", ctx(&v.name));
        }
    }
}

#[test]
fn fashion_models_match_onnx_python() {
    let fx = fixture();
    let models = fx["models"].as_object().unwrap();
    assert!(models.len() >= 14, "fixture lists {} models", models.len());
    for (file, want) in models {
        let g = onnx::load(common::fashion(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_model(file, want, &g);
    }
}

#[test]
fn lenet5_input_has_symbolic_batch() {
    let g = onnx::load(common::fashion("lenet5.onnx")).unwrap();
    let input = &g.inputs[0];
    assert_eq!(input.name, "input");
    let shape = input.shape.as_ref().unwrap();
    assert!(matches!(shape[0], Dim::Symbol(_)), "{shape:?}");
    assert_eq!(
        &shape[1..],
        &[Dim::Known(1), Dim::Known(28), Dim::Known(28)]
    );
}

/// Every node test model of ONNX 1.17's backend data imports, except those
/// using element types shrink does not have (float8, complex), which must fail
/// with an error naming the type.
#[test]
fn backend_node_models_import() {
    let tests = common::backend_node_tests();
    assert!(tests.len() > 1000, "only {} node tests found", tests.len());
    let mut ok = 0;
    let mut failures = Vec::new();
    for dir in &tests {
        let path = dir.join("model.onnx");
        match onnx::load(&path) {
            Ok(g) => {
                ok += 1;
                assert!(!g.outputs.is_empty(), "{}", path.display());
            }
            Err(e) => {
                let msg = e.to_string();
                let exotic = ["FLOAT8", "COMPLEX", "type-proto", "local function"]
                    .iter()
                    .any(|k| msg.contains(k));
                assert!(
                    matches!(e, GraphError::File { .. }) && msg.contains("model.onnx"),
                    "error does not name the file: {msg}"
                );
                if !exotic {
                    failures.push(msg);
                }
            }
        }
    }
    eprintln!("{ok} of {} backend node models import", tests.len());
    assert!(
        failures.is_empty(),
        "unexpected import failures:\n{}",
        failures.join("\n")
    );
}

/// The test data's input/output tensors load with the shapes the models declare.
#[test]
fn backend_tensor_pb_files_load() {
    let mut checked = 0;
    for dir in common::backend_node_tests() {
        let Ok(g) = onnx::load(dir.join("model.onnx")) else {
            continue;
        };
        let data = dir.join("test_data_set_0");
        for (i, out) in g.outputs.iter().enumerate() {
            let pb = data.join(format!("output_{i}.pb"));
            if !pb.is_file() {
                continue;
            }
            let Some(shape) = out.concrete_shape() else {
                continue;
            };
            match onnx::load_tensor_pb(&pb) {
                Ok(t) => {
                    assert_eq!(t.shape(), shape.as_slice(), "{}", pb.display());
                    // onnx's test generator writes bfloat16 data as uint16 bit
                    // patterns (numpy has no bfloat16); the bits are the same.
                    let declared = out.dtype.unwrap();
                    let stored = t.dtype();
                    assert!(
                        stored == declared || (declared, stored) == (DType::BF16, DType::U16),
                        "{}: stored {stored}, declared {declared}",
                        pb.display()
                    );
                    checked += 1;
                }
                Err(e) => {
                    // Sequence/optional outputs are not TensorProtos.
                    assert!(out.dtype.is_none(), "{}: {e}", pb.display());
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} output tensors checked");
}
