//! The int8 convolution (and linear, a 1x1 convolution over `[N, features, 1, 1]`): a matrix
//! product of the activations `[N*H_out*W_out pixels, K]` (K = kH*kW*C_in/groups, gathered from
//! the NHWC input, or read in place for a 1x1 stride-1 convolution) by the weights packed once
//! into blocks of 16 output channels, with the requantization epilogue applied to each
//! tile of 6 pixels (7 on AVX-512 VNNI) by 16 channels (32) while it is in registers' reach.
//!
//! Packed weights are laid out for the path's multiply: VNNI and scalar `[block][K/4][16][4]`
//! int8 (four consecutive K of one channel form the int32 lane `vpdpbusd` fills), AVX2
//! `[block][K/2][16][2]` int16 (the pair `vpmaddwd` multiplies). The activations of one pixel
//! are broadcast four (two) K at a time against them.
use super::{saturate_u8, Int8Path};
use crate::conv::Conv2dParams;
use crate::error::{check_len, numel};
use crate::{bail, Result};
use rayon::prelude::*;

/// Output channels per packed block (two 8-lane int32 vectors).
pub const QBLOCK: usize = 16;
/// Pixels per micro tile on the AVX2, NEON and scalar paths (12 sums in AVX2's 16 registers).
const MR: usize = 6;
/// Pixels per micro tile on the AVX-512 VNNI path: 14 of its 32 registers hold a block pair's
/// sums, and the maps of the zoo's networks (7x7, 14x14, 28x28, 56x56, 112x112) are whole
/// multiples of 7 pixels, where six-pixel tiles would leave a partial tile per image (a ninth
/// of the work at 7x7).
const MR_VNNI: usize = 7;

/// Pixels per micro tile on `path`.
fn tile_rows(path: Int8Path) -> usize {
    if path == Int8Path::Vnni {
        MR_VNNI
    } else {
        MR
    }
}

/// How far ahead (bytes) the first row tile of a block pair prefetches its weights: a compiled
/// plan runs through tens of megabytes of them per call, so each layer finds its own in DRAM,
/// in streams (a block's `K * 16` bytes) too short for the hardware prefetcher to ramp up.
#[cfg(target_arch = "x86_64")]
const PREFETCH_W: usize = 2048;

/// Conv weights quantized to int8 (OIHW, symmetric per output channel), packed for one path.
pub struct PackedQConv {
    path: Int8Path,
    weight_shape: [usize; 4],
    groups: usize,
    /// Output channels per group.
    ocg: usize,
    /// K (kH*kW*C_in/groups) rounded up to a multiple of 4.
    kp: usize,
    blocks: usize,
    w8: Vec<i8>,
    w16: Vec<i16>,
    /// Sum of each output channel's weights (for the input zero point's share).
    row_sums: Vec<i32>,
}

impl PackedQConv {
    /// Packs `w` (`[C_out, C_in/groups, kH, kW]` int8) for `p`'s shape on the current path.
    pub fn new(p: &Conv2dParams, w: &[i8]) -> Result<PackedQConv> {
        Self::for_path(p, w, super::int8_path())
    }

    fn for_path(p: &Conv2dParams, w: &[i8], path: Int8Path) -> Result<PackedQConv> {
        let shape = p.weight_shape();
        check_len("qconv2d: weight", w.len(), shape.iter().product())?;
        let (groups, ocg, icg) = (p.groups, p.out_per_group(), p.in_per_group());
        let (kh, kw) = (p.kernel_h, p.kernel_w);
        let k = kh * kw * icg;
        // Every int32 sum must hold K products of 255 by 127 (plus the bias): refuse what could
        // wrap rather than give wrong numbers.
        if (k as u64) * 255 * 127 > (i32::MAX / 2) as u64 {
            bail!("qconv2d: {k} products per output is too many for int32 accumulation");
        }
        let kp = k.div_ceil(4) * 4;
        let blocks = ocg.div_ceil(QBLOCK);
        let packed_len = numel("qconv2d: packed weight", &[groups, blocks, kp, QBLOCK])?;
        // Source index of (oc, k) with k ordered (kh, kw, ic) as the NHWC gather reads it.
        let src = |oc: usize, kk: usize| {
            let (khw, ic) = (kk / icg, kk % icg);
            ((oc * icg + ic) * kh + khw / kw) * kw + khw % kw
        };
        let mut row_sums = crate::scratch::zeroed::<i32>(p.out_channels);
        for (oc, s) in row_sums.iter_mut().enumerate() {
            *s = (0..k).map(|kk| w[src(oc, kk)] as i32).sum();
        }
        let (mut w8, mut w16) = (Vec::new(), Vec::new());
        match path {
            Int8Path::Avx2 => {
                w16 = crate::scratch::zeroed::<i16>(packed_len);
                for g in 0..groups {
                    for b in 0..blocks {
                        let base = (g * blocks + b) * kp * QBLOCK;
                        for j in 0..QBLOCK.min(ocg - b * QBLOCK) {
                            let oc = g * ocg + b * QBLOCK + j;
                            for kk in 0..k {
                                w16[base + (kk / 2) * QBLOCK * 2 + j * 2 + kk % 2] =
                                    w[src(oc, kk)] as i16;
                            }
                        }
                    }
                }
            }
            Int8Path::Vnni | Int8Path::Neon | Int8Path::Scalar => {
                w8 = crate::scratch::zeroed::<i8>(packed_len);
                for g in 0..groups {
                    for b in 0..blocks {
                        let base = (g * blocks + b) * kp * QBLOCK;
                        for j in 0..QBLOCK.min(ocg - b * QBLOCK) {
                            let oc = g * ocg + b * QBLOCK + j;
                            for kk in 0..k {
                                w8[base + (kk / 4) * QBLOCK * 4 + j * 4 + kk % 4] = w[src(oc, kk)];
                            }
                        }
                    }
                }
            }
        }
        Ok(PackedQConv {
            path,
            weight_shape: shape,
            groups,
            ocg,
            kp,
            blocks,
            w8,
            w16,
            row_sums,
        })
    }

