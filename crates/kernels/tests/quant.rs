//! The int8 kernels against an integer reference written here, bit for bit, on every int8 path
//! this CPU has (scalar, AVX2 with 16-bit vpmaddwd, AVX-512 VNNI), with 1 and 2 threads.
mod common;

use ferroconv_kernels::conv::Conv2dParams;
use ferroconv_kernels::pool::{AvgPoolOptions, Pool2dParams};
use ferroconv_kernels::quant::*;
use ferroconv_kernels::simd::{self, SimdLevel};

/// A deterministic byte stream (xorshift).
struct Bytes(u64);
impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// int8 in -127..=127, the symmetric weights' range.
    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| ((self.next() % 255) as i32 - 127) as i8)
            .collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Every int8 path this CPU has; runs `f` on each with the path set, then restores the best.
fn for_each_path<T>(mut f: impl FnMut(Int8Path) -> T) -> Vec<(Int8Path, T)> {
    let _held = common::lock();
    let mut out = Vec::new();
    let mut settings = vec![(SimdLevel::Scalar, false)];
    if simd::detected() != SimdLevel::Scalar {
        settings.push((simd::detected(), false));
        settings.push((simd::detected(), true));
    }
    for (lvl, vnni) in settings {
        simd::set_level(lvl);
        set_int8_vnni(vnni);
        let path = int8_path();
        if out.iter().any(|(p, _)| *p == path) {
            continue;
        }
        out.push((path, f(path)));
    }
    set_int8_vnni(true);
    // The x86-64 CPUs CI runs on have AVX2, and every aarch64 CPU has NEON: at least the
    // scalar and one vector path ran.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    assert!(
        out.len() >= 2,
        "only {:?} ran",
        out.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    out
}

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oc: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
    groups: usize,
}

impl Case {
    fn params(&self) -> Conv2dParams {
        Conv2dParams::from_shapes(
            [self.n, self.c, self.h, self.w],
            [self.oc, self.c / self.groups, self.k.0, self.k.1],
            [self.stride.0, self.stride.1],
            [self.pad.0, self.pad.0, self.pad.1, self.pad.1],
            [self.dil.0, self.dil.1],
            self.groups,
        )
        .unwrap()
    }
}

struct Inputs {
    x: Vec<u8>,
    w: Vec<i8>,
    bias: Vec<i32>,
    mult: Vec<f32>,
    res: Vec<u8>,
    x_zp: i32,
    y_zp: i32,
    r_zp: i32,
}

/// The exact int32 sums of the conv, from NHWC `x` and OIHW `w`, as plain loops.
fn reference_sums(p: &Conv2dParams, x: &[u8], x_zp: i32, w: &[i8]) -> Vec<i64> {
    let (oh, ow) = p.validate().unwrap();
    let (icg, ocg) = (p.in_per_group(), p.out_per_group());
    let mut out = vec![0i64; p.batch * oh * ow * p.out_channels];
    for n in 0..p.batch {
        for y in 0..oh {
            for xo in 0..ow {
                for oc in 0..p.out_channels {
                    let g = oc / ocg;
                    let mut s = 0i64;
                    for ic in 0..icg {
                        for kh in 0..p.kernel_h {
                            for kw in 0..p.kernel_w {
                                let ih = (y * p.stride_h + kh * p.dilation_h) as isize
                                    - p.pad_top as isize;
                                let iw = (xo * p.stride_w + kw * p.dilation_w) as isize
                                    - p.pad_left as isize;
                                let xv = if ih < 0
                                    || iw < 0
                                    || ih >= p.in_h as isize
                                    || iw >= p.in_w as isize
                                {
                                    x_zp
                                } else {
                                    x[((n * p.in_h + ih as usize) * p.in_w + iw as usize)
                                        * p.in_channels
                                        + g * icg
                                        + ic] as i32
                                };
                                let wv =
                                    w[((oc * icg + ic) * p.kernel_h + kh) * p.kernel_w + kw] as i32;
                                s += ((xv - x_zp) * wv) as i64;
                            }
                        }
                    }
                    out[((n * oh + y) * ow + xo) * p.out_channels + oc] = s;
                }
            }
        }
    }
    out
}

