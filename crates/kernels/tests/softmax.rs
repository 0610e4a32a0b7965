//! Softmax, log-softmax and cross-entropy against f64 references written from torch's
//! definitions, finite-difference gradient checks, scalar vs AVX2 and 1 vs 2 threads. Tests take
//! LOCK because they flip the process-global SIMD level.
use ferroconv_kernels::simd::{self, SimdLevel};
use ferroconv_kernels::softmax::{
    cross_entropy_backward, cross_entropy_forward, softmax_backward, softmax_forward,
    CrossEntropyParams, Reduction,
};

mod common;
use common::{assert_close_f64 as assert_close, check_fd, levels, lock, rand_vec, with_threads};

fn ref_log_softmax(x: &[f32], cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        out.extend(row.iter().map(|&v| v as f64 - lse));
    }
    out
}

/// (rows, cols, scale, offset): batch 1, one class, odd widths, ImageNet-wide rows, and shapes
/// big enough to be split into several parallel row blocks.
const SHAPES: [(usize, usize, f32, f32); 8] = [
    (1, 1, 1.0, 0.0),
    (1, 10, 3.0, 0.0),
    (3, 7, 5.0, 0.0),
    (5, 37, 10.0, 1000.0),
    (2, 1000, 8.0, -500.0),
    (70, 513, 4.0, 0.0),
    (4000, 10, 6.0, 0.0),
    (9, 17, 60.0, 0.0),
];

#[test]
fn forward_matches_reference() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (i, &(rows, cols, scale, offset)) in SHAPES.iter().enumerate() {
            let x: Vec<f32> = rand_vec(rows * cols, i as u64, scale)
                .into_iter()
                .map(|v| v + offset)
                .collect();
            let lp = ref_log_softmax(&x, cols);
            let p: Vec<f64> = lp.iter().map(|v| v.exp()).collect();
            let mut y = vec![0.0; x.len()];
            softmax_forward(&x, &mut y, rows, cols, false).unwrap();
            assert_close(
                &y,
                &p,
                1e-5,
                1e-9,
                &format!("softmax {rows}x{cols} {lvl:?}"),
            );
            softmax_forward(&x, &mut y, rows, cols, true).unwrap();
            // log-probs near 0 carry the absolute error of ln(sum).
            assert_close(
                &y,
                &lp,
                1e-5,
                1e-6,
                &format!("log_softmax {rows}x{cols} {lvl:?}"),
            );
            for row in y.chunks(cols) {
                let s: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
                assert!((s - 1.0).abs() < 1e-5, "{rows}x{cols}: rows sum to {s}");
            }
        }
    }
}

#[test]
fn non_finite_inputs_behave_like_torch() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        // A NaN poisons its row only; -inf is a class of probability 0.
        let x = [1.0, f32::NAN, 2.0, 0.0, f32::NEG_INFINITY, 3.0];
        let mut y = [0.0; 6];
        softmax_forward(&x, &mut y, 2, 3, false).unwrap();
        assert!(y[..3].iter().all(|v| v.is_nan()), "{lvl:?} {y:?}");
        assert_eq!(y[4], 0.0);
        assert!((y[3] + y[5] - 1.0).abs() < 1e-6);
        softmax_forward(&x, &mut y, 2, 3, true).unwrap();
        assert_eq!(y[4], f32::NEG_INFINITY);
    }
}

#[test]
fn backward_matches_reference_and_finite_differences() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (i, &(rows, cols, scale, _)) in SHAPES.iter().enumerate() {
            let x = rand_vec(rows * cols, 100 + i as u64, scale.min(4.0));
            let g = rand_vec(rows * cols, 200 + i as u64, 1.0);
            for log in [false, true] {
                let mut y = vec![0.0; x.len()];
                softmax_forward(&x, &mut y, rows, cols, log).unwrap();
                let mut gi = vec![0.0; x.len()];
                softmax_backward(&y, &g, &mut gi, rows, cols, log).unwrap();
                // Analytic reference in f64 from the exact forward.
                let lp = ref_log_softmax(&x, cols);
                let mut want = Vec::with_capacity(x.len());
                for (lrow, grow) in lp.chunks(cols).zip(g.chunks(cols)) {
                    let p: Vec<f64> = lrow.iter().map(|v| v.exp()).collect();
                    if log {
                        let s: f64 = grow.iter().map(|&v| v as f64).sum();
                        want.extend(grow.iter().zip(&p).map(|(&d, &pj)| d as f64 - pj * s));
                    } else {
                        let dot: f64 = grow.iter().zip(&p).map(|(&d, &pj)| d as f64 * pj).sum();
                        want.extend(grow.iter().zip(&p).map(|(&d, &pj)| pj * (d as f64 - dot)));
                    }
                }
                let what = format!(
                    "{} backward {rows}x{cols} {lvl:?}",
                    if log { "log" } else { "" }
                );
                assert_close(&gi, &want, 1e-4, 2e-6, &what);
                // Finite differences on a few rows (all of them for small shapes).
                if rows * cols <= 2000 {
                    let loss = |xs: &[f32]| -> f64 {
                        let mut y = vec![0.0; xs.len()];
                        softmax_forward(xs, &mut y, rows, cols, log).unwrap();
                        y.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum()
                    };
                    let eps = 1e-2f32;
                    let at = (0..x.len()).step_by(1 + x.len() / 200);
                    check_fd(&what, &x, &gi, eps, at, loss);
                }
            }
        }
    }
}

