//! The vector direct convolution: register-blocked micro-kernels over zero-padded copies,
//! written once over [`F8`] (eight lanes: one AVX2 register, or a pair of NEON registers) and
//! compiled for the SIMD level of the target architecture. Every function with vector code
//! carries that level's `target_feature` (the two `cfg_attr` lines) and is called only from the
//! AVX2 or NEON arm of `direct.rs`'s dispatch.
//!
//! Inputs (forward, backward weight) are copied into a zero-padded *polyphase* layout: row `y`
//! of a padded plane is stored as `stride_w` phase rows, phase `q` holding padded columns
//! `q, q + sw, q + 2 sw, ...`. Output column `ox` under kernel column `kx` then reads phase
//! `(kx * dw) % sw` at `ox + (kx * dw) / sw`: unit-stride vector loads for every stride and
//! dilation, and no bounds checks in the inner loops (padding is real zeros). When several tasks
//! read the same planes (dense convolutions) the copy is made once per batch chunk; when each
//! group's planes have a single reader (depthwise and other narrow groups) each task pads just
//! its planes into a buffer that stays in cache, so the input crosses memory once.
//!
//! Backward data splits the input gradient into `sh x sw` phase classes (rows `Y = ry + sh u`,
//! columns `X = rx + sw v` in padded coordinates). Within a class only the taps with
//! `ky * dh = ry (mod sh)` and `kx * dw = rx (mod sw)` contribute, each as a unit-stride
//! correlation of the zero-padded output gradient: no multiplications by inserted zeros.
//!
//! Forward and backward data share one micro-kernel: a block of up to 4 channels x 16 columns
//! (or 2 channels x 32 columns) of accumulators summed over a list of taps, each tap an offset
//! into the padded source and one weight per channel. Taps are taken a few source channels at a
//! time, so the source rows one output row needs stay in L1; partial sums go through the output.
//! Backward weight keeps up to 3 output channels x 3 taps (or 1 channel x up to 12 taps, for
//! depthwise) in registers while streaming rows of the output gradient.
use super::super::Conv2dParams;
use crate::conv::Forward;
use crate::f8::{Tail, F8, LANES as VEC};
use rayon::prelude::*;

mod backward_data;
mod backward_weight;

pub(super) use backward_data::backward_data;
pub(super) use backward_weight::backward_weight;

/// Channels per register block of the forward / backward-data kernel.
const MAX_CB: usize = 4;
/// Widest column block (vectors x 8).
const MAX_COLS: usize = 4 * VEC;
/// Taps per register block of the depthwise weight-gradient kernel.
const MAX_TAPS: usize = 12;
/// Bytes of padded copies kept at once; the batch is processed in chunks that fit.
const PAD_BUDGET: usize = 32 << 20;
/// Bytes of source rows one output row may read per pass (about half of L1).
const ROW_BUDGET: usize = 16 << 10;

/// Geometry of a polyphase padded plane: element `(y, q, t)` (padded row `y`, padded column
/// `q + t * phases`) is at `(y * phases + q) * width + t`.
#[derive(Clone, Copy)]
struct Geometry {
    rows: usize,
    phases: usize,
    width: usize,
}

impl Geometry {
    fn plane(&self) -> usize {
        self.rows * self.phases * self.width
    }
    fn row(&self) -> usize {
        self.phases * self.width
    }
}

/// The padded input as the forward and the weight gradient read it.
fn input_geometry(p: &Conv2dParams, (oh, ow): (usize, usize)) -> Geometry {
    // Rows and columns past the used extent are never read.
    let rows = (oh - 1) * p.stride_h + p.dilation_h * (p.kernel_h - 1) + 1;
    // Column blocks are whole vectors (lanes past `ow` are computed and dropped), and the
    // widest tap offset is added to them.
    let width = ow.next_multiple_of(VEC) + (p.kernel_w - 1) * p.dilation_w / p.stride_w;
    Geometry {
        rows,
        phases: p.stride_w,
        width,
    }
}

