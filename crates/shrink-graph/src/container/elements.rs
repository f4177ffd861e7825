//! Tensor elements as bit patterns: every encoding works on `u64` patterns of
//! the dtype's storage width, so one code path serves f32, fp16, int8, int4…
//! and decoding gives back the very same bits (−0.0 and NaN payloads included).

use crate::{GraphError, Result};
use shrink_tensor::{DType, TensorData};

/// Storage width of one element in bits (strings have none).
pub fn width(dtype: DType) -> Result<u32> {
    match dtype.bits() {
        0 => Err(GraphError::Unsupported(
            "string tensors have no fixed-width encoding".into(),
        )),
        b => Ok(b as u32),
    }
}

/// The element bit patterns (zero-extended to u64).
pub fn to_patterns(d: &TensorData) -> Result<Vec<u64>> {
    Ok(match d {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        TensorData::F16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8 as u64).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::I16(v) => v.iter().map(|&x| x as u16 as u64).collect(),
        TensorData::U16(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::I32(v) => v.iter().map(|&x| x as u32 as u64).collect(),
        TensorData::U32(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::U64(v) => v.clone(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::I4(v) => v.iter().map(|&x| (x as u8 & 0x0f) as u64).collect(),
        TensorData::U4(v) => v.iter().map(|&x| (x & 0x0f) as u64).collect(),
        TensorData::F8E4M3FN(v)
        | TensorData::F8E4M3FNUZ(v)
        | TensorData::F8E5M2(v)
        | TensorData::F8E5M2FNUZ(v) => v.iter().map(|&x| x as u64).collect(),
        TensorData::String(_) => {
            return Err(GraphError::Unsupported(
                "string tensors have no fixed-width encoding".into(),
            ))
        }
    })
}

/// Inverse of [`to_patterns`]; patterns wider than the dtype are an error.
pub fn from_patterns(dtype: DType, p: Vec<u64>) -> Result<TensorData> {
    let w = width(dtype)?;
    if w < 64 {
        if let Some(i) = p.iter().position(|&x| x >> w != 0) {
            return Err(GraphError::Invalid(format!(
                "element {i} has bits beyond the {w} bits of {}",
                dtype.name()
            )));
        }
    }
    use half::{bf16, f16};
    Ok(match dtype {
        DType::F32 => TensorData::F32(p.iter().map(|&x| f32::from_bits(x as u32)).collect()),
        DType::F64 => TensorData::F64(p.iter().map(|&x| f64::from_bits(x)).collect()),
        DType::F16 => TensorData::F16(p.iter().map(|&x| f16::from_bits(x as u16)).collect()),
        DType::BF16 => TensorData::BF16(p.iter().map(|&x| bf16::from_bits(x as u16)).collect()),
        DType::I8 => TensorData::I8(p.iter().map(|&x| x as u8 as i8).collect()),
        DType::U8 => TensorData::U8(p.iter().map(|&x| x as u8).collect()),
        DType::I16 => TensorData::I16(p.iter().map(|&x| x as u16 as i16).collect()),
        DType::U16 => TensorData::U16(p.iter().map(|&x| x as u16).collect()),
        DType::I32 => TensorData::I32(p.iter().map(|&x| x as u32 as i32).collect()),
        DType::U32 => TensorData::U32(p.iter().map(|&x| x as u32).collect()),
        DType::I64 => TensorData::I64(p.iter().map(|&x| x as i64).collect()),
        DType::U64 => TensorData::U64(p),
        DType::Bool => {
            if let Some(i) = p.iter().position(|&x| x > 1) {
                return Err(GraphError::Invalid(format!("element {i} is not a bool")));
            }
            TensorData::Bool(p.iter().map(|&x| x == 1).collect())
        }
        DType::I4 => TensorData::I4(p.iter().map(|&x| (((x as u8) << 4) as i8) >> 4).collect()),
        DType::U4 => TensorData::U4(p.iter().map(|&x| x as u8).collect()),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            TensorData::try_from_float8_codes(dtype, p.iter().map(|&x| x as u8).collect())
                .expect("float8 dtype")
        }
        DType::String => unreachable!("width() rejects strings"),
    })
}

/// Integer value of a pattern (sign-extended for signed integer dtypes).
pub fn int_value(dtype: DType, pattern: u64, w: u32) -> i64 {
    if dtype.is_int() && dtype.is_signed() && w < 64 {
        shrink_formats::bitpack::from_twos(pattern, w)
    } else {
        pattern as i64
    }
}

/// Pattern of an integer value of a `w`-bit dtype.
pub fn int_pattern(value: i64, w: u32) -> u64 {
    if w == 64 {
        value as u64
    } else {
        value as u64 & ((1u64 << w) - 1)
    }
}
