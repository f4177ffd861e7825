//! int4 weights × u8 activations → f32, per-channel or per-group scales.
//!
//! `y[i][j] = fma(Σ_g s[j][g]·dot_g, s_a, bias[j])`, clipped, where
//! `dot_g = Σ_{k∈g} (a[i][k] − z_a)·w[j][k]` is exact in i32 and the float
//! accumulation runs over groups in order (so every path is bit-identical to
//! [`reference`]). Weights are codes in [−8, 7] given two per byte, low
//! nibble = even index (the `shrink-formats` layout); a GEMV reads half the
//! bytes of int8, which is the whole point when the loop is bandwidth-bound.
//!
//! The kernel stores *biased* nibbles `u = w + 8` (0..15, valid u8×s8
//! operands for `vpdpbusd` after one AND), and removes the bias per group:
//! `Σ a·w = Σ a·u − 8·Σ a`. The activation zero point uses the per-group
//! weight sums computed at packing: `− z_a·Σ w`.

use crate::cpu::{self, Isa};
use crate::{check_len, scratch, tiling, KernelError, Result};

/// Output columns per packed panel.
pub const NR: usize = 32;
const MR: usize = 4;

/// Packed int4 weights with their scales.
///
/// ```text
///  K8 = K rounded up to 8; groups of G k-values (G % 8 == 0, or G = K: per channel)
///  panel p (columns 32p..32p+31): K8/8 octets of 128 bytes, then the next panel
///  octet o, byte  h·64 + c·4 + t  (h = 0,1 halves of 16 columns, c = column in half, t = 0..3):
///      low nibble  = u[32p + 16h + c][8o + t]
///      high nibble = u[32p + 16h + c][8o + 4 + t]        u = code + 8, padding u = 8 (code 0)
///  scales[p][g][32] f32 and wsum[p][g][32] i32 (Σ codes of the group) follow the same panels
/// ```
#[derive(Debug, Clone)]
pub struct PackedI4 {
    n: usize,
    k: usize,
    k8: usize,
    group: usize,
    groups: usize,
    data: Vec<u8>,
    scales: Vec<f32>,
    wsum: Vec<i32>,
}

/// Code `i` of a nibble-packed row.
#[inline]
pub fn nibble(row: &[u8], i: usize) -> i32 {
    let b = row[i / 2];
    let v = if i.is_multiple_of(2) {
        b & 0x0F
    } else {
        b >> 4
    } as i32;
    (v ^ 8) - 8
}

/// Packs codes in [−8, 7] (row-major `rows × k`) two per byte, low nibble first.
pub fn pack_nibbles(codes: &[i8], rows: usize, k: usize) -> Result<Vec<u8>> {
    check_len("int4 codes (rows×K)", rows * k, codes.len())?;
    let kb = k.div_ceil(2);
    let mut out = vec![0u8; rows * kb];
    for r in 0..rows {
        for i in 0..k {
            let c = codes[r * k + i];
            if !(-8..=7).contains(&c) {
                return Err(KernelError::Unsupported {
                    what: "int4 codes",
                    why: format!("code {c} at row {r}, column {i} outside [-8, 7]"),
                });
            }
            out[r * kb + i / 2] |= ((c as u8) & 0x0F) << (4 * (i % 2));
        }
    }
    Ok(out)
}

impl PackedI4 {
    /// Packs nibble rows (`N × ceil(K/2)` bytes) with `scales` (`N × ceil(K/group)`).
    pub fn pack(w: &[u8], n: usize, k: usize, group: usize, scales: &[f32]) -> Result<Self> {
        let kb = k.div_ceil(2);
        check_len("int4 weights (N×ceil(K/2))", n * kb, w.len())?;
        if n == 0 || k == 0 || group == 0 || (group != k && !group.is_multiple_of(8)) {
            return Err(KernelError::Unsupported {
                what: "int4 weights",
                why: format!(
                    "N={n} K={k} group={group}: need N, K > 0 and group = K or a multiple of 8"
                ),
            });
        }
        let groups = k.div_ceil(group);
        check_len("int4 scales (N×groups)", n * groups, scales.len())?;
        let k8 = k.div_ceil(8) * 8;
        let panels = n.div_ceil(NR);
        let mut data = vec![0x88u8; panels * k8 / 8 * 128];
        let mut sc = vec![0f32; panels * groups * NR];
        let mut ws = vec![0i32; panels * groups * NR];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            let row = &w[j * kb..(j + 1) * kb];
            for kk in 0..k {
                let u = (nibble(row, kk) + 8) as u8;
                let (o, r) = (kk / 8, kk % 8);
                let at = p * (k8 / 8) * 128 + o * 128 + (c / 16) * 64 + (c % 16) * 4 + r % 4;
                data[at] = if r < 4 {
                    (data[at] & 0xF0) | u
                } else {
                    (data[at] & 0x0F) | (u << 4)
                };
                ws[(p * groups + kk / group) * NR + c] += nibble(row, kk);
            }
            for g in 0..groups {
                sc[(p * groups + g) * NR + c] = scales[j * groups + g];
            }
        }
        Ok(PackedI4 {
            n,
            k,
            k8,
            group,
            groups,
            data,
            scales: sc,
            wsum: ws,
        })
    }
    /// Output channels.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Reduction length.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Octets per group (the last group may be shorter).
    fn group_octets(&self, g: usize) -> std::ops::Range<usize> {
        let start = g * self.group / 8;
        let end = ((g + 1) * self.group).min(self.k8).div_ceil(8);
        start..end
    }
}

