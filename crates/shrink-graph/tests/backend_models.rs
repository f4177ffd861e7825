//! The backend data's model suites beyond single-node tests: real CNNs
//! (light/), old PyTorch exports (pytorch-converted/, pytorch-operator/) and
//! simple/ graphs import, validate, round-trip, and their inferred output
//! shapes equal the stored expected outputs.

mod common;

use shrink_graph::{infer_shapes, onnx, validate};

#[test]
fn other_backend_suites_import_validate_and_round_trip() {
    let models = common::backend_other_models();
    assert!(models.len() > 100, "only {} models", models.len());
    let (mut imported, mut shapes_checked) = (0, 0);
    for path in &models {
        let what = path.display().to_string();
        let mut g = onnx::load(path).unwrap_or_else(|e| panic!("{e}"));
        imported += 1;
        validate(&g).unwrap_or_else(|e| panic!("{what}: {e}"));
        let bytes = onnx::to_bytes(&g).unwrap();
        let back = onnx::from_bytes(&bytes, None).unwrap();
        assert_eq!(onnx::to_bytes(&back).unwrap(), bytes, "{what}");

        // Expected output: light/NAME_output_0.pb or DIR/test_data_set_0/output_0.pb.
        let pb = if path.file_name().is_some_and(|f| f == "model.onnx") {
            path.parent().unwrap().join("test_data_set_0/output_0.pb")
        } else {
            path.with_file_name(format!(
                "{}_output_0.pb",
                path.file_stem().unwrap().to_string_lossy()
            ))
        };
        let Ok(want) = onnx::load_tensor_pb(&pb) else {
            continue;
        };
        g.value_info.clear();
        g.outputs[0].shape = None;
        g.outputs[0].dtype = None;
        infer_shapes(&mut g).unwrap();
        if let Some(s) = g.outputs[0].concrete_shape() {
            assert_eq!(s, want.shape(), "{what}: inferred output shape");
            assert_eq!(g.outputs[0].dtype, Some(want.dtype()), "{what}");
            shapes_checked += 1;
        }
        // Not inferred: Expand with a runtime shape, sequences, string ops.
    }
    eprintln!("{imported} models imported, {shapes_checked} output shapes inferred exactly");
    assert!(
        shapes_checked >= 120,
        "only {shapes_checked} output shapes inferred"
    );
}
