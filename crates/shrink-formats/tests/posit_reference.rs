//! Posit arithmetic against two independent references:
//! * the `softposit` crate (SoftPosit port) for posit8 es 0/1/2, posit16 es 1, posit32 es 2;
//! * our own exact reference below (string decoding, rounding boundaries taken from the
//!   (n+1)-bit posit between two neighbours, exact sums via TwoSum / i128) for every es ≤ 4.

use shrink_formats::{Posit, Quire, SplitMix64};
use softposit::{PxE1, PxE2, P16E1, P32E2, P8E0};

/// Independent decoder: reads the bit string field by field.
fn ref_decode(n: u32, es: u32, code: u64) -> f64 {
    let mask = (1u64 << n) - 1;
    let code = code & mask;
    if code == 0 {
        return 0.0;
    }
    if code == 1 << (n - 1) {
        return f64::NAN;
    }
    let neg = code >> (n - 1) == 1;
    let mag = if neg {
        (code.wrapping_neg()) & mask
    } else {
        code
    };
    let s: Vec<u8> = (0..n - 1).rev().map(|i| ((mag >> i) & 1) as u8).collect();
    let first = s[0];
    let run = s.iter().take_while(|&&b| b == first).count();
    let k: i32 = if first == 1 {
        run as i32 - 1
    } else {
        -(run as i32)
    };
    let rest: Vec<u8> = s.iter().skip(run + 1).copied().collect();
    let mut e = 0i32;
    for i in 0..es as usize {
        e = 2 * e + *rest.get(i).unwrap_or(&0) as i32;
    }
    let mut f = 1.0f64;
    for (i, &b) in rest.iter().skip(es as usize).enumerate() {
        f += b as f64 * 2f64.powi(-(i as i32) - 1);
    }
    let v = f * 2f64.powi(k * (1 << es) + e);
    if neg {
        -v
    } else {
        v
    }
}

/// Reference rounding of `x + tail·ε` (ε infinitesimal, only its sign matters).
fn ref_round(n: u32, es: u32, x: f64, tail: f64) -> u32 {
    let mask = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
    if x.is_nan() {
        return 1 << (n - 1);
    }
    if x == 0.0 && tail == 0.0 {
        return 0;
    }
    let neg = x < 0.0 || (x == 0.0 && tail < 0.0);
    let (a, t) = if neg { (-x, -tail) } else { (x, tail) };
    let maxpos = (1u32 << (n - 1)) - 1;
    let val = |c: u32| ref_decode(n, es, c as u64);
    let mag = if a >= val(maxpos) {
        maxpos
    } else if a < val(1) || (a == val(1) && t < 0.0) {
        1
    } else {
        // largest c with val(c) <= a (codes are monotonic in value)
        let (mut lo, mut hi) = (1u32, maxpos);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if val(mid) <= a {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let c = lo;
        if val(c) == a && t == 0.0 {
            c
        } else {
            let m = ref_decode(n + 1, es, 2 * c as u64 + 1);
            if a < m || (a == m && t < 0.0) {
                c
            } else if a > m || t > 0.0 {
                c + 1
            } else if c % 2 == 0 {
                c
            } else {
                c + 1
            }
        }
    };
    if neg {
        mag.wrapping_neg() & mask
    } else {
        mag
    }
}

/// a + b as an f64 plus the sign of the rounding error (TwoSum).
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let err = (a - (s - bb)) + (b - bb);
    (s, err)
}

fn codes(n: u32) -> impl Iterator<Item = u32> {
    0..(1u32 << n)
}

#[test]
fn small_posits_every_es_against_exact_reference() {
    for n in [6u32, 8] {
        for es in 0..=4 {
            let p = Posit::new(n, es).unwrap();
            let nar = 1u32 << (n - 1);
            for a in codes(n) {
                let va = ref_decode(n, es, a as u64);
                if a == nar {
                    assert!(p.to_f64(a).is_nan());
                    continue;
                }
                assert_eq!(p.to_f64(a), va, "decode posit{n}e{es} {a:#x}");
                assert_eq!(p.from_f64(va), a, "encode exact value");
                for b in codes(n) {
                    if b == nar {
                        assert_eq!(p.add(a, b), nar);
                        continue;
                    }
                    let vb = ref_decode(n, es, b as u64);
                    let (s, t) = two_sum(va, vb);
                    assert_eq!(
                        p.add(a, b),
                        ref_round(n, es, s, t),
                        "posit{n}e{es}: {va} + {vb}"
                    );
                    assert_eq!(
                        p.mul(a, b),
                        ref_round(n, es, va * vb, 0.0),
                        "posit{n}e{es}: {va} * {vb}"
                    );
                }
            }
        }
    }
}

