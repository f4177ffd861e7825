//! AVX-512 VNNI int8 kernel: register tiles of MR rows × 32 columns, `vpdpbusd`.

use super::zero_skip::PairLists;
use super::{PackedI8, ZeroFix, MR, NR};
use crate::epilogue::{avx512::store16, Epilogue, OutPtr};
use std::arch::x86_64::*;

/// Four activation bytes `a[4q..4q+4]` as one u32, zero-filled past `k`.
///
/// # Safety
/// `row` must be valid for reads of `k` bytes.
#[inline(always)]
unsafe fn quad(row: *const u8, q: usize, k: usize) -> i32 {
    let at = 4 * q;
    if at + 4 <= k {
        // SAFETY: the four bytes are inside the row.
        unsafe { (row.add(at) as *const i32).read_unaligned() }
    } else {
        let mut b = [0u8; 4];
        for (t, v) in b.iter_mut().enumerate().take(k - at) {
            // SAFETY: at + t < k.
            *v = unsafe { *row.add(at + t) };
        }
        i32::from_le_bytes(b)
    }
}

/// Rows `r0..r1` of panel `p`.
///
/// # Safety
/// CPU supports AVX-512 F/BW/VNNI; `out` is a valid `M×N` buffer whose
/// elements in these rows and the panel's columns no one else writes.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn panel_rows(
    a: &[u8],
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    // A last panel of at most 16 real columns (N = 300 leaves 12, N = 100
    // leaves 4) only needs its first register: the second half is zero
    // padding, and skipping it halves that panel's `vpdpbusd`s.
    if w.n - p * NR <= 16 {
        // SAFETY: forwarded from the caller.
        unsafe { rows_h::<1>(a, k, r0, r1, w, p, fix, ep, out) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { rows_h::<2>(a, k, r0, r1, w, p, fix, ep, out) }
    }
}

/// [`panel_rows`] with `H` 16-column registers per row (1 or 2).
///
/// # Safety
/// As [`panel_rows`]; with `H = 1` the panel has at most 16 columns.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_h<const H: usize>(
    a: &[u8],
    k: usize,
    r0: usize,
    r1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let b = w.panel(p).as_ptr();
    let mut i = r0;
    // SAFETY (all calls below): rows i..i+R are < r1 ≤ M, the panel holds
    // k4/4 quads of 128 bytes, and the caller's guarantees are forwarded.
    unsafe {
        if r1 - r0 == 1 {
            return tile1::<H>(a.as_ptr().add(i * k), k, w, p, b, i, fix, ep, out);
        }
        while i + MR <= r1 {
            tile::<MR, H>(a.as_ptr().add(i * k), k, w, p, b, i, fix, ep, out);
            i += MR;
        }
        let base = a.as_ptr().add(i * k);
        match r1 - i {
            0 => {}
            1 => tile::<1, H>(base, k, w, p, b, i, fix, ep, out),
            2 => tile::<2, H>(base, k, w, p, b, i, fix, ep, out),
            3 => tile::<3, H>(base, k, w, p, b, i, fix, ep, out),
            4 => tile::<4, H>(base, k, w, p, b, i, fix, ep, out),
            5 => tile::<5, H>(base, k, w, p, b, i, fix, ep, out),
            6 => tile::<6, H>(base, k, w, p, b, i, fix, ep, out),
            _ => tile::<7, H>(base, k, w, p, b, i, fix, ep, out),
        }
    }
}

/// Zero-point fix and epilogue for one row of the tile (two 16-column halves).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_row<const H: usize>(
    acc: [__m512i; H],
    i: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let j0 = p * NR;
    let cols = (w.n - j0).min(NR);
    // SAFETY: col_fix has panels·NR entries; stores are masked to `cols`.
    unsafe {
        let row = _mm512_set1_epi32(fix.row_fix[i]);
        for (h, &v) in acc.iter().enumerate() {
            let w_cols = cols.saturating_sub(16 * h).min(16);
            if w_cols == 0 {
                break;
            }
            let cf = _mm512_loadu_si512(fix.col_fix.as_ptr().add(j0 + 16 * h) as *const _);
            let v = _mm512_sub_epi32(_mm512_add_epi32(v, cf), row);
            store16(ep, v, out, i, w.n, j0 + 16 * h, w_cols);
        }
    }
}

