//! Process-wide allocator tuning for workloads that free and reallocate the
//! same large buffers at a high rate (a training step allocates every
//! activation and gradient afresh).
//!
//! glibc serves blocks above its mmap threshold with fresh `mmap`s and trims
//! freed heap tops back to the OS, so each step pays a page fault and a
//! zeroed page per 4 KiB of every big tensor, then `munmap`s it again:
//! measured at ~20% of a MobileNetV2 training step. Raising both thresholds
//! keeps freed memory in the process for the next step (peak resident
//! memory stays what the step needs).

/// Keeps freed memory for reuse instead of returning it to the OS (glibc
/// on Linux; elsewhere nothing). Returns whether the allocator accepted it.
/// Idempotent; meant to be called once by long-running executors.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest accepted mmap threshold on 64-bit targets
        // (DEFAULT_MMAP_THRESHOLD_MAX = 4 MiB · sizeof(long)).
        const MMAP_MAX: libc::c_int = 32 << 20;
        // SAFETY: mallopt only sets allocator parameters; it takes plain
        // integers, touches no memory of ours, and is documented thread-safe
        // (glibc takes its arena locks).
        unsafe {
            let a = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_MAX);
            let b = libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            a == 1 && b == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_allocator_accepts_the_thresholds() {
        let ok = super::retain_freed_memory();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(ok);
        }
        // Big allocations still work and are zeroed where asked.
        let v = vec![0f32; 10 << 20];
        assert!(v.iter().all(|&x| x == 0.0));
    }
}
