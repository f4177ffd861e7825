//! Model zoo: the standard small networks as [`Graph`]s, freshly initialised.
//!
//! Every builder emits plain ONNX ops (Conv, BatchNormalization, Relu, Clip,
//! MaxPool, GlobalAveragePool, Flatten, Gemm, Add), so a zoo model trains on
//! the tape executor, runs on the runtime and exports with
//! `shrink_graph::onnx::save` like any imported model. Parameter names are the
//! PyTorch `state_dict` keys of the matching `nn.Module` (`conv1.weight`,
//! `features.4.conv.3.weight`, `bn1.running_var`, ...), which is what lets the
//! shared reference weights (`shared/data/fashion/NAME.safetensors`) drop into
//! a zoo graph unchanged, and the tests prove the architectures equal by
//! reproducing PyTorch's logits with them.
//!
//! Initialisation is PyTorch's default, drawn from a seeded ChaCha8 stream:
//! Conv/Linear weights `kaiming_uniform_(a=√5)` = `U(±1/√fan_in)`, biases
//! `U(±1/√fan_in)`, BatchNorm `γ = 1, β = 0`, running mean 0 and variance 1.
//! Same seed, same weights, on every machine.

mod lenet;
mod mobilenet;
mod resnet;
mod vgg;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shrink_graph::{Attr, Dim, Graph, Node, ValueInfo};
use shrink_tensor::{DType, Tensor};

/// A model name the zoo does not know; the message lists the ones it does.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("unknown model '{name}'; the zoo has: {}", MODELS.join(", "))]
pub struct UnknownModel {
    pub name: String,
}

/// Every model the zoo builds, by canonical name (the shared reference files'
/// names where one exists).
pub const MODELS: [&str; 7] = [
    "lenet300100",
    "lenet5",
    "lenet5_bn",
    "vgg_small",
    "mobilenetv2_tiny",
    "mobilenetv2_tiny_relu",
    "resnet20",
];

/// Canonical form of a model name: lower case, `-` as `_`, and the spellings
/// `lenet-300-100` / `lenet_300_100` for `lenet300100`.
pub fn canonical_name(name: &str) -> Result<&'static str, UnknownModel> {
    let n = name.trim().to_ascii_lowercase().replace('-', "_");
    let n = match n.as_str() {
        "lenet_300_100" => "lenet300100".to_string(),
        "lenet_5" => "lenet5".to_string(),
        "lenet_5_bn" => "lenet5_bn".to_string(),
        "resnet_20" => "resnet20".to_string(),
        _ => n,
    };
    MODELS
        .iter()
        .copied()
        .find(|m| *m == n)
        .ok_or_else(|| UnknownModel {
            name: name.to_string(),
        })
}

/// The input a model takes, without the batch dimension: `[1, 28, 28]`
/// (Fashion-MNIST) for all but ResNet-20, which takes `[3, 32, 32]` (CIFAR-10).
pub fn input_shape(name: &str) -> Result<[usize; 3], UnknownModel> {
    Ok(match canonical_name(name)? {
        "resnet20" => [3, 32, 32],
        _ => [1, 28, 28],
    })
}

/// Builds model `name` with weights drawn from `seed`. The graph has one input
/// `input` `[batch, C, H, W]` and one output `logits` `[batch, 10]`.
pub fn build(name: &str, seed: u64) -> Result<Graph, UnknownModel> {
    let canonical = canonical_name(name)?;
    let [c, h, w] = input_shape(canonical)?;
    let mut net = Net::new(canonical, seed, [c, h, w]);
    let x = "input".to_string();
    let logits = match canonical {
        "lenet300100" => lenet::lenet300100(&mut net, &x),
        "lenet5" => lenet::lenet5(&mut net, &x, false),
        "lenet5_bn" => lenet::lenet5(&mut net, &x, true),
        "vgg_small" => vgg::vgg_small(&mut net, &x),
        "mobilenetv2_tiny" => mobilenet::mobilenetv2_tiny(&mut net, &x, true),
        "mobilenetv2_tiny_relu" => mobilenet::mobilenetv2_tiny(&mut net, &x, false),
        "resnet20" => resnet::resnet20(&mut net, &x),
        _ => unreachable!("canonical_name only returns MODELS"),
    };
    Ok(net.finish(&logits, 10))
}

/// A graph under construction plus the random stream its weights come from.
/// Layers are named by their PyTorch module path; each node is named after
/// its output, and outputs are `<module>` (or `<module>/<op>` where a module
/// path is reused, as for activations).
pub(crate) struct Net {
    graph: Graph,
    rng: ChaCha8Rng,
}

impl Net {
    fn new(name: &str, seed: u64, input: [usize; 3]) -> Net {
        let mut graph = Graph {
            name: name.to_string(),
            ..Graph::default()
        };
        graph.opsets.insert(String::new(), 17);
        graph
            .metadata
            .insert("producer_name".into(), "shrink-train zoo".into());
        let mut shape = vec![Dim::Symbol("batch".into())];
        shape.extend(input.iter().map(|&d| Dim::Known(d)));
        graph
            .inputs
            .push(ValueInfo::new("input", DType::F32, shape));
        Net {
            graph,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn finish(mut self, logits: &str, classes: usize) -> Graph {
        // The last node writes `logits` directly, as the PyTorch exports do.
        let last = self.graph.nodes.last_mut().expect("a model has nodes");
        let old = std::mem::replace(&mut last.outputs[0], "logits".to_string());
        debug_assert_eq!(old, logits);
        last.name = "logits".to_string();
        self.graph.outputs.push(ValueInfo::new(
            "logits",
            DType::F32,
            vec![Dim::Symbol("batch".into()), Dim::Known(classes)],
        ));
        self.graph
    }

    fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<(&str, Attr)>) -> String {
        let mut node = Node::new(out, op, inputs, &[out]);
        for (k, v) in attrs {
            node = node.with(k, v);
        }
        self.graph.nodes.push(node);
        out.to_string()
    }

    /// `U(-bound, bound)` values as an f32 tensor, registered as an initializer.
    fn uniform(&mut self, name: &str, shape: Vec<usize>, bound: f32) -> String {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.gen_range(-bound..bound)).collect();
        self.constant(name, Tensor::from_vec(shape, v).expect("sized"))
    }