fn reference_u8(p: &Conv2dParams, i: &Inputs, residual: bool, relu: bool) -> Vec<u8> {
    let sums = reference_sums(p, &i.x, i.x_zp, &i.w);
    let oc = p.out_channels;
    let lo = if relu { i.y_zp } else { 0 };
    sums.iter()
        .enumerate()
        .map(|(at, &s)| {
            let o = at % oc;
            let mut v = (s as i32 + i.bias[o]) as f32 * i.mult[o];
            if residual {
                v += (i.res[at] as i32 - i.r_zp) as f32 * 0.75;
            }
            let v = v.clamp(-1.0e9, 1.0e9);
            (v.round_ties_even() as i32 + i.y_zp).clamp(lo, 255) as u8
        })
        .collect()
}

fn inputs(case: &Case, seed: u64) -> Inputs {
    let p = case.params();
    let (oh, ow) = p.validate().unwrap();
    let mut r = Bytes(seed | 1);
    let k = case.c / case.groups * case.k.0 * case.k.1;
    Inputs {
        x: r.u8s(case.n * case.c * case.h * case.w),
        w: r.i8s(case.oc * k),
        bias: (0..case.oc)
            .map(|_| r.below(20001) as i32 - 10000)
            .collect(),
        // Multipliers that put the typical sum near the middle of the uint8 range.
        mult: (0..case.oc)
            .map(|_| (1 + r.below(100)) as f32 / (200.0 * k as f32))
            .collect(),
        res: r.u8s(case.n * oh * ow * case.oc),
        x_zp: r.below(256) as i32,
        y_zp: r.below(256) as i32,
        r_zp: r.below(256) as i32,
    }
}

