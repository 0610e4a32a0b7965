//! The direct conv2d forward agrees with the reference loop nest across awkward shapes.
use ferroconv_kernels::conv::{conv2d_forward, reference, Conv2dParams, ConvAlgo};

fn params(
    (n, c, h, w): (usize, usize, usize, usize),
    (oc, kh, kw): (usize, usize, usize),
    stride: usize,
    pad: usize,
    dil: usize,
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        batch: n,
        in_channels: c,
        in_h: h,
        in_w: w,
        out_channels: oc,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: stride,
        stride_w: stride,
        pad_top: pad,
        pad_bottom: pad,
        pad_left: pad,
        pad_right: pad,
        dilation_h: dil,
        dilation_w: dil,
        groups,
    }
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (i as f32 * 0.37 + seed as f32).sin() * 0.5)
        .collect()
}

#[test]
fn direct_matches_reference() {
    let cases = [
        params((1, 3, 7, 9), (5, 3, 3), 1, 1, 1, 1),
        params((2, 4, 8, 8), (6, 3, 3), 2, 1, 1, 2),
        params((1, 6, 9, 7), (6, 3, 3), 1, 2, 2, 6),
        params((2, 3, 12, 10), (4, 5, 5), 1, 2, 1, 1),
        params((1, 3, 23, 23), (4, 7, 7), 2, 3, 1, 1),
        params((1, 3, 31, 35), (2, 11, 11), 4, 2, 1, 1),
        params((2, 5, 1, 1), (3, 1, 1), 1, 0, 1, 1),
    ];
    for p in cases {
        let (oh, ow) = p.validate().unwrap();
        let x = fill(p.input_len(), 1);
        let w = fill(p.weight_len(), 2);
        let b = fill(p.out_channels, 3);
        let mut want = vec![0.0; p.output_len((oh, ow))];
        let mut got = vec![0.0; want.len()];
        reference::forward(&p, (oh, ow), &x, &w, Some(&b), &mut want);
        conv2d_forward(&p, &x, &w, Some(&b), &mut got, ConvAlgo::Direct).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{p:?} at {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let mut p = params((1, 4, 5, 5), (6, 3, 3), 1, 0, 1, 3);
    assert!(p.validate().unwrap_err().0.contains("divisible by groups"));
    p.groups = 1;
    p.kernel_h = 7;
    assert!(p
        .validate()
        .unwrap_err()
        .0
        .contains("larger than the padded input"));
    p.kernel_h = 3;
    let mut out = vec![0.0; 4];
    let err =
        conv2d_forward(&p, &[0.0; 3], &[0.0; 216], None, &mut out, ConvAlgo::Auto).unwrap_err();
    assert_eq!(err.0, "input: expected 100 elements, got 3");
}
