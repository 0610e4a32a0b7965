//! Int8 inference: quantized convolution and linear layers (int32 accumulation, fused
//! requantization, bias, residual and ReLU), pooling, add and concat over uint8 activations.
//!
//! The scheme is the one ONNX's QLinearConv / QDQ graphs and PyTorch's fbgemm backend use:
//! - activations are **uint8, per-tensor affine**: `real = scale * (q - zero_point)`;
//! - weights are **int8, symmetric per output channel** (zero point 0, values in -127..=127);
//! - a conv accumulates `sum (x_q - x_zp) * w_q` in int32 (the `x_zp * sum(w)` term comes off
//!   once per output channel, with the weights' row sums computed when they are packed), adds an
//!   int32 bias quantized at `x_scale * w_scale[oc]`, then requantizes to the output's scale with
//!   one float multiply per value, `round_half_even(acc * x_scale * w_scale[oc] / y_scale) +
//!   y_zp`, clamped to 0..=255 (to y_zp..=255 with a fused ReLU). A residual joins in the same
//!   float expression, `+ (r_q - r_zp) * r_scale / y_scale`, before the rounding.
//!
//! Activations are **NHWC** inside a quantized graph (channels of one pixel contiguous): a 1x1
//! convolution is then a plain matrix product over `[pixels, channels]` with no packing of the
//! activations at all, im2col of a larger kernel copies channel runs, and the whole batch is one
//! matrix (`N*H*W` rows). The graph's edges convert from and to NCHW float
//! ([`quantize_nchw_to_nhwc`], [`dequantize_nhwc_to_nchw`]).
//!
//! Every SIMD path gives bit-identical results to the scalar one (integer sums are exact, and the
//! requantization is the same sequence of float operations on every path, never fused into an
//! FMA), which the tests check on every path this CPU has. The paths ([`Int8Path`]):
//! - **VNNI** (`vpdpbusd`, AVX-512 VNNI at 256 bits): multiplies uint8 activations by int8
//!   weights and adds four products straight into an int32 lane, with no 16-bit intermediate.
//! - **AVX2** without VNNI: `vpmaddubsw` would add two uint8*int8 products into a *saturating*
//!   int16 (255 * 127 * 2 = 64770 > 32767), silently clipping large sums. This path avoids it by
//!   widening both operands to 16 bits first (activations zero-extended when they are gathered,
//!   weights sign-extended when they are packed) and using `vpmaddwd`, whose pairs of 16-bit
//!   products add into int32 exactly. It does half the multiplies per instruction of the uint8
//!   form; exactness is worth more here than that factor, and CPUs with VNNI take the fast path.
//! - **NEON** (aarch64): no uint8-by-int8 multiply without the i8mm extension, so both operands
//!   are widened to 16 bits and `smlal` multiplies them into int32 lanes, exactly.
//! - **scalar**, the portable reference.
mod gemm;

pub use gemm::*;

use crate::error::{check_len, numel};
use crate::pool::{AvgPoolOptions, Pool2dParams};
use crate::{bail, KernelError, Result};
use rayon::prelude::*;

pub use crate::simd::{int8_path, set_int8_vnni, Int8Path};

/// Rounds half to even and saturates to `lo..=255`, as every requantization here does. The float
/// is clamped to +-1024 first (any value beyond saturates the same way, whatever the zero point),
/// which also makes adding and subtracting 1.5 * 2^23 round it half to even exactly: plain float
/// arithmetic the compiler vectorises at every SIMD level, where `round_ties_even` would be a
/// library call on baseline x86-64. NaN counts as 0. The rounded value is a whole number in
/// -1024..=1024, so the conversion to int32 is a plain truncating one (`as i32`'s saturation and
/// NaN check kept the loops around this scalar).
#[inline(always)]
pub(crate) fn saturate_u8(v: f32, zp: i32, lo: i32) -> u8 {
    const MAGIC: f32 = 12_582_912.0;
    let v = if v.is_nan() {
        0.0
    } else {
        v.clamp(-1024.0, 1024.0)
    };
    // SAFETY: (v + MAGIC) - MAGIC is a finite whole number in -1024..=1024, which int32 holds.
    let r: i32 = unsafe { ((v + MAGIC) - MAGIC).to_int_unchecked() };
    (r + zp).clamp(lo, 255) as u8
}

fn check_scale(name: &str, scale: f32) -> Result<()> {
    if !(scale.is_finite() && scale > 0.0) {
        bail!("{name}: expected a positive finite scale, got {scale}");
    }
    Ok(())
}