fn cases() -> Vec<Case> {
    let base = Case {
        n: 1,
        c: 8,
        h: 6,
        w: 5,
        oc: 16,
        k: (3, 3),
        stride: (1, 1),
        pad: (1, 1),
        dil: (1, 1),
        groups: 1,
    };
    let mut v = vec![
        base,
        Case {
            c: 3,
            oc: 7,
            h: 9,
            w: 11,
            ..base
        },
        Case {
            n: 2,
            c: 64,
            oc: 40,
            k: (1, 1),
            pad: (0, 0),
            ..base
        },
        Case {
            n: 3,
            c: 12,
            oc: 33,
            k: (1, 1),
            pad: (0, 0),
            h: 7,
            w: 7,
            ..base
        },
        Case {
            n: 2,
            c: 16,
            oc: 24,
            k: (1, 1),
            pad: (0, 0),
            stride: (2, 2),
            h: 8,
            w: 8,
            ..base
        },
        Case {
            c: 6,
            oc: 9,
            k: (3, 3),
            stride: (2, 2),
            h: 10,
            w: 7,
            ..base
        },
        Case {
            c: 4,
            oc: 5,
            k: (7, 7),
            stride: (2, 2),
            pad: (3, 3),
            h: 15,
            w: 13,
            ..base
        },
        Case {
            c: 8,
            oc: 8,
            k: (3, 3),
            groups: 8,
            ..base
        },
        Case {
            c: 12,
            oc: 18,
            k: (3, 3),
            groups: 3,
            dil: (2, 2),
            pad: (2, 2),
            ..base
        },
        Case {
            c: 5,
            oc: 17,
            k: (2, 3),
            pad: (0, 1),
            stride: (1, 2),
            h: 4,
            w: 9,
            ..base
        },
        Case {
            n: 4,
            c: 100,
            oc: 10,
            k: (1, 1),
            pad: (0, 0),
            h: 1,
            w: 1,
            ..base
        },
        // Few pixels and many channel blocks (13, the last partial): the tasks split the
        // blocks in pairs and each takes all pixels, the last split a single block.
        Case {
            c: 32,
            oc: 200,
            k: (1, 1),
            pad: (0, 0),
            h: 3,
            w: 3,
            ..base
        },
        // The same through the gathered path, in two groups of 5 blocks (splits across a
        // group's end).
        Case {
            c: 16,
            oc: 160,
            groups: 2,
            h: 2,
            w: 4,
            ..base
        },
        // A ResNet stem (7x7 / 2 over 3 channels, 21-byte kernel rows), 64 channels out.
        Case {
            n: 2,
            c: 3,
            oc: 64,
            k: (7, 7),
            stride: (2, 2),
            pad: (3, 3),
            h: 23,
            w: 21,
            ..base
        },
        // Dilation along W (no contiguous kernel rows), kernel rows wider than 64 bytes, and a
        // kernel wider than the input with its padding.
        Case {
            c: 8,
            oc: 20,
            dil: (1, 2),
            pad: (1, 2),
            h: 7,
            w: 9,
            ..base
        },
        Case {
            c: 40,
            oc: 12,
            stride: (1, 3),
            h: 5,
            w: 11,
            ..base
        },
        Case {
            c: 4,
            oc: 6,
            k: (5, 5),
            pad: (2, 2),
            h: 3,
            w: 2,
            ..base
        },
    ];
    // Random shapes.
    let mut r = Bytes(0x5eed);
    for _ in 0..24 {
        let groups = [1, 1, 1, 2, 3][r.below(5)];
        let k = 1 + r.below(3);
        let c = groups * (1 + r.below(20));
        let oc = groups * (1 + r.below(40));
        let pad = r.below(k / 2 + 1);
        v.push(Case {
            n: 1 + r.below(3),
            c,
            h: k + r.below(9),
            w: k + r.below(9),
            oc,
            k: (k, k),
            stride: (1 + r.below(2), 1 + r.below(2)),
            pad: (pad, pad),
            dil: (1, 1),
            groups,
        });
    }
    v
}

#[test]
fn qconv_equals_the_integer_reference_on_every_path() {
    for (ci, case) in cases().iter().enumerate() {
        let p = case.params();
        let i = inputs(case, 1000 + ci as u64);
        // The last two scale the multipliers so that most values saturate, and past the range
        // of int32 (to infinity at 1e30), where the SIMD epilogues' conversions overflow.
        for (residual, relu, bias, scale) in [
            (false, false, true, 1.0),
            (true, true, true, 1.0),
            (false, true, false, 1.0),
            (true, false, true, 1.0e4),
            (false, true, true, 1.0e30),
        ] {
            let mut want = i.bias.clone();
            if !bias {
                want.iter_mut().for_each(|b| *b = 0);
            }
            let mult: Vec<f32> = i.mult.iter().map(|m| m * scale).collect();
            let iw = Inputs {
                bias: want,
                x: i.x.clone(),
                w: i.w.clone(),
                mult: mult.clone(),
                res: i.res.clone(),
                ..i
            };
            let expected = reference_u8(&p, &iw, residual, relu);
            for (path, got) in for_each_path(|_| {
                [1, 2].map(|threads| {
                    common::with_threads(threads, || {
                        let e = QConvEpilogue {
                            x_zero_point: i.x_zp,
                            bias: if bias { Some(&i.bias[..]) } else { None },
                            mult: &mult,
                            y_zero_point: i.y_zp,
                            residual: residual.then_some(QResidual {
                                data: &i.res,
                                zero_point: i.r_zp,
                                mult: 0.75,
                            }),
                            relu,
                        };
                        let mut y = vec![0u8; expected.len()];
                        qconv2d_unpacked(&p, &i.x, &i.w, &e, QConvOut::U8(&mut y)).unwrap();
                        y
                    })
                })
            }) {
                for y in got {
                    assert!(
                        y == expected,
                        "case {ci} {case:?} residual {residual} relu {relu} scale {scale} on {}",
                        path.name()
                    );
                }
            }
        }
    }
}

