//! Max, average and adaptive average pooling against naive transcriptions of torch's CPU loops,
//! finite-difference checks of every backward, scalar vs AVX2 and 1 vs 2 threads.
mod common;

use common::*;
use ferroconv_kernels::pool::*;

#[allow(clippy::too_many_arguments)]
fn pp(
    (n, c, h, w): (usize, usize, usize, usize),
    (kh, kw): (usize, usize),
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (dh, dw): (usize, usize),
    ceil_mode: bool,
) -> Pool2dParams {
    Pool2dParams {
        batch: n,
        channels: c,
        in_h: h,
        in_w: w,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        pad_h: ph,
        pad_w: pw,
        dilation_h: dh,
        dilation_w: dw,
        ceil_mode,
    }
}

/// Shapes for both max and average pooling (dilation 1).
fn common_cases() -> Vec<Pool2dParams> {
    vec![
        pp((1, 1, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1), false),
        pp((2, 3, 7, 7), (3, 3), (2, 2), (0, 0), (1, 1), true), // GoogLeNet ceil pool
        pp((1, 2, 14, 14), (3, 3), (2, 2), (0, 0), (1, 1), true),
        pp((2, 3, 13, 13), (3, 3), (2, 2), (0, 0), (1, 1), false), // AlexNet
        pp((1, 3, 9, 11), (3, 3), (2, 2), (1, 1), (1, 1), false),  // ResNet stem pool
        pp((1, 3, 8, 9), (3, 2), (1, 2), (1, 1), (1, 1), true),
        pp((1, 5, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), false),
        pp((1, 2, 1, 6), (1, 3), (1, 2), (0, 1), (1, 1), true),
        pp((3, 9, 6, 5), (4, 4), (3, 3), (2, 2), (1, 1), true),
        pp((1, 2, 5, 5), (5, 5), (1, 1), (2, 2), (1, 1), false),
        pp((1, 2, 9, 9), (2, 2), (3, 3), (0, 0), (1, 1), true),
        pp((2, 2, 6, 6), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((1, 1, 17, 23), (3, 3), (1, 1), (1, 1), (1, 1), false),
        pp((1, 2, 12, 40), (3, 5), (3, 4), (1, 2), (1, 1), true),
        // Rows wide enough for the 8-wide AVX2 runs at strides 1 and 2, including a one-row
        // plane where the last stride-2 group would read past the plane and must not.
        pp((2, 3, 9, 40), (3, 3), (2, 2), (1, 1), (1, 1), false),
        pp((1, 2, 5, 37), (2, 2), (2, 2), (0, 0), (1, 1), true),
        pp((1, 1, 1, 40), (1, 3), (1, 2), (0, 1), (1, 1), false),
        pp((1, 1, 1, 33), (1, 2), (1, 2), (0, 0), (1, 1), false),
        pp((1, 2, 4, 29), (3, 4), (1, 1), (1, 2), (1, 1), true),
    ]
}

fn max_cases() -> Vec<Pool2dParams> {
    let mut v = common_cases();
    v.extend([
        pp((2, 2, 10, 9), (3, 3), (2, 1), (1, 1), (2, 2), false),
        pp((1, 2, 10, 11), (3, 3), (3, 2), (1, 1), (2, 3), true),
        pp((1, 1, 7, 30), (2, 3), (1, 2), (1, 1), (3, 4), true),
        pp((1, 2, 8, 45), (2, 3), (2, 2), (1, 1), (1, 2), true),
        pp((1, 1, 6, 30), (3, 3), (1, 1), (1, 1), (2, 2), false),
    ]);
    v
}

/// torch's cpu_max_pool loop, transcribed; an all-padding window gets index -1 (torch reports
/// an index outside the plane there).
fn ref_max(p: &Pool2dParams, x: &[f32]) -> (Vec<f32>, Vec<i32>) {
    let (oh, ow) = p.validate().unwrap();
    let (h, w) = (p.in_h as i64, p.in_w as i64);
    let (mut y, mut ind) = (vec![], vec![]);
    for plane in 0..p.batch * p.channels {
        let xp = &x[plane * p.in_h * p.in_w..];
        for o_h in 0..oh as i64 {
            for o_w in 0..ow as i64 {
                let mut ih0 = o_h * p.stride_h as i64 - p.pad_h as i64;
                let mut iw0 = o_w * p.stride_w as i64 - p.pad_w as i64;
                let ih1 = (ih0 + (p.kernel_h as i64 - 1) * p.dilation_h as i64 + 1).min(h);
                let iw1 = (iw0 + (p.kernel_w as i64 - 1) * p.dilation_w as i64 + 1).min(w);
                while ih0 < 0 {
                    ih0 += p.dilation_h as i64;
                }
                while iw0 < 0 {
                    iw0 += p.dilation_w as i64;
                }
                let mut maxindex = ih0 * w + iw0;
                let mut maxval = f32::NEG_INFINITY;
                let mut ih = ih0;
                while ih < ih1 {
                    let mut iw = iw0;
                    while iw < iw1 {
                        let v = xp[(ih * w + iw) as usize];
                        if v > maxval || v.is_nan() {
                            maxval = v;
                            maxindex = ih * w + iw;
                        }
                        iw += p.dilation_w as i64;
                    }
                    ih += p.dilation_h as i64;
                }
                if ih0 >= ih1 || iw0 >= iw1 {
                    maxindex = -1;
                }
                y.push(maxval);
                ind.push(maxindex as i32);
            }
        }
    }
    (y, ind)
}

/// torch's cpu_avg_pool loop, transcribed.
fn ref_avg(p: &Pool2dParams, o: &AvgPoolOptions, x: &[f32]) -> Vec<f64> {
    let (oh, ow) = p.validate().unwrap();
    let (h, w) = (p.in_h as i64, p.in_w as i64);
    let (ph, pw) = (p.pad_h as i64, p.pad_w as i64);
    let mut y = vec![];
    for plane in 0..p.batch * p.channels {
        let xp = &x[plane * p.in_h * p.in_w..];
        for o_h in 0..oh as i64 {
            for o_w in 0..ow as i64 {
                let mut ih0 = o_h * p.stride_h as i64 - ph;
                let mut iw0 = o_w * p.stride_w as i64 - pw;
                let mut ih1 = (ih0 + p.kernel_h as i64).min(h + ph);
                let mut iw1 = (iw0 + p.kernel_w as i64).min(w + pw);
                let pool_size = (ih1 - ih0) * (iw1 - iw0);
                ih0 = ih0.max(0);
                iw0 = iw0.max(0);
                ih1 = ih1.min(h);
                iw1 = iw1.min(w);
                if ih0 >= ih1 || iw0 >= iw1 {
                    y.push(0.0);
                    continue;
                }
                let div = match o.divisor_override {
                    Some(d) => d as i64,
                    None if o.count_include_pad => pool_size,
                    None => (ih1 - ih0) * (iw1 - iw0),
                };
                let mut sum = 0.0f64;
                for ih in ih0..ih1 {
                    for iw in iw0..iw1 {
                        sum += xp[(ih * w + iw) as usize] as f64;
                    }
                }
                y.push(sum / div as f64);
            }
        }
    }
    y
}

fn run_max(p: &Pool2dParams, x: &[f32]) -> (Vec<f32>, Vec<i32>) {
    let (oh, ow) = p.validate().unwrap();
    let mut y = vec![0.0; p.output_len((oh, ow))];
    let mut ind = vec![0; y.len()];
    max_pool2d_forward(p, x, &mut y, &mut ind).unwrap();
    (y, ind)
}

fn run_avg(p: &Pool2dParams, o: &AvgPoolOptions, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; p.output_len(p.validate().unwrap())];
    avg_pool2d_forward(p, o, x, &mut y).unwrap();
    y
}

