//! A 1x1 conv reading its input as pieces of channels mapped on the way in
//! (`conv2d_forward_cat_prepared`, DenseNet's concat + batch norm + ReLU + conv in inference)
//! gives bit for bit the concatenation made by `concat_channels_affine` and then the prepared
//! fused forward: on every SIMD level, 1 and 2 threads, with and without the ReLU, on each path
//! (the GEMM packing the pieces, and the fallback that makes the concatenation: the pointwise
//! indirect tiles on AVX-512, batched items, other kernels), plus its argument errors.
use ferroconv_kernels::conv::cat::{conv2d_forward_cat_prepared, CatInput, RowAffine};
use ferroconv_kernels::conv::{
    conv2d_forward_fused_prepared, prepare_forward, Conv2dParams, ConvAlgo, Epilogue,
};
use ferroconv_kernels::elementwise::concat_channels_affine;

mod common;
use common::{fill, for_each_level, lock, with_threads};

/// (name, batch, channels per piece, map side, output channels, kernel side).
type Case = (&'static str, usize, &'static [usize], usize, usize, usize);
const CASES: [Case; 7] = [
    // 400 positions: each item's blocks as a GEMM straight from the pieces.
    ("gemm b1 20x20", 1, &[64, 32, 32], 20, 48, 1),
    // More than 256 input channels: two passes of the GEMM, a zero-channel piece.
    ("gemm b2 two passes", 2, &[300, 0, 32, 17], 20, 40, 1),
    // 14x14 at batch 1 and 7x7 at any batch: the pointwise indirect tiles on AVX-512 (the
    // concatenation made), the GEMM from the pieces elsewhere.
    ("pointwise b1 14x14", 1, &[128, 32, 32, 32], 14, 100, 1),
    (
        "pointwise b3 7x7 two passes",
        3,
        &[256, 32, 32, 17],
        7,
        64,
        1,
    ),
    // Items batched into one GEMM block (14x14 at batch 2): the concatenation is made.
    ("batched b2 14x14", 2, &[64, 32], 14, 32, 1),
    // Not a 1x1 conv: made, then the usual forward.
    ("3x3 b1", 1, &[16, 8], 9, 24, 3),
    ("one piece", 1, &[40], 16, 24, 1),
];

fn params(batch: usize, cin: usize, hw: usize, oc: usize, k: usize) -> Conv2dParams {
    Conv2dParams::from_shapes(
        [batch, cin, hw, hw],
        [oc, cin, k, k],
        [1, 1],
        [k / 2; 4],
        [1, 1],
        1,
    )
    .unwrap()
}

#[test]
fn pieces_give_the_bits_of_the_concatenation() {
    let held = lock();
    for_each_level(&held, |lvl| {
        for threads in [1, 2] {
            for (name, batch, channels, hw, oc, k) in CASES {
                let cin: usize = channels.iter().sum();
                let plane = hw * hw;
                let p = params(batch, cin, hw, oc, k);
                let pieces: Vec<Vec<f32>> = channels
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| fill(batch * c * plane, i as u32 + 1))
                    .collect();
                let views: Vec<&[f32]> = pieces.iter().map(|v| &v[..]).collect();
                let (scale, shift) = (fill(cin, 30), fill(cin, 31));
                let w = fill(p.weight_len(), 32);
                let (ep_scale, ep_shift) = (fill(oc, 33), fill(oc, 34));
                let epilogue = Epilogue {
                    scale: Some(&ep_scale),
                    shift: Some(&ep_shift),
                    residual: None,
                    relu: true,
                };
                let out_len = p.output_len(p.validate().unwrap());
                for relu in [true, false] {
                    let (got, want) = with_threads(threads, || {
                        let prepared = prepare_forward(&p, &w, ConvAlgo::Auto).unwrap();
                        let input = CatInput {
                            pieces: &views,
                            channels,
                            affine: RowAffine {
                                scale: &scale,
                                shift: &shift,
                                relu,
                            },
                        };
                        let mut got = vec![f32::NAN; out_len];
                        conv2d_forward_cat_prepared(
                            &p,
                            &input,
                            &w,
                            &prepared,
                            &epilogue,
                            &mut got,
                            ConvAlgo::Auto,
                        )
                        .unwrap();
                        let mut x = vec![f32::NAN; p.input_len()];
                        concat_channels_affine(
                            &views, channels, batch, plane, &scale, &shift, relu, &mut x,
                        )
                        .unwrap();
                        let mut want = vec![f32::NAN; out_len];
                        conv2d_forward_fused_prepared(
                            &p,
                            &x,
                            &w,
                            &prepared,
                            &epilogue,
                            &mut want,
                            ConvAlgo::Auto,
                        )
                        .unwrap();
                        (got, want)
                    });
                    assert!(
                        want.iter().all(|v| v.is_finite()),
                        "{name}: reference not finite"
                    );
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{name} {lvl:?} {threads} threads relu {relu}: differs from the concatenation"
                    );
                }
            }
        }
    });
}

#[test]
fn bad_pieces_are_errors() {
    let p = params(2, 12, 5, 4, 1);
    let w = fill(p.weight_len(), 1);
    let prepared = prepare_forward(&p, &w, ConvAlgo::Auto).unwrap();
    let (a, b) = (fill(2 * 8 * 25, 2), fill(2 * 4 * 25, 3));
    let (scale, shift) = (fill(12, 4), fill(12, 5));
    let affine = RowAffine {
        scale: &scale,
        shift: &shift,
        relu: true,
    };
    let short = &b[..b.len() - 1];
    type Bad<'a> = (&'a [&'a [f32]], &'a [usize], &'a str);
    let cases: [Bad; 4] = [
        (&[&a, &b], &[8, 4, 1], "channel count per input piece"),
        (&[&a, &b], &[8, 3], "input channels"),
        (&[&a, short], &[8, 4], "input piece 1"),
        (&[], &[], "at least one piece"),
    ];
    let error = |input: CatInput<'_>| {
        let mut y = vec![0.0; p.output_len(p.validate().unwrap())];
        let e = Epilogue::default();
        conv2d_forward_cat_prepared(&p, &input, &w, &prepared, &e, &mut y, ConvAlgo::Auto)
            .unwrap_err()
            .0
    };
    for (pieces, channels, want) in cases {
        let e = error(CatInput {
            pieces,
            channels,
            affine,
        });
        assert!(e.contains(want), "{e}");
    }
    let few = &scale[..11];
    let e = error(CatInput {
        pieces: &[&a, &b],
        channels: &[8, 4],
        affine: RowAffine {
            scale: few,
            shift: &shift,
            relu: false,
        },
    });
    assert!(e.contains("input scale"), "{e}");
}
