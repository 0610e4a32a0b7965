//! Throughput of the conv2d algorithms on typical CNN layers, forward and both backwards:
//! `cargo run -p ferroconv-kernels --release --example conv_bench [threads] [algo,...] [mode] [filter]`
//! (mode: sweep, losers, pointwise, zoo, stride1, fused, wino; filter: keep the layers whose name contains it).
//! `losers` runs the zoo layers that lost to PyTorch at batch 8 instead.
//! `fused` times the inference forward with a full epilogue (scale, shift, residual, ReLU) on
//! the `wino` layers, each algo fused and, as "+pass", plain then a separate epilogue pass.
//! `zoo` runs the model zoo's 5x5 and 7x7 layers (AlexNet features.3, the 7x7 stride-2 stems,
//! LeNet's 5x5s) at batch 8, every pass.
//! `sweep` adds stride-1 layers over kernel size, spatial size and channels (forward only) to
//! show where FFT overtakes direct summation.
//! GFLOP/s counts `2 * MACs` of the forward for every pass, so the columns compare directly.
//! Also prints how far FFT results are from the direct ones (normwise), as a check at sizes the
//! unit tests do not reach.
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, conv2d_forward_fused,
    Conv2dParams, ConvAlgo, Epilogue,
};
use rayon::prelude::*;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
fn layer(
    n: usize,
    c: usize,
    hw: usize,
    oc: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Conv2dParams {
    Conv2dParams::from_shapes(
        [n, c, hw, hw],
        [oc, c / groups, k, k],
        [stride, stride],
        [pad; 4],
        [1, 1],
        groups,
    )
    .expect("layer")
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

/// CPU time used so far by all threads of this process, in seconds (Linux schedstat; 0 where
/// unavailable). On a shared machine wall time includes waiting for a core; CPU time does not.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}

/// Timed runs after one warm-up, for at least half a second: (best wall seconds, mean CPU
/// seconds per run per thread). Linux accounts CPU time in scheduler ticks, so it is only
/// meaningful summed over many runs.
fn time(threads: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let c = cpu_seconds();
    let mut runs = 0;
    while runs < 3 || (runs < 200 && start.elapsed().as_secs_f64() < 0.5) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    (best, (cpu_seconds() - c) / threads as f64 / runs as f64)
}

fn norm_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let worst = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    worst / scale.max(f64::MIN_POSITIVE)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let algos: Vec<ConvAlgo> = args
        .next()
        .map(|s| {
            s.split(',')
                .map(|a| ConvAlgo::parse(a).expect("algo"))
                .collect()
        })
        .unwrap_or_else(|| vec![ConvAlgo::Direct, ConvAlgo::Fft]);
    let mode = args.next();
    // An optional fourth argument keeps only the layers whose name contains it.
    let only = args.next();
    let sweep = mode.as_deref() == Some("sweep");
    let fused = mode.as_deref() == Some("fused");
    let wino = fused || mode.as_deref() == Some("wino");
    let losers = mode.as_deref() == Some("losers");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let mut layers = vec![
        (
            "3x3 64->64 56x56 b8".to_string(),
            layer(8, 64, 56, 64, 3, 1, 1, 1),
        ),
        (
            "3x3 64->64 56x56 b1".to_string(),
            layer(1, 64, 56, 64, 3, 1, 1, 1),
        ),
        (
            "1x1 256->64 56x56 b8".to_string(),
            layer(8, 256, 56, 64, 1, 1, 0, 1),
        ),
        (
            "3x3 512->512 7x7 b8".to_string(),
            layer(8, 512, 7, 512, 3, 1, 1, 1),
        ),
        (
            "7x7 s2 3->64 224 b8".to_string(),
            layer(8, 3, 224, 64, 7, 2, 3, 1),
        ),
        (
            "5x5 32->32 28x28 b8".to_string(),
            layer(8, 32, 28, 32, 5, 1, 2, 1),
        ),
        (
            "7x7 32->32 28x28 b8".to_string(),
            layer(8, 32, 28, 32, 7, 1, 3, 1),
        ),
        (
            "11x11 s4 3->64 224 b8".to_string(),
            layer(8, 3, 224, 64, 11, 4, 2, 1),
        ),
        (
            "dw 3x3 256 28x28 b8".to_string(),
            layer(8, 256, 28, 256, 3, 1, 1, 256),
        ),
    ];
    if wino {
        layers.clear();
        for (c, hw, net) in [
            (64, 56, "r50"),
            (128, 28, "r50"),
            (256, 14, "r50"),
            (512, 7, "r50"),
            (64, 224, "vgg"),
            (256, 56, "vgg"),
        ] {
            let name = format!("{net} 3x3 {c}->{c} {hw}x{hw} b8");
            layers.push((name, layer(8, c, hw, c, 3, 1, 1, 1)));
        }
    }
    if losers {
        // Zoo layers that lost to PyTorch at batch 8 (bench:compare section 1).
        layers.clear();
        for (c, hw, oc, k, s, pad) in [
            (256, 28, 128, 1, 1, 0),
            (256, 28, 32, 1, 1, 0),
            (16, 28, 32, 3, 1, 1),
            (24, 14, 64, 3, 1, 1),
            (3, 224, 64, 11, 4, 2),
            (384, 13, 256, 3, 1, 1),
            (512, 14, 512, 3, 1, 1),
            (128, 28, 32, 3, 1, 1),
            (128, 14, 32, 3, 1, 1),
            (1024, 14, 2048, 1, 2, 0),
            (64, 56, 128, 3, 2, 1),
            (128, 56, 128, 3, 2, 1),
            (256, 28, 256, 3, 2, 1),
            (512, 14, 512, 3, 2, 1),
            (3, 224, 64, 7, 2, 3),
        ] {
            let name = format!("{k}x{k} s{s} {c}->{oc} @{hw}");
            layers.push((name, layer(8, c, hw, oc, k, s, pad, 1)));
        }
    }
    if mode.as_deref() == Some("stride1") {
        // The zoo's stride-1 convs with a kernel larger than 1x1 at batch 8, over the range
        // of in/out channel ratios: where the input gradient runs as a forward conv.
        layers.clear();
        for (c, hw, oc, k) in [
            (128, 56, 32, 3),
            (128, 28, 32, 3),
            (128, 14, 32, 3),
            (128, 7, 32, 3),
            (96, 28, 128, 3),
            (128, 28, 192, 3),
            (96, 14, 208, 3),
            (144, 14, 288, 3),
            (160, 7, 320, 3),
            (192, 7, 384, 3),
            (16, 28, 32, 5),
            (32, 28, 96, 5),
            (24, 14, 64, 5),
            (48, 7, 128, 5),
            (64, 27, 192, 5),
            (192, 13, 384, 3),
            (384, 13, 256, 3),
            (256, 13, 256, 3),
            (3, 224, 64, 3),
            (64, 112, 128, 3),
            (256, 28, 512, 3),
            (512, 28, 512, 3),
            (128, 28, 128, 3),
            (256, 14, 256, 3),
            (512, 14, 512, 3),
            (512, 7, 512, 3),
            (64, 56, 64, 3),
        ] {
            let name = format!("{k}x{k} {c}->{oc} @{hw}");
            layers.push((name, layer(8, c, hw, oc, k, 1, k / 2, 1)));
        }
    }
    if mode.as_deref() == Some("pointwise") {
        // The zoo's 1x1 convs at batch 8 that lost to PyTorch, beside neighbours that did not.
        layers.clear();
        for (c, hw, oc, s) in [
            (640, 14, 128, 1),
            (608, 14, 128, 1),
            (672, 14, 128, 1),
            (528, 14, 128, 1),
            (512, 14, 128, 1),
            (416, 14, 128, 1),
            (256, 14, 128, 1),
            (160, 28, 128, 1),
            (128, 28, 128, 1),
            (736, 7, 128, 1),
            (704, 7, 128, 1),
            (544, 7, 128, 1),
            (832, 7, 48, 1),
            (512, 7, 2048, 1),
            (2048, 7, 512, 1),
            (64, 56, 64, 1),
            (1024, 14, 2048, 2),
            (1024, 7, 2048, 1),
            (512, 28, 1024, 2),
            (512, 14, 1024, 1),
        ] {
            let name = format!("1x1 s{s} {c}->{oc} @{hw}");
            layers.push((name, layer(8, c, hw, oc, 1, s, 0, 1)));
        }
    }
    if mode.as_deref() == Some("zoo") {
        layers = vec![
            (
                "alexnet f.3 5x5 64->192 27".to_string(),
                layer(8, 64, 27, 192, 5, 1, 2, 1),
            ),
            (
                "alexnet f.3 b1".to_string(),
                layer(1, 64, 27, 192, 5, 1, 2, 1),
            ),
            (
                "5x5 32->32 28 b8".to_string(),
                layer(8, 32, 28, 32, 5, 1, 2, 1),
            ),
            (
                "5x5 256->256 14 b8".to_string(),
                layer(8, 256, 14, 256, 5, 1, 2, 1),
            ),
            (
                "7x7 64->64 28 s1 b8".to_string(),
                layer(8, 64, 28, 64, 7, 1, 3, 1),
            ),
            (
                "stem 7x7 s2 3->64 224".to_string(),
                layer(8, 3, 224, 64, 7, 2, 3, 1),
            ),
            (
                "lenet c1 5x5 1->6 28".to_string(),
                layer(8, 1, 28, 6, 5, 1, 2, 1),
            ),
            (
                "lenet c3 5x5 6->16 14".to_string(),
                layer(8, 6, 14, 16, 5, 1, 0, 1),
            ),
        ];
    }
    if sweep {
        layers.clear();
        for c in [16, 64, 256] {
            for hw in [14, 28, 56] {
                for k in [3, 5, 7] {
                    let name = format!("{k}x{k} {c}->{c} {hw}x{hw} b8");
                    layers.push((name, layer(8, c, hw, c, k, 1, k / 2, 1)));
                }
            }
        }
    }
    if let Some(o) = &only {
        layers.retain(|(name, _)| name.contains(o.as_str()));
    }
    println!(
        "{threads} threads, simd {}; GFLOP/s by wall time / by CPU time per thread",
        ferroconv_kernels::simd::level().name()
    );
    if fused {
        bench_fused(&pool, threads, &layers, &algos);
        return;
    }
    println!(
        "{:<24} {:<7} {:>17} {:>17} {:>17}",
        "layer", "algo", "forward", "backward data", "backward weight"
    );
    for (name, p) in &layers {
        let (name, p) = (name.as_str(), *p);
        let out_len = p.output_len(p.validate().expect("shape"));
        let x = fill(p.input_len(), 1);
        let w = fill(p.weight_len(), 2);
        let b = fill(p.out_channels, 3);
        let gy = fill(out_len, 4);
        let mut results: Vec<[Vec<f32>; 3]> = Vec::new();
        for &algo in &algos {
            let mut y = vec![0.0; out_len];
            let mut dx = vec![0.0; x.len()];
            let mut dw = vec![0.0; w.len()];
            let mut db = vec![0.0; b.len()];
            let skip = (f64::NAN, f64::NAN);
            let t = pool.install(|| {
                [
                    time(threads, || {
                        conv2d_forward(&p, &x, &w, Some(&b), &mut y, algo).expect("fwd")
                    }),
                    if sweep {
                        skip
                    } else {
                        time(threads, || {
                            conv2d_backward_data(&p, &gy, &w, &mut dx, algo).expect("bwd data")
                        })
                    },
                    if sweep || wino {
                        skip
                    } else {
                        time(threads, || {
                            conv2d_backward_weight(&p, &x, &gy, &mut dw, Some(&mut db), algo)
                                .expect("bwd weight")
                        })
                    },
                ]
            });
            let cell = |(wall, cpu): (f64, f64)| {
                format!(
                    "{:6.1} / {:6.1}",
                    p.flops() / wall / 1e9,
                    p.flops() / cpu / 1e9
                )
            };
            println!(
                "{name:<24} {:<7} {:>17} {:>17} {:>17}",
                format!("{algo:?}").to_lowercase(),
                cell(t[0]),
                cell(t[1]),
                cell(t[2])
            );
            results.push([y, dx, dw]);
        }
        if results.len() > 1 && !sweep {
            let d: Vec<String> = (0..3)
                .map(|i| format!("{:.1e}", norm_diff(&results[1][i], &results[0][i])))
                .collect();
            println!(
                "{:<24} {:<7} normwise diff vs first algo: {}",
                "",
                "",
                d.join(" / ")
            );
        }
    }
}

/// Fused inference forward (scale, shift, residual, ReLU) against the plain forward followed by
/// a separate parallel pass over the output doing the same.
fn bench_fused(
    pool: &rayon::ThreadPool,
    threads: usize,
    layers: &[(String, Conv2dParams)],
    algos: &[ConvAlgo],
) {
    println!("{:<24} {:<14} {:>17}", "layer", "algo", "fused forward");
    for (name, p) in layers {
        let (oh, ow) = p.validate().expect("shape");
        let plane = oh * ow;
        let out_len = p.output_len((oh, ow));
        let x = fill(p.input_len(), 1);
        let w = fill(p.weight_len(), 2);
        let scale = fill(p.out_channels, 3);
        let shift = fill(p.out_channels, 4);
        let res = fill(out_len, 5);
        let epi = Epilogue {
            scale: Some(&scale),
            shift: Some(&shift),
            residual: Some(&res),
            relu: true,
        };
        let mut y = vec![0.0; out_len];
        let cell = |(wall, cpu): (f64, f64)| {
            format!(
                "{:6.1} / {:6.1}",
                p.flops() / wall / 1e9,
                p.flops() / cpu / 1e9
            )
        };
        for &algo in algos {
            let fused = pool.install(|| {
                time(threads, || {
                    conv2d_forward_fused(p, &x, &w, &epi, &mut y, algo).expect("fused")
                })
            });
            let pass = pool.install(|| {
                time(threads, || {
                    conv2d_forward(p, &x, &w, None, &mut y, algo).expect("fwd");
                    y.par_chunks_mut(plane).enumerate().for_each(|(i, row)| {
                        let oc = i % p.out_channels;
                        let r = &res[i * plane..][..plane];
                        for (v, &r) in row.iter_mut().zip(r) {
                            let t = (*v * scale[oc] + shift[oc]) + r;
                            *v = if t < 0.0 { 0.0 } else { t };
                        }
                    });
                })
            });
            let a = format!("{algo:?}").to_lowercase();
            println!("{name:<24} {a:<14} {:>17}", cell(fused));
            println!("{name:<24} {:<14} {:>17}", format!("{a}+pass"), cell(pass));
        }
    }
}
