//! The machine ceilings: plausible positive numbers on 1 and 2 threads, the AVX2 loop at least
//! as fast as the portable one, and argument errors.
use ferroconv_kernels::peak::{fma_peak_gflops, memory_bandwidth_gbs};
use ferroconv_kernels::simd::{self, SimdLevel};

#[test]
fn fma_peak_is_positive_and_finite() {
    for threads in [1, 2] {
        let g = fma_peak_gflops(threads, 20).unwrap();
        assert!(g.is_finite() && g > 0.1, "{threads} threads: {g} GFLOP/s");
    }
}

#[test]
fn avx2_peak_is_not_below_portable() {
    if simd::detected() != SimdLevel::Avx2Fma {
        return;
    }
    // This file is its own test binary and this is the only test that flips the level.
    simd::set_level(SimdLevel::Scalar);
    let scalar = fma_peak_gflops(1, 30).unwrap();
    simd::set_level(SimdLevel::Avx2Fma);
    let avx2 = fma_peak_gflops(1, 30).unwrap();
    // Loose: the machine may be shared, but 256-bit FMAs should never lose to the fallback.
    assert!(
        avx2 > 0.8 * scalar,
        "avx2 {avx2} vs scalar {scalar} GFLOP/s"
    );
}

#[test]
fn bandwidth_is_positive_and_finite() {
    let gbs = memory_bandwidth_gbs(2).unwrap();
    assert!(gbs.is_finite() && gbs > 0.1, "{gbs} GB/s");
}

#[test]
fn bad_arguments_are_errors() {
    assert_eq!(
        fma_peak_gflops(0, 10).unwrap_err().0,
        "threads: expected 1..=1024, got 0"
    );
    assert_eq!(
        fma_peak_gflops(1, 0).unwrap_err().0,
        "millis: expected 1..=60000, got 0"
    );
    assert_eq!(
        memory_bandwidth_gbs(5000).unwrap_err().0,
        "threads: expected 1..=1024, got 5000"
    );
}
