//! ResNet-50's convolutions at batch 1 (inference), one row per distinct shape with its count in
//! the network, forward with a ReLU epilogue and algo `auto`: where a batch-1 forward's conv time
//! goes and how close each shape gets to the FMA peak.
//! With `prepared`, the weights are prepared once (`prepare_forward`), as a compiled plan does;
//! `densenet` runs DenseNet-121's 3x3 growth convs (128 -> 32) instead, `vgg` VGG-16's convs,
//! `losers` the shapes that lost to PyTorch at batch 8, `googlenet` GoogLeNet's 3x3 convs, `alexnet` AlexNet's.
//! `ALGO=winograd|im2col|direct` forces an algorithm (winograd on stride-1 3x3 layers only).
//! `ROT=n` (with `prepared`) takes the prepared weights from n copies in turn and reports the
//! median: the weights come from DRAM as in a plan (48 copies for ResNet-50), while input and
//! output stay warm; unlike the flushes below, no pool thread idles between calls.
//! `RES=1` adds a residual of the output's shape to every conv's epilogue.
//! `COLD=1` reads 96 MiB between timed calls, so weights, input and output come from DRAM;
//! `COLD=2` then brings input and output back, leaving only the weights cold, as in a plan
//! running layer after layer at batch 1.
//! `cargo run -p ferroconv-kernels --release --example conv_b1 [threads] [batch] [prepared] [densenet|vgg|losers|googlenet|alexnet]`.
use ferroconv_kernels::conv::{
    conv2d_forward_fused, conv2d_forward_fused_prepared, prepare_forward, Conv2dParams, ConvAlgo,
    Epilogue,
};
use std::time::Instant;

/// (count, in channels, out channels, kernel, stride, input size) of ResNet-50's convs.
const RESNET50: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 3, 64, 7, 2, 224),
    (1, 64, 64, 1, 1, 56),
    (3, 64, 64, 3, 1, 56),
    (4, 64, 256, 1, 1, 56),
    (2, 256, 64, 1, 1, 56),
    (1, 256, 128, 1, 1, 56),
    (1, 128, 128, 3, 2, 56),
    (4, 128, 512, 1, 1, 28),
    (1, 256, 512, 1, 2, 56),
    (3, 512, 128, 1, 1, 28),
    (3, 128, 128, 3, 1, 28),
    (1, 512, 256, 1, 1, 28),
    (1, 256, 256, 3, 2, 28),
    (6, 256, 1024, 1, 1, 14),
    (1, 512, 1024, 1, 2, 28),
    (5, 1024, 256, 1, 1, 14),
    (5, 256, 256, 3, 1, 14),
    (1, 1024, 512, 1, 1, 14),
    (1, 512, 512, 3, 2, 14),
    (3, 512, 2048, 1, 1, 7),
    (1, 1024, 2048, 1, 2, 14),
    (2, 2048, 512, 1, 1, 7),
    (2, 512, 512, 3, 1, 7),
];

/// DenseNet-121's 3x3 convs (128 -> 32 channels), one per dense layer.
const DENSENET121: &[(usize, usize, usize, usize, usize, usize)] = &[
    (6, 128, 32, 3, 1, 56),
    (12, 128, 32, 3, 1, 28),
    (24, 128, 32, 3, 1, 14),
    (16, 128, 32, 3, 1, 7),
];

/// VGG-16's convs.
const VGG16: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 3, 64, 3, 1, 224),
    (1, 64, 64, 3, 1, 224),
    (1, 64, 128, 3, 1, 112),
    (1, 128, 128, 3, 1, 112),
    (1, 128, 256, 3, 1, 56),
    (2, 256, 256, 3, 1, 56),
    (1, 256, 512, 3, 1, 28),
    (2, 512, 512, 3, 1, 28),
    (3, 512, 512, 3, 1, 14),
];