fn avg_options() -> [AvgPoolOptions; 3] {
    [
        AvgPoolOptions::default(),
        AvgPoolOptions {
            count_include_pad: false,
            divisor_override: None,
        },
        AvgPoolOptions {
            count_include_pad: true,
            divisor_override: Some(5),
        },
    ]
}

#[test]
fn output_size_follows_torch_ceil_rule() {
    // GoogLeNet: 3x3 s2 ceil pools on 112 -> 56 and 14 -> 7; AlexNet 55 -> 27, 13 -> 6.
    let size = |h, k, s, pad, ceil| {
        pp((1, 1, h, h), (k, k), (s, s), (pad, pad), (1, 1), ceil)
            .validate()
            .unwrap()
            .0
    };
    assert_eq!(size(112, 3, 2, 0, true), 56);
    assert_eq!(size(14, 3, 2, 0, true), 7);
    assert_eq!(size(7, 3, 2, 0, true), 3);
    assert_eq!(size(55, 3, 2, 0, false), 27);
    assert_eq!(size(13, 3, 2, 0, false), 6);
    assert_eq!(size(112, 3, 2, 1, false), 56);
    // The last window must start inside the input or left padding: 6 with k2 s2 p1 ceil
    // would give 5 windows by the plain formula, torch gives 4.
    assert_eq!(size(6, 2, 2, 1, true), 4);
    assert_eq!(size(5, 2, 2, 1, true), 3);
}