/// `dst.copy_from_slice(src)` for the short rows of small planes, inline (a `memcpy` call per
/// row costs as much as the copy).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let n = src.len();
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut i = 0;
    // SAFETY: every access is below n, the length of both slices (the tail load and store
    // touch only the lanes below n - i).
    unsafe {
        while i + VEC <= n {
            F8::load(s.add(i)).store(d.add(i));
            i += VEC;
        }
        if i < n {
            let t = Tail::new(n - i);
            F8::load_tail(s.add(i), t).store_tail(d.add(i), t);
        }
    }
}

/// Writes padded rows `y0..y0 + geo.rows` of a source plane (`h x w`, with `pad_top` /
/// `pad_left` zeros before the data) into `dst` (one plane of `geo`).
///
/// Only the data positions of data rows are written (pad rows are zeroed whole): the other
/// positions of `dst` must already be zero, as in a fresh buffer or one last padded with the
/// same geometry and padding. That saves clearing the whole plane for every small task.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
fn pad_plane(
    x: &[f32],
    (h, w): (usize, usize),
    (pad_top, pad_left): (usize, usize),
    y0: usize,
    geo: Geometry,
    dst: &mut [f32],
) {
    let (phases, width) = (geo.phases, geo.width);
    for (r, d_row) in dst[..geo.plane()]
        .chunks_exact_mut(phases * width)
        .enumerate()
    {
        let y = y0 + r;
        if y < pad_top || y >= pad_top + h {
            d_row.fill(0.0);
            continue;
        }
        let x_row = &x[(y - pad_top) * w..(y - pad_top + 1) * w];
        if phases == 1 {
            if pad_left < width {
                let n = w.min(width - pad_left);
                copy_row(&mut d_row[pad_left..pad_left + n], &x_row[..n]);
            }
        } else {
            for (ix, &v) in x_row.iter().enumerate() {
                let xp = ix + pad_left;
                let (q, t) = (xp % phases, xp / phases);
                if t < width {
                    d_row[q * width + t] = v;
                }
            }
        }
    }
}

/// Pads planes `first..first + count` of `src` (full rows of `geo`) in parallel.
fn pad_planes(
    src: &[f32],
    hw: (usize, usize),
    (first, count): (usize, usize),
    pads: (usize, usize),
    geo: Geometry,
) -> Vec<f32> {
    let plane = hw.0 * hw.1;
    let mut out = crate::scratch::zeroed::<f32>(count * geo.plane());
    out.par_chunks_mut(geo.plane())
        .enumerate()
        .for_each(|(i, dst)| {
            let x = &src[(first + i) * plane..][..plane];
            // SAFETY: this module runs only on CPUs with its SIMD level. `dst` is freshly zeroed.
            unsafe { pad_plane(x, hw, pads, 0, geo, dst) };
        });
    out
}

/// Items per batch chunk so that a chunk's padded copies fit the budget.
fn chunk_items(p: &Conv2dParams, floats_per_item: usize) -> usize {
    (PAD_BUDGET / (floats_per_item * 4).max(1)).clamp(1, p.batch)
}

/// Splits `planes` (consecutive planes of `rows x cols`) into row ranges of `rows_per` rows:
/// for each range, its first row and one slice per plane.
fn row_tasks(
    planes: &mut [f32],
    (rows, cols): (usize, usize),
    rows_per: usize,
) -> Vec<(usize, Vec<&mut [f32]>)> {
    let chunks = rows.div_ceil(rows_per);
    let mut tasks: Vec<(usize, Vec<&mut [f32]>)> =
        (0..chunks).map(|r| (r * rows_per, Vec::new())).collect();
    for plane in planes.chunks_mut(rows * cols) {
        for (r, part) in plane.chunks_mut(rows_per * cols).enumerate() {
            tasks[r].1.push(part);
        }
    }
    tasks
}

/// How many rows per task, cutting each block of planes so the pool has enough tasks.
fn rows_per_task(blocks: usize, rows: usize) -> usize {
    let want = (4 * rayon::current_num_threads()).div_ceil(blocks.max(1));
    rows.div_ceil(want.clamp(1, rows)).max(1)
}

