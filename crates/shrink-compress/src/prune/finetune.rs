//! Recovering accuracy after pruning and weight sharing, through shrink-train.
//!
//! One loop serves three needs of Deep Compression:
//! - **masked fine-tuning**: after every optimiser step the pruning mask is
//!   re-applied, so pruned weights stay exactly zero (the gradient of a pruned
//!   weight is also masked, so Adam's moments never see it);
//! - **centroid fine-tuning** (trained quantisation): weights sharing a
//!   centroid get one update, from the *sum* of their gradients (Han et al.
//!   2016, §3.3), so a layer keeps exactly its codebook's values;
//! - **the empirical Fisher** (OBD's diagonal Hessian): mean squared
//!   per-batch gradients, accumulated without updating anything.
//!
//! Batches are drawn from a seeded ChaCha8 shuffle, so a run is reproducible.

use super::mask::{apply_mask_slice, Masks};
use super::pass_error;
use crate::kmeans::Codebook;
use crate::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shrink_data::Dataset;
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use shrink_train::loss::{cross_entropy, kl_distillation};
use shrink_train::optim::{Algorithm, Optimizer};
use shrink_train::{Executor, Mode, ParamFilter, ParamStore};
use std::collections::BTreeMap;

/// What stays fixed while fine-tuning.
#[derive(Debug)]
pub enum Constraint<'a> {
    /// Nothing: plain fine-tuning.
    None,
    /// Pruned weights stay zero.
    Masks(&'a Masks),
    /// Shared weights move only as their centroids move; others (biases) train freely.
    Codebooks(&'a mut BTreeMap<String, Codebook>),
}

/// Options of [`finetune`].
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    pub epochs: usize,
    pub batch: usize,
    /// Adam learning rate, annealed to 0 by a cosine over the run.
    pub lr: f64,
    pub seed: u64,
    /// Stop after this many optimiser steps (None: all epochs).
    pub max_steps: Option<usize>,
    pub threads: usize,
    /// Knowledge distillation from a teacher (Hinton et al. 2015): the loss
    /// becomes `(1 − α)·CE + α·T²·KL(teacher ‖ student)`. The unpruned fp32
    /// model knows the "dark knowledge" of which wrong classes are close;
    /// matching it recovers the last fraction of a point a sparse student
    /// loses on hard labels alone.
    pub distill: Option<Distill>,
}

/// The teacher and the weighting of [`FinetuneOptions::distill`].
#[derive(Debug, Clone)]
pub struct Distill {
    /// The teacher model (same input and number of classes as the student).
    pub teacher: Graph,
    /// Softmax temperature T (> 0).
    pub temperature: f32,
    /// Weight α of the distillation term in [0, 1].
    pub alpha: f32,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            epochs: 2,
            batch: 128,
            lr: 1e-3,
            seed: 0,
            max_steps: None,
            threads: 0,
            distill: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneReport {
    pub steps: usize,
    /// Mean training loss of the first and last epoch.
    pub first_loss: f64,
    pub last_loss: f64,
}

const PASS: &str = "finetune";

fn err(e: impl std::fmt::Display) -> crate::CompressError {
    pass_error(PASS, e.to_string())
}

/// Fine-tunes `g` in place on `data` (training split) under `constraint`.
pub fn finetune(
    g: &mut Graph,
    data: &Dataset,
    opts: &FinetuneOptions,
    mut constraint: Constraint<'_>,
) -> Result<FinetuneReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        })
        .build()
        .map_err(err)?;
    pool.install(|| run(g, data, opts, &mut constraint))
}

