//! The training loop: epochs of seeded-shuffled mini-batches through the tape
//! executor, an optimiser step per batch, evaluation after each epoch, early
//! stopping, checkpoints to resume from, and an optional distillation teacher.
//!
//! ```text
//! for epoch:                                   (resumable at every boundary)
//!   shuffle indices (ChaCha8, seeded; state kept in the checkpoint)
//!   for batch:  forward(Train) → loss (CE [+ KD vs teacher]) → backward
//!               → NaN/Inf? stop, keep the last good checkpoint
//!               → clip → optimiser step at the schedule's rate
//!   evaluate (Eval mode: BatchNorm running statistics) → early stopping
//!   checkpoint (atomic)
//! ```
//!
//! A run is a pure function of (graph, data, config): same seed and thread
//! count, same weights bit for bit, including across a checkpoint/resume.

use crate::checkpoint::Checkpoint;
use crate::loss::{self, LossError};
use crate::optim::{Algorithm, OptimError, Optimizer};
use crate::schedule::{Schedule, Scheduler};
use crate::{clip, Executor, Mode, ParamFilter, ParamStore, TrainError};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use shrink_data::Dataset;
use shrink_graph::{Dim, Graph};
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;
use std::time::Instant;

/// Why a training run stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(
        "the dataset's images are {data:?} but the model's input '{input}' is [{}]",
        model.join(", ")
    )]
    InputShape {
        input: String,
        model: Vec<String>,
        data: Vec<usize>,
    },
    #[error(
        "the model has {0}; training needs exactly one input and its first output is the logits"
    )]
    Interface(String),
    #[error("loss became {value} at epoch {epoch}, step {step}: training stopped. {kept}")]
    NonFinite {
        value: f32,
        epoch: u64,
        step: u64,
        kept: String,
    },
    #[error("no parameter is trainable (filter {0:?} selects none of the model's float weights)")]
    NothingToTrain(ParamFilter),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Data(#[from] shrink_data::DataError),
    #[error("teacher: {0}")]
    Teacher(#[from] shrink_runtime::RuntimeError),
}

pub type Result<T, E = FitError> = std::result::Result<T, E>;

/// How the learning rate moves over the run; turned into a per-step
/// [`Schedule`] once the number of steps per epoch is known.
#[derive(Debug, Clone, PartialEq)]
pub enum LrPolicy {
    Constant,
    /// Cosine annealing to 0 over the whole run, stepped every batch.
    Cosine,
    /// Multiply by `gamma` every `epochs` epochs.
    Step {
        epochs: u64,
        gamma: f64,
    },
    /// Linear warm-up from `start_factor` over `epochs` epochs, then cosine
    /// to 0 over the rest.
    WarmupCosine {
        epochs: u64,
        start_factor: f64,
    },
}

impl LrPolicy {
    pub fn by_name(name: &str) -> Option<LrPolicy> {
        Some(match name {
            "constant" | "none" => LrPolicy::Constant,
            "cosine" => LrPolicy::Cosine,
            "step" => LrPolicy::Step {
                epochs: 2,
                gamma: 0.5,
            },
            "warmup-cosine" => LrPolicy::WarmupCosine {
                epochs: 1,
                start_factor: 0.1,
            },
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 4] = ["constant", "cosine", "step", "warmup-cosine"];

    /// The per-step schedule for a run of `epochs` × `per_epoch` steps.
    pub fn schedule(&self, epochs: u64, per_epoch: u64) -> Schedule {
        let total = epochs * per_epoch;
        match *self {
            LrPolicy::Constant => Schedule::Constant,
            LrPolicy::Cosine => Schedule::Cosine {
                t_max: total.max(1),
                eta_min: 0.0,
            },
            LrPolicy::Step { epochs, gamma } => Schedule::Step {
                step_size: (epochs * per_epoch).max(1),
                gamma,
            },
            LrPolicy::WarmupCosine {
                epochs: warm,
                start_factor,
            } => {
                let w = (warm * per_epoch).min(total);
                Schedule::Warmup {
                    steps: w,
                    start_factor,
                    then: Box::new(Schedule::Cosine {
                        t_max: (total - w).max(1),
                        eta_min: 0.0,
                    }),
                }
            }
        }
    }
}

/// Knowledge distillation from a teacher model run by the inference runtime:
/// loss = `alpha · KD(T) + (1 − alpha) · CE`.
#[derive(Debug, Clone)]
pub struct Distill {
    pub teacher: Graph,
    pub temperature: f32,
    pub alpha: f32,
}

/// Everything a run depends on. The defaults are the recipe of the shared
/// Fashion-MNIST models: Adam, no weight decay, cosine annealing per batch,
/// batch 128, shuffled, 8 epochs, with Adam's customary lr 1e-3 (PyTorch's
/// default). Trained from scratch, the zoo models need 3e-3 to reach the
/// reference accuracies, in PyTorch as here, which is what `shrink train`
/// passes (BENCHMARKS.md §8).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: u64,
    pub batch: usize,
    pub lr: f64,
    pub optimizer: Algorithm,
    pub weight_decay: f64,
    pub schedule: LrPolicy,
    pub label_smoothing: f32,
    /// Clip gradients to this global L2 norm.
    pub clip_norm: Option<f32>,
    /// Clamp gradient elements to ± this value.
    pub clip_value: Option<f32>,
    pub seed: u64,
    pub shuffle: bool,
    /// Stop after this many epochs without a better evaluation accuracy.
    pub patience: Option<u64>,
    /// Directory for `checkpoint.safetensors`, written after every epoch.
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint` if there is one.
    pub resume: bool,
    /// End this invocation after this many epochs (checkpoint written), as a
    /// pre-empted job would; a later `resume` continues the same run.
    pub stop_after: Option<u64>,
    /// Which float initializers train; the rest are frozen. Scalars (op
    /// constants such as Clip bounds) and buffers never train.
    pub trainable: ParamFilter,
    pub distill: Option<Distill>,
    /// Kernel threads (0 = one per core).
    pub threads: usize,
    pub eval_batch: usize,
    /// Draw progress bars and per-epoch lines on stderr.
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch: 128,
            lr: 1e-3,
            optimizer: Algorithm::by_name("adam").expect("known"),
            weight_decay: 0.0,
            schedule: LrPolicy::Cosine,
            label_smoothing: 0.0,
            clip_norm: None,
            clip_value: None,
            seed: 0,
            shuffle: true,
            patience: None,
            checkpoint: None,
            resume: false,
            stop_after: None,
            trainable: ParamFilter::All,
            distill: None,
            threads: 0,
            eval_batch: 500,
            progress: false,
        }
    }
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u64,
    pub train_loss: f64,
    /// Top-1 % on the training batches as they were seen (train mode).
    pub train_accuracy: f64,
    /// Top-1 % on the evaluation set after the epoch (eval mode).
    pub eval_accuracy: Option<f64>,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
}

/// The run's history.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    pub epochs: Vec<EpochRecord>,
    /// Epochs already done when the run resumed from a checkpoint.
    pub resumed_at: u64,
    pub stopped_early: bool,
    pub best_accuracy: Option<f64>,
    pub best_epoch: Option<u64>,
    pub trainable_params: usize,
}

/// Trains `graph` in place on `data`, evaluating on `eval` after each epoch.
/// On success the trained weights (and BatchNorm statistics) are in `graph`.
pub fn fit(
    graph: &mut Graph,
    data: &Dataset,
    eval: Option<&Dataset>,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        cfg.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| FitError::Config(format!("thread pool of {threads}: {e}")))?;
    pool.install(|| Run::new(graph, data, eval, cfg, threads)?.go(graph))
}

/// Accuracy (%) of `graph`'s first output on `data`, in Eval mode.
pub fn accuracy(graph: &Graph, data: &Dataset, batch: usize, threads: usize) -> Result<f64> {
    let input = check_interface(graph, data)?;
    let session = Session::new(
        graph.clone(),
        SessionOptions {
            threads,
            ..Default::default()
        },
    )?;
    let mut hits = 0;
    for b in data.batches(batch.max(1)) {
        let (x, y) = b?;
        let out = session.run_named(vec![(input.clone(), x)])?.remove(0);
        hits += loss::correct(&out, &y)?;
    }
    Ok(100.0 * hits as f64 / data.len().max(1) as f64)
}

/// The one runtime input of a model, checked against the dataset's images.
fn check_interface(graph: &Graph, data: &Dataset) -> Result<String> {
    let inputs: Vec<_> = graph
        .inputs
        .iter()
        .filter(|i| !graph.initializers.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        return Err(FitError::Interface(format!("{} inputs", inputs.len())));
    };
    if graph.outputs.is_empty() {
        return Err(FitError::Interface("no outputs".into()));
    }
    let mut fed: Vec<usize> = data.image_shape().to_vec();
    if fed.len() == 2 {
        fed.insert(0, 1);
    }
    if let Some(dims) = &input.shape {
        let fits = dims.len() == fed.len() + 1
            && dims[1..]
                .iter()
                .zip(&fed)
                .all(|(d, &n)| d.known().is_none_or(|k| k == n));
        if !fits {
            let model = dims
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => n.to_string(),
                    Dim::Symbol(s) => s.clone(),
                })
                .collect();
            let mut data_shape = vec![data.len()];
            data_shape.extend(fed);
            return Err(FitError::InputShape {
                input: input.name.clone(),
                model,
                data: data_shape,
            });
        }
    }
    Ok(input.name.clone())
}

/// Model inputs and labels for the examples at `idx`, in that order.
fn gather(data: &Dataset, idx: &[usize]) -> Result<(Tensor, Vec<i64>)> {
    let per: usize = data.image_shape().iter().product();
    let images = shrink_tensor::map_data!(data.images.data(), v => {
        let mut out = Vec::with_capacity(idx.len() * per);
        for &i in idx {
            out.extend_from_slice(&v[i * per..(i + 1) * per]);
        }
        out
    });
    let mut shape = data.images.shape().to_vec();
    shape[0] = idx.len();
    let part = Dataset {
        images: Tensor::new(shape, images).map_err(shrink_data::DataError::from)?,
        labels: idx.iter().map(|&i| data.labels[i]).collect(),
        scaling: data.scaling.clone(),
    };
    let x = part.inputs(0, idx.len())?;
    Ok((x, part.labels))
}

/// The state of one training run.
struct Run<'a> {
    cfg: &'a TrainConfig,
    data: &'a Dataset,
    eval: Option<&'a Dataset>,
    input: String,
    params: ParamStore,
    exec: Executor,
    opt: Optimizer,
    sched: Scheduler,
    rng: ChaCha8Rng,
    teacher: Option<(Session, f32, f32)>,
    epoch: u64,
    step: u64,
    best: Option<(f64, u64)>,
    resumed_at: u64,
}

impl<'a> Run<'a> {
    fn new(
        graph: &Graph,
        data: &'a Dataset,
        eval: Option<&'a Dataset>,
        cfg: &'a TrainConfig,
        threads: usize,
    ) -> Result<Run<'a>> {
        if cfg.batch == 0 || cfg.epochs == 0 {
            return Err(FitError::Config("batch size and epochs must be > 0".into()));
        }
        if data.is_empty() {
            return Err(FitError::Config("the training set is empty".into()));
        }
        let input = check_interface(graph, data)?;
        if let Some(e) = eval {
            check_interface(graph, e)?;
        }
        let mut params = ParamStore::from_graph(graph, &cfg.trainable)?;
        // Scalars are op constants (Clip's bounds in an exported ReLU6), never weights.
        let scalars: Vec<String> = params
            .iter()
            .filter(|(_, t)| t.rank() == 0)
            .map(|(n, _)| n.to_string())
            .collect();
        for n in scalars {
            params.set_trainable(&n, false)?;
        }
        if params.trainable_len() == 0 {
            return Err(FitError::NothingToTrain(cfg.trainable.clone()));
        }
        let mut exec = Executor::new(graph)?;
        exec.set_seed(cfg.seed);
        let per_epoch = data.len().div_ceil(cfg.batch) as u64;
        let teacher = match &cfg.distill {
            None => None,
            Some(d) => {
                check_interface(&d.teacher, data)?;
                let s = Session::new(
                    d.teacher.clone(),
                    SessionOptions {
                        threads,
                        ..Default::default()
                    },
                )?;
                Some((s, d.temperature, d.alpha))
            }
        };
        let mut run = Run {
            cfg,
            data,
            eval,
            input,
            params,
            exec,
            opt: Optimizer::new(cfg.optimizer, cfg.lr, cfg.weight_decay)?,
            sched: Scheduler::new(cfg.schedule.schedule(cfg.epochs, per_epoch), cfg.lr),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            teacher,
            epoch: 0,
            step: 0,
            best: None,
            resumed_at: 0,
        };
        if cfg.resume {
            run.restore()?;
        }
        Ok(run)
    }

    /// Loads the checkpoint, if the directory has one.
    fn restore(&mut self) -> Result<()> {
        let Some(dir) = &self.cfg.checkpoint else {
            return Err(FitError::Config(
                "resuming needs a checkpoint directory".into(),
            ));
        };
        let Some(ck) = Checkpoint::load(dir)? else {
            return Ok(());
        };
        for (name, t) in ck.params {
            if !self.params.contains(&name) {
                return Err(FitError::Config(format!(
                    "checkpoint in {} has parameter '{name}', which the model lacks \
                     (a checkpoint of another model?)",
                    dir.display()
                )));
            }
            self.params.set(&name, t)?;
        }
        self.opt.load_state_tensors("", &ck.optimizer)?;
        self.rng = ChaCha8Rng::from_seed(ck.rng_seed);
        self.rng.set_word_pos(ck.rng_word_pos);
        self.epoch = ck.epoch;
        self.resumed_at = ck.epoch;
        self.step = ck.step;
        for _ in 0..ck.step {
            self.sched.step();
        }
        if ck.best_accuracy.is_finite() {
            self.best = Some((ck.best_accuracy, ck.best_epoch));
        }
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let Some(dir) = &self.cfg.checkpoint else {
            return Ok(());
        };
        let (best_accuracy, best_epoch) = self.best.unwrap_or((f64::NEG_INFINITY, 0));
        let ck = Checkpoint {
            params: self
                .params
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            optimizer: self.opt.state_tensors("").into_iter().collect(),
            epoch: self.epoch,
            step: self.step,
            rng_seed: self.rng.get_seed(),
            rng_word_pos: self.rng.get_word_pos(),
            best_accuracy,
            best_epoch,
        };
        ck.save(dir)?;
        Ok(())
    }

    fn non_finite(&self, value: f32) -> FitError {
        let kept = match &self.cfg.checkpoint {
            Some(dir) if self.epoch > 0 => format!(
                "The last good checkpoint (after epoch {}) is kept in {}",
                self.epoch,
                dir.join(crate::checkpoint::FILE_NAME).display()
            ),
            Some(_) => "No epoch had finished, so no checkpoint was written".into(),
            None => {
                "No checkpoint directory was given (--checkpoint DIR keeps one per epoch)".into()
            }
        };
        FitError::NonFinite {
            value,
            epoch: self.epoch + 1,
            step: self.step + 1,
            kept,
        }
    }

    fn go(mut self, graph: &mut Graph) -> Result<TrainReport> {
        let mut records = Vec::new();
        let mut stopped_early = false;
        let end = match self.cfg.stop_after {
            Some(n) => (self.epoch + n).min(self.cfg.epochs),
            None => self.cfg.epochs,
        };
        while self.epoch < end {
            let exhausted = self
                .cfg
                .patience
                .zip(self.best)
                .is_some_and(|(p, (_, best_epoch))| self.epoch - best_epoch >= p);
            if exhausted {
                stopped_early = true;
                break;
            }
            records.push(self.epoch_pass()?);
            self.save()?;
        }
        self.params.write_into(graph)?;
        Ok(TrainReport {
            epochs: records,
            resumed_at: self.resumed_at,
            stopped_early,
            best_accuracy: self.best.map(|b| b.0),
            best_epoch: self.best.map(|b| b.1),
            trainable_params: self.params.trainable_len(),
        })
    }

    fn epoch_pass(&mut self) -> Result<EpochRecord> {
        let n = self.data.len();
        let mut order: Vec<usize> = (0..n).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut self.rng);
        }
        let pb = if self.cfg.progress {
            let pb = ProgressBar::new(n as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:25}] {pos}/{len} {msg} ({elapsed}<{eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_prefix(format!("epoch {}/{}", self.epoch + 1, self.cfg.epochs));
            pb
        } else {
            ProgressBar::hidden()
        };
        let start = Instant::now();
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = self.sched.lr();
        for idx in order.chunks(self.cfg.batch) {
            let (x, y) = gather(self.data, idx)?;
            lr = self.sched.lr();
            self.opt.lr = lr;
            let out =
                self.exec
                    .forward(&mut self.params, &[(self.input.as_str(), &x)], Mode::Train)?;
            let logits = &out[0];
            let mut lv = loss::cross_entropy(logits, &y, self.cfg.label_smoothing)?;
            if let Some((teacher, temperature, alpha)) = &self.teacher {
                let t = teacher
                    .run_named(vec![(self.input.clone(), x.clone())])?
                    .remove(0);
                let kd = loss::kl_distillation(logits, &t, *temperature)?;
                lv.loss = alpha * kd.loss + (1.0 - alpha) * lv.loss;
                let g = lv.grad.as_mut_slice::<f32>().expect("f32 gradient");
                for (g, k) in g.iter_mut().zip(kd.grad.as_slice::<f32>().expect("f32")) {
                    *g = alpha * k + (1.0 - alpha) * *g;
                }
            }
            if !lv.loss.is_finite() {
                return Err(self.non_finite(lv.loss));
            }
            hits += loss::correct(logits, &y)?;
            let mut grads_out = vec![lv.grad];
            // Outputs beyond the logits (if any) get zero gradients.
            for o in &out[1..] {
                grads_out.push(Tensor::zeros(o.dtype(), o.shape().to_vec()));
            }
            drop(out);
            let mut grads = self.exec.backward(&self.params, &grads_out)?;
            let norm = grads.global_norm();
            if !norm.is_finite() {
                return Err(self.non_finite(norm as f32));
            }
            {
                let mut slices: Vec<&mut [f32]> = grads
                    .iter_mut()
                    .filter_map(|(_, g)| g.as_mut_slice::<f32>().ok())
                    .collect();
                if let Some(c) = self.cfg.clip_value {
                    clip::clip_grad_value(&mut slices, c);
                }
                if let Some(c) = self.cfg.clip_norm {
                    clip::clip_grad_norm(&mut slices, c);
                }
            }
            for (name, g) in grads.iter() {
                let g = g.as_slice::<f32>().map_err(TrainError::from)?;
                let p = self
                    .params
                    .get_mut(name)
                    .ok_or_else(|| FitError::Config(format!("gradient for unknown '{name}'")))?
                    .as_mut_slice::<f32>()
                    .map_err(TrainError::from)?;
                self.opt.update(name, p, g)?;
            }
            self.sched.step();
            self.step += 1;
            loss_sum += lv.loss as f64 * idx.len() as f64;
            seen += idx.len();
            pb.inc(idx.len() as u64);
            if self.step.is_multiple_of(8) || seen == n {
                pb.set_message(format!(
                    "loss {:.4} acc {:.2}% {:.0} samples/s",
                    loss_sum / seen as f64,
                    100.0 * hits as f64 / seen as f64,
                    seen as f64 / start.elapsed().as_secs_f64().max(1e-9)
                ));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        self.epoch += 1;
        let eval_accuracy = match self.eval {
            Some(e) => Some(self.evaluate(e)?),
            None => None,
        };
        if let Some(acc) = eval_accuracy {
            if self.best.is_none_or(|(b, _)| acc > b) {
                self.best = Some((acc, self.epoch));
            }
        }
        let rec = EpochRecord {
            epoch: self.epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: 100.0 * hits as f64 / seen.max(1) as f64,
            eval_accuracy,
            seconds,
            samples_per_second: seen as f64 / seconds.max(1e-9),
            lr,
        };
        if self.cfg.progress {
            eprintln!(
                "epoch {}/{}: loss {:.4}  train acc {:.2}%{}  {:.1} s ({:.0} samples/s)  lr {:.3e}",
                rec.epoch,
                self.cfg.epochs,
                rec.train_loss,
                rec.train_accuracy,
                rec.eval_accuracy
                    .map(|a| format!("  eval acc {a:.2}%"))
                    .unwrap_or_default(),
                rec.seconds,
                rec.samples_per_second,
                rec.lr
            );
        }
        Ok(rec)
    }

    /// Top-1 % on `data` with the executor in Eval mode.
    fn evaluate(&mut self, data: &Dataset) -> Result<f64> {
        let mut hits = 0;
        for b in data.batches(self.cfg.eval_batch.max(1)) {
            let (x, y) = b?;
            let out =
                self.exec
                    .forward(&mut self.params, &[(self.input.as_str(), &x)], Mode::Eval)?;
            hits += loss::correct(&out[0], &y)?;
        }
        Ok(100.0 * hits as f64 / data.len().max(1) as f64)
    }
}
