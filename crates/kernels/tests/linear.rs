//! Linear layer against a naive f64 loop (forward and all three gradients), finite-difference
//! checks, 1 vs 2 threads, optional outputs, and argument errors.
use ferroconv_kernels::linear::{linear_backward, linear_forward};

mod common;
use common::smooth as fill;

fn close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what} at {i}: {a} vs {b}"
        );
    }
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 300, 70),
    (3, 7, 5),
    (4, 33, 1),
    (17, 129, 67),
    (64, 256, 10),
    (2, 1000, 513),
];

struct Case {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    /// linear_backward for gradOutput `dy`, computing the gradients `want` marks (input, weight,
    /// bias); each starts NaN so a missed write shows, and the ones not asked for come back empty.
    fn backward(&self, (batch, in_f, out_f): Dims, dy: &[f32], want: [bool; 3]) -> [Vec<f32>; 3] {
        let lens = [self.x.len(), self.w.len(), self.b.len()];
        let mut g = [0, 1, 2].map(|k| vec![f32::NAN; if want[k] { lens[k] } else { 0 }]);
        let [gx, gw, gb] = g.each_mut().map(|v| (!v.is_empty()).then_some(&mut v[..]));
        linear_backward(batch, in_f, out_f, &self.x, &self.w, dy, gx, gw, gb).unwrap();
        g
    }
}

/// (batch, in features, out features)
type Dims = (usize, usize, usize);

fn inputs(batch: usize, in_f: usize, out_f: usize) -> Case {
    Case {
        x: fill(batch * in_f, 1),
        w: fill(out_f * in_f, 2),
        b: fill(out_f, 3),
        dy: fill(batch * out_f, 4),
    }
}

#[test]
fn matches_naive_loops_on_1_and_2_threads() {
    for &(batch, in_f, out_f) in SHAPES {
        let c = inputs(batch, in_f, out_f);
        let mut y_want = vec![0f64; batch * out_f];
        let mut gx_want = vec![0f64; batch * in_f];
        let mut gw_want = vec![0f64; out_f * in_f];
        let mut gb_want = vec![0f64; out_f];
        for b in 0..batch {
            for o in 0..out_f {
                let mut s = c.b[o] as f64;
                for i in 0..in_f {
                    s += c.x[b * in_f + i] as f64 * c.w[o * in_f + i] as f64;
                    let g = c.dy[b * out_f + o] as f64;
                    gx_want[b * in_f + i] += g * c.w[o * in_f + i] as f64;
                    gw_want[o * in_f + i] += g * c.x[b * in_f + i] as f64;
                }
                y_want[b * out_f + o] = s;
                gb_want[o] += c.dy[b * out_f + o] as f64;
            }
        }
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let tag = format!("{batch}x{in_f}->{out_f} on {threads} threads");
                let mut y = vec![f32::NAN; batch * out_f];
                linear_forward(batch, in_f, out_f, &c.x, &c.w, Some(&c.b), &mut y).unwrap();
                close(&y, &y_want, &format!("{tag} forward"));
                let [gx, gw, gb] = c.backward((batch, in_f, out_f), &c.dy, [true; 3]);
                close(&gx, &gx_want, &format!("{tag} grad input"));
                close(&gw, &gw_want, &format!("{tag} grad weight"));
                close(&gb, &gb_want, &format!("{tag} grad bias"));
            });
        }
    }
}

#[test]
fn without_bias_and_with_some_gradients_skipped() {
    let (batch, in_f, out_f) = (5, 9, 4);
    let c = inputs(batch, in_f, out_f);
    let mut with_zero_bias = vec![0.0; batch * out_f];
    let zeros = vec![0.0; out_f];
    linear_forward(
        batch,
        in_f,
        out_f,
        &c.x,
        &c.w,
        Some(&zeros),
        &mut with_zero_bias,
    )
    .unwrap();
    let mut y = vec![f32::NAN; batch * out_f];
    linear_forward(batch, in_f, out_f, &c.x, &c.w, None, &mut y).unwrap();
    assert_eq!(y, with_zero_bias);
    let [_, gw, _] = c.backward((batch, in_f, out_f), &c.dy, [false, true, false]);
    assert!(gw.iter().all(|v| v.is_finite()));
}

