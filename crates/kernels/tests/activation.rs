//! Activations against f64 references, finite-difference gradient checks, scalar vs AVX2 and
//! 1 vs 2 threads. Tests take LOCK because they flip the process-global SIMD level.
use ferroconv_kernels::activation::{
    activation_backward, activation_forward, relu_inplace, Activation,
};
use ferroconv_kernels::simd::{self, SimdLevel};

mod common;
use common::{assert_close_f64 as assert_close, check_fd, levels, lock, rand_vec, with_threads};

const KINDS: [Activation; 9] = [
    Activation::Relu,
    Activation::LeakyRelu {
        negative_slope: 0.01,
    },
    Activation::LeakyRelu {
        negative_slope: 0.2,
    },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Clip { min: 0.0, max: 6.0 },
    Activation::HardSigmoid {
        alpha: 1.0 / 6.0,
        beta: 0.5,
    },
    Activation::HardSwish,
    Activation::Silu,
];

/// Where the piecewise kinds have kinks (finite differences stay away from them).
const KINKS: [f32; 4] = [0.0, -3.0, 3.0, 6.0];

fn reference(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { negative_slope } => {
            if x > 0.0 {
                x
            } else {
                x * negative_slope as f64
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Clip { min, max } => x.max(min as f64).min(max as f64),
        Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
        Activation::HardSwish => {
            if x <= -3.0 {
                0.0
            } else if x >= 3.0 {
                x
            } else {
                x * (x + 3.0) / 6.0
            }
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Pow { exponent } => x.powf(exponent as f64),
    }
}

/// Inputs covering the interesting ranges: tiny, around the tanh polynomial switch (0.625),
/// saturation, and past the exp clamp.
fn awkward_inputs() -> Vec<f32> {
    let mut x = vec![
        0.0, -0.0, 1e-7, -1e-7, 1e-3, -1e-3, 0.5, 0.6249, 0.625, 0.6251, -0.625, 1.0, -1.0, 5.0,
        -5.0, 9.0, -9.0, 17.0, -17.0, 30.0, -30.0, 87.0, -87.0, 88.5, -88.5, 100.0, -100.0,
    ];
    x.extend(rand_vec(1000, 7, 6.0));
    x
}

#[test]
fn forward_matches_reference_on_every_simd_level() {
    let _g = lock();
    let x = awkward_inputs();
    for lvl in levels() {
        simd::set_level(lvl);
        for act in KINDS {
            for len in [0, 1, 7, 8, 9, 33, x.len()] {
                let xs = &x[x.len() - len..];
                let mut y = vec![f32::NAN; len];
                activation_forward(act, xs, &mut y).unwrap();
                let want: Vec<f64> = xs.iter().map(|&v| reference(act, v as f64)).collect();
                // float32 rounding of the result (and a 2-ulp exp on the AVX2 path); atol covers
                // sigmoid's denormal tail, which the AVX2 exp flushes to ~1e-38, and the
                // cancellation of alpha * x + beta (x + 3) near the hard kinds' lower kink.
                let hard = matches!(act, Activation::HardSigmoid { .. } | Activation::HardSwish);
                assert_close(
                    &y,
                    &want,
                    1e-6,
                    if hard { 1e-7 } else { 1e-30 },
                    &format!("{act:?} {lvl:?} len {len}"),
                );
            }
        }
    }
}

#[test]
fn nan_propagates_like_torch() {
    let _g = lock();
    for lvl in levels() {
        simd::set_level(lvl);
        for act in KINDS {
            let x = [f32::NAN, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY];
            let mut y = [0.0; 5];
            activation_forward(act, &x, &mut y).unwrap();
            assert!(y[0].is_nan(), "{act:?} {lvl:?}");
            let want = [
                reference(act, f64::INFINITY),
                reference(act, f64::NEG_INFINITY),
            ];
            assert_eq!(y[3] as f64, want[0], "{act:?} {lvl:?} +inf");
            if want[1].is_nan() {
                assert!(y[4].is_nan(), "{act:?} {lvl:?} -inf");
            } else {
                assert_eq!((y[4] as f64).abs(), want[1].abs(), "{act:?} {lvl:?} -inf");
            }
        }
    }
}

#[test]
fn relu_inplace_matches_forward() {
    let _g = lock();
    let x = rand_vec(100_001, 3, 2.0);
    let mut want = vec![0.0; x.len()];
    activation_forward(Activation::Relu, &x, &mut want).unwrap();
    let mut y = x.clone();
    relu_inplace(&mut y);
    assert_eq!(y, want);
}

#[test]
fn backward_matches_analytic_derivatives() {
    let _g = lock();
    let mut x = awkward_inputs();
    x.retain(|v| v.abs() < 50.0);
    let g = rand_vec(x.len(), 11, 1.0);
    for lvl in levels() {
        simd::set_level(lvl);
        for act in KINDS {
            let mut y = vec![0.0; x.len()];
            activation_forward(act, &x, &mut y).unwrap();
            let mut gi = vec![0.0; x.len()];
            activation_backward(act, &x, &y, &g, &mut gi).unwrap();
            let want: Vec<f64> = x
                .iter()
                .zip(&g)
                .map(|(&v, &d)| {
                    let v = v as f64;
                    let d = d as f64;
                    match act {
                        Activation::Relu => {
                            if v > 0.0 {
                                d
                            } else {
                                0.0
                            }
                        }
                        Activation::LeakyRelu { negative_slope } => {
                            if v > 0.0 {
                                d
                            } else {
                                d * negative_slope as f64
                            }
                        }
                        Activation::Sigmoid => {
                            let s = reference(act, v);
                            d * s * (1.0 - s)
                        }
                        Activation::Tanh => d * (1.0 - v.tanh().powi(2)),
                        Activation::Clip { min, max } => {
                            if v > min as f64 && v < max as f64 {
                                d
                            } else {
                                0.0
                            }
                        }
                        Activation::HardSigmoid { alpha, beta } => {
                            let t = alpha as f64 * v + beta as f64;
                            if t > 0.0 && t < 1.0 {
                                d * alpha as f64
                            } else {
                                0.0
                            }
                        }
                        Activation::HardSwish => {
                            if v < -3.0 {
                                0.0
                            } else if v <= 3.0 {
                                d * (v / 3.0 + 0.5)
                            } else {
                                d
                            }
                        }
                        Activation::Silu => {
                            let s = 1.0 / (1.0 + (-v).exp());
                            d * s * (1.0 + v * (1.0 - s))
                        }
                        Activation::Pow { exponent } => {
                            let e = exponent as f64;
                            d * e * v.powf(e - 1.0)
                        }
                    }
                })
                .collect();
            // Sigmoid/tanh derivatives come from the float32 output: 1 - y^2 loses digits as y
            // nears 1, hence the absolute tolerance.
            assert_close(&gi, &want, 1e-5, 3e-7, &format!("{act:?} {lvl:?}"));
        }
    }
}

/// d/dx of loss = sum(act(x) * w) by central differences on the float32 kernel, against the
/// backward kernel with grad_output = w.
#[test]
fn backward_matches_finite_differences() {
    let _g = lock();
    let n = 300;
    // Keep every input at least 0.05 from a kink so the difference quotient is valid.
    let x: Vec<f32> = rand_vec(n, 5, 4.0)
        .into_iter()
        .map(|v| {
            if KINKS.iter().any(|k| (v - k).abs() < 0.05) {
                v + 0.1
            } else {
                v
            }
        })
        .collect();
    let w = rand_vec(n, 6, 1.0);
    let eps = 1e-2f32;
    for lvl in levels() {
        simd::set_level(lvl);
        for act in KINDS {
            let loss = |xs: &[f32]| -> f64 {
                let mut y = vec![0.0; xs.len()];
                activation_forward(act, xs, &mut y).unwrap();
                y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
            };
            let mut y = vec![0.0; n];
            activation_forward(act, &x, &mut y).unwrap();
            let mut gi = vec![0.0; n];
            activation_backward(act, &x, &y, &w, &mut gi).unwrap();
            check_fd(&format!("{act:?} {lvl:?}"), &x, &gi, eps, 0..n, loss);
        }
    }
}

#[test]
fn scalar_and_avx2_agree_and_threads_do_not_matter() {
    let _g = lock();
    let x = rand_vec(200_003, 9, 8.0);
    let g = rand_vec(x.len(), 10, 1.0);
    for act in KINDS {
        let run = |lvl: SimdLevel, threads: usize| {
            simd::set_level(lvl);
            with_threads(threads, || {
                let mut y = vec![0.0; x.len()];
                activation_forward(act, &x, &mut y).unwrap();
                let mut gi = vec![0.0; x.len()];
                activation_backward(act, &x, &y, &g, &mut gi).unwrap();
                (y, gi)
            })
        };
        let (y1, g1) = run(simd::detected(), 1);
        let (y2, g2) = run(simd::detected(), 2);
        assert_eq!(y1, y2, "{act:?}: thread count changed the forward");
        assert_eq!(g1, g2, "{act:?}: thread count changed the backward");
        let (ys, gs) = run(SimdLevel::Scalar, 2);
        for i in 0..x.len() {
            assert!(
                (ys[i] - y1[i]).abs() <= 1e-6 * ys[i].abs() + 1e-30,
                "{act:?} forward at {i}: scalar {} vs avx2 {}",
                ys[i],
                y1[i]
            );
            assert!(
                (gs[i] - g1[i]).abs() <= 1e-5 * gs[i].abs() + 3e-7,
                "{act:?} backward at {i}: scalar {} vs avx2 {}",
                gs[i],
                g1[i]
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let _g = lock();
    let err = |r: ferroconv_kernels::Result<()>| r.unwrap_err().0;
    assert_eq!(
        err(activation_forward(
            Activation::Relu,
            &[0.0; 4],
            &mut [0.0; 3]
        )),
        "output: expected 4 elements, got 3"
    );
    assert_eq!(
        Activation::parse("gelu", None, None).unwrap_err().0,
        "kind: expected one of 'relu', 'leaky_relu', 'sigmoid', 'tanh', 'clip', 'hardsigmoid', \
         'hardswish', 'silu', 'pow', got 'gelu'"
    );
    assert_eq!(
        Activation::parse("clip", Some(2.0), Some(1.0))
            .unwrap_err()
            .0,
        "clip: alpha (the minimum, 2) is above beta (the maximum, 1)"
    );
    assert_eq!(
        Activation::parse("clip", Some(f64::NEG_INFINITY), None).unwrap(),
        Activation::Clip {
            min: f32::NEG_INFINITY,
            max: f32::INFINITY
        }
    );
    assert_eq!(
        Activation::parse("hardsigmoid", Some(f64::INFINITY), None)
            .unwrap_err()
            .0,
        "alpha: expected a finite number, got inf"
    );
    assert_eq!(
        Activation::parse("leaky_relu", Some(f64::NAN), None)
            .unwrap_err()
            .0,
        "alpha: expected a finite number, got NaN"
    );
    assert_eq!(
        Activation::parse("leaky_relu", None, None).unwrap(),
        Activation::LeakyRelu {
            negative_slope: 0.01
        }
    );
    assert_eq!(
        Activation::parse("leaky_relu", Some(0.3), None).unwrap(),
        Activation::LeakyRelu {
            negative_slope: 0.3
        }
    );
    let mut gi = [0.0; 4];
    assert_eq!(
        err(activation_backward(
            Activation::Relu,
            &[0.0; 3],
            &[],
            &[0.0; 4],
            &mut gi
        )),
        "input: expected 4 elements, got 3"
    );
    assert_eq!(
        err(activation_backward(
            Activation::Sigmoid,
            &[0.0; 4],
            &[0.0; 3],
            &[0.0; 4],
            &mut gi
        )),
        "output: expected 4 elements, got 3"
    );
    assert_eq!(
        err(activation_backward(
            Activation::Tanh,
            &[0.0; 2],
            &[0.0; 4],
            &[0.0; 4],
            &mut gi
        )),
        "input: expected 4 elements (or 0: tanh backward does not read it), got 2"
    );
    assert_eq!(
        err(activation_backward(
            Activation::Tanh,
            &[],
            &[0.0; 4],
            &[0.0; 4],
            &mut [0.0; 5]
        )),
        "gradInput: expected 4 elements, got 5"
    );
    // The buffer a kind does not read may be empty.
    activation_backward(Activation::Relu, &[1.0; 4], &[], &[1.0; 4], &mut gi).unwrap();
    assert_eq!(gi, [1.0; 4]);
    activation_backward(Activation::Sigmoid, &[], &[0.5; 4], &[1.0; 4], &mut gi).unwrap();
    assert_eq!(gi, [0.25; 4]);
}

/// Pow on positive inputs (a fractional power of a negative number is NaN, as in torch), on
/// every SIMD level: forward against f64, backward against finite differences, 1 vs 2 threads,
/// and
/// torch's edge cases (exponent 0 has a zero gradient, 0 ^ -1 is inf, (-2) ^ 2 is 4).
#[test]
fn pow_matches_reference_and_finite_differences() {
    let _g = lock();
    let x: Vec<f32> = rand_vec(500, 21, 1.0)
        .iter()
        .map(|v| v.abs() * 3.0 + 0.1)
        .collect();
    let w = rand_vec(x.len(), 22, 1.0);
    for (lvl, exponent) in levels()
        .into_iter()
        .flat_map(|l| [2.0f32, 0.5, -0.75, 3.0, 1.0, -2.5].map(|e| (l, e)))
    {
        simd::set_level(lvl);
        let act = Activation::parse("pow", Some(exponent as f64), None).unwrap();
        let mut y = vec![0.0; x.len()];
        activation_forward(act, &x, &mut y).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| reference(act, v as f64)).collect();
        assert_close(&y, &want, 1e-6, 0.0, &format!("pow {exponent} {lvl:?}"));
        let mut gi = vec![0.0; x.len()];
        activation_backward(act, &x, &y, &w, &mut gi).unwrap();
        let loss = |xs: &[f32]| -> f64 {
            let mut y = vec![0.0; xs.len()];
            activation_forward(act, xs, &mut y).unwrap();
            y.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        check_fd(
            &format!("pow {exponent} {lvl:?}"),
            &x,
            &gi,
            1e-3,
            0..x.len(),
            loss,
        );
    }
    // Long enough to be split across threads: 1 and 2 threads give the same bits.
    let big: Vec<f32> = rand_vec(200_003, 23, 1.0)
        .iter()
        .map(|v| v.abs() + 0.01)
        .collect();
    let act = Activation::Pow { exponent: -0.75 };
    let run = |threads: usize| {
        with_threads(threads, || {
            let mut y = vec![0.0; big.len()];
            activation_forward(act, &big, &mut y).unwrap();
            let mut gi = vec![0.0; big.len()];
            activation_backward(act, &big, &y, &big, &mut gi).unwrap();
            (y, gi)
        })
    };
    assert_eq!(run(1), run(2), "pow: the thread count changed the result");
    let run = |e: f32, x: f32| {
        let act = Activation::Pow { exponent: e };
        let (mut y, mut g) = ([0.0f32], [0.0f32]);
        activation_forward(act, &[x], &mut y).unwrap();
        activation_backward(act, &[x], &y, &[1.0], &mut g).unwrap();
        (y[0], g[0])
    };
    assert_eq!(run(0.0, 0.0), (1.0, 0.0));
    assert_eq!(run(-1.0, 0.0).0, f32::INFINITY);
    assert_eq!(run(2.0, -2.0), (4.0, -4.0));
    assert!(run(0.5, -2.0).0.is_nan());
    assert_eq!(
        Activation::parse("pow", None, None).unwrap_err().0,
        "pow: alpha (the exponent) is required"
    );
}
