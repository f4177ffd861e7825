//! Channels-last execution of lowered int8 graphs on the real quantised
//! MobileNetV2-tiny models (ONNX Runtime `quantize_static` QDQ output,
//! shared/data/fashion/*.int8_qdq_pc.onnx): the session rewrites their
//! conv chains into `QNhwcConv` / `QNhwcAdd` nodes, and the logits (the
//! dequantised output codes) must equal, bit for bit, those of the planar
//! lowered graph (the same session without the channels-last ops) and of
//! the scalar simulation of the canonical arithmetic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_runtime::{QdqMode, Registry, Session, SessionOptions, Tensor};
use std::path::{Path, PathBuf};

fn fashion_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHRINK_SHARED").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("data/fashion");
    }
    let starts = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    starts
        .into_iter()
        .flatten()
        .flat_map(|s| s.ancestors().map(Path::to_path_buf).collect::<Vec<_>>())
        .map(|a| a.join("shared/data/fashion"))
        .find(|d| d.is_dir())
        .expect("shared/data/fashion not found: set $SHRINK_SHARED to the shared/ directory")
}

fn session(g: &shrink_runtime::Graph, qdq: QdqMode, threads: usize, nhwc: bool) -> Session {
    let mut r = Registry::standard();
    if !nhwc {
        r.remove("ai.shrink", "QNhwcConv");
    }
    Session::with_registry(g.clone(), SessionOptions { threads, qdq }, r).unwrap()
}

/// A few images: uniform noise, a gradient, an all-black and an all-white one.
fn images(n: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * 784);
    for i in 0..n {
        for p in 0..784 {
            x.push(match i % 4 {
                0 => rng.gen_range(0.0f32..1.0),
                1 => (p % 28) as f32 / 27.0,
                2 => 0.0,
                _ => 1.0,
            });
        }
    }
    Tensor::from_vec(vec![n, 1, 28, 28], x).unwrap()
}

#[test]
fn channels_last_int8_equals_planar_and_simulation() {
    for name in ["mobilenetv2_tiny", "mobilenetv2_tiny_relu"] {
        let g = shrink_graph::onnx::load(fashion_dir().join(format!("{name}.int8_qdq_pc.onnx")))
            .unwrap();
        let nhwc = session(&g, QdqMode::Integer, 1, true);
        let ops: Vec<&str> = nhwc
            .planned_graph()
            .nodes
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        // Every conv (stem, 7 depthwise, 13 block 1×1 + the last 1×1) and every
        // residual add runs channels-last, converted once on the way in.
        assert_eq!(count("QConv"), 0, "{name}: {ops:?}");
        assert_eq!(count("QNhwcConv"), 22, "{name}: {ops:?}");
        assert_eq!(count("QNhwcAdd"), 4, "{name}: {ops:?}");
        assert_eq!(count("QNchwToNhwc"), 1, "{name}: {ops:?}");
        // The global average pool reads the last conv's NHWC output.
        assert_eq!(count("QNhwcToNchw"), 0, "{name}: {ops:?}");
        assert_eq!(count("QNhwcGlobalAveragePool"), 1, "{name}: {ops:?}");
        let planar = session(&g, QdqMode::Integer, 1, false);
        assert!(planar
            .planned_graph()
            .nodes
            .iter()
            .all(|n| !n.op_type.starts_with("QNhwc")));
        let sim = session(&g, QdqMode::Simulate, 1, true);
        assert!(sim
            .planned_graph()
            .nodes
            .iter()
            .all(|n| !n.op_type.starts_with("QNhwc")));
        let threaded = session(&g, QdqMode::Integer, 2, true);
        for (n, seed) in [(4, 1), (1, 2)] {
            let x = images(n, seed);
            let want = sim.run(vec![x.clone()]).unwrap();
            let got = nhwc.run(vec![x.clone()]).unwrap();
            assert_eq!(
                got[0].to_f32_vec(),
                want[0].to_f32_vec(),
                "{name}: channels-last vs simulation, batch {n}"
            );
            let p = planar.run(vec![x.clone()]).unwrap();
            assert_eq!(got[0].to_f32_vec(), p[0].to_f32_vec(), "{name}: vs planar");
            let t = threaded.run(vec![x]).unwrap();
            assert_eq!(got[0].to_f32_vec(), t[0].to_f32_vec(), "{name}: 2 threads");
        }
    }
}
