//! BatchNorm2d against an f64 reference of torch's formulas, finite-difference checks of the
//! backward, accuracy on large planes with a large mean, scalar vs AVX2 and 1 vs 2 threads.
mod common;

use common::*;
use ferroconv_kernels::batchnorm::*;

fn bp((n, c, h, w): (usize, usize, usize, usize)) -> BatchNorm2dParams {
    BatchNorm2dParams::from_shape([n, c, h, w], 0.1, 1e-5).unwrap()
}

/// The training backward's statistics.
fn batch<'a>(mean: &'a [f32], invstd: &'a [f32]) -> BnStats<'a> {
    BnStats::Batch { mean, invstd }
}

fn shapes() -> Vec<BatchNorm2dParams> {
    vec![
        bp((2, 3, 4, 5)),
        bp((1, 5, 3, 3)),  // batch 1
        bp((4, 11, 1, 1)), // spatial 1, channels not a multiple of 8
        bp((3, 2, 7, 13)), // odd plane, tails after the 8-wide lanes
        bp((2, 16, 9, 9)),
        bp((1, 1, 1, 2)), // the smallest trainable size
    ]
}

struct Reference {
    y: Vec<f64>,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
}

/// torch's training forward in f64.
fn ref_train(
    p: &BatchNorm2dParams,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    rm: &[f32],
    rv: &[f32],
) -> Reference {
    let (c, hw) = (p.channels, p.height * p.width);
    let cnt = (p.batch * hw) as f64;
    let mut r = Reference {
        y: vec![0.0; x.len()],
        mean: vec![],
        invstd: vec![],
        running_mean: vec![],
        running_var: vec![],
    };
    for ch in 0..c {
        let vals: Vec<(usize, f64)> = (0..p.batch)
            .flat_map(|n| (0..hw).map(move |i| (n * c * hw + ch * hw + i, 0.0)))
            .map(|(k, _)| (k, x[k] as f64))
            .collect();
        let mean = vals.iter().map(|v| v.1).sum::<f64>() / cnt;
        let var_sum: f64 = vals.iter().map(|v| (v.1 - mean).powi(2)).sum();
        let invstd = 1.0 / (var_sum / cnt + p.eps).sqrt();
        let (wv, bv) = (
            w.map_or(1.0, |w| w[ch] as f64),
            b.map_or(0.0, |b| b[ch] as f64),
        );
        for &(k, v) in &vals {
            r.y[k] = (v - mean) * invstd * wv + bv;
        }
        r.mean.push(mean);
        r.invstd.push(invstd);
        r.running_mean
            .push(p.momentum * mean + (1.0 - p.momentum) * rm[ch] as f64);
        r.running_var
            .push(p.momentum * var_sum / (cnt - 1.0) + (1.0 - p.momentum) * rv[ch] as f64);
    }
    r
}

/// Input, weight, bias, running mean, running var.
type Inputs = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn params_for(p: &BatchNorm2dParams) -> Inputs {
    let x = smooth(p.input_len(), 1)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 2.0 + (i % 3) as f32)
        .collect();
    let w = smooth(p.channels, 2).iter().map(|v| v + 1.5).collect();
    let b = smooth(p.channels, 3);
    let rm = smooth(p.channels, 4);
    let rv = smooth(p.channels, 5).iter().map(|v| v + 2.0).collect();
    (x, w, b, rm, rv)
}

#[test]
fn training_forward_matches_reference() {
    let _g = lock();
    for p in shapes() {
        let (x, w, b, rm, rv) = params_for(&p);
        for affine in [true, false] {
            let (wo, bo) = if affine {
                (Some(&w[..]), Some(&b[..]))
            } else {
                (None, None)
            };
            let want = ref_train(&p, &x, wo, bo, &rm, &rv);
            for o in for_each_level(&_g, |_| bn_train(&p, &x, wo, bo, &rm, &rv)) {
                let what = format!("{p:?} affine {affine}");
                assert_close_f64(&o.y, &want.y, 1e-5, 1e-5, &what);
                assert_close_f64(&o.mean, &want.mean, 1e-6, 1e-7, &what);
                assert_close_f64(&o.invstd, &want.invstd, 1e-6, 1e-7, &what);
                assert_close_f64(&o.rm, &want.running_mean, 1e-6, 1e-7, &what);
                assert_close_f64(&o.rv, &want.running_var, 1e-6, 1e-7, &what);
            }
        }
    }
}

