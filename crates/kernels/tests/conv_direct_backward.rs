//! The direct conv2d (forward, backward data, backward weight, bias) on both SIMD paths against
//! the reference loop nest and against finite differences, and on 1 and 2 threads.
//!
//! Tolerance: direct summation in f32 (the reference sums in f64): `|got - want| <= 1e-5 *
//! |want| + 2e-6 * max|want|`; measured errors are printed with `--nocapture`.
mod common;

use common::*;
use ferroconv_kernels::conv::ConvAlgo;
use ferroconv_kernels::simd::{set_level, SimdLevel};

const RTOL: f64 = 1e-5;
const ATOL: f64 = 2e-6;

/// Larger shapes: several row ranges per task split, remainder channel blocks (channels not a
/// multiple of the 4-channel and 3-channel register blocks), column tails of every length,
/// source channels taken in several passes.
fn more_cases() -> Vec<Case> {
    let c = |name, p| Case { name, p };
    vec![
        c(
            "wide asym pad",
            params((2, 8, 45, 38), (9, 3, 3), (1, 1), (1, 2, 0, 1), (1, 1), 1),
        ),
        c(
            "5x5 s2 g2 odd",
            params((1, 6, 50, 41), (10, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 2),
        ),
        c(
            "dilation 2 big",
            params((2, 4, 47, 33), (7, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ),
        c(
            "depthwise big",
            params((1, 8, 60, 30), (8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        ),
        c(
            "depthwise 5x5 s2",
            params(
                (2, 12, 29, 31),
                (12, 5, 5),
                (2, 2),
                (2, 2, 2, 2),
                (1, 1),
                12,
            ),
        ),
        c(
            "7x7 s2 stem",
            params((1, 3, 64, 70), (8, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "3x3 s3 d2",
            params((2, 5, 30, 26), (6, 3, 3), (3, 3), (1, 2, 3, 0), (2, 2), 1),
        ),
        c(
            "1x7 / 7x1",
            params((1, 4, 17, 23), (5, 1, 7), (1, 1), (0, 0, 3, 3), (1, 1), 1),
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    cases().into_iter().chain(more_cases()).collect()
}

#[test]
fn direct_matches_reference_on_both_paths() {
    let _guard = lock_simd();
    for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma] {
        let used = set_level(level);
        for c in all_cases() {
            let worst = check_against_reference(&c.p, c.name, ConvAlgo::Direct, RTOL, ATOL);
            println!(
                "direct {} {}: worst normwise error {worst:.2e}",
                used.name(),
                c.name
            );
        }
    }
    set_level(SimdLevel::Avx2Fma);
}

#[test]
fn direct_gradients_match_finite_differences() {
    let _guard = lock_simd();
    for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma] {
        set_level(level);
        for c in cases() {
            check_finite_differences(&c.p, c.name, ConvAlgo::Direct, 2e-3);
        }
    }
    set_level(SimdLevel::Avx2Fma);
}

#[test]
fn direct_scalar_and_avx2_agree() {
    let _guard = lock_simd();
    for c in all_cases() {
        set_level(SimdLevel::Scalar);
        let s = run(&c.p, ConvAlgo::Direct);
        set_level(SimdLevel::Avx2Fma);
        let v = run(&c.p, ConvAlgo::Direct);
        for (what, a, b) in [
            ("y", &s.y, &v.y),
            ("dx", &s.dx, &v.dx),
            ("dw", &s.dw, &v.dw),
        ] {
            assert_close(&format!("{} {what}", c.name), a, b, RTOL, ATOL);
        }
        assert_eq!(s.db, v.db);
    }
}

#[test]
fn direct_one_and_two_threads_agree_exactly() {
    // Every output float is computed by one task in a fixed order whatever the pool size.
    let _guard = lock_simd();
    for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma] {
        set_level(level);
        for c in all_cases() {
            let one = with_threads(1, || run(&c.p, ConvAlgo::Direct));
            let two = with_threads(2, || run(&c.p, ConvAlgo::Direct));
            assert_eq!(one.y, two.y, "{}", c.name);
            assert_eq!(one.dx, two.dx, "{}", c.name);
            assert_eq!(one.dw, two.dw, "{}", c.name);
            assert_eq!(one.db, two.db, "{}", c.name);
        }
    }
    set_level(SimdLevel::Avx2Fma);
}
