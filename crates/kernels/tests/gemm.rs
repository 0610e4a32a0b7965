//! SGEMM against a naive f64 triple loop: every transpose combination, odd and edge sizes,
//! alpha/beta, beta = 0 ignoring NaN in C, padded leading dimensions, scalar vs AVX2 and 1 vs 2
//! threads, plus argument errors.
use ferroconv_kernels::gemm::{sgemm, sgemm_tight};
use ferroconv_kernels::simd::{self, SimdLevel};

mod common;
use common::gemm::GemmCase;
use common::{fill, levels, lock};

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (7, 13, 5),
    (6, 16, 4),
    (12, 32, 256),
    (5, 17, 300),
    (67, 129, 33),
    (1, 300, 70),
    (300, 1, 70),
    (150, 40, 520),
    (64, 700, 27),
    // A 7x7 map: the last column panel holds 1 of 16 (the 8-column half kernel).
    (30, 49, 70),
    (1, 1000, 40),
    (600, 1, 33),
    // m_pad * k above the packed-A limit: A is packed one range of k at a time.
    (2050, 3, 2100),
];

fn all_cases() {
    for &(m, n, k) in SHAPES {
        for ta in [false, true] {
            for tb in [false, true] {
                let case = |alpha, beta, pad| GemmCase {
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    alpha,
                    beta,
                    pad,
                };
                case(-1.5, 0.25, 1).check();
                if m * n * k > 5_000_000 {
                    continue; // the large case checks blocking, not alpha/beta again
                }
                case(1.0, 0.0, 0).check();
                case(0.5, 1.0, 3).check();
            }
        }
    }
}

#[test]
fn matches_naive_on_both_simd_paths_and_thread_counts() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for threads in [1, 2] {
            pool(threads).install(all_cases);
        }
    }
}

#[test]
fn thread_count_and_simd_level_agree() {
    let _g = lock();
    let (m, n, k) = (203, 517, 300);
    let run = |threads: usize, lvl: SimdLevel| {
        simd::set_level(lvl);
        let a = fill(m * k, 4);
        let b = fill(k * n, 5);
        let mut c = vec![0.0; m * n];
        pool(threads).install(|| {
            sgemm_tight(false, true, m, n, k, 1.0, &a, &b, 0.0, &mut c).unwrap();
        });
        c
    };
    let one = run(1, simd::detected());
    let two = run(2, simd::detected());
    // Threads split C, never the sum, so the bits agree.
    assert_eq!(one, two);
    let scalar = run(2, SimdLevel::Scalar);
    for (a, b) in one.iter().zip(&scalar) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (m, n, k) in [(7, 13, 5), (64, 64, 64), (1, 1, 1), (1, 40, 9), (40, 1, 9)] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let mut c = vec![f32::NAN; m * n];
            sgemm_tight(false, false, m, n, k, 1.0, &a, &b, 0.0, &mut c).unwrap();
            assert!(
                c.iter().all(|v| v.is_finite()),
                "{m}x{n}x{k} {}",
                lvl.name()
            );
            // k = 0 and alpha = 0 leave only beta * C, which is zero, not NaN.
            let mut c = vec![f32::NAN; m * n];
            sgemm_tight(false, false, m, n, 0, 1.0, &[], &[], 0.0, &mut c).unwrap();
            assert!(c.iter().all(|&v| v == 0.0));
            let mut c = vec![f32::NAN; m * n];
            sgemm_tight(false, false, m, n, k, 0.0, &a, &b, 0.0, &mut c).unwrap();
            assert!(c.iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn beta_scales_when_product_vanishes() {
    let mut c = vec![2.0f32; 6];
    sgemm_tight(true, true, 2, 3, 0, 1.0, &[], &[], 0.5, &mut c).unwrap();
    assert_eq!(c, vec![1.0; 6]);
    sgemm_tight(false, false, 2, 3, 0, 1.0, &[], &[], 0.5, &mut c).unwrap();
    assert_eq!(c, vec![0.5; 6]);
    // Empty outputs (m or n zero) are fine too.
    sgemm_tight(false, false, 0, 3, 2, 1.0, &[], &[0.0; 6], 0.0, &mut []).unwrap();
    sgemm_tight(true, false, 2, 0, 3, 1.0, &[0.0; 6], &[], 0.0, &mut []).unwrap();
}

#[test]
fn bad_arguments_are_errors() {
    let a = vec![0.0; 6];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    let err = sgemm(false, false, 2, 2, 3, 1.0, &a, 2, &b, 2, 0.0, &mut c, 2).unwrap_err();
    assert_eq!(err.0, "lda: expected at least 3, got 2");
    let err = sgemm(
        false,
        false,
        2,
        2,
        3,
        1.0,
        &a[..5],
        3,
        &b,
        2,
        0.0,
        &mut c,
        2,
    )
    .unwrap_err();
    assert_eq!(err.0, "a: expected at least 6 elements, got 5");
    let err = sgemm(false, true, 2, 2, 3, 1.0, &a, 3, &b, 3, 0.0, &mut c[..3], 2).unwrap_err();
    assert_eq!(err.0, "c: expected at least 4 elements, got 3");
    let err = sgemm_tight(false, false, 2, 2, 3, 1.0, &a, &b[..5], 0.0, &mut c).unwrap_err();
    assert_eq!(err.0, "b: expected 6 elements, got 5");
    let err = sgemm(
        false,
        false,
        usize::MAX,
        2,
        3,
        1.0,
        &a,
        3,
        &b,
        2,
        0.0,
        &mut c,
        2,
    )
    .unwrap_err();
    assert!(err.0.contains("overflows"), "{}", err.0);
}

/// The AVX-512 level's 6x32 kernel runs the same FMA chain per element as AVX2's 6x16 and
/// finishes C the same way, full and edge tiles alike, so an AVX-512 CPU gives the bits an
/// AVX2 CPU gives: every row count 1-13, column counts around the 16 and 32 lane boundaries,
/// a shared dimension over one KC pass (so later passes add into C with beta = 1), beta 0 and
/// not, 1 and 2 threads.
#[test]
fn avx512_gives_the_avx2_bits() {
    let _g = lock();
    let levels = simd::available();
    if !levels.contains(&SimdLevel::Avx512) {
        eprintln!("skipped: this CPU has no AVX-512");
        return;
    }
    let run = |lvl: SimdLevel, m: usize, n: usize, k: usize, beta: f32, threads: usize| {
        simd::set_level(lvl);
        let a = fill(m * k, 7);
        let b = fill(k * n, 8);
        let mut c = fill(m * n, 9);
        pool(threads).install(|| {
            sgemm_tight(false, false, m, n, k, 1.25, &a, &b, beta, &mut c).unwrap();
        });
        c
    };
    for m in (1..=13).chain([37]) {
        for n in [2, 15, 16, 17, 31, 32, 33, 49, 63, 100] {
            for k in [1, 9, 300] {
                for beta in [0.0, 0.75] {
                    for threads in [1, 2] {
                        let wide = run(SimdLevel::Avx512, m, n, k, beta, threads);
                        let narrow = run(SimdLevel::Avx2Fma, m, n, k, beta, threads);
                        let same = wide
                            .iter()
                            .zip(&narrow)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "m {m} n {n} k {k} beta {beta} threads {threads}");
                    }
                }
            }
        }
    }
    simd::set_level(simd::detected());
}