/// GoogLeNet's 3x3 convs (torchvision's, whose "5x5" branches are 3x3 too), stride 1.
const GOOGLENET: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 64, 192, 3, 1, 56),
    (1, 96, 128, 3, 1, 28),
    (1, 128, 192, 3, 1, 28),
    (1, 16, 32, 3, 1, 28),
    (1, 32, 96, 3, 1, 28),
    (1, 96, 208, 3, 1, 14),
    (1, 112, 224, 3, 1, 14),
    (1, 128, 256, 3, 1, 14),
    (1, 144, 288, 3, 1, 14),
    (1, 160, 320, 3, 1, 14),
    (1, 16, 48, 3, 1, 14),
    (1, 24, 64, 3, 1, 14),
    (2, 32, 128, 3, 1, 14),
    (1, 160, 320, 3, 1, 7),
    (1, 192, 384, 3, 1, 7),
    (1, 32, 128, 3, 1, 7),
    (1, 48, 128, 3, 1, 7),
];

/// AlexNet's convs after the stem (13x13 maps for the 3x3s).
const ALEXNET: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 64, 192, 5, 1, 27),
    (1, 192, 384, 3, 1, 13),
    (1, 384, 256, 3, 1, 13),
    (1, 256, 256, 3, 1, 13),
];

