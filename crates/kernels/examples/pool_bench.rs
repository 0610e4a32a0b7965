//! Quick timing of the pooling kernels on ResNet's stem shape, one call at a time, then the
//! inference max pools (no indices) that halve GoogLeNet's maps, at batch 1 and 8, and its
//! other max pools at batch 1:
//! cargo run -p ferroconv-kernels --release --example pool_bench [threads]
use ferroconv_kernels::pool::*;
use std::time::Instant;

fn best(mut f: impl FnMut()) -> f64 {
    let mut b = f64::INFINITY;
    for _ in 0..30 {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b * 1e3
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let p = Pool2dParams::from_shapes([16, 64, 112, 112], [3, 3], [2, 2], [1, 1], [1, 1], false)
        .unwrap();
    let out = p.output_len(p.validate().unwrap());
    let x: Vec<f32> = (0..p.input_len())
        .map(|i| ((i * 7919) % 1000) as f32)
        .collect();
    let (mut y, mut ind, mut gi) = (vec![0.0; out], vec![0; out], vec![0.0; x.len()]);
    let o = AvgPoolOptions::default();
    let mb = |n: usize| n as f64 * 4.0 / 1e6;
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| {
            let row = |name: &str, bytes: f64, ms: f64| {
                println!("{name:28} {ms:7.2} ms {:6.2} GB/s", bytes / ms)
            };
            let t = best(|| max_pool2d_forward(&p, &x, &mut y, &mut ind).unwrap());
            row("max fwd + indices", mb(x.len() + 2 * out), t);
            let t = best(|| max_pool2d_forward_no_indices(&p, &x, &mut y).unwrap());
            row("max fwd, no indices", mb(x.len() + out), t);
            let t = best(|| max_pool2d_backward(&p, &y, &ind, &mut gi).unwrap());
            row("max bwd", mb(x.len() + 2 * out), t);
            let t = best(|| avg_pool2d_forward(&p, &o, &x, &mut y).unwrap());
            row("avg fwd", mb(x.len() + out), t);
            let t = best(|| avg_pool2d_backward(&p, &o, &y, &mut gi).unwrap());
            row("avg bwd", mb(x.len() + out), t);
            let t = best(|| gi.copy_from_slice(&x));
            row("memcpy (1 thread)", mb(2 * x.len()), t);
            // A max pool without indices (k x k, stride s, padding pad, ceil mode) on [n, c,
            // hw, hw], timed under `name`.
            let max_pool =
                |[n, c, hw]: [usize; 3], (k, s, pad): (usize, usize, usize), name: &str| {
                    let p = Pool2dParams::from_shapes(
                        [n, c, hw, hw],
                        [k, k],
                        [s, s],
                        [pad, pad],
                        [1, 1],
                        true,
                    )
                    .unwrap();
                    let x = vec![1.0f32; p.input_len()];
                    let mut y = vec![0.0; p.output_len(p.validate().unwrap())];
                    let t = best(|| max_pool2d_forward_no_indices(&p, &x, &mut y).unwrap());
                    row(
                        &format!("{name} [{n},{c},{hw},{hw}]"),
                        mb(x.len() + y.len()),
                        t,
                    );
                };
            for n in [1, 8] {
                for (c, hw) in [(64, 112), (192, 56), (480, 28)] {
                    max_pool([n, c, hw], (3, 2, 0), "3x3/s2 ceil");
                }
            }
            // GoogLeNet's other max pools: the inception branches' 3x3 stride-1 padded ones and
            // the 2x2 stride-2 one before block 5, at batch 1.
            let shapes = [
                (192, 28, 3, 1, 1),
                (256, 28, 3, 1, 1),
                (480, 14, 3, 1, 1),
                (512, 14, 3, 1, 1),
                (528, 14, 3, 1, 1),
                (832, 14, 2, 2, 0),
                (832, 7, 3, 1, 1),
            ];
            for (c, hw, k, s, pad) in shapes {
                max_pool([1, c, hw], (k, s, pad), &format!("{k}x{k}/s{s} p{pad}"));
            }
        });
}
