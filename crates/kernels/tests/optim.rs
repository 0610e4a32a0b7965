//! Optimizer steps: against references that mirror the TypeScript updates (src/optim/float32.ts)
//! operation by operation, bit for bit; scalar vs AVX2 and 1 vs 2 threads bit for bit; bad input.
use ferroconv_kernels::optim::{
    adadelta_step, adagrad_step, adam_step, rmsprop_step, sgd_step, AdadeltaParams, AdagradParams,
    AdamParams, RmspropParams, SgdParams,
};
use ferroconv_kernels::simd::{self, SimdLevel};

mod common;
use common::{levels, lock, with_threads};

/// Deterministic values in about [-2, 2], with some exact zeros and tiny values.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v = ((i as f32 + 1.0) * 0.618 * (seed as f32 + 1.3)).sin() * 2.0;
            match i % 97 {
                0 => 0.0,
                1 => v * 1e-30,
                _ => v,
            }
        })
        .collect()
}

fn f32r(x: f64) -> f64 {
    x as f32 as f64
}

/// The TypeScript loop: JavaScript doubles with Math.fround where torch rounds.
fn reference(p: &SgdParams, param: &mut [f32], grad: &[f32], buf: Option<&mut [f32]>) {
    let add_scaled = |x: f64, a: f64, y: f64| f32r(x + f32r(a) * y);
    let mul_scalar = |x: f64, s: f64| f32r(x * f32r(s));
    let keep = 1.0 - p.dampening;
    let mut buf = buf;
    for i in 0..param.len() {
        let mut d = if p.maximize {
            -grad[i] as f64
        } else {
            grad[i] as f64
        };
        if p.weight_decay != 0.0 {
            d = add_scaled(d, p.weight_decay, param[i] as f64);
        }
        if let Some(b) = buf.as_deref_mut() {
            b[i] = if p.first_step {
                d as f32
            } else {
                add_scaled(mul_scalar(b[i] as f64, p.momentum), keep, d) as f32
            };
            d = if p.nesterov {
                add_scaled(d, p.momentum, b[i] as f64)
            } else {
                b[i] as f64
            };
        }
        param[i] = add_scaled(param[i] as f64, -p.lr, d) as f32;
    }
}

fn params(momentum: f64, nesterov: bool, first_step: bool) -> SgdParams {
    SgdParams {
        lr: 0.0123,
        weight_decay: 3e-4,
        momentum,
        dampening: if nesterov { 0.0 } else { 0.1 },
        nesterov,
        maximize: false,
        first_step,
    }
}

fn cases() -> Vec<SgdParams> {
    let mut v = vec![
        params(0.0, false, false),
        params(0.9, false, true),
        params(0.9, false, false),
        params(0.9, true, false),
    ];
    v.push(SgdParams {
        maximize: true,
        weight_decay: 0.0,
        ..params(0.5, false, false)
    });
    v
}

/// Runs one step with the kernel; returns (param, buffer).
fn run(p: &SgdParams, n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut param = values(n, 1);
    let grad = values(n, 2);
    let mut buf = values(n, 3);
    let b = (p.momentum != 0.0).then_some(&mut buf[..]);
    sgd_step(p, &mut param, &grad, b).unwrap();
    (param, buf)
}

#[test]
fn matches_the_typescript_rounding_bit_for_bit() {
    let _g = lock();
    // 100_003: several parallel chunks plus a ragged tail.
    for n in [1, 7, 100_003] {
        for p in cases() {
            for lvl in levels() {
                simd::set_level(lvl);
                let (got_p, got_b) = run(&p, n);
                let mut want_p = values(n, 1);
                let grad = values(n, 2);
                let mut want_b = values(n, 3);
                let b = (p.momentum != 0.0).then_some(&mut want_b[..]);
                reference(&p, &mut want_p, &grad, b);
                assert_eq!(
                    got_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want_p.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "param, n {n}, {p:?}, {lvl:?}"
                );
                assert_eq!(got_b, want_b, "buffer, n {n}, {p:?}, {lvl:?}");
            }
        }
    }
}

#[test]
fn same_bits_on_one_and_two_threads() {
    let _g = lock();
    for p in cases() {
        let one = with_threads(1, || run(&p, 200_001));
        let two = with_threads(2, || run(&p, 200_001));
        assert_eq!(one, two, "{p:?}");
    }
}

