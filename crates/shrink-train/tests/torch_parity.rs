//! Same weights, same batches, same numbers as PyTorch.
//!
//! `bench/train_torch_steps.py` built LeNet-5 and LeNet-5-BN in PyTorch
//! (`torch.manual_seed(0)`), ran one training batch of the shared sample images
//! and then four steps of the `shrink train` recipe (Adam lr 1e-3, per-batch
//! cosine over the run, batch 128, no shuffling), and stored the initial
//! weights, the first batch's loss, logits and gradients, and the final
//! parameters and BatchNorm running statistics in
//! `tests/fixtures/torch_steps_*.safetensors`. Here the zoo graphs get those
//! initial weights and must reproduce every number — any difference in a
//! backward op, BatchNorm's train mode, the loss, Adam, the schedule or the
//! input scaling shows up as a named tensor that disagrees.

use indexmap::IndexMap;
use shrink_data::Dataset;
use shrink_graph::Graph;
use shrink_tensor::Tensor;
use shrink_train::trainer::{self, TrainConfig};
use shrink_train::{loss, zoo, Executor, Mode, ParamFilter, ParamStore};
use std::path::PathBuf;

fn fixture(model: &str) -> IndexMap<String, Tensor> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("torch_steps_{model}.safetensors"));
    shrink_graph::safetensors::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn shared(name: &str) -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data (with fashion/) not found: set SHRINK_SHARED to the directory holding data/")
        .join("fashion")
        .join(name)
}

/// The 256 shared sample test images (u8, so the dataset scales them by
/// 1/255 exactly as the trainer does) and their labels.
fn samples() -> Dataset {
    let x = shrink_data::npy::read_npy(shared("test_sample_x.npy")).unwrap();
    let y = shrink_data::npy::read_npy(shared("test_sample_y.npy")).unwrap();
    Dataset::new(x, y.to_i64_vec()).unwrap()
}

/// The zoo graph with PyTorch's initial weights (BN layers start at γ=1, β=0,
/// mean 0, var 1 in both).
fn graph(model: &str) -> Graph {
    let init = fixture("lenet5");
    let mut g = zoo::build(model, 0).unwrap();
    let mut loaded = 0;
    for (key, t) in &init {
        if let Some(name) = key.strip_prefix("init.") {
            let slot = g
                .initializers
                .get_mut(name)
                .unwrap_or_else(|| panic!("zoo {model} has no parameter '{name}'"));
            assert_eq!(slot.shape(), t.shape(), "{name}");
            *slot = t.clone();
            loaded += 1;
        }
    }
    assert_eq!(loaded, 10, "LeNet-5 has 10 weight tensors");
    g
}

/// Max |a − b| / (atol + rtol·max|b|) over the tensor: ≤ 1 passes.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (a, b) = (got.to_f32_vec(), want.to_f32_vec());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (i, err) = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .enumerate()
        .fold((0, 0f32), |m, (i, e)| if e > m.1 { (i, e) } else { m });
    eprintln!("{what}: max |shrink − torch| {err:.1e}, largest |torch| {scale:.1e}");
    assert!(
        err <= rtol * scale + 1e-7,
        "{what}: max |shrink − torch| = {err:e} at {i} (shrink {}, torch {}), scale {scale:e}",
        a[i],
        b[i]
    );
}

/// A conv bias followed by BatchNorm (which removes any per-channel shift).
fn before_bn(model: &str, name: &str) -> bool {
    model == "lenet5_bn" && matches!(name, "conv1.bias" | "conv2.bias")
}