fn check_zero_point(name: &str, zp: i32) -> Result<()> {
    if !(0..=255).contains(&zp) {
        bail!("{name}: expected a uint8 zero point (0..=255), got {zp}");
    }
    Ok(())
}

/// Shape of a batch of `[N, C, H, W]` as the int8 layer functions take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nchw {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Nchw {
    pub fn len(&self) -> Result<usize> {
        numel("tensor", &[self.n, self.c, self.h, self.w])
    }

    pub fn is_empty(&self) -> bool {
        self.len().map(|l| l == 0).unwrap_or(false)
    }
}

/// Output bytes that parallel tasks write in disjoint pieces.
#[derive(Clone, Copy)]
struct SharedBytes(*mut u8);
// SAFETY: every task writes only bytes no other task touches; the buffer outlives them.
unsafe impl Send for SharedBytes {}
unsafe impl Sync for SharedBytes {}

impl SharedBytes {
    fn ptr(self) -> *mut u8 {
        self.0
    }
}

/// y[n, h, w, c] = saturate(round_half_even(x[n, c, h, w] / scale) + zp): ONNX QuantizeLinear,
/// with the layout change into the graph's NHWC on the way.
pub fn quantize_nchw_to_nhwc(s: Nchw, x: &[f32], scale: f32, zp: i32, y: &mut [u8]) -> Result<()> {
    check_scale("quantize: scale", scale)?;
    check_zero_point("quantize: zero point", zp)?;
    let len = s.len()?;
    check_len("quantize: input", x.len(), len)?;
    check_len("quantize: output", y.len(), len)?;
    let (c, hw) = (s.c, s.h * s.w);
    if len == 0 {
        return Ok(());
    }
    // Blocks of pixels of one image in parallel. Each channel's run of the block (contiguous in
    // NCHW) is quantized into a small buffer by a loop the compiler vectorises, then spread into
    // the NHWC bytes with a stride of C: quantizing straight into the strided bytes kept the
    // float work scalar (the graph's input, [N, 3, 224, 224], took a millisecond at batch 8).
    const BLOCK: usize = 1024;
    let blocks = hw.div_ceil(BLOCK);
    let out = SharedBytes(y.as_mut_ptr());
    let isa = crate::simd::isa();
    (0..s.n * blocks).into_par_iter().for_each(|t| {
        let (n, b) = (t / blocks, t % blocks);
        let (p0, p1) = (b * BLOCK, ((b + 1) * BLOCK).min(hw));
        let xi = &x[n * c * hw..(n + 1) * c * hw];
        let len = p1 - p0;
        if c == 3 {
            // An image's three planes, the common input, interleave by vector shuffles.
            let mut runs = [[0u8; BLOCK]; 3];
            for (ch, run) in runs.iter_mut().enumerate() {
                quantize_run(
                    isa,
                    &xi[ch * hw + p0..ch * hw + p1],
                    scale,
                    zp,
                    &mut run[..len],
                );
            }
            // SAFETY: pixels p0..p1 of image n are inside the checked output, and only this
            // task writes them.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(out.ptr().add((n * hw + p0) * 3), len * 3)
            };
            interleave3(isa, &runs[0][..len], &runs[1][..len], &runs[2][..len], dst);
            return;
        }
        let mut run = [0u8; BLOCK];
        let run = &mut run[..len];
        for ch in 0..c {
            quantize_run(isa, &xi[ch * hw + p0..ch * hw + p1], scale, zp, run);
            for (k, &q) in run.iter().enumerate() {
                // SAFETY: (n, p0 + k, ch) is inside the checked output, and only this task
                // writes the pixels p0..p1 of image n.
                unsafe { *out.ptr().add((n * hw + p0 + k) * c + ch) = q };
            }
        }
    });
    Ok(())
}

crate::simd::kernel! {
    /// y[i] = saturate(round_half_even(x[i] / scale) + zp), for [`quantize_nchw_to_nhwc`].
    fn quantize_run(x: &[f32], scale: f32, zp: i32, y: &mut [u8]) {
        for (d, &v) in y.iter_mut().zip(x) {
            *d = saturate_u8(v / scale, zp, 0);
        }
    }
}

