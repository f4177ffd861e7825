//! Constant folding on real model graphs: the ONNX "light" models (real
//! architectures whose weights are `ConstantOfShape` nodes, from
//! `scripts/fetch-assets onnx`) must give bit-identical outputs after folding,
//! with the weight-producing nodes gone.

use shrink_graph::onnx;
use shrink_runtime::{fold_constants, Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;

fn light(name: &str) -> PathBuf {
    let root = std::env::var_os("SHRINK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/shrink")
        })
        .join("onnx-backend/light");
    assert!(
        root.is_dir(),
        "{} is missing: run scripts/fetch-assets onnx",
        root.display()
    );
    root.join(format!("light_{name}.onnx"))
}

fn run(g: &shrink_graph::Graph) -> Vec<Tensor> {
    let session = Session::new(
        g.clone(),
        SessionOptions {
            threads: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let info = session.runtime_inputs()[0].to_string();
    let shape: Vec<usize> = g
        .inputs
        .iter()
        .find(|i| i.name == info)
        .and_then(|i| i.concrete_shape())
        .expect("light models declare a static input shape");
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| (i as f64 / n as f64) as f32).collect();
    session
        .run(vec![Tensor::from_vec(shape, x).unwrap()])
        .unwrap()
}

#[test]
fn folding_light_models_keeps_outputs_bit_identical() {
    for name in ["squeezenet", "shufflenet"] {
        let mut g = onnx::load(light(name)).unwrap();
        let before = run(&g);
        let nodes_before = g.nodes.len();
        let report = fold_constants(&mut g).unwrap();
        assert!(
            report.kept.is_empty(),
            "{name}: constant nodes left: {:?}",
            report.kept
        );
        let left_cos = g
            .nodes
            .iter()
            .filter(|n| n.op_type == "ConstantOfShape")
            .count();
        assert_eq!(left_cos, 0, "{name}: weight generators were not folded");
        assert_eq!(g.nodes.len(), nodes_before - report.folded.len());
        assert!(
            report.folded.len() > 10,
            "{name}: only {} folded",
            report.folded.len()
        );
        let after = run(&g);
        assert_eq!(after, before, "{name}: folding changed the outputs");
        let want =
            onnx::load_tensor_pb(light(&format!("{name}_output_0")).with_extension("pb")).unwrap();
        assert_eq!(after[0].shape(), want.shape());
    }
}
