//! Tensor storage forms as onnx's own Python helpers write them
//! (tests/fixtures/dtypes.onnx and external/, from scripts/onnx-fixtures.py):
//! typed fields and raw data for every dtype, packed int4, strings, every
//! Constant value variant, sparse values, external data, symbolic dims.

mod common;

use serde_json::Value;
use shrink_graph::onnx::{self, SaveOptions};
use shrink_graph::{Dim, Graph, Tensor, TensorData};

fn expected() -> Value {
    let text = std::fs::read_to_string(common::fixture("tensors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn check_tensor(what: &str, t: &Tensor, w: &Value) {
    assert_eq!(
        t.dtype().onnx_code() as i64,
        w["data_type"].as_i64().unwrap(),
        "{what}"
    );
    let dims: Vec<usize> = w["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(t.shape(), dims.as_slice(), "{what}");
    let vals = w["values"].as_array().unwrap();
    assert_eq!(t.len(), vals.len(), "{what}");
    match t.data() {
        TensorData::String(s) => {
            let want: Vec<&str> = vals.iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(s, &want, "{what}");
        }
        TensorData::Bool(b) => {
            let want: Vec<bool> = vals.iter().map(|v| v.as_bool().unwrap()).collect();
            assert_eq!(b, &want, "{what}");
        }
        TensorData::U64(u) => {
            let want: Vec<u64> = vals.iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(u, &want, "{what}");
        }
        d if d.dtype().is_float() => {
            for (g, v) in d.to_f64_vec().iter().zip(vals) {
                let v = v.as_f64().unwrap();
                assert!((g - v).abs() <= 1e-6 * v.abs(), "{what}: {g} vs {v}");
            }
        }
        d => {
            let want: Vec<i64> = vals.iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(d.to_i64_vec(), want, "{what}");
        }
    }
}

fn check_all(g: &Graph, file: &str) {
    let exp = expected();
    let want = exp[file].as_object().unwrap();
    for (name, w) in want {
        let t = g
            .initializers
            .get(name)
            .unwrap_or_else(|| panic!("{file}: no initializer {name}"));
        check_tensor(&format!("{file}: {name}"), t, w);
    }
}

#[test]
fn every_storage_form_and_constant_variant_reads_back() {
    let g = onnx::load(common::fixture("dtypes.onnx")).unwrap();
    check_all(&g, "dtypes.onnx");
    // Constant nodes became initializers; only the Add remains.
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].op_type, "Add");
    // The initializer listed as an input stays both.
    assert_eq!(g.input_names(), vec!["x", "typed_f32"]);
    assert!(g.initializers.contains_key("typed_f32"));
    assert_eq!(g.opset(), 21);
    assert_eq!(g.metadata["producer_name"], "fixture");
    assert_eq!(g.metadata["author"], "scripts/onnx-fixtures.py");
    assert_eq!(
        g.value_info["partial"].shape,
        Some(vec![
            Dim::Symbol("n".into()),
            Dim::Known(3),
            Dim::Symbol("?".into())
        ])
    );
    assert_eq!(
        g.outputs[0].shape,
        Some(vec![Dim::Symbol("batch".into()), Dim::Known(2)])
    );

    // And survives export (raw data, int4 repacked) unchanged.
    let back = onnx::from_bytes(&onnx::to_bytes(&g).unwrap(), None).unwrap();
    assert_eq!(back, g);
}

#[test]
fn external_data_written_by_onnx_reads_back() {
    let path = common::fixture("external/model.onnx");
    let g = onnx::load(&path).unwrap();
    check_all(&g, "external/model.onnx");

    // Re-saving with external data round-trips too.
    let tmp = common::TempDir::new("ext-fixture");
    let out = tmp.path().join("copy.onnx");
    let opts = SaveOptions {
        external_data_threshold: Some(0),
    };
    onnx::save_with(&g, &out, &opts).unwrap();
    assert!(tmp.path().join("copy.onnx.data").is_file());
    let mut back = onnx::load(&out).unwrap();
    // The source names no producer, so export signs it as shrink's.
    assert_eq!(
        back.metadata.remove("producer_name").as_deref(),
        Some("shrink")
    );
    back.metadata.remove("producer_version");
    assert_eq!(back, g);
}
