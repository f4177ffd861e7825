//! Conv, ConvTranspose and Gemm seen as what the DFQ passes need: a weight
//! whose every element belongs to one output channel and one input channel.
//!
//! BN folding scales output channels, cross-layer equalisation scales output
//! channels of one layer and input channels of the next, bias absorption and
//! bias correction sum weights per (output, input) pair. Writing those four in
//! terms of `(flat index, out, in)` triples keeps the layout arithmetic of each
//! op kind in this one file.

use crate::{CompressError, Result};
use shrink_graph::{Graph, Node};
use shrink_tensor::Tensor;

/// How a layer's weight tensor is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `W [O, I/group, k…]`.
    Conv { group: usize },
    /// `W [I, O/group, k…]`.
    ConvTranspose { group: usize },
    /// `Y = X · Wᵀ` (`trans_b`: `W [O, I]`) or `Y = X · W` (`W [I, O]`).
    Gemm { trans_b: bool },
}

/// A weighted layer whose weight (and bias, if any) are initializers.
#[derive(Debug, Clone)]
pub struct LinearLayer {
    pub node: usize,
    pub name: String,
    pub kind: LayerKind,
    pub weight: String,
    pub bias: Option<String>,
    pub weight_shape: Vec<usize>,
    pub out_channels: usize,
    pub in_channels: usize,
}

impl LinearLayer {
    /// The layer at node `idx`, or `None` when the node is not a Conv /
    /// ConvTranspose / Gemm with a constant weight (a Gemm with `transA`,
    /// `alpha`/`beta` ≠ 1 or a non-2-D weight is not treated as a layer).
    pub fn at(g: &Graph, idx: usize) -> Option<LinearLayer> {
        let n = &g.nodes[idx];
        if !n.domain.is_empty() {
            return None;
        }
        let weight = n.input(1)?.to_string();
        let w = g.initializers.get(&weight)?;
        if !w.dtype().is_float() {
            return None;
        }
        let shape = w.shape().to_vec();
        let bias = n.input(2).map(str::to_string);
        if let Some(b) = &bias {
            if !g.initializers.contains_key(b) {
                return None;
            }
        }
        let group = n.attr_int("group", 1).ok()?.max(1) as usize;
        let (kind, out_channels, in_channels) = match n.op_type.as_str() {
            "Conv" if shape.len() >= 3 => {
                if shape[0] % group != 0 {
                    return None;
                }
                (LayerKind::Conv { group }, shape[0], shape[1] * group)
            }
            "ConvTranspose" if shape.len() >= 3 => {
                if shape[0] % group != 0 {
                    return None;
                }
                (
                    LayerKind::ConvTranspose { group },
                    shape[1] * group,
                    shape[0],
                )
            }
            "Gemm" if shape.len() == 2 => {
                let one = |k: &str| n.attr_float(k, 1.0).ok() == Some(1.0);
                if n.attr_int("transA", 0).ok()? != 0 || !one("alpha") || !one("beta") {
                    return None;
                }
                let trans_b = n.attr_int("transB", 0).ok()? != 0;
                let (o, i) = if trans_b {
                    (shape[0], shape[1])
                } else {
                    (shape[1], shape[0])
                };
                (LayerKind::Gemm { trans_b }, o, i)
            }
            _ => return None,
        };
        if let Some(b) = &bias {
            if g.initializers[b].len() != out_channels {
                return None;
            }
        }
        Some(LinearLayer {
            node: idx,
            name: n.name.clone(),
            kind,
            weight,
            bias,
            weight_shape: shape,
            out_channels,
            in_channels,
        })
    }

    /// Every weighted layer of the graph, in node order.
    pub fn all(g: &Graph) -> Vec<LinearLayer> {
        (0..g.nodes.len())
            .filter_map(|i| LinearLayer::at(g, i))
            .collect()
    }

