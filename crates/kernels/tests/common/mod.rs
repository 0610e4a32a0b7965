//! Shared by the conv algorithm tests: the awkward shapes every algorithm must get right, and
//! checks against `conv::reference` and against finite differences of the algorithm's own forward.
#![allow(dead_code)]
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, reference, Conv2dParams, ConvAlgo,
};
use std::sync::Mutex;

/// Tests that flip the process-global SIMD level hold this so they never interleave.
pub static SIMD_LOCK: Mutex<()> = Mutex::new(());

pub fn lock_simd() -> std::sync::MutexGuard<'static, ()> {
    SIMD_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

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

pub fn cases() -> Vec<Case> {
    let c = |name, p| Case { name, p };
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
    ]
}

pub fn fill(len: usize, seed: u32) -> Vec<f32> {
    // A cheap hash, not a sine: neighbouring values are unrelated, so a misplaced index shows.
    (0..len as u32)
        .map(|i| {
            let mut h = i.wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B);
            h ^= h >> 15;
            h = h.wrapping_mul(0x2C1B_3C6D);
            h ^= h >> 12;
            (h % 20001) as f32 / 10000.0 - 1.0
        })
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
    let (x, w, b, gy) = inputs(p);
    let mut y = vec![f32::NAN; gy.len()];
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![f32::NAN; w.len()];
    let mut db = vec![f32::NAN; b.len()];
    conv2d_forward(p, &x, &w, Some(&b), &mut y, algo).unwrap();
    conv2d_backward_data(p, &gy, &w, &mut dx, algo).unwrap();
    conv2d_backward_weight(p, &x, &gy, &mut dw, Some(&mut db), algo).unwrap();
    Outputs { y, dx, dw, db }
}

pub fn run_reference(p: &Conv2dParams) -> Outputs {
    let hw = p.validate().unwrap();
    let (x, w, b, gy) = inputs(p);
    let mut y = vec![0.0; gy.len()];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    let mut db = vec![0.0; b.len()];
    reference::forward(p, hw, &x, &w, Some(&b), &mut y);
    reference::backward_data(p, hw, &gy, &w, &mut dx);
    reference::backward_weight(p, hw, &x, &gy, &mut dw, Some(&mut db));
    Outputs { y, dx, dw, db }
}

/// Largest `|got - want|` divided by the largest `|want|` (normwise error), after checking that
/// every value is finite.
pub fn norm_err(what: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let mut worst = 0f64;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(a.is_finite(), "{what}: element {i} is {a}");
        worst = worst.max((a as f64 - b as f64).abs());
    }
    if scale == 0.0 {
        worst
    } else {
        worst / scale
    }
}

/// Asserts `|got - want| <= rtol * |want| + atol * max|want|` element-wise.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let (a, b) = (a as f64, b as f64);
        let tol = rtol * b.abs() + atol * scale;
        assert!(
            (a - b).abs() <= tol,
            "{what}: element {i}: got {a}, want {b} (tol {tol:e})"
        );
    }
}

/// Compares all four results with the reference; `rtol`/`atol` as in [`assert_close`].
/// Returns the worst normwise error seen.
pub fn check_against_reference(
    p: &Conv2dParams,
    name: &str,
    algo: ConvAlgo,
    rtol: f64,
    atol: f64,
) -> f64 {
    let got = run(p, algo);
    let want = run_reference(p);
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

/// Runs `f` on a fresh rayon pool of `threads` threads.
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
