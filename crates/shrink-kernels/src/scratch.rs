//! Reusable per-thread scratch memory for per-call operand copies.
//!
//! A large fresh `Vec` per call costs page faults on every call (the
//! allocator returns big blocks to the OS): for 3136×576 activations that was
//! a third of the whole bf16 GEMM. The buffer is kept per thread and reused.

use std::cell::RefCell;

thread_local! {
    static BUF: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Element types the scratch can hold (plain integers, any bit pattern valid).
pub(crate) trait Plain: Copy + Default {}
impl Plain for u8 {}
impl Plain for u16 {}
impl Plain for i32 {}

/// Calls `f` with a zeroed slice of `len` elements of `T`.
///
/// Re-entrant calls on the same thread (a rayon worker running a nested
/// kernel while it waits) get a fresh allocation instead of the shared one.
pub(crate) fn with_zeroed<T: Plain, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let words = (len * std::mem::size_of::<T>()).div_ceil(8);
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            v.clear();
            v.resize(words, 0);
            // SAFETY: the u64 buffer holds `words·8 ≥ len·size_of::<T>()`
            // zeroed bytes, is aligned for any T of alignment ≤ 8, and T is a
            // plain integer for which zero (and any bit pattern) is valid.
            let s = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut T, len) };
            f(s)
        }
        Err(_) => f(&mut vec![T::default(); len]),
    })
}