/// Activation quantisation and the epilogue of the int4 product.
#[derive(Debug, Clone, Copy)]
pub struct Int4Params<'a> {
    pub a_zero: u8,
    pub a_scale: f32,
    pub bias: Option<&'a [f32]>,
    pub lo: f32,
    pub hi: f32,
}

impl Default for Int4Params<'_> {
    fn default() -> Self {
        Int4Params {
            a_zero: 0,
            a_scale: 1.0,
            bias: None,
            lo: f32::NEG_INFINITY,
            hi: f32::INFINITY,
        }
    }
}

/// Straight from nibbles, group by group, in the documented float order.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    a: &[u8],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    group: usize,
    scales: &[f32],
    pr: &Int4Params,
) -> Vec<f32> {
    let kb = k.div_ceil(2);
    let groups = k.div_ceil(group);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut f = 0f32;
            for g in 0..groups {
                let mut d = 0i32;
                for kk in g * group..((g + 1) * group).min(k) {
                    d += (a[i * k + kk] as i32 - pr.a_zero as i32) * nibble(&w[j * kb..], kk);
                }
                f = (d as f32).mul_add(scales[j * groups + g], f);
            }
            let b = pr.bias.map_or(0.0, |b| b[j]);
            y[i * n + j] = f.mul_add(pr.a_scale, b).max(pr.lo).min(pr.hi);
        }
    }
    y
}

/// `out = int4 product` on the best path, threaded.
pub fn gemm(a: &[u8], m: usize, w: &PackedI4, pr: &Int4Params, out: &mut [f32]) -> Result<()> {
    gemm_with(cpu::best(), a, m, w, pr, out)
}

/// [`gemm`] on a chosen path (lowered to what the CPU supports).
pub fn gemm_with(
    isa: Isa,
    a: &[u8],
    m: usize,
    w: &PackedI4,
    pr: &Int4Params,
    out: &mut [f32],
) -> Result<()> {
    let (n, k, k8) = (w.n, w.k, w.k8);
    check_len("int4 activations (M×K)", m * k, a.len())?;
    check_len("int4 output (M×N)", m * n, out.len())?;
    if let Some(b) = pr.bias {
        check_len("int4 bias", n, b.len())?;
    }
    if m == 0 {
        return Ok(());
    }
    // Rows padded to whole octets, plus Σa per group for the nibble bias.
    let groups = w.groups;
    scratch::with_zeroed::<u8, _>(m * k8, |ap| {
        let mut asum = vec![0i32; m * groups];
        for i in 0..m {
            ap[i * k8..i * k8 + k].copy_from_slice(&a[i * k..(i + 1) * k]);
            for g in 0..groups {
                asum[i * groups + g] = a[i * k + g * w.group..i * k + ((g + 1) * w.group).min(k)]
                    .iter()
                    .map(|&v| v as i32)
                    .sum();
            }
        }
        let ap = &*ap;
        let isa = cpu::clamp(isa);
        let optr = OutF32(out.as_mut_ptr());
        let tasks = tiling::plan(m, n.div_ceil(NR), MR);
        tiling::run(&tasks, usize::MAX, |r0, r1, p| {
            let o = optr;
            // SAFETY: disjoint in-bounds tiles; ISA clamped.
            unsafe { panel_rows(isa, ap, &asum, r0, r1, w, p, pr, o.0) }
        });
    });
    Ok(())
}

#[derive(Clone, Copy)]
struct OutF32(*mut f32);
// SAFETY: from a live `&mut [f32]` that outlives the parallel region; tasks
// write disjoint elements.
unsafe impl Send for OutF32 {}
// SAFETY: as above.
unsafe impl Sync for OutF32 {}

