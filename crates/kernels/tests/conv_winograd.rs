//! Winograd F(4x4, 3x3) conv2d against the reference loop nest and finite differences, on both
//! SIMD paths and on 1 and 2 threads. Shapes it does not apply to must fall back to im2col and
//! still be right.
//!
//! Tolerance: the transforms multiply by constants up to 8 (output) and 5 (input) and sum 36
//! products per output, so rounding is tied to the largest values of a tile, not to each output:
//! errors are measured normwise, `|got - want| <= WINO_TOL * max|want|` (plus a 1e-5 relative
//! term). Measured worst normwise errors (f32, both SIMD paths, `--nocapture` prints them):
//! forward and input gradient 2e-7 to 3.6e-6 on the small shapes below, 7e-6 at 64 channels and
//! 1.1e-5 on the 256-channel layer (the error grows with the channel sum, as for any GEMM, but
//! from a transform-scaled base); `examples/conv_bench.rs wino` shows 1.2e-5 to 3.7e-5 against
//! im2col on ResNet/VGG layers with 64-512 channels. `WINO_TOL` keeps 4x headroom over the
//! unit-test shapes; the plain im2col/direct paths are held to 1e-5.
mod common;

use common::*;
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_forward, reference, winograd, Conv2dParams, ConvAlgo,
};
use ferroconv_kernels::simd::{set_level, SimdLevel};

const WINO_TOL: f64 = 5e-5;

/// Shapes Winograd computes itself: odd sizes, partial edge tiles, every padding up to 2 (and
/// beyond, where only the input gradient falls back), groups, several 16-tile chunks per tile
/// row, and many tile rows (several blocks).
fn wino_cases() -> Vec<Case> {
    let c = |name, p| Case { name, p };
    let sq = |n, ci, h, w, co, pad, g| params((n, ci, h, w), (co, 3, 3), (1, 1), pad, (1, 1), g);
    vec![
        c(
            "batch 1 non-square pad 1",
            sq(1, 3, 7, 9, 5, (1, 1, 1, 1), 1),
        ),
        c("pad 0", sq(2, 5, 10, 13, 6, (0, 0, 0, 0), 1)),
        c("pad 2", sq(2, 4, 9, 6, 7, (2, 2, 2, 2), 1)),
        c("asymmetric pads", sq(1, 6, 11, 10, 5, (0, 2, 1, 0), 1)),
        c(
            "pad 3 (data grad falls back)",
            sq(1, 3, 5, 6, 4, (3, 1, 0, 3), 1),
        ),
        c("groups 2", sq(2, 8, 6, 21, 10, (1, 1, 1, 1), 2)),
        c("groups 3 odd", sq(1, 9, 13, 7, 6, (1, 0, 2, 1), 3)),
        c("depthwise", sq(2, 6, 9, 7, 6, (1, 1, 1, 1), 6)),
        c("tiny 3x3 input", sq(2, 4, 3, 3, 3, (0, 0, 0, 0), 1)),
        c("tiny 3x3 input pad 1", sq(1, 4, 3, 3, 3, (1, 1, 1, 1), 1)),
        c("1x1 input pad 1", sq(2, 5, 1, 1, 3, (1, 1, 1, 1), 1)),
        c("channels 13->11", sq(1, 13, 6, 6, 11, (1, 1, 1, 1), 1)),
        c(
            "pads larger than the input",
            sq(1, 2, 2, 3, 3, (5, 2, 9, 1), 1),
        ),
        c(
            "wide: 2 chunks per tile row",
            sq(1, 3, 5, 75, 4, (1, 1, 1, 1), 1),
        ),
        c("many tile rows", sq(6, 10, 90, 19, 9, (1, 1, 1, 1), 1)),
        c("64 channels 20x20", sq(3, 64, 20, 20, 64, (1, 1, 1, 1), 1)),
        c("blocks in parallel", sq(4, 64, 28, 30, 72, (1, 1, 1, 1), 1)),
    ]
}

