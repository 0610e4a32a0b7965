//! The kernels that replaced TypeScript loops (sum, scale, gradient accumulation, eval-mode batch
//! norm backward) against those loops written out here: the same bits on every SIMD level and
//! thread count, and named errors for wrong lengths. (test/optim_native.test.ts and
//! test/elementwise_native.test.ts check the same kernels through the binding.)
use ferroconv_kernels::batchnorm::{batch_norm2d_backward, BatchNorm2dParams, BnStats};
use ferroconv_kernels::elementwise::{accumulate, scale};
use ferroconv_kernels::reduce::sum;

mod common;
use common::{for_each_level, lock, rand_vec, with_threads};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Lengths around the vector widths and the parallel grain, with awkward values mixed in.
fn inputs(seed: u64) -> Vec<Vec<f32>> {
    [0usize, 1, 7, 13, 33, 70_001]
        .iter()
        .map(|&n| {
            let mut x = rand_vec(n, seed + n as u64, 4.0);
            let odd = [f32::NAN, f32::INFINITY, -0.0, 1e-40, 3e38, -3e38];
            for (i, v) in odd.iter().enumerate() {
                if i * 5 < n {
                    x[i * 5] = *v;
                }
            }
            x
        })
        .collect()
}

#[test]
fn sum_is_the_sequential_double_sum() {
    for x in inputs(1) {
        let want = x.iter().fold(0.0f64, |s, &v| s + v as f64);
        assert_eq!(sum(&x).to_bits(), want.to_bits(), "n {}", x.len());
    }
}

#[test]
fn scale_and_accumulate_match_the_loops_on_every_level_and_thread_count() {
    let guard = lock();
    for (x, g) in inputs(2).into_iter().zip(inputs(3)) {
        let factor = 0.3f64;
        let want_scale: Vec<f32> = x.iter().map(|&v| (v as f64 * factor) as f32).collect();
        let want_acc: Vec<f32> = x.iter().zip(&g).map(|(&a, &b)| a + b).collect();
        for_each_level(&guard, |lvl| {
            for threads in [1, 2] {
                let (s, a) = with_threads(threads, || {
                    let mut s = vec![f32::NAN; x.len()];
                    scale(&x, factor, &mut s).unwrap();
                    let mut a = x.clone();
                    accumulate(&mut a, &g).unwrap();
                    (s, a)
                });
                let tag = format!("n {} {lvl:?} {threads} threads", x.len());
                assert_eq!(bits(&s), bits(&want_scale), "scale {tag}");
                assert_eq!(bits(&a), bits(&want_acc), "accumulate {tag}");
            }
        });
    }
    assert_eq!(
        scale(&[1.0; 3], 2.0, &mut [0.0; 2]).unwrap_err().0,
        "output: expected 3 elements, got 2"
    );
    assert_eq!(
        accumulate(&mut [0.0; 3], &[1.0; 4]).unwrap_err().0,
        "grad: expected 3 elements, got 4"
    );
}

/// The eval-mode batch-norm backward as the TypeScript loop computed it (see the kernel's docs).
fn bn_eval_reference(
    p: &BatchNorm2dParams,
    x: &[f32],
    gy: &[f32],
    w: &[f32],
    rm: &[f32],
    rv: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, plane) = (p.channels, p.height * p.width);
    let mut gi = vec![0.0f32; x.len()];
    let (mut gw, mut gb) = (vec![0.0f32; c], vec![0.0f32; c]);
    for ch in 0..c {
        let invstd = 1.0 / (rv[ch] as f64 + p.eps).sqrt();
        let k = invstd * w[ch] as f64;
        for n in 0..p.batch {
            let start = (n * c + ch) * plane;
            let (mut sw, mut sb) = (0.0f64, 0.0f64);
            for i in start..start + plane {
                gi[i] = (gy[i] as f64 * k) as f32;
                sw += gy[i] as f64 * (x[i] as f64 - rm[ch] as f64) * invstd;
                sb += gy[i] as f64;
            }
            gw[ch] = (gw[ch] as f64 + sw) as f32;
            gb[ch] = (gb[ch] as f64 + sb) as f32;
        }
    }
    (gi, gw, gb)
}

#[test]
fn eval_batch_norm_backward_matches_the_loop() {
    let guard = lock();
    for (n, c, h, w) in [(1, 1, 1, 1), (2, 3, 5, 7), (4, 16, 9, 9), (2, 5, 33, 31)] {
        let p = BatchNorm2dParams::from_shape([n, c, h, w], 0.1, 1e-5).unwrap();
        let len = n * c * h * w;
        let (x, gy) = (rand_vec(len, 4, 3.0), rand_vec(len, 5, 1.0));
        let wt = rand_vec(c, 6, 2.0);
        let rm = rand_vec(c, 7, 1.0);
        let rv: Vec<f32> = rand_vec(c, 8, 1.0).iter().map(|v| v.abs() + 0.1).collect();
        let want = bn_eval_reference(&p, &x, &gy, &wt, &rm, &rv);
        for_each_level(&guard, |lvl| {
            for threads in [1, 2] {
                let (mut gi, mut gw, mut gb) =
                    (vec![f32::NAN; len], vec![f32::NAN; c], vec![f32::NAN; c]);
                with_threads(threads, || {
                    batch_norm2d_backward(
                        &p,
                        &x,
                        &gy,
                        Some(&wt),
                        BnStats::Running {
                            mean: &rm,
                            var: &rv,
                        },
                        &mut gi,
                        Some(&mut gw),
                        Some(&mut gb),
                    )
                    .unwrap()
                });
                let tag = format!("{n}x{c}x{h}x{w} {lvl:?} {threads} threads");
                assert_eq!(bits(&gi), bits(&want.0), "gradInput {tag}");
                assert_eq!(bits(&gw), bits(&want.1), "gradWeight {tag}");
                assert_eq!(bits(&gb), bits(&want.2), "gradBias {tag}");
            }
        });
    }
}
