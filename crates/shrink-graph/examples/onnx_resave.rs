//! Loads an ONNX model into shrink's IR and saves it again: the export path
//! `scripts/check-onnx-export.py` compares against the original in ONNX Runtime.
//!
//! Usage: onnx_resave IN.onnx OUT.onnx [EXTERNAL_THRESHOLD_BYTES]

use shrink_graph::onnx::{self, SaveOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: onnx_resave IN.onnx OUT.onnx [EXTERNAL_THRESHOLD_BYTES]".into());
    }
    let g = onnx::load(&args[1])?;
    let opts = SaveOptions {
        external_data_threshold: args.get(3).map(|s| s.parse()).transpose()?,
    };
    onnx::save_with(&g, &args[2], &opts)?;
    Ok(())
}