#[test]
fn max_pool_matches_torch_loop() {
    let _g = lock();
    for p in max_cases() {
        let x = smooth(p.input_len(), 3);
        let (want_y, want_i) = ref_max(&p, &x);
        for (y, ind) in for_each_level(&_g, |_| run_max(&p, &x)) {
            assert_eq!(y, want_y, "{p:?}");
            assert_eq!(ind, want_i, "{p:?}");
        }
    }
}

#[test]
fn max_pool_ties_take_the_first_and_nan_wins() {
    let _g = lock();
    let p = pp((1, 1, 4, 6), (2, 3), (1, 1), (0, 1), (1, 1), false);
    let mut x = vec![1.0f32; 24];
    x[8] = f32::NAN;
    x[10] = f32::NAN;
    x[20] = 2.0;
    x[21] = 2.0;
    let (want_y, want_i) = ref_max(&p, &x);
    for (y, ind) in for_each_level(&_g, |_| run_max(&p, &x)) {
        assert_eq!(ind, want_i);
        for (a, b) in y.iter().zip(&want_y) {
            assert!(a == b || (a.is_nan() && b.is_nan()), "{y:?} vs {want_y:?}");
        }
    }
    // -inf everywhere: the index is the window's first element, as torch.
    let x = vec![f32::NEG_INFINITY; 24];
    assert_eq!(run_max(&p, &x).1, ref_max(&p, &x).1);
}

#[test]
fn max_pool_2x2_stride_2_path_ties_and_nans() {
    // The 2x2 stride-2 path (MNIST network, VGG, GoogLeNet's last pool), with and without
    // indices: planes of many sizes, odd ones dropping their last row and column, and a task
    // boundary crossing planes; values with ties, NaNs and -inf.
    let _g = lock();
    for (n, c, h, w) in [
        (2, 3, 14, 14),
        (4, 16, 7, 7),
        (1, 2, 5, 9),
        (3, 600, 4, 4),
        (1, 1, 2, 2),
        (1, 832, 14, 14),
    ] {
        let p = pp((n, c, h, w), (2, 2), (2, 2), (0, 0), (1, 1), false);
        let mut x: Vec<f32> = (0..p.input_len())
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        for (i, v) in x.iter_mut().enumerate() {
            if i % 17 == 3 {
                *v = f32::NAN;
            } else if i % 23 == 5 {
                *v = f32::NEG_INFINITY;
            }
        }
        let (want_y, want_i) = ref_max(&p, &x);
        for ((y, ind), v) in for_each_level(&_g, |_| (run_max(&p, &x), run_max_values(&p, &x))) {
            assert_eq!(ind, want_i, "{p:?}");
            for (a, b) in y.iter().zip(&want_y) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{p:?}");
            }
            // Without indices (inference): the same maxima.
            same_values(&v, &want_y, &format!("{p:?} without indices"));
        }
    }
}