#[test]
fn descends_the_gradient() {
    // A plain step moves against the gradient by lr * g.
    let mut param = vec![1.0f32, -1.0];
    let p = SgdParams {
        lr: 0.5,
        weight_decay: 0.0,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        maximize: false,
        first_step: false,
    };
    sgd_step(&p, &mut param, &[2.0, -4.0], None).unwrap();
    assert_eq!(param, vec![0.0, 1.0]);
}

#[test]
fn bad_input_is_an_error() {
    let ok = params(0.9, false, false);
    let err = |p: &SgdParams, n: usize, g: usize, b: Option<usize>| {
        let mut param = vec![0.0f32; n];
        let grad = vec![0.0f32; g];
        let mut buf = vec![0.0f32; b.unwrap_or(0)];
        sgd_step(p, &mut param, &grad, b.map(|_| &mut buf[..]))
            .unwrap_err()
            .0
    };
    assert_eq!(err(&ok, 4, 3, Some(4)), "grad: expected 4 elements, got 3");
    assert_eq!(
        err(&ok, 4, 4, Some(5)),
        "momentumBuffer: expected 4 elements, got 5"
    );
    assert_eq!(
        err(&ok, 4, 4, None),
        "momentumBuffer: expected 4 elements (momentum > 0), got none"
    );
    let plain = params(0.0, false, false);
    assert_eq!(
        err(&plain, 4, 4, Some(4)),
        "momentumBuffer: expected none (momentum is 0), got a buffer"
    );
    let neg = SgdParams { lr: -1.0, ..ok };
    assert_eq!(
        err(&neg, 4, 4, Some(4)),
        "lr: expected a non-negative number, got -1"
    );
    let nan = SgdParams {
        momentum: f64::NAN,
        ..ok
    };
    assert!(err(&nan, 4, 4, Some(4)).starts_with("momentum: expected a non-negative number"));
    let nest = SgdParams {
        nesterov: true,
        ..ok
    };
    assert!(err(&nest, 4, 4, Some(4)).starts_with("nesterov: needs momentum > 0 and dampening 0"));
}

/// `values` with NaN, infinities, denormals, signed zeros and huge values sprinkled in.
fn awkward(n: usize, seed: u32) -> Vec<f32> {
    const SPECIAL: [f32; 10] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -1e-45,
        0.0,
        -0.0,
        3e38,
        -3e38,
        1.2e-38,
    ];
    let mut v = values(n, seed);
    for (k, &x) in SPECIAL.iter().enumerate() {
        let i = (k * 7 + seed as usize * 3) % (n * 3);
        if i < n {
            v[i] = x;
        }
    }
    v
}

/// Bits, with every NaN the same (JavaScript does not keep NaN payloads or signs).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
        .collect()
}

/// The Adam/AdamW loop of src/optim/adam.ts: JavaScript doubles with Math.fround.
fn adam_reference(p: &AdamParams, param: &mut [f32], grad: &[f32], st: &mut [Vec<f32>; 3]) {
    let add_scaled = |x: f64, a: f64, y: f64| f32r(x + f32r(a) * y);
    let mul_scalar = |x: f64, s: f64| f32r(x * f32r(s));
    let addcmul = |x: f64, v: f64, t1: f64, t2: f64| f32r(x + f32r(f32r(v) * t1) * t2);
    let addcdiv = |x: f64, v: f64, t1: f64, t2: f64| f32r(x + f32r(f32r(f32r(v) * t1) / t2));
    let neg_step_size = -(p.lr / p.bias_correction1);
    let bc2_sqrt = p.bias_correction2.sqrt();
    let keep = 1.0 - p.lr * p.weight_decay;
    let [m, v, mx] = st;
    for i in 0..param.len() {
        let mut g = if p.maximize {
            -grad[i] as f64
        } else {
            grad[i] as f64
        };
        let mut pv = param[i] as f64;
        if p.decoupled {
            pv = mul_scalar(pv, keep);
        } else if p.weight_decay != 0.0 {
            g = add_scaled(g, p.weight_decay, pv);
        }
        m[i] = add_scaled(mul_scalar(m[i] as f64, p.beta1), 1.0 - p.beta1, g) as f32;
        v[i] = addcmul(mul_scalar(v[i] as f64, p.beta2), 1.0 - p.beta2, g, g) as f32;
        let mut second = v[i];
        if p.amsgrad {
            if second > mx[i] || second.is_nan() {
                mx[i] = second;
            }
            second = mx[i];
        }
        let denom = f32r(f32r(f32r((second as f64).sqrt()) / f32r(bc2_sqrt)) + f32r(p.eps));
        param[i] = addcdiv(pv, neg_step_size, m[i] as f64, denom) as f32;
    }
}