fn first_batch_matches(model: &str) {
    let want = fixture(model);
    let g = graph(model);
    let data = samples();
    let x = data.inputs(0, 128).unwrap();
    let y = &data.labels[..128];
    let mut params = ParamStore::from_graph(&g, &ParamFilter::All).unwrap();
    let mut exec = Executor::new(&g).unwrap();
    let out = exec
        .forward(&mut params, &[("input", &x)], Mode::Train)
        .unwrap();
    assert_close(&format!("{model} logits"), &out[0], &want["logits0"], 1e-5);
    let lv = loss::cross_entropy(&out[0], y, 0.0).unwrap();
    let l0 = want["loss0"].to_f32_vec()[0];
    assert!(
        (lv.loss - l0).abs() < 1e-5,
        "{model} loss {} vs {l0}",
        lv.loss
    );
    let grads = exec.backward(&params, &[lv.grad]).unwrap();
    let mut n = 0;
    for (name, g) in grads.iter() {
        if before_bn(model, name) {
            // dL/db is exactly 0 for a bias BatchNorm subtracts again: what
            // is computed is rounding noise (PyTorch's is ~1e-6).
            let g = g.to_f32_vec();
            assert!(g.iter().all(|v| v.abs() < 1e-5), "{model} {name}: {g:?}");
        } else {
            let t = want
                .get(&format!("grad.{name}"))
                .unwrap_or_else(|| panic!("{model}: torch has no gradient for '{name}'"));
            assert_close(&format!("{model} grad {name}"), g, t, 1e-4);
        }
        n += 1;
    }
    assert_eq!(
        n,
        grads.len(),
        "{model}: every trainable parameter compared"
    );
}

/// Four steps of the full trainer (gathering, scaling, loss, backward, Adam,
/// cosine schedule, BN running statistics) land on PyTorch's parameters.
fn trainer_steps_match(model: &str, threads: usize) {
    let want = fixture(model);
    let mut g = graph(model);
    // Adam would blow the noise gradient of a conv bias before BatchNorm up
    // to ±lr steps, different on each side, which then shift the running
    // means: those biases are frozen here and in the PyTorch run.
    let trainable = if model == "lenet5_bn" {
        ParamFilter::Exclude(Box::new(ParamFilter::Patterns(vec![
            "conv1.bias".into(),
            "conv2.bias".into(),
        ])))
    } else {
        ParamFilter::All
    };
    let cfg = TrainConfig {
        epochs: 2,
        lr: 1e-3,
        shuffle: false,
        threads,
        trainable,
        ..TrainConfig::default()
    };
    let report = trainer::fit(&mut g, &samples(), None, &cfg).unwrap();
    assert_eq!(report.epochs.len(), 2);
    let losses = want["losses"].to_f32_vec();
    let mean = |a: f32, b: f32| (a as f64 + b as f64) / 2.0;
    for (e, rec) in report.epochs.iter().enumerate() {
        let w = mean(losses[2 * e], losses[2 * e + 1]);
        assert!(
            (rec.train_loss - w).abs() < 1e-4,
            "{model} epoch {} loss {} vs torch {w}",
            e + 1,
            rec.train_loss
        );
    }
    let mut n = 0;
    for (key, t) in &want {
        if let Some(name) = key.strip_prefix("step.") {
            // Adam's first steps move every weight by ≈ lr, so compare the
            // displacement from the start, relative to its size.
            let got = &g.initializers[name];
            assert_close(&format!("{model} after 4 steps: {name}"), got, t, 5e-4);
            n += 1;
        }
    }
    assert!(n >= 10, "{model}: compared {n} tensors");
}

#[test]
fn lenet5_first_batch_loss_and_gradients_equal_pytorch() {
    first_batch_matches("lenet5");
}

#[test]
fn lenet5_bn_first_batch_loss_and_gradients_equal_pytorch() {
    first_batch_matches("lenet5_bn");
}

#[test]
fn lenet5_four_adam_steps_equal_pytorch() {
    trainer_steps_match("lenet5", 1);
    trainer_steps_match("lenet5", 2);
}

#[test]
fn lenet5_bn_four_adam_steps_equal_pytorch() {
    trainer_steps_match("lenet5_bn", 1);
    trainer_steps_match("lenet5_bn", 2);
}