/// Odd shapes for the row-wise max-pool paths: batch 1, 1x1 planes, non-square, ceil mode,
/// padding, rows long enough for several 8-wide groups plus a ragged tail, and enough rows
/// that tasks cross plane boundaries.
fn odd_max_cases() -> Vec<Pool2dParams> {
    vec![
        pp((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), false),
        pp((1, 3, 1, 1), (2, 2), (2, 2), (1, 1), (1, 1), true),
        pp((1, 2, 3, 70), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((2, 3, 30, 41), (3, 3), (2, 2), (1, 1), (1, 1), false),
        pp((1, 2, 19, 53), (3, 2), (1, 1), (1, 1), (1, 1), true),
        pp((3, 2, 11, 64), (2, 4), (2, 2), (0, 2), (1, 1), true),
        pp((1, 1, 9, 50), (3, 3), (2, 2), (1, 1), (2, 2), false),
        pp((1, 1, 40, 9), (5, 5), (3, 3), (2, 2), (1, 1), true),
        // 3x3, stride 1, pad 1 on small planes (inference's separable path), down to a single
        // pixel and row, up to its 32-column limit, and one column past it.
        pp((2, 3, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1), true),
        pp((1, 2, 1, 1), (3, 3), (1, 1), (1, 1), (1, 1), false),
        pp((1, 2, 1, 2), (3, 3), (1, 1), (1, 1), (1, 1), false),
        pp((1, 2, 2, 5), (3, 3), (1, 1), (1, 1), (1, 1), false),
        pp((3, 2, 5, 9), (3, 3), (1, 1), (1, 1), (1, 1), true),
        pp((1, 1, 14, 32), (3, 3), (1, 1), (1, 1), (1, 1), false),
        pp((1, 1, 3, 33), (3, 3), (1, 1), (1, 1), (1, 1), false),
        // Planes enough for several tasks, dealt out in whole rounds of the threads.
        pp((1, 700, 7, 7), (3, 3), (1, 1), (1, 1), (1, 1), true),
        // 3x3, stride 2: a single pixel, a ceil-mode last window that starts on the last
        // column after a left pad, GoogLeNet's 28 -> 14.
        pp((1, 2, 1, 1), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((1, 2, 2, 7), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((2, 3, 28, 28), (3, 3), (2, 2), (0, 0), (1, 1), true),
        // The whole-plane 3x3 stride-2 path: odd widths with and without padding, up to its
        // 128-column limit and one past it.
        pp((1, 2, 6, 57), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((1, 2, 5, 56), (3, 3), (2, 2), (0, 1), (1, 1), false),
        pp((1, 1, 5, 128), (3, 3), (2, 2), (1, 1), (1, 1), false),
        pp((1, 1, 4, 129), (3, 3), (2, 2), (1, 0), (1, 1), true),
    ]
}

/// Small integers (many ties), a few -inf and NaN: every tie-breaking rule gets exercised.
fn tie_heavy(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(2862933555777941757)
        .wrapping_add(3037000493);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (s >> 33) % 64 {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => -0.0,
                r => (r % 4) as f32,
            }
        })
        .collect()
}

fn same_values(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        // The no-indices path may give -0 where torch gives +0 (or back) when they tie.
        assert!(
            a == b || (a.is_nan() && b.is_nan()),
            "{what}: element {i} is {a}, expected {b}"
        );
    }
}

fn run_max_values(p: &Pool2dParams, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; p.output_len(p.validate().unwrap())];
    max_pool2d_forward_no_indices(p, x, &mut y).unwrap();
    y
}

#[test]
fn max_pool_ties_nan_and_infinity_match_torch_on_every_path() {
    let _g = lock();
    for (n, p) in max_cases().into_iter().chain(odd_max_cases()).enumerate() {
        for seed in 0..3 {
            let x = tie_heavy(p.input_len(), (n * 3 + seed) as u64);
            let (want_y, want_i) = ref_max(&p, &x);
            for ((y, ind), v) in for_each_level(&_g, |_| (run_max(&p, &x), run_max_values(&p, &x)))
            {
                same_values(&y, &want_y, &format!("{p:?} values"));
                assert_eq!(ind, want_i, "{p:?} indices");
                same_values(&v, &want_y, &format!("{p:?} no-indices values"));
            }
        }
    }
}

#[test]
fn max_pool_without_indices_matches_reference() {
    let _g = lock();
    for p in max_cases().into_iter().chain(odd_max_cases()) {
        let x = smooth(p.input_len(), 8);
        let (want_y, want_i) = ref_max(&p, &x);
        for ((y, ind), v) in for_each_level(&_g, |_| (run_max(&p, &x), run_max_values(&p, &x))) {
            assert_eq!(y, want_y, "{p:?}");
            assert_eq!(ind, want_i, "{p:?}");
            assert_eq!(v, want_y, "{p:?} no indices");
        }
    }
    // All-padding windows (dilation) give -inf without indices too.
    let p = pp((1, 1, 1, 3), (2, 1), (1, 1), (1, 0), (2, 1), false);
    assert_eq!(
        run_max_values(&p, &[1.0, 2.0, 3.0]),
        vec![f32::NEG_INFINITY; 3]
    );
}

#[test]
fn max_pool_paths_agree_across_thread_counts() {
    let _g = lock();
    for p in odd_max_cases() {
        let x = tie_heavy(p.input_len(), 42);
        let run = || (run_max(&p, &x), run_max_values(&p, &x));
        let (one, two) = (with_threads(1, run), with_threads(2, run));
        assert_eq!(one.0 .1, two.0 .1, "{p:?} indices");
        same_values(&one.0 .0, &two.0 .0, &format!("{p:?} values"));
        same_values(&one.1, &two.1, &format!("{p:?} no-indices values"));
    }
}

