//! The training executor on a real BERT encoder (all-MiniLM-L6-v2 from the
//! asset cache): every op of the graph has a backward, inference-mode
//! forward equals the runtime's Session, and gradients of a few weights of
//! different kinds agree with central differences.

use shrink_graph::builders::bert::load_sentence_encoder;
use shrink_graph::Graph;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use shrink_train::{Executor, Mode, ParamFilter, ParamStore};

fn minilm() -> Graph {
    let dir = shrink_data::cache_dir().join("minilm");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-assets minilm",
        dir.display()
    );
    load_sentence_encoder(&dir).unwrap()
}

fn feeds(g: &Graph) -> Vec<(String, Tensor)> {
    // Two sequences of 6 tokens, the second padded after 4.
    let ids = vec![
        101i64, 7592, 2088, 2003, 2204, 102, 101, 2023, 2003, 102, 0, 0,
    ];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0];
    let mut f = vec![
        (
            "input_ids".to_string(),
            Tensor::from_vec(vec![2, 6], ids).unwrap(),
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_vec(vec![2, 6], mask).unwrap(),
        ),
    ];
    if g.inputs.iter().any(|i| i.name == "token_type_ids") {
        f.push((
            "token_type_ids".to_string(),
            Tensor::from_vec(vec![2, 6], vec![0i64; 12]).unwrap(),
        ));
    }
    f
}

#[test]
fn minilm_forward_matches_session_and_gradients_match_differences() {
    let g = minilm();
    let f = feeds(&g);
    let want = Session::new(g.clone(), SessionOptions::default())
        .unwrap()
        .run_named(f.clone())
        .unwrap();
    // Train the last layer's weights and the embeddings' LayerNorm only (fast).
    let filter = ParamFilter::Patterns(vec![
        "*layer.5.*".into(),
        "*embeddings.LayerNorm*".into(),
        "*word_embeddings*".into(),
    ]);
    let mut params = ParamStore::from_graph(&g, &filter).unwrap();
    assert!(
        params.trainable_names().len() >= 10,
        "{:?}",
        params.trainable_names()
    );
    let mut exec = Executor::new(&g).unwrap();
    let refs: Vec<(&str, &Tensor)> = f.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let got = exec.forward(&mut params, &refs, Mode::Eval).unwrap();
    for (a, b) in got.iter().zip(&want) {
        let err = a
            .to_f32_vec()
            .iter()
            .zip(b.to_f32_vec())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // Float rounding only: the session multiplies by weights it packed
        // once, the executor by unpacked ones (another summation order).
        let scale = b.to_f32_vec().iter().fold(1f32, |m, v| m.max(v.abs()));
        assert!(
            err <= 1e-5 * scale,
            "MiniLM output differs from the session by {err} (max |y| {scale})"
        );
    }
    // Loss: Σ r·last_hidden_state with fixed weights r (the other output unused).
    let out = exec.forward(&mut params, &refs, Mode::Train).unwrap();
    let r: Vec<Tensor> = out
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let v = (0..o.len())
                .map(|i| {
                    if k == 0 {
                        ((i * 37) % 17) as f32 / 17.0 - 0.5
                    } else {
                        0.0
                    }
                })
                .collect();
            Tensor::from_vec(o.shape().to_vec(), v).unwrap()
        })
        .collect();
    let grads = exec.backward(&params, &r).unwrap();
    for (n, gr) in grads.iter() {
        assert!(gr.to_f32_vec().iter().all(|v| v.is_finite()), "{n}");
    }
    let base = params.clone();
    let mut loss = |p: &mut ParamStore| -> f64 {
        let out = exec.forward(p, &refs, Mode::Train).unwrap();
        out[0]
            .to_f32_vec()
            .iter()
            .zip(r[0].to_f32_vec())
            .map(|(a, b)| *a as f64 * b as f64)
            .sum()
    };
    let mut checked = 0;
    for name in base.trainable_names() {
        let kind_ok = name.contains("query")
            || name.contains("output.dense")
            || name.contains("LayerNorm")
            || name.contains("word_embeddings")
            || name.contains("intermediate");
        if !kind_ok {
            continue;
        }
        let gv = grads.get(name).unwrap().to_f32_vec();
        let j = (0..gv.len())
            .max_by(|&a, &b| gv[a].abs().total_cmp(&gv[b].abs()))
            .unwrap();
        // BERT's outlier channels make some weights strongly nonlinear
        // (the embedding LayerNorm's): a small step, a loose-ish tolerance.
        let eps = 1e-3f32;
        let v0 = base.get(name).unwrap().to_f32_vec()[j];
        let mut p = base.clone();
        p.get_mut(name).unwrap().as_mut_slice::<f32>().unwrap()[j] = v0 + eps;
        let lp = loss(&mut p);
        let mut p = base.clone();
        p.get_mut(name).unwrap().as_mut_slice::<f32>().unwrap()[j] = v0 - eps;
        let lm = loss(&mut p);
        let num = (lp - lm) / (2.0 * eps as f64);
        let a = gv[j] as f64;
        assert!(
            (a - num).abs() <= 3e-3 + 4e-2 * a.abs().max(num.abs()),
            "{name}[{j}]: analytic {a}, numeric {num}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "checked {checked}");
}
