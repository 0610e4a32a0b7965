//! Property tests of the other kernels against plain f64 loop nests written here from their
//! definitions: SGEMM (every transpose, alpha, beta), conv_transpose2d (forward and both
//! gradients, stride, padding, output padding, dilation, groups), softmax / log-softmax and batch
//! norm (training forward and backward), the N-D transpose. Random shapes, SIMD level and thread count; failures are
//! shrunk and kept in `kernel_props.proptest-regressions`. `PROPTEST_CASES=N` runs N per test.
mod common;

use common::gemm::GemmCase;
use common::{bn_train, lock, rand_vec, with_threads, BnTrainOut};
use ferroconv_kernels::batchnorm::{self, BatchNorm2dParams};
use ferroconv_kernels::conv::transpose::{self, ConvTranspose2dParams};
use ferroconv_kernels::simd::{self, SimdLevel};
use ferroconv_kernels::softmax;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Runs `f` at the chosen SIMD level and thread count, holding the SIMD lock.
fn at_level<T: Send>(scalar: bool, threads: usize, f: impl FnOnce() -> T + Send) -> T {
    let _guard = lock();
    simd::set_level(if scalar {
        SimdLevel::Scalar
    } else {
        simd::detected()
    });
    let r = with_threads(threads, f);
    simd::set_level(simd::detected());
    r
}