#[test]
fn max_pool_window_of_padding_only_gives_minus_infinity() {
    // Height 1, kernel 2 dilation 2 padding 1: taps at rows -1 and 1, both outside.
    let p = pp((1, 1, 1, 3), (2, 1), (1, 1), (1, 0), (2, 1), false);
    let x = [1.0, 2.0, 3.0];
    let (y, ind) = run_max(&p, &x);
    assert_eq!(y, vec![f32::NEG_INFINITY; 3]);
    assert_eq!(ind, vec![-1; 3]);
    let mut gi = vec![7.0; 3];
    max_pool2d_backward(&p, &[1.0, 1.0, 1.0], &ind, &mut gi).unwrap();
    assert_eq!(gi, vec![0.0; 3]);
}

#[test]
fn max_pool_backward_scatters_and_matches_finite_differences() {
    for p in max_cases() {
        let x = distinct(p.input_len(), 11);
        let (y, ind) = run_max(&p, &x);
        let r = smooth(y.len(), 5);
        let mut gi = vec![f32::NAN; x.len()];
        max_pool2d_backward(&p, &r, &ind, &mut gi).unwrap();
        let mut want = vec![0.0f64; x.len()];
        let plane = p.in_h * p.in_w;
        for (o, (&g, &k)) in r.iter().zip(&ind).enumerate() {
            let base = o / (y.len() / (p.batch * p.channels)) * plane;
            want[base + k as usize] += g as f64;
        }
        assert_close_f64(&gi, &want, 1e-6, 1e-6, &format!("{p:?} scatter"));
        let fd = fd_grad(&x, 1e-3, |xx| dot(&run_max(&p, xx).0, &r));
        assert_close_f64(&gi, &fd, 1e-3, 1e-3, &format!("{p:?} finite differences"));
    }
}

#[test]
fn max_pool_backward_rejects_bad_indices() {
    let p = pp((1, 2, 3, 3), (2, 2), (1, 1), (0, 0), (1, 1), false);
    let go = [1.0f32; 8];
    let mut gi = [0.0f32; 18];
    let mut ind = [0i32; 8];
    ind[6] = 9;
    let err = max_pool2d_backward(&p, &go, &ind, &mut gi).unwrap_err();
    assert_eq!(
        err.0,
        "indices: element 6 is 9, expected -1 or an index into the 3x3 input plane (0..8)"
    );
    ind[6] = -2;
    assert!(max_pool2d_backward(&p, &go, &ind, &mut gi).is_err());
    ind[6] = 8;
    max_pool2d_backward(&p, &go, &ind, &mut gi).unwrap();
    assert_eq!(gi[9 + 8], 1.0);
}

#[test]
fn avg_pool_matches_torch_loop() {
    let _g = lock();
    for p in common_cases() {
        let x = smooth(p.input_len(), 4);
        for o in avg_options() {
            let want = ref_avg(&p, &o, &x);
            for y in for_each_level(&_g, |_| run_avg(&p, &o, &x)) {
                assert_close_f64(&y, &want, 1e-5, 1e-6, &format!("{p:?} {o:?}"));
            }
        }
    }
}

#[test]
fn avg_pool_ceil_mode_divides_by_window_clipped_at_padded_border() {
    // torch.nn.functional.avg_pool2d(torch.ones(1,1,6,6), 3, 2, 1, ceil_mode=True)
    let p = pp((1, 1, 6, 6), (3, 3), (2, 2), (1, 1), (1, 1), true);
    let y = run_avg(&p, &AvgPoolOptions::default(), &[1.0; 36]);
    let want = [
        4. / 9.,
        6. / 9.,
        6. / 9.,
        2. / 6.,
        6. / 9.,
        1.,
        1.,
        3. / 6.,
        6. / 9.,
        1.,
        1.,
        3. / 6.,
        2. / 6.,
        3. / 6.,
        3. / 6.,
        1. / 4.,
    ];
    assert_close_f64(&y, &want, 1e-6, 1e-7, "ceil-mode divisors");
}