    pub fn node<'g>(&self, g: &'g Graph) -> &'g Node {
        &g.nodes[self.node]
    }

    pub fn output<'g>(&self, g: &'g Graph) -> &'g str {
        &g.nodes[self.node].outputs[0]
    }

    pub fn input<'g>(&self, g: &'g Graph) -> &'g str {
        &g.nodes[self.node].inputs[0]
    }

    pub fn group(&self) -> usize {
        match self.kind {
            LayerKind::Conv { group } | LayerKind::ConvTranspose { group } => group,
            LayerKind::Gemm { .. } => 1,
        }
    }

    /// A depthwise conv: one input channel per output channel, so scaling
    /// input channel `c` is scaling output channel `c`.
    pub fn is_depthwise(&self) -> bool {
        matches!(self.kind, LayerKind::Conv { group } if group > 1
            && group == self.out_channels && group == self.in_channels)
    }

    /// Axis of the weight that indexes output channels (for per-channel
    /// weight quantisation).
    pub fn out_axis(&self) -> usize {
        match self.kind {
            LayerKind::Conv { .. } => 0,
            LayerKind::ConvTranspose { .. } => 1,
            LayerKind::Gemm { trans_b } => usize::from(!trans_b),
        }
    }

    /// Axis of the weight that indexes input channels (within a group).
    pub fn in_axis(&self) -> usize {
        match self.kind {
            LayerKind::Conv { .. } => 1,
            LayerKind::ConvTranspose { .. } => 0,
            LayerKind::Gemm { trans_b } => usize::from(trans_b),
        }
    }

    /// Calls `f(flat, out, in)` for every weight element.
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        let s = &self.weight_shape;
        match self.kind {
            LayerKind::Conv { group } => {
                let (o_n, i_per) = (s[0], s[1]);
                let k: usize = s[2..].iter().product();
                let o_per = o_n / group;
                for o in 0..o_n {
                    let base_in = (o / o_per) * i_per;
                    for il in 0..i_per {
                        let start = (o * i_per + il) * k;
                        for flat in start..start + k {
                            f(flat, o, base_in + il);
                        }
                    }
                }
            }
            LayerKind::ConvTranspose { group } => {
                let (i_n, o_per) = (s[0], s[1]);
                let k: usize = s[2..].iter().product();
                let i_per = i_n / group;
                for i in 0..i_n {
                    let base_out = (i / i_per) * o_per;
                    for ol in 0..o_per {
                        let start = (i * o_per + ol) * k;
                        for flat in start..start + k {
                            f(flat, base_out + ol, i);
                        }
                    }
                }
            }
            LayerKind::Gemm { trans_b } => {
                let (r, c) = (s[0], s[1]);
                for a in 0..r {
                    for b in 0..c {
                        let (o, i) = if trans_b { (a, b) } else { (b, a) };
                        f(a * c + b, o, i);
                    }
                }
            }
        }
    }

    pub fn weight_values(&self, g: &Graph) -> Vec<f32> {
        g.initializers[&self.weight].to_f32_vec()
    }

    /// The bias, zeros when the layer has none.
    pub fn bias_values(&self, g: &Graph) -> Vec<f32> {
        match &self.bias {
            Some(b) => g.initializers[b].to_f32_vec(),
            None => vec![0.0; self.out_channels],
        }
    }

    pub fn set_weight(&self, g: &mut Graph, w: Vec<f32>) -> Result<()> {
        let t = Tensor::from_vec(self.weight_shape.clone(), w)?;
        g.initializers.insert(self.weight.clone(), t);
        Ok(())
    }

    /// Writes the bias, adding a bias input (named after the weight) to a
    /// layer that had none.
    pub fn set_bias(&mut self, g: &mut Graph, b: Vec<f32>) -> Result<()> {
        if b.len() != self.out_channels {
            return Err(CompressError::Node {
                pass: "dfq".into(),
                node: self.name.clone(),
                op: g.nodes[self.node].op_type.clone(),
                msg: format!(
                    "bias of {} values for {} channels",
                    b.len(),
                    self.out_channels
                ),
            });
        }
        let name = match &self.bias {
            Some(n) => n.clone(),
            None => {
                let mut name = format!("{}.bias", self.weight);
                while g.initializers.contains_key(&name) {
                    name.push('_');
                }
                let node = &mut g.nodes[self.node];
                node.inputs.truncate(2);
                node.inputs.push(name.clone());
                self.bias = Some(name.clone());
                name
            }
        };
        g.initializers
            .insert(name, Tensor::from_vec(vec![self.out_channels], b)?);
        Ok(())
    }

    /// Largest |w| per output channel.
    pub fn out_ranges(&self, w: &[f32]) -> Vec<f32> {
        let mut r = vec![0f32; self.out_channels];
        self.for_each(|flat, o, _| r[o] = r[o].max(w[flat].abs()));
        r
    }

    /// Largest |w| per input channel.
    pub fn in_ranges(&self, w: &[f32]) -> Vec<f32> {
        let mut r = vec![0f32; self.in_channels];
        self.for_each(|flat, _, i| r[i] = r[i].max(w[flat].abs()));
        r
    }

    /// `Σ_k w[o, i, k]`, the response of output `o` to a constant 1 on input
    /// channel `i` (no padding effects), as a dense `[O][I]` matrix in f64.
    pub fn channel_sums(&self, w: &[f32]) -> Vec<Vec<f64>> {
        let mut m = vec![vec![0f64; self.in_channels]; self.out_channels];
        self.for_each(|flat, o, i| m[o][i] += w[flat] as f64);
        m
    }

    /// Whether the layer pads its input with zeros (a constant input shift
    /// then does not reach border outputs as `Σ w · c`).
    pub fn pads(&self, g: &Graph) -> bool {
        let n = &g.nodes[self.node];
        match self.kind {
            LayerKind::Gemm { .. } => false,
            _ => {
                let explicit = n
                    .attr_ints("pads")
                    .ok()
                    .flatten()
                    .is_some_and(|p| p.iter().any(|&v| v != 0));
                let auto = n.attr_str("auto_pad", "NOTSET").unwrap_or("NOTSET");
                explicit || (auto != "NOTSET" && auto != "VALID")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_graph::Attr;

    fn graph_with(node: Node, w: Tensor) -> Graph {
        let mut g = Graph::default();
        g.initializers.insert("w".into(), w);
        g.nodes.push(node);
        g
    }

    #[test]
    fn grouped_conv_maps_each_weight_to_its_channels() {
        // 4 outputs, 2 groups, 6 inputs: W [4, 3, 1, 1].
        let w = Tensor::from_vec(vec![4, 3, 1, 1], (0..12).map(|v| v as f32).collect()).unwrap();
        let n = Node::new("c", "Conv", &["x", "w"], &["y"]).with("group", Attr::Int(2));
        let g = graph_with(n, w);
        let l = LinearLayer::at(&g, 0).unwrap();
        assert_eq!((l.out_channels, l.in_channels), (4, 6));
        let mut seen = vec![];
        l.for_each(|f, o, i| seen.push((f, o, i)));
        assert_eq!(seen[3], (3, 1, 0));
        assert_eq!(seen[7], (7, 2, 4));
        assert_eq!(seen[11], (11, 3, 5));
    }

    #[test]
    fn gemm_without_trans_b_reads_weight_as_in_by_out() {
        let w = Tensor::from_vec(vec![3, 2], (0..6).map(|v| v as f32).collect()).unwrap();
        let n = Node::new("g", "Gemm", &["x", "w"], &["y"]);
        let g = graph_with(n, w);
        let l = LinearLayer::at(&g, 0).unwrap();
        assert_eq!((l.out_channels, l.in_channels, l.out_axis()), (2, 3, 1));
        let wv = l.weight_values(&g);
        assert_eq!(l.out_ranges(&wv), vec![4.0, 5.0]);
        assert_eq!(l.in_ranges(&wv), vec![1.0, 3.0, 5.0]);
    }

    #[test]
    fn conv_transpose_out_channels_are_axis_one_per_group() {
        // I=4, group 2, O/group = 3: W [4, 3, 1, 1], 6 outputs.
        let w = Tensor::from_vec(vec![4, 3, 1, 1], (0..12).map(|v| v as f32).collect()).unwrap();
        let n = Node::new("t", "ConvTranspose", &["x", "w"], &["y"]).with("group", Attr::Int(2));
        let g = graph_with(n, w);
        let l = LinearLayer::at(&g, 0).unwrap();
        assert_eq!((l.out_channels, l.in_channels), (6, 4));
        let mut seen = vec![];
        l.for_each(|f, o, i| seen.push((f, o, i)));
        assert_eq!(seen[0], (0, 0, 0));
        assert_eq!(seen[7], (7, 4, 2));
    }
}