#[test]
fn running_stats_are_optional_and_momentum_edges_work() {
    let mut p = bp((2, 3, 2, 2));
    let (x, _, _, rm, rv) = params_for(&p);
    let mut y = vec![0.0; x.len()];
    let (mut m, mut s) = (vec![0.0; 3], vec![0.0; 3]);
    batch_norm2d_forward_train(&p, &x, None, None, None, None, &mut y, &mut m, &mut s).unwrap();
    let want = ref_train(&p, &x, None, None, &rm, &rv);
    assert_close_f64(&y, &want.y, 1e-5, 1e-5, "no running stats");
    // momentum 0 keeps the running stats; momentum 1 replaces them with the batch's.
    p.momentum = 0.0;
    let o = bn_train(&p, &x, None, None, &rm, &rv);
    assert_eq!((o.rm, o.rv), (rm.clone(), rv.clone()));
    p.momentum = 1.0;
    let o = bn_train(&p, &x, None, None, &rm, &rv);
    let want = ref_train(&p, &x, None, None, &rm, &rv);
    assert_close_f64(&o.rm, &want.mean, 1e-6, 1e-7, "momentum 1 mean");
    assert_close_f64(&o.rv, &want.running_var, 1e-6, 1e-7, "momentum 1 var");
}

#[test]
fn large_planes_with_large_mean_stay_accurate() {
    // 1000 + small noise over 2 * 256 * 256 values: naive f32 sums lose most digits here.
    let p = bp((2, 2, 256, 256));
    let x: Vec<f32> = smooth(p.input_len(), 7)
        .iter()
        .map(|v| 1000.0 + v * 0.01)
        .collect();
    let rm = vec![0.0; 2];
    let rv = vec![1.0; 2];
    let want = ref_train(&p, &x, None, None, &rm, &rv);
    let o = bn_train(&p, &x, None, None, &rm, &rv);
    assert_close_f64(&o.mean, &want.mean, 1e-7, 0.0, "mean");
    assert_close_f64(&o.invstd, &want.invstd, 1e-6, 0.0, "invstd");
    assert_close_f64(&o.rv, &want.running_var, 1e-6, 0.0, "running var");
    assert_close_f64(&o.y, &want.y, 1e-4, 1e-3, "output");
}

#[test]
fn eval_forward_uses_running_stats() {
    let _g = lock();
    for p in shapes() {
        let (x, w, b, rm, rv) = params_for(&p);
        let (c, hw) = (p.channels, p.height * p.width);
        let want: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = i / hw % c;
                (v as f64 - rm[ch] as f64) / (rv[ch] as f64 + p.eps).sqrt() * w[ch] as f64
                    + b[ch] as f64
            })
            .collect();
        for y in for_each_level(&_g, |_| {
            let mut y = vec![0.0; x.len()];
            batch_norm2d_forward_eval(&p, &x, Some(&w), Some(&b), &rm, &rv, &mut y).unwrap();
            y
        }) {
            assert_close_f64(&y, &want, 1e-5, 1e-5, &format!("{p:?}"));
        }
    }
}

/// Backward outputs: grad input, weight, bias.
fn run_backward(
    p: &BatchNorm2dParams,
    x: &[f32],
    go: &[f32],
    w: Option<&[f32]>,
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut gi = vec![f32::NAN; x.len()];
    let mut gw = vec![f32::NAN; p.channels];
    let mut gb = vec![f32::NAN; p.channels];
    batch_norm2d_backward(
        p,
        x,
        go,
        w,
        BnStats::Batch { mean, invstd },
        &mut gi,
        Some(&mut gw),
        Some(&mut gb),
    )
    .unwrap();
    (gi, gw, gb)
}