/// Cross-entropy in f64, written from torch's definition (LossNLL.cpp,
/// cross_entropy_loss_label_smoothing): per-sample losses and the reduced loss.
fn ref_cross_entropy(
    p: &CrossEntropyParams,
    logits: &[f32],
    targets: &[i32],
    w: Option<&[f32]>,
) -> (Vec<f64>, f64) {
    let c = p.classes;
    let lp = ref_log_softmax(logits, c);
    let wc = |k: usize| w.map_or(1.0, |w| w[k] as f64);
    let mut per = Vec::new();
    let mut denom = 0.0;
    for (i, &t) in targets.iter().enumerate() {
        if t as i64 == p.ignore_index {
            per.push(0.0);
            continue;
        }
        let t = t as usize;
        let row = &lp[i * c..(i + 1) * c];
        let nll = -wc(t) * row[t];
        let smooth: f64 = (0..c).map(|k| -wc(k) * row[k]).sum();
        per.push((1.0 - p.label_smoothing) * nll + p.label_smoothing / c as f64 * smooth);
        denom += wc(t);
    }
    let total: f64 = per.iter().sum();
    let reduced = match p.reduction {
        Reduction::Mean => total / denom,
        Reduction::Sum | Reduction::None => total,
    };
    (per, reduced)
}

struct CeCase {
    batch: usize,
    classes: usize,
    ls: f64,
    weighted: bool,
    ignore_index: i64,
    ignored: &'static [usize],
    reduction: Reduction,
}

fn ce_cases() -> Vec<CeCase> {
    let mut v = Vec::new();
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for (ls, weighted, ignored) in [
            (0.0, false, &[][..]),
            (0.1, false, &[][..]),
            (0.0, true, &[1usize, 4][..]),
            (0.25, true, &[0usize, 3][..]),
            (1.0, true, &[2usize][..]),
        ] {
            v.push(CeCase {
                batch: 6,
                classes: 11,
                ls,
                weighted,
                ignore_index: -100,
                ignored,
                reduction,
            });
        }
        // ignore_index that is also a valid class; batch 1; one class; many rows (parallel).
        v.push(CeCase {
            batch: 5,
            classes: 4,
            ls: 0.2,
            weighted: true,
            ignore_index: 2,
            ignored: &[],
            reduction,
        });
        v.push(CeCase {
            batch: 1,
            classes: 3,
            ls: 0.1,
            weighted: false,
            ignore_index: -100,
            ignored: &[],
            reduction,
        });
        v.push(CeCase {
            batch: 2,
            classes: 1,
            ls: 0.3,
            weighted: true,
            ignore_index: -100,
            ignored: &[],
            reduction,
        });
        v.push(CeCase {
            batch: 3000,
            classes: 37,
            ls: 0.1,
            weighted: true,
            ignore_index: -1,
            ignored: &[5, 17, 2999],
            reduction,
        });
    }
    v
}

fn ce_inputs(k: usize, c: &CeCase) -> (CrossEntropyParams, Vec<f32>, Vec<i32>, Option<Vec<f32>>) {
    let mut p = CrossEntropyParams::new(c.batch, c.classes);
    p.label_smoothing = c.ls;
    p.ignore_index = c.ignore_index;
    p.reduction = c.reduction;
    let logits = rand_vec(c.batch * c.classes, 300 + k as u64, 3.0);
    let mut targets: Vec<i32> = (0..c.batch)
        .map(|i| ((i * 7 + k) % c.classes) as i32)
        .collect();
    for &i in c.ignored {
        targets[i] = c.ignore_index as i32;
    }
    let w = c.weighted.then(|| {
        rand_vec(c.classes, 400 + k as u64, 1.0)
            .into_iter()
            .map(|v| v.abs() + 0.1)
            .collect()
    });
    (p, logits, targets, w)
}

