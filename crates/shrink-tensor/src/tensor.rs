use crate::{DType, Float8, Result, TensorError};
use half::{bf16, f16};

/// Typed storage of a tensor, one variant per [`DType`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    /// Signed 4-bit values in -8..=7, one per byte.
    I4(Vec<i8>),
    /// Unsigned 4-bit values in 0..=15, one per byte.
    U4(Vec<u8>),
    /// Raw [`Float8::E4M3FN`] codes (see [`crate::Float8`] for the other three).
    F8E4M3FN(Vec<u8>),
    F8E4M3FNUZ(Vec<u8>),
    F8E5M2(Vec<u8>),
    F8E5M2FNUZ(Vec<u8>),
    String(Vec<String>),
}

/// Applies `$body` to the vector inside any variant, binding it as `$v`.
#[macro_export]
macro_rules! dispatch_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $body,
            $crate::TensorData::F64($v) => $body,
            $crate::TensorData::F16($v) => $body,
            $crate::TensorData::BF16($v) => $body,
            $crate::TensorData::I8($v) => $body,
            $crate::TensorData::U8($v) => $body,
            $crate::TensorData::I16($v) => $body,
            $crate::TensorData::U16($v) => $body,
            $crate::TensorData::I32($v) => $body,
            $crate::TensorData::U32($v) => $body,
            $crate::TensorData::I64($v) => $body,
            $crate::TensorData::U64($v) => $body,
            $crate::TensorData::Bool($v) => $body,
            $crate::TensorData::I4($v) => $body,
            $crate::TensorData::U4($v) => $body,
            $crate::TensorData::F8E4M3FN($v) => $body,
            $crate::TensorData::F8E4M3FNUZ($v) => $body,
            $crate::TensorData::F8E5M2($v) => $body,
            $crate::TensorData::F8E5M2FNUZ($v) => $body,
            $crate::TensorData::String($v) => $body,
        }
    };
}

/// Like [`dispatch_data!`] but wraps the result back into the same variant, so
/// element-type-agnostic operations (gather, transpose, slice …) are written once.
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $crate::TensorData::F32($body),
            $crate::TensorData::F64($v) => $crate::TensorData::F64($body),
            $crate::TensorData::F16($v) => $crate::TensorData::F16($body),
            $crate::TensorData::BF16($v) => $crate::TensorData::BF16($body),
            $crate::TensorData::I8($v) => $crate::TensorData::I8($body),
            $crate::TensorData::U8($v) => $crate::TensorData::U8($body),
            $crate::TensorData::I16($v) => $crate::TensorData::I16($body),
            $crate::TensorData::U16($v) => $crate::TensorData::U16($body),
            $crate::TensorData::I32($v) => $crate::TensorData::I32($body),
            $crate::TensorData::U32($v) => $crate::TensorData::U32($body),
            $crate::TensorData::I64($v) => $crate::TensorData::I64($body),
            $crate::TensorData::U64($v) => $crate::TensorData::U64($body),
            $crate::TensorData::Bool($v) => $crate::TensorData::Bool($body),
            $crate::TensorData::I4($v) => $crate::TensorData::I4($body),
            $crate::TensorData::U4($v) => $crate::TensorData::U4($body),
            $crate::TensorData::F8E4M3FN($v) => $crate::TensorData::F8E4M3FN($body),
            $crate::TensorData::F8E4M3FNUZ($v) => $crate::TensorData::F8E4M3FNUZ($body),
            $crate::TensorData::F8E5M2($v) => $crate::TensorData::F8E5M2($body),
            $crate::TensorData::F8E5M2FNUZ($v) => $crate::TensorData::F8E5M2FNUZ($body),
            $crate::TensorData::String($v) => $crate::TensorData::String($body),
        }
    };
}

impl TensorData {
    /// Wraps raw float8 codes in the variant of `dtype`; `None` unless
    /// `dtype` is one of the float8 types.
    pub fn try_from_float8_codes(dtype: DType, codes: Vec<u8>) -> Option<TensorData> {
        Some(match dtype {
            DType::F8E4M3FN => TensorData::F8E4M3FN(codes),
            DType::F8E4M3FNUZ => TensorData::F8E4M3FNUZ(codes),
            DType::F8E5M2 => TensorData::F8E5M2(codes),
            DType::F8E5M2FNUZ => TensorData::F8E5M2FNUZ(codes),
            _ => return None,
        })
    }

    fn from_float8_codes(dtype: DType, codes: Vec<u8>) -> TensorData {
        Self::try_from_float8_codes(dtype, codes).expect("caller checked dtype is float8")
    }