#[test]
fn backward_matches_finite_differences() {
    let _g = lock();
    for p in shapes() {
        let (x, w, b, rm, rv) = params_for(&p);
        let r = smooth(p.input_len(), 9);
        let fwd = bn_train(&p, &x, Some(&w), Some(&b), &rm, &rv);
        let loss = |xx: &[f32], ww: &[f32], bb: &[f32]| {
            dot(&bn_train(&p, xx, Some(ww), Some(bb), &rm, &rv).y, &r)
        };
        // Differences of f32 forwards: a step of 1e-2 keeps rounding noise well under 1e-3.
        let fd_x = fd_grad(&x, 1e-2, |xx| loss(xx, &w, &b));
        let fd_w = fd_grad(&w, 1e-2, |ww| loss(&x, ww, &b));
        let fd_b = fd_grad(&b, 1e-2, |bb| loss(&x, &w, bb));
        for (gi, gw, gb) in for_each_level(&_g, |_| {
            run_backward(&p, &x, &r, Some(&w), &fwd.mean, &fwd.invstd)
        }) {
            let what = format!("{p:?}");
            assert_close_f64(&gi, &fd_x, 2e-2, 5e-3, &format!("{what} grad input"));
            assert_close_f64(&gw, &fd_w, 2e-2, 5e-3, &format!("{what} grad weight"));
            assert_close_f64(&gb, &fd_b, 2e-2, 5e-3, &format!("{what} grad bias"));
        }
        // Without weight the backward is the weight-1 case.
        let ones = vec![1.0; p.channels];
        let (gi1, _, _) = run_backward(&p, &x, &r, Some(&ones), &fwd.mean, &fwd.invstd);
        let (gi0, _, _) = run_backward(&p, &x, &r, None, &fwd.mean, &fwd.invstd);
        assert_eq!(gi0, gi1);
    }
}

#[test]
fn backward_matches_closed_form_in_f64() {
    for p in shapes() {
        let (x, w, _, _, _) = params_for(&p);
        let r = smooth(p.input_len(), 9);
        let mut y = vec![0.0; x.len()];
        let (mut m, mut s) = (vec![0.0; p.channels], vec![0.0; p.channels]);
        batch_norm2d_forward_train(&p, &x, None, None, None, None, &mut y, &mut m, &mut s).unwrap();
        let (gi, gw, gb) = run_backward(&p, &x, &r, Some(&w), &m, &s);
        let (c, hw) = (p.channels, p.height * p.width);
        let cnt = (p.batch * hw) as f64;
        let (mut want_gi, mut want_gw, mut want_gb) = (vec![0.0; x.len()], vec![], vec![]);
        for ch in 0..c {
            let idx: Vec<usize> = (0..p.batch)
                .flat_map(|n| (0..hw).map(move |i| n * c * hw + ch * hw + i))
                .collect();
            let (mean, inv) = (m[ch] as f64, s[ch] as f64);
            let sum_g: f64 = idx.iter().map(|&k| r[k] as f64).sum();
            let dotp: f64 = idx
                .iter()
                .map(|&k| (x[k] as f64 - mean) * r[k] as f64)
                .sum();
            for &k in &idx {
                let xhat = (x[k] as f64 - mean) * inv;
                want_gi[k] =
                    (r[k] as f64 - sum_g / cnt - xhat * dotp * inv / cnt) * inv * w[ch] as f64;
            }
            want_gw.push(dotp * inv);
            want_gb.push(sum_g);
        }
        assert_close_f64(&gi, &want_gi, 1e-4, 1e-5, "grad input");
        assert_close_f64(&gw, &want_gw, 1e-5, 1e-5, "grad weight");
        assert_close_f64(&gb, &want_gb, 1e-5, 1e-5, "grad bias");
    }
}

#[test]
fn one_and_two_threads_agree_exactly() {
    let _g = lock();
    let p = bp((3, 7, 9, 11));
    let (x, w, b, rm, rv) = params_for(&p);
    let r = smooth(p.input_len(), 3);
    let run = || {
        let o = bn_train(&p, &x, Some(&w), Some(&b), &rm, &rv);
        let mut ye = vec![0.0; x.len()];
        batch_norm2d_forward_eval(&p, &x, Some(&w), Some(&b), &rm, &rv, &mut ye).unwrap();
        let g = run_backward(&p, &x, &r, Some(&w), &o.mean, &o.invstd);
        (o.y, o.mean, o.invstd, o.rm, o.rv, ye, g)
    };
    assert!(with_threads(1, run) == with_threads(2, run));
}

