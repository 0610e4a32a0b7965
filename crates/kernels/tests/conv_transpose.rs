//! conv_transpose2d against a naive scatter written here (every input pixel adds weight * x into
//! the output), plus finite-difference checks of both backwards, thread-count and SIMD-level
//! agreement, and argument errors.
use ferroconv_kernels::conv::transpose::{
    conv_transpose2d_backward_data, conv_transpose2d_backward_weight, conv_transpose2d_forward,
    ConvTranspose2dParams,
};
use ferroconv_kernels::simd;

mod common;
use common::{levels, lock, smooth as fill};

/// A named transposed convolution.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    p: ConvTranspose2dParams,
}

type Pair = (usize, usize);

/// A case from torch's arguments: input NCHW, C_out, kernel, stride, padding, output padding,
/// dilation, groups.
#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    (n, c, h, w): (usize, usize, usize, usize),
    out_channels: usize,
    (kh, kw): Pair,
    stride: Pair,
    pad: Pair,
    output_pad: Pair,
    dilation: Pair,
    groups: usize,
) -> Case {
    let pair = |(a, b): Pair| [a, b];
    let p = ConvTranspose2dParams::from_shapes(
        [n, c, h, w],
        [c, out_channels / groups, kh, kw],
        pair(stride),
        pair(pad),
        pair(output_pad),
        pair(dilation),
        groups,
    );
    let p = p.unwrap_or_else(|e| panic!("{name}: bad test case: {}", e.0));
    Case { name, p }
}

// name, input NCHW, C_out, kernel, stride, padding, output padding, dilation, groups
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
    case("3x3 s1", (2, 3, 5, 5), 4, (3, 3), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    case("3x3 s1 p1", (1, 5, 6, 4), 3, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("s2 p1 op1", (2, 4, 4, 5), 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1),
    case("s2 k4 p1 (DCGAN)", (1, 3, 4, 4), 5, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 1),
    case("s3 op2 > pad", (2, 3, 3, 4), 2, (3, 3), (3, 3), (0, 1), (2, 2), (1, 1), 1),
    case("s3 op1", (1, 2, 4, 3), 3, (2, 3), (3, 3), (1, 0), (1, 1), (1, 1), 1),
    case("dilation2", (1, 3, 5, 6), 4, (3, 3), (1, 1), (2, 1), (0, 0), (2, 2), 1),
    case("dilation2 s2 op1", (2, 2, 4, 4), 3, (3, 2), (2, 2), (1, 1), (1, 0), (2, 2), 1),
    // Output padding at least the stride (allowed because it is below the dilation) leaves
    // rows no tap reaches even with zero bottom padding: the cropped path.
    case("op >= stride (crop)", (1, 2, 4, 5), 3, (3, 3), (1, 1), (0, 0), (2, 1), (3, 2), 1),
    case("op >= stride, pad", (2, 3, 3, 3), 2, (2, 3), (1, 2), (1, 0), (3, 2), (4, 3), 1),
    case("groups2", (2, 4, 5, 4), 6, (3, 3), (2, 1), (1, 1), (1, 0), (1, 1), 2),
    case("groups2 odd", (1, 6, 3, 5), 10, (2, 3), (1, 2), (0, 1), (0, 1), (1, 1), 2),
    case("depthwise", (2, 5, 4, 4), 5, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 5),
    case("depthwise x2", (1, 3, 5, 3), 6, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), 3),
    case("batch1 nonsquare", (1, 7, 3, 8), 9, (2, 5), (2, 3), (0, 2), (1, 2), (1, 1), 1),
    case("spatial 1", (3, 9, 1, 1), 5, (1, 1), (1, 1), (0, 0), (0, 0), (1, 1), 1),
    case("spatial 1 k3 s2", (2, 3, 1, 1), 4, (3, 3), (2, 2), (0, 1), (1, 1), (1, 1), 1),
    case("channels 11", (1, 11, 3, 3), 13, (3, 3), (2, 2), (1, 1), (0, 1), (1, 1), 1),
    // Padding swallows every tap: the output is the bias alone.
    case("nothing lands", (1, 2, 1, 1), 3, (1, 1), (1, 1), (1, 1), (5, 5), (10, 10), 1),
]
}

/// Output size by torch's formula, in signed arithmetic (independent of the kernel's).
fn out_size(c: &Case) -> (usize, usize) {
    let axis = |n: usize, k: usize, s: usize, p: usize, op: usize, d: usize| {
        let v =
            (n as i64 - 1) * s as i64 - 2 * p as i64 + d as i64 * (k as i64 - 1) + op as i64 + 1;
        assert!(v > 0, "{}: bad test case", c.name);
        v as usize
    };
    (
        axis(
            c.p.in_h,
            c.p.kernel_h,
            c.p.stride_h,
            c.p.pad_h,
            c.p.output_pad_h,
            c.p.dilation_h,
        ),
        axis(
            c.p.in_w,
            c.p.kernel_w,
            c.p.stride_w,
            c.p.pad_w,
            c.p.output_pad_w,
            c.p.dilation_w,
        ),
    )
}

