//! The worked example of docs/formats-energy.md: LeNet-300-100 (784-300-100-10)
//! in fp32, int8 and int4 with 256 KiB of SRAM, checked against the energy
//! model written out by hand from the Horowitz numbers.

use shrink_energy::memory::sram_pj_per_64b;
use shrink_energy::{estimate, layer_work, Assignment, MemoryConfig, Precision};
use std::path::PathBuf;

fn model() -> shrink_graph::Graph {
    let rel = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/fashion/lenet300100.onnx");
    let p = if rel.exists() {
        rel
    } else {
        PathBuf::from("/work/shared/data/fashion/lenet300100.onnx")
    };
    shrink_graph::onnx::load(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared Fashion-MNIST models missing?)",
            p.display()
        )
    })
}

/// (K, N) of the three Gemm layers.
const FC: [(u64, u64); 3] = [(784, 300), (300, 100), (100, 10)];

#[test]
fn layer_work_matches_the_architecture() {
    let l = layer_work(&model()).unwrap();
    assert_eq!(l.len(), 3);
    for (w, &(k, n)) in l.iter().zip(&FC) {
        assert_eq!(w.op, "Gemm");
        assert_eq!(w.macs, k * n);
        assert_eq!(w.weights, k * n + n, "weights + bias");
        assert_eq!((w.input_elems, w.output_elems), (k, n));
    }
    assert_eq!(
        l.iter().map(|w| w.weights).sum::<u64>(),
        266_610,
        "parameter count in the data README"
    );
}

/// The model of `shrink_energy::model` written out for this MLP: SRAM reserves the
/// largest layer's activations, weights fill the rest in order if they fit whole.
fn by_hand(wb: u64, ab: u64, mac_pj: f64) -> (f64, f64, f64) {
    let sram_bits = 256.0 * 1024.0 * 8.0;
    let e_sram = sram_pj_per_64b(256.0 * 1024.0) / 64.0;
    let e_dram = 1300.0 / 64.0;
    let mut free = sram_bits - ((784 + 300) * ab) as f64;
    let (mut compute, mut on, mut off) = (0.0, 0.0, 0.0);
    for (i, &(k, n)) in FC.iter().enumerate() {
        compute += (k * n) as f64 * mac_pj;
        let w = ((k * n + n) * wb) as f64;
        if w <= free {
            free -= w;
            on += w * e_sram;
        } else {
            off += w * e_dram;
        }
        on += ((k + n) * ab) as f64 * e_sram;
        if i == 0 {
            off += (k * ab) as f64 * e_dram;
        }
        if i == 2 {
            off += (n * ab) as f64 * e_dram;
        }
    }
    (compute, on, off)
}

#[test]
fn fp32_int8_int4_at_256kib() {
    let layers = layer_work(&model()).unwrap();
    let mem = MemoryConfig::new(256 * 1024);
    let run = |w, a| estimate(&layers, &Assignment::uniform(w, a), &mem);
    let f32r = run(Precision::Fp32, Precision::Fp32);
    let i8r = run(Precision::Int(8), Precision::Int(8));
    let i4r = run(Precision::Int(4), Precision::Int(8));
    for (r, (wb, ab, mac)) in [
        (&f32r, (32, 32, 4.6)),
        (&i8r, (8, 8, 0.23)),
        (&i4r, (4, 8, 0.1 + 0.03)),
    ] {
        let (c, on, off) = by_hand(wb, ab, mac);
        assert!(
            (r.total.compute_pj - c).abs() < 1e-6 * c,
            "compute {} vs {c}",
            r.total.compute_pj
        );
        assert!((r.total.onchip_pj - on).abs() < 1e-6 * on);
        assert!((r.total.offchip_pj - off).abs() < 1e-6 * off.max(1.0));
    }
    // where the weights live: fp32 fc1 (942 kB) streams from DRAM; int8's 266.6 kB
    // overflow 256 KiB so fc2 streams; int4 (133 kB) fits entirely
    let on_chip = |r: &shrink_energy::EnergyReport| {
        r.layers
            .iter()
            .map(|l| l.weights_on_chip)
            .collect::<Vec<_>>()
    };
    assert_eq!(on_chip(&f32r), vec![false, true, true]);
    assert_eq!(on_chip(&i8r), vec![true, false, true]);
    assert_eq!(on_chip(&i4r), vec![true, true, true]);
    // compute alone: exactly the MAC ratio 4.6 / 0.23 = 20
    assert!((f32r.total.compute_pj / i8r.total.compute_pj - 20.0).abs() < 1e-9);
    // whole inference, bounded from the dominant terms: fp32 streams fc1 from DRAM
    // (235 500·32 bits at 1300 pJ/64 bit ≈ 153 µJ) plus at most 8 µJ of the rest
    // (compute 1.22 µJ, SRAM < 60 pJ/64 bit over < 1.2 Mbit); int8 streams fc2 (30 100·8 bits
    // ≈ 4.9 µJ) plus at most 2 µJ (fc1 weights from SRAM: 1.88 Mbit < 60 pJ/64 bit ≈ 1.77 µJ,
    // compute 0.06 µJ, activations and I/O < 0.1 µJ)
    let dram = |bits: f64| bits / 64.0 * 1300.0;
    let (f32_lo, f32_hi) = (dram(235_500.0 * 32.0), dram(235_500.0 * 32.0) + 8.0e6);
    let (i8_lo, i8_hi) = (dram(30_100.0 * 8.0), dram(30_100.0 * 8.0) + 2.0e6);
    assert!(f32r.total.total_pj() > f32_lo && f32r.total.total_pj() < f32_hi);
    assert!(i8r.total.total_pj() > i8_lo && i8r.total.total_pj() < i8_hi);
    let ratio = f32r.total.total_pj() / i8r.total.total_pj();
    assert!(
        ratio > f32_lo / i8_hi && ratio < f32_hi / i8_lo,
        "fp32/int8 = {ratio}"
    );
    // int4 weights remove the last DRAM stream: off-chip is only the model's I/O
    assert!((i4r.total.offchip_pj - (784.0 + 10.0) * 8.0 / 64.0 * 1300.0).abs() < 1e-6);
    assert!(i8r.total.total_pj() / i4r.total.total_pj() > 2.0);
}