    /// Whether these packed weights serve `p` on the current path.
    pub fn fits(&self, p: &Conv2dParams) -> bool {
        self.path == super::int8_path()
            && self.weight_shape == p.weight_shape()
            && self.groups == p.groups
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.w8.len() + 2 * self.w16.len() + 4 * self.row_sums.len()
    }
}

/// Where a quantized conv writes: uint8 NHWC at the output's quantization, or float NHWC
/// (dequantized, for a graph's last layer).
pub enum QConvOut<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

/// A uint8 NHWC tensor added before the rounding: `(r - zero_point) * mult`, with `mult` =
/// r_scale / y_scale.
#[derive(Clone, Copy)]
pub struct QResidual<'a> {
    pub data: &'a [u8],
    pub zero_point: i32,
    pub mult: f32,
}

/// What a quantized conv does with each int32 sum `acc` of output channel `oc`:
/// `v = (acc - x_zp * sum(w[oc]) + bias[oc]) * mult[oc] (+ residual)`, then for a uint8 output
/// `saturate(round_half_even(v) + y_zp)` (from y_zp with `relu`), for a float output `v`
/// (`max(v, 0)` with `relu`). For a uint8 output `mult` is x_scale * w_scale[oc] / y_scale, for a
/// float one x_scale * w_scale[oc].
pub struct QConvEpilogue<'a> {
    pub x_zero_point: i32,
    pub bias: Option<&'a [i32]>,
    pub mult: &'a [f32],
    pub y_zero_point: i32,
    pub residual: Option<QResidual<'a>>,
    pub relu: bool,
}

/// Base pointer that parallel tasks write through in disjoint (pixel, channel) tiles.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: every task writes only tiles no other task touches; the buffer outlives them.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// output = requantize(conv2d(x, w)) over NHWC uint8 `x` (`[N, H, W, C_in]`, quantized with
/// zero point `e.x_zero_point`), writing `[N, H_out, W_out, C_out]`.
pub fn qconv2d(
    p: &Conv2dParams,
    x: &[u8],
    w: &PackedQConv,
    e: &QConvEpilogue,
    out: QConvOut,
) -> Result<()> {
    let (oh, ow) = p.validate()?;
    if w.weight_shape != p.weight_shape() || w.groups != p.groups {
        bail!(
            "qconv2d: weights packed for {:?} in {} group(s), the conv has {:?} in {}",
            w.weight_shape,
            w.groups,
            p.weight_shape(),
            p.groups
        );
    }
    check_len("qconv2d: input", x.len(), p.input_len())?;
    let oc = p.out_channels;
    let rows = p.batch * oh * ow;
    let out_len = numel("qconv2d: output", &[rows, oc])?;
    check_len("qconv2d: mult", e.mult.len(), oc)?;
    if let Some(b) = e.bias {
        check_len("qconv2d: bias", b.len(), oc)?;
    }
    for (name, zp) in [("input", e.x_zero_point), ("output", e.y_zero_point)] {
        if !(0..=255).contains(&zp) {
            bail!("qconv2d: {name} zero point: expected 0..=255, got {zp}");
        }
    }
    if let Some(r) = e.residual {
        check_len("qconv2d: residual", r.data.len(), out_len)?;
        if !(0..=255).contains(&r.zero_point) || !r.mult.is_finite() {
            bail!("qconv2d: residual: expected a zero point in 0..=255 and a finite scale");
        }
    }
    if e.mult.iter().any(|m| !m.is_finite()) {
        bail!("qconv2d: mult: expected finite multipliers");
    }
    match &out {
        QConvOut::U8(y) => check_len("qconv2d: output", y.len(), out_len)?,
        QConvOut::F32(y) => {
            check_len("qconv2d: output", y.len(), out_len)?;
            if e.residual.is_some() {
                bail!("qconv2d: a residual needs a uint8 output");
            }
        }
    }
    if rows == 0 || oc == 0 {
        return Ok(());
    }
    crate::scratch::fallible("qconv2d", || {
        run(p, (oh, ow), x, w, e, out);
        Ok(())
    })
}

/// [`qconv2d`] with weights packed for this one call.
pub fn qconv2d_unpacked(
    p: &Conv2dParams,
    x: &[u8],
    w: &[i8],
    e: &QConvEpilogue,
    out: QConvOut,
) -> Result<()> {
    p.validate()?;
    let packed = crate::scratch::fallible("qconv2d", || PackedQConv::new(p, w))?;
    qconv2d(p, x, &packed, e, out)
}

/// The output's elements, for the tile writer.
#[derive(Clone, Copy)]
enum Dest {
    U8(Shared<u8>),
    F32(Shared<f32>),
}

