//! On a CPU with AVX-512, the AVX-512 level (its own SGEMM and indirect-conv micro-kernels, the
//! AVX2 code elsewhere) gives exactly the bits of the AVX2+FMA level: every conv case of the
//! shared table plus zoo-like shapes that take each path (indirect, Winograd F(4x4) and
//! F(2x2), im2col's pointwise, shifted and batched paths), all three passes, every algorithm,
//! 1 and 2 threads. So what the tests check against PyTorch on one level holds on the other,
//! and a model gives the same outputs on either kind of CPU.
//!
//! 1x1 convs on maps of at most 64 outputs (and 14x14 ones at batch 1) take the indirect path
//! on AVX-512 and the GEMM on AVX2; the indirect tile sums such a conv's input channels in the GEMM's passes, so those
//! agree bit for bit too (the shapes with more than 256 input channels check the passes).
mod common;

use common::conv::{cases_with, params, run};
use common::{lock, with_threads};
use ferroconv_kernels::conv::{
    conv2d_forward, conv2d_forward_fused, Conv2dParams, ConvAlgo, Epilogue,
};
use ferroconv_kernels::simd::{self, SimdLevel};

fn shapes() -> Vec<(String, Conv2dParams)> {
    cases_with(vec![
        // Indirect: few output channels (two panels, then one left over).
        (
            "indirect 64->32 @14",
            params((2, 64, 14, 14), (32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "indirect 24->48 @9 s2",
            params((1, 24, 9, 9), (48, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
        ),
        // Winograd F(4x4) and F(2x2) (7x7 at batch 1).
        (
            "winograd 96->96 @16",
            params((2, 96, 16, 16), (96, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "winograd F(2x2) 64->80 @7",
            params((1, 64, 7, 7), (80, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        // Pointwise: one item, and a batch of 7x7 planes.
        (
            "pointwise 40->72 @20",
            params((1, 40, 20, 20), (72, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "pointwise 50->70 @7",
            params((5, 50, 7, 7), (70, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        // A 7x7 stride-2 stem, im2col with wide rows.
        // More than 256 input channels on a 7x7 map (two GEMM passes), and a stride-2 1x1
        // whose output is 7x7.
        (
            "pointwise 600->40 @7",
            params((2, 600, 7, 7), (40, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        // Batch 1 on 14x14 (indirect on AVX-512): four-, two- and one-panel tiles (7 panels),
        // two passes over the 300 input channels, tasks split over channels as well.
        (
            "pointwise 300->100 @14",
            params(
                (1, 300, 14, 14),
                (100, 1, 1),
                (1, 1),
                (0, 0, 0, 0),
                (1, 1),
                1,
            ),
        ),
        (
            "pointwise 64->144 @7",
            params((1, 64, 7, 7), (144, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "pointwise s2 300->48 @14",
            params(
                (1, 300, 14, 14),
                (48, 1, 1),
                (2, 2),
                (0, 0, 0, 0),
                (1, 1),
                1,
            ),
        ),
        (
            "stem 3->40 @30 s2",
            params((2, 3, 30, 30), (40, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
        ),
    ])
}

#[test]
fn avx512_gives_the_avx2_bits() {
    let _held = lock();
    if !simd::available().contains(&SimdLevel::Avx512) {
        eprintln!("skipped: this CPU has no AVX-512");
        return;
    }
    let algos = [
        ConvAlgo::Auto,
        ConvAlgo::Im2col,
        ConvAlgo::Winograd,
        ConvAlgo::Direct,
    ];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for threads in [1, 2] {
        with_threads(threads, || {
            for (name, p) in shapes() {
                for algo in algos {
                    let mut outs = Vec::new();
                    for lvl in [SimdLevel::Avx2Fma, SimdLevel::Avx512] {
                        assert_eq!(simd::set_level(lvl), lvl);
                        let o = run(&p, algo);
                        outs.push([bits(&o.y), bits(&o.dx), bits(&o.dw), bits(&o.db)]);
                    }
                    for (k, pass) in [
                        "forward",
                        "data gradient",
                        "weight gradient",
                        "bias gradient",
                    ]
                    .iter()
                    .enumerate()
                    {
                        assert!(
                            outs[0][k] == outs[1][k],
                            "{name} {algo:?} {threads} threads: {pass} differs"
                        );
                    }
                }
            }
        })
    }
}

/// The fused forward (scale, shift, residual, ReLU, applied by each path as it writes its
/// output) gives the bits of the plain forward followed by the epilogue as a separate pass,
/// `relu((y * scale + shift) + residual)`, on every level and thread count.
#[test]
fn fused_forward_equals_plain_then_epilogue_on_every_level() {
    let held = lock();
    common::for_each_level(&held, |level| {
        for threads in [1, 2] {
            with_threads(threads, || {
                for (name, p) in shapes() {
                    let (oh, ow) = p.validate().unwrap();
                    let (plane, len) = (oh * ow, p.output_len((oh, ow)));
                    let x = common::fill(p.input_len(), 1);
                    let w = common::fill(p.weight_len(), 2);
                    let scale = common::fill(p.out_channels, 3);
                    let shift = common::fill(p.out_channels, 4);
                    let residual = common::fill(len, 5);
                    for relu in [false, true] {
                        for with_res in [false, true] {
                            let ep = Epilogue {
                                scale: Some(&scale),
                                shift: Some(&shift),
                                residual: with_res.then_some(&residual[..]),
                                relu,
                            };
                            let mut fused = vec![f32::NAN; len];
                            conv2d_forward_fused(&p, &x, &w, &ep, &mut fused, ConvAlgo::Im2col)
                                .unwrap();
                            let mut want = vec![f32::NAN; len];
                            conv2d_forward(&p, &x, &w, None, &mut want, ConvAlgo::Im2col).unwrap();
                            for (i, v) in want.iter_mut().enumerate() {
                                let oc = i / plane % p.out_channels;
                                let mut t = *v * scale[oc] + shift[oc];
                                if with_res {
                                    t += residual[i];
                                }
                                *v = if relu && t < 0.0 { 0.0 } else { t };
                            }
                            let same = fused
                                .iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(
                                same,
                                "{name} {level:?} {threads} threads relu {relu} residual {with_res}"
                            );
                        }
                    }
                }
            })
        }
    });
}
