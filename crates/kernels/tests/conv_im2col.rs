//! im2col + GEMM conv2d against the reference loop nest (forward, input gradient, weight and
//! bias gradients) over awkward shapes, on both SIMD paths and 1 and 2 threads, plus
//! finite-difference checks of both backward passes.
use ferroconv_kernels::conv::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, reference, Conv2dParams, ConvAlgo,
};
use ferroconv_kernels::simd::{self, SimdLevel};
use std::sync::Mutex;

// The SIMD level is process-global: every test here flips it, so they take turns.
static SIMD: Mutex<()> = Mutex::new(());

struct Case {
    name: &'static str,
    p: Conv2dParams,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    (n, c, h, w): (usize, usize, usize, usize),
    (oc, kh, kw): (usize, usize, usize),
    (sh, sw): (usize, usize),
    (pt, pb, pl, pr): (usize, usize, usize, usize),
    (dh, dw): (usize, usize),
    groups: usize,
) -> Case {
    Case {
        name,
        p: Conv2dParams {
            batch: n,
            in_channels: c,
            in_h: h,
            in_w: w,
            out_channels: oc,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_top: pt,
            pad_bottom: pb,
            pad_left: pl,
            pad_right: pr,
            dilation_h: dh,
            dilation_w: dw,
            groups,
        },
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(
            "3x3 pad1",
            (2, 3, 8, 8),
            (5, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "batch1 nonsquare",
            (1, 5, 7, 11),
            (6, 3, 3),
            (1, 1),
            (0, 0, 0, 0),
            (1, 1),
            1,
        ),
        case(
            "stride2 pad1",
            (2, 4, 9, 9),
            (7, 3, 3),
            (2, 2),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "dilation2",
            (1, 3, 10, 9),
            (4, 3, 3),
            (1, 1),
            (2, 2, 2, 2),
            (2, 2),
            1,
        ),
        case(
            "depthwise",
            (2, 6, 8, 7),
            (6, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            6,
        ),
        case(
            "depthwise x2",
            (1, 4, 5, 6),
            (8, 3, 3),
            (2, 1),
            (1, 1, 1, 1),
            (1, 1),
            4,
        ),
        case(
            "groups2",
            (1, 4, 6, 6),
            (6, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            2,
        ),
        case(
            "1x1",
            (2, 10, 5, 5),
            (3, 1, 1),
            (1, 1),
            (0, 0, 0, 0),
            (1, 1),
            1,
        ),
        case(
            "1x1 groups4",
            (2, 8, 6, 5),
            (12, 1, 1),
            (1, 1),
            (0, 0, 0, 0),
            (1, 1),
            4,
        ),
        case(
            "1x1 stride2",
            (2, 6, 7, 9),
            (5, 1, 1),
            (2, 2),
            (0, 0, 0, 0),
            (1, 1),
            1,
        ),
        case(
            "1x1 padded",
            (1, 3, 4, 4),
            (2, 1, 1),
            (1, 1),
            (1, 0, 0, 1),
            (1, 1),
            1,
        ),
        case(
            "5x5",
            (1, 3, 12, 10),
            (4, 5, 5),
            (1, 1),
            (2, 2, 2, 2),
            (1, 1),
            1,
        ),
        case(
            "7x7 stride2",
            (1, 3, 23, 23),
            (8, 7, 7),
            (2, 2),
            (3, 3, 3, 3),
            (1, 1),
            1,
        ),
        case(
            "11x11 stride4",
            (1, 3, 35, 35),
            (4, 11, 11),
            (4, 4),
            (2, 2, 2, 2),
            (1, 1),
            1,
        ),
        case(
            "asymmetric",
            (1, 2, 6, 7),
            (3, 3, 2),
            (1, 2),
            (0, 2, 1, 0),
            (1, 1),
            1,
        ),
        case(
            "dilation 3x1",
            (2, 3, 9, 8),
            (2, 3, 2),
            (1, 2),
            (3, 0, 0, 2),
            (3, 1),
            1,
        ),
        case(
            "spatial 1",
            (3, 9, 1, 1),
            (5, 1, 1),
            (1, 1),
            (0, 0, 0, 0),
            (1, 1),
            1,
        ),
        case(
            "spatial 1 pad1",
            (2, 4, 1, 1),
            (3, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "many blocks",
            (1, 64, 30, 30),
            (20, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "odd channels",
            (2, 19, 20, 21),
            (37, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "batch5 stem",
            (5, 3, 40, 40),
            (4, 3, 3),
            (2, 2),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        case(
            "deep 2 items",
            (2, 64, 17, 30),
            (9, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
        // Stride 1 with a wide enough row takes the padded-width lowering: uneven padding on
        // every side, a non-square kernel and groups.
        case(
            "shifted uneven pad groups2",
            (2, 6, 9, 20),
            (8, 5, 3),
            (1, 1),
            (2, 1, 0, 3),
            (1, 1),
            2,
        ),
        case(
            "wide late layer",
            (1, 96, 7, 7),
            (130, 3, 3),
            (1, 1),
            (1, 1, 1, 1),
            (1, 1),
            1,
        ),
    ]
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (i as f32 * 0.37 + seed as f32 * 1.3).sin() * 0.5)
        .collect()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what} at {i}: {a} vs {b}"
        );
    }
}

struct Grads {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

fn run(p: &Conv2dParams, algo: ConvAlgo) -> Grads {
    let (oh, ow) = p.validate().unwrap();
    let x = fill(p.input_len(), 1);
    let w = fill(p.weight_len(), 2);
    let b = fill(p.out_channels, 3);
    let dy = fill(p.output_len((oh, ow)), 4);
    // Outputs start as NaN: every kernel must overwrite, not accumulate.
    let mut g = Grads {
        y: vec![f32::NAN; dy.len()],
        dx: vec![f32::NAN; x.len()],
        dw: vec![f32::NAN; w.len()],
        db: vec![f32::NAN; b.len()],
    };
    conv2d_forward(p, &x, &w, Some(&b), &mut g.y, algo).unwrap();
    conv2d_backward_data(p, &dy, &w, &mut g.dx, algo).unwrap();
    conv2d_backward_weight(p, &x, &dy, &mut g.dw, Some(&mut g.db), algo).unwrap();
    g
}

fn reference_grads(p: &Conv2dParams) -> Grads {
    let out_hw = p.validate().unwrap();
    let x = fill(p.input_len(), 1);
    let w = fill(p.weight_len(), 2);
    let b = fill(p.out_channels, 3);
    let dy = fill(p.output_len(out_hw), 4);
    let mut g = Grads {
        y: vec![0.0; dy.len()],
        dx: vec![0.0; x.len()],
        dw: vec![0.0; w.len()],
        db: vec![0.0; b.len()],
    };
    reference::forward(p, out_hw, &x, &w, Some(&b), &mut g.y);
    reference::backward_data(p, out_hw, &dy, &w, &mut g.dx);
    reference::backward_weight(p, out_hw, &x, &dy, &mut g.dw, Some(&mut g.db));
    g
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[test]
fn im2col_matches_reference_on_both_paths_and_thread_counts() {
    let _g = SIMD.lock().unwrap();
    for c in cases() {
        let want = reference_grads(&c.p);
        for lvl in [SimdLevel::Scalar, SimdLevel::Avx2Fma] {
            simd::set_level(lvl);
            for threads in [1, 2] {
                let got = pool(threads).install(|| run(&c.p, ConvAlgo::Im2col));
                let tag = format!("{} ({} threads, {})", c.name, threads, lvl.name());
                close(&got.y, &want.y, &format!("{tag} forward"));
                close(&got.dx, &want.dx, &format!("{tag} grad input"));
                close(&got.dw, &want.dw, &format!("{tag} grad weight"));
                close(&got.db, &want.db, &format!("{tag} grad bias"));
            }
        }
    }
    simd::set_level(SimdLevel::Avx2Fma);
}

#[test]
fn auto_uses_im2col_for_ordinary_convs_and_direct_for_depthwise() {
    for c in cases() {
        let want = if c.p.groups == c.p.in_channels && c.p.groups > 1 {
            ConvAlgo::Direct
        } else {
            ConvAlgo::Im2col
        };
        assert_eq!(ConvAlgo::Auto.resolve(&c.p), want, "{}", c.name);
    }
}

/// sum(conv(x, w) + b) * r) in f64, the scalar loss the gradient checks differentiate.
fn loss(p: &Conv2dParams, x: &[f32], w: &[f32], b: &[f32], r: &[f32]) -> f64 {
    let mut y = vec![0.0; r.len()];
    conv2d_forward(p, x, w, Some(b), &mut y, ConvAlgo::Im2col).unwrap();
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of `loss` along a few coordinates of `which` (0 input, 1 weight, 2 bias)
/// compared with the analytic gradients.
#[test]
fn finite_differences_agree_with_backward() {
    let _g = SIMD.lock().unwrap();
    simd::set_level(SimdLevel::Avx2Fma);
    let eps = 1e-2f32;
    for c in cases() {
        let p = &c.p;
        let out_hw = p.validate().unwrap();
        let x = fill(p.input_len(), 5);
        let w = fill(p.weight_len(), 6);
        let b = fill(p.out_channels, 7);
        let r = fill(p.output_len(out_hw), 8);
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; b.len()];
        conv2d_backward_data(p, &r, &w, &mut dx, ConvAlgo::Im2col).unwrap();
        conv2d_backward_weight(p, &x, &r, &mut dw, Some(&mut db), ConvAlgo::Im2col).unwrap();
        for which in 0..3 {
            let (len, grad) = match which {
                0 => (x.len(), &dx),
                1 => (w.len(), &dw),
                _ => (b.len(), &db),
            };
            // A spread of coordinates, including the first and last.
            let picks: Vec<usize> = (0..7).map(|i| i * (len - 1) / 6).collect();
            for i in picks {
                let eval = |delta: f32| {
                    let (mut x, mut w, mut b) = (x.clone(), w.clone(), b.clone());
                    match which {
                        0 => x[i] += delta,
                        1 => w[i] += delta,
                        _ => b[i] += delta,
                    }
                    loss(p, &x, &w, &b, &r)
                };
                let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
                let an = grad[i] as f64;
                assert!(
                    (fd - an).abs() <= 2e-3 * (1.0 + an.abs()),
                    "{} d/d{}[{i}]: finite difference {fd}, backward {an}",
                    c.name,
                    ["input", "weight", "bias"][which]
                );
            }
        }
    }
}
