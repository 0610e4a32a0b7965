//! Property tests: every conv algorithm, forward and both gradients, and the pooling kernels,
//! against their reference loop nests over random shapes (stride, per-side padding, dilation,
//! groups, ceil mode), on a random SIMD level and thread count. A failing shape is shrunk by
//! proptest and saved in `conv_props.proptest-regressions` beside this file, which is committed so the case
//! runs first from then on. `PROPTEST_CASES=N` runs N cases per test (default 1024).
mod common;

use common::conv::{atol, check_against_reference, params, run, run_reference, ALGORITHMS};
use common::{lock, with_threads};
use ferroconv_kernels::conv::{Conv2dParams, ConvAlgo};
use ferroconv_kernels::pool::{self, AvgPoolOptions, Pool2dParams};
use ferroconv_kernels::simd::{self, SimdLevel};
use proptest::prelude::*;

fn conv_shape() -> impl Strategy<Value = Conv2dParams> {
    (
        (1usize..=3, 1usize..=3, 1usize..=4, 1usize..=4),
        (1usize..=14, 1usize..=14, 1usize..=5, 1usize..=5),
        (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (0usize..=4, 0usize..=4, 0usize..=4, 0usize..=4),
    )
        .prop_map(
            |((n, groups, cig, cog), (h, w, kh, kw), (sh, sw, dh, dw), pads)| {
                params(
                    (n, groups * cig, h, w),
                    (groups * cog, kh, kw),
                    (sh, sw),
                    pads,
                    (dh, dw),
                    groups,
                )
            },
        )
        .prop_filter("output must be at least 1x1", |p| p.validate().is_ok())
}

/// 3x3 stride-1 shapes, where Winograd and the FFT run their own code instead of falling back.
fn conv3x3_shape() -> impl Strategy<Value = Conv2dParams> {
    (
        (1usize..=3, 1usize..=2, 1usize..=6, 1usize..=6),
        (1usize..=13, 1usize..=13),
        (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
    )
        .prop_map(|((n, groups, cig, cog), (h, w), pads)| {
            params(
                (n, groups * cig, h, w),
                (groups * cog, 3, 3),
                (1, 1),
                pads,
                (1, 1),
                groups,
            )
        })
        .prop_filter("output must be at least 1x1", |p| p.validate().is_ok())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn level(scalar: bool) -> SimdLevel {
    if scalar {
        SimdLevel::Scalar
    } else {
        simd::detected()
    }
}

/// `|got - want| <= 1e-5 |want| + atol * max(max|want|, 1)`. Inputs are in [-1, 1], so the
/// floor of 1 keeps the bound meaningful when every wanted value is 0 (windows that read only
/// padding), where the transforms of FFT and Winograd leave rounding noise of about 1e-8.
fn assert_near(what: &str, got: &[f32], want: &[f32], atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f64, |m, &v| m.max(v.abs() as f64));
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let (a, b) = (a as f64, b as f64);
        let tol = 1e-5 * b.abs() + atol * scale;
        assert!(
            (a - b).abs() <= tol,
            "{what}: element {i}: got {a}, want {b} (tol {tol:e})"
        );
    }
}

fn check_all_algorithms(p: &Conv2dParams, scalar: bool, threads: usize) {
    let want = run_reference(p);
    let _guard = lock();
    simd::set_level(level(scalar));
    with_threads(threads, || {
        for algo in ALGORITHMS {
            let got = run(p, algo);
            for (pass, g, w) in [
                ("forward", &got.y, &want.y),
                ("backward data", &got.dx, &want.dx),
                ("backward weight", &got.dw, &want.dw),
                ("backward bias", &got.db, &want.db),
            ] {
                assert_near(&format!("{algo:?} {pass} {p:?}"), g, w, atol(algo));
            }
        }
    });
    simd::set_level(simd::detected());
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn conv_matches_reference(p in conv_shape(), scalar in any::<bool>(), threads in 1usize..=2) {
        check_all_algorithms(&p, scalar, threads);
    }

    #[test]
    fn conv3x3_matches_reference(p in conv3x3_shape(), scalar in any::<bool>(), threads in 1usize..=2) {
        check_all_algorithms(&p, scalar, threads);
    }

    #[test]
    fn max_pool_matches_reference(
        p in pool_shape(),
        scalar in any::<bool>(),
        threads in 1usize..=2,
    ) {
        let _guard = lock();
        simd::set_level(level(scalar));
        with_threads(threads, || check_max_pool(&p));
        simd::set_level(simd::detected());
    }

    #[test]
    fn avg_pool_matches_reference(
        p in pool_shape(),
        count_include_pad in any::<bool>(),
        divisor in prop::option::of(1usize..=7),
        scalar in any::<bool>(),
        threads in 1usize..=2,
    ) {
        // Average pooling has no dilation.
        let p = Pool2dParams { dilation_h: 1, dilation_w: 1, ..p };
        prop_assume!(p.validate().is_ok());
        let opts = AvgPoolOptions { count_include_pad, divisor_override: divisor };
        let _guard = lock();
        simd::set_level(level(scalar));
        with_threads(threads, || check_avg_pool(&p, &opts));
        simd::set_level(simd::detected());
    }
}

#[test]
fn auto_sends_image_sized_kernels_to_direct_not_gigabytes_of_im2col_scratch() {
    // One output from a 2048x2048 kernel over a 2048x2048 image: im2col would lower a 4M-long
    // reduction into a 16-column panel (256 MiB) for one number.
    let huge = params(
        (1, 1, 2048, 2048),
        (1, 2048, 2048),
        (1, 1),
        (0, 0, 0, 0),
        (1, 1),
        1,
    );
    assert_eq!(ConvAlgo::Auto.resolve(&huge), ConvAlgo::Direct);
    let ordinary = params(
        (1, 2048, 7, 7),
        (512, 3, 3),
        (1, 1),
        (1, 1, 1, 1),
        (1, 1),
        1,
    );
    assert_ne!(ConvAlgo::Auto.resolve(&ordinary), ConvAlgo::Direct);
}

#[test]
fn fft_input_gradient_of_windows_entirely_in_the_padding() {
    // A 1x1 kernel with padding 2 on a 4x4 input: the outer output ring reads only padding. The
    // FFT input gradient used to slice past its grid for such tiles.
    let p = params((1, 1, 4, 4), (1, 1, 1), (1, 1), (2, 2, 2, 2), (1, 1), 1);
    check_against_reference(&p, "padding-only windows", ConvAlgo::Fft, 1e-5, 2e-5);
    let strided = params((2, 3, 5, 3), (2, 2, 1), (3, 2), (4, 0, 3, 4), (1, 1), 1);
    check_against_reference(
        &strided,
        "padding-only windows, strided",
        ConvAlgo::Fft,
        1e-5,
        2e-5,
    );
}

fn pool_shape() -> impl Strategy<Value = Pool2dParams> {
    (
        (1usize..=2, 1usize..=3, 1usize..=12, 1usize..=12),
        (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        (1usize..=2, 1usize..=2, 0usize..=2, 0usize..=2),
        any::<bool>(),
    )
        .prop_map(
            |((batch, channels, in_h, in_w), (kh, kw, sh, sw), (dh, dw, ph, pw), ceil_mode)| {
                Pool2dParams {
                    batch,
                    channels,
                    in_h,
                    in_w,
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    pad_h: ph.min(kh / 2),
                    pad_w: pw.min(kw / 2),
                    dilation_h: dh,
                    dilation_w: dw,
                    ceil_mode,
                }
            },
        )
        .prop_filter("output must be at least 1x1", |p| p.validate().is_ok())
}

/// Distinct values (no ties, so the arg max is unique) in a shuffled order.
fn distinct(len: usize) -> Vec<f32> {
    // Quarters of whole numbers (the offset too), so a window's sum is exact in f32 and the
    // f64 reference checks the pooling, not the rounding of a sum: with an offset of len * 0.1
    // (not a quarter), sums of 16 values near +-40 rounded to 2e-5 of a result near 0.8, past
    // the 1e-5 bound (avg pool with divisor_override 1, found by a CI run).
    let offset = (len as f32 * 0.4).floor();
    (0..len)
        .map(|i| (((i * 7919 + 13) % len.max(1)) as f32 - offset) * 0.25)
        .collect()
}

/// Input positions `(iy, ix)` of the real (non-padding) elements of window `(oy, ox)`, and the
/// window's extent clipped to the padded input (torch's count_include_pad divisor).
fn window(p: &Pool2dParams, oy: usize, ox: usize) -> (Vec<(usize, usize)>, usize) {
    let (y0, x0) = (
        (oy * p.stride_h) as i64 - p.pad_h as i64,
        (ox * p.stride_w) as i64 - p.pad_w as i64,
    );
    let mut real = Vec::new();
    for ky in 0..p.kernel_h {
        for kx in 0..p.kernel_w {
            let iy = y0 + (ky * p.dilation_h) as i64;
            let ix = x0 + (kx * p.dilation_w) as i64;
            if iy >= 0 && ix >= 0 && (iy as usize) < p.in_h && (ix as usize) < p.in_w {
                real.push((iy as usize, ix as usize));
            }
        }
    }
    let clip = |start: i64, k: usize, input: usize, pad: usize| {
        let end = (start + k as i64).min((input + pad) as i64);
        (end - start) as usize
    };
    let padded = clip(y0, p.kernel_h, p.in_h, p.pad_h) * clip(x0, p.kernel_w, p.in_w, p.pad_w);
    (real, padded)
}

fn check_max_pool(p: &Pool2dParams) {
    let (oh, ow) = p.validate().unwrap();
    let x = distinct(p.input_len());
    let out_len = p.output_len((oh, ow));
    let (mut y, mut y2) = (vec![f32::NAN; out_len], vec![f32::NAN; out_len]);
    let mut ind = vec![0i32; out_len];
    pool::max_pool2d_forward(p, &x, &mut y, &mut ind).unwrap();
    pool::max_pool2d_forward_no_indices(p, &x, &mut y2).unwrap();
    let plane = p.in_h * p.in_w;
    let mut want_dx = vec![0f32; x.len()];
    let gy: Vec<f32> = (0..out_len).map(|i| (i % 5) as f32 - 2.0).collect();
    for nc in 0..p.batch * p.channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (nc * oh + oy) * ow + ox;
                let (real, _) = window(p, oy, ox);
                let best = real
                    .iter()
                    .map(|&(iy, ix)| iy * p.in_w + ix)
                    .max_by(|&a, &b| x[nc * plane + a].total_cmp(&x[nc * plane + b]));
                match best {
                    Some(k) => {
                        assert_eq!(y[o], x[nc * plane + k], "max at {o} {p:?}");
                        assert_eq!(ind[o], k as i32, "index at {o} {p:?}");
                        want_dx[nc * plane + k] += gy[o];
                    }
                    None => {
                        assert_eq!(y[o], f32::NEG_INFINITY, "empty window at {o} {p:?}");
                        assert_eq!(ind[o], -1, "empty window index at {o} {p:?}");
                    }
                }
                assert_eq!(y2[o], y[o], "no-indices path at {o} {p:?}");
            }
        }
    }
    let mut dx = vec![f32::NAN; x.len()];
    pool::max_pool2d_backward(p, &gy, &ind, &mut dx).unwrap();
    assert_eq!(dx, want_dx, "max pool backward {p:?}");
}