fn run(
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    x: &[u8],
    w: &PackedQConv,
    e: &QConvEpilogue,
    out: QConvOut,
) {
    let rows = p.batch * oh * ow;
    let dest = match out {
        QConvOut::U8(y) => Dest::U8(Shared(y.as_mut_ptr())),
        QConvOut::F32(y) => Dest::F32(Shared(y.as_mut_ptr())),
    };
    let direct = p.kernel_h == 1
        && p.kernel_w == 1
        && p.stride_h == 1
        && p.stride_w == 1
        && p.pad_top + p.pad_bottom + p.pad_left + p.pad_right == 0
        && p.groups == 1
        && p.in_channels.is_multiple_of(4)
        && w.path != Int8Path::Avx2;
    let total_blocks = w.groups * w.blocks;
    let threads = rayon::current_num_threads().max(1);
    // A small map's gathered activations, gathered once for all tasks: where the tasks split
    // the channel blocks (few pixels, many channels), each would otherwise gather them again.
    let shared = !direct
        && w.path != Int8Path::Avx2
        && p.groups == 1
        && rows * w.kp <= SHARED_GATHER_BYTES
        && total_blocks > 2;
    let (chunk, per_split) = grid(
        rows,
        total_blocks,
        w.kp,
        direct || shared,
        (threads, tile_rows(w.path)),
    );
    let row_chunks = rows.div_ceil(chunk);
    let splits = total_blocks.div_ceil(per_split);
    let offset: Vec<i32> = (0..p.out_channels)
        .map(|oc| {
            let bias = e.bias.map_or(0, |b| b[oc]);
            bias.wrapping_sub(e.x_zero_point.wrapping_mul(w.row_sums[oc]))
        })
        .collect();
    let offset = &offset[..];
    let tasks = |src: Source| {
        (0..row_chunks * splits).into_par_iter().for_each(|t| {
            let (rc, s) = (t / splits, t % splits);
            let r0 = rc * chunk;
            let nrows = chunk.min(rows - r0);
            let (b0, b1) = (s * per_split, ((s + 1) * per_split).min(total_blocks));
            if b0 >= b1 {
                return;
            }
            chunk_task(p, (oh, ow), x, w, e, offset, dest, r0, nrows, b0..b1, src);
        })
    };
    if direct {
        tasks(Source::Rows(x, p.in_channels));
    } else if shared {
        let kp = w.kp;
        let mut buf = SHARED8.take();
        crate::scratch::grow(&mut buf, rows * kp);
        let part = rows.div_ceil(2 * threads);
        buf[..rows * kp]
            .par_chunks_mut(part * kp)
            .enumerate()
            .for_each(|(i, dst)| {
                let zp = e.x_zero_point as u8;
                gather(p, (oh, ow), x, 0, i * part, dst.len() / kp, kp, zp, dst)
            });
        tasks(Source::Rows(&buf[..rows * kp], kp));
        crate::scratch::trim(&mut buf);
        SHARED8.set(buf);
    } else {
        tasks(Source::Gather);
    }
}

/// Bytes of gathered activations up to which [`run`] gathers them once for all its tasks.
const SHARED_GATHER_BYTES: usize = 512 * 1024;

/// Where a task's activation rows come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Rows of `.1` bytes in `.0`, pixel by pixel: the NHWC input itself (a 1x1 stride-1
    /// convolution) or the activations gathered once for all tasks.
    Rows(&'a [u8], usize),
    /// Gathered by each task for its own rows.
    Gather,
}

/// How [`run`] cuts the rows x blocks of one convolution into tasks: (rows per chunk, blocks per
/// split). Each task reads its rows' activations (gathered first, unless `direct`) and its
/// blocks' weights, so a weight block is read once per row chunk and a row once per split: the
/// grid with the fewest bytes read that still gives every thread a few tasks. A plan finds most
/// weights in DRAM, so with few rows (a 7x7 map at batch 1) the blocks are split and every task
/// takes all rows; with many, the rows are. Chunks of gathered rows stay small enough for L2,
/// and splits take whole block pairs (the VNNI path's two-block tiles).
fn grid(
    rows: usize,
    blocks: usize,
    kp: usize,
    direct: bool,
    (threads, mr): (usize, usize),
) -> (usize, usize) {
    let kp = kp.max(1);
    let cache = if direct { 512 * 1024 } else { 96 * 1024 };
    let max_chunk = (cache / kp).max(mr) / mr * mr;
    let tiles = rows.div_ceil(mr);
    let pairs = blocks.div_ceil(2);
    let want = 4 * threads;
    let mut best: Option<(usize, usize, usize, usize)> = None;
    for pairs_per in 1..=pairs {
        let per_split = (2 * pairs_per).min(blocks);
        let splits = blocks.div_ceil(per_split);
        // Skip split counts that repeat a smaller split's task count with more blocks each.
        if pairs_per > 1 && blocks.div_ceil((2 * (pairs_per - 1)).min(blocks)) == splits {
            continue;
        }
        let chunk = (tiles.div_ceil(want.div_ceil(splits)) * mr).min(max_chunk);
        let row_chunks = rows.div_ceil(chunk);
        let tasks = row_chunks * splits;
        // Activation bytes (twice when gathered: written, then read) and weight bytes.
        let bytes = rows * kp * splits * if direct { 1 } else { 2 } + blocks * 16 * kp * row_chunks;
        let enough = tasks >= want.min(tiles * pairs);
        let better = match best {
            None => true,
            Some((_, _, t, b)) => {
                let best_enough = t >= want.min(tiles * pairs);
                (enough && !best_enough) || (enough == best_enough && bytes < b)
            }
        };
        if better {
            best = Some((chunk, per_split, tasks, bytes));
        }
    }
    best.map_or((mr, blocks.max(1)), |(chunk, per_split, _, _)| {
        (chunk, per_split)
    })
}

thread_local! {
    static GATHER8: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static SHARED8: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static GATHER16: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
}

/// An activation as a gather buffer holds it: the byte itself (VNNI, scalar) or widened to 16
/// bits (AVX2's vpmaddwd).
trait Activation: Copy + From<u8> {
    fn copy_bytes(dst: &mut [Self], src: &[u8]);

    /// Copies `count` windows of `len` bytes, the i-th from `src[i * src_step..]` to
    /// `dst[i * dst_step..]`: one kernel row of a run of output pixels.
    fn copy_run(
        dst: &mut [Self],
        dst_step: usize,
        src: &[u8],
        src_step: usize,
        count: usize,
        len: usize,
    ) {
        for i in 0..count {
            Self::copy_bytes(
                &mut dst[i * dst_step..i * dst_step + len],
                &src[i * src_step..i * src_step + len],
            );
        }
    }
}

impl Activation for u8 {
    fn copy_bytes(dst: &mut [u8], src: &[u8]) {
        dst.copy_from_slice(src);
    }

