//! Shared by the element-wise kernel tests (activation, softmax, elementwise): the SIMD-level
//! lock, the levels to run, fixed-size rayon pools and deterministic inputs.
#![allow(dead_code)]
use ferroconv_kernels::simd::{self, SimdLevel};
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

/// Tests that flip the process-global SIMD level hold this so they never interleave.
pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Scalar, plus AVX2+FMA when the CPU has it.
pub fn levels() -> Vec<SimdLevel> {
    let mut v = vec![SimdLevel::Scalar];
    if simd::detected() == SimdLevel::Avx2Fma {
        v.push(SimdLevel::Avx2Fma);
    }
    v
}

/// Runs `f` inside a rayon pool of `n` threads.
pub fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

/// Deterministic pseudo-random floats in [-scale, scale).
pub fn rand_vec(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}
