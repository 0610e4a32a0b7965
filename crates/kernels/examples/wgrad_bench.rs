//! One 3x3 stride-1 pad-1 weight gradient, best time over about 3 s on 2 threads, for one
//! algorithm: `cargo run -p ferroconv-kernels --release --example wgrad_bench batch in_channels
//! size out_channels [im2col|winograd|auto]` (ResNet-18's layers at batch 16: 64 56 64, 128 28
//! 128, 256 14 256, 512 7 512). GFLOP/s counts the forward's `2 * MACs`.
use ferroconv_kernels::conv::{conv2d_backward_weight, Conv2dParams, ConvAlgo};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|s| s.parse().ok()).expect("a number") };
    let (n, c, hw, oc) = (num(0), num(1), num(2), num(3));
    let algo = match args.get(4).map(String::as_str) {
        Some("winograd") => ConvAlgo::Winograd,
        Some("im2col") => ConvAlgo::Im2col,
        _ => ConvAlgo::Auto,
    };
    let p = Conv2dParams::from_shapes([n, c, hw, hw], [oc, c, 3, 3], [1, 1], [1; 4], [1, 1], 1)
        .expect("shape");
    let out_hw = p.validate().expect("shape");
    let fill = |len: usize, k: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * k) % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    };
    let (x, gy) = (
        fill(p.input_len(), 7919),
        fill(p.output_len(out_hw), 104_729),
    );
    let mut dw = vec![0f32; p.weight_len()];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    pool.install(|| {
        let mut best = f64::MAX;
        let start = Instant::now();
        let mut k = 0;
        while k < 5 || start.elapsed().as_secs_f64() < 3.0 {
            let t = Instant::now();
            conv2d_backward_weight(&p, &x, &gy, &mut dw, None, algo).expect("conv");
            best = best.min(t.elapsed().as_secs_f64());
            k += 1;
        }
        println!(
            "{:.3} ms, {:.0} GFLOP/s",
            best * 1e3,
            p.flops() / best / 1e9
        );
    });
}