    /// Windows of up to 64 bytes go as two overlapping loads and stores of a fixed width: the
    /// stem of a ResNet copies 21 bytes (a 7x7 kernel row over 3 channels) seven times per
    /// pixel, and a call into memcpy for each cost more than its multiplies.
    fn copy_run(
        dst: &mut [u8],
        dst_step: usize,
        src: &[u8],
        src_step: usize,
        count: usize,
        len: usize,
    ) {
        if count == 0 {
            return;
        }
        let last = count - 1;
        // The loops below stay inside these two slices.
        let (dst, src) = (
            &mut dst[..last * dst_step + len],
            &src[..last * src_step + len],
        );
        /// # Safety
        /// `W <= len <= 2 * W`, and `count` windows of `len` bytes at the steps lie in both
        /// slices.
        #[inline(always)]
        unsafe fn two<const W: usize>(
            d: &mut [u8],
            ds: usize,
            s: &[u8],
            ss: usize,
            count: usize,
            len: usize,
        ) {
            let (d, s) = (d.as_mut_ptr(), s.as_ptr());
            for i in 0..count {
                let (si, di) = (s.add(i * ss), d.add(i * ds));
                let a = (si as *const [u8; W]).read_unaligned();
                let b = (si.add(len - W) as *const [u8; W]).read_unaligned();
                (di as *mut [u8; W]).write_unaligned(a);
                (di.add(len - W) as *mut [u8; W]).write_unaligned(b);
            }
        }
        // SAFETY: each arm's width satisfies `two`'s bound on len, and the slices were cut to
        // hold every window.
        unsafe {
            match len {
                4..=7 => two::<4>(dst, dst_step, src, src_step, count, len),
                8..=15 => two::<8>(dst, dst_step, src, src_step, count, len),
                16..=31 => two::<16>(dst, dst_step, src, src_step, count, len),
                32..=64 => two::<32>(dst, dst_step, src, src_step, count, len),
                _ => {
                    for i in 0..count {
                        dst[i * dst_step..i * dst_step + len]
                            .copy_from_slice(&src[i * src_step..i * src_step + len]);
                    }
                }
            }
        }
    }
}

impl Activation for u16 {
    fn copy_bytes(dst: &mut [u16], src: &[u8]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s as u16;
        }
    }
}

/// Copies the K activations of output pixels `r0..r0+nrows` for group `g` into `buf` (`[nrows,
/// kp]`, padding at the input's zero point, K's tail at 0). K runs over (kh, kw, channel).
///
/// The pixels go a run of one output row at a time, kernel row by kernel row: the index
/// arithmetic is done once per run and kernel row, and the pixels whose kernel row lies wholly
/// inside the input (all but the borders) are one strided copy (`copy_run`).
#[allow(clippy::too_many_arguments)]
fn gather<T: Activation>(
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    x: &[u8],
    g: usize,
    r0: usize,
    nrows: usize,
    kp: usize,
    x_zp: u8,
    buf: &mut [T],
) {
    let icg = p.in_per_group();
    let c = p.in_channels;
    let pad = T::from(x_zp);
    let seg = p.kernel_w * icg;
    let k = p.kernel_h * seg;
    // With one group and no dilation along W, a kernel row's window is kW * C bytes in a row of
    // the NHWC input.
    let contiguous = p.groups == 1 && p.dilation_w == 1;
    let (sw, pl) = (p.stride_w, p.pad_left);
    let mut r = 0;
    while r < nrows {
        let q = r0 + r;
        let (n, rem) = (q / (oh * ow), q % (oh * ow));
        let (y, x0) = (rem / ow, rem % ow);
        let run = (ow - x0).min(nrows - r);
        // Output columns x0 + i, i in inner, whose kernel row lies inside the input:
        // xo * sw >= pl and xo * sw - pl + kW <= in_w.
        let first_in = pl.div_ceil(sw);
        let past_in = if p.in_w + pl >= p.kernel_w {
            (p.in_w + pl - p.kernel_w) / sw + 1
        } else {
            0
        };
        let inner = if contiguous {
            let lo = first_in.clamp(x0, x0 + run) - x0;
            let hi = past_in.clamp(x0, x0 + run) - x0;
            lo..hi.max(lo)
        } else {
            0..0
        };
        for kh in 0..p.kernel_h {
            let ih = (y * p.stride_h + kh * p.dilation_h) as isize - p.pad_top as isize;
            let at = r * kp + kh * seg;
            if ih < 0 || ih as usize >= p.in_h {
                for i in 0..run {
                    buf[at + i * kp..at + i * kp + seg].fill(pad);
                }
                continue;
            }
            let src_row = (n * p.in_h + ih as usize) * p.in_w * c;
            if !inner.is_empty() {
                let src = src_row + ((x0 + inner.start) * sw - pl) * c;
                T::copy_run(
                    &mut buf[at + inner.start * kp..],
                    kp,
                    &x[src..],
                    sw * c,
                    inner.len(),
                    seg,
                );
            }
            for i in (0..inner.start).chain(inner.end..run) {
                let iw0 = ((x0 + i) * sw) as isize - pl as isize;
                let row = &mut buf[at + i * kp..at + i * kp + seg];
                for (kw, dst) in row.chunks_exact_mut(icg).enumerate() {
                    let iw = iw0 + (kw * p.dilation_w) as isize;
                    if iw < 0 || iw >= p.in_w as isize {
                        dst.fill(pad);
                    } else {
                        let src = src_row + iw as usize * c + g * icg;
                        T::copy_bytes(dst, &x[src..src + icg]);
                    }
                }
            }
        }
        if k < kp {
            for i in 0..run {
                buf[(r + i) * kp + k..(r + i + 1) * kp].fill(T::from(0));
            }
        }
        r += run;
    }
}