    /// The raw codes of a float8 buffer, `None` for every other type.
    pub fn float8_codes(&self) -> Option<&[u8]> {
        match self {
            TensorData::F8E4M3FN(v)
            | TensorData::F8E4M3FNUZ(v)
            | TensorData::F8E5M2(v)
            | TensorData::F8E5M2FNUZ(v) => Some(v),
            _ => None,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I16(_) => DType::I16,
            TensorData::U16(_) => DType::U16,
            TensorData::I32(_) => DType::I32,
            TensorData::U32(_) => DType::U32,
            TensorData::I64(_) => DType::I64,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::I4(_) => DType::I4,
            TensorData::U4(_) => DType::U4,
            TensorData::F8E4M3FN(_) => DType::F8E4M3FN,
            TensorData::F8E4M3FNUZ(_) => DType::F8E4M3FNUZ,
            TensorData::F8E5M2(_) => DType::F8E5M2,
            TensorData::F8E5M2FNUZ(_) => DType::F8E5M2FNUZ,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        dispatch_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A zero-filled (false, empty string) buffer of `n` elements.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F64 => TensorData::F64(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::BF16 => TensorData::BF16(vec![bf16::ZERO; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I16 => TensorData::I16(vec![0; n]),
            DType::U16 => TensorData::U16(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::U32 => TensorData::U32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::U64 => TensorData::U64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
            DType::I4 => TensorData::I4(vec![0; n]),
            DType::U4 => TensorData::U4(vec![0; n]),
            // Code 0 is +0 in every float8 format.
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
                TensorData::from_float8_codes(dtype, vec![0; n])
            }
            DType::String => TensorData::String(vec![String::new(); n]),
        }
    }

    /// Every element as f64 (strings parse, unparsable ones become NaN).
    /// f64 represents every supported element exactly except 64-bit integers
    /// beyond 2^53, which is fine for the places that use this (statistics,
    /// comparisons in tests, casts to floats).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::I8(v) | TensorData::I4(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) | TensorData::U4(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            TensorData::F8E4M3FN(v)
            | TensorData::F8E4M3FNUZ(v)
            | TensorData::F8E5M2(v)
            | TensorData::F8E5M2FNUZ(v) => {
                let f = Float8::of(self.dtype()).expect("float8 variant");
                v.iter().map(|&c| f.decode(c) as f64).collect()
            }
            TensorData::String(v) => v
                .iter()
                .map(|s| s.trim().parse::<f64>().unwrap_or(f64::NAN))
                .collect(),
        }
    }

    /// Every element as i64 (floats truncate toward zero, saturating).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self {
            TensorData::I64(v) => v.clone(),
            TensorData::I8(v) | TensorData::I4(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U8(v) | TensorData::U4(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            other => other.to_f64_vec().into_iter().map(|x| x as i64).collect(),
        }
    }

    /// ONNX `Cast` semantics: floats to integers truncate toward zero and
    /// saturate, anything to bool is `x != 0`, bool to numbers is 0/1,
    /// strings parse as numbers and numbers print as strings; float8 targets
    /// saturate (Cast's default `saturate=1`).
    pub fn cast(&self, to: DType) -> TensorData {
        self.cast_saturate(to, true)
    }

    /// [`TensorData::cast`] with ONNX's `saturate` flag, which only matters
    /// when `to` is a float8 type: with it, out-of-range values (infinities
    /// included) become the largest finite value; without it, infinity (E5M2)
    /// or NaN. Values are rounded to float8 once, from their exact f64 value,
    /// so every source type gets the correctly rounded result.
    pub fn cast_saturate(&self, to: DType, saturate: bool) -> TensorData {
        if self.dtype() == to {
            return self.clone();
        }
        if let Some(f) = Float8::of(to) {
            let codes = self
                .to_f64_vec()
                .into_iter()
                .map(|x| f.encode(x, saturate))
                .collect();
            return TensorData::from_float8_codes(to, codes);
        }
        if to == DType::String {
            return TensorData::String(match self {
                TensorData::F32(v) => v.iter().map(|x| format_float(*x as f64)).collect(),
                TensorData::F64(v) => v.iter().map(|x| format_float(*x)).collect(),
                TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
                other if other.dtype().is_float() => {
                    other.to_f64_vec().into_iter().map(format_float).collect()
                }
                other => other
                    .to_i64_vec()
                    .into_iter()
                    .map(|x| x.to_string())
                    .collect(),
            });
        }
        if to == DType::Bool {
            return TensorData::Bool(match self {
                TensorData::String(v) => v
                    .iter()
                    .map(|s| s.trim().parse::<f64>().map(|x| x != 0.0).unwrap_or(true))
                    .collect(),
                other => other.to_f64_vec().into_iter().map(|x| x != 0.0).collect(),
            });
        }
        // Integer -> integer goes through i64/u64 to stay exact for 64-bit values.
        if self.dtype().is_int() || self.dtype() == DType::Bool {
            if self.dtype() == DType::U64 {
                if let TensorData::U64(v) = self {
                    return from_u64(v, to);
                }
            }
            return from_i64(&self.to_i64_vec(), to);
        }
        let v = self.to_f64_vec();
        match to {
            DType::F32 => TensorData::F32(match self {
                TensorData::F16(h) => h.iter().map(|x| x.to_f32()).collect(),
                TensorData::BF16(h) => h.iter().map(|x| x.to_f32()).collect(),
                _ => v.iter().map(|&x| x as f32).collect(),
            }),
            DType::F64 => TensorData::F64(v),
            DType::F16 => TensorData::F16(match self {
                // Go straight from f32 so rounding is single (f64->f16 is too, but keep it obvious).
                TensorData::F32(x) => x.iter().map(|&x| f16::from_f32(x)).collect(),
                _ => v.iter().map(|&x| f16::from_f64(x)).collect(),
            }),
            DType::BF16 => TensorData::BF16(match self {
                TensorData::F32(x) => x.iter().map(|&x| bf16::from_f32(x)).collect(),
                _ => v.iter().map(|&x| bf16::from_f64(x)).collect(),
            }),
            DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            DType::I16 => TensorData::I16(v.iter().map(|&x| x as i16).collect()),
            DType::U16 => TensorData::U16(v.iter().map(|&x| x as u16).collect()),
            DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            DType::U32 => TensorData::U32(v.iter().map(|&x| x as u32).collect()),
            DType::I64 => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            DType::U64 => TensorData::U64(v.iter().map(|&x| x as u64).collect()),
            DType::I4 => TensorData::I4(v.iter().map(|&x| (x as i64).clamp(-8, 7) as i8).collect()),
            DType::U4 => TensorData::U4(v.iter().map(|&x| (x as i64).clamp(0, 15) as u8).collect()),
            DType::Bool
            | DType::String
            | DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ => unreachable!("handled above"),
        }
    }
}

fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "INF".into()
        } else {
            "-INF".into()
        }
    } else {
        format!("{x}")
    }
}