/// Multiply-adds a task should at least get: tasks smaller than this (a single small depthwise
/// plane) spend as long being scheduled as computing.
const TASK_WORK: usize = 1 << 16;

/// Items per task so each task has about `TASK_WORK` multiply-adds (`item_work` each), while
/// keeping several tasks per thread.
fn items_per_task(items: usize, item_work: usize) -> usize {
    let by_work = TASK_WORK.div_ceil(item_work.max(1));
    let by_count = items / (4 * rayon::current_num_threads()).max(1);
    by_work.min(by_count).max(1)
}

/// Runs `body` over `work` in parallel, `per_task` consecutive items per task, with per-task
/// state from `init`.
fn run_grouped<T: Send, S>(
    work: Vec<T>,
    per_task: usize,
    init: impl Fn() -> S + Sync + Send,
    body: impl Fn(&mut S, T) + Sync + Send,
) {
    let mut groups = Vec::with_capacity(work.len().div_ceil(per_task));
    let mut it = work.into_iter();
    loop {
        let g: Vec<T> = it.by_ref().take(per_task).collect();
        if g.is_empty() {
            break;
        }
        groups.push(g);
    }
    groups.into_par_iter().for_each_init(init, |state, group| {
        for item in group {
            body(state, item)
        }
    });
}

/// Column blocks of a row of `len` for `cb` channels: (first column, columns, vectors).
fn column_blocks(len: usize, cb: usize) -> Vec<(usize, usize, usize)> {
    // 4 x 2 or 2 x 4 vectors of accumulators; one channel also takes 4 (loads then bound).
    let step = if cb <= 2 { 4 * VEC } else { 2 * VEC };
    (0..len)
        .step_by(step)
        .map(|c0| {
            let n = step.min(len - c0);
            (c0, n, n.div_ceil(VEC))
        })
        .collect()
}

/// Packs weights for tap lists: for each block of up to `MAX_CB` consecutive "channels" of the
/// kernel (output channels in the forward, input channels in backward data), `taps` entries of
/// `cb` floats, `weight_of(channel, tap)` each. Blocks never straddle `group_len` boundaries.
/// Returns the packed floats and each block's (first channel, count, start in the packed floats).
fn pack_blocks(
    channels: usize,
    group_len: usize,
    taps: usize,
    weight_of: impl Fn(usize, usize) -> f32,
) -> (Vec<f32>, Vec<(usize, usize, usize)>) {
    let mut packed = Vec::with_capacity(channels * taps);
    let mut blocks = Vec::new();
    for g0 in (0..channels).step_by(group_len.max(1)) {
        for c0 in (g0..g0 + group_len).step_by(MAX_CB) {
            let cb = MAX_CB.min(g0 + group_len - c0);
            blocks.push((c0, cb, packed.len()));
            for t in 0..taps {
                for c in c0..c0 + cb {
                    packed.push(weight_of(c, t));
                }
            }
        }
    }
    (packed, blocks)
}

/// Shape of one kernel call: `cb` channels, `nv` vectors covering `n` columns, `rows` rows
/// (source rows `x_step` floats apart, destination rows `dst_step` apart).
#[derive(Clone, Copy)]
struct Block {
    cb: usize,
    nv: usize,
    n: usize,
    rows: usize,
    x_step: usize,
    dst_step: usize,
}