/// Average-pool shapes for the gather backward beyond common_cases: long rows (vectorised
/// shifted adds), tasks crossing planes, and kernels wide enough to take the per-element
/// fallback.
fn avg_back_cases() -> Vec<Pool2dParams> {
    let mut v = common_cases();
    v.extend([
        pp((2, 3, 21, 45), (3, 3), (2, 2), (1, 1), (1, 1), true),
        pp((1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1), false),
        pp((1, 2, 9, 3), (3, 161), (2, 1), (1, 80), (1, 1), false),
        pp((1, 1, 3, 2), (3, 201), (1, 100), (1, 100), (1, 1), true),
    ]);
    v
}

#[test]
fn avg_pool_backward_is_the_adjoint_and_matches_finite_differences() {
    let _g = lock();
    for p in avg_back_cases() {
        for o in avg_options() {
            let x = smooth(p.input_len(), 6);
            let y = run_avg(&p, &o, &x);
            let r = smooth(y.len(), 7);
            let mut gi = vec![f32::NAN; x.len()];
            avg_pool2d_backward(&p, &o, &r, &mut gi).unwrap();
            // <A x, r> = <x, A^T r> for the linear map A, with x a basis vector per element.
            let mut want = vec![0.0; x.len()];
            let mut e = vec![0.0f32; x.len()];
            for i in 0..x.len() {
                e[i] = 1.0;
                want[i] = ref_avg(&p, &o, &e)
                    .iter()
                    .zip(&r)
                    .map(|(a, &b)| a * b as f64)
                    .sum();
                e[i] = 0.0;
            }
            for gi in for_each_level(&_g, |_| {
                let mut gi = vec![f32::NAN; x.len()];
                with_threads(2, || avg_pool2d_backward(&p, &o, &r, &mut gi).unwrap());
                gi
            }) {
                assert_close_f64(&gi, &want, 1e-5, 1e-6, &format!("{p:?} {o:?} adjoint"));
            }
            assert_close_f64(&gi, &want, 1e-5, 1e-6, &format!("{p:?} {o:?} adjoint"));
            let fd = fd_grad(&x, 1e-2, |xx| dot(&run_avg(&p, &o, xx), &r));
            assert_close_f64(&gi, &fd, 1e-3, 1e-3, &format!("{p:?} {o:?} fd"));
        }
    }
}

fn ap(
    (n, c, h, w): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
) -> AdaptivePool2dParams {
    AdaptivePool2dParams::from_shapes([n, c, h, w], [oh, ow]).unwrap()
}

fn adaptive_cases() -> Vec<AdaptivePool2dParams> {
    vec![
        ap((1, 3, 13, 13), (6, 6)), // AlexNet
        ap((2, 2, 9, 11), (7, 7)),  // VGG head from odd sizes
        ap((1, 2, 5, 5), (7, 7)),   // smaller than the output
        ap((2, 3, 7, 7), (1, 1)),   // global
        ap((1, 2, 14, 14), (7, 7)),
        ap((1, 1, 1, 1), (3, 2)),
        ap((1, 2, 6, 10), (4, 3)),
        ap((3, 5, 1, 9), (1, 1)),
    ]
}

/// torch's bins via floor/ceil, and plain window sums.
fn ref_adaptive(p: &AdaptivePool2dParams, x: &[f32]) -> Vec<f64> {
    let bin = |o: usize, out: usize, inp: usize| {
        let lo = (o as f64 * inp as f64 / out as f64).floor() as usize;
        let hi = ((o + 1) as f64 * inp as f64 / out as f64).ceil() as usize;
        (lo, hi)
    };
    let mut y = vec![];
    for plane in 0..p.batch * p.channels {
        let xp = &x[plane * p.in_h * p.in_w..];
        for oh in 0..p.out_h {
            let (h0, h1) = bin(oh, p.out_h, p.in_h);
            for ow in 0..p.out_w {
                let (w0, w1) = bin(ow, p.out_w, p.in_w);
                let mut s = 0.0;
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        s += xp[ih * p.in_w + iw] as f64;
                    }
                }
                y.push(s / ((h1 - h0) * (w1 - w0)) as f64);
            }
        }
    }
    y
}

fn run_adaptive(p: &AdaptivePool2dParams, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; p.output_len()];
    adaptive_avg_pool2d_forward(p, x, &mut y).unwrap();
    y
}