#[test]
fn cross_entropy_forward_matches_reference() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (k, c) in ce_cases().iter().enumerate() {
            let (p, logits, targets, w) = ce_inputs(k, c);
            let mut probs = vec![0.0; logits.len()];
            let mut losses = vec![f32::NAN; c.batch];
            let got =
                cross_entropy_forward(&p, &logits, &targets, w.as_deref(), &mut probs, &mut losses)
                    .unwrap();
            let (per, want) = ref_cross_entropy(&p, &logits, &targets, w.as_deref());
            let what = format!("case {k} {lvl:?}");
            assert_close(&losses, &per, 1e-5, 1e-6, &what);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 1e-6,
                "{what}: loss {got}, expected {want}"
            );
            let p_ref: Vec<f64> = ref_log_softmax(&logits, c.classes)
                .iter()
                .map(|v| v.exp())
                .collect();
            assert_close(&probs, &p_ref, 1e-5, 1e-9, &what);
        }
    }
}

/// d(loss)/d(logits) by central differences of the forward kernel. For mean/sum the loss is
/// g * reduced; for none it is sum_i g_i * loss_i, so every per-sample gradient is exercised.
#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for (k, c) in ce_cases().iter().enumerate() {
            let (p, logits, targets, w) = ce_inputs(k, c);
            let per_sample = c.reduction == Reduction::None;
            let g = if per_sample {
                rand_vec(c.batch, 500 + k as u64, 2.0)
            } else {
                vec![1.7]
            };
            let mut probs = vec![0.0; logits.len()];
            let mut losses = vec![0.0; c.batch];
            cross_entropy_forward(&p, &logits, &targets, w.as_deref(), &mut probs, &mut losses)
                .unwrap();
            let mut grad = vec![f32::NAN; logits.len()];
            cross_entropy_backward(&p, &probs, &targets, w.as_deref(), &g, &mut grad).unwrap();
            let loss = |x: &[f32]| -> f64 {
                let mut probs = vec![0.0; x.len()];
                let mut losses = vec![0.0; c.batch];
                let r =
                    cross_entropy_forward(&p, x, &targets, w.as_deref(), &mut probs, &mut losses)
                        .unwrap();
                if per_sample {
                    losses
                        .iter()
                        .zip(&g)
                        .map(|(&l, &d)| l as f64 * d as f64)
                        .sum()
                } else {
                    r * g[0] as f64
                }
            };
            let eps = 1e-2f32;
            let step = 1 + logits.len() / 300;
            for j in (0..logits.len()).step_by(step) {
                let mut xp = logits.clone();
                xp[j] += eps;
                let mut xm = logits.clone();
                xm[j] -= eps;
                let fd = (loss(&xp) - loss(&xm)) / (2.0 * eps as f64);
                let err = (fd - grad[j] as f64).abs();
                // The big case sums 3000 float32 losses: allow for their rounding.
                let atol = if c.batch > 100 && c.reduction != Reduction::Mean {
                    2e-2
                } else {
                    2e-3
                };
                assert!(
                    err <= atol + 1e-2 * fd.abs(),
                    "case {k} {lvl:?} at {j}: fd {fd}, backward {}",
                    grad[j]
                );
            }
            // Ignored samples get exactly zero gradient.
            for (i, &t) in targets.iter().enumerate() {
                if t as i64 == c.ignore_index {
                    assert!(grad[i * c.classes..(i + 1) * c.classes]
                        .iter()
                        .all(|&v| v == 0.0));
                }
            }
        }
    }
}

#[test]
fn cross_entropy_all_ignored_is_nan_with_zero_gradient_for_mean() {
    let _g = lock();
    let mut p = CrossEntropyParams::new(2, 3);
    let logits = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    let targets = [-100, -100];
    let mut probs = [0.0; 6];
    let mut losses = [1.0; 2];
    let l = cross_entropy_forward(&p, &logits, &targets, None, &mut probs, &mut losses).unwrap();
    assert!(l.is_nan());
    assert_eq!(losses, [0.0, 0.0]);
    let mut grad = [1.0; 6];
    cross_entropy_backward(&p, &probs, &targets, None, &[1.0], &mut grad).unwrap();
    assert_eq!(grad, [0.0; 6]);
    p.reduction = Reduction::Sum;
    let l = cross_entropy_forward(&p, &logits, &targets, None, &mut probs, &mut losses).unwrap();
    assert_eq!(l, 0.0);
}

