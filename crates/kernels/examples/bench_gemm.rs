//! Prints SGEMM GFLOP/s for square sizes on 1 and 2 threads, next to the FMA peak measured on
//! this machine at the SIMD level in use (`peak::fma_peak_gflops`, a register-only FMA loop),
//! so the fraction of peak is visible (`FERROCONV_SIMD=avx2` on an AVX-512 CPU for AVX2's):
//! `cargo run --release -p ferroconv-kernels --features probes --example bench_gemm [sizes...]`.
use ferroconv_kernels::gemm::sgemm;
use std::time::Instant;

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
    // The FMA peak of one core at the SIMD level in use (512-bit FMAs on the AVX-512 level).
    let peak = ferroconv_kernels::peak::fma_peak_gflops(1, 300).unwrap() * 1e9;
    println!("measured FMA peak: {:.1} GFLOP/s per core", peak / 1e9);
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
