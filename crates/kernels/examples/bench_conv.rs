//! Prints conv2d GFLOP/s per algorithm on a few layer shapes, 1 and 2 threads:
//! `cargo run --release -p ferroconv-kernels --example bench_conv [im2col]` (`im2col`: skip the
//! slower algorithms).
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, Conv2dParams, ConvAlgo,
};
use std::time::Instant;

fn layer(
    n: usize,
    c: usize,
    hw: usize,
    oc: usize,
    k: usize,
    s: usize,
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        batch: n,
        in_channels: c,
        in_h: hw,
        in_w: hw,
        out_channels: oc,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_top: k / 2,
        pad_bottom: k / 2,
        pad_left: k / 2,
        pad_right: k / 2,
        dilation_h: 1,
        dilation_w: 1,
        groups,
    }
}

/// Best wall time of `f` over about a second (the machine may be shared).
fn best(mut f: impl FnMut()) -> f64 {
    let (mut best, start, mut reps) = (f64::INFINITY, Instant::now(), 0);
    while reps < 3 || (start.elapsed().as_secs_f64() < 1.0 && reps < 200) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        reps += 1;
    }
    best
}

fn main() {
    let only_im2col = std::env::args().any(|a| a == "im2col");
    let shapes = [
        (
            "resnet50 3x3 64->64 56x56 b8",
            layer(8, 64, 56, 64, 3, 1, 1),
        ),
        (
            "resnet50 3x3 64->64 56x56 b1",
            layer(1, 64, 56, 64, 3, 1, 1),
        ),
        (
            "resnet50 1x1 256->64 56x56 b8",
            layer(8, 256, 56, 64, 1, 1, 1),
        ),
        (
            "resnet50 3x3 512->512 7x7 b8",
            layer(8, 512, 7, 512, 3, 1, 1),
        ),
        ("stem 7x7 s2 3->64 224 b2", layer(2, 3, 224, 64, 7, 2, 1)),
        (
            "depthwise 3x3 128ch 56x56 b8",
            layer(8, 128, 56, 128, 3, 1, 128),
        ),
    ];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (name, p) in &shapes {
            let out_hw = p.validate().unwrap();
            let x: Vec<f32> = (0..p.input_len()).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..p.weight_len()).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut y = vec![0f32; p.output_len(out_hw)];
            let mut dx = vec![0f32; x.len()];
            let mut dw = vec![0f32; w.len()];
            let mut db = vec![0f32; p.out_channels];
            let gf = p.flops() / 1e9;
            let algos: &[ConvAlgo] = if only_im2col {
                &[ConvAlgo::Im2col]
            } else {
                &[ConvAlgo::Im2col, ConvAlgo::Direct]
            };
            for &algo in algos {
                let (f, bd, bw) = pool.install(|| {
                    let f = best(|| conv2d_forward(p, &x, &w, None, &mut y, algo).unwrap());
                    if algo == ConvAlgo::Direct {
                        return (f, f64::NAN, f64::NAN); // direct backward is still the reference
                    }
                    let bd = best(|| conv2d_backward_data(p, &y, &w, &mut dx, algo).unwrap());
                    let bw = best(|| {
                        conv2d_backward_weight(p, &x, &y, &mut dw, Some(&mut db), algo).unwrap()
                    });
                    (f, bd, bw)
                });
                println!(
                    "threads {threads} {name:32} {:7}: forward {:6.1} GFLOP/s ({:7.2} ms), backward data {:6.1}, backward weight {:6.1}",
                    format!("{algo:?}"),
                    gf / f,
                    f * 1e3,
                    gf / bd,
                    gf / bw
                );
            }
        }
    }
}