#[test]
fn thread_count_and_simd_level_do_not_change_results() {
    let _g = lock();
    let c = CeCase {
        batch: 5000,
        classes: 23,
        ls: 0.1,
        weighted: true,
        ignore_index: -100,
        ignored: &[3, 4000],
        reduction: Reduction::Mean,
    };
    let (p, logits, targets, w) = ce_inputs(1, &c);
    let run = |lvl: SimdLevel, threads: usize| {
        simd::set_level(lvl);
        with_threads(threads, || {
            let mut probs = vec![0.0; logits.len()];
            let mut losses = vec![0.0; c.batch];
            let l =
                cross_entropy_forward(&p, &logits, &targets, w.as_deref(), &mut probs, &mut losses)
                    .unwrap();
            let mut grad = vec![0.0; logits.len()];
            cross_entropy_backward(&p, &probs, &targets, w.as_deref(), &[1.0], &mut grad).unwrap();
            let mut ls = vec![0.0; logits.len()];
            softmax_forward(&logits, &mut ls, c.batch, c.classes, true).unwrap();
            let mut lg = vec![0.0; logits.len()];
            softmax_backward(&ls, &probs, &mut lg, c.batch, c.classes, true).unwrap();
            (l, probs, grad, ls, lg)
        })
    };
    let a = run(simd::detected(), 1);
    let b = run(simd::detected(), 2);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert_eq!(a.3, b.3);
    assert_eq!(a.4, b.4);
    let s = run(SimdLevel::Scalar, 2);
    assert!((a.0 - s.0).abs() <= 1e-6 * s.0.abs());
    let close = |x: &[f32], y: &[f32], rtol: f32, atol: f32, what: &str| {
        for (i, (&u, &v)) in x.iter().zip(y).enumerate() {
            assert!(
                (u - v).abs() <= atol + rtol * v.abs(),
                "{what} at {i}: {u} vs {v}"
            );
        }
    };
    close(&a.1, &s.1, 1e-5, 1e-9, "probs");
    close(&a.2, &s.2, 1e-4, 1e-9, "grad");
    close(&a.3, &s.3, 1e-5, 1e-6, "log_softmax");
    close(&a.4, &s.4, 1e-4, 1e-6, "log_softmax backward");
}

#[test]
fn bad_arguments_are_errors() {
    let _g = lock();
    let mut y = [0.0; 6];
    let e = softmax_forward(&[0.0; 5], &mut y, 2, 3, false)
        .unwrap_err()
        .0;
    assert_eq!(e, "input: expected 6 elements, got 5");
    let e = softmax_forward(&[0.0; 6], &mut y, 0, 3, false)
        .unwrap_err()
        .0;
    assert_eq!(e, "rows: expected a positive size, got 0");
    let e = softmax_backward(&[0.0; 6], &[0.0; 6], &mut [0.0; 5], 2, 3, true)
        .unwrap_err()
        .0;
    assert_eq!(e, "gradInput: expected 6 elements, got 5");

    let p = CrossEntropyParams::new(2, 3);
    let logits = [0.0; 6];
    let mut probs = [0.0; 6];
    let mut losses = [0.0; 2];
    let fwd = |p: &CrossEntropyParams, t: &[i32], w: Option<&[f32]>| {
        cross_entropy_forward(p, &logits, t, w, &mut probs.clone(), &mut losses.clone())
            .unwrap_err()
            .0
    };
    assert_eq!(
        fwd(&p, &[0, 3], None),
        "targets[1]: expected a class index in [0, 3) or ignoreIndex (-100), got 3"
    );
    assert_eq!(
        fwd(&p, &[-1, 0], None),
        "targets[0]: expected a class index in [0, 3) or ignoreIndex (-100), got -1"
    );
    assert_eq!(fwd(&p, &[0], None), "targets: expected 2 elements, got 1");
    assert_eq!(
        fwd(&p, &[0, 1], Some(&[1.0; 2])),
        "classWeights: expected 3 elements, got 2"
    );
    let mut q = p;
    q.label_smoothing = 1.5;
    assert_eq!(
        fwd(&q, &[0, 1], None),
        "labelSmoothing: expected a number in [0, 1], got 1.5"
    );
    q.label_smoothing = f64::NAN;
    assert_eq!(
        fwd(&q, &[0, 1], None),
        "labelSmoothing: expected a number in [0, 1], got NaN"
    );
    assert_eq!(
        Reduction::parse("avg").unwrap_err().0,
        "reduction: expected one of 'mean', 'sum', 'none', got 'avg'"
    );
    cross_entropy_forward(&p, &logits, &[0, 2], None, &mut probs, &mut losses).unwrap();
    let e = cross_entropy_backward(&p, &probs, &[0, 2], None, &[1.0, 1.0], &mut [0.0; 6])
        .unwrap_err()
        .0;
    assert_eq!(e, "gradOutput: expected 1 elements, got 2");
    let mut q = p;
    q.reduction = Reduction::None;
    let e = cross_entropy_backward(&q, &probs, &[0, 2], None, &[1.0], &mut [0.0; 6])
        .unwrap_err()
        .0;
    assert_eq!(e, "gradOutput: expected 2 elements, got 1");
    let e = cross_entropy_backward(&p, &probs, &[0, 7], None, &[1.0], &mut [0.0; 6])
        .unwrap_err()
        .0;
    assert!(e.starts_with("targets[1]: expected a class index"), "{e}");
}
