//! Loads ONNX models into shrink's IR and saves them again: the export path
//! `scripts/check-onnx-export.py` compares against the originals in ONNX Runtime.
//!
//! Usage: onnx_resave [--external-threshold BYTES] IN.onnx OUT.onnx [IN OUT ...]
//! A model that fails is reported on stderr (`FAIL IN: error`) and skipped;
//! the exit status is 1 if any failed.

use shrink_graph::onnx::{self, SaveOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = SaveOptions::default();
    if args.first().map(String::as_str) == Some("--external-threshold") {
        if args.len() < 2 {
            return Err("--external-threshold needs a value".into());
        }
        opts.external_data_threshold = Some(args[1].parse()?);
        args.drain(..2);
    }
    if args.is_empty() || !args.chunks_exact(2).remainder().is_empty() {
        return Err(
            "usage: onnx_resave [--external-threshold BYTES] IN.onnx OUT.onnx [IN OUT ...]".into(),
        );
    }
    let mut failed = 0;
    for pair in args.chunks(2) {
        let result = onnx::load(&pair[0]).and_then(|g| onnx::save_with(&g, &pair[1], &opts));
        if let Err(e) = result {
            eprintln!("FAIL {}: {e}", pair[0]);
            failed += 1;
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
