//! Element-type dispatch for ops written once as generic code.
//!
//! Each macro matches a [`DType`](shrink_tensor::DType) and runs its body with
//! the Rust element type bound to a local type alias, so one generic body
//! covers every supported type and the remaining types fall through to an
//! error arm chosen by the caller (which names the node and the dtype).

/// Runs `$body` with `$T` bound to the float element type of `$dt`.
macro_rules! with_float {
    ($dt:expr, $T:ident => $body:expr, $other:ident => $err:expr) => {
        match $dt {
            shrink_tensor::DType::F32 => {
                type $T = f32;
                $body
            }
            shrink_tensor::DType::F64 => {
                type $T = f64;
                $body
            }
            shrink_tensor::DType::F16 => {
                type $T = half::f16;
                $body
            }
            shrink_tensor::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $other => $err,
        }
    };
}

/// Runs `$body` with `$T` bound to the integer element type of `$dt`
/// (4-bit types excluded: they have no arithmetic of their own).
macro_rules! with_int {
    ($dt:expr, $T:ident => $body:expr, $other:ident => $err:expr) => {
        match $dt {
            shrink_tensor::DType::I8 => {
                type $T = i8;
                $body
            }
            shrink_tensor::DType::U8 => {
                type $T = u8;
                $body
            }
            shrink_tensor::DType::I16 => {
                type $T = i16;
                $body
            }
            shrink_tensor::DType::U16 => {
                type $T = u16;
                $body
            }
            shrink_tensor::DType::I32 => {
                type $T = i32;
                $body
            }
            shrink_tensor::DType::U32 => {
                type $T = u32;
                $body
            }
            shrink_tensor::DType::I64 => {
                type $T = i64;
                $body
            }
            shrink_tensor::DType::U64 => {
                type $T = u64;
                $body
            }
            $other => $err,
        }
    };
}

/// Runs `$body` with `$T` bound to the numeric (float or integer) element type of `$dt`.
macro_rules! with_numeric {
    ($dt:expr, $T:ident => $body:expr, $other:ident => $err:expr) => {
        $crate::ops::dispatch::with_float!($dt, $T => $body, dt => {
            $crate::ops::dispatch::with_int!(dt, $T => $body, $other => $err)
        })
    };
}

pub(crate) use {with_float, with_int, with_numeric};