#[allow(clippy::too_many_arguments)]
fn chunk_task(
    p: &Conv2dParams,
    hw: (usize, usize),
    x: &[u8],
    w: &PackedQConv,
    e: &QConvEpilogue,
    offset: &[i32],
    dest: Dest,
    r0: usize,
    nrows: usize,
    blocks: std::ops::Range<usize>,
    src: Source,
) {
    let kp = w.kp;
    let (g0, g1) = (blocks.start / w.blocks, (blocks.end - 1) / w.blocks);
    for g in g0..=g1 {
        let (lo, hi) = (
            blocks.start.max(g * w.blocks) - g * w.blocks,
            blocks.end.min((g + 1) * w.blocks) - g * w.blocks,
        );
        let run_tiles = |a: &dyn Fn(usize) -> *const u8| {
            if w.path == Int8Path::Vnni {
                tiles::<MR_VNNI>(w, e, offset, dest, g, lo..hi, r0, nrows, a)
            } else {
                tiles::<MR>(w, e, offset, dest, g, lo..hi, r0, nrows, a)
            }
        };
        match (w.path, src) {
            (Int8Path::Avx2, _) => {
                let mut buf = GATHER16.take();
                crate::scratch::grow(&mut buf, nrows * kp);
                gather(p, hw, x, g, r0, nrows, kp, e.x_zero_point as u8, &mut buf);
                let a = |r: usize| buf[r * kp..].as_ptr() as *const u8;
                tiles::<MR>(w, e, offset, dest, g, lo..hi, r0, nrows, &a);
                crate::scratch::trim(&mut buf);
                GATHER16.set(buf);
            }
            (_, Source::Rows(base, stride)) => {
                let a = |r: usize| base[(r0 + r) * stride..].as_ptr();
                run_tiles(&a);
            }
            _ => {
                let mut buf = GATHER8.take();
                crate::scratch::grow(&mut buf, nrows * kp);
                gather(p, hw, x, g, r0, nrows, kp, e.x_zero_point as u8, &mut buf);
                let a = |r: usize| buf[r * kp..].as_ptr();
                run_tiles(&a);
                crate::scratch::trim(&mut buf);
                GATHER8.set(buf);
            }
        }
    }
}

/// Runs the micro tiles of rows `0..nrows` (pixel `r0 + r`) against blocks `blocks` of group
/// `g`; `a(r)` points at row r's K activations (u8, or u16 on the AVX2 path).
#[allow(clippy::too_many_arguments)]
fn tiles<const R: usize>(
    w: &PackedQConv,
    e: &QConvEpilogue,
    offset: &[i32],
    dest: Dest,
    g: usize,
    blocks: std::ops::Range<usize>,
    r0: usize,
    nrows: usize,
    a: &dyn Fn(usize) -> *const u8,
) {
    let mut acc = [[0i32; QBLOCK]; R];
    #[cfg(target_arch = "x86_64")]
    let mut acc2 = [[0i32; QBLOCK]; R];
    let mut b = blocks.start;
    while b < blocks.end {
        let wb = (g * w.blocks + b) * w.kp * QBLOCK;
        // Two blocks at a time on the VNNI path: 14 accumulators of the 32 registers, so each
        // broadcast activation feeds twice the multiplies.
        #[cfg(target_arch = "x86_64")]
        if w.path == Int8Path::Vnni && b + 1 < blocks.end {
            let wb2 = wb + w.kp * QBLOCK;
            let mut r = 0;
            while r < nrows {
                let n = R.min(nrows - r);
                let rows: [*const u8; R] = std::array::from_fn(|i| a(r + i.min(n - 1)));
                let oc0 = g * w.ocg + b * QBLOCK;
                let full = (b + 2) * QBLOCK <= w.ocg;
                if let (Dest::U8(y), true) = (dest, full) {
                    // The epilogue in registers, straight from the sums (uint8 output, 32 full
                    // channels): what keeps small-K convs from spending as long on it as on the
                    // multiplies.
                    let oc_total = w.groups * w.ocg;
                    let res = e
                        .residual
                        .map(|res| (res.data.as_ptr(), res.zero_point, res.mult));
                    let fused = FusedStore {
                        out: y.0,
                        row_stride: oc_total,
                        first: (r0 + r) * oc_total + oc0,
                        rows: n,
                        offset: offset[oc0..oc0 + 2 * QBLOCK].as_ptr(),
                        mult: e.mult[oc0..oc0 + 2 * QBLOCK].as_ptr(),
                        residual: res,
                        y_zp: e.y_zero_point,
                        lo: if e.relu { e.y_zero_point } else { 0 },
                    };
                    // SAFETY: as below for the sums; the stores go to rows r0+r..r0+r+n and
                    // channels oc0..oc0+32 of the checked output (and read the same places of
                    // the checked residual), this task's tile.
                    unsafe {
                        let (b0, b1) = (w.w8[wb..].as_ptr(), w.w8[wb2..].as_ptr());
                        if r == 0 {
                            tile_vnni2_store::<true, R>(&rows, b0, b1, w.kp / 4, &fused)
                        } else {
                            tile_vnni2_store::<false, R>(&rows, b0, b1, w.kp / 4, &fused)
                        }
                    };
                    r += n;
                    continue;
                }
                // SAFETY: as in the single-block case below, for two consecutive blocks.
                unsafe {
                    let (b0, b1) = (w.w8[wb..].as_ptr(), w.w8[wb2..].as_ptr());
                    if r == 0 {
                        tile_vnni2::<true, R>(&rows, b0, b1, w.kp / 4, &mut acc, &mut acc2)
                    } else {
                        tile_vnni2::<false, R>(&rows, b0, b1, w.kp / 4, &mut acc, &mut acc2)
                    }
                };
                store(w, e, offset, dest, &acc[..n], r0 + r, oc0, QBLOCK);
                let width = QBLOCK.min(w.ocg - (b + 1) * QBLOCK);
                store(w, e, offset, dest, &acc2[..n], r0 + r, oc0 + QBLOCK, width);
                r += n;
            }
            b += 2;
            continue;
        }
        let mut r = 0;
        while r < nrows {
            let n = R.min(nrows - r);
            // Rows past the end repeat the last real one (computed, never written).
            let rows: [*const u8; R] = std::array::from_fn(|i| a(r + i.min(n - 1)));
            // SAFETY: each row pointer has kp activations (the gather buffer's rows, or the
            // input's rows of C_in = kp channels on the direct path), the block has kp * QBLOCK
            // weights, and the path was chosen by int8_path() on this CPU.
            unsafe {
                match w.path {
                    #[cfg(target_arch = "x86_64")]
                    Int8Path::Vnni => tile_vnni(&rows, w.w8[wb..].as_ptr(), w.kp / 4, &mut acc),
                    #[cfg(target_arch = "x86_64")]
                    Int8Path::Avx2 => tile_avx2(&rows, w.w16[wb..].as_ptr(), w.kp / 2, &mut acc),
                    #[cfg(target_arch = "aarch64")]
                    Int8Path::Neon => tile_neon(&rows, w.w8[wb..].as_ptr(), w.kp / 4, &mut acc),
                    _ => tile_scalar(&rows, &w.w8[wb..wb + w.kp * QBLOCK], w.kp / 4, &mut acc),
                }
            }
            let oc0 = g * w.ocg + b * QBLOCK;
            let width = QBLOCK.min(w.ocg - b * QBLOCK);
            store(w, e, offset, dest, &acc[..n], r0 + r, oc0, width);
            r += n;
        }
        b += 1;
    }
}