fn adam_cases() -> Vec<AdamParams> {
    let base = AdamParams {
        lr: 1e-3,
        weight_decay: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        amsgrad: false,
        maximize: false,
        decoupled: false,
        bias_correction1: 1.0 - 0.9f64.powi(3),
        bias_correction2: 1.0 - 0.999f64.powi(3),
    };
    vec![
        base,
        AdamParams {
            amsgrad: true,
            weight_decay: 1e-2,
            ..base
        },
        AdamParams {
            decoupled: true,
            weight_decay: 1e-2,
            maximize: true,
            ..base
        },
        AdamParams {
            decoupled: true,
            amsgrad: true,
            weight_decay: 0.5,
            lr: 0.3,
            eps: 0.0,
            ..base
        },
    ]
}

/// Three Adam steps with the kernel on awkward values; returns param and the three buffers.
fn run_adam(p: &AdamParams, n: usize) -> (Vec<f32>, [Vec<f32>; 3]) {
    let mut param = awkward(n, 1);
    let mut st = [
        awkward(n, 3),
        awkward(n, 4).iter().map(|x| x * x).collect(),
        vec![0.0; n],
    ];
    for s in 0..3 {
        let grad = awkward(n, 10 + s);
        let [m, v, mx] = &mut st;
        let mx = p.amsgrad.then_some(&mut mx[..]);
        adam_step(p, &mut param, &grad, m, v, mx).unwrap();
    }
    (param, st)
}