/// loss = sum(linear(x) * r): central differences against the analytic gradients.
#[test]
fn finite_differences_agree_with_backward() {
    let (batch, in_f, out_f) = (3, 11, 6);
    let c = inputs(batch, in_f, out_f);
    let r = &c.dy;
    let loss = |x: &[f32], w: &[f32], b: &[f32]| {
        let mut y = vec![0.0; batch * out_f];
        linear_forward(batch, in_f, out_f, x, w, Some(b), &mut y).unwrap();
        y.iter()
            .zip(r)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>()
    };
    let [gx, gw, gb] = c.backward((batch, in_f, out_f), r, [true; 3]);
    let eps = 1e-2f32;
    for which in 0..3 {
        let grad = [&gx, &gw, &gb][which];
        for i in 0..grad.len() {
            let eval = |d: f32| {
                let (mut x, mut w, mut b) = (c.x.clone(), c.w.clone(), c.b.clone());
                [&mut x, &mut w, &mut b][which][i] += d;
                loss(&x, &w, &b)
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            let an = grad[i] as f64;
            assert!(
                (fd - an).abs() <= 1e-3 * (1.0 + an.abs()),
                "d/d{}[{i}]: finite difference {fd}, backward {an}",
                ["input", "weight", "bias"][which]
            );
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let x = vec![0.0; 6];
    let w = vec![0.0; 12];
    let mut y = vec![0.0; 8];
    let err = linear_forward(2, 3, 4, &x[..5], &w, None, &mut y).unwrap_err();
    assert_eq!(err.0, "input: expected 6 elements, got 5");
    let err = linear_forward(2, 3, 4, &x, &w[..11], None, &mut y).unwrap_err();
    assert_eq!(err.0, "weight: expected 12 elements, got 11");
    let err = linear_forward(2, 3, 4, &x, &w, Some(&[0.0; 3]), &mut y).unwrap_err();
    assert_eq!(err.0, "bias: expected 4 elements, got 3");
    let err = linear_forward(2, 3, 4, &x, &w, None, &mut y[..7]).unwrap_err();
    assert_eq!(err.0, "output: expected 8 elements, got 7");
    let err = linear_forward(0, 3, 4, &x, &w, None, &mut y).unwrap_err();
    assert_eq!(err.0, "batch: expected a positive size, got 0");
    let err = linear_forward(usize::MAX, 3, 4, &x, &w, None, &mut y).unwrap_err();
    assert!(err.0.contains("too many elements"), "{}", err.0);
    let mut gx = vec![0.0; 5];
    let err = linear_backward(2, 3, 4, &x, &w, &y, Some(&mut gx), None, None).unwrap_err();
    assert_eq!(err.0, "gradInput: expected 6 elements, got 5");
    let err = linear_backward(2, 3, 4, &x, &w, &y[..3], None, None, None).unwrap_err();
    assert_eq!(err.0, "gradOutput: expected 8 elements, got 3");
    let mut gb = vec![0.0; 5];
    let err = linear_backward(2, 3, 4, &x, &w, &y, None, None, Some(&mut gb)).unwrap_err();
    assert_eq!(err.0, "gradBias: expected 4 elements, got 5");
}

/// Batches of 2 to 8 read the weights in place (four weight rows a tile, blocks of 512 of the
/// shared dimension, A copied out with padded rows): every SIMD level, 1 and 2 threads, odd
/// batches, weight rows not a multiple of four, several blocks with a short last one, a shared
/// dimension of 1024 (the padded copy's reason) and one shorter than a vector, against f64 sums;
/// the thread count does not change a bit, and without a bias the NaN the output held does not
/// leak.
#[test]
fn small_batches_on_every_level() {
    let held = common::lock();
    let shapes = [
        (2, 3, 5),
        (3, 1040, 37),
        (5, 513, 130),
        (6, 64, 4),
        (7, 1024, 9),
        (8, 2048, 70),
        (8, 17, 1),
    ];
    common::for_each_level(&held, |lvl| {
        for &(batch, in_f, out_f) in &shapes {
            let c = inputs(batch, in_f, out_f);
            let runs = [1, 2].map(|threads| {
                common::with_threads(threads, || {
                    let mut y = vec![f32::NAN; batch * out_f];
                    linear_forward(batch, in_f, out_f, &c.x, &c.w, None, &mut y).unwrap();
                    y
                })
            });
            let tag = format!("{batch}x{in_f}->{out_f} at {}", lvl.name());
            assert!(
                runs[0]
                    .iter()
                    .zip(&runs[1])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{tag}: 1 and 2 threads differ"
            );
            for b in 0..batch {
                for o in 0..out_f {
                    let (mut s, mut mag) = (0f64, 0f64);
                    for i in 0..in_f {
                        let t = c.x[b * in_f + i] as f64 * c.w[o * in_f + i] as f64;
                        (s, mag) = (s + t, mag + t.abs());
                    }
                    let got = runs[0][b * out_f + o] as f64;
                    assert!(
                        (got - s).abs() <= 1e-6 * mag + 1e-30,
                        "{tag} [{b}, {o}]: {got} vs {s}"
                    );
                }
            }
        }
    });
}

/// Forwards with weights prepared once (as compiled plans keep them) give exactly the plain
/// forward's results, with and without bias, on 1 and 2 threads; another shape is an Error.
#[test]
fn prepared_forward_equals_the_plain_one() {
    use ferroconv_kernels::linear::{linear_forward_prepared, prepare_forward};
    for threads in [1, 2] {
        common::with_threads(threads, || {
            for &(batch, in_f, out_f) in SHAPES.iter().chain(&[(8, 300, 70), (5, 40, 1000)]) {
                let x = fill(batch * in_f, 1);
                let w = fill(out_f * in_f, 2);
                let b = fill(out_f, 3);
                let prepared = prepare_forward(in_f, out_f, &w).unwrap();
                for bias in [None, Some(&b[..])] {
                    let mut want = vec![0f32; batch * out_f];
                    let mut got = vec![f32::NAN; batch * out_f];
                    linear_forward(batch, in_f, out_f, &x, &w, bias, &mut want).unwrap();
                    linear_forward_prepared(batch, in_f, out_f, &x, &w, &prepared, bias, &mut got)
                        .unwrap();
                    let what =
                        format!("{batch}x{in_f}->{out_f} bias {} {threads}t", bias.is_some());
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}"
                    );
                }
            }
        })
    }
    let w = fill(6, 2);
    let prepared = prepare_forward(3, 2, &w).unwrap();
    let mut y = vec![0f32; 4];
    let e = linear_forward_prepared(2, 2, 2, &[0.0; 4], &w[..4], &prepared, None, &mut y);
    assert!(e.unwrap_err().0.contains("another shape"));
    assert!(prepare_forward(3, 2, &w[1..]).is_err());
}
