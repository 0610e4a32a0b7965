//! ResNet-50's int8 convolutions (uint8 NHWC activations, int8 weights packed once, as a
//! compiled int8 plan runs them), one row per distinct shape with its count in the network:
//! the expanding 1x1 convs with a fused residual, the others with a fused ReLU. Then the
//! graph's input quantization (`quantize_nchw_to_nhwc` of `[batch, 3, 224, 224]`) and the
//! stem's max pool. GMAC/s against the `vpdpbusd` (or `vpmaddwd`) peak of the machine.
//! `cargo run -p ferroconv-kernels --release --example qconv_bench [threads] [batch] [shape filter]`.
//!
//! With `ROT=n` in the environment, each layer's packed weights, input, residual and output
//! come in n copies taken in turn, and the time is the median: a plan runs through tens of
//! megabytes of weights per call, so there a layer finds its weights out of cache, as it does
//! here with n large enough (48 for ResNet-50), and not in the default warm loop.
use ferroconv_kernels::conv::Conv2dParams;
use ferroconv_kernels::pool::Pool2dParams;
use ferroconv_kernels::quant::{
    max_pool2d_u8, qconv2d, quantize_nchw_to_nhwc, Nchw, PackedQConv, QConvEpilogue, QConvOut,
    QResidual,
};
use std::time::Instant;

/// (count, in channels, out channels, kernel, stride, input size, residual) of ResNet-50's convs.
const RESNET50: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    (1, 3, 64, 7, 2, 224, false),
    (1, 64, 64, 1, 1, 56, false),
    (3, 64, 64, 3, 1, 56, false),
    (4, 64, 256, 1, 1, 56, true),
    (2, 256, 64, 1, 1, 56, false),
    (1, 256, 128, 1, 1, 56, false),
    (1, 128, 128, 3, 2, 56, false),
    (4, 128, 512, 1, 1, 28, true),
    (1, 256, 512, 1, 2, 56, false),
    (3, 512, 128, 1, 1, 28, false),
    (3, 128, 128, 3, 1, 28, false),
    (1, 512, 256, 1, 1, 28, false),
    (1, 256, 256, 3, 2, 28, false),
    (6, 256, 1024, 1, 1, 14, true),
    (1, 512, 1024, 1, 2, 28, false),
    (5, 1024, 256, 1, 1, 14, false),
    (5, 256, 256, 3, 1, 14, false),
    (1, 1024, 512, 1, 1, 14, false),
    (1, 512, 512, 3, 2, 14, false),
    (3, 512, 2048, 1, 1, 7, true),
    (1, 1024, 2048, 1, 2, 14, false),
    (2, 2048, 512, 1, 1, 7, false),
    (2, 512, 512, 3, 1, 7, false),
];

fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as u8)
        .collect()
}

/// Best time in ms of `f` over a few repetitions (at least 5, up to 0.3 s).
fn best_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut n = 0;
    while n < 5 || (n < 300 && start.elapsed().as_secs_f64() < 0.3) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        n += 1;
    }
    best
}