crate::simd::kernel! {
    /// out[3 i + k] = (a, b, c)[k][i]: three channel runs into pixels, 32 at a time in a form the
    /// compiler turns into byte shuffles (a byte store per value ran at a third of the speed).
    fn interleave3(a: &[u8], b: &[u8], c: &[u8], out: &mut [u8]) {
        const L: usize = 32;
        let n = a.len().min(b.len()).min(c.len()).min(out.len() / 3);
        let whole = n / L * L;
        for (((o, a), b), c) in out[..whole * 3]
            .chunks_exact_mut(3 * L)
            .zip(a.chunks_exact(L))
            .zip(b.chunks_exact(L))
            .zip(c.chunks_exact(L))
        {
            let o: &mut [u8; 3 * L] = o.try_into().expect("96 bytes");
            for i in 0..L {
                o[3 * i] = a[i];
                o[3 * i + 1] = b[i];
                o[3 * i + 2] = c[i];
            }
        }
        for i in whole..n {
            out[3 * i] = a[i];
            out[3 * i + 1] = b[i];
            out[3 * i + 2] = c[i];
        }
    }
}

/// y[n, c, h, w] = scale * (x[n, h, w, c] - zp): ONNX DequantizeLinear, back to NCHW.
pub fn dequantize_nhwc_to_nchw(
    s: Nchw,
    x: &[u8],
    scale: f32,
    zp: i32,
    y: &mut [f32],
) -> Result<()> {
    check_scale("dequantize: scale", scale)?;
    check_zero_point("dequantize: zero point", zp)?;
    let len = s.len()?;
    check_len("dequantize: input", x.len(), len)?;
    check_len("dequantize: output", y.len(), len)?;
    let (c, hw) = (s.c, s.h * s.w);
    if len == 0 {
        return Ok(());
    }
    y.par_chunks_mut(c * hw)
        .zip(x.par_chunks(c * hw))
        .for_each(|(yi, xi)| {
            for ch in 0..c {
                for p in 0..hw {
                    yi[ch * hw + p] = (xi[p * c + ch] as i32 - zp) as f32 * scale;
                }
            }
        });
    Ok(())
}

/// A uint8 tensor's quantization: `real = scale * (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QParams {
    pub fn check(&self, name: &str) -> Result<()> {
        check_scale(&format!("{name}: scale"), self.scale)?;
        check_zero_point(&format!("{name}: zero point"), self.zero_point)
    }
}

/// y = requantize((a - a_zp) * a_scale + (b - b_zp) * b_scale) at y's parameters, ReLU optional:
/// the int8 residual add (QLinearAdd), elementwise over equal shapes.
pub fn add_u8(
    a: &[u8],
    qa: QParams,
    b: &[u8],
    qb: QParams,
    qy: QParams,
    relu: bool,
    y: &mut [u8],
) -> Result<()> {
    qa.check("add: a")?;
    qb.check("add: b")?;
    qy.check("add: output")?;
    check_len("add: b", b.len(), a.len())?;
    check_len("add: output", y.len(), a.len())?;
    let (ma, mb) = (qa.scale / qy.scale, qb.scale / qy.scale);
    let lo = if relu { qy.zero_point } else { 0 };
    const CHUNK: usize = 1 << 14;
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                let v =
                    (a as i32 - qa.zero_point) as f32 * ma + (b as i32 - qb.zero_point) as f32 * mb;
                *y = saturate_u8(v, qy.zero_point, lo);
            }
        });
    Ok(())
}

/// y = max(x, zp) in place: ReLU on a uint8 tensor whose zero point is `zp`.
pub fn relu_u8(x: &mut [u8], zp: i32) -> Result<()> {
    check_zero_point("relu: zero point", zp)?;
    let zp = zp as u8;
    x.par_chunks_mut(1 << 14).for_each(|c| {
        for v in c {
            *v = (*v).max(zp);
        }
    });
    Ok(())
}

/// One input of [`concat_nhwc`]: its data `[pixels, channels]` and quantization.
pub struct ConcatPart<'a> {
    pub data: &'a [u8],
    pub channels: usize,
    pub q: QParams,
}

/// Concatenates NHWC uint8 tensors along channels, requantizing each part to `qy` (a copy when
/// a part already has `qy`'s parameters).
pub fn concat_nhwc(pixels: usize, parts: &[ConcatPart], qy: QParams, y: &mut [u8]) -> Result<()> {
    qy.check("concat: output")?;
    let mut total = 0usize;
    for (i, p) in parts.iter().enumerate() {
        p.q.check(&format!("concat: input {i}"))?;
        let len = numel("concat: input", &[pixels, p.channels])?;
        check_len(&format!("concat: input {i}"), p.data.len(), len)?;
        total = total
            .checked_add(p.channels)
            .ok_or_else(|| KernelError("concat: channels overflow".into()))?;
    }
    check_len(
        "concat: output",
        y.len(),
        numel("concat: output", &[pixels, total])?,
    )?;
    if total == 0 {
        return Ok(());
    }
    y.par_chunks_mut(total).enumerate().for_each(|(px, row)| {
        let mut at = 0;
        for p in parts {
            let src = &p.data[px * p.channels..(px + 1) * p.channels];
            let dst = &mut row[at..at + p.channels];
            if p.q == qy {
                dst.copy_from_slice(src);
            } else {
                let m = p.q.scale / qy.scale;
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = saturate_u8((s as i32 - p.q.zero_point) as f32 * m, qy.zero_point, 0);
                }
            }
            at += p.channels;
        }
    });
    Ok(())
}

