//! Winograd conv2d, F(4x4, 3x3) and F(2x2, 3x3) (small maps at small batches): forward and input
//! gradient against the reference loop nest with the measured error, on every SIMD level, and
//! the rules that send shapes to it. (Every pass on
//! every shape, fallbacks included: conv_algorithms.rs.)
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

use common::conv::*;
use common::*;
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, reference, winograd,
    BackwardData, BackwardWeight, Conv2dParams, ConvAlgo, Forward,
};

const WINO_TOL: f64 = 5e-5;

/// The table's shapes Winograd computes itself.
fn wino_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|c| winograd::applies(&c.p))
        .collect()
}

/// A 7x7 map at batch 1: 4 tiles of 4x4, so F(2x2, 3x3) (16 tiles of 2x2).
fn big_small_tiles_case() -> Case {
    Case {
        name: "256 channels 7x7, batch 1",
        p: params((1, 256, 7, 7), (256, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    }
}

fn side(p: &Conv2dParams) -> usize {
    winograd::tile_side(p, p.validate().unwrap())
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
    reference::forward(Forward::new(p, hw, &x, &w, &mut y_ref), Some(&b));
    reference::backward_data(BackwardData::new(p, hw, &gy, &w, &mut dx_ref));
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
    let wino = wino_cases();
    assert!(wino.len() >= 20, "only {} winograd cases", wino.len());
    // Both tile sizes, on several shapes each (the forward's side; backward data's follows its
    // own shape, the output gradient's map).
    for m in [2, 4] {
        let n = wino.iter().filter(|c| side(&c.p) == m).count();
        assert!(n >= 5, "only {n} cases of F({m}x{m}, 3x3)");
    }
    assert_eq!(side(&big_case().p), 4);
    assert_eq!(side(&big_small_tiles_case().p), 2);
    let _guard = lock();
    for_each_level(&_guard, |lvl| {
        for c in wino.iter().chain([&big_case(), &big_small_tiles_case()]) {
            assert!(winograd::applies(&c.p), "{}", c.name);
            let (ey, ex) = check(&c.p, c.name);
            println!(
                "winograd F({m}x{m}) {} {}: normwise error forward {ey:.2e}, backward data {ex:.2e}",
                lvl.name(),
                c.name,
                m = side(&c.p),
            );
        }
    });
}

/// The weight gradient (F(2x2, 3x3) run backwards) against the reference on every table shape
/// Winograd applies to, on every SIMD level, and on layers of many blocks: odd maps (partial 2x2
/// blocks of the output gradient), pads 0 and 2, two groups, and enough tiles that two threads
/// each sum their own blocks (the private sums added at the end) at one and two threads. Its
/// constants are 1 and 1/2, so the error is a GEMM's: measured normwise 2e-7 to 3e-6 (conv_bench
/// against im2col: 2e-7 to 3e-6 on the zoo's layers).
#[test]
fn winograd_weight_gradient_matches_reference() {
    let many = [
        params(
            (16, 16, 41, 37),
            (24, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        params((6, 8, 33, 30), (12, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 2),
        params((3, 6, 25, 27), (10, 3, 3), (1, 1), (2, 2, 2, 2), (1, 1), 1),
    ];
    let check_dw = |p: &Conv2dParams, name: &str| {
        let hw = p.validate().unwrap();
        let (x, _w, _b, gy) = inputs(p);
        let (mut dw, mut db) = (
            vec![f32::NAN; p.weight_len()],
            vec![f32::NAN; p.out_channels],
        );
        conv2d_backward_weight(p, &x, &gy, &mut dw, Some(&mut db), ConvAlgo::Winograd).unwrap();
        let (mut dw_ref, mut db_ref) = (vec![0.0; dw.len()], vec![0.0; db.len()]);
        let grads = (&mut dw_ref[..], Some(&mut db_ref[..]));
        reference::backward_weight(BackwardWeight::new(p, hw, &x, &gy, grads));
        let e = norm_err(&format!("{name} backward weight"), &dw, &dw_ref);
        assert_close(
            &format!("{name} backward weight {p:?}"),
            &dw,
            &dw_ref,
            1e-5,
            1e-5,
        );
        assert_close(&format!("{name} bias {p:?}"), &db, &db_ref, 1e-5, 1e-5);
        e
    };
    let _guard = lock();
    for_each_level(&_guard, |lvl| {
        for c in wino_cases()
            .iter()
            .chain([&big_case(), &big_small_tiles_case()])
        {
            let e = check_dw(&c.p, c.name);
            println!(
                "winograd weight gradient {} {}: normwise error {e:.2e}",
                lvl.name(),
                c.name
            );
        }
    });
    for (i, p) in many.iter().enumerate() {
        for threads in [1, 2] {
            with_threads(threads, || {
                check_dw(p, &format!("layer {i}, {threads} threads"))
            });
        }
    }
}

#[test]
fn winograd_one_and_two_threads_agree_exactly_on_a_large_layer() {
    // Every output is made by one GEMM call and one transform in a fixed order, whatever the
    // pool size (the GEMM itself splits C, never the sum).
    let _guard = lock();
    for c in [big_case(), big_small_tiles_case()] {
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
