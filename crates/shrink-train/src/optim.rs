//! Optimisers with PyTorch's exact update rules (`torch.optim.SGD`, `Adam`,
//! `AdamW`, single-tensor CPU path), so a recipe tuned in PyTorch carries over.
//!
//! PyTorch keeps hyper-parameters and bias corrections as Python floats (f64)
//! and rounds them to f32 when they meet a tensor; the arithmetic on tensors is
//! f32 in a fixed order. We do the same, in the same order, which keeps our
//! trajectories within an ulp or two of PyTorch's (checked against numbers
//! produced by torch in `bench/train_fixtures.py`).
//!
//! ```text
//! SGD   g ← g + λ·p;  b ← g (first step) | μ·b + (1−τ)·g;  g ← g + μ·b (Nesterov) | b;  p ← p − lr·g
//! Adam  g ← g + λ·p;  m ← lerp(m, g, 1−β₁);  v ← β₂·v + (1−β₂)·g·g
//!       p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)
//! AdamW p ← p·(1 − lr·λ), then Adam without the λ·p term
//! ```
//!
//! State lives per parameter name, so freezing or adding parameters between
//! steps is harmless, and it round-trips through a checkpoint as plain tensors.

use indexmap::IndexMap;
use shrink_tensor::Tensor;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum OptimError {
    #[error("parameter '{name}': gradient has {grad} elements, parameter {param}")]
    Length {
        name: String,
        param: usize,
        grad: usize,
    },
    #[error("optimizer state '{name}': {msg}")]
    State { name: String, msg: String },
    #[error("{what} must be {rule}, got {value}")]
    Hyper {
        what: &'static str,
        rule: &'static str,
        value: f64,
    },
}

pub type Result<T, E = OptimError> = std::result::Result<T, E>;

/// Which update rule, with its rule-specific hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Algorithm {
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
    },
}

impl Algorithm {
    /// PyTorch's defaults: plain SGD, Adam/AdamW with β = (0.9, 0.999), ε = 1e-8.
    pub fn by_name(name: &str) -> Option<Algorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sgd" => Some(Algorithm::Sgd {
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
            }),
            "adam" => Some(Algorithm::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            }),
            "adamw" => Some(Algorithm::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            }),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 3] = ["sgd", "adam", "adamw"];
}

/// Per-parameter state: PyTorch's `step`, `momentum_buffer` / `exp_avg`, `exp_avg_sq`.
#[derive(Debug, Clone, PartialEq, Default)]
struct ParamState {
    step: u64,
    first: Option<Vec<f32>>,
    second: Option<Vec<f32>>,
}

/// An optimiser: an update rule, its current learning rate, weight decay, and
/// the per-parameter state.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    pub algorithm: Algorithm,
    /// Current learning rate (a schedule sets it before each step).
    pub lr: f64,
    /// L2 penalty added to the gradient (SGD, Adam) or decoupled decay (AdamW).
    pub weight_decay: f64,
    state: BTreeMap<String, ParamState>,
}

