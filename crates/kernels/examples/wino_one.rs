use ferroconv_kernels::conv::{conv2d_forward, Conv2dParams, ConvAlgo};
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (c, hw, reps) = (a[0], a[1], a[2]);
    let p = Conv2dParams {
        batch: 8,
        in_channels: c,
        in_h: hw,
        in_w: hw,
        out_channels: c,
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
    let x = vec![0.5f32; p.input_len()];
    let w = vec![0.1f32; p.weight_len()];
    let mut y = vec![0f32; p.output_len(p.validate().unwrap())];
    let algo = if a.get(3) == Some(&1) {
        ConvAlgo::Im2col
    } else {
        ConvAlgo::Winograd
    };
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = std::time::Instant::now();
        conv2d_forward(&p, &x, &w, None, &mut y, algo).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{c}@{hw} {:?}: {:.1} GFLOP/s", algo, p.flops() / best / 1e9);
}
