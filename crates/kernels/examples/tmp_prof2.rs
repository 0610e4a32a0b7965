use ferroconv_kernels::conv::*;
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (c, oc, hw, k, s, groups, which, reps) = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
    let p = Conv2dParams {
        batch: 8,
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
    };
    let x = vec![0.5f32; p.input_len()];
    let w = vec![0.25f32; p.weight_len()];
    let mut y = vec![0f32; p.output_len(p.validate().unwrap())];
    let mut dx = vec![0f32; p.input_len()];
    let mut dw = vec![0f32; p.weight_len()];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for _ in 0..reps {
            match which {
                0 => conv2d_forward(&p, &x, &w, None, &mut y, ConvAlgo::Direct).unwrap(),
                1 => conv2d_backward_data(&p, &y, &w, &mut dx, ConvAlgo::Direct).unwrap(),
                _ => conv2d_backward_weight(&p, &x, &y, &mut dw, None, ConvAlgo::Direct).unwrap(),
            }
        }
    });
}
