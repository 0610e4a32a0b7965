//! Forwards with weights prepared once (`prepare_forward`, as compiled plans keep them) give
//! exactly the results of the plain forwards of the algorithm they resolve to (`auto` takes
//! Winograd on more shapes when the weights are prepared: `resolve_prepared`), for every
//! algorithm, every case of the shared table and the shapes that take Winograd and im2col's
//! shifted and pointwise paths, on every SIMD level and 1 and 2 threads; prepared weights
//! refuse another shape or algorithm.
mod common;

use common::conv::{cases_with, params};
use common::{fill, for_each_level, lock, with_threads};
use ferroconv_kernels::conv::{
    conv2d_forward, conv2d_forward_fused, conv2d_forward_fused_prepared, conv2d_forward_prepared,
    prepare_forward, winograd, Conv2dParams, ConvAlgo, Epilogue,
};

fn shapes() -> Vec<(String, Conv2dParams)> {
    cases_with(vec![
        // Winograd by `auto` (64+ channels, enough tiles).
        (
            "winograd 96->96 @16",
            params((8, 96, 16, 16), (96, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // Winograd by `auto` only when prepared (16 tiles: one item of 16x16).
        (
            "prepared winograd 64->64 @16",
            params((1, 64, 16, 16), (64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // The same, F(2x2, 3x3) (16 tiles of 2x2 on a 7x7 map).
        (
            "prepared winograd F(2x2) 64->96 @7",
            params((1, 64, 7, 7), (96, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // im2col's shifted path (3x3, stride 1, at most 64 output channels).
        (
            "shifted 8->16 @12",
            params((1, 8, 12, 12), (16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // Pointwise, one item, a plane of several blocks; and a batch of small planes.
        (
            "pointwise 32->48 @20",
            params((1, 32, 20, 20), (48, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "batched 7x7 planes 3x3 s2",
            params((3, 40, 14, 14), (24, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        ),
    ])
}

#[test]
fn prepared_forwards_equal_the_plain_ones() {
    let held = lock();
    let algos = [
        ConvAlgo::Auto,
        ConvAlgo::Im2col,
        ConvAlgo::Winograd,
        ConvAlgo::Direct,
        ConvAlgo::Fft,
    ];
    for_each_level(&held, |level| {
        for threads in [1, 2] {
            with_threads(threads, || {
                for (name, p) in shapes() {
                    let out_len = p.output_len(p.validate().unwrap());
                    let x = fill(p.input_len(), 1);
                    let w = fill(p.weight_len(), 2);
                    let bias = fill(p.out_channels, 3);
                    let scale = fill(p.out_channels, 4);
                    let residual = fill(out_len, 5);
                    let ep = Epilogue {
                        scale: Some(&scale),
                        shift: Some(&bias),
                        residual: Some(&residual),
                        relu: true,
                    };
                    for algo in algos {
                        let what = format!("{name} {algo:?} {level:?} {threads} threads");
                        let prepared = prepare_forward(&p, &w, algo).unwrap();
                        let plain = algo.resolve_prepared(&p);
                        let mut want = vec![0f32; out_len];
                        let mut got = vec![f32::NAN; out_len];
                        conv2d_forward_fused(&p, &x, &w, &ep, &mut want, plain).unwrap();
                        conv2d_forward_fused_prepared(&p, &x, &w, &prepared, &ep, &mut got, algo)
                            .unwrap();
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "fused: {what}"
                        );
                        conv2d_forward(&p, &x, &w, Some(&bias), &mut want, plain).unwrap();
                        got.fill(f32::NAN);
                        conv2d_forward_prepared(&p, &x, &w, &prepared, Some(&bias), &mut got, algo)
                            .unwrap();
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "with bias: {what}"
                        );
                    }
                }
            })
        }
    });
}

#[test]
fn prepared_weights_hold_what_their_algorithm_needs() {
    let wino = params((8, 96, 16, 16), (96, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1);
    assert!(winograd::pays_off(&wino));
    let w = fill(wino.weight_len(), 2);
    // Winograd keeps 36 transformed values per (in, out) pair, the GEMM the weights themselves.
    let floats = prepare_forward(&wino, &w, ConvAlgo::Auto).unwrap().floats();
    assert!(floats >= 36 * 96 * 96, "winograd: {floats}");
    let floats = prepare_forward(&wino, &w, ConvAlgo::Im2col)
        .unwrap()
        .floats();
    assert!((wino.weight_len()..2 * wino.weight_len()).contains(&floats));
    assert_eq!(
        prepare_forward(&wino, &w, ConvAlgo::Direct)
            .unwrap()
            .floats(),
        0
    );
}

/// ResNet-50's 3x3 stride-1 layers at batch 1: `auto` keeps im2col for per-call weights but
/// takes Winograd for prepared ones from 16 tiles (14x14 maps) up; 7x7 maps (4 tiles) and the
/// 512-channel layers (whose 36 transformed values per weight would exceed the memory bound)
/// stay on im2col. Batch 8 gives 7x7 maps 32 tiles.
#[test]
fn auto_takes_winograd_for_prepared_weights_where_it_pays_off() {
    let layer = |n, c, hw| params((n, c, hw, hw), (c, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1);
    for (c, hw, per_call, prepared) in [
        (64, 56, ConvAlgo::Winograd, ConvAlgo::Winograd),
        (128, 28, ConvAlgo::Im2col, ConvAlgo::Winograd),
        (256, 14, ConvAlgo::Im2col, ConvAlgo::Winograd),
        // 7x7 at batch 1: F(2x2, 3x3), 16 tiles.
        (512, 7, ConvAlgo::Im2col, ConvAlgo::Winograd),
        (192, 7, ConvAlgo::Im2col, ConvAlgo::Winograd),
        // Too few output channels below 28x28.
        (32, 7, ConvAlgo::Im2col, ConvAlgo::Im2col),
    ] {
        let p = layer(1, c, hw);
        assert_eq!(ConvAlgo::Auto.resolve(&p), per_call, "{c}@{hw}");
        assert_eq!(
            ConvAlgo::Auto.resolve_prepared(&p),
            prepared,
            "{c}@{hw} prepared"
        );
    }
    assert_eq!(
        ConvAlgo::Auto.resolve_prepared(&layer(8, 192, 7)),
        ConvAlgo::Winograd
    );
    // Forced algorithms stay as asked.
    let p = layer(1, 256, 14);
    assert_eq!(ConvAlgo::Im2col.resolve_prepared(&p), ConvAlgo::Im2col);
    let floats = prepare_forward(&p, &fill(p.weight_len(), 2), ConvAlgo::Auto)
        .unwrap()
        .floats();
    assert!(floats >= 36 * 256 * 256, "{floats}");
    // F(2x2, 3x3) keeps 16 transformed values per (in, out) pair.
    let p = layer(1, 512, 7);
    assert_eq!(winograd::tile_side(&p, (7, 7)), 2);
    let floats = prepare_forward(&p, &fill(p.weight_len(), 2), ConvAlgo::Auto)
        .unwrap()
        .floats();
    assert!(
        (16 * 512 * 512..36 * 512 * 512).contains(&floats),
        "{floats}"
    );
}

#[test]
fn prepared_weights_refuse_another_call() {
    let p = params((1, 4, 6, 6), (8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1);
    let q = Conv2dParams { in_h: 7, ..p };
    let w = fill(p.weight_len(), 2);
    let prepared = prepare_forward(&p, &w, ConvAlgo::Im2col).unwrap();
    let x = fill(q.input_len(), 1);
    let mut y = vec![0f32; q.output_len(q.validate().unwrap())];
    let ep = Epilogue::default();
    let e = conv2d_forward_fused_prepared(&q, &x, &w, &prepared, &ep, &mut y, ConvAlgo::Im2col)
        .unwrap_err();
    assert!(e.0.contains("another shape or algorithm"), "{}", e.0);
    let x = fill(p.input_len(), 1);
    let mut y = vec![0f32; p.output_len(p.validate().unwrap())];
    let e = conv2d_forward_fused_prepared(&p, &x, &w, &prepared, &ep, &mut y, ConvAlgo::Winograd)
        .unwrap_err();
    assert!(e.0.contains("another shape or algorithm"), "{}", e.0);
    // A short weight is an Error, not a panic.
    assert!(prepare_forward(&p, &w[1..], ConvAlgo::Im2col).is_err());
}
