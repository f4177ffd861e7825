//! Float8 encoding against `ml_dtypes` (the reference implementation used by
//! JAX and ONNX tooling), from a fixture made by `scripts/gen-float8-fixture.py`:
//! ~2400 f32 inputs (every finite float8 value, every midpoint and its f32
//! neighbours, specials, and random values over 38 binades) with the four
//! codes ml_dtypes produces. ml_dtypes does not saturate, so the fixture is
//! ONNX `saturate=0`; `saturate=1` must agree except that overflow gives the
//! largest finite value (the generator checked that rule against onnx's own
//! reference helper).

use shrink_tensor::Float8;

const FIXTURE: &str = include_str!("fixtures/float8_ml_dtypes.txt");

fn rows() -> Vec<(f32, [u8; 4])> {
    FIXTURE
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "bad fixture line {l:?}");
            let x = f32::from_bits(u32::from_str_radix(f[0], 16).unwrap());
            let c = |i: usize| u8::from_str_radix(f[i], 16).unwrap();
            (x, [c(1), c(2), c(3), c(4)])
        })
        .collect()
}

#[test]
fn encode_matches_ml_dtypes() {
    let rows = rows();
    assert!(rows.len() > 2000);
    let mut checked = 0;
    for (x, codes) in rows {
        for (f, want) in Float8::ALL.into_iter().zip(codes) {
            let got = f.encode_f32(x, false);
            if f.is_nan(want) {
                assert!(f.is_nan(got), "{f:?} {x:e}: {got:#04x} vs NaN");
            } else {
                assert_eq!(got, want, "{f:?} {x:e} ({:#010x})", x.to_bits());
            }
            let sat = f.encode_f32(x, true);
            let overflowed = !x.is_nan() && !f.decode(want).is_finite();
            if overflowed {
                let max = f.encode(f.max_finite() as f64, true);
                let want_sat = if x < 0.0 { max | 0x80 } else { max };
                assert_eq!(sat, want_sat, "{f:?} {x:e} saturated");
            } else if !f.is_nan(want) {
                assert_eq!(sat, want, "{f:?} {x:e} saturate=1");
            }
            checked += 1;
        }
    }
    assert!(checked > 8000);
}
