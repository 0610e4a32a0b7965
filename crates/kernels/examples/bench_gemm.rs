//! Prints SGEMM GFLOP/s for square sizes on 1 and 2 threads:
//! `cargo run --release -p ferroconv-kernels --example bench_gemm`.
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
            let reps = ((4e9 / flops).ceil() as usize).clamp(2, 200);
            let mut best = f64::INFINITY;
            pool.install(|| {
                for _ in 0..reps {
                    let t = Instant::now();
                    sgemm(false, false, s, s, s, 1.0, &a, s, &b, s, 0.0, &mut c, s).unwrap();
                    best = best.min(t.elapsed().as_secs_f64());
                }
            });
            println!(
                "threads {threads} n {s:5}: {:7.1} GFLOP/s (best of {reps})",
                flops / best / 1e9
            );
        }
    }
}
