//! Peak-throughput probes: how many multiply-accumulates per second one core
//! can issue for each format, with no memory traffic (register-only loops of
//! independent chains). Kernels are reported as a fraction of these.

use std::time::Instant;

/// One probe's result.
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    /// Operations per second: 2 per MAC for fp32/int8/bf16, 1 per binary MAC
    /// for the XNOR probe (the unit the "binary MAC/cycle" uses).
    pub ops_per_s: f64,
}

/// Times `f(iters)` which performs `ops_per_iter·iters` operations; best of `reps`.
fn time<F: FnMut(u64) -> u64>(ops_per_iter: f64, reps: usize, mut f: F) -> Peak {
    let iters = 100_000u64;
    let mut best = f64::MAX;
    let mut sink = 0u64;
    for _ in 0..reps {
        let t = Instant::now();
        sink = sink.wrapping_add(f(iters));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    Peak {
        ops_per_s: ops_per_iter * iters as f64 / best,
    }
}

/// A register-only instruction-throughput probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// 12 chains of `vfmadd231ps zmm`.
    Fp32Fma,
    /// 12 chains of `vpdpbusd zmm`.
    Int8Dpbusd,
    /// 12 chains of `vdpbf16ps zmm`.
    Bf16Dpbf16,
    /// 8 chains of `vpxorq` (L1 operand) → `vpopcntq` → `vpaddq`.
    BinaryXnor,
}

impl Probe {
    /// Every probe.
    pub const ALL: [Probe; 4] = [
        Probe::Fp32Fma,
        Probe::Int8Dpbusd,
        Probe::Bf16Dpbf16,
        Probe::BinaryXnor,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Fp32Fma => "fp32 FMA (vfmadd231ps zmm)",
            Probe::Int8Dpbusd => "int8 vpdpbusd zmm",
            Probe::Bf16Dpbf16 => "bf16 vdpbf16ps zmm",
            Probe::BinaryXnor => "binary xor+vpopcntq+add zmm",
        }
    }

    /// Operations one iteration performs (see [`Peak::ops_per_s`] for units).
    pub fn ops_per_iter(self) -> f64 {
        match self {
            Probe::Fp32Fma => 12.0 * 32.0,
            Probe::Int8Dpbusd => 12.0 * 128.0,
            Probe::Bf16Dpbf16 => 12.0 * 64.0,
            Probe::BinaryXnor => 8.0 * 512.0,
        }
    }

    /// Runs `iters` iterations; `None` when the CPU lacks the instruction.
    pub fn run(self, iters: u64) -> Option<u64> {
        #[cfg(target_arch = "x86_64")]
        {
            let f = crate::cpu::features();
            // SAFETY (each arm): the feature the probe needs was detected.
            match self {
                Probe::Fp32Fma if f.avx512 => return Some(unsafe { x86::fma(iters) }),
                Probe::Int8Dpbusd if f.avx512_vnni => return Some(unsafe { x86::dpbusd(iters) }),
                Probe::Bf16Dpbf16 if f.avx512_bf16 => return Some(unsafe { x86::dpbf16(iters) }),
                Probe::BinaryXnor if f.avx512_vpopcntdq => {
                    return Some(unsafe { x86::xnor(iters) })
                }
                _ => {}
            }
        }
        let _ = iters;
        None
    }
}

/// Measures every probe this CPU supports: `(name, peak)`, best of `reps`.
pub fn measure_all(reps: usize) -> Vec<(&'static str, Peak)> {
    Probe::ALL
        .into_iter()
        .filter(|p| p.run(1).is_some())
        .map(|p| {
            (
                p.name(),
                time(p.ops_per_iter(), reps, |n| p.run(n).unwrap_or(0)),
            )
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 independent FMA chains (latency 4, two pipes on Zen 4 → needs ≥ 8).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma(n: u64) -> u64 {
        let m = _mm512_set1_ps(0.999_999);
        let c = _mm512_set1_ps(1e-7);
        let mut a: [__m512; 12] =
            std::array::from_fn(|i| std::hint::black_box(_mm512_set1_ps(1.0 + i as f32)));
        for _ in 0..n {
            for x in a.iter_mut() {
                *x = _mm512_fmadd_ps(*x, m, c);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in a {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s) as u64
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn dpbusd(n: u64) -> u64 {
        let u = std::hint::black_box(_mm512_set1_epi8(3));
        let w = std::hint::black_box(_mm512_set1_epi8(-2));
        let mut a: [__m512i; 12] =
            std::array::from_fn(|i| std::hint::black_box(_mm512_set1_epi32(i as i32)));
        for _ in 0..n {
            for x in a.iter_mut() {
                *x = _mm512_dpbusd_epi32(*x, u, w);
            }
        }
        let mut s = _mm512_setzero_si512();
        for x in a {
            s = _mm512_add_epi32(s, x);
        }
        _mm512_reduce_add_epi32(s) as u64
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dpbf16(n: u64) -> u64 {
        let u: __m512bh = std::mem::transmute(std::hint::black_box(_mm512_set1_epi16(0x3f80)));
        let w: __m512bh = std::mem::transmute(std::hint::black_box(_mm512_set1_epi16(0x3400)));
        let mut a: [__m512; 12] =
            std::array::from_fn(|i| std::hint::black_box(_mm512_set1_ps(i as f32)));
        for _ in 0..n {
            for x in a.iter_mut() {
                *x = _mm512_dpbf16_ps(*x, u, w);
            }
        }
        let mut s = _mm512_setzero_ps();
        for x in a {
            s = _mm512_add_ps(s, x);
        }
        _mm512_reduce_add_ps(s) as u64
    }

    /// 8 chains of xor (with an L1-resident operand, as in the GEMM) →
    /// popcount → add: 512 binary MACs each.
    #[target_feature(enable = "avx512f,avx512vpopcntdq")]
    pub(super) unsafe fn xnor(n: u64) -> u64 {
        let buf: Vec<u64> = (0..64u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let x: [__m512i; 8] = std::array::from_fn(|i| {
            std::hint::black_box(_mm512_set1_epi64(0x0f0f_f0f0_3333_cccc ^ i as i64))
        });
        let mut a = [_mm512_setzero_si512(); 8];
        for t in 0..n as usize {
            // SAFETY: (t & 7)·8 + 8 ≤ 64 words of `buf`.
            let w = unsafe { _mm512_loadu_si512(buf.as_ptr().add((t & 7) * 8) as *const _) };
            for (xi, ai) in x.iter().zip(a.iter_mut()) {
                *ai = _mm512_add_epi64(*ai, _mm512_popcnt_epi64(_mm512_xor_si512(*xi, w)));
            }
        }
        let mut s = _mm512_setzero_si512();
        for v in a {
            s = _mm512_add_epi64(s, v);
        }
        _mm512_reduce_add_epi64(s) as u64
    }
}