#[test]
fn adaptive_avg_pool_matches_reference_and_backward_checks_out() {
    let _g = lock();
    for p in adaptive_cases() {
        let x = smooth(p.input_len(), 8);
        let want = ref_adaptive(&p, &x);
        for y in for_each_level(&_g, |_| run_adaptive(&p, &x)) {
            assert_close_f64(&y, &want, 1e-5, 1e-6, &format!("{p:?}"));
        }
        let r = smooth(p.output_len(), 9);
        let mut gi = vec![f32::NAN; x.len()];
        adaptive_avg_pool2d_backward(&p, &r, &mut gi).unwrap();
        let fd = fd_grad(&x, 1e-2, |xx| dot(&run_adaptive(&p, xx), &r));
        assert_close_f64(&gi, &fd, 1e-3, 1e-3, &format!("{p:?} fd"));
        let mut want = vec![0.0; x.len()];
        let mut e = vec![0.0f32; x.len()];
        for i in 0..x.len() {
            e[i] = 1.0;
            want[i] = ref_adaptive(&p, &e)
                .iter()
                .zip(&r)
                .map(|(a, &b)| a * b as f64)
                .sum();
            e[i] = 0.0;
        }
        assert_close_f64(&gi, &want, 1e-5, 1e-6, &format!("{p:?} adjoint"));
    }
}

#[test]
fn one_and_two_threads_agree_exactly() {
    let _g = lock();
    let p = pp((2, 5, 17, 15), (3, 3), (2, 2), (1, 1), (1, 1), true);
    let o = AvgPoolOptions::default();
    let a = ap((2, 5, 17, 15), (7, 7));
    let x = smooth(p.input_len(), 1);
    let (y, ind) = run_max(&p, &x);
    let go = smooth(y.len(), 2);
    let go_a = smooth(a.output_len(), 3);
    let run = || {
        let (y, ind2) = run_max(&p, &x);
        let mut gmax = vec![0.0; x.len()];
        max_pool2d_backward(&p, &go, &ind, &mut gmax).unwrap();
        let ya = run_avg(&p, &o, &x);
        let mut gavg = vec![0.0; x.len()];
        avg_pool2d_backward(&p, &o, &go, &mut gavg).unwrap();
        let yad = run_adaptive(&a, &x);
        let mut gad = vec![0.0; x.len()];
        adaptive_avg_pool2d_backward(&a, &go_a, &mut gad).unwrap();
        (y, ind2, gmax, ya, gavg, yad, gad)
    };
    let one = with_threads(1, run);
    let two = with_threads(2, run);
    assert!(one == two);
    assert_eq!(one.0, y);
}

#[test]
fn bad_arguments_are_errors() {
    let mut p = pp((1, 1, 5, 5), (3, 3), (1, 1), (2, 1), (1, 1), false);
    assert_eq!(
        p.validate().unwrap_err().0,
        "padding: expected at most half the kernel size (1x1 for a 3x3 kernel), got 2x1"
    );
    p = pp((1, 1, 2, 2), (5, 5), (1, 1), (0, 0), (1, 1), false);
    assert_eq!(
        p.validate().unwrap_err().0,
        "input: 2x2 is too small for a 5x5 window (stride 1x1, padding 0x0, dilation 1x1): output would be -2x-2"
    );
    p = pp((1, 1, 4, 4), (3, 3), (1, 1), (1, 1), (3, 3), true);
    assert!(p.validate().unwrap_err().0.contains("output would be 0x0"));
    p = pp((1, 1, 4, 4), (3, 3), (0, 1), (1, 1), (1, 1), true);
    assert_eq!(
        p.validate().unwrap_err().0,
        "stride: expected a positive size, got 0"
    );
    p = pp((1, 1, 4, 4), (3, 3), (1, 1), (1, 1), (usize::MAX, 1), true);
    assert_eq!(p.validate().unwrap_err().0, "pool2d: sizes overflow");
    // Huge kernels with matching padding are legal and must not loop over the kernel.
    p = pp(
        (1, 1, 1, 1),
        (1 << 40, 1),
        (1, 1),
        (1 << 39, 0),
        (1, 1),
        false,
    );
    let (y, ind) = run_max(&p, &[5.0]);
    assert_eq!((y, ind), (vec![5.0; 2], vec![0; 2]));
    let y = run_avg(&p, &AvgPoolOptions::default(), &[5.0]);
    assert_close_f64(
        &y,
        &ref_avg(&p, &AvgPoolOptions::default(), &[5.0]),
        0.0,
        0.0,
        "huge",
    );

    p = pp((1, 1, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), false);
    let mut y = vec![0.0; 4];
    let mut ind = vec![0; 4];
    assert_eq!(
        max_pool2d_forward(&p, &[0.0; 15], &mut y, &mut ind)
            .unwrap_err()
            .0,
        "input: expected 16 elements, got 15"
    );
    assert_eq!(
        max_pool2d_forward(&p, &[0.0; 16], &mut y, &mut ind[..3])
            .unwrap_err()
            .0,
        "indices: expected 4 elements, got 3"
    );
    let o = AvgPoolOptions {
        count_include_pad: true,
        divisor_override: Some(0),
    };
    assert_eq!(
        avg_pool2d_forward(&p, &o, &[0.0; 16], &mut y)
            .unwrap_err()
            .0,
        "divisorOverride: expected a positive integer, got 0"
    );
    p.dilation_h = 2;
    assert_eq!(
        avg_pool2d_forward(&p, &AvgPoolOptions::default(), &[0.0; 16], &mut y[..1])
            .unwrap_err()
            .0,
        "dilation: average pooling has no dilation, expected 1x1, got 2x1"
    );
    // The kernel checks its parameters itself, whether or not from_shapes built them.
    let want = "output height: expected a positive size, got 0";
    let err = AdaptivePool2dParams::from_shapes([1, 1, 4, 4], [0, 2]).unwrap_err();
    assert_eq!(err.0, want);
    let a = AdaptivePool2dParams {
        out_h: 0,
        ..ap((1, 1, 4, 4), (1, 2))
    };
    let err = adaptive_avg_pool2d_forward(&a, &[0.0; 16], &mut y).unwrap_err();
    assert_eq!(err.0, want);
}