/// For each of `b.rows` rows `r`: `dst[c][r][0..n] = (bias[c] or dst[c][r][0..n]) + sum over
/// taps of w[tap][c] * x[r][tap offset + 0..n]` for a block of `cb` channels (lanes past `n`
/// are computed, not stored).
///
/// # Safety
/// For every row `r` and tap offset `o`, `x.add(r * x_step + o)` must be readable for `nv * 8`
/// floats; `w` for `taps.len() * cb` floats; each of the first `cb` `dst` rows readable and
/// writable for `n` floats at `r * dst_step` (and not aliased elsewhere); the CPU must have
/// this module's SIMD level.
unsafe fn tap_block(
    b: Block,
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    bias: Option<&[f32; MAX_CB]>,
    dst: [*mut f32; MAX_CB],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (b.cb, b.nv) {
            (4, 2) | (3, 2) => taps_kernel::<4, 2>(b, x, taps, w, bias, dst),
            (4, _) | (3, _) => taps_kernel::<4, 1>(b, x, taps, w, bias, dst),
            (2, 4) => taps_kernel::<2, 4>(b, x, taps, w, bias, dst),
            (2, 3) => taps_kernel::<2, 3>(b, x, taps, w, bias, dst),
            (2, 2) => taps_kernel::<2, 2>(b, x, taps, w, bias, dst),
            (2, _) => taps_kernel::<2, 1>(b, x, taps, w, bias, dst),
            (_, 4) => taps_kernel::<1, 4>(b, x, taps, w, bias, dst),
            (_, 3) => taps_kernel::<1, 3>(b, x, taps, w, bias, dst),
            (_, 2) => taps_kernel::<1, 2>(b, x, taps, w, bias, dst),
            (_, _) => taps_kernel::<1, 1>(b, x, taps, w, bias, dst),
        }
    }
}

/// `CB x NV` vector accumulators; per tap, `NV` loads and `CB` broadcasts feed `CB * NV` FMAs.
/// A 3-channel block runs the 4-channel kernel's shape with a runtime channel count.
// Index loops over the accumulator array: with the iterator forms LLVM stopped keeping the
// accumulators in registers (bench/results/auto-rules.md).
#[allow(clippy::needless_range_loop)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
unsafe fn taps_kernel<const CB: usize, const NV: usize>(
    b: Block,
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    bias: Option<&[f32; MAX_CB]>,
    dst: [*mut f32; MAX_CB],
) {
    let cb = b.cb;
    // The last vector may be partial: tail loads and stores touch its first lanes.
    let last = b.n - (NV - 1) * VEC;
    let tail = Tail::new(last);
    for r in 0..b.rows {
        let xr = x.add(r * b.x_step);
        let mut d = [std::ptr::null_mut::<f32>(); MAX_CB];
        for c in 0..cb {
            d[c] = dst[c].add(r * b.dst_step);
        }
        let mut acc = [[F8::zero(); NV]; CB];
        for c in 0..cb {
            for v in 0..NV {
                acc[c][v] = match bias {
                    Some(bias) => F8::splat(bias[c]),
                    None if v + 1 < NV || last == VEC => F8::load(d[c].add(v * VEC)),
                    None => F8::load_tail(d[c].add(v * VEC), tail),
                };
            }
        }
        if cb == CB {
            for (t, &off) in taps.iter().enumerate() {
                let xp = xr.add(off);
                let wp = w.add(t * CB);
                let mut xv = [F8::zero(); NV];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = F8::load(xp.add(v * VEC));
                }
                for c in 0..CB {
                    let wv = F8::splat(*wp.add(c));
                    for v in 0..NV {
                        acc[c][v] = acc[c][v].mul_add(wv, xv[v]);
                    }
                }
            }
        } else {
            // Fewer channels than the kernel's rows (3 of 4): the same loop, runtime count.
            for (t, &off) in taps.iter().enumerate() {
                let xp = xr.add(off);
                let wp = w.add(t * cb);
                let mut xv = [F8::zero(); NV];
                for (v, xv) in xv.iter_mut().enumerate() {
                    *xv = F8::load(xp.add(v * VEC));
                }
                for c in 0..cb {
                    let wv = F8::splat(*wp.add(c));
                    for v in 0..NV {
                        acc[c][v] = acc[c][v].mul_add(wv, xv[v]);
                    }
                }
            }
        }
        for c in 0..cb {
            for v in 0..NV {
                if v + 1 < NV || last == VEC {
                    acc[c][v].store(d[c].add(v * VEC));
                } else {
                    acc[c][v].store_tail(d[c].add(v * VEC), tail);
                }
            }
        }
    }
}