#[test]
fn qconv_float_output_is_the_scaled_sum() {
    let case = Case {
        n: 2,
        c: 24,
        h: 1,
        w: 1,
        oc: 10,
        k: (1, 1),
        stride: (1, 1),
        pad: (0, 0),
        dil: (1, 1),
        groups: 1,
    };
    let p = case.params();
    let i = inputs(&case, 77);
    let sums = reference_sums(&p, &i.x, i.x_zp, &i.w);
    let expected: Vec<f32> = sums
        .iter()
        .enumerate()
        .map(|(at, &s)| ((s as i32 + i.bias[at % 10]) as f32 * i.mult[at % 10]).max(0.0))
        .collect();
    for (path, y) in for_each_path(|_| {
        let e = QConvEpilogue {
            x_zero_point: i.x_zp,
            bias: Some(&i.bias),
            mult: &i.mult,
            y_zero_point: 0,
            residual: None,
            relu: true,
        };
        let mut y = vec![0f32; expected.len()];
        qconv2d_unpacked(&p, &i.x, &i.w, &e, QConvOut::F32(&mut y)).unwrap();
        y
    }) {
        assert_eq!(y, expected, "{}", path.name());
    }
}

#[test]
fn qconv_rejects_bad_arguments() {
    let case = cases()[0];
    let p = case.params();
    let i = inputs(&case, 5);
    let e = QConvEpilogue {
        x_zero_point: 300,
        bias: None,
        mult: &i.mult,
        y_zero_point: 0,
        residual: None,
        relu: false,
    };
    let mut y = vec![0u8; 6 * 5 * 16];
    let err = qconv2d_unpacked(&p, &i.x, &i.w, &e, QConvOut::U8(&mut y)).unwrap_err();
    assert!(err.0.contains("zero point"), "{err}");
    let e = QConvEpilogue {
        x_zero_point: 0,
        bias: None,
        mult: &i.mult[..3],
        y_zero_point: 0,
        residual: None,
        relu: false,
    };
    assert!(qconv2d_unpacked(&p, &i.x, &i.w, &e, QConvOut::U8(&mut y))
        .unwrap_err()
        .0
        .contains("mult"));
    let e = QConvEpilogue {
        x_zero_point: 0,
        bias: None,
        mult: &i.mult,
        y_zero_point: 0,
        residual: None,
        relu: false,
    };
    assert!(
        qconv2d_unpacked(&p, &i.x[1..], &i.w, &e, QConvOut::U8(&mut y))
            .unwrap_err()
            .0
            .contains("input")
    );
    assert!(
        qconv2d_unpacked(&p, &i.x, &i.w, &e, QConvOut::U8(&mut y[1..]))
            .unwrap_err()
            .0
            .contains("output")
    );
}

