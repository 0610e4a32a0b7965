//! Prints SGEMM GFLOP/s for square sizes on 1 and 2 threads, next to the FMA peak measured on
//! this machine (a register-only FMA loop), so the fraction of peak is visible:
//! `cargo run --release -p ferroconv-kernels --example bench_gemm [sizes...]`.
use ferroconv_kernels::gemm::sgemm;
use std::time::Instant;

/// Flop/s of one core running nothing but independent FMAs (12 chains, like the micro-kernel).
#[cfg(target_arch = "x86_64")]
fn fma_peak_one_core() -> f64 {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn spin(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let x = _mm256_set1_ps(0.999_999);
        let y = _mm256_set1_ps(1e-7);
        let (mut a0, mut a1, mut a2, mut a3) = (x, y, x, y);
        let (mut a4, mut a5, mut a6, mut a7) = (x, y, x, y);
        let (mut a8, mut a9, mut a10, mut a11) = (x, y, x, y);
        for _ in 0..iters {
            a0 = _mm256_fmadd_ps(a0, x, y);
            a1 = _mm256_fmadd_ps(a1, x, y);
            a2 = _mm256_fmadd_ps(a2, x, y);
            a3 = _mm256_fmadd_ps(a3, x, y);
            a4 = _mm256_fmadd_ps(a4, x, y);
            a5 = _mm256_fmadd_ps(a5, x, y);
            a6 = _mm256_fmadd_ps(a6, x, y);
            a7 = _mm256_fmadd_ps(a7, x, y);
            a8 = _mm256_fmadd_ps(a8, x, y);
            a9 = _mm256_fmadd_ps(a9, x, y);
            a10 = _mm256_fmadd_ps(a10, x, y);
            a11 = _mm256_fmadd_ps(a11, x, y);
        }
        let s = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11]
            .into_iter()
            .fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, a));
        _mm256_cvtss_f32(s)
    }
    let iters = 2_000_000;
    let mut best = f64::INFINITY;
    for _ in 0..50 {
        let t = Instant::now();
        // SAFETY: only called after the AVX2+FMA check in main.
        std::hint::black_box(unsafe { spin(std::hint::black_box(iters)) });
        best = best.min(t.elapsed().as_secs_f64());
    }
    (iters * 12 * 16) as f64 / best
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![256, 512, 1024, 2048]
    } else {
        sizes
    };
    println!("simd: {}", ferroconv_kernels::simd::level().name());
    #[cfg(target_arch = "x86_64")]
    let peak = if ferroconv_kernels::simd::level() == ferroconv_kernels::simd::SimdLevel::Avx2Fma {
        let peak = fma_peak_one_core();
        println!(
            "measured FMA peak: {:.1} GFLOP/s per core ({:.2} GHz effective)",
            peak / 1e9,
            peak / 32e9
        );
        peak
    } else {
        f64::NAN
    };
    #[cfg(not(target_arch = "x86_64"))]
    let peak = f64::NAN;
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for &s in &sizes {
            let a: Vec<f32> = (0..s * s).map(|i| ((i % 17) as f32) * 0.01).collect();
            let b: Vec<f32> = (0..s * s).map(|i| ((i % 13) as f32) * 0.01).collect();
            let mut c = vec![0f32; s * s];
            let flops = 2.0 * (s as f64).powi(3);
            let mut best = f64::INFINITY;
            let (mut reps, start) = (0, Instant::now());
            pool.install(|| {
                // Best of a few seconds' worth: the machine may be shared.
                while reps < 3 || (start.elapsed().as_secs_f64() < 2.0 && reps < 500) {
                    let t = Instant::now();
                    sgemm(false, false, s, s, s, 1.0, &a, s, &b, s, 0.0, &mut c, s).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                    reps += 1;
                }
            });
            println!(
                "threads {threads} n {s:5}: {:7.1} GFLOP/s = {:4.1}% of measured peak (best of {reps})",
                flops / best / 1e9,
                100.0 * flops / best / (peak * threads as f64)
            );
        }
    }
}