/// An R×16H register tile over the full K.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const R: usize, const H: usize>(
    a: *const u8,
    k: usize,
    w: &PackedI8,
    p: usize,
    b: *const i8,
    i0: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let quads = w.k4 / 4;
    let full = k / 4;
    let mut acc = [[_mm512_setzero_si512(); H]; R];
    // SAFETY: b holds `quads` blocks of 128 bytes; activation reads stay
    // inside rows of k bytes (the tail quad is assembled bytewise).
    unsafe {
        for q in 0..full {
            let mut bv = [_mm512_setzero_si512(); H];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(b.add(q * 128 + 64 * h) as *const _);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32((a.add(r * k + 4 * q) as *const i32).read_unaligned());
                for (acc_h, &b_h) in acc_r.iter_mut().zip(&bv) {
                    *acc_h = _mm512_dpbusd_epi32(*acc_h, av, b_h);
                }
            }
        }
        if full < quads {
            let q = full;
            let mut bv = [_mm512_setzero_si512(); H];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(b.add(q * 128 + 64 * h) as *const _);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(quad(a.add(r * k), q, k));
                for (acc_h, &b_h) in acc_r.iter_mut().zip(&bv) {
                    *acc_h = _mm512_dpbusd_epi32(*acc_h, av, b_h);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            finish_row(*acc_r, i0 + r, w, p, fix, ep, out);
        }
    }
}

/// The one-row (GEMV) tile: four independent accumulator pairs hide the
/// `vpdpbusd` latency that a single chain would expose.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile1<const H: usize>(
    a: *const u8,
    k: usize,
    w: &PackedI8,
    p: usize,
    b: *const i8,
    i0: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let quads = w.k4 / 4;
    let full = k / 4;
    let z = _mm512_setzero_si512();
    let (mut x0, mut x1, mut y0, mut y1) = (z, z, z, z);
    let (mut u0, mut u1, mut v0, mut v1) = (z, z, z, z);
    // SAFETY: as in `tile`.
    unsafe {
        let mut q = 0;
        while q + 4 <= full {
            let bq = b.add(q * 128);
            let a4 = (a.add(4 * q) as *const [i32; 4]).read_unaligned();
            let av = _mm512_set1_epi32(a4[0]);
            x0 = _mm512_dpbusd_epi32(x0, av, _mm512_loadu_si512(bq as *const _));
            if H == 2 {
                x1 = _mm512_dpbusd_epi32(x1, av, _mm512_loadu_si512(bq.add(64) as *const _));
            }
            let av = _mm512_set1_epi32(a4[1]);
            y0 = _mm512_dpbusd_epi32(y0, av, _mm512_loadu_si512(bq.add(128) as *const _));
            if H == 2 {
                y1 = _mm512_dpbusd_epi32(y1, av, _mm512_loadu_si512(bq.add(192) as *const _));
            }
            let av = _mm512_set1_epi32(a4[2]);
            u0 = _mm512_dpbusd_epi32(u0, av, _mm512_loadu_si512(bq.add(256) as *const _));
            if H == 2 {
                u1 = _mm512_dpbusd_epi32(u1, av, _mm512_loadu_si512(bq.add(320) as *const _));
            }
            let av = _mm512_set1_epi32(a4[3]);
            v0 = _mm512_dpbusd_epi32(v0, av, _mm512_loadu_si512(bq.add(384) as *const _));
            if H == 2 {
                v1 = _mm512_dpbusd_epi32(v1, av, _mm512_loadu_si512(bq.add(448) as *const _));
            }
            q += 4;
        }
        while q < quads {
            let bq = b.add(q * 128);
            let av = _mm512_set1_epi32(quad(a, q, k));
            x0 = _mm512_dpbusd_epi32(x0, av, _mm512_loadu_si512(bq as *const _));
            if H == 2 {
                x1 = _mm512_dpbusd_epi32(x1, av, _mm512_loadu_si512(bq.add(64) as *const _));
            }
            q += 1;
        }
        let s0 = _mm512_add_epi32(_mm512_add_epi32(x0, y0), _mm512_add_epi32(u0, v0));
        let s1 = _mm512_add_epi32(_mm512_add_epi32(x1, y1), _mm512_add_epi32(u1, v1));
        let mut s = [s0; H];
        s[H - 1] = if H == 2 { s1 } else { s0 };
        finish_row::<H>(s, i0, w, p, fix, ep, out);
    }
}

