//! The conv algorithm tests' one case table (the awkward shapes every algorithm must get right)
//! and checks against `conv::reference` and against finite differences of an algorithm's own
//! forward.
use super::{assert_close, fill, norm_err};
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, reference, BackwardData,
    BackwardWeight, Choice, Conv2dParams, ConvAlgo, Forward,
};

pub struct Case {
    pub name: &'static str,
    pub p: Conv2dParams,
}

/// `(n, c, h, w)`, `(oc, kh, kw)`, stride `(sh, sw)`, pad `(top, bottom, left, right)`,
/// dilation `(dh, dw)`, groups.
pub fn params(
    (n, c, h, w): (usize, usize, usize, usize),
    (oc, kh, kw): (usize, usize, usize),
    (sh, sw): (usize, usize),
    (pt, pb, pl, pr): (usize, usize, usize, usize),
    (dh, dw): (usize, usize),
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
        stride_h: sh,
        stride_w: sw,
        pad_top: pt,
        pad_bottom: pb,
        pad_left: pl,
        pad_right: pr,
        dilation_h: dh,
        dilation_w: dw,
        groups,
    }
}

/// Every conv algorithm runs every case (`tests/conv_algorithms.rs`); algorithm files add the
/// shapes only their algorithm cares about.
pub fn cases() -> Vec<Case> {
    let c = |name, p| Case { name, p };
    let sq = |n, ci, h, w, co, pad, g| params((n, ci, h, w), (co, 3, 3), (1, 1), pad, (1, 1), g);
    vec![
        c(
            "batch 1 non-square 3x3",
            params((1, 3, 7, 9), (5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "stride 2 pad 1 groups 2",
            params((2, 4, 8, 8), (6, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2),
        ),
        c(
            "dilation 2",
            params((2, 5, 10, 9), (4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ),
        c(
            "depthwise 3x3",
            params((2, 6, 9, 7), (6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
        ),
        c(
            "depthwise 3x3 s2 wide",
            params((1, 9, 11, 37), (9, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 9),
        ),
        c(
            "depthwise x2 5x5 dil",
            params((2, 3, 12, 13), (6, 5, 5), (1, 1), (4, 4, 4, 4), (2, 2), 3),
        ),
        c(
            "groups 2 wide",
            params((2, 8, 6, 21), (10, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
        ),
        c(
            "1x1",
            params((2, 10, 5, 6), (7, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        // Several small planes per GEMM block (the weight gradient batches items), 40 input
        // channels: two full 16-row panels and a partial one.
        c(
            "1x1 batched 7x7",
            params((4, 40, 7, 7), (36, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "1x1 stride 2",
            params((2, 4, 7, 9), (3, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "5x5",
            params((2, 3, 12, 10), (4, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),
        ),
        c(
            "7x7 s2",
            params((1, 3, 23, 23), (4, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "11x11 s4",
            params((2, 3, 31, 35), (5, 11, 11), (4, 4), (2, 2, 2, 2), (1, 1), 1),
        ),
        // A stem with many output channels: six 16-channel panels, which AVX-512's indirect
        // tiles take four and then two (the last one partial) at a time.
        c(
            "7x7 s2 90 channels",
            params((2, 3, 19, 17), (90, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "channels 13->11",
            params((1, 13, 6, 6), (11, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "many channels",
            params((3, 20, 12, 30), (24, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "spatial 1",
            params((2, 5, 1, 1), (3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "spatial 1 padded 3x3",
            params((2, 5, 1, 1), (3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "asymmetric everything",
            params((2, 4, 9, 12), (6, 3, 2), (2, 1), (0, 2, 1, 0), (1, 2), 2),
        ),
        c(
            "asymmetric stride 3x1",
            params((1, 3, 13, 10), (2, 4, 3), (3, 1), (2, 0, 0, 3), (2, 1), 1),
        ),
        c(
            "kernel = padded input",
            params((2, 2, 5, 5), (3, 7, 7), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "stride > kernel",
            params((1, 3, 11, 11), (4, 2, 2), (3, 3), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "big pad",
            params((1, 2, 4, 5), (2, 3, 3), (1, 2), (4, 3, 2, 5), (1, 1), 1),
        ),
        // im2col: both lowerings, GEMM blocking, 1x1 fast paths, uneven padding.
        c(
            "im2col 3x3 pad1",
            params((2, 3, 8, 8), (5, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col batch1 nonsquare",
            params((1, 5, 7, 11), (6, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "im2col stride2 pad1",
            params((2, 4, 9, 9), (7, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col dilation2",
            params((1, 3, 10, 9), (4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ),
        c(
            "im2col depthwise",
            params((2, 6, 8, 7), (6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),
        ),
        c(
            "im2col depthwise x2",
            params((1, 4, 5, 6), (8, 3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 4),
        ),
        c(
            "im2col groups2",
            params((1, 4, 6, 6), (6, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
        ),
        c(
            "im2col 1x1",
            params((2, 10, 5, 5), (3, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "im2col 1x1 groups4",
            params((2, 8, 6, 5), (12, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 4),
        ),
        c(
            "im2col 1x1 stride2",
            params((2, 6, 7, 9), (5, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "im2col 1x1 padded",
            params((1, 3, 4, 4), (2, 1, 1), (1, 1), (1, 0, 0, 1), (1, 1), 1),
        ),
        c(
            "im2col 5x5",
            params((1, 3, 12, 10), (4, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),
        ),
        c(
            "im2col 7x7 stride2",
            params((1, 3, 23, 23), (8, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "im2col 11x11 stride4",
            params((1, 3, 35, 35), (4, 11, 11), (4, 4), (2, 2, 2, 2), (1, 1), 1),
        ),
        c(
            "im2col asymmetric",
            params((1, 2, 6, 7), (3, 3, 2), (1, 2), (0, 2, 1, 0), (1, 1), 1),
        ),
        c(
            "im2col dilation 3x1",
            params((2, 3, 9, 8), (2, 3, 2), (1, 2), (3, 0, 0, 2), (3, 1), 1),
        ),
        c(
            "im2col spatial 1",
            params((3, 9, 1, 1), (5, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        c(
            "im2col spatial 1 pad1",
            params((2, 4, 1, 1), (3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col many blocks",
            params((1, 64, 30, 30), (20, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col odd channels",
            params((2, 19, 20, 21), (37, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col batch5 stem",
            params((5, 3, 40, 40), (4, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col deep 2 items",
            params((2, 64, 17, 30), (9, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        c(
            "im2col shifted uneven pad groups2",
            params((2, 6, 9, 20), (8, 5, 3), (1, 1), (2, 1, 0, 3), (1, 1), 2),
        ),
        c(
            "im2col wide late layer",
            params((1, 96, 7, 7), (130, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // im2col's input gradient as a forward conv (stride 1, 16+ input channels per group):
        // groups with dilation and uneven pads, a non-square kernel, and pads past the
        // kernel's reach (which need col2im).
        c(
            "data as forward g2 dil2 uneven pad",
            params((2, 32, 9, 11), (12, 3, 3), (1, 1), (2, 1, 0, 4), (2, 2), 2),
        ),
        c(
            "data as forward 5x3 uneven pad",
            params((2, 17, 8, 10), (6, 5, 3), (1, 1), (0, 4, 2, 1), (1, 1), 1),
        ),
        c(
            "data pad past reach",
            params((1, 16, 6, 6), (5, 3, 3), (1, 1), (3, 3, 3, 3), (1, 1), 1),
        ),
        // direct: several row ranges per task split, remainder channel blocks (channels not a
        // multiple of the 4- and 3-channel register blocks), column tails of every length.
        c(
            "wide asym pad",
            params((2, 8, 45, 38), (9, 3, 3), (1, 1), (1, 2, 0, 1), (1, 1), 1),
        ),
        c(
            "5x5 s2 g2 odd",
            params((1, 6, 50, 41), (10, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 2),
        ),
        c(
            "dilation 2 big",
            params((2, 4, 47, 33), (7, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ),
        c(
            "depthwise big",
            params((1, 8, 60, 30), (8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        ),
        c(
            "depthwise 5x5 s2",
            params(
                (2, 12, 29, 31),
                (12, 5, 5),
                (2, 2),
                (2, 2, 2, 2),
                (1, 1),
                12,
            ),
        ),
        c(
            "7x7 s2 stem",
            params((1, 3, 64, 70), (8, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "3x3 s3 d2",
            params((2, 5, 30, 26), (6, 3, 3), (3, 3), (1, 2, 3, 0), (2, 2), 1),
        ),
        c(
            "1x7 / 7x1",
            params((1, 4, 17, 23), (5, 1, 7), (1, 1), (0, 0, 3, 3), (1, 1), 1),
        ),
        // Winograd: odd sizes, partial edge tiles, every padding up to 2 (and beyond, where
        // only the input gradient falls back), groups, several 16-tile chunks per tile row, and
        // many tile rows (several blocks).
        c(
            "batch 1 non-square pad 1",
            sq(1, 3, 7, 9, 5, (1, 1, 1, 1), 1),
        ),
        c("pad 0", sq(2, 5, 10, 13, 6, (0, 0, 0, 0), 1)),
        c("pad 2", sq(2, 4, 9, 6, 7, (2, 2, 2, 2), 1)),
        c("asymmetric pads", sq(1, 6, 11, 10, 5, (0, 2, 1, 0), 1)),
        c(
            "pad 3 (data grad falls back)",
            sq(1, 3, 5, 6, 4, (3, 1, 0, 3), 1),
        ),
        c("groups 2", sq(2, 8, 6, 21, 10, (1, 1, 1, 1), 2)),
        c("groups 3 odd", sq(1, 9, 13, 7, 6, (1, 0, 2, 1), 3)),
        c("depthwise", sq(2, 6, 9, 7, 6, (1, 1, 1, 1), 6)),
        c("tiny 3x3 input", sq(2, 4, 3, 3, 3, (0, 0, 0, 0), 1)),
        c("tiny 3x3 input pad 1", sq(1, 4, 3, 3, 3, (1, 1, 1, 1), 1)),
        c("1x1 input pad 1", sq(2, 5, 1, 1, 3, (1, 1, 1, 1), 1)),
        c("channels 13->11", sq(1, 13, 6, 6, 11, (1, 1, 1, 1), 1)),
        c(
            "pads larger than the input",
            sq(1, 2, 2, 3, 3, (5, 2, 9, 1), 1),
        ),
        c(
            "wide: 2 chunks per tile row",
            sq(1, 3, 5, 75, 4, (1, 1, 1, 1), 1),
        ),
        c("many tile rows", sq(6, 10, 90, 19, 9, (1, 1, 1, 1), 1)),
        c("64 channels 20x20", sq(3, 64, 20, 20, 64, (1, 1, 1, 1), 1)),
        c("blocks in parallel", sq(4, 64, 28, 30, 72, (1, 1, 1, 1), 1)),
    ]
}

/// The shared case table as (name, shape) pairs, followed by `extra`: what tests that add
/// their own shapes to the table loop over.
pub fn cases_with(extra: Vec<(&str, Conv2dParams)>) -> Vec<(String, Conv2dParams)> {
    cases()
        .into_iter()
        .map(|c| (c.name.to_string(), c.p))
        .chain(extra.into_iter().map(|(n, p)| (n.to_string(), p)))
        .collect()
}

/// All three results of one algorithm for one case.
pub struct Outputs {
    pub y: Vec<f32>,
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

pub fn inputs(p: &Conv2dParams) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let out_len = p.output_len(p.validate().unwrap());
    (
        fill(p.input_len(), 1),
        fill(p.weight_len(), 2),
        fill(p.out_channels, 3),
        fill(out_len, 4),
    )
}

pub fn run(p: &Conv2dParams, algo: ConvAlgo) -> Outputs {
    run_choice(p, algo.into())
}

/// [`run`] on one [`Choice`] (im2col's alternative paths included).
pub fn run_choice(p: &Conv2dParams, c: Choice) -> Outputs {
    use ferroconv_kernels::conv::{
        conv2d_backward_data_choice, conv2d_backward_weight_choice, conv2d_forward_choice,
    };
    let (x, w, b, gy) = inputs(p);
    let mut y = vec![f32::NAN; gy.len()];
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![f32::NAN; w.len()];
    let mut db = vec![f32::NAN; b.len()];
    conv2d_forward_choice(p, &x, &w, Some(&b), &mut y, c).unwrap();
    conv2d_backward_data_choice(p, &gy, &w, &mut dx, c).unwrap();
    conv2d_backward_weight_choice(p, &x, &gy, &mut dw, Some(&mut db), c).unwrap();
    Outputs { y, dx, dw, db }
}

pub fn run_reference(p: &Conv2dParams) -> Outputs {
    let hw = p.validate().unwrap();
    let (x, w, b, gy) = inputs(p);
    let mut y = vec![0.0; gy.len()];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; b.len()];
    reference::forward(Forward::new(p, hw, &x, &w, &mut y), Some(&b));
    reference::backward_data(BackwardData::new(p, hw, &gy, &w, &mut dx));
    reference::backward_weight(BackwardWeight::new(
        p,
        hw,
        &x,
        &gy,
        (&mut dw, Some(&mut db)),
    ));
    Outputs { y, dx, dw, db }
}

/// Compares all four results of `algo` with `want`; `rtol`/`atol` as in [`assert_close`].
/// Returns the worst normwise error seen.
pub fn compare(
    name: &str,
    p: &Conv2dParams,
    algo: ConvAlgo,
    got: &Outputs,
    want: &Outputs,
    rtol: f64,
    atol: f64,
) -> f64 {
    let mut worst = 0f64;
    for (what, g, w) in [
        ("forward", &got.y, &want.y),
        ("backward data", &got.dx, &want.dx),
        ("backward weight", &got.dw, &want.dw),
        ("backward bias", &got.db, &want.db),
    ] {
        let label = format!("{name} {algo:?} {what} {p:?}");
        worst = worst.max(norm_err(&label, g, w));
        assert_close(&label, g, w, rtol, atol);
    }
    worst
}

/// Runs `algo` and compares all four results with the reference; see [`compare`].
pub fn check_against_reference(
    p: &Conv2dParams,
    name: &str,
    algo: ConvAlgo,
    rtol: f64,
    atol: f64,
) -> f64 {
    compare(name, p, algo, &run(p, algo), &run_reference(p), rtol, atol)
}

/// Loss `sum(y * r)`, in f64, with `y` from `algo`'s forward.
fn loss(p: &Conv2dParams, x: &[f32], w: &[f32], b: &[f32], r: &[f32], algo: ConvAlgo) -> f64 {
    let mut y = vec![0.0; r.len()];
    conv2d_forward(p, x, w, Some(b), &mut y, algo).unwrap();
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of the loss against the backward kernels at a spread of elements of
/// `x`, `w` and `b`. The loss is linear in each, so only rounding separates the two; `tol` is
/// relative to the largest gradient magnitude.
pub fn check_finite_differences(p: &Conv2dParams, name: &str, algo: ConvAlgo, tol: f64) {
    let (mut x, mut w, mut b, r) = inputs(p);
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; b.len()];
    conv2d_backward_data(p, &r, &w, &mut dx, algo).unwrap();
    conv2d_backward_weight(p, &x, &r, &mut dw, Some(&mut db), algo).unwrap();
    let eps = 1e-2f32;
    let picks = |len: usize| -> Vec<usize> {
        let n = len.min(24);
        (0..n)
            .map(|i| (i * 7919 + 13) % len)
            .chain([0, len - 1])
            .collect()
    };
    for which in 0..3 {
        let (grad, len) = match which {
            0 => (&dx, x.len()),
            1 => (&dw, w.len()),
            _ => (&db, b.len()),
        };
        let scale = grad.iter().fold(1e-3f64, |m, &v| m.max(v.abs() as f64));
        for i in picks(len) {
            let v = |t: &mut Vec<f32>, d: f32| {
                let old = t[i];
                t[i] = old + d;
                old
            };
            let mut plus_minus = [0f64; 2];
            for (s, sign) in [1f32, -1.0].iter().enumerate() {
                let old = match which {
                    0 => v(&mut x, sign * eps),
                    1 => v(&mut w, sign * eps),
                    _ => v(&mut b, sign * eps),
                };
                plus_minus[s] = loss(p, &x, &w, &b, &r, algo);
                match which {
                    0 => x[i] = old,
                    1 => w[i] = old,
                    _ => b[i] = old,
                }
            }
            let fd = (plus_minus[0] - plus_minus[1]) / (2.0 * eps as f64);
            let an = grad[i] as f64;
            assert!(
                (fd - an).abs() <= tol * scale,
                "{name} {algo:?} finite differences, {} [{i}]: analytic {an}, numeric {fd} \
                 (scale {scale}) {p:?}",
                ["input", "weight", "bias"][which]
            );
        }
    }
}

/// Every algorithm, `Auto` included.
pub const ALGORITHMS: [ConvAlgo; 5] = [
    ConvAlgo::Auto,
    ConvAlgo::Direct,
    ConvAlgo::Im2col,
    ConvAlgo::Fft,
    ConvAlgo::Winograd,
];

/// Normwise tolerance of an algorithm against the reference (relative to the largest value; see
/// the measurements in conv_fft.rs and conv_winograd.rs): FFT and Winograd spread rounding over
/// a tile, the others round per output.
pub fn atol(algo: ConvAlgo) -> f64 {
    match algo {
        ConvAlgo::Fft => 2e-5,
        ConvAlgo::Winograd => 5e-5,
        _ => 5e-6,
    }
}

/// [`atol`] of what `algo` runs for `p`: for `Auto`, the loosest of the algorithms it picks for
/// the three passes.
pub fn atol_for(algo: ConvAlgo, p: &Conv2dParams) -> f64 {
    use ferroconv_kernels::conv::ConvPass::{BackwardData, BackwardWeight, Forward};
    [Forward, BackwardData, BackwardWeight]
        .map(|pass| atol(algo.resolve_for(p, pass)))
        .into_iter()
        .fold(0.0, f64::max)
}
