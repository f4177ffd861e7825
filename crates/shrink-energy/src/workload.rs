//! What each compute layer of a graph does per inference: MACs, weights, and
//! activation sizes.
//!
//! The counting itself is `shrink_graph::analysis::layer_stats` (shape
//! inference with a symbolic batch, per-sample costs, weights read through
//! weight-only chains such as the DequantizeLinear of a QDQ model), so
//! `shrink inspect` and the energy model can never disagree on a MAC. This
//! module only selects the compute layers — the ops that hold nearly all MACs
//! and all weights — and insists their costs are known, naming the layer and
//! its unknown input otherwise.

use crate::{EnergyError, Result};
use serde::{Deserialize, Serialize};
use shrink_graph::analysis::layer_stats;
use shrink_graph::{Dim, Graph};

/// Work of one compute layer per inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerWork {
    pub name: String,
    pub op: String,
    pub macs: u64,
    /// Weight (and bias) elements stored for this layer.
    pub weights: u64,
    pub input_elems: u64,
    pub output_elems: u64,
}

/// Ops whose MACs the model prices (their integer and QLinear forms included).
const COMPUTE_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "Gemm",
    "MatMul",
    "MatMulInteger",
    "QLinearMatMul",
    "LSTM",
];

/// Elements of one sample: symbolic dimensions (the batch) count 1.
fn per_sample(shape: &Option<Vec<Dim>>) -> Option<u64> {
    shape
        .as_ref()
        .map(|d| d.iter().map(|d| d.known().unwrap_or(1) as u64).product())
}

/// Per-layer work of a graph, in node order.
pub fn layer_work(g: &Graph) -> Result<Vec<LayerWork>> {
    let mut layers = Vec::new();
    for (l, node) in layer_stats(g).into_iter().zip(&g.nodes) {
        if !COMPUTE_OPS.contains(&l.op_type.as_str()) || l.weight_only {
            continue;
        }
        let unknown = |what: &str| EnergyError::Node {
            node: l.name.clone(),
            op: l.op_type.clone(),
            msg: format!(
                "{what} is unknown: the shapes reaching it (input '{}') cannot be inferred",
                node.input(0).unwrap_or("")
            ),
        };
        let macs = l.macs.ok_or_else(|| unknown("the MAC count"))?;
        let input_elems = per_sample(&l.input_shapes.first().cloned().flatten())
            .ok_or_else(|| unknown("the input size"))?;
        let output_elems = l
            .output_elements
            .ok_or_else(|| unknown("the output size"))?;
        layers.push(LayerWork {
            name: l.name,
            op: l.op_type,
            macs,
            weights: l.params,
            input_elems,
            output_elems,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_graph::DType;
    use shrink_graph::{Attr, Node, Tensor, ValueInfo};

    fn init(g: &mut Graph, name: &str, shape: Vec<usize>) {
        let n = shape.iter().product();
        g.initializers.insert(
            name.into(),
            Tensor::from_vec(shape, vec![0.5f32; n]).unwrap(),
        );
    }

    #[test]
    fn conv_pool_gemm_by_hand() {
        // LeNet-5 front: conv 5x5x6 pad 2 on 1x28x28, maxpool 2, conv 5x5x16, flatten, gemm 400→120
        let mut g = Graph::default();
        g.inputs.push(ValueInfo::new(
            "x",
            DType::F32,
            vec![
                Dim::Symbol("N".into()),
                Dim::Known(1),
                Dim::Known(28),
                Dim::Known(28),
            ],
        ));
        init(&mut g, "w1", vec![6, 1, 5, 5]);
        init(&mut g, "b1", vec![6]);
        init(&mut g, "w2", vec![16, 6, 5, 5]);
        init(&mut g, "w3", vec![120, 400]);
        g.nodes.push(
            Node::new("c1", "Conv", &["x", "w1", "b1"], &["y1"])
                .with("pads", Attr::Ints(vec![2, 2, 2, 2])),
        );
        g.nodes.push(Node::new("r1", "Relu", &["y1"], &["y2"]));
        g.nodes.push(
            Node::new("p1", "MaxPool", &["y2"], &["y3"])
                .with("kernel_shape", Attr::Ints(vec![2, 2]))
                .with("strides", Attr::Ints(vec![2, 2])),
        );
        g.nodes
            .push(Node::new("c2", "Conv", &["y3", "w2"], &["y4"]));
        g.nodes.push(
            Node::new("p2", "MaxPool", &["y4"], &["y5"])
                .with("kernel_shape", Attr::Ints(vec![2, 2]))
                .with("strides", Attr::Ints(vec![2, 2])),
        );
        g.nodes.push(Node::new("f", "Flatten", &["y5"], &["y6"]));
        g.nodes
            .push(Node::new("fc", "Gemm", &["y6", "w3"], &["y7"]).with("transB", Attr::Int(1)));
        let l = layer_work(&g).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].macs, 6 * 28 * 28 * 25);
        assert_eq!(l[0].weights, 156);
        assert_eq!(l[0].input_elems, 784);
        assert_eq!(l[1].macs, 16 * 10 * 10 * 150);
        assert_eq!(l[1].input_elems, 6 * 14 * 14);
        assert_eq!(l[2].macs, 400 * 120);
        assert_eq!(l[2].output_elems, 120);
    }

    #[test]
    fn unknown_shape_names_the_node() {
        let mut g = Graph::default();
        init(&mut g, "w", vec![4, 3]);
        g.nodes.push(Node::new("mm", "MatMul", &["x", "w"], &["y"]));
        let e = layer_work(&g).unwrap_err().to_string();
        assert!(e.contains("'mm'") && e.contains("'x'"), "{e}");
    }
}
