//! What each compute layer of a graph does per inference: MACs, weights, and
//! activation sizes, from a small shape walk (batch dimensions taken as 1).
//!
//! Only Conv, Gemm and MatMul are "layers" (they hold nearly all MACs and all
//! weights); other ops only propagate shapes. Shapes come from graph inputs,
//! initializers, `value_info` where present, and per-op rules for the common
//! CNN/MLP ops; a layer whose input shape stays unknown is an error naming it.

use crate::{EnergyError, Result};
use serde::{Deserialize, Serialize};
use shrink_graph::{Dim, Graph, Node};
use std::collections::HashMap;

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

type Shapes = HashMap<String, Vec<usize>>;

fn node_err(n: &Node, msg: impl Into<String>) -> EnergyError {
    EnergyError::Node {
        node: n.name.clone(),
        op: n.op_type.clone(),
        msg: msg.into(),
    }
}

fn dims(d: &[Dim]) -> Vec<usize> {
    // symbolic dims are batch-like: one inference
    d.iter().map(|d| d.known().unwrap_or(1)).collect()
}

fn prod(s: &[usize]) -> u64 {
    s.iter().map(|&d| d as u64).product()
}

fn ints(n: &Node, key: &str) -> Result<Option<Vec<i64>>> {
    n.attr_ints(key)
        .map(|o| o.map(|v| v.to_vec()))
        .map_err(|e| node_err(n, e.to_string()))
}

/// Output spatial size of a sliding window (conv or pool).
fn window_out(n: &Node, input: &[usize], kernel: &[usize], ceil: bool) -> Result<Vec<usize>> {
    let sp = kernel.len();
    let strides = ints(n, "strides")?.unwrap_or(vec![1; sp]);
    let dil = ints(n, "dilations")?.unwrap_or(vec![1; sp]);
    let pads = ints(n, "pads")?.unwrap_or(vec![0; 2 * sp]);
    let auto = n
        .attr_str("auto_pad", "NOTSET")
        .map_err(|e| node_err(n, e.to_string()))?;
    let mut out = Vec::with_capacity(sp);
    for i in 0..sp {
        let x = input[2 + i] as i64;
        let s = strides[i].max(1);
        let o = match auto {
            "SAME_UPPER" | "SAME_LOWER" => (x + s - 1) / s,
            "VALID" => (x - (kernel[i] as i64 - 1) * dil[i] - 1) / s + 1,
            _ => {
                let span = x + pads[i] + pads[i + sp] - (kernel[i] as i64 - 1) * dil[i] - 1;
                if ceil {
                    (span + s - 1) / s + 1
                } else {
                    span / s + 1
                }
            }
        };
        if o <= 0 {
            return Err(node_err(
                n,
                format!("window leaves no output for input {input:?}"),
            ));
        }
        out.push(o as usize);
    }
    Ok(out)
}

fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            x.max(y)
        })
        .collect()
}