/// `|got - want| <= tol * max(max|want|, 1)` everywhere (inputs are O(1)).
fn assert_near(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f64, |m, &v| m.max(v.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * scale,
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

fn transpose_shape() -> impl Strategy<Value = ConvTranspose2dParams> {
    (
        (1usize..=2, 1usize..=2, 1usize..=3, 1usize..=3),
        (1usize..=7, 1usize..=7, 1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        (0usize..=3, 0usize..=3, 0usize..=2, 0usize..=2),
    )
        .prop_map(
            |(
                (batch, groups, cig, cog),
                (in_h, in_w, kh, kw),
                (sh, sw, dh, dw),
                (ph, pw, oph, opw),
            )| {
                ConvTranspose2dParams::from_shapes(
                    [batch, groups * cig, in_h, in_w],
                    [groups * cig, cog, kh, kw],
                    [sh, sw],
                    [ph, pw],
                    [oph, opw],
                    [dh, dw],
                    groups,
                )
            },
        )
        .prop_filter_map("valid transposed conv", |p| p.ok())
}

/// Calls `f(input index, output index, weight index)` for every tap of a transposed conv: input
/// pixel (iy, ix) scatters to output (iy * s - pad + k * d) through weight [ic][oc_g][ky][kx].
fn for_each_tap(
    p: &ConvTranspose2dParams,
    (oh, ow): (usize, usize),
    mut f: impl FnMut(usize, usize, usize),
) {
    let (cig, cog) = (p.in_channels / p.groups, p.out_channels / p.groups);
    for n in 0..p.batch {
        for ic in 0..p.in_channels {
            let g = ic / cig;
            for ocg in 0..cog {
                let oc = g * cog + ocg;
                for iy in 0..p.in_h {
                    for ix in 0..p.in_w {
                        for ky in 0..p.kernel_h {
                            let oy =
                                (iy * p.stride_h + ky * p.dilation_h) as isize - p.pad_h as isize;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            for kx in 0..p.kernel_w {
                                let ox = (ix * p.stride_w + kx * p.dilation_w) as isize
                                    - p.pad_w as isize;
                                if ox < 0 || ox >= ow as isize {
                                    continue;
                                }
                                let i = ((n * p.in_channels + ic) * p.in_h + iy) * p.in_w + ix;
                                let o = ((n * p.out_channels + oc) * oh + oy as usize) * ow
                                    + ox as usize;
                                let w = ((ic * cog + ocg) * p.kernel_h + ky) * p.kernel_w + kx;
                                f(i, o, w);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn check_transpose(p: &ConvTranspose2dParams) {
    let out_hw = p.validate().unwrap();
    let out_len = p.output_len(out_hw);
    let x = rand_vec(p.input_len(), 1, 1.0);
    let w = rand_vec(p.weight_len(), 2, 1.0);
    let b = rand_vec(p.out_channels, 3, 1.0);
    let gy = rand_vec(out_len, 4, 1.0);
    let plane = out_hw.0 * out_hw.1;
    let mut want_y: Vec<f64> = (0..out_len)
        .map(|o| b[(o / plane) % p.out_channels] as f64)
        .collect();
    let mut want_dx = vec![0f64; x.len()];
    let mut want_dw = vec![0f64; w.len()];
    for_each_tap(p, out_hw, |i, o, k| {
        want_y[o] += x[i] as f64 * w[k] as f64;
        want_dx[i] += gy[o] as f64 * w[k] as f64;
        want_dw[k] += gy[o] as f64 * x[i] as f64;
    });
    let want_db: Vec<f64> = (0..p.out_channels)
        .map(|oc| {
            (0..p.batch)
                .flat_map(|n| (0..plane).map(move |j| (n * p.out_channels + oc) * plane + j))
                .map(|o| gy[o] as f64)
                .sum()
        })
        .collect();
    let mut y = vec![f32::NAN; out_len];
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = vec![f32::NAN; w.len()];
    let mut db = vec![f32::NAN; b.len()];
    transpose::conv_transpose2d_forward(p, &x, &w, Some(&b), &mut y).unwrap();
    transpose::conv_transpose2d_backward_data(p, &gy, &w, &mut dx).unwrap();
    transpose::conv_transpose2d_backward_weight(p, &x, &gy, &mut dw, Some(&mut db)).unwrap();
    assert_near(&format!("forward {p:?}"), &y, &want_y, 1e-5);
    assert_near(&format!("backward data {p:?}"), &dx, &want_dx, 1e-5);
    assert_near(&format!("backward weight {p:?}"), &dw, &want_dw, 1e-5);
    assert_near(&format!("backward bias {p:?}"), &db, &want_db, 1e-5);
}

fn check_softmax(rows: usize, cols: usize, log: bool, spread: f32) {
    let x = rand_vec(rows * cols, 8, spread);
    let gy = rand_vec(rows * cols, 9, 1.0);
    let mut y = vec![f32::NAN; x.len()];
    let mut dx = vec![f32::NAN; x.len()];
    softmax::softmax_forward(&x, &mut y, rows, cols, log).unwrap();
    softmax::softmax_backward(&y, &gy, &mut dx, rows, cols, log).unwrap();
    let (mut want_y, mut want_dx) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let total: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let p: Vec<f64> = row
            .iter()
            .map(|&v| (v as f64 - max).exp() / total)
            .collect();
        let g = &gy[r * cols..(r + 1) * cols];
        if log {
            want_y.extend(p.iter().map(|v| v.ln()));
            let gs: f64 = g.iter().map(|&v| v as f64).sum();
            want_dx.extend(g.iter().zip(&p).map(|(&gi, pi)| gi as f64 - pi * gs));
        } else {
            want_y.extend(p.iter().copied());
            let dot: f64 = g.iter().zip(&p).map(|(&gi, pi)| gi as f64 * pi).sum();
            want_dx.extend(g.iter().zip(&p).map(|(&gi, pi)| pi * (gi as f64 - dot)));
        }
    }
    let what = format!("softmax {rows}x{cols} log {log} spread {spread}");
    assert_near(&format!("{what} forward"), &y, &want_y, 2e-6);
    assert_near(&format!("{what} backward"), &dx, &want_dx, 2e-6);
}

fn check_batchnorm(p: &BatchNorm2dParams) {
    let (c, plane) = (p.channels, p.height * p.width);
    let count = p.batch * plane;
    let x = rand_vec(p.input_len(), 10, 2.0);
    let w = rand_vec(c, 11, 1.0);
    let b = rand_vec(c, 12, 1.0);
    let gy = rand_vec(p.input_len(), 13, 1.0);
    let (rm, rv) = (vec![0.5f32; c], vec![2f32; c]);
    let BnTrainOut {
        y,
        mean,
        invstd,
        rm,
        rv,
    } = bn_train(p, &x, Some(&w), Some(&b), &rm, &rv);
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dw, mut db) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    batchnorm::batch_norm2d_backward(
        p,
        &x,
        &gy,
        Some(&w),
        batchnorm::BnStats::Batch {
            mean: &mean,
            invstd: &invstd,
        },
        &mut dx,
        Some(&mut dw),
        Some(&mut db),
    )
    .unwrap();
    let idx = |n: usize, ch: usize, j: usize| (n * c + ch) * plane + j;
    let (mut want_y, mut want_dx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
    let (mut want_dw, mut want_db, mut want_rm, mut want_rv) = (vec![], vec![], vec![], vec![]);
    for ch in 0..c {
        let at = |n: usize, j: usize| idx(n, ch, j);
        let all = || (0..p.batch).flat_map(move |n| (0..plane).map(move |j| (n, j)));
        let mu: f64 = all().map(|(n, j)| x[at(n, j)] as f64).sum::<f64>() / count as f64;
        let var: f64 = all()
            .map(|(n, j)| (x[at(n, j)] as f64 - mu).powi(2))
            .sum::<f64>()
            / count as f64;
        let istd = 1.0 / (var + p.eps).sqrt();
        let (mut sdy, mut sdyx) = (0f64, 0f64);
        for (n, j) in all() {
            let xh = (x[at(n, j)] as f64 - mu) * istd;
            want_y[at(n, j)] = xh * w[ch] as f64 + b[ch] as f64;
            sdy += gy[at(n, j)] as f64;
            sdyx += gy[at(n, j)] as f64 * xh;
        }
        for (n, j) in all() {
            let xh = (x[at(n, j)] as f64 - mu) * istd;
            want_dx[at(n, j)] = w[ch] as f64
                * istd
                * (gy[at(n, j)] as f64 - sdy / count as f64 - xh * sdyx / count as f64);
        }
        want_dw.push(sdyx);
        want_db.push(sdy);
        let unbiased = if count > 1 {
            var * count as f64 / (count - 1) as f64
        } else {
            var
        };
        want_rm.push((1.0 - p.momentum) * 0.5 + p.momentum * mu);
        want_rv.push((1.0 - p.momentum) * 2.0 + p.momentum * unbiased);
    }
    assert_near(&format!("bn forward {p:?}"), &y, &want_y, 1e-5);
    assert_near(&format!("bn backward input {p:?}"), &dx, &want_dx, 1e-5);
    assert_near(&format!("bn backward weight {p:?}"), &dw, &want_dw, 1e-5);
    assert_near(&format!("bn backward bias {p:?}"), &db, &want_db, 1e-5);
    assert_near(&format!("bn running mean {p:?}"), &rm, &want_rm, 1e-6);
    assert_near(&format!("bn running var {p:?}"), &rv, &want_rv, 1e-5);
}

/// transpose against direct indexing, and back through the inverse permutation (its backward).
fn check_permute(shape: &[usize], perm: &[usize]) {
    use ferroconv_kernels::elementwise::transpose;
    let n: usize = shape.iter().product();
    let x = rand_vec(n, 21, 1.0);
    let mut y = vec![f32::NAN; n];
    transpose(&x, shape, perm, &mut y).unwrap();
    let out_dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    for (flat, &got) in y.iter().enumerate() {
        let mut rest = flat;
        let mut coord = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            coord[d] = rest % out_dims[d];
            rest /= out_dims[d];
        }
        // Output axis i is input axis perm[i]: the input coordinate along perm[i] is coord[i].
        let mut src = 0;
        for (d, &size) in shape.iter().enumerate() {
            let axis = perm.iter().position(|&p| p == d).unwrap();
            src = src * size + coord[axis];
        }
        assert_eq!(got, x[src], "shape {shape:?} perm {perm:?} at {flat}");
    }
    let mut inverse = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    let mut back = vec![f32::NAN; n];
    transpose(&y, &out_dims, &inverse, &mut back).unwrap();
    assert_eq!(
        back, x,
        "shape {shape:?} perm {perm:?}: the inverse permutation does not undo it"
    );
}

/// A shape of rank 1 to 6 (dims 1 to 6; now and then, at rank 2 or 3, a dim of 3000 so the
/// array spans several parallel chunks and a chunk starts mid-axis) and a permutation of it.
fn permute_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (1usize..=6)
        .prop_flat_map(|rank| {
            (
                prop::collection::vec(1usize..=6, rank),
                Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(|(mut shape, perm)| {
            if (2..=3).contains(&shape.len()) && shape[0] == 6 {
                shape[1] = 3000;
            }
            (shape, perm)
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn conv_transpose_matches_its_definition(p in transpose_shape(), scalar in any::<bool>(), threads in 1usize..=2) {
        at_level(scalar, threads, || check_transpose(&p));
    }

    #[test]
    fn sgemm_matches_its_definition(
        ta in any::<bool>(), tb in any::<bool>(),
        m in 1usize..=40, n in 1usize..=70, k in 0usize..=90,
        alpha in prop::sample::select(vec![1.0f32, -0.5, 2.0]),
        beta in prop::sample::select(vec![0.0f32, 1.0, 0.25]),
        pad in 0usize..=3,
        scalar in any::<bool>(), threads in 1usize..=2,
    ) {
        let case = GemmCase { ta, tb, m, n, k, alpha, beta, pad };
        at_level(scalar, threads, || { case.check(); });
    }

    #[test]
    fn softmax_matches_its_definition(
        rows in 1usize..=9, cols in 1usize..=70, log in any::<bool>(),
        spread in prop::sample::select(vec![1.0f32, 30.0]),
        scalar in any::<bool>(), threads in 1usize..=2,
    ) {
        at_level(scalar, threads, || check_softmax(rows, cols, log, spread));
    }

    #[test]
    fn batchnorm_matches_its_definition(
        batch in 1usize..=3, channels in 1usize..=5, height in 1usize..=7, width in 1usize..=9,
        momentum in prop::sample::select(vec![0.1f64, 0.5]),
        scalar in any::<bool>(), threads in 1usize..=2,
    ) {
        prop_assume!(batch * height * width > 1);
        let p = BatchNorm2dParams::from_shape([batch, channels, height, width], momentum, 1e-5).unwrap();
        at_level(scalar, threads, || check_batchnorm(&p));
    }

    #[test]
    fn transpose_matches_its_definition(case in permute_case(), threads in 1usize..=2) {
        let (shape, perm) = case;
        at_level(false, threads, || check_permute(&shape, &perm));
    }
}