/// torch's window along one axis: the window's first index, its end clipped to the padded
/// input (what count_include_pad divides by) and the real rows it covers.
fn window(
    o: usize,
    input: usize,
    k: usize,
    s: usize,
    pad: usize,
    d: usize,
) -> (i64, i64, usize, usize) {
    let start = o as i64 * s as i64 - pad as i64;
    let end_padded = (start + ((k - 1) * d + 1) as i64).min(input as i64 + pad as i64);
    let lo = start.max(0) as usize;
    let hi = (start + ((k - 1) * d + 1) as i64).min(input as i64).max(0) as usize;
    (start, end_padded, lo, hi)
}

/// Max pooling over an NHWC uint8 tensor (padding never wins, as torch pads with -inf); the
/// output keeps the input's quantization.
pub fn max_pool2d_u8(p: &Pool2dParams, x: &[u8], y: &mut [u8]) -> Result<()> {
    let (oh, ow) = p.validate()?;
    check_len("maxPool2dU8: input", x.len(), p.input_len())?;
    check_len("maxPool2dU8: output", y.len(), p.output_len((oh, ow)))?;
    let c = p.channels;
    if c == 0 || ow == 0 {
        return Ok(());
    }
    let isa = crate::simd::isa();
    // One output row per task, the channel loop compiled for the CPU's vector width.
    y.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, out)| max_pool_row(isa, p, x, row / oh, row % oh, out));
    Ok(())
}

crate::simd::kernel! {
    /// Output row `h` of image `n` of [`max_pool2d_u8`]. The valid taps of a window form a
    /// rectangle (kernel rows and columns inside the input); each run of 64 channels takes its
    /// max over them in registers and is stored once (a max kept in the output and reloaded per
    /// tap ran at about 120 cycles per 64-channel output pixel).
    fn max_pool_row(p: &Pool2dParams, x: &[u8], n: usize, h: usize, out: &mut [u8]) {
        const W: usize = 64;
        let c = p.channels;
        let (hs, khs) = taps(h, p.in_h, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h);
        let (row_step, col_step) = (p.dilation_h * p.in_w * c, p.dilation_w * c);
        for (w, out) in out.chunks_exact_mut(c).enumerate() {
            let (ws, kws) = taps(w, p.in_w, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w);
            if khs.is_empty() || kws.is_empty() {
                out.fill(0);
                continue;
            }
            // The first valid tap's offset; the others step from it by adds alone (an index
            // recomputed per tap put multiplies on every load's path).
            let ih = (hs + (khs.start * p.dilation_h) as i64) as usize;
            let iw = (ws + (kws.start * p.dilation_w) as i64) as usize;
            let first = ((n * p.in_h + ih) * p.in_w + iw) * c;
            let (rows, cols) = (khs.len(), kws.len());
            let mut j = 0;
            while j < c {
                let width = W.min(c - j);
                let mut acc = [0u8; W];
                let mut row = first + j;
                for _ in 0..rows {
                    let mut at = row;
                    for _ in 0..cols {
                        if width == W {
                            let src: &[u8; W] = x[at..at + W].try_into().expect("64 bytes");
                            for i in 0..W {
                                acc[i] = acc[i].max(src[i]);
                            }
                        } else {
                            for (a, &v) in acc.iter_mut().zip(&x[at..at + width]) {
                                *a = (*a).max(v);
                            }
                        }
                        at += col_step;
                    }
                    row += row_step;
                }
                out[j..j + width].copy_from_slice(&acc[..width]);
                j += width;
            }
        }
    }
}

/// The window of output index `o` along one axis: its first input index (negative in the
/// padding) and the kernel indices whose input index `start + k * d` lies in `0..input`.
fn taps(
    o: usize,
    input: usize,
    k: usize,
    s: usize,
    pad: usize,
    d: usize,
) -> (i64, std::ops::Range<usize>) {
    let (start, _, _, _) = window(o, input, k, s, pad, d);
    let lo = ((-start).max(0) as usize).div_ceil(d).min(k);
    let past = input as i64 - start;
    let hi = if past <= 0 {
        0
    } else {
        (past as usize).div_ceil(d).min(k)
    };
    (start, lo..hi.max(lo))
}