/// Median time in ms of `f(i)` over calls i = 0, 1, ... (at least 50, up to 0.5 s).
fn median_ms(mut f: impl FnMut(usize)) -> f64 {
    f(0);
    let mut t = Vec::new();
    let start = Instant::now();
    while t.len() < 50 || (t.len() < 5000 && start.elapsed().as_secs_f64() < 0.5) {
        let t0 = Instant::now();
        f(t.len() + 1);
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let rot: usize = std::env::var("ROT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let batch: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let only = args.next();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    pool.install(|| {
        println!(
            "threads {threads}, batch {batch}, int8 path {:?}",
            ferroconv_kernels::quant::int8_path()
        );
        println!(
            "{:>5} {:>26} {:>9} {:>9} {:>9}",
            "count", "shape", "ms", "GMAC/s", "total ms"
        );
        let (mut total_ms, mut total_gmac) = (0.0, 0.0);
        for &(count, c, oc, k, s, hw, residual) in RESNET50 {
            let shape = format!(
                "{k}x{k}{} {c}->{oc} @{hw}{}",
                if s > 1 {
                    format!("/s{s}")
                } else {
                    String::new()
                },
                if residual { " +res" } else { "" }
            );
            if only.as_ref().is_some_and(|o| !shape.contains(o.as_str())) {
                continue;
            }
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
            let x = bytes(p.input_len(), 1);
            let w: Vec<i8> = bytes(p.weight_len(), 2)
                .into_iter()
                .map(|b| (b as i8).max(-127))
                .collect();
            let packed = PackedQConv::new(&p, &w).expect("pack");
            let mult: Vec<f32> = (0..oc).map(|i| 1e-4 * (1.0 + (i % 7) as f32)).collect();
            let bias: Vec<i32> = (0..oc).map(|i| (i as i32 % 13) * 100 - 600).collect();
            let out_len = p.batch * oh * ow * oc;
            let res = bytes(out_len, 3);
            let mut y = vec![0u8; out_len];
            let e = QConvEpilogue {
                x_zero_point: 3,
                bias: Some(&bias),
                mult: &mult,
                y_zero_point: 5,
                residual: residual.then_some(QResidual {
                    data: &res,
                    zero_point: 7,
                    mult: 0.7,
                }),
                relu: true,
            };
            let ms = if rot > 0 {
                let packs: Vec<PackedQConv> = (0..rot)
                    .map(|_| PackedQConv::new(&p, &w).expect("pack"))
                    .collect();
                let xs: Vec<Vec<u8>> = (0..rot).map(|i| bytes(p.input_len(), i as u32)).collect();
                let rs: Vec<Vec<u8>> = (0..rot).map(|i| bytes(out_len, 9 + i as u32)).collect();
                let mut ys: Vec<Vec<u8>> = (0..rot).map(|_| vec![0u8; out_len]).collect();
                median_ms(|i| {
                    let j = i % rot;
                    let e = QConvEpilogue {
                        residual: residual.then_some(QResidual {
                            data: &rs[j],
                            zero_point: 7,
                            mult: 0.7,
                        }),
                        ..e
                    };
                    qconv2d(&p, &xs[j], &packs[j], &e, QConvOut::U8(&mut ys[j])).expect("conv")
                })
            } else {
                best_ms(|| qconv2d(&p, &x, &packed, &e, QConvOut::U8(&mut y)).expect("conv"))
            };
            let gmac = (out_len * c * k * k) as f64 / 1e9;
            total_ms += count as f64 * ms;
            total_gmac += count as f64 * gmac;
            println!(
                "{count:>5} {shape:>26} {ms:>9.3} {:>9.1} {:>9.3}",
                gmac / ms * 1e3,
                count as f64 * ms
            );
        }
        println!(
            "convs: {total_ms:.2} ms, {:.1} GMAC/s overall",
            total_gmac / total_ms * 1e3
        );
        // A filter skips the graph's edges, except "edges", which matches no conv.
        if only.as_deref().is_some_and(|f| f != "edges") {
            return;
        }
        let s = Nchw {
            n: batch,
            c: 3,
            h: 224,
            w: 224,
        };
        let x: Vec<f32> = bytes(s.len().expect("len"), 4)
            .into_iter()
            .map(|b| b as f32 / 64.0 - 2.0)
            .collect();
        let mut q = vec![0u8; x.len()];
        let ms = best_ms(|| quantize_nchw_to_nhwc(s, &x, 0.02, 100, &mut q).expect("quantize"));
        println!("quantize [{batch}, 3, 224, 224] to NHWC: {ms:.3} ms");
        let pp =
            Pool2dParams::from_shapes([batch, 64, 112, 112], [3, 3], [2, 2], [1, 1], [1, 1], false)
                .expect("pool");
        let xp = bytes(batch * 64 * 112 * 112, 5);
        let mut yp = vec![0u8; batch * 64 * 56 * 56];
        let ms = best_ms(|| max_pool2d_u8(&pp, &xp, &mut yp).expect("pool"));
        println!("max pool 3x3/s2 [{batch}, 64, 112, 112]: {ms:.3} ms");
    });
}
