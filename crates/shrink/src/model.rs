//! Loading a model from whatever the user points at.

use anyhow::{bail, Context, Result};
use shrink_graph::Graph;
use std::path::Path;

/// Loads an ONNX file, a `.shrink` container (tensors decoded to their
/// in-memory values, so every command runs it like the model it stores), or
/// a model directory holding `config.json` + `model.safetensors` (BERT-style
/// encoders such as all-MiniLM-L6-v2).
pub fn load(path: &Path) -> Result<Graph> {
    let g = load_graph(path)?;
    for w in non_finite_weights(&g) {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(g)
}

/// One message per weight tensor holding NaN or infinite values: such a model
/// still loads (the user may want to inspect it), but its outputs are suspect.
pub fn non_finite_weights(g: &Graph) -> Vec<String> {
    g.initializers
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .filter_map(|(name, t)| {
            let v = t.to_f64_vec();
            let nan = v.iter().filter(|x| x.is_nan()).count();
            let inf = v.iter().filter(|x| x.is_infinite()).count();
            (nan + inf > 0).then(|| {
                format!(
                    "weight '{name}' has {nan} NaN and {inf} infinite values of {}",
                    v.len()
                )
            })
        })
        .collect()
}

fn load_graph(path: &Path) -> Result<Graph> {
    if !path.exists() {
        bail!("{}: no such file or directory", path.display());
    }
    if path.is_dir() {
        return shrink_graph::builders::bert::load_sentence_encoder(path)
            .with_context(|| format!("building a BERT encoder from {}", path.display()));
    }
    if shrink_graph::container::is_shrink_file(path) {
        return Ok(shrink_graph::container::load_shrink(path)?);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(shrink_graph::onnx::load(path)?),
        Some("shrink") => bail!(
            "{}: not a .shrink container (its first bytes are not the .shrink magic)",
            path.display()
        ),
        Some("safetensors") => bail!(
            "{}: a safetensors file holds weights but no graph; pass the model directory \
             (with config.json) or an ONNX file",
            path.display()
        ),
        _ => Ok(shrink_graph::onnx::load(path).with_context(|| {
            format!(
                "{}: not a model shrink can read (expected .onnx, .shrink or a model directory)",
                path.display()
            )
        })?),
    }
}