/// Sums `x` over a rectangle of pixels into `acc` (per channel), then writes the rounded mean
/// (half up: sums are never negative) with `extra` zero-point pixels counted in.
#[allow(clippy::too_many_arguments)]
fn mean_window(
    x: &[u8],
    base: usize,
    in_w: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    extra: u32,
    zp: u8,
    divisor: u32,
    acc: &mut [u32],
    out: &mut [u8],
) {
    let c = out.len();
    acc.fill(extra * zp as u32);
    for ih in rows {
        for iw in cols.clone() {
            let at = base + (ih * in_w + iw) * c;
            for (a, &v) in acc.iter_mut().zip(&x[at..at + c]) {
                *a += v as u32;
            }
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = ((a + divisor / 2) / divisor).min(255) as u8;
    }
}

/// Average pooling over an NHWC uint8 tensor with torch's options; the output keeps the input's
/// quantization (zero padding is the zero point, and the mean of quantized values is the
/// quantized mean, rounded half up).
pub fn avg_pool2d_u8(
    p: &Pool2dParams,
    opts: &AvgPoolOptions,
    x: &[u8],
    zp: i32,
    y: &mut [u8],
) -> Result<()> {
    let (oh, ow) = p.check_avg(opts)?;
    check_zero_point("avgPool2dU8: zero point", zp)?;
    check_len("avgPool2dU8: input", x.len(), p.input_len())?;
    check_len("avgPool2dU8: output", y.len(), p.output_len((oh, ow)))?;
    let c = p.channels;
    y.par_chunks_mut(c).enumerate().for_each_init(
        || vec![0u32; c],
        |acc, (q, out)| {
            let (n, r) = (q / (oh * ow), q % (oh * ow));
            let (h, w) = (r / ow, r % ow);
            let (hs, he, hlo, hhi) = window(h, p.in_h, p.kernel_h, p.stride_h, p.pad_h, 1);
            let (ws, we, wlo, whi) = window(w, p.in_w, p.kernel_w, p.stride_w, p.pad_w, 1);
            let real = ((hhi - hlo) * (whi - wlo)) as u32;
            let padded = ((he - hs) * (we - ws)) as u32;
            let (divisor, extra) = match opts.divisor_override {
                Some(d) => (
                    d as u32,
                    if opts.count_include_pad {
                        padded - real
                    } else {
                        0
                    },
                ),
                None if opts.count_include_pad => (padded, padded - real),
                None => (real, 0),
            };
            let base = n * p.in_h * p.in_w * c;
            mean_window(
                x,
                base,
                p.in_w,
                hlo..hhi,
                wlo..whi,
                extra,
                zp as u8,
                divisor.max(1),
                acc,
                out,
            );
        },
    );
    Ok(())
}

/// Adaptive average pooling of an NHWC uint8 tensor `s` to `out_h x out_w` (torch's bins; global
/// pooling is the 1x1 case); the output keeps the input's quantization.
pub fn adaptive_avg_pool2d_u8(
    s: Nchw,
    out_h: usize,
    out_w: usize,
    x: &[u8],
    y: &mut [u8],
) -> Result<()> {
    if out_h == 0 || out_w == 0 {
        bail!("adaptiveAvgPool2dU8: expected a positive output size, got {out_h}x{out_w}");
    }
    check_len("adaptiveAvgPool2dU8: input", x.len(), s.len()?)?;
    let out_len = numel("adaptiveAvgPool2dU8: output", &[s.n, s.c, out_h, out_w])?;
    check_len("adaptiveAvgPool2dU8: output", y.len(), out_len)?;
    if out_len == 0 {
        return Ok(());
    }
    let bins = |i: usize, n: usize| -> Vec<(usize, usize)> {
        (0..n)
            .map(|o| (o * i / n, ((o + 1) * i).div_ceil(n)))
            .collect()
    };
    let (bh, bw) = (bins(s.h, out_h), bins(s.w, out_w));
    let c = s.c;
    y.par_chunks_mut(c).enumerate().for_each_init(
        || vec![0u32; c],
        |acc, (q, out)| {
            let (n, r) = (q / (out_h * out_w), q % (out_h * out_w));
            let ((h0, h1), (w0, w1)) = (bh[r / out_w], bw[r % out_w]);
            let count = ((h1 - h0) * (w1 - w0)) as u32;
            mean_window(
                x,
                n * s.h * s.w * c,
                s.w,
                h0..h1,
                w0..w1,
                0,
                0,
                count.max(1),
                acc,
                out,
            );
        },
    );
    Ok(())
}
