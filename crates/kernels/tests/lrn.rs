//! LocalResponseNorm against an f64 transcription of torch.nn.functional.local_response_norm,
//! finite-difference checks of the backward, scalar vs AVX2 and 1 vs 2 threads.
mod common;

use common::*;
use ferroconv_kernels::lrn::*;

fn lp(
    (n, c, h, w): (usize, usize, usize, usize),
    size: usize,
    alpha: f64,
    beta: f64,
    k: f64,
) -> LrnParams {
    LrnParams {
        batch: n,
        channels: c,
        height: h,
        width: w,
        size,
        alpha,
        beta,
        k,
    }
}

fn cases() -> Vec<LrnParams> {
    vec![
        lp((2, 7, 3, 4), 5, 1e-4, 0.75, 1.0),  // torch defaults
        lp((1, 10, 5, 5), 5, 1e-4, 0.75, 2.0), // AlexNet
        lp((1, 6, 2, 3), 4, 0.5, 0.75, 1.0),   // even size: asymmetric window
        lp((2, 3, 1, 1), 5, 0.9, 0.5, 0.5),    // window wider than the channels
        lp((1, 9, 3, 2), 3, 2.0, 1.0, 1.5),
        lp((1, 5, 4, 3), 2, 0.7, 0.6, 1.0), // general power
        lp((2, 4, 3, 3), 1, 0.3, 0.75, 1.0),
    ]
}

/// torch: div = avg_pool3d(pad(x², size/2 before, (size-1)/2 after), (size, 1, 1)) over
/// channels; y = x / (div * alpha + k)^beta. Returns (y, scale).
fn reference(p: &LrnParams, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (c, hw) = (p.channels as i64, p.height * p.width);
    let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    for n in 0..p.batch {
        for ch in 0..c {
            for i in 0..hw {
                let mut sum = 0.0f64;
                for cc in ch - p.size as i64 / 2..=ch + (p.size as i64 - 1) / 2 {
                    if (0..c).contains(&cc) {
                        let v = x[(n * p.channels + cc as usize) * hw + i] as f64;
                        sum += v * v;
                    }
                }
                let k = (n * p.channels + ch as usize) * hw + i;
                s[k] = sum / p.size as f64 * p.alpha + p.k;
                y[k] = x[k] as f64 / s[k].powf(p.beta);
            }
        }
    }
    (y, s)
}

fn run(p: &LrnParams, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![f32::NAN; x.len()];
    let mut s = vec![f32::NAN; x.len()];
    lrn_forward(p, x, &mut y, &mut s).unwrap();
    (y, s)
}

fn input(p: &LrnParams) -> Vec<f32> {
    // Large enough that the normalisation term matters even with alpha 1e-4.
    smooth(p.input_len(), 2).iter().map(|v| v * 8.0).collect()
}

#[test]
fn forward_matches_torch_formula() {
    let _g = lock();
    for p in cases() {
        let x = input(&p);
        let (want_y, want_s) = reference(&p, &x);
        for (y, s) in for_each_level(&_g, |_| run(&p, &x)) {
            assert_close_f64(&y, &want_y, 1e-5, 1e-6, &format!("{p:?} output"));
            assert_close_f64(&s, &want_s, 1e-5, 1e-6, &format!("{p:?} scale"));
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let _g = lock();
    for p in cases() {
        let x = input(&p);
        let (y, s) = run(&p, &x);
        let r = smooth(x.len(), 3);
        // f64 reference forward: exact enough that a small step gives clean differences.
        let fd = fd_grad(&x, 1e-2, |xx| {
            reference(&p, xx)
                .0
                .iter()
                .zip(&r)
                .map(|(a, &b)| a * b as f64)
                .sum()
        });
        let fd32 = fd_grad(&x, 1e-2, |xx| dot(&run(&p, xx).0, &r));
        for gi in for_each_level(&_g, |_| {
            let mut gi = vec![f32::NAN; x.len()];
            lrn_backward(&p, &x, &y, &s, &r, &mut gi).unwrap();
            gi
        }) {
            assert_close_f64(&gi, &fd, 1e-3, 1e-4, &format!("{p:?} vs f64 differences"));
            assert_close_f64(&gi, &fd32, 1e-2, 2e-3, &format!("{p:?} vs f32 differences"));
        }
    }
}

#[test]
fn one_and_two_threads_agree_exactly() {
    let _g = lock();
    let p = lp((3, 13, 7, 5), 5, 1e-2, 0.75, 1.0);
    let x = input(&p);
    let r = smooth(x.len(), 4);
    let go = || {
        let (y, s) = run(&p, &x);
        let mut gi = vec![0.0; x.len()];
        lrn_backward(&p, &x, &y, &s, &r, &mut gi).unwrap();
        (y, s, gi)
    };
    assert!(with_threads(1, go) == with_threads(2, go));
}

#[test]
fn bad_arguments_are_errors() {
    let mut p = lp((1, 2, 2, 2), 0, 1e-4, 0.75, 1.0);
    let x = [0.0f32; 8];
    let (mut y, mut s) = ([0.0f32; 8], [0.0f32; 8]);
    assert_eq!(
        lrn_forward(&p, &x, &mut y, &mut s).unwrap_err().0,
        "size: expected a positive size, got 0"
    );
    p.size = 3;
    p.beta = f64::NAN;
    assert_eq!(
        lrn_forward(&p, &x, &mut y, &mut s).unwrap_err().0,
        "beta: expected a finite number, got NaN"
    );
    p.beta = 0.75;
    assert_eq!(
        lrn_forward(&p, &x, &mut y, &mut s[..7]).unwrap_err().0,
        "scale: expected 8 elements, got 7"
    );
    let mut gi = [0.0f32; 8];
    assert_eq!(
        lrn_backward(&p, &x, &y, &s, &x[..4], &mut gi)
            .unwrap_err()
            .0,
        "gradOutput: expected 8 elements, got 4"
    );
    // An absurd window is clipped to the channels, not looped over.
    p.size = usize::MAX;
    lrn_forward(&p, &x, &mut y, &mut s).unwrap();
}

/// cargo test -p ferroconv-kernels --release --test lrn -- --ignored --nocapture
#[test]
#[ignore]
fn bench_lrn_alexnet_shape() {
    let p = lp((8, 96, 55, 55), 5, 1e-4, 0.75, 2.0);
    let x = input(&p);
    let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let mut gi = vec![0.0; x.len()];
    with_threads(2, || {
        let (t, c) = time(|| lrn_forward(&p, &x, &mut y, &mut s).unwrap());
        report(
            "lrn fwd (x in, y and scale out)",
            (x.len() * 12) as f64,
            t,
            c,
        );
        let (t, c) = time(|| lrn_backward(&p, &x, &y, &s, &y, &mut gi).unwrap());
        report(
            "lrn bwd (x, y, scale, dy in, dx out)",
            (x.len() * 20) as f64,
            t,
            c,
        );
    });
}