fn run(
    g: &mut Graph,
    data: &Dataset,
    opts: &FinetuneOptions,
    constraint: &mut Constraint<'_>,
) -> Result<FinetuneReport> {
    let input = runtime_input(g)?;
    let mut params = ParamStore::from_graph(g, &ParamFilter::All).map_err(err)?;
    let mut exec = Executor::new(g).map_err(err)?;
    exec.set_seed(opts.seed);
    let adam = Algorithm::by_name("adam").ok_or_else(|| err("no Adam"))?;
    let mut optim = Optimizer::new(adam, opts.lr, 0.0).map_err(err)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let per_epoch = data.len().div_ceil(opts.batch.max(1));
    let total = opts
        .max_steps
        .unwrap_or(usize::MAX)
        .min(per_epoch * opts.epochs);
    let trainable: Vec<String> = params
        .trainable_names()
        .into_iter()
        .map(String::from)
        .collect();
    let teacher = match &opts.distill {
        Some(d) => {
            if !(0.0..=1.0).contains(&d.alpha) {
                return Err(err(format!(
                    "distillation weight alpha must lie in [0, 1], got {}",
                    d.alpha
                )));
            }
            Some((
                Session::new(
                    d.teacher.clone(),
                    SessionOptions {
                        threads: opts.threads,
                        ..Default::default()
                    },
                )?,
                d,
            ))
        }
        None => None,
    };
    let mut step = 0usize;
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    'outer: for epoch in 0..opts.epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut n) = (0.0f64, 0usize);
        for chunk in order.chunks(opts.batch.max(1)) {
            if step >= total {
                break 'outer;
            }
            let (x, y) = gather(data, chunk)?;
            let out = exec
                .forward(&mut params, &[(input.as_str(), &x)], Mode::Train)
                .map_err(err)?;
            let mut loss = cross_entropy(&out[0], &y, 0.0).map_err(err)?;
            if let Some((session, d)) = &teacher {
                let t_out = session.run(vec![x.clone()])?;
                let t_logits = t_out
                    .first()
                    .ok_or_else(|| err("the teacher has no output"))?;
                let kd = kl_distillation(&out[0], t_logits, d.temperature).map_err(err)?;
                // kd.grad is the gradient of the T²-scaled loss,
                // T/B·(p_s − p_t): the T² keeps its size comparable with the
                // cross-entropy's across temperatures (Hinton et al.).
                let (a, ce_w) = (d.alpha, 1.0 - d.alpha);
                let mut gv = loss.grad.to_f32_vec();
                for (gc, gk) in gv.iter_mut().zip(kd.grad.to_f32_vec()) {
                    *gc = ce_w * *gc + a * gk;
                }
                loss.loss = ce_w * loss.loss + a * kd.loss;
                loss.grad = Tensor::from_vec(loss.grad.shape().to_vec(), gv)?;
            }
            sum += loss.loss as f64;
            n += 1;
            let grads = exec.backward(&params, &[loss.grad]).map_err(err)?;
            // Cosine annealing over the whole run.
            optim.lr =
                opts.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
            for name in &trainable {
                let Some(gr) = grads.get(name) else { continue };
                let mut gv = gr.to_f32_vec();
                let t = params
                    .get_mut(name)
                    .ok_or_else(|| err(format!("no parameter {name}")))?;
                let p = t.as_mut_slice::<f32>().map_err(err)?;
                match constraint {
                    Constraint::Masks(m) if m.contains_key(name) => {
                        let mask = &m[name];
                        apply_mask_slice(&mut gv, mask);
                        optim.update(name, p, &gv).map_err(err)?;
                        apply_mask_slice(p, mask);
                    }
                    Constraint::Codebooks(books) if books.contains_key(name) => {
                        let book = books.get_mut(name).expect("checked");
                        let mut gsum = vec![0.0f32; book.centroids.len()];
                        let mut j = 0;
                        for (w, gw) in p.iter().zip(&gv) {
                            if *w != 0.0 {
                                gsum[book.labels[j] as usize] += gw;
                                j += 1;
                            }
                        }
                        optim
                            .update(&format!("{name}#centroids"), &mut book.centroids, &gsum)
                            .map_err(err)?;
                        let mut j = 0;
                        for w in p.iter_mut() {
                            if *w != 0.0 {
                                let c = book.centroids[book.labels[j] as usize];
                                *w = if c == 0.0 { f32::MIN_POSITIVE } else { c };
                                j += 1;
                            }
                        }
                    }
                    _ => optim.update(name, p, &gv).map_err(err)?,
                }
            }
            step += 1;
        }
        let mean = sum / n.max(1) as f64;
        if epoch == 0 {
            first_loss = mean;
        }
        last_loss = mean;
    }
    params.write_into(g).map_err(err)?;
    Ok(FinetuneReport {
        steps: step,
        first_loss,
        last_loss,
    })
}

/// Diagonal of the empirical Fisher (OBD's Hessian estimate): for every
/// prunable weight, the mean over `batches` mini-batches of the squared
/// gradient of the mean cross-entropy, computed in inference mode.
pub fn fisher_diagonal(
    g: &Graph,
    data: &Dataset,
    batch: usize,
    batches: usize,
) -> Result<BTreeMap<String, Tensor>> {
    let input = runtime_input(g)?;
    let names: Vec<String> = super::prunable_weights(g)
        .into_iter()
        .map(|w| w.tensor)
        .collect();
    let mut params = ParamStore::from_graph(g, &ParamFilter::Names(names.clone())).map_err(err)?;
    let mut exec = Executor::new(g).map_err(err)?;
    let mut acc: BTreeMap<String, Vec<f64>> = names
        .iter()
        .map(|n| (n.clone(), vec![0.0; g.initializers[n].len()]))
        .collect();
    let mut seen = 0usize;
    for b in data.batches(batch).take(batches) {
        let (x, y) = b?;
        let out = exec
            .forward_recorded(&mut params, &[(input.as_str(), &x)], Mode::Eval)
            .map_err(err)?;
        let loss = cross_entropy(&out[0], &y, 0.0).map_err(err)?;
        let grads = exec.backward(&params, &[loss.grad]).map_err(err)?;
        for (name, a) in acc.iter_mut() {
            if let Some(gr) = grads.get(name) {
                for (s, v) in a.iter_mut().zip(gr.to_f32_vec()) {
                    *s += (v as f64) * (v as f64);
                }
            }
        }
        seen += 1;
    }
    if seen == 0 {
        return Err(err("no data for the Fisher estimate"));
    }
    acc.into_iter()
        .map(|(n, a)| {
            let shape = g.initializers[&n].shape().to_vec();
            let v: Vec<f32> = a.iter().map(|s| (s / seen as f64) as f32).collect();
            Ok((n, Tensor::from_vec(shape, v)?))
        })
        .collect()
}

fn runtime_input(g: &Graph) -> Result<String> {
    g.inputs
        .iter()
        .find(|i| !g.initializers.contains_key(&i.name))
        .map(|i| i.name.clone())
        .ok_or_else(|| err("the model has no runtime input"))
}

/// The examples at `idx` as one batch.
fn gather(data: &Dataset, idx: &[usize]) -> Result<(Tensor, Vec<i64>)> {
    let mut xs: Vec<f32> = Vec::new();
    let mut shape = Vec::new();
    for &i in idx {
        let x = data.inputs(i, i + 1)?;
        shape = x.shape().to_vec();
        xs.extend(x.to_f32_vec());
    }
    shape[0] = idx.len();
    let y = idx.iter().map(|&i| data.labels[i]).collect();
    Ok((Tensor::from_vec(shape, xs)?, y))
}
