//! Export: import -> export -> import is lossless; saving is atomic and can
//! put big tensors in an external data file; broken files are errors, never panics.

mod common;

use common::TempDir;
use shrink_graph::onnx::{self, SaveOptions};
use shrink_graph::{Graph, GraphError};

/// Asserts that re-importing `g`'s export gives `g` back. Graphs holding NaN
/// are not `==` to themselves; for those the serialized bytes must match.
fn assert_round_trip(what: &str, g: &Graph) {
    let bytes = onnx::to_bytes(g).unwrap_or_else(|e| panic!("{what}: export: {e}"));
    let back = onnx::from_bytes(&bytes, None).unwrap_or_else(|e| panic!("{what}: re-import: {e}"));
    #[allow(clippy::eq_op)] // deliberate: false exactly when a tensor holds NaN
    let self_equal = g == g;
    if self_equal {
        assert!(&back == g, "{what}: graph changed in the round trip");
    }
    assert_eq!(
        onnx::to_bytes(&back).unwrap(),
        bytes,
        "{what}: export not stable"
    );
}

#[test]
fn fashion_models_round_trip() {
    let mut n = 0;
    for e in std::fs::read_dir(common::fashion_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let g = onnx::load(&p).unwrap();
            assert_round_trip(&p.display().to_string(), &g);
            n += 1;
        }
    }
    assert!(n >= 14, "only {n} fashion models");
}

#[test]
fn backend_node_models_round_trip() {
    let mut n = 0;
    for dir in common::backend_node_tests() {
        let path = dir.join("model.onnx");
        if let Ok(g) = onnx::load(&path) {
            assert_round_trip(&path.display().to_string(), &g);
            n += 1;
        }
    }
    assert!(n > 1200, "only {n} backend models round-tripped");
}

#[test]
fn save_is_atomic_and_overwrites() {
    let tmp = TempDir::new("save");
    let g = onnx::load(common::fashion("lenet5.onnx")).unwrap();
    let path = tmp.path().join("m.onnx");
    std::fs::write(&path, b"old contents").unwrap();
    onnx::save(&g, &path).unwrap();
    assert_eq!(onnx::load(&path).unwrap(), g);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["m.onnx".to_string()]);
}

#[test]
fn external_data_round_trip() {
    let tmp = TempDir::new("external");
    let g = onnx::load(common::fashion("lenet300100.onnx")).unwrap();
    let path = tmp.path().join("mlp.onnx");
    let opts = SaveOptions {
        external_data_threshold: Some(1024),
    };
    onnx::save_with(&g, &path, &opts).unwrap();
    let data = tmp.path().join("mlp.onnx.data");
    let big: usize = g
        .initializers
        .values()
        .filter(|t| t.nbytes() >= 1024)
        .map(|t| t.nbytes())
        .sum();
    assert!(big > 1_000_000);
    let model_len = std::fs::metadata(&path).unwrap().len() as usize;
    let data_len = std::fs::metadata(&data).unwrap().len() as usize;
    assert!(
        model_len < 10_000,
        "model file still holds the weights: {model_len} bytes"
    );
    assert!(data_len >= big, "data file {data_len} < {big}");
    assert_eq!(onnx::load(&path).unwrap(), g);

    // Without a base directory the external reference cannot be resolved.
    let bytes = std::fs::read(&path).unwrap();
    let e = onnx::from_bytes(&bytes, None).unwrap_err().to_string();
    assert!(e.contains("mlp.onnx.data"), "{e}");

    // A missing data file is an error naming it.
    std::fs::remove_file(&data).unwrap();
    let e = onnx::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("mlp.onnx.data") && e.contains("mlp.onnx:"),
        "{e}"
    );

    // A short data file too.
    std::fs::write(&data, vec![0u8; 100]).unwrap();
    let e = onnx::load(&path).unwrap_err().to_string();
    assert!(e.contains("mlp.onnx.data"), "{e}");
}

#[test]
fn truncated_models_are_errors_naming_the_file() {
    let tmp = TempDir::new("trunc");
    let bytes = std::fs::read(common::fashion("lenet5.onnx")).unwrap();
    let n = bytes.len();
    for cut in [
        0,
        1,
        2,
        10,
        100,
        1000,
        n / 4,
        n / 2,
        3 * n / 4,
        n - 100,
        n - 2,
        n - 1,
    ] {
        let p = tmp.path().join(format!("cut{cut}.onnx"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        match onnx::load(&p) {
            Err(GraphError::File { path, msg }) => {
                assert!(path.ends_with(&format!("cut{cut}.onnx")), "{path}: {msg}")
            }
            other => panic!("truncated at {cut}/{n}: {other:?}"),
        }
    }
}

/// xorshift64*: deterministic garbage without a dependency.
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn random_and_bit_flipped_bytes_never_panic() {
    for seed in 1..50u64 {
        let junk = garbage(seed, 1 + (seed as usize * 97) % 5000);
        assert!(onnx::from_bytes(&junk, None).is_err(), "seed {seed}");
    }
    // Flipped bytes inside a real model may still decode; they must not panic.
    let bytes = std::fs::read(common::fashion("mobilenetv2_tiny.onnx")).unwrap();
    let noise = garbage(7, 400);
    for k in 0..200 {
        let mut b = bytes.clone();
        let pos =
            (noise[2 * k] as usize * 251 + noise[2 * k + 1] as usize * 65_537 + k * 977) % b.len();
        b[pos] ^= 1 << (k % 8);
        // Whatever decodes must survive every pass without panicking.
        if let Ok(mut g) = onnx::from_bytes(&b, None) {
            let _ = shrink_graph::validate(&g);
            let _ = shrink_graph::analysis::layer_stats(&g);
            shrink_graph::infer_shapes(&mut g).unwrap();
            shrink_graph::eliminate_dead_nodes(&mut g);
            let _ = onnx::to_bytes(&g);
        }
    }
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let e = onnx::load("/nonexistent/dir/model.onnx").unwrap_err();
    assert!(matches!(e, GraphError::Io { .. }));
    assert!(e.to_string().contains("/nonexistent/dir/model.onnx"), "{e}");
    let e = onnx::load_tensor_pb("/nonexistent/input_0.pb").unwrap_err();
    assert!(e.to_string().contains("input_0.pb"), "{e}");
}

#[test]
fn truncated_tensor_pb_is_an_error_naming_the_file() {
    let tmp = TempDir::new("pb");
    let src = common::backend_node_dir()
        .join("test_conv_with_strides_padding/test_data_set_0/input_0.pb");
    let bytes = std::fs::read(&src).unwrap();
    let t = onnx::load_tensor_pb(&src).unwrap();
    assert_eq!(t.shape(), &[1, 1, 7, 5]);
    for cut in [1, 10, bytes.len() / 2, bytes.len() - 1] {
        let p = tmp.path().join(format!("cut{cut}.pb"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = onnx::load_tensor_pb(&p).unwrap_err().to_string();
        assert!(e.contains(&format!("cut{cut}.pb")), "{e}");
    }
}
