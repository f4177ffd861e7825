//! Energy and area per operation in a 45 nm process at 0.9 V.
//!
//! Source: M. Horowitz, "Computing's energy problem (and what we can do about
//! it)", ISSCC 2014, pp. 10–14 (the table reproduced as "table 3.2" of the
//! seed and in Han et al., "EIE", ISCA 2016 / Sze et al., Proc. IEEE 2017).
//!
//! | operation | energy (pJ) | area (µm²) |
//! |---|---|---|
//! | 8-bit int add | 0.03 | 36 |
//! | 16-bit int add | 0.05 | 67 |
//! | 32-bit int add | 0.1 | 137 |
//! | 16-bit float add | 0.4 | 1360 |
//! | 32-bit float add | 0.9 | 4184 |
//! | 8-bit int mult | 0.2 | 282 |
//! | 32-bit int mult | 3.1 | 3495 |
//! | 16-bit float mult | 1.1 | 1640 |
//! | 32-bit float mult | 3.7 | 7700 |
//! | 8 KB SRAM read, 64 bit | 10 | |
//! | 32 KB SRAM read, 64 bit | 20 | |
//! | 1 MB SRAM read, 64 bit | 100 | |
//! | DRAM, 64 bit | 1300–2600 | |

/// One row of the table: energy in pJ and area in µm².
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub pj: f64,
    pub um2: f64,
}

pub const INT8_ADD: Cost = Cost {
    pj: 0.03,
    um2: 36.0,
};
pub const INT16_ADD: Cost = Cost {
    pj: 0.05,
    um2: 67.0,
};
pub const INT32_ADD: Cost = Cost {
    pj: 0.1,
    um2: 137.0,
};
pub const FP16_ADD: Cost = Cost {
    pj: 0.4,
    um2: 1360.0,
};
pub const FP32_ADD: Cost = Cost {
    pj: 0.9,
    um2: 4184.0,
};
pub const INT8_MULT: Cost = Cost {
    pj: 0.2,
    um2: 282.0,
};
pub const INT32_MULT: Cost = Cost {
    pj: 3.1,
    um2: 3495.0,
};
pub const FP16_MULT: Cost = Cost {
    pj: 1.1,
    um2: 1640.0,
};
pub const FP32_MULT: Cost = Cost {
    pj: 3.7,
    um2: 7700.0,
};

/// SRAM read of 64 bits by array size (bytes, pJ).
pub const SRAM_READ_64B: [(f64, f64); 3] = [
    (8.0 * 1024.0, 10.0),
    (32.0 * 1024.0, 20.0),
    (1024.0 * 1024.0, 100.0),
];

/// DRAM access of 64 bits: the table gives a range.
pub const DRAM_64B_PJ: (f64, f64) = (1300.0, 2600.0);

/// Integer add of `bits` bits: ∝ bits (a ripple adder has one full adder per
/// bit), anchored at the smallest table width ≥ bits (32 above 32).
pub fn int_add(bits: u32) -> Cost {
    let (anchor, c) = match bits {
        0..=8 => (8.0, INT8_ADD),
        9..=16 => (16.0, INT16_ADD),
        _ => (32.0, INT32_ADD),
    };
    let f = bits as f64 / anchor;
    Cost {
        pj: c.pj * f,
        um2: c.um2 * f,
    }
}

/// Integer multiply of a `w`-bit by an `a`-bit operand: ∝ w·a (an array
/// multiplier has one partial-product cell per bit pair — bits² for equal
/// widths), anchored at the 8-bit point up to 8 bits and the 32-bit point above.
pub fn int_mult(w: u32, a: u32) -> Cost {
    let (anchor, c) = if w.max(a) <= 8 {
        (8.0, INT8_MULT)
    } else {
        (32.0, INT32_MULT)
    };
    let f = (w as f64 * a as f64) / (anchor * anchor);
    Cost {
        pj: c.pj * f,
        um2: c.um2 * f,
    }
}

/// Full adders in the (M+1)×(M+1) array of a float multiplier with M stored
/// mantissa bits: 576 (fp32, M = 23), 121 (fp16, M = 10), 64 (bf16, M = 7).
pub fn float_multiplier_full_adders(mantissa_bits: u32) -> u64 {
    let m = mantissa_bits as u64 + 1;
    m * m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_points_are_reproduced() {
        assert_eq!(int_add(8), INT8_ADD);
        assert_eq!(int_add(16), INT16_ADD);
        assert_eq!(int_add(32), INT32_ADD);
        assert_eq!(int_mult(8, 8), INT8_MULT);
        assert_eq!(int_mult(32, 32), INT32_MULT);
        assert_eq!((INT8_MULT.pj + INT8_ADD.pj), 0.23);
        assert!(((FP32_MULT.pj + FP32_ADD.pj) - 4.6).abs() < 1e-12);
    }

    #[test]
    fn scaling_laws() {
        // add ∝ bits
        assert!((int_add(4).pj - 0.015).abs() < 1e-12);
        assert!(
            (int_add(12).pj - 0.05 * 12.0 / 16.0).abs() < 1e-12,
            "anchored at 16 bits"
        );
        assert!(
            (int_add(64).pj - 0.2).abs() < 1e-12,
            "beyond the table: 32-bit law"
        );
        assert!((int_add(2).pj * 4.0 - int_add(8).pj).abs() < 1e-12);
        // mult ∝ bits²
        assert!((int_mult(4, 4).pj - 0.05).abs() < 1e-12);
        assert!((int_mult(2, 2).pj * 16.0 - int_mult(8, 8).pj).abs() < 1e-12);
        assert!((int_mult(16, 16).pj - 3.1 / 4.0).abs() < 1e-12);
        assert!((int_mult(4, 8).pj - 0.1).abs() < 1e-12);
        assert!((int_mult(1, 1).um2 - 282.0 / 64.0).abs() < 1e-9);
        assert_eq!(float_multiplier_full_adders(23), 576);
        assert_eq!(float_multiplier_full_adders(10), 121);
        assert_eq!(float_multiplier_full_adders(7), 64);
    }
}