fn check_avg_pool(p: &Pool2dParams, opts: &AvgPoolOptions) {
    let (oh, ow) = p.validate().unwrap();
    let x = distinct(p.input_len());
    let out_len = p.output_len((oh, ow));
    let mut y = vec![f32::NAN; out_len];
    pool::avg_pool2d_forward(p, opts, &x, &mut y).unwrap();
    let gy: Vec<f32> = (0..out_len).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
    let plane = p.in_h * p.in_w;
    let mut want_dx = vec![0f64; x.len()];
    for nc in 0..p.batch * p.channels {
        for oy in 0..oh {
            for ox in 0..ow {
                let o = (nc * oh + oy) * ow + ox;
                let (real, padded) = window(p, oy, ox);
                let divisor = match opts.divisor_override {
                    Some(d) => d as f64,
                    None if opts.count_include_pad => padded as f64,
                    None => real.len() as f64,
                };
                let sum: f64 = real
                    .iter()
                    .map(|&(iy, ix)| x[nc * plane + iy * p.in_w + ix] as f64)
                    .sum();
                let want = if divisor == 0.0 {
                    f64::NAN
                } else {
                    sum / divisor
                };
                let got = y[o] as f64;
                let tol = 1e-5 * want.abs().max(1.0);
                assert!(
                    (got - want).abs() <= tol || (got.is_nan() && want.is_nan()),
                    "avg at {o}: got {got}, want {want} {p:?} {opts:?}"
                );
                for &(iy, ix) in &real {
                    want_dx[nc * plane + iy * p.in_w + ix] += gy[o] as f64 / divisor;
                }
            }
        }
    }
    let mut dx = vec![f32::NAN; x.len()];
    pool::avg_pool2d_backward(p, opts, &gy, &mut dx).unwrap();
    for (i, (&g, &w)) in dx.iter().zip(&want_dx).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 * w.abs().max(1.0) || (g.is_nan() && w.is_nan()),
            "avg backward at {i}: got {g}, want {w} {p:?} {opts:?}"
        );
    }
}