#[test]
fn quantize_and_dequantize_follow_onnx() {
    let s = Nchw {
        n: 2,
        c: 3,
        h: 2,
        w: 2,
    };
    let x: Vec<f32> = (0..24).map(|v| v as f32 * 0.37 - 4.0).collect();
    let (scale, zp) = (0.05f32, 100);
    let mut q = vec![0u8; 24];
    quantize_nchw_to_nhwc(s, &x, scale, zp, &mut q).unwrap();
    for n in 0..2 {
        for c in 0..3 {
            for p in 0..4 {
                let want = ((x[(n * 3 + c) * 4 + p] / scale).round_ties_even() as i32 + zp)
                    .clamp(0, 255) as u8;
                assert_eq!(q[(n * 4 + p) * 3 + c], want);
            }
        }
    }
    // A larger tensor (past one block of 1024 pixels, vector loops), with values exactly half
    // way between steps, out of range, infinite and NaN (which counts as 0).
    let big = Nchw {
        n: 2,
        c: 3,
        h: 40,
        w: 30,
    };
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        0.125,
        -0.125,
        0.375,
    ];
    let xb: Vec<f32> = (0..big.len().unwrap())
        .map(|i| match i % 37 {
            k @ 0..=7 => specials[k],
            k => (k as f32 - 20.0) * 0.73 + (i % 11) as f32 * 0.25,
        })
        .collect();
    let (sb, zb) = (0.25f32, 17);
    let hw = 40 * 30;
    for (path, qb) in for_each_path(|_| {
        let mut qb = vec![0u8; xb.len()];
        quantize_nchw_to_nhwc(big, &xb, sb, zb, &mut qb).unwrap();
        qb
    }) {
        for (i, &v) in xb.iter().enumerate() {
            let (n, c, p) = (i / (3 * hw), i / hw % 3, i % hw);
            let r = if v.is_nan() {
                0.0
            } else {
                (v / sb).round_ties_even()
            };
            let want = (r.clamp(-1e6, 1e6) as i32 + zb).clamp(0, 255) as u8;
            assert_eq!(qb[(n * hw + p) * 3 + c], want, "x = {v} on {}", path.name());
        }
    }
    let mut back = vec![0f32; 24];
    dequantize_nhwc_to_nchw(s, &q, scale, zp, &mut back).unwrap();
    for (a, b) in x.iter().zip(&back) {
        // Inside the representable range the round trip is off by at most half a step.
        if (-5.0..=7.75).contains(a) {
            assert!((a - b).abs() <= scale / 2.0 + 1e-6, "{a} {b}");
        }
    }
    assert!(quantize_nchw_to_nhwc(s, &x, 0.0, zp, &mut q)
        .unwrap_err()
        .0
        .contains("scale"));
    assert!(quantize_nchw_to_nhwc(s, &x, 1.0, 256, &mut q)
        .unwrap_err()
        .0
        .contains("zero point"));
}

/// Max pooling over channel counts around the kernel's 64-byte runs (64 exactly, a run and a
/// remainder, two runs and a remainder, fewer than one), windows reaching into the padding on
/// every side, dilation and ceil mode, on every SIMD level, against a plain loop.
#[test]
fn max_pool_matches_a_plain_loop_on_every_path() {
    let mut r = Bytes(7);
    // (channels, h, w, kernel, stride, padding, dilation, ceil mode)
    let cases = [
        (64, 8, 8, 3, 2, 1, 1, false),
        (69, 9, 11, 3, 2, 1, 1, true),
        (130, 7, 6, 2, 1, 0, 1, false),
        (70, 10, 9, 3, 1, 1, 2, false),
        (3, 6, 7, 5, 3, 2, 1, true),
    ];
    for (c, h, w, k, s, pad, d, ceil) in cases {
        let n = 2;
        let x = r.u8s(n * h * w * c);
        let p = Pool2dParams::from_shapes([n, c, h, w], [k, k], [s, s], [pad, pad], [d, d], ceil)
            .unwrap();
        let (oh, ow) = p.validate().unwrap();
        let mut want = vec![0u8; n * oh * ow * c];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut m = 0u8;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky * d) as isize - pad as isize;
                                let ix = (ox * s + kx * d) as isize - pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let at = ((b * h + iy as usize) * w + ix as usize) * c + ch;
                                    m = m.max(x[at]);
                                }
                            }
                        }
                        want[((b * oh + oy) * ow + ox) * c + ch] = m;
                    }
                }
            }
        }
        for (path, y) in for_each_path(|_| {
            let mut y = vec![0u8; want.len()];
            max_pool2d_u8(&p, &x, &mut y).unwrap();
            y
        }) {
            assert_eq!(
                y,
                want,
                "{c} channels, {k}x{k}/s{s} pad {pad} dilation {d} on {}",
                path.name()
            );
        }
    }
}