#[test]
fn conversion_rounding_boundaries_every_es() {
    // Every midpoint (the (n+1)-bit posit between neighbours) and points just beside it.
    for (n, es_range) in [(8u32, 0..=4u32), (16, 0..=4)] {
        for es in es_range {
            let p = Posit::new(n, es).unwrap();
            for c in 1..(1u32 << (n - 1)) - 1 {
                let m = ref_decode(n + 1, es, 2 * c as u64 + 1);
                for x in [
                    m,
                    m.next_up(),
                    m.next_down(),
                    -m,
                    (m + ref_decode(n, es, c as u64)) / 2.0,
                ] {
                    assert_eq!(
                        p.from_f64(x),
                        ref_round(n, es, x, 0.0),
                        "posit{n}e{es} from {x:e}"
                    );
                }
            }
            let maxpos = ref_decode(n, es, (1 << (n - 1)) - 1);
            assert_eq!(p.from_f64(maxpos * 1e30), (1 << (n - 1)) - 1);
            assert_eq!(p.from_f64(f64::MIN_POSITIVE), 1);
            assert_eq!(p.from_f64(f64::INFINITY), 1 << (n - 1));
        }
    }
}

#[test]
fn posit8_matches_softposit_exhaustively() {
    let p0 = Posit::new(8, 0).unwrap();
    let p1 = Posit::new(8, 1).unwrap();
    let p2 = Posit::new(8, 2).unwrap();
    let e1 = |c: u32| PxE1::<8>::from_bits(c << 24);
    let e2 = |c: u32| PxE2::<8>::from_bits(c << 24);
    // SoftPosit's generic PxE1/PxE2<N> disagree with the exact rounding in places
    // (e.g. p8e1 add: minpos + 2^-9 gives 2^-10, below both operands); for es 1/2 the
    // exact reference decides and SoftPosit's mul is counted for information.
    let mut softposit_wrong = 0;
    for a in 0u32..256 {
        let sa = P8E0::from_bits(a as u8);
        if a != 0x80 {
            assert_eq!(p0.to_f64(a), sa.to_f64());
            assert_eq!(p1.to_f64(a), e1(a).to_f64(), "p8e1 decode {a:#x}");
            assert_eq!(p2.to_f64(a), e2(a).to_f64(), "p8e2 decode {a:#x}");
        }
        for b in 0u32..256 {
            let sb = P8E0::from_bits(b as u8);
            assert_eq!(
                p0.add(a, b),
                (sa + sb).to_bits() as u32,
                "p8e0 add {a:#x} {b:#x}"
            );
            assert_eq!(
                p0.mul(a, b),
                (sa * sb).to_bits() as u32,
                "p8e0 mul {a:#x} {b:#x}"
            );
            if a == 0x80 || b == 0x80 {
                continue;
            }
            for es in [1u32, 2] {
                let p = if es == 1 { p1 } else { p2 };
                let (va, vb) = (ref_decode(8, es, a as u64), ref_decode(8, es, b as u64));
                let (s, t) = two_sum(va, vb);
                let exact_add = ref_round(8, es, s, t);
                let exact_mul = ref_round(8, es, va * vb, 0.0);
                assert_eq!(p.add(a, b), exact_add, "p8e{es} add {a:#x} {b:#x}");
                assert_eq!(p.mul(a, b), exact_mul, "p8e{es} mul {a:#x} {b:#x}");
                let soft_mul = if es == 1 {
                    (e1(a) * e1(b)).to_bits()
                } else {
                    (e2(a) * e2(b)).to_bits()
                } >> 24;
                softposit_wrong += (soft_mul != exact_mul) as usize;
                // SoftPosit's PxE1/PxE2 add is not usable as a reference: its subtraction
                // loops forever (`while frac64 >> 61 == 0` reached with frac64 = 0) for some
                // operand pairs, not only x + (−x); add for es 1/2 is checked against the exact
                // reference above, and against SoftPosit's P8E0 and P16E1 elsewhere.
            }
        }
    }
    // information only: SoftPosit 0.4 PxE1<8> mul is plainly wrong (1.5 · 1.5 gives 256)
    eprintln!(
        "softposit PxE1/PxE2<8> mul results off the exact rounding: {softposit_wrong} of {}",
        2 * 255 * 255
    );
}