/// The epilogue of one tile: rows `q0..`, output channels `oc0..oc0+width`. `offset[oc]` is
/// `bias[oc] - x_zp * sum(w[oc])`.
#[allow(clippy::too_many_arguments)]
fn store(
    w: &PackedQConv,
    e: &QConvEpilogue,
    offset: &[i32],
    dest: Dest,
    acc: &[[i32; QBLOCK]],
    q0: usize,
    oc0: usize,
    width: usize,
) {
    let oc_total = w.groups * w.ocg;
    #[cfg(target_arch = "x86_64")]
    if width == QBLOCK && w.path != Int8Path::Scalar {
        if let Dest::U8(y) = dest {
            for (r, acc) in acc.iter().enumerate() {
                let q = q0 + r;
                let res = e
                    .residual
                    .map(|res| (&res.data[q * oc_total + oc0..], res.zero_point, res.mult));
                // SAFETY: the AVX2 and VNNI paths run only on CPUs with AVX2; offset, mult and the
                // residual row have QBLOCK values from oc0 (width == QBLOCK), and (q, oc0..+16)
                // lies in this task's tile of the checked output.
                unsafe {
                    store_row_avx2(
                        acc,
                        &offset[oc0..oc0 + QBLOCK],
                        &e.mult[oc0..oc0 + QBLOCK],
                        res,
                        e.y_zero_point,
                        e.relu,
                        y.0.add(q * oc_total + oc0),
                    )
                };
            }
            return;
        }
    }
    let lo = if e.relu { e.y_zero_point } else { 0 };
    let mut v = [0f32; QBLOCK];
    for (r, acc) in acc.iter().enumerate() {
        let q = q0 + r;
        for j in 0..width {
            let oc = oc0 + j;
            v[j] = acc[j].wrapping_add(offset[oc]) as f32 * e.mult[oc];
        }
        if let Some(res) = e.residual {
            let row = &res.data[q * oc_total + oc0..q * oc_total + oc0 + width];
            for (v, &rv) in v.iter_mut().zip(row) {
                *v += (rv as i32 - res.zero_point) as f32 * res.mult;
            }
        }
        match dest {
            Dest::U8(y) => {
                for (j, &v) in v[..width].iter().enumerate() {
                    // SAFETY: (q, oc0 + j) lies in this task's tile of the checked output.
                    unsafe {
                        *y.0.add(q * oc_total + oc0 + j) = saturate_u8(v, e.y_zero_point, lo)
                    };
                }
            }
            Dest::F32(y) => {
                for (j, &v) in v[..width].iter().enumerate() {
                    let v = if e.relu { v.max(0.0) } else { v };
                    // SAFETY: as above.
                    unsafe { *y.0.add(q * oc_total + oc0 + j) = v };
                }
            }
        }
    }
}

/// [`store`]'s uint8 row of 16 channels in AVX2: the same float operations in the same order
/// (convert, multiply, add the residual's product, clamp to +-1024, round half to even, add the
/// zero point, saturate), so the bytes equal the scalar epilogue's.
///
/// # Safety
/// The CPU has AVX2; `res`'s slice has at least 16 values; `y` has 16 writable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn store_row_avx2(
    acc: &[i32; QBLOCK],
    offset: &[i32],
    mult: &[f32],
    res: Option<(&[u8], i32, f32)>,
    y_zp: i32,
    relu: bool,
    y: *mut u8,
) {
    use std::arch::x86_64::*;
    let mut q = [_mm256_setzero_si256(); 2];
    for (h, q) in q.iter_mut().enumerate() {
        let a = _mm256_loadu_si256(acc.as_ptr().add(8 * h) as *const __m256i);
        let o = _mm256_loadu_si256(offset.as_ptr().add(8 * h) as *const __m256i);
        let m = _mm256_loadu_ps(mult.as_ptr().add(8 * h));
        let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(a, o)), m);
        if let Some((r, rzp, rm)) = res {
            let rb = _mm_loadl_epi64(r.as_ptr().add(8 * h) as *const __m128i);
            let ri = _mm256_sub_epi32(_mm256_cvtepu8_epi32(rb), _mm256_set1_epi32(rzp));
            v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_cvtepi32_ps(ri), _mm256_set1_ps(rm)));
        }
        v = _mm256_max_ps(
            _mm256_min_ps(v, _mm256_set1_ps(1024.0)),
            _mm256_set1_ps(-1024.0),
        );
        // cvtps rounds half to even under the default MXCSR, as round_ties_even does.
        *q = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(y_zp));
    }
    let lo = _mm256_set1_epi32(if relu { y_zp } else { 0 });
    let hi = _mm256_set1_epi32(255);
    let (a, b) = (
        _mm256_min_epi32(_mm256_max_epi32(q[0], lo), hi),
        _mm256_min_epi32(_mm256_max_epi32(q[1], lo), hi),
    );
    // Values are 0..=255 now, so the saturating packs only narrow; permute undoes their lane order.
    let w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0b11_01_10_00);
    let b8 = _mm_packus_epi16(
        _mm256_castsi256_si128(w16),
        _mm256_extracti128_si256(w16, 1),
    );
    _mm_storeu_si128(y as *mut __m128i, b8);
}