impl Optimizer {
    pub fn new(algorithm: Algorithm, lr: f64, weight_decay: f64) -> Result<Optimizer> {
        let check = |what, ok: bool, rule, value| {
            if ok {
                Ok(())
            } else {
                Err(OptimError::Hyper { what, rule, value })
            }
        };
        check("learning rate", lr >= 0.0 && lr.is_finite(), ">= 0", lr)?;
        check(
            "weight decay",
            weight_decay >= 0.0 && weight_decay.is_finite(),
            ">= 0",
            weight_decay,
        )?;
        match algorithm {
            Algorithm::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                check("momentum", momentum >= 0.0, ">= 0", momentum)?;
                check(
                    "Nesterov momentum",
                    !nesterov || (momentum > 0.0 && dampening == 0.0),
                    "used with momentum > 0 and dampening 0",
                    momentum,
                )?;
            }
            Algorithm::Adam { beta1, beta2, eps } | Algorithm::AdamW { beta1, beta2, eps } => {
                check("beta1", (0.0..1.0).contains(&beta1), "in [0, 1)", beta1)?;
                check("beta2", (0.0..1.0).contains(&beta2), "in [0, 1)", beta2)?;
                check("eps", eps >= 0.0, ">= 0", eps)?;
            }
        }
        Ok(Optimizer {
            algorithm,
            lr,
            weight_decay,
            state: BTreeMap::new(),
        })
    }

    /// Steps taken for parameter `name` (0 before its first update).
    pub fn steps(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.step)
    }

    /// Applies one update to parameter `name` given its gradient.
    pub fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()> {
        if param.len() != grad.len() {
            return Err(OptimError::Length {
                name: name.to_string(),
                param: param.len(),
                grad: grad.len(),
            });
        }
        let lr = self.lr;
        let wd = self.weight_decay;
        let st = self.state.entry(name.to_string()).or_default();
        st.step += 1;
        match self.algorithm {
            Algorithm::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let (wd32, mom32, damp32, neg_lr) = (
                    wd as f32,
                    momentum as f32,
                    (1.0 - dampening) as f32,
                    (-lr) as f32,
                );
                let mut g: Vec<f32> = if wd != 0.0 {
                    grad.iter()
                        .zip(param.iter())
                        .map(|(&g, &p)| g + wd32 * p)
                        .collect()
                } else {
                    grad.to_vec()
                };
                if momentum != 0.0 {
                    let buf = match st.first.as_mut() {
                        None => st.first.insert(g.clone()),
                        Some(b) => {
                            for (b, &g) in b.iter_mut().zip(&g) {
                                *b = *b * mom32 + damp32 * g;
                            }
                            b
                        }
                    };
                    if nesterov {
                        for (g, &b) in g.iter_mut().zip(buf.iter()) {
                            *g += mom32 * b;
                        }
                    } else {
                        g.copy_from_slice(buf);
                    }
                }
                for (p, &g) in param.iter_mut().zip(&g) {
                    *p += neg_lr * g;
                }
            }
            Algorithm::Adam { beta1, beta2, eps } | Algorithm::AdamW { beta1, beta2, eps } => {
                let decoupled = matches!(self.algorithm, Algorithm::AdamW { .. });
                if decoupled && wd != 0.0 {
                    let keep = (1.0 - lr * wd) as f32;
                    param.iter_mut().for_each(|p| *p *= keep);
                }
                let (wd32, w1, b2, w2) = (
                    wd as f32,
                    (1.0 - beta1) as f32,
                    beta2 as f32,
                    (1.0 - beta2) as f32,
                );
                let t = st.step as f64;
                let bc1 = 1.0 - beta1.powf(t);
                let bc2_sqrt = (1.0 - beta2.powf(t)).sqrt() as f32;
                let neg_step = (-(lr / bc1)) as f32;
                let eps32 = eps as f32;
                let n = param.len();
                let m = st.first.get_or_insert_with(|| vec![0.0; n]);
                let v = st.second.get_or_insert_with(|| vec![0.0; n]);
                for i in 0..n {
                    let g = if !decoupled && wd != 0.0 {
                        grad[i] + wd32 * param[i]
                    } else {
                        grad[i]
                    };
                    // torch.lerp with weight < 0.5: self + weight·(end − self).
                    m[i] += w1 * (g - m[i]);
                    v[i] = v[i] * b2 + w2 * g * g;
                    let denom = v[i].sqrt() / bc2_sqrt + eps32;
                    param[i] += neg_step * m[i] / denom;
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`<prefix><param>.step` as i64, `.first` and
    /// `.second` as f32), for a checkpoint.
    pub fn state_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, st) in &self.state {
            out.push((
                format!("{prefix}{name}.step"),
                Tensor::scalar(st.step as i64),
            ));
            for (key, buf) in [("first", &st.first), ("second", &st.second)] {
                if let Some(b) = buf {
                    let t = Tensor::from_vec(vec![b.len()], b.clone()).expect("1-D");
                    out.push((format!("{prefix}{name}.{key}"), t));
                }
            }
        }
        out
    }

    /// Restores the state written by [`Optimizer::state_tensors`] (entries not
    /// under `prefix` are ignored); replaces any state held.
    pub fn load_state_tensors(
        &mut self,
        prefix: &str,
        tensors: &IndexMap<String, Tensor>,
    ) -> Result<()> {
        self.state.clear();
        for (key, t) in tensors {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            let Some((name, field)) = rest.rsplit_once('.') else {
                continue;
            };
            let bad = |msg: String| OptimError::State {
                name: key.clone(),
                msg,
            };
            let st = self.state.entry(name.to_string()).or_default();
            match field {
                "step" => {
                    let v = t.to_i64_vec();
                    st.step = match v.as_slice() {
                        [s] if *s >= 0 => *s as u64,
                        _ => return Err(bad(format!("expected one step count, found {v:?}"))),
                    };
                }
                "first" | "second" => {
                    let v = t
                        .as_slice::<f32>()
                        .map_err(|_| bad(format!("expected f32, found {}", t.dtype())))?
                        .to_vec();
                    if field == "first" {
                        st.first = Some(v);
                    } else {
                        st.second = Some(v);
                    }
                }
                other => return Err(bad(format!("unknown field '{other}'"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gradient both this test and bench/train_fixtures.py use:
    /// `0.5·p + sin(0.7·i + 1.3·t)` (f32 arithmetic, sine in f64).
    fn grad(p: &[f32], t: usize) -> Vec<f32> {
        p.iter()
            .enumerate()
            .map(|(i, &x)| 0.5 * x + (0.7 * i as f64 + 1.3 * t as f64).sin() as f32)
            .collect()
    }

    const P0: [f32; 6] = [0.5, -1.25, 2.0, 0.0, -0.1, 3.5];

    fn run(opt: &mut Optimizer, steps: usize) -> Vec<f32> {
        let mut p = P0.to_vec();
        for t in 0..steps {
            let g = grad(&p, t);
            opt.update("w", &mut p, &g).unwrap();
        }
        p
    }

    /// The published update rules in f64, written independently of the
    /// f32-ordered implementation above.
    fn reference(alg: Algorithm, lr: f64, wd: f64, steps: usize) -> Vec<f64> {
        let mut p: Vec<f64> = P0.iter().map(|&x| x as f64).collect();
        let n = p.len();
        let (mut m, mut v) = (vec![0.0f64; n], vec![0.0f64; n]);
        for t in 0..steps {
            let pf: Vec<f32> = p.iter().map(|&x| x as f32).collect();
            let g0: Vec<f64> = grad(&pf, t).iter().map(|&x| x as f64).collect();
            for i in 0..n {
                match alg {
                    Algorithm::Sgd {
                        momentum,
                        dampening,
                        nesterov,
                    } => {
                        let g = g0[i] + wd * p[i];
                        m[i] = if t == 0 {
                            g
                        } else {
                            momentum * m[i] + (1.0 - dampening) * g
                        };
                        let d = if momentum == 0.0 {
                            g
                        } else if nesterov {
                            g + momentum * m[i]
                        } else {
                            m[i]
                        };
                        p[i] -= lr * d;
                    }
                    Algorithm::Adam { beta1, beta2, eps }
                    | Algorithm::AdamW { beta1, beta2, eps } => {
                        let adamw = matches!(alg, Algorithm::AdamW { .. });
                        let g = if adamw {
                            p[i] *= 1.0 - lr * wd;
                            g0[i]
                        } else {
                            g0[i] + wd * p[i]
                        };
                        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                        let k = (t + 1) as i32;
                        let mhat = m[i] / (1.0 - beta1.powi(k));
                        let vhat = v[i] / (1.0 - beta2.powi(k));
                        p[i] -= lr * mhat / (vhat.sqrt() + eps);
                    }
                }
            }
        }
        p
    }

    fn cases() -> Vec<(&'static str, Algorithm, f64, f64)> {
        let sgd = |momentum, dampening, nesterov| Algorithm::Sgd {
            momentum,
            dampening,
            nesterov,
        };
        let adam = Algorithm::by_name("adam").unwrap();
        let adamw = Algorithm::by_name("adamw").unwrap();
        vec![
            ("sgd", sgd(0.0, 0.0, false), 0.1, 0.0),
            ("sgd_momentum_wd", sgd(0.9, 0.1, false), 0.05, 1e-2),
            ("sgd_nesterov", sgd(0.9, 0.0, true), 0.05, 5e-4),
            ("adam", adam, 1e-2, 0.0),
            ("adam_wd", adam, 1e-2, 1e-2),
            ("adamw", adamw, 1e-2, 0.1),
        ]
    }

    #[test]
    fn updates_follow_the_published_formulas() {
        for (name, alg, lr, wd) in cases() {
            let mut opt = Optimizer::new(alg, lr, wd).unwrap();
            let ours = run(&mut opt, 7);
            let want = reference(alg, lr, wd, 7);
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() <= 2e-6 * (1.0 + b.abs()),
                    "{name}[{i}]: {a} vs {b}"
                );
            }
            assert_eq!(opt.steps("w"), 7);
        }
    }

    /// Parameters after 7 steps of torch.optim on the same problem
    /// (bench/train_fixtures.py, torch 2.15 CPU).
    #[test]
    fn trajectories_match_torch() {
        let torch: [(&str, [f32; 6]); 6] = include!("../tests/fixtures/optim_torch.in");
        for ((name, alg, lr, wd), (tname, want)) in cases().into_iter().zip(torch) {
            assert_eq!(name, tname);
            let ours = run(&mut Optimizer::new(alg, lr, wd).unwrap(), 7);
            for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                assert!(
                    ulps <= 4 || (a - b).abs() < 1e-7,
                    "{name}[{i}]: ours {a} torch {b} ({ulps} ulps)"
                );
            }
        }
    }

    #[test]
    fn state_round_trips_and_resumes_identically() {
        for (_, alg, lr, wd) in cases() {
            let mut a = Optimizer::new(alg, lr, wd).unwrap();
            let mut p = P0.to_vec();
            for t in 0..3 {
                let g = grad(&p, t);
                a.update("w", &mut p, &g).unwrap();
            }
            let saved: IndexMap<String, Tensor> = a.state_tensors("opt.").into_iter().collect();
            let mut b = Optimizer::new(alg, lr, wd).unwrap();
            b.load_state_tensors("opt.", &saved).unwrap();
            assert_eq!(a, b);
            let (mut pa, mut pb) = (p.clone(), p);
            for t in 3..6 {
                let g = grad(&pa, t);
                a.update("w", &mut pa, &g).unwrap();
                let g = grad(&pb, t);
                b.update("w", &mut pb, &g).unwrap();
            }
            assert_eq!(pa, pb);
        }
    }

    #[test]
    fn bad_hyper_parameters_and_lengths_are_errors() {
        assert!(Optimizer::new(Algorithm::by_name("adam").unwrap(), -1.0, 0.0).is_err());
        let nesterov = Algorithm::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
        };
        assert!(Optimizer::new(nesterov, 0.1, 0.0).is_err());
        let mut o = Optimizer::new(Algorithm::by_name("sgd").unwrap(), 0.1, 0.0).unwrap();
        let e = o.update("fc.weight", &mut [0.0; 3], &[0.0; 2]).unwrap_err();
        assert!(e.to_string().contains("fc.weight"), "{e}");
        assert!(Algorithm::by_name("lion").is_none());
    }
}