#[test]
fn posit16_es1_matches_softposit() {
    let p = Posit::new(16, 1).unwrap();
    // every code decodes identically; every value, midpoint and quarter point converts identically
    for a in 0u32..65536 {
        let s = P16E1::from_bits(a as u16);
        if a == 0x8000 {
            continue;
        }
        let v = s.to_f64();
        assert_eq!(p.to_f64(a), v);
        let next = P16E1::from_bits(a.wrapping_add(1) as u16).to_f64();
        if a != 0x7fff && a != 0xffff {
            for x in [v, (v + next) / 2.0, v + (next - v) / 4.0] {
                assert_eq!(
                    p.from_f64(x),
                    P16E1::from_f64(x).to_bits() as u32,
                    "from {x:e}"
                );
            }
        }
    }
    // add and mul: 2^32 pairs is too many for a unit test; 4M seeded random pairs,
    // plus every pair within a band of codes around 1.0 where cancellation is hardest
    let mut r = SplitMix64::new(16);
    let check = |a: u32, b: u32| {
        let (sa, sb) = (P16E1::from_bits(a as u16), P16E1::from_bits(b as u16));
        assert_eq!(p.add(a, b), (sa + sb).to_bits() as u32, "add {a:#x} {b:#x}");
        assert_eq!(p.mul(a, b), (sa * sb).to_bits() as u32, "mul {a:#x} {b:#x}");
    };
    for _ in 0..4_000_000 {
        let x = r.next_u64();
        check((x & 0xffff) as u32, ((x >> 16) & 0xffff) as u32);
    }
    for a in 0x3e00u32..0x4200 {
        for b in (0xbe00u32..0xc200).step_by(3) {
            check(a, b);
        }
    }
}

#[test]
fn posit32_random_against_softposit() {
    let p = Posit::new(32, 2).unwrap();
    let mut r = SplitMix64::new(32);
    for _ in 0..1_000_000 {
        let (a, b) = (r.next_u64() as u32, r.next_u64() as u32);
        let (sa, sb) = (P32E2::from_bits(a), P32E2::from_bits(b));
        if a != 0x8000_0000 {
            assert_eq!(p.to_f64(a), sa.to_f64(), "decode {a:#x}");
        }
        assert_eq!(p.add(a, b), (sa + sb).to_bits(), "add {a:#x} {b:#x}");
        assert_eq!(p.mul(a, b), (sa * sb).to_bits(), "mul {a:#x} {b:#x}");
        let x = f64::from_bits(r.next_u64() & 0xbfff_ffff_ffff_ffff)
            * 2f64.powi((r.next_u64() % 200) as i32 - 100);
        if x.is_finite() {
            assert_eq!(p.from_f64(x), P32E2::from_f64(x).to_bits(), "from {x:e}");
            assert_eq!(
                p.from_f64(x),
                ref_round(32, 2, x, 0.0),
                "from {x:e} (own reference)"
            );
        }
    }
}

#[test]
fn quire_dot_is_exact_then_rounded_once() {
    // exact reference: sum of products as i128 in units of 2^(-2·max_scale)
    for (n, es) in [(8u32, 0u32), (8, 2), (16, 1)] {
        let p = Posit::new(n, es).unwrap();
        let shift = 2 * ((n as i32 - 2) << es);
        let mut r = SplitMix64::new(n as u64 * 10 + es as u64);
        let nar = 1u32 << (n - 1);
        for len in [1usize, 7, 100, 1000] {
            for _ in 0..50 {
                let gen = |r: &mut SplitMix64| loop {
                    let c = (r.next_u64() as u32) & ((1u32 << n) - 1);
                    if c != nar {
                        break c;
                    }
                };
                let a: Vec<u32> = (0..len).map(|_| gen(&mut r)).collect();
                let b: Vec<u32> = (0..len).map(|_| gen(&mut r)).collect();
                let total: i128 = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| {
                        let v = ref_decode(n, es, x as u64)
                            * ref_decode(n, es, y as u64)
                            * 2f64.powi(shift);
                        v as i128
                    })
                    .sum();
                let approx = total as f64;
                let tail = (total - approx as i128).signum() as f64;
                let want = ref_round(n, es, approx * 2f64.powi(-shift), tail);
                assert_eq!(p.dot(&a, &b), want, "posit{n}e{es} dot of {len}");
                let mut q = Quire::new(p);
                for &x in &a {
                    q.add_posit(x);
                }
                let sum: i128 = a
                    .iter()
                    .map(|&x| (ref_decode(n, es, x as u64) * 2f64.powi(shift)) as i128)
                    .sum();
                let approx = sum as f64;
                let tail = (sum - approx as i128).signum() as f64;
                assert_eq!(
                    q.to_posit(),
                    ref_round(n, es, approx * 2f64.powi(-shift), tail)
                );
            }
        }
        let mut q = Quire::new(p);
        q.add_product(p.from_f64(1.0), nar);
        assert_eq!(q.to_posit(), nar);
    }
}