fn big_case() -> Case {
    Case {
        name: "256 channels 14x14",
        p: params(
            (2, 256, 14, 14),
            (256, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
    }
}

/// Forward and input gradient against the reference (the weight gradient is im2col's).
fn check(p: &Conv2dParams, name: &str) -> (f64, f64) {
    let hw = p.validate().unwrap();
    let (x, w, b, gy) = inputs(p);
    let mut y = vec![f32::NAN; gy.len()];
    let mut dx = vec![f32::NAN; x.len()];
    conv2d_forward(p, &x, &w, Some(&b), &mut y, ConvAlgo::Winograd).unwrap();
    conv2d_backward_data(p, &gy, &w, &mut dx, ConvAlgo::Winograd).unwrap();
    let mut y_ref = vec![0.0; gy.len()];
    let mut dx_ref = vec![0.0; x.len()];
    reference::forward(p, hw, &x, &w, Some(&b), &mut y_ref);
    reference::backward_data(p, hw, &gy, &w, &mut dx_ref);
    let ey = norm_err(&format!("{name} forward"), &y, &y_ref);
    let ex = norm_err(&format!("{name} backward data"), &dx, &dx_ref);
    assert_close(&format!("{name} forward {p:?}"), &y, &y_ref, 1e-5, WINO_TOL);
    assert_close(
        &format!("{name} backward data {p:?}"),
        &dx,
        &dx_ref,
        1e-5,
        WINO_TOL,
    );
    (ey, ex)
}

#[test]
fn winograd_matches_reference() {
    let _guard = lock_simd();
    for level in [SimdLevel::Scalar, SimdLevel::Avx2Fma] {
        let used = set_level(level);
        for c in wino_cases().into_iter().chain([big_case()]) {
            assert!(winograd::applies(&c.p), "{}", c.name);
            let (ey, ex) = check(&c.p, c.name);
            println!(
                "winograd {} {}: normwise error forward {ey:.2e}, backward data {ex:.2e}",
                used.name(),
                c.name
            );
        }
    }
    set_level(SimdLevel::Avx2Fma);
}

#[test]
fn winograd_all_passes_match_reference_including_fallbacks() {
    // The common shapes include strides, dilation and other kernel sizes: im2col's territory.
    for c in cases().into_iter().chain(wino_cases()) {
        check_against_reference(&c.p, c.name, ConvAlgo::Winograd, 1e-5, WINO_TOL);
    }
}

#[test]
fn winograd_gradients_match_finite_differences() {
    for c in wino_cases().into_iter().take(8) {
        check_finite_differences(&c.p, c.name, ConvAlgo::Winograd, 2e-3);
    }
}

#[test]
fn winograd_scalar_and_avx2_agree() {
    let _guard = lock_simd();
    for c in wino_cases() {
        set_level(SimdLevel::Scalar);
        let s = run(&c.p, ConvAlgo::Winograd);
        set_level(SimdLevel::Avx2Fma);
        let v = run(&c.p, ConvAlgo::Winograd);
        for (what, a, b) in [("y", &s.y, &v.y), ("dx", &s.dx, &v.dx)] {
            assert_close(&format!("{} {what}", c.name), a, b, 1e-5, 1e-5);
        }
    }
}

#[test]
fn winograd_one_and_two_threads_agree_exactly() {
    // Every output is made by one GEMM call and one transform in a fixed order, whatever the
    // pool size (the GEMM itself splits C, never the sum).
    for c in wino_cases().into_iter().chain([big_case()]) {
        let one = with_threads(1, || run(&c.p, ConvAlgo::Winograd));
        let two = with_threads(2, || run(&c.p, ConvAlgo::Winograd));
        assert_eq!(one.y, two.y, "{}", c.name);
        assert_eq!(one.dx, two.dx, "{}", c.name);
    }
}

#[test]
fn winograd_name_parses() {
    assert_eq!(ConvAlgo::parse("winograd").unwrap(), ConvAlgo::Winograd);
    let err = ConvAlgo::parse("wino").unwrap_err().0;
    assert!(err.contains("'winograd'"), "{err}");
}

#[test]
fn auto_picks_winograd_where_it_measured_faster() {
    let layer = |n, c, hw, oc, g| sq3(n, c, hw, oc, g);
    for (c, hw) in [(64, 56), (128, 28), (256, 14), (64, 224), (256, 56)] {
        let p = layer(8, c, hw, c, 1);
        assert!(winograd::pays_off(&p), "{c}@{hw}");
        assert_eq!(ConvAlgo::Auto.resolve(&p), ConvAlgo::Winograd);
    }
    for p in [
        layer(8, 512, 7, 512, 1),    // 32 tiles: the weight transform dominates
        layer(8, 512, 14, 512, 1),   // transformed weights too large to keep: even
        layer(8, 64, 14, 64, 1),     // partial tiles waste 1.3x: even
        layer(8, 32, 56, 32, 1),     // too few channels: even
        layer(8, 128, 28, 128, 2),   // grouped: not measured
        layer(8, 256, 28, 256, 256), // depthwise stays direct
    ] {
        assert!(!winograd::pays_off(&p), "{p:?}");
        assert_ne!(ConvAlgo::Auto.resolve(&p), ConvAlgo::Winograd);
    }
    let strided = params((8, 64, 56, 56), (64, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1);
    assert!(!winograd::applies(&strided) && !winograd::pays_off(&strided));
}

fn sq3(n: usize, c: usize, hw: usize, oc: usize, g: usize) -> Conv2dParams {
    params((n, c, hw, hw), (oc, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), g)
}
