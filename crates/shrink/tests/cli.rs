//! The `shrink` binary on bad input: every case ends in a clear error that
//! names the file, input, node or op — and never in a panic.

use shrink_graph::{onnx, Attr, Dim, Graph, Node, ValueInfo};
use shrink_tensor::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn shrink(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shrink"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked"),
        "shrink {args:?} panicked:\n{stderr}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        stderr,
    )
}

fn shared(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(p)
        .display()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shrink-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// y = x * w with one weight, optionally an unknown op in between.
fn tiny_graph(w: f32, op: &str) -> Graph {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), 17);
    g.inputs.push(ValueInfo::new(
        "x",
        DType::F32,
        vec![Dim::Symbol("N".into()), Dim::Known(3)],
    ));
    g.outputs.push(ValueInfo::new(
        "y",
        DType::F32,
        vec![Dim::Symbol("N".into()), Dim::Known(3)],
    ));
    g.initializers.insert(
        "w".into(),
        Tensor::from_vec(vec![3], vec![w, 1.0, 2.0]).unwrap(),
    );
    g.nodes.push(Node::new("scale", "Mul", &["x", "w"], &["t"]));
    g.nodes
        .push(Node::new("mystery", op, &["t"], &["y"]).with("alpha", Attr::Float(1.0)));
    g
}

fn write_npy(path: &Path, t: &Tensor) {
    shrink_data::npy::write_npy(path, t).unwrap();
}

#[test]
fn missing_model_file_is_named() {
    let (ok, _, err) = shrink(&["inspect", "/nonexistent/model.onnx"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model.onnx"), "{err}");
}

#[test]
fn truncated_and_corrupt_onnx_are_errors() {
    let bytes = std::fs::read(shared("fashion/lenet5.onnx")).unwrap();
    for cut in [10, 1000, bytes.len() / 2, bytes.len() - 7] {
        let p = tmp(&format!("cut{cut}.onnx"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let (ok, _, err) = shrink(&["inspect", p.to_str().unwrap()]);
        assert!(!ok, "truncated at {cut} was accepted");
        assert!(
            err.contains(p.to_str().unwrap()),
            "error does not name the file: {err}"
        );
    }
    let p = tmp("garbage.onnx");
    std::fs::write(
        &p,
        (0..4000u32)
            .map(|i| (i.wrapping_mul(2654435761u32) >> 24) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let (ok, _, err) = shrink(&["run", p.to_str().unwrap(), "--input", "x.npy"]);
    assert!(!ok);
    assert!(err.contains("garbage.onnx"), "{err}");
}

#[test]
fn wrong_input_shape_and_dtype_are_named() {
    let model = shared("fashion/lenet5.onnx");
    let bad_shape = tmp("bad_shape.npy");
    write_npy(&bad_shape, &Tensor::zeros(DType::F32, vec![2, 1, 27, 28]));
    let (ok, _, err) = shrink(&["run", &model, "--input", bad_shape.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("input") && err.contains("shape"), "{err}");
    let bad_dtype = tmp("bad_dtype.npy");
    write_npy(&bad_dtype, &Tensor::zeros(DType::F64, vec![2, 1, 28, 28]));
    let (ok, _, err) = shrink(&["run", &model, "--input", bad_dtype.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("dtype") && err.contains("f64"), "{err}");
}

#[test]
fn unsupported_op_names_node_op_and_opset() {
    let p = tmp("unsupported.onnx");
    onnx::save(&tiny_graph(1.0, "FrobnicateV2"), &p).unwrap();
    let x = tmp("x3.npy");
    write_npy(&x, &Tensor::zeros(DType::F32, vec![1, 3]));
    let (ok, _, err) = shrink(&["run", p.to_str().unwrap(), "--input", x.to_str().unwrap()]);
    assert!(!ok);
    for needle in ["FrobnicateV2", "mystery", "opset 17"] {
        assert!(err.contains(needle), "error lacks {needle}: {err}");
    }
}

#[test]
fn nan_weights_warn_but_run() {
    let p = tmp("nan.onnx");
    onnx::save(&tiny_graph(f32::NAN, "Relu"), &p).unwrap();
    let x = tmp("x3b.npy");
    write_npy(
        &x,
        &Tensor::from_vec(vec![1, 3], vec![1f32, 1.0, 1.0]).unwrap(),
    );
    let (ok, out, err) = shrink(&["run", p.to_str().unwrap(), "--input", x.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("'w'") && err.contains("NaN"),
        "{err}"
    );
    assert!(out.contains("NaN"), "{out}");
}

/// The README's first command: the demo runs offline, and its int8 model
/// (calibrated on 64 embedded images) stays within 1.5 points of fp32 on the
/// other 192 and is smaller — read from the table it prints.
#[test]
fn demo_compresses_the_embedded_model() {
    let (ok, out, err) = shrink(&["demo", "--threads", "1"]);
    assert!(ok, "demo failed: {err}");
    let row = |name: &str| -> Vec<f64> {
        let section = out
            .split("compress: int8")
            .nth(1)
            .expect("demo prints the compression section");
        let line = section
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in:\n{section}"));
        line.split_whitespace()
            .skip(1)
            .map(|v| v.parse::<f64>().unwrap())
            .collect()
    };
    let (fp32, int8) = (row("fp32 "), row("int8 "));
    assert!(fp32[0] > 85.0, "fp32 top-1 {}", fp32[0]);
    assert!(
        fp32[0] - int8[0] <= 1.5,
        "int8 {} vs fp32 {}",
        int8[0],
        fp32[0]
    );
    assert!(
        int8[1] * 3.0 < fp32[1],
        "stored bytes {} vs {}",
        int8[1],
        fp32[1]
    );
    assert!(int8[4] * 5.0 < fp32[4], "energy {} vs {}", int8[4], fp32[4]);
}
