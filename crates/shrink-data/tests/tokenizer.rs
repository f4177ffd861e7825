//! The MiniLM tokenizer reproduces the reference tokenisation
//! (shared/data/minilm/public_input_ids.npy, made by the Python
//! `tokenizers`/sentence-transformers stack) exactly.

use shrink_data::{npy::read_npy, Tokenizer};
use std::path::PathBuf;

fn reference(name: &str) -> PathBuf {
    shrink_data::shared_data_dir()
        .expect("shared/data not found (set SHRINK_SHARED)")
        .join("minilm")
        .join(name)
}

#[test]
fn reproduces_public_input_ids_and_mask() {
    let dir = shrink_data::cache_dir().join("minilm");
    let tok = Tokenizer::from_file(&dir).unwrap_or_else(|e| {
        panic!("MiniLM tokenizer missing ({e}); run scripts/fetch-assets minilm")
    });
    let sentences: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference("public_sentences.json")).unwrap())
            .unwrap();
    let texts: Vec<String> = sentences
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 300);
    let ids = read_npy(reference("public_input_ids.npy")).unwrap();
    let mask = read_npy(reference("public_attention_mask.npy")).unwrap();
    let enc = tok.encode_batch(&texts).unwrap();
    // The reference is padded to the longest of all 300 rows, as is ours.
    assert_eq!(enc.input_ids.shape(), ids.shape());
    let (got, want) = (
        enc.input_ids.as_slice::<i64>().unwrap(),
        ids.as_slice::<i64>().unwrap(),
    );
    let l = ids.shape()[1];
    for r in 0..texts.len() {
        assert_eq!(
            got[r * l..(r + 1) * l],
            want[r * l..(r + 1) * l],
            "sentence {r}: {:?}",
            texts[r]
        );
    }
    assert_eq!(enc.attention_mask, mask);
    assert!(enc
        .token_type_ids
        .as_slice::<i64>()
        .unwrap()
        .iter()
        .all(|&t| t == 0));
    // Truncation at 256 holds for an over-long input.
    let long = "word ".repeat(1000);
    let one = tok.encode_batch(&[long.as_str(), "short"]).unwrap();
    assert_eq!(one.input_ids.shape(), &[2, 256]);
    assert_eq!(one.input_ids.as_slice::<i64>().unwrap()[255], 102);
}