/// Runs `rows` rows of column blocks for one pass over `taps` (a range of source channels),
/// writing `out[c][r][cols]` for the block's channels: initialised from `bias` on the first
/// pass, added to what is there on later passes. Source row `r` of column block `c0` starts at
/// `x + r * x_step + c0`.
///
/// # Safety
/// As [`tap_block`] for every column block.
#[allow(clippy::too_many_arguments)]
unsafe fn row_pass(
    cb: usize,
    cols: &[(usize, usize, usize)],
    (rows, x_step, dst_step): (usize, usize, usize),
    x: *const f32,
    taps: &[usize],
    w: &[f32],
    bias: Option<&[f32; MAX_CB]>,
    out: [*mut f32; MAX_CB],
) {
    debug_assert!(w.len() >= taps.len() * cb);
    for &(c0, n, nv) in cols {
        let mut dst = out;
        for d in dst.iter_mut().take(cb) {
            // SAFETY: within the row (contract).
            *d = unsafe { d.add(c0) };
        }
        let b = Block {
            cb,
            nv,
            n,
            rows,
            x_step,
            dst_step,
        };
        // SAFETY: the caller's contract.
        unsafe { tap_block(b, x.add(c0), taps, w.as_ptr(), bias, dst) };
    }
}

/// Pointers to the start of each plane part in `parts`, from column `at`.
fn part_ptrs(parts: &mut [&mut [f32]], at: usize) -> [*mut f32; MAX_CB] {
    let mut out = [std::ptr::null_mut(); MAX_CB];
    for (o, part) in out.iter_mut().zip(parts.iter_mut()) {
        *o = part[at..].as_mut_ptr();
    }
    out
}

/// Source channels per pass so one output row's source rows stay in L1.
fn channels_per_pass(rows_per_channel: usize, row_floats: usize, channels: usize) -> usize {
    (ROW_BUDGET / (rows_per_channel * row_floats * 4).max(1)).clamp(1, channels.max(1))
}