/// The portable tile: the integer reference every other path must equal.
///
/// # Safety
/// Each row pointer must have `4 * k4` readable bytes.
unsafe fn tile_scalar<const R: usize>(
    rows: &[*const u8; R],
    wb: &[i8],
    k4: usize,
    acc: &mut [[i32; QBLOCK]; R],
) {
    for (r, row) in rows.iter().enumerate() {
        let a = std::slice::from_raw_parts(*row, 4 * k4);
        let out = &mut acc[r];
        out.fill(0);
        for kk in 0..k4 {
            let wk = &wb[kk * 4 * QBLOCK..(kk + 1) * 4 * QBLOCK];
            let ak = &a[kk * 4..kk * 4 + 4];
            for (j, o) in out.iter_mut().enumerate() {
                for t in 0..4 {
                    *o += ak[t] as i32 * wk[j * 4 + t] as i32;
                }
            }
        }
    }
}

/// The NEON tile, on the scalar path's packing (`[K/4][16][4]` int8). AArch64 has no
/// uint8-by-int8 multiply without the i8mm extension (and Rust's dot-product intrinsics are not
/// stable yet), so both operands are widened to 16 bits and `smlal` multiplies them into int32
/// lanes, exactly: each channel's accumulator holds four K phases, added across at the end.
/// One pixel at a time: its 16 accumulators and the block's widened weights fill the 32
/// registers.
///
/// # Safety
/// Every aarch64 CPU has NEON; each row has `4 * k4` bytes, `wb` `k4 * 64`.
#[cfg(target_arch = "aarch64")]
unsafe fn tile_neon<const R: usize>(
    rows: &[*const u8; R],
    wb: *const i8,
    k4: usize,
    acc: &mut [[i32; QBLOCK]; R],
) {
    use std::arch::aarch64::*;
    for (r, row) in rows.iter().enumerate() {
        let mut c = [vdupq_n_s32(0); QBLOCK];
        for kk in 0..k4 {
            // The pixel's four activations, zero-extended to 16 bits, twice over.
            let four = (row.add(kk * 4) as *const u32).read_unaligned();
            let a = vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(four))));
            let a_lo = vget_low_s16(a);
            let w = wb.add(kk * 4 * QBLOCK);
            for q in 0..4 {
                // Channels 4q..4q+4, four K each; widened two channels at a time.
                let wq = vld1q_s8(w.add(q * 16));
                let lo = vmovl_s8(vget_low_s8(wq));
                let hi = vmovl_high_s8(wq);
                c[4 * q] = vmlal_s16(c[4 * q], vget_low_s16(lo), a_lo);
                c[4 * q + 1] = vmlal_high_s16(c[4 * q + 1], lo, a);
                c[4 * q + 2] = vmlal_s16(c[4 * q + 2], vget_low_s16(hi), a_lo);
                c[4 * q + 3] = vmlal_high_s16(c[4 * q + 3], hi, a);
            }
        }
        for (o, v) in acc[r].iter_mut().zip(c) {
            *o = vaddvq_s32(v);
        }
    }
}

/// # Safety
/// The CPU has AVX-512 VNNI and VL; each row has `4 * k4` bytes, `wb` `k4 * 64`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512vnni,avx512vl")]
unsafe fn tile_vnni<const R: usize>(
    rows: &[*const u8; R],
    wb: *const i8,
    k4: usize,
    acc: &mut [[i32; QBLOCK]; R],
) {
    use std::arch::x86_64::*;
    let mut c = [[_mm256_setzero_si256(); 2]; R];
    for kk in 0..k4 {
        let b0 = _mm256_loadu_si256(wb.add(kk * 64) as *const __m256i);
        let b1 = _mm256_loadu_si256(wb.add(kk * 64 + 32) as *const __m256i);
        for r in 0..R {
            let a = _mm256_set1_epi32((rows[r].add(kk * 4) as *const i32).read_unaligned());
            c[r][0] = _mm256_dpbusd_epi32(c[r][0], a, b0);
            c[r][1] = _mm256_dpbusd_epi32(c[r][1], a, b1);
        }
    }
    for r in 0..R {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, c[r][0]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut __m256i, c[r][1]);
    }
}

/// Where [`tile_vnni2_store`] writes its uint8 tile and what it applies on the way.
#[cfg(target_arch = "x86_64")]
struct FusedStore {
    out: *mut u8,
    row_stride: usize,
    /// Index of the tile's first output (row 0, channel 0).
    first: usize,
    rows: usize,
    /// 32 channels' `bias - x_zp * sum(w)` and multipliers.
    offset: *const i32,
    mult: *const f32,
    /// The residual's base (same layout as `out`), zero point and multiplier.
    residual: Option<(*const u8, i32, f32)>,
    y_zp: i32,
    lo: i32,
}