fn from_i64(v: &[i64], to: DType) -> TensorData {
    match to {
        DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F64 => TensorData::F64(v.iter().map(|&x| x as f64).collect()),
        DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f64(x as f64)).collect()),
        DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x as f64)).collect()),
        // Integer narrowing wraps, as C and ONNX Runtime do.
        DType::I8 => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
        DType::U8 => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
        DType::I16 => TensorData::I16(v.iter().map(|&x| x as i16).collect()),
        DType::U16 => TensorData::U16(v.iter().map(|&x| x as u16).collect()),
        DType::I32 => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
        DType::U32 => TensorData::U32(v.iter().map(|&x| x as u32).collect()),
        DType::I64 => TensorData::I64(v.to_vec()),
        DType::U64 => TensorData::U64(v.iter().map(|&x| x as u64).collect()),
        DType::I4 => TensorData::I4(v.iter().map(|&x| (x.clamp(-8, 7)) as i8).collect()),
        DType::U4 => TensorData::U4(v.iter().map(|&x| (x.clamp(0, 15)) as u8).collect()),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => {
            let f = Float8::of(to).expect("float8 dtype");
            TensorData::from_float8_codes(to, v.iter().map(|&x| f.encode(x as f64, true)).collect())
        }
        DType::Bool => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
        DType::String => TensorData::String(v.iter().map(|x| x.to_string()).collect()),
    }
}

fn from_u64(v: &[u64], to: DType) -> TensorData {
    match to {
        DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F64 => TensorData::F64(v.iter().map(|&x| x as f64).collect()),
        _ => from_i64(&v.iter().map(|&x| x as i64).collect::<Vec<_>>(), to),
    }
}

