//! Mixed precision against the container's real stored size (issue #6):
//! the encoded-size model is what `.shrink` writes, the search respects a
//! byte budget on it, and MSE clipping helps low-bit weights.

mod ptq_common;
use ptq_common::*;
use shrink_compress::calib::{calibrate, CalibConfig, ObserverConfig};
use shrink_compress::mixed::{
    best_encoding, choose_encodings, encoded_bytes, plan_bytes, search_widths, width_costs, Metric,
    SensitivityData, SizeModel,
};
use shrink_compress::quantize::{activation_tensors, insert_qdq, QuantPlan, WeightFormat};
use shrink_compress::ActivationRanges;
use shrink_graph::container::{from_shrink_bytes, to_shrink_bytes, Encoding, Provenance};
use shrink_graph::Graph;

fn ranges(g: &Graph, n: usize) -> ActivationRanges {
    calibrate(
        g,
        &activation_tensors(g),
        &calib(n).batches,
        &CalibConfig {
            observer: ObserverConfig::default(),
            threads: 0,
        },
        |_| {},
    )
    .unwrap()
}

/// The encoded size is what the container writes (payloads add up to the
/// stored tensor bytes minus each tensor's dtype/shape header and table
/// entry), the chosen encodings are lossless, and low-bit codes really are
/// Huffman-coded below their nominal width.
#[test]
fn encoded_size_is_the_containers_and_lossless() {
    let g = model("lenet5_bn");
    let r = ranges(&g, 64);
    let mut plan = QuantPlan::int8();
    plan.layers.insert("/fc1/Gemm".into(), WeightFormat::int(3));
    let (mut q, _) = insert_qdq(&g, &plan, &r).unwrap();
    let want = encoded_bytes(&q);
    let (saved, huff) = choose_encodings(&mut q);
    assert!(
        saved > 0.0 && huff >= 2,
        "saved {saved}, {huff} Huffman tensors"
    );
    assert_eq!(encoded_bytes(&q), want);
    let (bytes, file) = to_shrink_bytes(&q, &Provenance::new()).unwrap();
    let back = from_shrink_bytes(&bytes).unwrap();
    for (k, t) in &q.initializers {
        assert_eq!(&back.graph.initializers[k], t, "{k} not restored");
    }
    let stored: usize = file.tensors.iter().map(|t| t.stored_bytes).sum();
    let headers = stored as f64 - want;
    // Per tensor: dtype, rank, dims, encoding name and table entry — tens of bytes.
    assert!(
        headers > 0.0 && headers < 80.0 * q.initializers.len() as f64,
        "headers {headers}"
    );
    // fc1's 48 000 3-bit codes: Huffman-coded well under 3 bits each.
    let codes = &q.initializers["fc1.weight_quantized"];
    let (enc, n) = best_encoding(codes, q.encodings.get("fc1.weight_quantized"));
    assert!(enc.is_huffman(), "{enc:?}");
    let bits = 8.0 * n as f64 / codes.len() as f64;
    assert!(bits < 2.6, "{bits} bits per 3-bit code");
    // A flat distribution is not worth a Huffman table.
    let flat = shrink_tensor::Tensor::from_vec(
        vec![4096],
        (0..4096).map(|i| (i % 256) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    assert_eq!(best_encoding(&flat, None).0, Encoding::Dense);
}

/// The multi-width search meets a budget on the real encoded bytes, uses
/// only the allowed widths, and names the smallest reachable size when the
/// budget is below it.
#[test]
fn width_search_meets_an_encoded_byte_budget() {
    let g = model("lenet5_bn");
    let r = ranges(&g, 64);
    let mut plan = QuantPlan::int8();
    plan.mse_clip_bits = 4;
    let lows = [
        WeightFormat::int(4),
        WeightFormat::int(3),
        WeightFormat::int(2),
    ];
    let c = calib(64);
    let data = SensitivityData {
        batches: &c.batches,
        labels: Some(&c.labels),
        threads: 0,
    };
    let costs = width_costs(
        &g,
        &plan,
        &r,
        &lows,
        Metric::Kl,
        SizeModel::Encoded,
        &data,
        |_| {},
    )
    .unwrap();
    assert_eq!(costs.len(), 5 * 3);
    // Fewer bits, fewer stored bytes, for every layer.
    for l in costs.chunks(3) {
        assert!(l[0].bytes > l[1].bytes && l[1].bytes > l[2].bytes, "{l:?}");
    }
    let int8 = plan_bytes(&g, &plan, &r, SizeModel::Encoded).unwrap();
    let budget = 0.3 * int8;
    let (p, rec) = search_widths(&g, &plan, &r, &lows, &costs, SizeModel::Encoded, budget).unwrap();
    let got = plan_bytes(&g, &p, &r, SizeModel::Encoded).unwrap();
    assert!(got <= budget, "{got} > {budget}");
    assert_eq!(rec.metrics["final_bytes"], got);
    for (l, _) in shrink_compress::quantize::weighted_layers(&g) {
        assert!([8, 4, 3, 2].contains(&p.weight_format(&l).bits()), "{l}");
    }
    let e = search_widths(
        &g,
        &plan,
        &r,
        &lows,
        &costs,
        SizeModel::Encoded,
        0.05 * int8,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unreachable"), "{e}");
}

/// MSE-optimal clipping lowers the weight reconstruction error of 2–4-bit
/// per-channel codes and leaves 8-bit layers alone.
#[test]
fn mse_clipping_reduces_low_bit_weight_error() {
    let g = model("lenet5_bn");
    let r = ranges(&g, 32);
    let w = g.initializers["fc1.weight"].to_f32_vec();
    let err = |clip: u32, bits: u32| -> f64 {
        let mut plan = QuantPlan::int8();
        plan.weights = WeightFormat::int(bits);
        plan.mse_clip_bits = clip;
        let (q, _) = insert_qdq(&g, &plan, &r).unwrap();
        let codes = q.initializers["fc1.weight_quantized"].to_f32_vec();
        let s = q.initializers["fc1.weight_scale"].to_f32_vec();
        codes
            .iter()
            .zip(&w)
            .enumerate()
            .map(|(i, (&c, &v))| ((c * s[i / 400] - v) as f64).powi(2))
            .sum()
    };
    for bits in [2, 3, 4] {
        let (plain, mse) = (err(0, bits), err(4, bits));
        assert!(mse < 0.9 * plain, "W{bits}: {mse} vs {plain}");
    }
    assert_eq!(err(0, 8), err(4, 8));
}
