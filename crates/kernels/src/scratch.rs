//! Scratch memory for the kernels: allocated fallibly, released when large.
//!
//! A convolution may need far more scratch than its inputs hold (im2col lowers every window,
//! FFTs hold spectra, GEMM packs panels), so an innocent-looking call can ask for gigabytes. An
//! allocation that fails must become an error, not an abort. The buffers are taken deep inside
//! rayon tasks, where threading a `Result` out through every parallel loop would obscure the
//! math, so a failed reservation unwinds with an [`OutOfMemory`] payload instead: nothing is
//! allocated by the unwind itself, rayon carries the payload to the caller, every buffer taken
//! so far is dropped on the way, and [`fallible`] turns it back into a [`KernelError`] at the
//! public entry points. Any other panic passes through unchanged.
//!
//! Buffers kept between calls for speed (per-thread scratch, cached spectra and packed weights)
//! are kept only up to [`RETAIN_BYTES`]: a one-off huge call does not pin its scratch for the
//! life of the process.
use crate::{KernelError, Result};
use std::panic::{self, AssertUnwindSafe};

/// The most scratch, in bytes, a reusable buffer keeps after a call; larger ones are freed.
pub const RETAIN_BYTES: usize = 64 << 20;

/// Panic payload of a scratch reservation that the allocator refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    /// Bytes asked for.
    pub bytes: usize,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "out of memory: could not allocate {} of scratch",
            human_bytes(self.bytes)
        )
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 bytes`.
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn refuse(bytes: usize) -> ! {
    panic::panic_any(OutOfMemory { bytes })
}

/// Grows `v` to at least `len` elements (new ones are `T::default()`), or unwinds with
/// [`OutOfMemory`] when the allocator refuses.
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() >= len {
        return;
    }
    let bytes = len.saturating_mul(std::mem::size_of::<T>());
    if bytes > isize::MAX as usize || v.try_reserve_exact(len - v.len()).is_err() {
        refuse(bytes);
    }
    v.resize(len, T::default());
}

/// A vector of `len` default (zero) elements, or an [`OutOfMemory`] unwind.
pub(crate) fn zeroed<T: Clone + Default>(len: usize) -> Vec<T> {
    let mut v = Vec::new();
    grow(&mut v, len);
    v
}

/// Frees `v` when it holds more than [`RETAIN_BYTES`]; call before putting a buffer back in a
/// cache.
pub(crate) fn trim<T>(v: &mut Vec<T>) {
    if v.capacity().saturating_mul(std::mem::size_of::<T>()) > RETAIN_BYTES {
        *v = Vec::new();
    }
}

/// Runs `f`, turning an [`OutOfMemory`] unwind from anywhere inside it (rayon tasks included)
/// into an error that starts with `op`. Other panics continue to unwind.
pub fn fallible<T>(op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<OutOfMemory>() {
            Ok(oom) => Err(KernelError(format!("{op}: {oom}"))),
            Err(other) => panic::resume_unwind(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_reservation_becomes_an_error() {
        let r: Result<()> = fallible("conv2d", || {
            // black_box: an optimised build may otherwise drop the unused allocation.
            std::hint::black_box(zeroed::<f32>(usize::MAX / 8));
            Ok(())
        });
        let e = r.unwrap_err().0;
        assert!(e.starts_with("conv2d: out of memory"), "{e}");
    }

    #[test]
    fn refusal_inside_rayon_tasks_reaches_the_caller() {
        use rayon::prelude::*;
        let r: Result<()> = fallible("pool", || {
            (0..8).into_par_iter().for_each(|i| {
                let _v: Vec<f32> = zeroed(if i == 5 { usize::MAX / 8 } else { 16 });
            });
            Ok(())
        });
        assert!(r.unwrap_err().0.contains("out of memory"));
    }

    #[test]
    fn trim_frees_only_large_buffers() {
        let mut small: Vec<f32> = zeroed(1024);
        trim(&mut small);
        assert_eq!(small.len(), 1024);
        let mut big: Vec<u8> = zeroed(RETAIN_BYTES + 1);
        trim(&mut big);
        assert_eq!(big.capacity(), 0);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