#[test]
fn pools_add_and_concat_match_their_references() {
    let mut r = Bytes(99);
    let (n, c, h, w) = (2, 5, 7, 6);
    let x = r.u8s(n * c * h * w);
    let at = |n: usize, y: usize, xx: usize, ch: usize| x[((n * h + y) * w + xx) * c + ch];
    // Max pool 3x3 stride 2 pad 1, ceil mode.
    let p = Pool2dParams::from_shapes([n, c, h, w], [3, 3], [2, 2], [1, 1], [1, 1], true).unwrap();
    let (oh, ow) = p.validate().unwrap();
    let mut y = vec![0u8; n * oh * ow * c];
    max_pool2d_u8(&p, &x, &mut y).unwrap();
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut m = 0u8;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                m = m.max(at(b, iy as usize, ix as usize, ch));
                            }
                        }
                    }
                    assert_eq!(y[((b * oh + oy) * ow + ox) * c + ch], m);
                }
            }
        }
    }
    // Average pool 2x2 stride 2 pad 1 with the zero point counted in the padding.
    let zp = 37;
    let p = Pool2dParams::from_shapes([n, c, h, w], [2, 2], [2, 2], [1, 1], [1, 1], false).unwrap();
    let (oh, ow) = p.validate().unwrap();
    let mut y = vec![0u8; n * oh * ow * c];
    avg_pool2d_u8(&p, &AvgPoolOptions::default(), &x, zp, &mut y).unwrap();
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut s = 0u32;
                    for ky in 0..2 {
                        for kx in 0..2 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            s += if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                at(b, iy as usize, ix as usize, ch) as u32
                            } else {
                                zp as u32
                            };
                        }
                    }
                    assert_eq!(y[((b * oh + oy) * ow + ox) * c + ch] as u32, (s + 2) / 4);
                }
            }
        }
    }
    // Global average pool.
    let mut g = vec![0u8; n * c];
    adaptive_avg_pool2d_u8(Nchw { n, c, h, w }, 1, 1, &x, &mut g).unwrap();
    for b in 0..n {
        for ch in 0..c {
            let s: u32 = (0..h * w).map(|i| at(b, i / w, i % w, ch) as u32).sum();
            assert_eq!(g[b * c + ch] as u32, (s + 21) / 42);
        }
    }
    // Add with ReLU.
    let b2 = r.u8s(x.len());
    let (qa, qb, qy) = (
        QParams {
            scale: 0.1,
            zero_point: 128,
        },
        QParams {
            scale: 0.05,
            zero_point: 10,
        },
        QParams {
            scale: 0.12,
            zero_point: 60,
        },
    );
    let mut s = vec![0u8; x.len()];
    add_u8(&x, qa, &b2, qb, qy, true, &mut s).unwrap();
    for i in 0..x.len() {
        let v =
            (x[i] as i32 - 128) as f32 * (0.1 / 0.12) + (b2[i] as i32 - 10) as f32 * (0.05 / 0.12);
        assert_eq!(
            s[i] as i32,
            (v.round_ties_even() as i32 + 60).clamp(60, 255)
        );
    }
    // Concat of two parts, the second requantized.
    let pixels = 6;
    let (a, b) = (r.u8s(pixels * 2), r.u8s(pixels * 3));
    let mut y = vec![0u8; pixels * 5];
    let parts = [
        ConcatPart {
            data: &a,
            channels: 2,
            q: qy,
        },
        ConcatPart {
            data: &b,
            channels: 3,
            q: qa,
        },
    ];
    concat_nhwc(pixels, &parts, qy, &mut y).unwrap();
    for px in 0..pixels {
        assert_eq!(&y[px * 5..px * 5 + 2], &a[px * 2..px * 2 + 2]);
        for ch in 0..3 {
            let v = (b[px * 3 + ch] as i32 - 128) as f32 * (0.1 / 0.12);
            assert_eq!(
                y[px * 5 + 2 + ch] as i32,
                (v.round_ties_even() as i32 + 60).clamp(0, 255)
            );
        }
    }
}
