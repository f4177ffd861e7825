//! all-MiniLM-L6-v2 built from its safetensors checkpoint and run on the shrink
//! runtime reproduces sentence-transformers' fp32 embeddings
//! (shared/data/minilm/public_embeddings.npy, 300 sentences).

use shrink_data::npy::read_npy;
use shrink_graph::builders::bert::load_sentence_encoder;
use shrink_runtime::{Session, SessionOptions};
use shrink_tensor::Tensor;
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    let d = shrink_data::cache_dir().join("minilm");
    assert!(
        d.join("model.safetensors").is_file(),
        "{} has no model.safetensors; run scripts/fetch-assets minilm",
        d.display()
    );
    d
}

fn reference(name: &str) -> Tensor {
    let p = shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED)")
        .join("minilm")
        .join(name);
    read_npy(&p).unwrap_or_else(|e| panic!("reference {}: {e}", p.display()))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Rows `start..end` of an i64 [N, L] tensor, trimmed to `len` columns.
fn rows(t: &Tensor, start: usize, end: usize, len: usize) -> Tensor {
    let l = t.shape()[1];
    let v = t.as_slice::<i64>().unwrap();
    let mut out = Vec::with_capacity((end - start) * len);
    for r in start..end {
        out.extend_from_slice(&v[r * l..r * l + len]);
    }
    Tensor::from_vec(vec![end - start, len], out).unwrap()
}

#[test]
fn built_minilm_matches_reference_embeddings() {
    let graph = load_sentence_encoder(model_dir()).unwrap();
    let session = Session::new(graph, SessionOptions::default()).unwrap();
    let ids = reference("public_input_ids.npy");
    let mask = reference("public_attention_mask.npy");
    let want = reference("public_embeddings.npy");
    let (n, l) = (ids.shape()[0], ids.shape()[1]);
    let dim = want.shape()[1];
    let want = want.as_slice::<f32>().unwrap();
    let mask_v = mask.as_slice::<i64>().unwrap();
    let mut cos = Vec::with_capacity(n);
    for start in (0..n).step_by(32) {
        let end = (start + 32).min(n);
        let len = (start..end)
            .map(|r| mask_v[r * l..(r + 1) * l].iter().sum::<i64>() as usize)
            .max()
            .unwrap();
        let out = session
            .run_named(vec![
                ("input_ids".into(), rows(&ids, start, end, len)),
                ("attention_mask".into(), rows(&mask, start, end, len)),
            ])
            .unwrap();
        assert_eq!(out[0].shape(), &[end - start, len, dim]);
        assert_eq!(out[1].shape(), &[end - start, dim]);
        let got = out[1].as_slice::<f32>().unwrap();
        for (i, r) in (start..end).enumerate() {
            cos.push(cosine(
                &got[i * dim..(i + 1) * dim],
                &want[r * dim..(r + 1) * dim],
            ));
        }
    }
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let (worst, min) = cos
        .iter()
        .copied()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    println!(
        "MiniLM on shrink runtime: mean cosine {mean:.9} (1 - mean = {:.2e}), min {min:.9} (1 - min = {:.2e}, sentence {worst})",
        1.0 - mean,
        1.0 - min
    );
    assert!(mean >= 0.99999, "mean cosine {mean}");
    assert!(min >= 0.9999, "min cosine {min} at sentence {worst}");
}

#[test]
fn embed_cli_agrees_with_reference() {
    let sentences: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            shrink_data::shared_data_dir()
                .unwrap()
                .join("minilm/public_sentences.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let picks = [0usize, 7];
    let texts: Vec<&str> = picks
        .iter()
        .map(|&i| sentences[i]["text"].as_str().unwrap())
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shrink"))
        .arg("embed")
        .arg(model_dir())
        .args(texts.iter().flat_map(|t| ["--text", t]))
        .args(["--json", "--threads", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shrink embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = reference("public_embeddings.npy");
    let dim = want.shape()[1];
    let want = want.as_slice::<f32>().unwrap();
    let got: Vec<Vec<f32>> = json["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    for (k, &i) in picks.iter().enumerate() {
        assert_eq!(got[k].len(), dim);
        let c = cosine(&got[k], &want[i * dim..(i + 1) * dim]);
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }
    // The printed cross-similarity is the cosine of the two reference vectors.
    let c01 = json["cosine"][0][1].as_f64().unwrap();
    let r01 = cosine(&want[..dim], &want[7 * dim..8 * dim]);
    assert!((c01 - r01).abs() < 1e-4, "{c01} vs {r01}");
}

#[test]
fn token_type_ids_input_gives_the_same_embeddings() {
    use shrink_graph::builders::bert::{bert_encoder_with, BertConfig, BertOptions};
    use shrink_graph::safetensors::SafeTensors;
    let dir = model_dir();
    let config = BertConfig::from_file(dir.join("config.json")).unwrap();
    let weights = SafeTensors::open(dir.join("model.safetensors")).unwrap();
    let with_types = bert_encoder_with(
        &config,
        &weights,
        &BertOptions {
            token_type_ids: true,
        },
    )
    .unwrap();
    let session = Session::new(with_types, SessionOptions::default()).unwrap();
    let ids = reference("public_input_ids.npy");
    let mask = reference("public_attention_mask.npy");
    let want = reference("public_embeddings.npy");
    let dim = want.shape()[1];
    let (n, len) = (8, 40);
    let out = session
        .run_named(vec![
            ("input_ids".into(), rows(&ids, 0, n, len)),
            ("attention_mask".into(), rows(&mask, 0, n, len)),
            (
                "token_type_ids".into(),
                Tensor::zeros(shrink_tensor::DType::I64, vec![n, len]),
            ),
        ])
        .unwrap();
    let got = out[1].as_slice::<f32>().unwrap();
    let want = want.as_slice::<f32>().unwrap();
    for r in 0..n {
        let c = cosine(&got[r * dim..(r + 1) * dim], &want[r * dim..(r + 1) * dim]);
        assert!(c >= 0.99999, "sentence {r}: cosine {c}");
    }
}