/// A Rust type that can be an element of a [`Tensor`].
pub trait Element: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> TensorData;
    fn slice(d: &TensorData) -> Option<&[Self]>;
    fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]>;
    fn into_vec(d: TensorData) -> std::result::Result<Vec<Self>, TensorData>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$variant(v)
            }
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]> {
                match d {
                    TensorData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_vec(d: TensorData) -> std::result::Result<Vec<Self>, TensorData> {
                match d {
                    TensorData::$variant(v) => Ok(v),
                    other => Err(other),
                }
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(f16, F16);
element!(bf16, BF16);
element!(i8, I8);
element!(u8, U8);
element!(i16, I16);
element!(u16, U16);
element!(i32, I32);
element!(u32, U32);
element!(i64, I64);
element!(u64, U64);
element!(bool, Bool);

/// A dense row-major tensor. A scalar has an empty shape and one element.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that `data` has exactly `prod(shape)` elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(TensorError::ShapeMismatch {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }

    pub fn scalar<T: Element>(x: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![x]),
        }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }

    /// Bytes the elements occupy densely (4-bit types count half a byte, rounded up).
    pub fn nbytes(&self) -> usize {
        match self.dtype() {
            DType::String => dispatch_data!(&self.data, v => v.len()),
            dt => (self.len() * dt.bits()).div_ceil(8),
        }
    }

    /// The elements as a slice of `T`, or an error naming both types.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            found: self.dtype(),
        })
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let found = self.dtype();
        T::slice_mut(&mut self.data).ok_or(TensorError::WrongDType {
            expected: T::DTYPE,
            found,
        })
    }

    pub fn into_vec<T: Element>(self) -> Result<Vec<T>> {
        let found = self.dtype();
        T::into_vec(self.data).map_err(|_| TensorError::WrongDType {
            expected: T::DTYPE,
            found,
        })
    }

    /// Same elements under a new shape with the same element count.
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(TensorError::BadReshape {
                from: self.shape,
                to: shape,
            });
        }
        self.shape = shape;
        Ok(self)
    }

    /// A copy converted to `to` with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.cast(to),
        }
    }

    /// [`Tensor::cast`] with ONNX's `saturate` flag for float8 targets
    /// (see [`TensorData::cast_saturate`]).
    pub fn cast_saturate(&self, to: DType, saturate: bool) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.cast_saturate(to, saturate),
        }
    }

    /// The elements converted to f32 (a copy unless already f32).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            other => match other.cast(DType::F32) {
                TensorData::F32(v) => v,
                _ => unreachable!(),
            },
        }
    }

    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.data.to_i64_vec()
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        strides_of(&self.shape)
    }
}

/// Row-major strides (in elements) of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 6]).is_ok());
        let err = Tensor::from_vec(vec![2, 3], vec![0f32; 5]).unwrap_err();
        assert!(matches!(
            err,
            TensorError::ShapeMismatch {
                expected: 6,
                got: 5,
                ..
            }
        ));
    }

    #[test]
    fn cast_follows_onnx_rules() {
        let t = Tensor::from_vec(vec![4], vec![-1.7f32, 0.0, 2.5, 300.0]).unwrap();
        assert_eq!(
            t.cast(DType::I32).as_slice::<i32>().unwrap(),
            &[-1, 0, 2, 300]
        );
        assert_eq!(
            t.cast(DType::Bool).as_slice::<bool>().unwrap(),
            &[true, false, true, true]
        );
        let big = Tensor::from_vec(vec![1], vec![i64::MAX]).unwrap();
        assert_eq!(big.cast(DType::I64).as_slice::<i64>().unwrap(), &[i64::MAX]);
        let h = t.cast(DType::F16).cast(DType::F32);
        assert_eq!(h.as_slice::<f32>().unwrap()[2], 2.5);
    }

    #[test]
    fn float8_casts_go_through_exact_values() {
        let t = Tensor::from_vec(vec![5], vec![1.0f32, -0.3, 500.0, f32::NAN, -1e-9]).unwrap();
        let e = t.cast(DType::F8E4M3FN);
        assert_eq!(e.dtype(), DType::F8E4M3FN);
        assert_eq!(e.nbytes(), 5);
        // 0.3 lies between 0.28125 and 0.3125; 0.3125 is nearer. 500 saturates.
        assert_eq!(
            e.data().float8_codes().unwrap(),
            &[0x38, 0xAA, 0x7E, 0x7F, 0x80]
        );
        let back = e.cast(DType::F32).to_f32_vec();
        assert_eq!(&back[..3], &[1.0, -0.3125, 448.0]);
        assert!(back[3].is_nan());
        assert_eq!(back[4], 0.0);
        assert!(back[4].is_sign_negative());
        let ns = t
            .cast_saturate(DType::F8E5M2, false)
            .cast(DType::F32)
            .to_f32_vec();
        assert_eq!(ns[2], 512.0);
        let big = Tensor::from_vec(vec![1], vec![100000i64]).unwrap();
        assert!(big.cast_saturate(DType::F8E4M3FNUZ, false).to_f32_vec()[0].is_nan());
        assert_eq!(big.cast(DType::F8E5M2FNUZ).to_f32_vec(), vec![57344.0]);
        // float8 -> float8 and -> integer.
        assert_eq!(e.cast(DType::F8E5M2).to_f32_vec()[2], 448.0);
        assert_eq!(e.cast(DType::I32).to_i64_vec()[..3], [1, 0, 448]);
        assert_eq!(
            Tensor::zeros(DType::F8E5M2, vec![2]).to_f32_vec(),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn wrong_dtype_is_an_error() {
        let t = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(t.as_slice::<f32>().is_err());
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides_of(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides_of(&[]), Vec::<usize>::new());
    }
}
