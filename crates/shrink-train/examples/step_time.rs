//! Times one training step (forward in Mode::Train + backward; the
//! optimiser's update is not included) of a Fashion-MNIST model from
//! shared/data at a given batch size.
//!
//! `cargo run --release -p shrink-train --example step_time -- [MODEL] [BATCH] [STEPS]`
//! (defaults: lenet5 128 50). PyTorch CPU runs a LeNet-5 epoch (469 steps
//! of 128, optimiser included) in about 6 s on the 2-core dev machine,
//! i.e. ~13 ms per step.

use shrink_graph::onnx;
use shrink_tensor::Tensor;
use shrink_train::{Executor, Mode, ParamFilter, ParamStore};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("lenet5", String::as_str);
    let batch: usize = args.get(2).map_or(Ok(128), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(50), |s| s.parse())?;
    let dir = shrink_data::shared_data_dir().ok_or("shared/data not found (set SHRINK_SHARED)")?;
    let path = dir.join("fashion").join(format!("{model}.onnx"));
    let g = onnx::load(&path)?;
    let input = g.inputs[0].name.clone();
    // Deterministic pseudo-images and labels (timing does not depend on values).
    let x: Vec<f32> = (0..batch * 784)
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let x = Tensor::from_vec(vec![batch, 1, 28, 28], x)?;
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut params = ParamStore::from_graph(&g, &ParamFilter::All)?;
    let mut exec = Executor::new(&g)?;
    let mut fwd = 0f64;
    let mut bwd = 0f64;
    for step in 0..steps + 3 {
        let t0 = Instant::now();
        let out = exec.forward(&mut params, &[(&input, &x)], Mode::Train)?;
        let t1 = Instant::now();
        let logits = out[0].to_f32_vec();
        let c = out[0].shape()[1];
        let mut grad = vec![0f32; batch * c];
        for i in 0..batch {
            let row = &logits[i * c..][..c];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = row.iter().map(|v| (v - m).exp()).sum();
            for j in 0..c {
                let p = (row[j] - m).exp() / z;
                grad[i * c + j] = (p - (j == labels[i]) as i32 as f32) / batch as f32;
            }
        }
        let t2 = Instant::now();
        let grads = exec.backward(&params, &[Tensor::from_vec(vec![batch, c], grad)?])?;
        let t3 = Instant::now();
        std::hint::black_box(grads);
        if step >= 3 {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t3 - t2).as_secs_f64();
        }
    }
    let n = steps as f64;
    println!(
        "{model} batch {batch}: forward {:.2} ms, backward {:.2} ms, step {:.2} ms ({} threads); \
         469 steps = {:.2} s",
        1e3 * fwd / n,
        1e3 * bwd / n,
        1e3 * (fwd + bwd) / n,
        rayon::current_num_threads(),
        469.0 * (fwd + bwd) / n
    );
    Ok(())
}