/// Per-layer work of a graph, in node order.
pub fn layer_work(g: &Graph) -> Result<Vec<LayerWork>> {
    let mut shapes: Shapes = HashMap::new();
    for v in g
        .inputs
        .iter()
        .chain(g.value_info.values())
        .chain(g.outputs.iter())
    {
        if let Some(s) = &v.shape {
            shapes.insert(v.name.clone(), dims(s));
        }
    }
    for (k, t) in &g.initializers {
        shapes.insert(k.clone(), t.shape().to_vec());
    }
    let mut layers = Vec::new();
    for n in &g.nodes {
        let shape_of = |i: usize| n.input(i).and_then(|name| shapes.get(name)).cloned();
        let need = |i: usize| -> Result<Vec<usize>> {
            shape_of(i).ok_or_else(|| {
                node_err(
                    n,
                    format!(
                        "shape of input {i} ('{}') is unknown",
                        n.input(i).unwrap_or("")
                    ),
                )
            })
        };
        let weight_elems = |from: usize| -> u64 {
            (from..n.inputs.len())
                .filter_map(|i| n.input(i))
                .filter_map(|name| g.initializers.get(name))
                .map(|t| t.len() as u64)
                .sum()
        };
        let out: Option<Vec<usize>> = match n.op_type.as_str() {
            "Conv" => {
                let x = need(0)?;
                let w = need(1)?;
                if x.len() < 3 || w.len() != x.len() {
                    return Err(node_err(
                        n,
                        format!("input {x:?} and weight {w:?} ranks do not match"),
                    ));
                }
                let sp = window_out(n, &x, &w[2..], false)?;
                let mut o = vec![x[0], w[0]];
                o.extend(&sp);
                let macs = prod(&o) * prod(&w[1..]);
                layers.push(LayerWork {
                    name: n.name.clone(),
                    op: n.op_type.clone(),
                    macs,
                    weights: weight_elems(1),
                    input_elems: prod(&x),
                    output_elems: prod(&o),
                });
                Some(o)
            }
            "Gemm" | "MatMul" => {
                let a = need(0)?;
                let b = need(1)?;
                let (m, k, nn, batch) = if n.op_type == "Gemm" {
                    let ta = n
                        .attr_int("transA", 0)
                        .map_err(|e| node_err(n, e.to_string()))?
                        != 0;
                    let tb = n
                        .attr_int("transB", 0)
                        .map_err(|e| node_err(n, e.to_string()))?
                        != 0;
                    if a.len() != 2 || b.len() != 2 {
                        return Err(node_err(
                            n,
                            format!("Gemm needs 2-D inputs, got {a:?} and {b:?}"),
                        ));
                    }
                    let (m, k) = if ta { (a[1], a[0]) } else { (a[0], a[1]) };
                    let nn = if tb { b[0] } else { b[1] };
                    (m, k, nn, 1)
                } else {
                    if a.is_empty() || b.is_empty() {
                        return Err(node_err(n, "MatMul of scalars"));
                    }
                    let k = *a.last().unwrap_or(&1);
                    let m = if a.len() >= 2 { a[a.len() - 2] } else { 1 };
                    let nn = if b.len() >= 2 { b[b.len() - 1] } else { 1 };
                    let batch = broadcast(
                        &a[..a.len().saturating_sub(2)],
                        &b[..b.len().saturating_sub(2)],
                    );
                    (m, k, nn, prod(&batch) as usize)
                };
                let mut o: Vec<usize> = if n.op_type == "Gemm" {
                    vec![m, nn]
                } else {
                    let mut s = broadcast(
                        &a[..a.len().saturating_sub(2)],
                        &b[..b.len().saturating_sub(2)],
                    );
                    if a.len() >= 2 {
                        s.push(m);
                    }
                    if b.len() >= 2 {
                        s.push(nn);
                    }
                    s
                };
                if o.is_empty() {
                    o.push(1);
                }
                let weights = weight_elems(1);
                // an activation×activation MatMul (attention) reads both operands as activations
                let input_elems = prod(&a)
                    + if g.initializers.contains_key(n.input(1).unwrap_or("")) {
                        0
                    } else {
                        prod(&b)
                    };
                layers.push(LayerWork {
                    name: n.name.clone(),
                    op: n.op_type.clone(),
                    macs: (batch * m * k * nn) as u64,
                    weights,
                    input_elems,
                    output_elems: prod(&o),
                });
                Some(o)
            }
            "MaxPool" | "AveragePool" | "LpPool" => {
                let x = need(0)?;
                let k: Vec<usize> = ints(n, "kernel_shape")?
                    .ok_or_else(|| node_err(n, "kernel_shape is required"))?
                    .iter()
                    .map(|&v| v as usize)
                    .collect();
                let ceil = n
                    .attr_int("ceil_mode", 0)
                    .map_err(|e| node_err(n, e.to_string()))?
                    != 0;
                let mut o = vec![x[0], x[1]];
                o.extend(window_out(n, &x, &k, ceil)?);
                Some(o)
            }
            "GlobalAveragePool" | "GlobalMaxPool" => shape_of(0).map(|x| {
                let mut o = x.clone();
                o[2..].iter_mut().for_each(|d| *d = 1);
                o
            }),
            "Flatten" => shape_of(0).map(|x| {
                let axis = n.attr_int("axis", 1).unwrap_or(1);
                let axis = if axis < 0 {
                    axis + x.len() as i64
                } else {
                    axis
                } as usize;
                vec![
                    prod(&x[..axis.min(x.len())]) as usize,
                    prod(&x[axis.min(x.len())..]) as usize,
                ]
            }),
            "Reshape" => match (shape_of(0), n.input(1).and_then(|s| g.initializers.get(s))) {
                (Some(x), Some(t)) => {
                    let total = prod(&x);
                    let spec = t.to_i64_vec();
                    let mut o: Vec<usize> = spec
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            if v == 0 {
                                x.get(i).copied().unwrap_or(1)
                            } else {
                                v.max(1) as usize
                            }
                        })
                        .collect();
                    if let Some(p) = spec.iter().position(|&v| v == -1) {
                        let known: u64 = o
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i != p)
                            .map(|(_, &d)| d as u64)
                            .product();
                        o[p] = (total / known.max(1)) as usize;
                    }
                    Some(o)
                }
                _ => None,
            },
            "Transpose" => shape_of(0).map(|x| match ints(n, "perm").ok().flatten() {
                Some(p) => p.iter().map(|&i| x[i as usize]).collect(),
                None => x.iter().rev().copied().collect(),
            }),
            "Concat" => {
                let axis = n
                    .attr_int("axis", 0)
                    .map_err(|e| node_err(n, e.to_string()))?;
                let ins: Option<Vec<Vec<usize>>> = (0..n.inputs.len()).map(shape_of).collect();
                ins.and_then(|ins| {
                    let mut o = ins.first()?.clone();
                    let a = if axis < 0 {
                        axis + o.len() as i64
                    } else {
                        axis
                    } as usize;
                    o[a] = ins.iter().map(|s| s[a]).sum();
                    Some(o)
                })
            }
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "PRelu" | "Where" => {
                let ins: Vec<Vec<usize>> = (0..n.inputs.len()).filter_map(shape_of).collect();
                ins.into_iter().reduce(|a, b| broadcast(&a, &b))
            }
            // shape-preserving ops on their first input
            _ => shape_of(0),
        };
        if let (Some(o), Some(name)) = (out, n.outputs.first()) {
            shapes.entry(name.clone()).or_insert(o);
        }
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_graph::DType;
    use shrink_graph::{Attr, Tensor, ValueInfo};

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