/// Calls `f(x_idx, y_idx, w_idx)` for every (input pixel, output pixel, weight) triple of the
/// scatter: input (n, ic, iy, ix) adds w[ic, j, ky, kx] * x into output
/// (n, g * C_out/g + j, iy * s + ky * d - p, ix * s + kx * d - p) when that is inside.
fn for_each_tap(c: &Case, mut f: impl FnMut(usize, usize, usize)) {
    let (n_, ci, h, w) = (c.p.batch, c.p.in_channels, c.p.in_h, c.p.in_w);
    let (oh, ow) = out_size(c);
    let (cig, cog) = (ci / c.p.groups, c.p.out_channels / c.p.groups);
    let (kh, kw) = (c.p.kernel_h, c.p.kernel_w);
    for n in 0..n_ {
        for ic in 0..ci {
            let g = ic / cig;
            for iy in 0..h {
                for ix in 0..w {
                    let xi = ((n * ci + ic) * h + iy) * w + ix;
                    for j in 0..cog {
                        let oc = g * cog + j;
                        for ky in 0..kh {
                            let oy =
                                (iy * c.p.stride_h + ky * c.p.dilation_h) as i64 - c.p.pad_h as i64;
                            if oy < 0 || oy >= oh as i64 {
                                continue;
                            }
                            for kx in 0..kw {
                                let ox = (ix * c.p.stride_w + kx * c.p.dilation_w) as i64
                                    - c.p.pad_w as i64;
                                if ox < 0 || ox >= ow as i64 {
                                    continue;
                                }
                                let yi = ((n * c.p.out_channels + oc) * oh + oy as usize) * ow
                                    + ox as usize;
                                let wi = ((ic * cog + j) * kh + ky) * kw + kx;
                                f(xi, yi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn ref_forward(c: &Case, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
    let (oh, ow) = out_size(c);
    let mut y = vec![0f64; c.p.batch * c.p.out_channels * oh * ow];
    for_each_tap(c, |xi, yi, wi| y[yi] += x[xi] as f64 * w[wi] as f64);
    if let Some(b) = b {
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / (oh * ow)) % c.p.out_channels] as f64;
        }
    }
    y
}

fn ref_grad_input(c: &Case, gy: &[f32], w: &[f32]) -> Vec<f64> {
    let (n, ci, h, wd) = (c.p.batch, c.p.in_channels, c.p.in_h, c.p.in_w);
    let mut gx = vec![0f64; n * ci * h * wd];
    for_each_tap(c, |xi, yi, wi| gx[xi] += gy[yi] as f64 * w[wi] as f64);
    gx
}

fn ref_grad_weight(c: &Case, x: &[f32], gy: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let p = c.p;
    let mut gw = vec![0f64; p.weight_len()];
    for_each_tap(c, |xi, yi, wi| gw[wi] += x[xi] as f64 * gy[yi] as f64);
    let (oh, ow) = out_size(c);
    let mut gb = vec![0f64; c.p.out_channels];
    for (i, v) in gy.iter().enumerate() {
        gb[(i / (oh * ow)) % c.p.out_channels] += *v as f64;
    }
    (gw, gb)
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= tol * (1.0 + b.abs()),
            "{what} at {i}: {a} vs {b}"
        );
    }
}

struct Outputs {
    y: Vec<f32>,
    gx: Vec<f32>,
    gw: Vec<f32>,
    gb: Vec<f32>,
}

fn inputs(c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let p = c.p;
    let (oh, ow) = out_size(c);
    (
        fill(p.input_len(), 1),
        fill(p.weight_len(), 2),
        fill(c.p.out_channels, 3),
        fill(p.output_len((oh, ow)), 4),
    )
}

fn run_all(c: &Case) -> Outputs {
    let p = c.p;
    let (x, w, b, gy) = inputs(c);
    // Garbage in the outputs proves they are overwritten, not accumulated into.
    let mut y = vec![f32::NAN; gy.len()];
    let mut gx = vec![f32::NAN; x.len()];
    let mut gw = vec![f32::NAN; w.len()];
    let mut gb = vec![f32::NAN; b.len()];
    conv_transpose2d_forward(&p, &x, &w, Some(&b), &mut y).unwrap();
    conv_transpose2d_backward_data(&p, &gy, &w, &mut gx).unwrap();
    conv_transpose2d_backward_weight(&p, &x, &gy, &mut gw, Some(&mut gb)).unwrap();
    Outputs { y, gx, gw, gb }
}

#[test]
fn matches_scatter_reference() {
    let _guard = lock();
    for level in levels() {
        simd::set_level(level);
        for c in &cases() {
            let p = c.p;
            assert_eq!(
                p.validate().unwrap(),
                out_size(c),
                "{}: output size",
                c.name
            );
            let (x, w, b, gy) = inputs(c);
            let out = run_all(c);
            let tag = |s: &str| format!("{} {:?} {s}", c.name, level);
            assert_close(
                &tag("forward"),
                &out.y,
                &ref_forward(c, &x, &w, Some(&b)),
                1e-4,
            );
            assert_close(
                &tag("grad input"),
                &out.gx,
                &ref_grad_input(c, &gy, &w),
                1e-4,
            );
            let (gw, gb) = ref_grad_weight(c, &x, &gy);
            assert_close(&tag("grad weight"), &out.gw, &gw, 1e-4);
            assert_close(&tag("grad bias"), &out.gb, &gb, 1e-4);

            let mut y = vec![f32::NAN; out.y.len()];
            conv_transpose2d_forward(&p, &x, &w, None, &mut y).unwrap();
            assert_close(
                &tag("forward no bias"),
                &y,
                &ref_forward(c, &x, &w, None),
                1e-4,
            );
            let mut gw_only = vec![f32::NAN; w.len()];
            conv_transpose2d_backward_weight(&p, &x, &gy, &mut gw_only, None).unwrap();
            assert_eq!(gw_only, out.gw, "{}: grad weight without grad bias", c.name);
        }
    }
}

#[test]
fn thread_counts_agree() {
    for c in &cases() {
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| run_all(c));
        let two = pool(2).install(|| run_all(c));
        let close = |what: &str, a: &[f32], b: &[f32]| {
            let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{} {what} 1 vs 2 threads", c.name), a, &b, 1e-5);
        };
        close("forward", &one.y, &two.y);
        close("grad input", &one.gx, &two.gx);
        close("grad weight", &one.gw, &two.gw);
        close("grad bias", &one.gb, &two.gb);
    }
}

/// loss = sum(forward(x, w, b) * r) in f64, so every output element matters.
fn loss(p: &ConvTranspose2dParams, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) -> f64 {
    let mut y = vec![0.0; r.len()];
    conv_transpose2d_forward(p, x, w, Some(b), &mut y).unwrap();
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of `loss` along every element of one argument, against `analytic`.
fn check_fd(what: &str, analytic: &[f32], mut loss_at: impl FnMut(usize, f32) -> f64) {
    const EPS: f32 = 1e-2;
    for (i, &g) in analytic.iter().enumerate() {
        let fd = (loss_at(i, EPS) - loss_at(i, -EPS)) / (2.0 * EPS as f64);
        // f32 outputs summed into the loss leave ~1e-6 relative noise; over 2 * EPS that is a
        // few 1e-4 absolute. A wrong tap or channel is off by O(0.1) or more.
        assert!(
            (fd - g as f64).abs() <= 2e-3 + 2e-3 * fd.abs(),
            "{what} element {i}: finite difference {fd} vs analytic {g}"
        );
    }
}

#[test]
fn finite_differences() {
    let names = [
        "s2 p1 op1",
        "s3 op2 > pad",
        "dilation2 s2 op1",
        "op >= stride (crop)",
        "groups2",
        "depthwise x2",
        "batch1 nonsquare",
        "spatial 1 k3 s2",
    ];
    for c in cases().iter().filter(|c| names.contains(&c.name)) {
        let p = c.p;
        let (x, w, b, r) = inputs(c);
        let out = run_all(c);
        check_fd(&format!("{} grad input", c.name), &out.gx, |i, d| {
            let mut xp = x.clone();
            xp[i] += d;
            loss(&p, &xp, &w, &b, &r)
        });
        check_fd(&format!("{} grad weight", c.name), &out.gw, |i, d| {
            let mut wp = w.clone();
            wp[i] += d;
            loss(&p, &x, &wp, &b, &r)
        });
        check_fd(&format!("{} grad bias", c.name), &out.gb, |i, d| {
            let mut bp = b.clone();
            bp[i] += d;
            loss(&p, &x, &w, &bp, &r)
        });
    }
}

#[test]
fn output_padding_rows_get_only_the_bias() {
    // stride 1, dilation 3, output padding 2: the last two rows are beyond every tap.
    let c = &cases()
        .into_iter()
        .find(|c| c.name == "op >= stride (crop)")
        .unwrap();
    let (oh, ow) = out_size(c);
    let out = run_all(c);
    let (_, _, b, _) = inputs(c);
    for (oc, &bias) in b.iter().enumerate() {
        let plane = &out.y[oc * oh * ow..][..oh * ow];
        assert!(plane[(oh - 2) * ow..].iter().all(|&v| v == bias));
    }
    let c = &cases()
        .into_iter()
        .find(|c| c.name == "nothing lands")
        .unwrap();
    let out = run_all(c);
    let (_, _, b, _) = inputs(c);
    let (oh, ow) = out_size(c);
    for (i, &v) in out.y.iter().enumerate() {
        assert_eq!(v, b[i / (oh * ow)]);
    }
    assert!(out.gx.iter().chain(&out.gw).all(|&v| v == 0.0));
}

fn base() -> ConvTranspose2dParams {
    cases()[2].p
}

fn err(p: ConvTranspose2dParams) -> String {
    p.validate().unwrap_err().0
}

#[test]
fn bad_arguments_are_errors() {
    // Each case changes the valid base shape in one way and names the error it must give.
    type Change = fn(&mut ConvTranspose2dParams);
    let cases: [(Change, &str); 9] = [
        (
            |p| p.output_pad_h = 2,
            "outputPadding: must be smaller than either stride or dilation in each dimension, got \
          outputPadding [2, 1] with stride [2, 2] and dilation [1, 1]",
        ),
        (
            |p| p.stride_w = 1,
            "outputPadding: must be smaller than either stride or dilation in each dimension, got \
          outputPadding [1, 1] with stride [2, 1] and dilation [1, 1]",
        ),
        (
            |p| p.pad_h = 9,
            "padding: output size -8x10 for input 4x5 is not positive (padding [9, 1] too large)",
        ),
        (
            |p| p.groups = 3,
            "groups: in_channels (4) must be divisible by groups (3)",
        ),
        (
            |p| (p.groups, p.out_channels) = (2, 5),
            "groups: out_channels (5) must be divisible by groups (2)",
        ),
        (|p| p.groups = 0, "groups: expected a positive size, got 0"),
        (
            |p| p.stride_h = 0,
            "stride: expected a positive size, got 0",
        ),
        (
            |p| p.kernel_w = 0,
            "kernel width: expected a positive size, got 0",
        ),
        (
            |p| p.in_h = usize::MAX / 2,
            "conv_transpose2d: sizes overflow",
        ),
    ];
    for (change, want) in cases {
        let mut p = base();
        change(&mut p);
        assert_eq!(err(p), want, "{p:?}");
    }
    let mut p = base();
    (p.in_h, p.in_w) = (1 << 40, 1 << 40);
    assert!(err(p).contains("too many elements"));

    let p = base();
    let (oh, ow) = p.validate().unwrap();
    let x = vec![0.0; p.input_len()];
    let w = vec![0.0; p.weight_len()];
    let mut y = vec![0.0; p.output_len((oh, ow))];
    let e = conv_transpose2d_forward(&p, &x[1..], &w, None, &mut y).unwrap_err();
    assert_eq!(e.0, "input: expected 160 elements, got 159");
    let e = conv_transpose2d_forward(&p, &x, &w, Some(&[1.0]), &mut y).unwrap_err();
    assert_eq!(e.0, "bias: expected 6 elements, got 1");
    let e = conv_transpose2d_forward(&p, &x, &w[1..], None, &mut y).unwrap_err();
    assert_eq!(
        e.0,
        format!("weight: expected {} elements, got {}", w.len(), w.len() - 1)
    );
    let e = conv_transpose2d_forward(&p, &x, &w, None, &mut y[1..]).unwrap_err();
    assert!(e.0.starts_with("output: expected"));
    let mut gx = x.clone();
    let e = conv_transpose2d_backward_data(&p, &y[1..], &w, &mut gx).unwrap_err();
    assert!(e.0.starts_with("gradOutput: expected"));
    let e = conv_transpose2d_backward_data(&p, &y, &w, &mut gx[1..]).unwrap_err();
    assert!(e.0.starts_with("gradInput: expected"));
    let mut gw = w.clone();
    let mut gb = vec![0.0; 5];
    let e = conv_transpose2d_backward_weight(&p, &x, &y, &mut gw, Some(&mut gb)).unwrap_err();
    assert_eq!(e.0, "gradBias: expected 6 elements, got 5");
    let e = conv_transpose2d_backward_weight(&p, &x, &y, &mut gw[1..], None).unwrap_err();
    assert!(e.0.starts_with("gradWeight: expected"));
}