    fn constant(&mut self, name: &str, t: Tensor) -> String {
        self.graph.initializers.insert(name.to_string(), t);
        name.to_string()
    }

    /// `nn.Conv2d(cin, cout, k, stride, pad, groups, bias)` named `module`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        &mut self,
        module: &str,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let fan_in = (cin / groups) * k * k;
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = self.uniform(
            &format!("{module}.weight"),
            vec![cout, cin / groups, k, k],
            bound,
        );
        let mut inputs = vec![x.to_string(), w];
        if bias {
            inputs.push(self.uniform(&format!("{module}.bias"), vec![cout], bound));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let (s, p, kk) = (stride as i64, pad as i64, k as i64);
        self.node(
            "Conv",
            &refs,
            module,
            vec![
                ("dilations", Attr::Ints(vec![1, 1])),
                ("group", Attr::Int(groups as i64)),
                ("kernel_shape", Attr::Ints(vec![kk, kk])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
                ("strides", Attr::Ints(vec![s, s])),
            ],
        )
    }

    /// `nn.BatchNorm2d(c)` (eps 1e-5, PyTorch momentum 0.1 = ONNX momentum 0.9).
    pub(crate) fn batch_norm(&mut self, module: &str, x: &str, c: usize) -> String {
        let mut names = Vec::new();
        for (field, value) in [
            ("weight", 1.0f32),
            ("bias", 0.0),
            ("running_mean", 0.0),
            ("running_var", 1.0),
        ] {
            let t = Tensor::from_vec(vec![c], vec![value; c]).expect("sized");
            names.push(self.constant(&format!("{module}.{field}"), t));
        }
        let mut inputs = vec![x];
        inputs.extend(names.iter().map(String::as_str));
        self.node(
            "BatchNormalization",
            &inputs,
            module,
            vec![
                ("epsilon", Attr::Float(1e-5)),
                ("momentum", Attr::Float(0.9)),
            ],
        )
    }

    /// `nn.Linear(fin, fout)` as `Gemm(transB=1)`.
    pub(crate) fn linear(&mut self, module: &str, x: &str, fin: usize, fout: usize) -> String {
        let bound = 1.0 / (fin as f32).sqrt();
        let w = self.uniform(&format!("{module}.weight"), vec![fout, fin], bound);
        let b = self.uniform(&format!("{module}.bias"), vec![fout], bound);
        self.node(
            "Gemm",
            &[x, &w, &b],
            module,
            vec![
                ("alpha", Attr::Float(1.0)),
                ("beta", Attr::Float(1.0)),
                ("transB", Attr::Int(1)),
            ],
        )
    }

    pub(crate) fn relu(&mut self, out: &str, x: &str) -> String {
        self.node("Relu", &[x], out, vec![])
    }

    /// ReLU6 as `Clip(x, 0, 6)`, the form PyTorch's exporter writes; the bounds
    /// are scalar initializers shared by every ReLU6.
    pub(crate) fn relu6(&mut self, out: &str, x: &str) -> String {
        if !self.graph.initializers.contains_key("relu6.min") {
            self.constant("relu6.min", Tensor::scalar(0.0f32));
            self.constant("relu6.max", Tensor::scalar(6.0f32));
        }
        self.node("Clip", &[x, "relu6.min", "relu6.max"], out, vec![])
    }

    pub(crate) fn max_pool(&mut self, out: &str, x: &str, k: usize) -> String {
        let k = k as i64;
        self.node(
            "MaxPool",
            &[x],
            out,
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![k, k])),
                ("pads", Attr::Ints(vec![0, 0, 0, 0])),
            ],
        )
    }

    pub(crate) fn global_avg_pool(&mut self, out: &str, x: &str) -> String {
        self.node("GlobalAveragePool", &[x], out, vec![])
    }

    pub(crate) fn flatten(&mut self, out: &str, x: &str) -> String {
        self.node("Flatten", &[x], out, vec![("axis", Attr::Int(1))])
    }

    pub(crate) fn add(&mut self, out: &str, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], out, vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonicalised_and_unknown_ones_listed() {
        assert_eq!(canonical_name("LeNet-300-100").unwrap(), "lenet300100");
        assert_eq!(canonical_name("lenet5-bn").unwrap(), "lenet5_bn");
        let e = build("alexnet", 0).unwrap_err().to_string();
        assert!(
            e.contains("'alexnet'") && e.contains("mobilenetv2_tiny"),
            "{e}"
        );
    }

    #[test]
    fn initialisation_is_seeded_and_within_pytorch_bounds() {
        let a = build("lenet5", 7).unwrap();
        assert_eq!(a, build("lenet5", 7).unwrap());
        assert_ne!(a, build("lenet5", 8).unwrap());
        // conv2: fan_in = 6·5·5 = 150, so every weight lies in ±1/√150.
        let w = a.initializers["conv2.weight"].as_slice::<f32>().unwrap();
        let bound = 1.0 / 150f32.sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound));
        // A uniform sample of 2400 values spans most of the interval.
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.95 * bound, "{max} vs {bound}");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        assert!(mean.abs() < 0.1 * bound, "{mean}");
    }
}
