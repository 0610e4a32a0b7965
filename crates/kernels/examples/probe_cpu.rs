use ferroconv_kernels::conv::{conv2d_forward, Conv2dParams, ConvAlgo};
use ferroconv_kernels::gemm::sgemm;
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
fn timeit(name: &str, flops: f64, mut f: impl FnMut()) {
    f();
    let reps = (1e10 / flops).ceil() as usize;
    let c0 = cpu_ns();
    for _ in 0..reps {
        f();
    }
    let cpu = (cpu_ns() - c0) as f64 * 1e-9;
    println!(
        "{name}: {:.1} GFLOP/s per on-CPU time",
        flops * reps as f64 / cpu / 1e9
    );
}
fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let p = Conv2dParams {
        batch: 1,
        in_channels: 64,
        in_h: 56,
        in_w: 56,
        out_channels: 64,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_bottom: 1,
        pad_left: 1,
        pad_right: 1,
        dilation_h: 1,
        dilation_w: 1,
        groups: 1,
    };
    let x = vec![0.1f32; p.input_len()];
    let w = vec![0.1f32; p.weight_len()];
    let mut y = vec![0f32; 64 * 3136];
    let (m, n, k) = (64usize, 3136usize, 576usize);
    let a = vec![0.1f32; m * k];
    let b = vec![0.1f32; k * n];
    let mut c = vec![0f32; m * n];
    pool.install(|| {
        for _ in 0..2 {
            timeit("conv im2col b1", p.flops(), || {
                conv2d_forward(&p, &x, &w, None, &mut y, ConvAlgo::Im2col).unwrap()
            });
            timeit("sgemm 64x3136x576", 2.0 * (m * n * k) as f64, || {
                sgemm(false, false, m, n, k, 1.0, &a, k, &b, n, 0.0, &mut c, n).unwrap()
            });
            timeit("sgemm 64x112x576", 2.0 * (m * 112 * k) as f64, || {
                sgemm(
                    false, false, m, 112, k, 1.0, &a, k, &b, 112, 0.0, &mut c, 112,
                )
                .unwrap()
            });
        }
    });
}