/// cargo test -p ferroconv-kernels --release --test pool -- --ignored --nocapture
#[test]
#[ignore]
fn bench_pool_resnet_shape() {
    let _g = lock();
    let shapes = [
        (
            "3x3 s2",
            pp((8, 64, 112, 112), (3, 3), (2, 2), (0, 0), (1, 1), false),
        ),
        (
            "3x3 s2 p1",
            pp((8, 64, 112, 112), (3, 3), (2, 2), (1, 1), (1, 1), false),
        ),
    ];
    for (name, p) in shapes {
        let x = smooth(p.input_len(), 1);
        let out_len = p.output_len(p.validate().unwrap());
        let mut y = vec![0.0; out_len];
        let mut ind = vec![0; out_len];
        let mut gi = vec![0.0; x.len()];
        // Bytes each call must move: input read, output and int32 indices written.
        let max_bytes = (x.len() * 4 + out_len * 8) as f64;
        let avg_bytes = ((x.len() + out_len) * 4) as f64;
        for_each_level(&_g, |lvl| {
            with_threads(2, || {
                let lvl = lvl.name();
                let (t, c) = time(|| max_pool2d_forward(&p, &x, &mut y, &mut ind).unwrap());
                report(&format!("maxpool {name} fwd [{lvl}]"), max_bytes, t, c);
                let (t, c) = time(|| max_pool2d_forward_no_indices(&p, &x, &mut y).unwrap());
                report(
                    &format!("maxpool {name} fwd, no indices [{lvl}]"),
                    avg_bytes,
                    t,
                    c,
                );
                let (t, c) = time(|| max_pool2d_backward(&p, &y, &ind, &mut gi).unwrap());
                report(&format!("maxpool {name} bwd [{lvl}]"), max_bytes, t, c);
                let o = AvgPoolOptions::default();
                let (t, c) = time(|| avg_pool2d_forward(&p, &o, &x, &mut y).unwrap());
                report(&format!("avgpool {name} fwd [{lvl}]"), avg_bytes, t, c);
                let (t, c) = time(|| avg_pool2d_backward(&p, &o, &y, &mut gi).unwrap());
                report(&format!("avgpool {name} bwd [{lvl}]"), avg_bytes, t, c);
            })
        });
    }
    for shape in [(8, 512, 7, 7), (8, 64, 112, 112)] {
        let a = ap(shape, (1, 1));
        let x = smooth(a.input_len(), 1);
        let mut y = vec![0.0; a.output_len()];
        with_threads(2, || {
            let (t, c) = time(|| adaptive_avg_pool2d_forward(&a, &x, &mut y).unwrap());
            report(
                &format!("global avg pool {shape:?}"),
                (x.len() * 4) as f64,
                t,
                c,
            );
        });
    }
}
