//! SGD step: against a reference that mirrors the TypeScript update (src/optim/float32.ts)
//! operation by operation, bit for bit; scalar vs AVX2 and 1 vs 2 threads bit for bit; bad input.
use ferroconv_kernels::optim::{sgd_step, SgdParams};
use ferroconv_kernels::simd;

mod common;
use common::{levels, lock};

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
    let pool = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    };
    for p in cases() {
        let one = pool(1).install(|| run(&p, 200_001));
        let two = pool(2).install(|| run(&p, 200_001));
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