pub(super) fn forward(f: Forward<'_>, bias: Option<&[f32]>) {
    let (p, out_hw, input, weight, output) = f.parts();
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, cog) = (
        p.in_channels,
        p.out_channels,
        p.in_per_group(),
        p.out_per_group(),
    );
    let (kh, kw) = (p.kernel_h, p.kernel_w);
    let kk = kh * kw;
    let k_len = cig * kk;
    let (packed, blocks) = pack_blocks(oc_n, cog, k_len, |oc, t| weight[oc * k_len + t]);
    let out_plane = oh * ow;
    let full = input_geometry(p, out_hw);
    // One block per group: each task pads its own group's rows (see the module comment).
    let local = cog <= MAX_CB;
    let nb = if local {
        p.batch
    } else {
        chunk_items(p, c * full.plane())
    };
    let rows_per = rows_per_task(nb * blocks.len(), oh);
    let geo = if local {
        Geometry {
            rows: ((rows_per - 1) * p.stride_h + p.dilation_h * (kh - 1) + 1).min(full.rows),
            ..full
        }
    } else {
        full
    };
    let row_step = p.stride_h * geo.row();
    // Tap (icg, ky, kx): offset from the group's first padded plane at output (0, 0).
    let taps: Vec<usize> = (0..k_len)
        .map(|t| {
            let (icg, ky, kx) = (t / kk, t / kw % kh, t % kw);
            let (q, o) = (
                kx * p.dilation_w % geo.phases,
                kx * p.dilation_w / geo.phases,
            );
            icg * geo.plane() + (ky * p.dilation_h * geo.phases + q) * geo.width + o
        })
        .collect();
    // Every read stays inside the group's padded planes: rows below `rows_per` (local) or `oh`,
    // column blocks up to `ow` rounded up to whole vectors.
    let last_row = if local { rows_per.min(oh) - 1 } else { oh - 1 };
    let max_read =
        taps.iter().max().copied().unwrap_or(0) + last_row * row_step + ow.next_multiple_of(VEC);
    assert!(
        max_read <= cig * geo.plane(),
        "direct: padded reads out of range"
    );
    let per_pass = channels_per_pass(kh, geo.row(), cig);
    let cols_for: Vec<_> = (0..=MAX_CB).map(|cb| column_blocks(ow, cb)).collect();
    let item_work = MAX_CB.min(cog) * rows_per.min(oh) * ow * k_len;
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let shared = if local {
            Vec::new()
        } else {
            let pads = (p.pad_top, p.pad_left);
            pad_planes(input, (p.in_h, p.in_w), (n0 * c, (n1 - n0) * c), pads, geo)
        };
        let (shared, packed, taps, blocks, cols_for) =
            (&shared, &packed, &taps, &blocks, &cols_for);
        output[n0 * oc_n * out_plane..n1 * oc_n * out_plane]
            .par_chunks_mut(oc_n * out_plane)
            .enumerate()
            .for_each(|(ni, item)| {
                let n = n0 + ni;
                // Split the item into the kernel's channel blocks, then into row ranges.
                let mut rest = item;
                let mut work = Vec::new();
                for &(oc0, cb, w_at) in blocks.iter() {
                    let (planes, tail) = rest.split_at_mut(cb * out_plane);
                    rest = tail;
                    for (oy0, rows) in row_tasks(planes, (oh, ow), rows_per) {
                        work.push((oc0, cb, w_at, oy0, rows));
                    }
                }
                let per_task = items_per_task(work.len(), item_work);
                run_grouped(
                    work,
                    per_task,
                    || {
                        if local {
                            crate::scratch::zeroed::<f32>(cig * geo.plane())
                        } else {
                            Vec::new()
                        }
                    },
                    |own, (oc0, cb, w_at, oy0, mut rows)| {
                        let g = oc0 / cog;
                        let (x, row0) = if local {
                            let in_plane = p.in_h * p.in_w;
                            for (icg, dst) in own.chunks_mut(geo.plane()).enumerate() {
                                let x = &input[(n * c + g * cig + icg) * in_plane..][..in_plane];
                                let pads = (p.pad_top, p.pad_left);
                                let y0 = oy0 * p.stride_h;
                                // SAFETY: this module's SIMD level (see the module comment). `own` is zeroed when made and
                                // only ever padded with this geometry and padding.
                                unsafe { pad_plane(x, (p.in_h, p.in_w), pads, y0, geo, dst) };
                            }
                            (&own[..], oy0)
                        } else {
                            (
                                &shared[(ni * c + g * cig) * geo.plane()..][..cig * geo.plane()],
                                0,
                            )
                        };
                        let mut b = [0f32; MAX_CB];
                        for (i, v) in b.iter_mut().take(cb).enumerate() {
                            *v = bias.map_or(0.0, |b| b[oc0 + i]);
                        }
                        let cols = &cols_for[cb];
                        let w = &packed[w_at..w_at + k_len * cb];
                        let n_rows = rows[0].len() / ow;
                        // With several passes, go row by row so a row's partial sums stay in
                        // L1 between passes; with one pass, hand the kernel all rows at once.
                        let step = if per_pass < cig { 1 } else { n_rows };
                        for r0 in (0..n_rows).step_by(step) {
                            let nr = step.min(n_rows - r0);
                            let base = (oy0 + r0 - row0) * row_step;
                            let out = part_ptrs(&mut rows, r0 * ow);
                            for i0 in (0..cig).step_by(per_pass) {
                                let i1 = (i0 + per_pass).min(cig);
                                let init = if i0 == 0 { Some(&b) } else { None };
                                // SAFETY: every tap read for the task's rows and any column
                                // block is below max_read <= x.len() (checked above); w holds
                                // the pass's taps * cb floats; the out pointers start row r0
                                // of this task's own n_rows x ow output rows.
                                unsafe {
                                    row_pass(
                                        cb,
                                        cols,
                                        (nr, row_step, ow),
                                        x.as_ptr().add(base),
                                        &taps[i0 * kk..i1 * kk],
                                        &w[i0 * kk * cb..i1 * kk * cb],
                                        init,
                                        out,
                                    )
                                };
                            }
                        }
                    },
                );
            });
    }
}