/// Pairs `t0..t1` of `lists` (built from rows `row0..` of the activations)
/// against panel `p`, over each pair's union of nonzero quads only (see
/// [`super::zero_skip`]).
///
/// # Safety
/// As [`panel_rows`] for the pairs' rows; `lists` was built from the same
/// activations (rows of `w.k` bytes), so every offset is inside the panel.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn skip_pairs(
    lists: &PairLists,
    row0: usize,
    t0: usize,
    t1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        if w.n - p * NR <= 16 {
            skip_pairs_h::<1>(lists, row0, t0, t1, w, p, fix, ep, out)
        } else {
            skip_pairs_h::<2>(lists, row0, t0, t1, w, p, fix, ep, out)
        }
    }
}

/// [`skip_pairs`] with `H` 16-column registers: per union quad, `H` weight
/// loads feed `2H` products (both rows), and two accumulator sets take the
/// quads in turn so each `vpdpbusd` chain waits on the one before it only
/// every other quad. The walk is bound by its loads (two broadcasts, one
/// offset and `H` weight vectors per quad): it reaches about 72% of the
/// dense kernel's rate per product. Two panels at once (four weight loads
/// per eight products) measured 4% slower: their 50 KB leave L1.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn skip_pairs_h<const H: usize>(
    lists: &PairLists,
    row0: usize,
    t0: usize,
    t1: usize,
    w: &PackedI8,
    p: usize,
    fix: &ZeroFix,
    ep: &Epilogue,
    out: OutPtr,
) {
    let b = w.panel(p).as_ptr();
    for t in t0..t1 {
        let v = lists.pair(t);
        let len = v.offs.len();
        let mut acc = [[[_mm512_setzero_si512(); H]; 2]; 2];
        // SAFETY: every offset is 128·q for a quad q < k4/4 of this panel,
        // so the H·64 bytes read from it are inside the panel; j < len.
        unsafe {
            // One quad into accumulator set `u` (a constant at every call,
            // so the sets stay in registers).
            let step = |acc: &mut [[[__m512i; H]; 2]; 2], u: usize, j: usize| {
                let xa = _mm512_set1_epi32(*v.va.get_unchecked(j) as i32);
                let xb = _mm512_set1_epi32(*v.vb.get_unchecked(j) as i32);
                let bq = b.add(*v.offs.get_unchecked(j) as usize);
                let [ra, rb] = &mut acc[u];
                for (h, (ca, cb)) in ra.iter_mut().zip(rb.iter_mut()).enumerate() {
                    let bv = _mm512_loadu_si512(bq.add(64 * h) as *const _);
                    *ca = _mm512_dpbusd_epi32(*ca, xa, bv);
                    *cb = _mm512_dpbusd_epi32(*cb, xb, bv);
                }
            };
            let mut j = 0;
            while j + 2 <= len {
                step(&mut acc, 0, j);
                step(&mut acc, 1, j + 1);
                j += 2;
            }
            if j < len {
                step(&mut acc, 0, j);
            }
            let sum = |r: usize| {
                let mut s = acc[0][r];
                for (h, x) in s.iter_mut().enumerate() {
                    *x = _mm512_add_epi32(acc[0][r][h], acc[1][r][h]);
                }
                s
            };
            finish_row::<H>(sum(0), row0 + v.a, w, p, fix, ep, out);
            if let Some(rb) = v.b {
                finish_row::<H>(sum(1), row0 + rb, w, p, fix, ep, out);
            }
        }
    }
}