/// # Safety
/// `isa` supported; `out` valid `M×N`, these elements ours alone.
#[allow(clippy::too_many_arguments)]
unsafe fn panel_rows(
    isa: Isa,
    ap: &[u8],
    asum: &[i32],
    r0: usize,
    r1: usize,
    w: &PackedI4,
    p: usize,
    pr: &Int4Params,
    out: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: forwarded.
        unsafe { avx512::panel_rows(ap, asum, r0, r1, w, p, pr, out) };
        return;
    }
    let _ = isa;
    let (n, k8) = (w.n, w.k8);
    let oct = k8 / 8;
    let panel = &w.data[p * oct * 128..(p + 1) * oct * 128];
    let j0 = p * NR;
    let cols = (n - j0).min(NR);
    let za = pr.a_zero as i32;
    for i in r0..r1 {
        let row = &ap[i * k8..(i + 1) * k8];
        for c in 0..cols {
            let mut f = 0f32;
            for g in 0..w.groups {
                let mut d = 0i32;
                for o in w.group_octets(g) {
                    for t in 0..8 {
                        let byte = panel[o * 128 + (c / 16) * 64 + (c % 16) * 4 + t % 4];
                        let u = if t < 4 { byte & 0x0F } else { byte >> 4 } as i32;
                        d += row[8 * o + t] as i32 * u;
                    }
                }
                let at = (p * w.groups + g) * NR + c;
                d = d - 8 * asum[i * w.groups + g] - za * w.wsum[at];
                f = (d as f32).mul_add(w.scales[at], f);
            }
            let b = pr.bias.map_or(0.0, |b| b[j0 + c]);
            // SAFETY: row i, column j0+c in bounds and ours.
            unsafe { *out.add(i * n + j0 + c) = f.mul_add(pr.a_scale, b).max(pr.lo).min(pr.hi) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Int4Params, PackedI4, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512 F/BW/VNNI; `out` valid `M×N`, rows `r0..r1` × panel `p` ours.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn panel_rows(
        ap: &[u8],
        asum: &[i32],
        r0: usize,
        r1: usize,
        w: &PackedI4,
        p: usize,
        pr: &Int4Params,
        out: *mut f32,
    ) {
        let mut i = r0;
        // SAFETY: forwarded; tiles stay in rows r0..r1.
        unsafe {
            while i + MR <= r1 {
                tile::<MR>(ap, asum, i, w, p, pr, out);
                i += MR;
            }
            match r1 - i {
                0 => {}
                1 => tile::<1>(ap, asum, i, w, p, pr, out),
                2 => tile::<2>(ap, asum, i, w, p, pr, out),
                _ => tile::<3>(ap, asum, i, w, p, pr, out),
            }
        }
    }

    /// R rows × 32 columns: per octet two 64-byte loads give four `vpdpbusd`
    /// operands (low/high nibbles × two column halves) shared by all rows.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    unsafe fn tile<const R: usize>(
        ap: &[u8],
        asum: &[i32],
        i0: usize,
        w: &PackedI4,
        p: usize,
        pr: &Int4Params,
        out: *mut f32,
    ) {
        let k8 = w.k8;
        let oct = k8 / 8;
        let b = w.data.as_ptr().wrapping_add(p * oct * 128);
        let a = ap.as_ptr().wrapping_add(i0 * k8);
        let nib = _mm512_set1_epi8(0x0F);
        let mut f = [[_mm512_setzero_ps(); 2]; R];
        let za = _mm512_set1_epi32(pr.a_zero as i32);
        // SAFETY: octets of the panel and the padded activation rows are in
        // bounds; scale/wsum rows hold 32 entries per (panel, group).
        unsafe {
            for g in 0..w.groups {
                let mut acc = [[_mm512_setzero_si512(); 4]; R];
                for o in w.group_octets(g) {
                    let x0 = _mm512_loadu_si512(b.add(o * 128) as *const _);
                    let x1 = _mm512_loadu_si512(b.add(o * 128 + 64) as *const _);
                    let lo0 = _mm512_and_si512(x0, nib);
                    let hi0 = _mm512_and_si512(_mm512_srli_epi16::<4>(x0), nib);
                    let lo1 = _mm512_and_si512(x1, nib);
                    let hi1 = _mm512_and_si512(_mm512_srli_epi16::<4>(x1), nib);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let q = (a.add(r * k8 + 8 * o) as *const [i32; 2]).read_unaligned();
                        let (qa, qb) = (_mm512_set1_epi32(q[0]), _mm512_set1_epi32(q[1]));
                        acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], qa, lo0);
                        acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], qb, hi0);
                        acc_r[2] = _mm512_dpbusd_epi32(acc_r[2], qa, lo1);
                        acc_r[3] = _mm512_dpbusd_epi32(acc_r[3], qb, hi1);
                    }
                }
                let at = (p * w.groups + g) * NR;
                for h in 0..2 {
                    let ws = _mm512_loadu_si512(w.wsum.as_ptr().add(at + 16 * h) as *const _);
                    let sc = _mm512_loadu_ps(w.scales.as_ptr().add(at + 16 * h));
                    let zfix = _mm512_mullo_epi32(za, ws);
                    for (r, (acc_r, f_r)) in acc.iter().zip(f.iter_mut()).enumerate() {
                        let s8 = _mm512_set1_epi32(8 * asum[(i0 + r) * w.groups + g]);
                        let d = _mm512_add_epi32(acc_r[2 * h], acc_r[2 * h + 1]);
                        let d = _mm512_sub_epi32(_mm512_sub_epi32(d, s8), zfix);
                        f_r[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sc, f_r[h]);
                    }
                }
            }
            let j0 = p * NR;
            let cols = (w.n - j0).min(NR);
            let sa = _mm512_set1_ps(pr.a_scale);
            for (r, f_r) in f.iter().enumerate() {
                for (h, &v) in f_r.iter().enumerate() {
                    let wc = cols.saturating_sub(16 * h).min(16);
                    if wc == 0 {
                        break;
                    }
                    let m: __mmask16 = if wc == 16 { 0xFFFF } else { (1u16 << wc) - 1 };
                    let bias = match pr.bias {
                        Some(bb) => _mm512_maskz_loadu_ps(m, bb.as_ptr().add(j0 + 16 * h)),
                        None => _mm512_setzero_ps(),
                    };
                    let y = _mm512_fmadd_ps(v, sa, bias);
                    let y = _mm512_min_ps(
                        _mm512_max_ps(y, _mm512_set1_ps(pr.lo)),
                        _mm512_set1_ps(pr.hi),
                    );
                    _mm512_mask_storeu_ps(out.add((i0 + r) * w.n + j0 + 16 * h), m, y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check(m: usize, k: usize, n: usize, group: usize, seed: u64) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<u8> = (0..m * k).map(|_| r.gen()).collect();
        let codes: Vec<i8> = (0..n * k).map(|_| r.gen_range(-8..=7)).collect();
        let w = pack_nibbles(&codes, n, k).unwrap();
        let groups = k.div_ceil(group);
        let scales: Vec<f32> = (0..n * groups).map(|_| r.gen_range(0.001..0.1)).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.3 - 2.0).collect();
        let pr = Int4Params {
            a_zero: 17,
            a_scale: 0.02,
            bias: Some(&bias),
            lo: -50.0,
            hi: 50.0,
        };
        let expect = reference(&a, m, k, &w, n, group, &scales, &pr);
        let p = PackedI4::pack(&w, n, k, group, &scales).unwrap();
        for isa in cpu::available() {
            let mut y = vec![0f32; m * n];
            gemm_with(isa, &a, m, &p, &pr, &mut y).unwrap();
            for (idx, (&g, &e)) in y.iter().zip(&expect).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{isa:?} m={m} k={k} n={n} group={group} at {idx}: {g} vs {e}"
                );
            }
        }
    }

    #[test]
    fn nibble_round_trip() {
        let codes: Vec<i8> = (-8..=7).collect();
        let p = pack_nibbles(&codes, 1, 16).unwrap();
        assert_eq!(p[0], 0x98); // -8 → 0x8 low, -7 → 0x9 high
        for (i, &c) in codes.iter().enumerate() {
            assert_eq!(nibble(&p, i), c as i32);
        }
        assert!(pack_nibbles(&[8], 1, 1).is_err());
    }

    #[test]
    fn edge_shapes() {
        for &(m, k, n, g) in &[
            (1, 1, 1, 1),
            (1, 8, 5, 8),
            (2, 13, 33, 13),
            (5, 64, 40, 32),
            (1, 4096, 64, 128),
            (7, 100, 17, 16),
            (4, 96, 32, 96),
        ] {
            check(m, k, n, g, (m * k + n) as u64);
        }
    }

    #[test]
    fn bad_group_is_an_error() {
        assert!(PackedI4::pack(&[0; 8], 1, 16, 12, &[1.0, 1.0]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_shapes(m in 1usize..9, k8 in 1usize..40, n in 1usize..70, per_channel: bool, gmul in 1usize..4, seed in any::<u64>()) {
            let k = k8 * 8 - (seed % 8) as usize;
            let group = if per_channel { k } else { 8 * gmul };
            check(m, k, n, group, seed);
        }
    }
}
