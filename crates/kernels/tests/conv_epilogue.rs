//! conv2d_forward_fused (per-channel scale/shift, residual add, ReLU after the sum) against the
//! reference conv followed by the same epilogue written out plainly, for every algorithm, on both
//! SIMD paths and 1 and 2 threads; plus the shapes of im2col's tiling (pointwise, batched small
//! planes, several position blocks) and bad-argument errors.
mod common;

use common::conv::{cases, params};
use common::{assert_close, fill, levels, lock};
use ferroconv_kernels::conv::{
    conv2d_forward, conv2d_forward_fused, reference, winograd, Conv2dParams, ConvAlgo, Epilogue,
    Forward,
};
use ferroconv_kernels::simd::{self, SimdLevel};

struct Parts {
    scale: Option<Vec<f32>>,
    shift: Option<Vec<f32>>,
    residual: Option<Vec<f32>>,
    relu: bool,
}

impl Parts {
    fn epilogue(&self) -> Epilogue<'_> {
        Epilogue {
            scale: self.scale.as_deref(),
            shift: self.shift.as_deref(),
            residual: self.residual.as_deref(),
            relu: self.relu,
        }
    }
}

/// Every combination of the four parts (16), with values from `p`'s shape.
fn combos(p: &Conv2dParams) -> Vec<Parts> {
    let out_len = p.output_len(p.validate().unwrap());
    (0..16)
        .map(|m| Parts {
            // Scales around 1 with some negative, as folded batch norms give.
            scale: (m & 1 != 0).then(|| {
                fill(p.out_channels, 11)
                    .iter()
                    .map(|v| 1.5 * v + 0.2)
                    .collect()
            }),
            shift: (m & 2 != 0).then(|| fill(p.out_channels, 12)),
            residual: (m & 4 != 0).then(|| fill(out_len, 13)),
            relu: m & 8 != 0,
        })
        .collect()
}

/// The reference conv, then the epilogue one element at a time in f64.
fn expected(p: &Conv2dParams, parts: &Parts) -> Vec<f32> {
    let hw = p.validate().unwrap();
    let x = fill(p.input_len(), 1);
    let w = fill(p.weight_len(), 2);
    let mut y = vec![0.0; p.output_len(hw)];
    reference::forward(Forward::new(p, hw, &x, &w, &mut y), None);
    let plane = hw.0 * hw.1;
    for (i, v) in y.iter_mut().enumerate() {
        let oc = (i / plane) % p.out_channels;
        let mut t = *v as f64;
        t *= parts.scale.as_ref().map_or(1.0, |s| s[oc] as f64);
        t += parts.shift.as_ref().map_or(0.0, |s| s[oc] as f64);
        t += parts.residual.as_ref().map_or(0.0, |r| r[i] as f64);
        if parts.relu && t < 0.0 {
            t = 0.0;
        }
        *v = t as f32;
    }
    y
}

fn fused(p: &Conv2dParams, parts: &Parts, algo: ConvAlgo) -> Vec<f32> {
    let x = fill(p.input_len(), 1);
    let w = fill(p.weight_len(), 2);
    let mut y = vec![f32::NAN; p.output_len(p.validate().unwrap())];
    conv2d_forward_fused(p, &x, &w, &parts.epilogue(), &mut y, algo).unwrap();
    y
}

fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Shapes that exercise im2col's forward paths: a pointwise conv straight from the input planes,
/// small planes batched several items per GEMM (7x7, as ResNet's last stage), planes cut into
/// several position blocks (and a single item's few blocks, lowered whole on several threads),
/// channels not a multiple of 8.
fn tiling_cases() -> Vec<(&'static str, Conv2dParams)> {
    vec![
        (
            "pointwise 14x14 b3",
            params((3, 24, 14, 14), (20, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "pointwise 7x7 b8 batched",
            params((8, 16, 7, 7), (12, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "3x3 7x7 b5 batched",
            params((5, 9, 7, 7), (11, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "3x3 several blocks",
            params((2, 70, 40, 40), (10, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            // On 2 threads: too few blocks to share, so the whole plane is lowered at once.
            "3x3 one item, two blocks",
            params((1, 64, 14, 14), (40, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "1x1 stride 2 b2",
            params((2, 8, 9, 9), (6, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            // Strided 1x1 convs run on a subsampled copy of the input: strides of 3 and odd
            // sizes, so rows and columns end between strides.
            "1x1 stride 3x2 b3",
            params((3, 10, 10, 11), (7, 1, 1), (3, 2), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "1x1 stride 2x3 b1",
            params((1, 33, 17, 20), (9, 1, 1), (2, 3), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            // Output planes of 256+ positions: subsampled and run one item at a time.
            "1x1 stride 2 b3, item by item",
            params((3, 5, 33, 34), (4, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
        ),
        (
            "1x1 stride 2 b2, 2 groups",
            params((2, 8, 9, 9), (6, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 2),
        ),
    ]
}

#[test]
fn fused_matches_reference_every_algo_and_combo() {
    let _g = lock();
    let mut all: Vec<(&str, Conv2dParams)> = cases().into_iter().map(|c| (c.name, c.p)).collect();
    all.extend(tiling_cases());
    for level in levels() {
        simd::set_level(level);
        for (name, p) in &all {
            for algo in [
                ConvAlgo::Auto,
                ConvAlgo::Im2col,
                ConvAlgo::Direct,
                ConvAlgo::Fft,
                ConvAlgo::Winograd,
            ] {
                for (k, parts) in combos(p).iter().enumerate() {
                    let what = format!("{name} {algo:?} combo {k} {}", level.name());
                    // FFT and Winograd round more than the direct sums (as in their own tests).
                    let tol = if matches!(algo, ConvAlgo::Fft | ConvAlgo::Winograd) {
                        1e-4
                    } else {
                        2e-5
                    };
                    assert_close(&what, &fused(p, parts, algo), &expected(p, parts), tol, tol);
                }
            }
        }
    }
}

#[test]
fn scalar_and_avx2_and_thread_counts_agree() {
    let _g = lock();
    for (name, p) in tiling_cases() {
        let parts = &combos(&p)[15];
        simd::set_level(simd::detected());
        let avx = in_pool(1, || fused(&p, parts, ConvAlgo::Im2col));
        let avx2t = in_pool(2, || fused(&p, parts, ConvAlgo::Im2col));
        simd::set_level(SimdLevel::Scalar);
        let scalar = in_pool(2, || fused(&p, parts, ConvAlgo::Im2col));
        simd::set_level(simd::detected());
        // The GEMM splits C, never its sum, so thread counts agree exactly.
        assert_eq!(avx, avx2t, "{name}: 1 vs 2 threads");
        assert_close(
            &format!("{name}: scalar vs avx2"),
            &scalar,
            &avx,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn bias_only_epilogue_equals_plain_forward() {
    let _g = lock();
    for (name, p) in tiling_cases() {
        let x = fill(p.input_len(), 1);
        let w = fill(p.weight_len(), 2);
        let b = fill(p.out_channels, 3);
        let len = p.output_len(p.validate().unwrap());
        let mut plain = vec![0.0; len];
        let mut with_epi = vec![0.0; len];
        conv2d_forward(&p, &x, &w, Some(&b), &mut plain, ConvAlgo::Auto).unwrap();
        conv2d_forward_fused(
            &p,
            &x,
            &w,
            &Epilogue::bias(Some(&b)),
            &mut with_epi,
            ConvAlgo::Auto,
        )
        .unwrap();
        assert_eq!(plain, with_epi, "{name}");
    }
}

#[test]
fn relu_keeps_nan() {
    let p = params((1, 2, 3, 3), (2, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1);
    let mut x = fill(p.input_len(), 1);
    x[0] = f32::NAN;
    let w = vec![1.0; p.weight_len()];
    let mut y = vec![0.0; 18];
    let epi = Epilogue {
        relu: true,
        ..Epilogue::default()
    };
    conv2d_forward_fused(&p, &x, &w, &epi, &mut y, ConvAlgo::Im2col).unwrap();
    assert!(y[0].is_nan() && y[9].is_nan());
}

/// The same on the GEMM's path (a 1x1 conv of one item on a 20x20 map, which the pointwise
/// indirect tiles do not take): NaN sums stay NaN through scale, shift and ReLU on every level.
#[test]
fn relu_keeps_nan_on_the_gemm_path() {
    let held = common::lock();
    let p = params((1, 8, 20, 20), (8, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1);
    let mut x = fill(p.input_len(), 1);
    x[0] = f32::NAN;
    x[37] = f32::NAN;
    let w = vec![1.0; p.weight_len()];
    let (scale, shift) = (vec![0.5; 8], vec![-100.0; 8]);
    let epi = Epilogue {
        scale: Some(&scale),
        shift: Some(&shift),
        relu: true,
        ..Epilogue::default()
    };
    common::for_each_level(&held, |lvl| {
        let mut y = vec![0.0; 8 * 400];
        conv2d_forward_fused(&p, &x, &w, &epi, &mut y, ConvAlgo::Im2col).unwrap();
        for (i, v) in y.iter().enumerate() {
            let nan = i % 400 == 0 || i % 400 == 37;
            assert_eq!(v.is_nan(), nan, "{lvl:?} at {i}: {v}");
            assert!(
                nan || *v == 0.0,
                "{lvl:?} at {i}: {v} (every sum is below 100)"
            );
        }
    });
}

#[test]
fn bad_lengths_name_the_argument() {
    let p = params((2, 3, 5, 5), (4, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1);
    let x = fill(p.input_len(), 1);
    let w = fill(p.weight_len(), 2);
    let mut y = vec![0.0; 200];
    let short = vec![1.0; 3];
    let res = vec![0.0; 199];
    let err = |e: Epilogue<'_>, y: &mut [f32]| {
        conv2d_forward_fused(&p, &x, &w, &e, y, ConvAlgo::Auto)
            .unwrap_err()
            .0
    };
    let scale_only = Epilogue {
        scale: Some(&short),
        ..Epilogue::default()
    };
    assert_eq!(err(scale_only, &mut y), "scale: expected 4 elements, got 3");
    assert_eq!(
        err(Epilogue::bias(Some(&short)), &mut y),
        "shift: expected 4 elements, got 3"
    );
    let residual = Epilogue {
        residual: Some(&res),
        ..Epilogue::default()
    };
    assert_eq!(
        err(residual, &mut y),
        "residual: expected 200 elements, got 199"
    );
    assert_eq!(
        err(Epilogue::default(), &mut y[..10]),
        "output: expected 200 elements, got 10"
    );
}

/// Shapes Winograd computes itself (`winograd::applies`): partial tiles, narrow planes packed
/// several tile rows to a lane chunk, a plane wider than one chunk, asymmetric padding, groups,
/// and enough tile rows for parallel blocks.
fn winograd_cases() -> Vec<(&'static str, Conv2dParams)> {
    vec![
        (
            "wino 13x11 partial tiles b2",
            params((2, 16, 13, 11), (12, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "wino wide 6x70",
            params((1, 8, 6, 70), (10, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
        (
            "wino asymmetric pad groups 2",
            params((3, 8, 9, 10), (6, 3, 3), (1, 1), (0, 2, 1, 0), (1, 1), 2),
        ),
        (
            "wino many blocks",
            params((4, 20, 40, 40), (24, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        ),
    ]
}

#[test]
fn winograd_applies_epilogue_in_its_output_transform() {
    let _g = lock();
    for level in levels() {
        simd::set_level(level);
        for (name, p) in winograd_cases() {
            assert!(winograd::applies(&p), "{name}");
            for (k, parts) in combos(&p).iter().enumerate() {
                let what = format!("{name} combo {k} {}", level.name());
                let one = in_pool(1, || fused(&p, parts, ConvAlgo::Winograd));
                let two = in_pool(2, || fused(&p, parts, ConvAlgo::Winograd));
                assert_close(&what, &one, &expected(&p, parts), 1e-4, 1e-4);
                assert_close(&format!("{what} 2 threads"), &two, &one, 1e-6, 1e-6);
                // Winograd rounds differently from im2col's direct sums: bit-equal results
                // would mean it fell back to im2col instead of running its own transform.
                let im2col = fused(&p, parts, ConvAlgo::Im2col);
                assert_ne!(one, im2col, "{what}: Winograd fell back to im2col");
            }
        }
    }
}
