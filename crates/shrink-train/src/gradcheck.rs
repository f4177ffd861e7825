//! Central-difference gradient checks for one node, the test every op's
//! backward passes (public, so ops registered later are checked the same
//! way).
//!
//! The node's inputs become initializers of a one-node graph; the loss is
//! `L = Σ_k Σ_i r_k[i]·y_k[i]` with fixed random weights `r` (seeded) over
//! the float outputs, so the analytic gradient is [`Executor::backward`]
//! with output gradients `r`, and the numeric one is
//! `(L(x + ε·e_j) − L(x − ε·e_j)) / 2ε`, accumulated in f64. Stochastic ops
//! replay the same randomness on every evaluation (the seed is reset).

use crate::{Executor, Mode, OpRegistry, ParamFilter, ParamStore, Result, TrainError};
use rand::{Rng, SeedableRng};
use shrink_graph::{Graph, Node, ValueInfo};
use shrink_tensor::{DType, Tensor};

/// Tolerances and sampling of a check.
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// Perturbation ε.
    pub eps: f32,
    /// Pass when `|analytic − numeric| ≤ atol + rtol·max(|analytic|, |numeric|)`.
    pub rtol: f64,
    pub atol: f64,
    /// At most this many elements per input are perturbed (chosen at random).
    pub max_elements: usize,
    pub seed: u64,
    pub mode: Mode,
    pub opset: i64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-3,
            rtol: 1e-2,
            atol: 1e-3,
            max_elements: 48,
            seed: 7,
            mode: Mode::Train,
            opset: 17,
        }
    }
}

/// Worst disagreement found.
#[derive(Debug, Clone, PartialEq)]
pub struct GradReport {
    pub checked: usize,
    pub max_abs_err: f64,
    /// The element with the largest error relative to the tolerance:
    /// (input index, element, analytic, numeric).
    pub worst: Option<(usize, usize, f64, f64)>,
    pub passed: bool,
}

/// Random f32 values in `[lo, hi)`, seeded.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi)).collect();
    Tensor::from_vec(shape.to_vec(), v).expect("length matches the shape")
}

/// Checks the gradients of inputs `wrt` of `node` at `inputs` (one tensor
/// per node input; empty input names are skipped) with the standard
/// registry.
pub fn check_node(
    node: &Node,
    inputs: &[Tensor],
    wrt: &[usize],
    cfg: &GradCheck,
) -> Result<GradReport> {
    check_node_with(node, inputs, wrt, cfg, &OpRegistry::standard())
}

pub fn check_node_with(
    node: &Node,
    inputs: &[Tensor],
    wrt: &[usize],
    cfg: &GradCheck,
    registry: &OpRegistry,
) -> Result<GradReport> {
    let mut g = Graph::default();
    g.opsets.insert(String::new(), cfg.opset);
    if !node.domain.is_empty() {
        g.opsets.insert(node.domain.clone(), 1);
    }
    let mut names = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let Some(name) = node.input(i) else { continue };
        g.initializers.insert(name.to_string(), t.clone());
        if wrt.contains(&i) {
            if t.dtype() != DType::F32 {
                return Err(TrainError::State(format!("input #{i} '{name}' is not f32")));
            }
            names.push(name.to_string());
        }
    }
    g.nodes.push(node.clone());
    for o in node.outputs.iter().filter(|o| !o.is_empty()) {
        g.outputs.push(ValueInfo::unknown(o.clone()));
    }
    let mut params = ParamStore::from_graph_with(&g, &ParamFilter::Names(names.clone()), registry)?;
    let mut exec = Executor::with_registry(&g, registry)?;
    exec.set_seed(cfg.seed);
    let outs = exec.forward_recorded(&mut params, &[], cfg.mode)?;
    // Loss weights: random for float outputs, zero for the others.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5EED);
    let weights: Vec<Tensor> = outs
        .iter()
        .map(|o| {
            let v: Vec<f32> = if o.dtype() == DType::F32 {
                (0..o.len()).map(|_| rng.gen_range(-1.0..1.0)).collect()
            } else {
                vec![0.0; o.len()]
            };
            Tensor::from_vec(o.shape().to_vec(), v).expect("length matches the shape")
        })
        .collect();
    let grads = exec.backward(&params, &weights)?;
    let base = params.clone();
    let mut loss = |p: &mut ParamStore| -> Result<f64> {
        exec.set_seed(cfg.seed);
        let outs = exec.forward_recorded(p, &[], cfg.mode)?;
        let mut l = 0f64;
        for (o, w) in outs.iter().zip(&weights) {
            if o.dtype() == DType::F32 {
                for (a, b) in o.as_slice::<f32>()?.iter().zip(w.as_slice::<f32>()?) {
                    l += *a as f64 * *b as f64;
                }
            }
        }
        Ok(l)
    };
    let mut report = GradReport {
        checked: 0,
        max_abs_err: 0.0,
        worst: None,
        passed: true,
    };
    let mut worst_ratio = 0f64;
    for (&i, name) in wrt.iter().zip(&names) {
        let analytic = grads
            .get(name)
            .ok_or_else(|| TrainError::State(format!("no gradient for '{name}'")))?
            .to_f64_vec();
        let n = analytic.len();
        let picks: Vec<usize> = if n <= cfg.max_elements {
            (0..n).collect()
        } else {
            (0..cfg.max_elements).map(|_| rng.gen_range(0..n)).collect()
        };
        for j in picks {
            let mut p = base.clone();
            let x0 = p.get(name).expect("stored").as_slice::<f32>()?[j];
            p.get_mut(name).expect("stored").as_mut_slice::<f32>()?[j] = x0 + cfg.eps;
            let lp = loss(&mut p)?;
            let mut p = base.clone();
            p.get_mut(name).expect("stored").as_mut_slice::<f32>()?[j] = x0 - cfg.eps;
            let lm = loss(&mut p)?;
            // The step actually taken in f32.
            let h = ((x0 + cfg.eps) as f64) - ((x0 - cfg.eps) as f64);
            let numeric = (lp - lm) / h;
            let a = analytic[j];
            let err = (a - numeric).abs();
            let tol = cfg.atol + cfg.rtol * a.abs().max(numeric.abs());
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            if err / tol > worst_ratio {
                worst_ratio = err / tol;
                report.worst = Some((i, j, a, numeric));
            }
            if err > tol {
                report.passed = false;
            }
        }
    }
    Ok(report)
}
