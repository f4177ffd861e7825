//! `.shrink` files through the CLI: `shrink encode` writes one, `shrink run`
//! gives exactly the outputs of the ONNX model it came from, `shrink export`
//! decodes it back to the same ONNX bytes, and `shrink inspect --json`
//! accounts for every byte of the file.

use shrink_tensor::Tensor;
use std::path::PathBuf;
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

/// `$SHRINK_SHARED/data/<p>`, else the first `shared/data/<p>` beside the
/// workspace or one of its ancestors (CI lays a copy of shared/ beside the clone).
fn shared(p: &str) -> String {
    if let Ok(s) = std::env::var("SHRINK_SHARED") {
        return PathBuf::from(s).join("data").join(p).display().to_string();
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for anc in here.ancestors() {
        let cand = anc.join("shared/data").join(p);
        if cand.is_file() {
            return cand.display().to_string();
        }
    }
    panic!("{p} not found: set SHRINK_SHARED to the shared/ directory (it must hold data/{p})");
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shrink-storage-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn encoded_int8_model_runs_decodes_and_accounts_for_every_byte() {
    let model = shared("fashion/lenet5_bn.int8_qdq_pc.onnx");
    let out = tmp("lenet5_bn.shrink");
    let out_s = out.to_str().unwrap();
    let (ok, _, err) = shrink(&["encode", &model, "--weights", "huffman:dense", "-o", out_s]);
    assert!(ok, "{err}");
    // inputs: 8 real test images as float [8,1,28,28] in [0,1]
    let x = shrink_data::npy::read_npy(shared("fashion/test_sample_x.npy")).unwrap();
    let px: Vec<f32> = x.to_f32_vec()[..8 * 784]
        .iter()
        .map(|v| v / 255.0)
        .collect();
    let input = tmp("x.npy");
    shrink_data::npy::write_npy(&input, &Tensor::from_vec(vec![8, 1, 28, 28], px).unwrap())
        .unwrap();
    let (y_onnx, y_shrink) = (tmp("y_onnx.npy"), tmp("y_shrink.npy"));
    for (m, y) in [(model.as_str(), &y_onnx), (out_s, &y_shrink)] {
        let (ok, _, err) = shrink(&[
            "run",
            m,
            "--input",
            input.to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
    }
    let a = shrink_data::npy::read_npy(&y_onnx).unwrap();
    let b = shrink_data::npy::read_npy(&y_shrink).unwrap();
    assert_eq!(a.to_f32_vec(), b.to_f32_vec(), "outputs differ");

    // decode back to ONNX: the same bytes as re-exporting the source model
    let (d1, d2) = (tmp("from_onnx.onnx"), tmp("from_shrink.onnx"));
    assert!(shrink(&["export", &model, "-o", d1.to_str().unwrap()]).0);
    assert!(shrink(&["export", out_s, "-o", d2.to_str().unwrap()]).0);
    assert_eq!(std::fs::read(&d1).unwrap(), std::fs::read(&d2).unwrap());

    let (ok, json, err) = shrink(&["inspect", out_s, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let file = std::fs::metadata(&out).unwrap().len();
    assert_eq!(v["file_bytes"].as_u64(), Some(file));
    let parts: u64 = [
        "header_bytes",
        "graph_bytes",
        "provenance_bytes",
        "tensor_bytes",
    ]
    .iter()
    .map(|k| v[k].as_u64().unwrap())
    .sum();
    assert_eq!(parts, file);
    let per_tensor: u64 = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["stored_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(per_tensor, v["tensor_bytes"].as_u64().unwrap());
    assert_eq!(v["provenance"]["source_file"], "lenet5_bn.int8_qdq_pc.onnx");
    let (ok, table, _) = shrink(&["inspect", out_s]);
    assert!(ok && table.contains("huffman:dense") && table.contains("entropy"));
}

#[test]
fn bad_encodings_and_damaged_files_are_clear_errors() {
    let model = shared("fashion/lenet300100.onnx");
    let out = tmp("bad.shrink");
    let (ok, _, err) = shrink(&[
        "encode",
        &model,
        "--weights",
        "codebook4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("bad.shrink") && err.contains("distinct values"),
        "{err}"
    );
    assert!(!out.exists(), "a failed encode left a file");
    let (ok, _, err) = shrink(&[
        "encode",
        &model,
        "--tensor",
        "nope=dense",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = shrink(&[
        "encode",
        &model,
        "--weights",
        "zip",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("unknown encoding"), "{err}");
    let good = tmp("good.shrink");
    assert!(shrink(&["encode", &model, "-o", good.to_str().unwrap()]).0);
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&good, &bytes).unwrap();
    let (ok, _, err) = shrink(&["inspect", good.to_str().unwrap()]);
    assert!(
        !ok && err.contains("good.shrink") && err.contains("section"),
        "{err}"
    );
}