/// Shapes that lost to PyTorch at batch 8 (GoogLeNet's and DenseNet's 1x1s on small maps,
/// narrow 3x3s, AlexNet's stem).
const LOSERS: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 832, 48, 1, 1, 7),
    (1, 512, 128, 1, 1, 7),
    (1, 640, 128, 1, 1, 7),
    (1, 480, 192, 1, 1, 14),
    (1, 480, 64, 1, 1, 14),
    (1, 16, 32, 3, 1, 28),
    (1, 16, 48, 3, 1, 14),
    (1, 48, 128, 3, 1, 7),
    (1, 3, 64, 11, 4, 224),
];

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mode = args.next();
    let prepared = mode.as_deref() == Some("prepared");
    // SHAPES="c,oc,k,s,hw;..." (one layer each) in place of a table.
    let custom: Vec<(usize, usize, usize, usize, usize, usize)> = std::env::var("SHAPES")
        .unwrap_or_default()
        .split(';')
        .filter_map(|l| {
            let v: Vec<usize> = l.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() == 5).then(|| (1, v[0], v[1], v[2], v[3], v[4]))
        })
        .collect();
    let table = match args.next().as_deref() {
        _ if !custom.is_empty() => &custom[..],
        Some("densenet") => DENSENET121,
        Some("vgg") => VGG16,
        Some("losers") => LOSERS,
        Some("googlenet") => GOOGLENET,
        Some("alexnet") => ALEXNET,
        _ => RESNET50,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    // COLD: read once per run, and one flush buffer for every layer.
    let cold = std::env::var("COLD").is_ok();
    let rot: usize = std::env::var("ROT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let warm_io = std::env::var("COLD").as_deref() == Ok("2");
    let flush = if cold {
        vec![1u64; 12 << 20]
    } else {
        Vec::new()
    };
    pool.install(|| {
        let (mut total_ms, mut total_gflop) = (0.0, 0.0);
        println!("threads {threads}, batch {batch}, weights prepared once: {prepared}");
        println!(
            "{:>5} {:>22} {:>9} {:>9} {:>8}",
            "count", "shape", "ms", "GFLOP/s", "total ms"
        );
        for &(count, c, oc, k, s, hw) in table {
            let pad = k / 2;
            let p = Conv2dParams::from_shapes(
                [batch, c, hw, hw],
                [oc, c, k, k],
                [s, s],
                [pad; 4],
                [1, 1],
                1,
            )
            .expect("layer");
            let (oh, ow) = p.validate().expect("shape");
            let x = fill(p.input_len(), 1);
            let w = fill(p.weight_len(), 2);
            let shift = fill(oc, 3);
            let mut y = vec![0f32; p.output_len((oh, ow))];
            let (y_ptr, y_len) = (y.as_mut_ptr(), y.len());
            // RES=1: a residual added too, as ResNet's last conv of each block has.
            let res = std::env::var("RES")
                .is_ok()
                .then(|| fill(p.output_len((oh, ow)), 4));
            let ep = Epilogue {
                shift: Some(&shift),
                residual: res.as_deref(),
                relu: true,
                ..Epilogue::default()
            };
            let algo = match std::env::var("ALGO").as_deref() {
                Ok("winograd") if k == 3 && s == 1 => ConvAlgo::Winograd,
                Ok("im2col") => ConvAlgo::Im2col,
                Ok("direct") => ConvAlgo::Direct,
                _ => ConvAlgo::Auto,
            };
            let ready = prepare_forward(&p, &w, algo).expect("prepare");
            if prepared && rot > 0 {
                // ROT: the prepared weights in `rot` copies taken in turn (input and output
                // stay warm), the median time: as a plan finds its weights, out of cache.
                let copies: Vec<_> = (0..rot)
                    .map(|_| prepare_forward(&p, &w, algo).expect("prepare"))
                    .collect();
                let mut times = Vec::new();
                let start = Instant::now();
                let mut i = 0;
                while times.len() < 50
                    || (times.len() < 3000 && start.elapsed().as_secs_f64() < 0.4)
                {
                    let t = Instant::now();
                    conv2d_forward_fused_prepared(&p, &x, &w, &copies[i % rot], &ep, &mut y, algo)
                        .expect("conv");
                    if i > 0 {
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    i += 1;
                }
                times.sort_by(f64::total_cmp);
                let ms = times[times.len() / 2];
                let gflop = p.flops() / 1e9;
                total_ms += count as f64 * ms;
                total_gflop += count as f64 * gflop;
                let shape = format!("{k}x{k}/s{s} {c}->{oc} @{hw}");
                println!(
                    "{count:>5} {shape:>22} {ms:>9.3} {:>9.1} {:>8.2}",
                    gflop / ms * 1e3,
                    count as f64 * ms
                );
                continue;
            }
            let mut run = || {
                if prepared {
                    conv2d_forward_fused_prepared(&p, &x, &w, &ready, &ep, &mut y, algo)
                } else {
                    conv2d_forward_fused(&p, &x, &w, &ep, &mut y, algo)
                }
                .expect("conv")
            };
            run();
            let mut best = f64::INFINITY;
            let start = Instant::now();
            let mut n = 0;
            while n < 5 || (n < 300 && start.elapsed().as_secs_f64() < 0.3) {
                if cold {
                    // Evict the weights (and everything else) from the caches, as a plan's
                    // run of other layers does.
                    std::hint::black_box(flush.iter().fold(0u64, |a, &b| a ^ b));
                    if warm_io {
                        // Input and output back in cache, as in a plan where the previous
                        // layer just wrote the input: only the weights stay cold.
                        std::hint::black_box(x.iter().sum::<f32>());
                        // SAFETY: y outlives the loop and `run` is not running.
                        unsafe { std::ptr::write_bytes(y_ptr, 0, y_len) };
                    }
                }
                let t = Instant::now();
                run();
                best = best.min(t.elapsed().as_secs_f64());
                n += 1;
            }
            let gflop = p.flops() / 1e9;
            let ms = best * 1e3;
            total_ms += ms * count as f64;
            total_gflop += gflop * count as f64;
            let name = format!("{k}x{k}/s{s} {c}->{oc} @{hw}");
            println!(
                "{count:>5} {name:>22} {ms:>9.3} {:>9.1} {:>8.2}",
                gflop / best,
                ms * count as f64
            );
        }
        println!(
            "total {total_ms:.2} ms, {:.1} GFLOP/s over {total_gflop:.2} GFLOP",
            total_gflop / total_ms * 1e3
        );
    });
}
