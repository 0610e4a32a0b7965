//! The FFT conv2d on shapes large enough to tile (forward, backward data, backward weight, bias)
//! against the reference loop nest and finite differences, on every SIMD level and on 1 and 2
//! threads, and the rules that send shapes to it. (The common shapes: conv_algorithms.rs.)
//!
//! Tolerance: FFT rounding is spread over a whole tile rather than tied to each output, so
//! errors are measured normwise: `|got - want| <= FFT_TOL * max|want|` (plus a 1e-5 relative
//! term). Measured worst normwise errors (f32, both SIMD paths, printed with `--nocapture`):
//! at most 2.8e-7 over these shapes, and 3e-6 against the direct results on the benchmark layers
//! (`examples/conv_bench.rs`: up to 2112-bin grids and 256-channel sums). `FFT_TOL` keeps about
//! 7x headroom over the latter, well inside the 1e-3 relative error asked of it.
mod common;

use common::conv::*;
use common::*;
use ferroconv_kernels::conv::{fft, Conv2dParams, ConvAlgo};

const FFT_TOL: f64 = 2e-5;

/// Shapes large enough that the FFT cuts planes into several overlap-save tiles, with partial
/// tiles at the edges, padding inside edge tiles, strides and dilation across tile borders.
fn tiled_cases() -> Vec<Case> {
    let c = |name, p| Case { name, p };
    vec![
        c(
            "tiled asym pad",
            params((2, 8, 45, 38), (8, 3, 3), (1, 1), (1, 2, 0, 1), (1, 1), 1),
        ),
        c(
            "tiled 5x5 s2 g2",
            params((1, 6, 50, 41), (6, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 2),
        ),
        c(
            "tiled dilation 2",
            params((2, 4, 47, 33), (4, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
        ),
        c(
            "tiled depthwise",
            params((1, 8, 60, 30), (8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
        ),
        c(
            "tiled 7x7 s2",
            params((1, 3, 64, 70), (8, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
        c(
            "tiled 3x3",
            params((2, 12, 36, 36), (12, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
    ]
}

#[test]
fn fft_tiled_matches_reference() {
    for c in tiled_cases() {
        let (_, tiles) = fft::grid_for(&c.p).unwrap();
        assert!(tiles.0 * tiles.1 > 1, "{} is not tiled: {tiles:?}", c.name);
        let worst = check_against_reference(&c.p, c.name, ConvAlgo::Fft, 1e-5, FFT_TOL);
        println!(
            "fft {}: tiles {tiles:?}, worst normwise error {worst:.2e}",
            c.name
        );
    }
}

#[test]
fn fft_gradients_match_finite_differences() {
    for c in tiled_cases().into_iter().take(2) {
        check_finite_differences(&c.p, c.name, ConvAlgo::Fft, 2e-3);
    }
}

#[test]
fn fft_simd_levels_agree() {
    let _guard = lock();
    for c in tiled_cases() {
        let runs = for_each_level(&_guard, |_| run(&c.p, ConvAlgo::Fft));
        let (s, v) = (&runs[0], runs.last().unwrap());
        for (what, a, b) in [
            ("y", &s.y, &v.y),
            ("dx", &s.dx, &v.dx),
            ("dw", &s.dw, &v.dw),
        ] {
            assert_close(&format!("{} {what}", c.name), a, b, 1e-5, 1e-5);
        }
        assert_eq!(s.db, v.db);
    }
}

#[test]
fn fft_one_and_two_threads_agree_exactly() {
    // Every output float is computed by one task in a fixed order whatever the pool size.
    let _guard = lock();
    for c in tiled_cases() {
        let one = with_threads(1, || run(&c.p, ConvAlgo::Fft));
        let two = with_threads(2, || run(&c.p, ConvAlgo::Fft));
        assert_eq!(one.y, two.y, "{}", c.name);
        assert_eq!(one.dx, two.dx, "{}", c.name);
        assert_eq!(one.dw, two.dw, "{}", c.name);
        assert_eq!(one.db, two.db, "{}", c.name);
    }
}

#[test]
fn pays_off_follows_the_measurements() {
    let layer = |c, hw, k, s, g| {
        params(
            (8, c, hw, hw),
            (c, k, k),
            (s, s),
            (k / 2, k / 2, k / 2, k / 2),
            (1, 1),
            g,
        )
    };
    assert!(fft::pays_off(&layer(64, 28, 5, 1, 1)));
    assert!(fft::pays_off(&layer(32, 28, 7, 1, 1)));
    assert!(fft::pays_off(&layer(256, 28, 3, 1, 1)));
    assert!(!fft::pays_off(&layer(64, 56, 3, 1, 1)));
    assert!(!fft::pays_off(&layer(16, 56, 7, 1, 1)));
    assert!(!fft::pays_off(&layer(64, 56, 7, 2, 1)));
    assert!(!fft::pays_off(&layer(256, 28, 5, 1, 256)));
}

#[test]
fn auto_picks_fft_where_it_beat_im2col() {
    use ferroconv_kernels::conv::ConvPass::{self, BackwardData, BackwardWeight, Forward};
    const ALL: [ConvPass; 3] = [Forward, BackwardData, BackwardWeight];
    let conv = |n, c, hw, oc, k, s| {
        let pad = k / 2;
        params(
            (n, c, hw, hw),
            (oc, k, k),
            (s, s),
            (pad, pad, pad, pad),
            (1, 1),
            1,
        )
    };
    let auto = |p: &Conv2dParams, pass| ConvAlgo::Auto.resolve_for(p, pass);
    // AlexNet features.3, 5x5 32-channel and 7x7 stride-1 layers at batch 8: every pass.
    for p in [
        conv(8, 64, 27, 192, 5, 1),
        conv(8, 32, 28, 32, 5, 1),
        conv(8, 64, 28, 64, 7, 1),
    ] {
        for pass in ALL {
            assert!(fft::beats_im2col(&p, pass), "{p:?} {pass:?}");
            assert_eq!(auto(&p, pass), ConvAlgo::Fft, "{p:?} {pass:?}");
        }
    }
    // 5x5 256@14: the forward only.
    let small = conv(8, 256, 14, 256, 5, 1);
    assert_eq!(auto(&small, Forward), ConvAlgo::Fft);
    assert_eq!(auto(&small, BackwardData), ConvAlgo::Im2col);
    assert_eq!(auto(&small, BackwardWeight), ConvAlgo::Im2col);
    assert_eq!(ConvAlgo::Auto.resolve(&small), ConvAlgo::Fft);
    // Batch 1, the stride-2 7x7 stems, LeNet's few channels, 3x3 layers and grouped convs keep
    // their algorithms.
    let mut grouped = conv(8, 64, 28, 64, 5, 1);
    grouped.groups = 2;
    for p in [
        conv(1, 64, 27, 192, 5, 1),
        conv(8, 3, 224, 64, 7, 2),
        conv(8, 6, 14, 16, 5, 1),
        conv(8, 256, 28, 256, 3, 1),
        grouped,
    ] {
        for pass in ALL {
            assert!(!fft::beats_im2col(&p, pass), "{p:?} {pass:?}");
            assert_ne!(auto(&p, pass), ConvAlgo::Fft, "{p:?} {pass:?}");
        }
    }
}
