//! Calibration observers against independent references: the entropy (KL)
//! threshold and percentiles from a NumPy implementation run offline
//! (bench/ptq_kl_reference.py → fixtures/ptq_observer_reference.json), the
//! MSE-optimal range against a brute-force search on the raw values, and the
//! calibration sample against NumPy's RandomState permutation.

use shrink_compress::calib::observer::kl_threshold;
use shrink_compress::calib::sample::numpy_permutation;
use shrink_compress::calib::{Observer, ObserverConfig, ObserverKind};
use shrink_formats::{Granularity, QuantConfig, Rounding, Scheme};

fn reference() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ptq_observer_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn samples(r: &serde_json::Value) -> Vec<f32> {
    r["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn observed(kind: ObserverKind, symmetric: bool, x: &[f32]) -> (f32, f32) {
    let mut o = Observer::new(
        "x",
        ObserverConfig {
            kind,
            symmetric,
            ..Default::default()
        },
    )
    .unwrap();
    // Two batches, as the driver would feed them.
    let (a, b) = x.split_at(x.len() / 2);
    o.observe(a, &[a.len()]).unwrap();
    o.observe(b, &[b.len()]).unwrap();
    o.begin_histograms();
    o.observe_histogram(a, &[a.len()]).unwrap();
    o.observe_histogram(b, &[b.len()]).unwrap();
    let r = o.range().unwrap();
    (r.min[0], r.max[0])
}

#[test]
fn entropy_threshold_matches_numpy_reference() {
    let r = reference();
    for case in r["entropy"].as_array().unwrap() {
        let hist: Vec<u64> = case["hist"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let levels = case["levels"].as_u64().unwrap() as usize;
        let want = case["bins"].as_u64().unwrap() as usize;
        assert_eq!(
            kl_threshold(&hist, levels),
            want,
            "{} with {levels} levels",
            case["name"]
        );
    }
}

#[test]
fn percentiles_match_numpy_within_one_bin() {
    let r = reference();
    let x = samples(&r);
    let (lo, hi) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let bin = (hi - lo) / 2048.0;
    for p in [99.0, 99.9] {
        let want = &r["percentile_two_tail"][format!("{p:.1}")];
        let (wl, wh) = (want[0].as_f64().unwrap() as f32, want[1].as_f64().unwrap() as f32);
        let (ol, oh) = observed(ObserverKind::Percentile { percentile: p }, false, &x);
        assert!((ol - wl).abs() <= bin && (oh - wh).abs() <= bin, "p{p}: ({ol}, {oh}) vs ({wl}, {wh}), bin {bin}");
        let wa = r["percentile_abs"][format!("{p:.1}")].as_f64().unwrap() as f32;
        let (sl, sh) = observed(ObserverKind::Percentile { percentile: p }, true, &x);
        assert_eq!(sl, -sh);
        assert!((sh - wa).abs() <= bin, "|x| p{p}: {sh} vs {wa}");
    }
}

/// Mean squared error of quantising `x` to 8 bits over `[lo, hi]`, through
/// shrink-formats' encoder (not the observer's histogram arithmetic).
fn raw_mse(x: &[f32], lo: f32, hi: f32, scheme: Scheme) -> f64 {
    let cfg = QuantConfig {
        bits: 8,
        scheme,
        granularity: Granularity::PerTensor,
        rounding: Rounding::NearestEven,
        source: shrink_formats::intq::ScaleSource::Range { min: lo, max: hi },
    };
    let p = cfg.params_for(x, &[x.len()]).unwrap();
    let q = p.quantize(x, &[x.len()], Rounding::NearestEven).unwrap();
    let d = p.dequantize(&q, &[x.len()]).unwrap();
    x.iter()
        .zip(&d)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / x.len() as f64
}

#[test]
fn mse_observer_finds_the_brute_force_optimum() {
    let x = samples(&reference());
    let (min, max) = x
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    for (symmetric, scheme) in [(false, Scheme::Affine), (true, Scheme::SymmetricNarrow)] {
        let (bmin, bmax) = if symmetric {
            let a = min.abs().max(max.abs());
            (-a, a)
        } else {
            (min, max)
        };
        let best = (1..=100)
            .map(|k| {
                let a = k as f32 / 100.0;
                raw_mse(&x, bmin * a, bmax * a, scheme)
            })
            .fold(f64::INFINITY, f64::min);
        let full = raw_mse(&x, bmin, bmax, scheme);
        let (lo, hi) = observed(ObserverKind::Mse, symmetric, &x);
        let got = raw_mse(&x, lo, hi, scheme);
        // The histogram estimate may pick a neighbouring clipping; it must be
        // within 5% of the true optimum and far better than no clipping.
        assert!(got <= best * 1.05, "symmetric {symmetric}: {got} vs best {best}");
        assert!(got < full * 0.7, "symmetric {symmetric}: {got} vs unclipped {full}");
    }
}

#[test]
fn calibration_sample_is_numpys_permutation() {
    // np.random.RandomState(1234).permutation(60000)
    let p = numpy_permutation(1234, 60000);
    assert_eq!(
        p[..12],
        [30329, 44957, 30866, 40447, 25580, 6216, 26373, 9010, 23445, 108, 34364, 45477]
    );
    assert_eq!(p[..512].iter().sum::<usize>(), 14_764_012);
    // np.random.RandomState(7).permutation(10)
    assert_eq!(numpy_permutation(7, 10), [8, 5, 0, 2, 1, 9, 7, 3, 6, 4]);
}