/// [`tile_vnni2`] with the uint8 epilogue done on the sums in registers, 16 channels per
/// instruction: the same float operations in the same order as [`store`]'s (convert, multiply,
/// add the residual's product, clamp to +-1024, round half to even, add the zero point,
/// saturate), so the bytes equal the scalar path's. Fewer instructions reach the same bytes:
/// the sums start from the channels' offsets (integer sums are exact in any order); only the
/// upper clamp is done in float (below -1024, or past int32, where `vcvtps2dq` gives
/// `i32::MIN`, the value still saturates to the lower bound, as in the scalar path); and the
/// unsigned saturating narrow does the clamp to 255.
///
/// # Safety
/// As [`tile_vnni2`]; `f` describes `f.rows` rows of 32 writable (and, with a residual, readable)
/// bytes at `first + row * row_stride`, and 32 offsets and multipliers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni,avx512vl")]
unsafe fn tile_vnni2_store<const PREFETCH: bool, const R: usize>(
    rows: &[*const u8; R],
    wb: *const i8,
    wb2: *const i8,
    k4: usize,
    f: &FusedStore,
) {
    use std::arch::x86_64::*;
    let off = [
        _mm512_loadu_si512(f.offset as *const __m512i),
        _mm512_loadu_si512(f.offset.add(16) as *const __m512i),
    ];
    let c = vnni2_sums::<PREFETCH, R>(rows, wb, wb2, k4, off);
    let mul = [_mm512_loadu_ps(f.mult), _mm512_loadu_ps(f.mult.add(16))];
    let lo = _mm512_set1_epi32(f.lo);
    let fmax = _mm512_set1_ps(1024.0);
    let zp = _mm512_set1_epi32(f.y_zp);
    for (r, c) in c.iter().enumerate().take(f.rows) {
        let at = f.first + r * f.row_stride;
        for h in 0..2 {
            let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(c[h]), mul[h]);
            if let Some((res, rzp, rm)) = f.residual {
                let rb = _mm_loadu_si128(res.add(at + 16 * h) as *const __m128i);
                let ri = _mm512_sub_epi32(_mm512_cvtepu8_epi32(rb), _mm512_set1_epi32(rzp));
                v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_cvtepi32_ps(ri), _mm512_set1_ps(rm)));
            }
            // min(v, 1024) first, so a NaN becomes 1024 (255), as the clamp in `store` does.
            v = _mm512_min_ps(v, fmax);
            // cvtps rounds half to even under the default MXCSR, as the scalar path does.
            let q = _mm512_max_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(v), zp), lo);
            _mm_storeu_si128(
                f.out.add(at + 16 * h) as *mut __m128i,
                _mm512_cvtusepi32_epi8(q),
            );
        }
    }
}

/// The int32 sums of [`tile_vnni2`] and [`tile_vnni2_store`], left in registers: per pixel
/// row, the two blocks' 16 channels each, each starting from `init`. 512-bit registers hold a
/// whole block's 16 channels, so one broadcast and two multiplies cover 32 channels of a pixel.
///
/// # Safety
/// As [`tile_vnni`], for both `wb` and `wb2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vnni,avx512vl")]
#[inline]
unsafe fn vnni2_sums<const PREFETCH: bool, const R: usize>(
    rows: &[*const u8; R],
    wb: *const i8,
    wb2: *const i8,
    k4: usize,
    init: [std::arch::x86_64::__m512i; 2],
) -> [[std::arch::x86_64::__m512i; 2]; R] {
    use std::arch::x86_64::*;
    let mut c = [init; R];
    for kk in 0..k4 {
        if PREFETCH {
            // Prefetch addresses need not be valid; past the panel's end they reach into the
            // next blocks' (the next pair's) or harmlessly beyond the weights.
            _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(kk * 64 + PREFETCH_W));
            _mm_prefetch::<_MM_HINT_T0>(wb2.wrapping_add(kk * 64 + PREFETCH_W));
        }
        let b0 = _mm512_loadu_si512(wb.add(kk * 64) as *const __m512i);
        let b1 = _mm512_loadu_si512(wb2.add(kk * 64) as *const __m512i);
        for r in 0..R {
            let a = _mm512_set1_epi32((rows[r].add(kk * 4) as *const i32).read_unaligned());
            c[r][0] = _mm512_dpbusd_epi32(c[r][0], a, b0);
            c[r][1] = _mm512_dpbusd_epi32(c[r][1], a, b1);
        }
    }
    c
}

/// [`tile_vnni`] over two consecutive packed blocks (32 output channels) at once.
///
/// # Safety
/// As [`tile_vnni`], for both `wb` and `wb2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vnni,avx512vl")]
unsafe fn tile_vnni2<const PREFETCH: bool, const R: usize>(
    rows: &[*const u8; R],
    wb: *const i8,
    wb2: *const i8,
    k4: usize,
    acc: &mut [[i32; QBLOCK]; R],
    acc2: &mut [[i32; QBLOCK]; R],
) {
    use std::arch::x86_64::*;
    let c = vnni2_sums::<PREFETCH, R>(rows, wb, wb2, k4, [_mm512_setzero_si512(); 2]);
    for r in 0..R {
        _mm512_storeu_si512(acc[r].as_mut_ptr() as *mut __m512i, c[r][0]);
        _mm512_storeu_si512(acc2[r].as_mut_ptr() as *mut __m512i, c[r][1]);
    }
}

/// # Safety
/// The CPU has AVX2; each row (u16 activations) has `2 * k2` elements, `wb` `k2 * 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(
    rows: &[*const u8; R],
    wb: *const i16,
    k2: usize,
    acc: &mut [[i32; QBLOCK]; R],
) {
    use std::arch::x86_64::*;
    let mut c = [[_mm256_setzero_si256(); 2]; R];
    for kk in 0..k2 {
        let b0 = _mm256_loadu_si256(wb.add(kk * 32) as *const __m256i);
        let b1 = _mm256_loadu_si256(wb.add(kk * 32 + 16) as *const __m256i);
        for r in 0..R {
            // Two zero-extended activations as one int32: the pair vpmaddwd multiplies.
            let a = _mm256_set1_epi32((rows[r].add(kk * 4) as *const i32).read_unaligned());
            c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(a, b0));
            c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(a, b1));
        }
    }
    for r in 0..R {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, c[r][0]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(8) as *mut __m256i, c[r][1]);
    }
}
