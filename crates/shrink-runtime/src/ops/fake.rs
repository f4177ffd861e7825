//! `ai.shrink::FakeQuant`: rounds a float tensor to a number format and back,
//! so a graph can simulate formats ONNX has no type for (posits, flex16+5)
//! — and fp16/bf16 where a Cast pair is not wanted.
//!
//! Attribute `format`: `fp16`, `bf16`, `positN` (es = 2, the 2022 standard)
//! or `positNeE`, `flex16+5` (one shared exponent for the whole tensor,
//! chosen from its largest magnitude). The rounding is the one
//! `shrink-formats` defines for each format (nearest, ties to even), so the
//! simulated model computes exactly what the format can represent.

use super::{OpContext, Registry};
use crate::Result;
use shrink_formats::{Bf16, DynFormat, Flex16, Fp16, Posit};
use shrink_tensor::{DType, Tensor};

pub(super) fn register(r: &mut Registry) {
    r.add("ai.shrink", "FakeQuant", fake_quant);
}

/// The format named by `spec`, or `None` if shrink has no such format.
fn format_of(spec: &str) -> Option<Box<dyn DynFormat>> {
    match spec {
        "fp16" => return Some(Box::new(Fp16::default())),
        "bf16" => return Some(Box::new(Bf16::default())),
        "flex16+5" | "flex16" => return Some(Box::new(Flex16::default())),
        _ => {}
    }
    let rest = spec.strip_prefix("posit")?;
    let (n, es) = match rest.split_once('e') {
        Some((n, e)) => (n.parse().ok()?, e.parse().ok()?),
        None => (rest.parse().ok()?, 2),
    };
    Posit::new(n, es)
        .ok()
        .map(|p| Box::new(p) as Box<dyn DynFormat>)
}

fn fake_quant(ctx: &OpContext, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.required(inputs, 0)?;
    let spec = ctx.node.attr_str("format", "")?;
    let format = format_of(spec).ok_or_else(|| {
        ctx.error(format!(
            "unknown format '{spec}' (expected fp16, bf16, positN, positNeE, flex16+5)"
        ))
    })?;
    if x.dtype() != DType::F32 {
        return Err(ctx.error(format!("input must be float32, found {}", x.dtype())));
    }
    if x.is_empty() {
        return Ok(vec![x.clone()]);
    }
    let v = x.as_slice::<f32>()?;
    let out = format
        .round_trip(v, &[v.len()])
        .map_err(|e| ctx.error(format!("{spec}: {e}")))?;
    Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use shrink_graph::{Attr, Node};

    fn run(format: &str, x: Vec<f32>) -> Result<Vec<f32>> {
        let node = Node::new("fq", "FakeQuant", &["x"], &["y"])
            .with("format", Attr::String(format.into()));
        let ctx = OpContext::standalone(&node, 1, 1);
        let t = Tensor::from_vec(vec![x.len()], x)?;
        Ok(fake_quant(&ctx, &[Some(&t)])?.remove(0).into_vec::<f32>()?)
    }

    #[test]
    fn rounds_to_each_format() {
        // fp16: 1 + 2^-11 is a tie between 1 and 1 + 2^-10 → even (1).
        let y = run("fp16", vec![1.0 + 2f32.powi(-11), 65520.0, 0.1]).unwrap();
        assert_eq!(y[0], 1.0);
        assert!(y[1].is_infinite());
        assert_eq!(y[2], half::f16::from_f32(0.1).to_f32());
        // bf16 keeps 8 significant bits.
        let y = run("bf16", vec![1.0 + 2f32.powi(-8)]).unwrap();
        assert_eq!(y[0], 1.0);
        // posit8 (es 2): 1 and 16 are exact; maxpos is 2^24.
        let y = run("posit8", vec![1.0, 16.0, 1e9]).unwrap();
        assert_eq!(y, vec![1.0, 16.0, 2f32.powi(24)]);
        // posit8e0: maxpos 64.
        assert_eq!(run("posit8e0", vec![1e3]).unwrap(), vec![64.0]);
        // flex16+5: max 1.0 needs 1/unit <= 32767, so the unit is 2^-14.
        let unit = 2f64.powi(-14);
        let y = run("flex16+5", vec![1.0, 2f32.powi(-17), 0.3]).unwrap();
        assert_eq!(y[..2], [1.0, 0.0]);
        assert_eq!(y[2] as f64, (0.3f32 as f64 / unit).round() * unit);
        let e = run("int3", vec![1.0]).unwrap_err().to_string();
        assert!(
            e.contains("unknown format 'int3'") && e.contains("fq"),
            "{e}"
        );
    }
}