#[test]
fn adam_matches_the_typescript_rounding_bit_for_bit() {
    let _g = lock();
    for n in [1, 7, 13, 100_003] {
        for p in adam_cases() {
            let mut want_p = awkward(n, 1);
            let mut want = [
                awkward(n, 3),
                awkward(n, 4).iter().map(|x| x * x).collect(),
                vec![0.0; n],
            ];
            for s in 0..3 {
                adam_reference(&p, &mut want_p, &awkward(n, 10 + s), &mut want);
            }
            for lvl in levels() {
                simd::set_level(lvl);
                let (got_p, got) = run_adam(&p, n);
                assert_eq!(bits(&got_p), bits(&want_p), "param, n {n}, {p:?}, {lvl:?}");
                for k in 0..3 {
                    assert_eq!(
                        bits(&got[k]),
                        bits(&want[k]),
                        "buffer {k}, n {n}, {p:?}, {lvl:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn adam_same_bits_on_one_and_two_threads() {
    let _g = lock();
    for p in adam_cases() {
        let one = with_threads(1, || run_adam(&p, 200_001));
        let two = with_threads(2, || run_adam(&p, 200_001));
        assert_eq!(bits(&one.0), bits(&two.0), "{p:?}");
    }
}

#[test]
fn adam_bad_input_is_an_error() {
    let ok = adam_cases()[0];
    let err = |p: &AdamParams, g: usize, v: usize, mx: Option<usize>| {
        let (mut param, grad, mut m, mut vv) =
            (vec![0.0; 4], vec![0.0; g], vec![0.0; 4], vec![0.0; v]);
        let mut b = vec![0.0f32; mx.unwrap_or(0)];
        adam_step(
            p,
            &mut param,
            &grad,
            &mut m,
            &mut vv,
            mx.map(|_| &mut b[..]),
        )
        .unwrap_err()
        .0
    };
    assert_eq!(err(&ok, 3, 4, None), "grad: expected 4 elements, got 3");
    assert_eq!(err(&ok, 4, 5, None), "expAvgSq: expected 4 elements, got 5");
    let ams = AdamParams {
        amsgrad: true,
        ..ok
    };
    assert_eq!(
        err(&ams, 4, 4, Some(3)),
        "maxExpAvgSq: expected 4 elements, got 3"
    );
    assert_eq!(
        err(&ams, 4, 4, None),
        "maxExpAvgSq: expected 4 elements (amsgrad), got none"
    );
    assert_eq!(
        err(&ok, 4, 4, Some(4)),
        "maxExpAvgSq: expected none (amsgrad is off), got a buffer"
    );
    let beta = AdamParams { beta1: 1.0, ..ok };
    assert_eq!(
        err(&beta, 4, 4, None),
        "betas[0]: expected a number in [0, 1), got 1"
    );
    let bc = AdamParams {
        bias_correction2: f64::NAN,
        ..ok
    };
    assert_eq!(
        err(&bc, 4, 4, None),
        "biasCorrection2: expected a number in (0, 1], got NaN"
    );
}

/// Three steps of RMSprop (centered, momentum), Adagrad and Adadelta on awkward values: every
/// output buffer, concatenated. The bit-for-bit comparison with the former TypeScript loops is
/// test/optim_native.test.ts; here the SIMD paths and thread counts must agree with each other.
fn run_others(n: usize) -> Vec<u32> {
    let rms = RmspropParams {
        lr: 0.01,
        weight_decay: 1e-2,
        alpha: 0.9,
        eps: 1e-8,
        momentum: 0.5,
        centered: true,
        maximize: false,
    };
    let ada = AdagradParams {
        lr: 0.1,
        weight_decay: 0.0,
        lr_decay: 0.01,
        eps: 1e-10,
        maximize: true,
        step: 1,
    };
    let delta = AdadeltaParams {
        lr: 1.0,
        weight_decay: 1e-3,
        rho: 0.9,
        eps: 1e-6,
        maximize: false,
    };
    let mut p = [awkward(n, 1), awkward(n, 1), awkward(n, 1)];
    let mut st: Vec<Vec<f32>> = (0..6)
        .map(|k| awkward(n, 20 + k).iter().map(|x| x * x).collect())
        .collect();
    for s in 0..3u32 {
        let grad = awkward(n, 10 + s);
        let [p0, p1, p2] = &mut p;
        let [a, b, c, d, e, f] = &mut st[..] else {
            unreachable!()
        };
        rmsprop_step(&rms, p0, &grad, a, Some(b), Some(c)).unwrap();
        let ada = AdagradParams {
            step: s as u64 + 1,
            ..ada
        };
        adagrad_step(&ada, p1, &grad, d).unwrap();
        adadelta_step(&delta, p2, &grad, e, f).unwrap();
    }
    p.iter().chain(st.iter()).flat_map(|v| bits(v)).collect()
}

#[test]
fn rmsprop_adagrad_adadelta_same_bits_on_every_path() {
    let _g = lock();
    for n in [1, 13, 100_003] {
        simd::set_level(SimdLevel::Scalar);
        let scalar = run_others(n);
        simd::set_level(simd::detected());
        assert_eq!(scalar, run_others(n), "n {n}");
    }
    assert_eq!(
        with_threads(1, || run_others(200_001)),
        with_threads(2, || run_others(200_001))
    );
}

#[test]
fn rmsprop_adagrad_adadelta_bad_input_is_an_error() {
    let rms = RmspropParams {
        lr: 0.01,
        weight_decay: 0.0,
        alpha: 0.99,
        eps: 1e-8,
        momentum: 0.0,
        centered: false,
        maximize: false,
    };
    let (mut p, g, mut a, mut b) = (
        vec![0.0f32; 4],
        vec![0.0f32; 4],
        vec![0.0f32; 4],
        vec![0.0f32; 4],
    );
    let e = rmsprop_step(&rms, &mut p, &g, &mut a, Some(&mut b), None).unwrap_err();
    assert_eq!(e.0, "gradAvg: expected none (not centered), got a buffer");
    let e = rmsprop_step(
        &RmspropParams {
            momentum: 0.9,
            ..rms
        },
        &mut p,
        &g,
        &mut a,
        None,
        None,
    )
    .unwrap_err();
    assert_eq!(
        e.0,
        "momentumBuffer: expected 4 elements (momentum > 0), got none"
    );
    let ada = AdagradParams {
        lr: 0.1,
        weight_decay: 0.0,
        lr_decay: f64::NAN,
        eps: 1e-10,
        maximize: false,
        step: 1,
    };
    let e = adagrad_step(&ada, &mut p, &g, &mut a).unwrap_err();
    assert_eq!(e.0, "lrDecay: expected a non-negative number, got NaN");
    let delta = AdadeltaParams {
        lr: 1.0,
        weight_decay: 0.0,
        rho: 0.9,
        eps: 1e-6,
        maximize: false,
    };
    let e = adadelta_step(&delta, &mut p, &g[..3], &mut a, &mut b).unwrap_err();
    assert_eq!(e.0, "grad: expected 4 elements, got 3");
}