#[test]
fn bad_arguments_are_errors() {
    let mut p = bp((1, 2, 1, 1));
    let x = [0.0f32; 2];
    let (mut y, mut m, mut s) = ([0.0f32; 2], [0.0f32; 2], [0.0f32; 2]);
    let err = |p: &BatchNorm2dParams, x: &[f32], y: &mut [f32], m: &mut [f32]| {
        let mut s = vec![0.0; 2];
        batch_norm2d_forward_train(p, x, None, None, None, None, y, m, &mut s)
            .unwrap_err()
            .0
    };
    assert_eq!(
        err(&p, &x, &mut y, &mut m),
        "input: training batch norm needs more than 1 value per channel, got shape [1, 2, 1, 1]"
    );
    p.batch = 2;
    assert_eq!(
        err(&p, &x, &mut y, &mut m),
        "input: expected 4 elements, got 2"
    );
    p.eps = 0.0;
    assert_eq!(
        err(&p, &x, &mut y, &mut m),
        "eps: expected a positive finite number, got 0"
    );
    p.eps = 1e-5;
    p.momentum = 1.5;
    assert_eq!(
        err(&p, &x, &mut y, &mut m),
        "momentum: expected a number in [0, 1], got 1.5"
    );
    p.momentum = f64::NAN;
    assert_eq!(
        err(&p, &x, &mut y, &mut m),
        "momentum: expected a number in [0, 1], got NaN"
    );
    p = bp((2, 2, 1, 1));
    let x4 = [1.0f32, 2.0, 3.0, 4.0];
    let mut y4 = [0.0f32; 4];
    let mut rm = [0.0f32; 3];
    assert_eq!(
        batch_norm2d_forward_train(
            &p,
            &x4,
            None,
            None,
            Some(&mut rm),
            None,
            &mut y4,
            &mut m,
            &mut s
        )
        .unwrap_err()
        .0,
        "runningMean: expected 2 elements, got 3"
    );
    assert_eq!(
        batch_norm2d_backward(&p, &x4, &x4, None, batch(&m, &s[..1]), &mut y4, None, None)
            .unwrap_err()
            .0,
        "saveInvstd: expected 2 elements, got 1"
    );
}

/// cargo test -p ferroconv-kernels --release --test batchnorm -- --ignored --nocapture
#[test]
#[ignore]
fn bench_batchnorm_resnet_shape() {
    let p = bp((8, 64, 112, 112));
    let x = smooth(p.input_len(), 1);
    let w = vec![1.0; 64];
    let b = vec![0.0; 64];
    let (mut rm, mut rv) = (vec![0.0; 64], vec![1.0; 64]);
    let (mut m, mut s) = (vec![0.0; 64], vec![0.0; 64]);
    let mut y = vec![0.0; x.len()];
    let mut gi = vec![0.0; x.len()];
    let bytes = (x.len() * 8) as f64;
    with_threads(2, || {
        let (t, cpu) = time(|| {
            batch_norm2d_forward_train(
                &p,
                &x,
                Some(&w),
                Some(&b),
                Some(&mut rm),
                Some(&mut rv),
                &mut y,
                &mut m,
                &mut s,
            )
            .unwrap()
        });
        report("batchnorm train fwd (x in, y out)", bytes, t, cpu);
        let (t, cpu) = time(|| {
            batch_norm2d_forward_eval(&p, &x, Some(&w), Some(&b), &rm, &rv, &mut y).unwrap()
        });
        report("batchnorm eval fwd (x in, y out)", bytes, t, cpu);
        let (t, cpu) = time(|| {
            batch_norm2d_backward(&p, &x, &y, Some(&w), batch(&m, &s), &mut gi, None, None).unwrap()
        });
        report("batchnorm backward (x, dy in, dx out)", bytes * 1.5, t, cpu);
    });
}
