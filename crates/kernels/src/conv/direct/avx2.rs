//! The AVX2+FMA direct convolution: register-blocked micro-kernels over zero-padded copies.
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
//! Backward weight keeps up to 3 output channels x 3 taps (or 1 channel x 8 taps, for depthwise)
//! in registers while streaming rows of the output gradient.
use super::super::Conv2dParams;
use rayon::prelude::*;
use std::arch::x86_64::*;

const VEC: usize = 8;
/// Channels per register block of the forward / backward-data kernel.
const MAX_CB: usize = 4;
/// Widest column block (vectors x 8).
const MAX_COLS: usize = 4 * VEC;
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

/// Writes padded rows `y0..y0 + geo.rows` of a source plane (`h x w`, with `pad_top` /
/// `pad_left` zeros before the data) into `dst` (one plane of `geo`), zeros elsewhere.
fn pad_plane(
    x: &[f32],
    (h, w): (usize, usize),
    (pad_top, pad_left): (usize, usize),
    y0: usize,
    geo: Geometry,
    dst: &mut [f32],
) {
    dst.fill(0.0);
    let (phases, width) = (geo.phases, geo.width);
    let y_lo = y0.max(pad_top);
    let y_hi = (y0 + geo.rows).min(pad_top + h);
    for y in y_lo..y_hi {
        let x_row = &x[(y - pad_top) * w..(y - pad_top + 1) * w];
        let d_row = &mut dst[(y - y0) * phases * width..(y - y0 + 1) * phases * width];
        if phases == 1 {
            if pad_left < width {
                let n = w.min(width - pad_left);
                d_row[pad_left..pad_left + n].copy_from_slice(&x_row[..n]);
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
    let mut out = vec![0f32; count * geo.plane()];
    out.par_chunks_mut(geo.plane())
        .enumerate()
        .for_each(|(i, dst)| {
            let x = &src[(first + i) * plane..][..plane];
            pad_plane(x, hw, pads, 0, geo, dst);
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

/// Where a block's accumulators start: the bias, or values already in memory.
#[derive(Clone, Copy)]
enum Init<'a> {
    Bias(&'a [f32; MAX_CB]),
    From([*const f32; MAX_CB]),
}

/// `dst[c][0..nv*8] = init[c] + sum over taps of w[tap][c] * x[tap offset + 0..nv*8]` for a
/// block of `cb` channels.
///
/// # Safety
/// For every tap offset `o`, `x.add(o)` must be readable for `nv * 8` floats, `w` for
/// `taps.len() * cb` floats, `Init::From` rows and `dst` rows (the first `cb`) for `nv * 8`
/// floats; the CPU must have AVX2+FMA.
unsafe fn tap_block(
    (cb, nv): (usize, usize),
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    init: Init,
    dst: [*mut f32; MAX_CB],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (cb, nv) {
            (4, 2) | (3, 2) => taps_kernel::<4, 2>(cb, x, taps, w, init, dst),
            (4, _) | (3, _) => taps_kernel::<4, 1>(cb, x, taps, w, init, dst),
            (2, 4) => taps_kernel::<2, 4>(2, x, taps, w, init, dst),
            (2, 3) => taps_kernel::<2, 3>(2, x, taps, w, init, dst),
            (2, 2) => taps_kernel::<2, 2>(2, x, taps, w, init, dst),
            (2, _) => taps_kernel::<2, 1>(2, x, taps, w, init, dst),
            (_, 4) => taps_kernel::<1, 4>(1, x, taps, w, init, dst),
            (_, 3) => taps_kernel::<1, 3>(1, x, taps, w, init, dst),
            (_, 2) => taps_kernel::<1, 2>(1, x, taps, w, init, dst),
            (_, _) => taps_kernel::<1, 1>(1, x, taps, w, init, dst),
        }
    }
}

/// `CB x NV` vector accumulators; per tap, `NV` loads and `CB` broadcasts feed `CB * NV` FMAs.
/// A 3-channel block runs the 4-channel kernel with weights for 3 (the packed stride is `cb`):
/// the fourth row of accumulators is computed from the next tap's weights and discarded.
#[target_feature(enable = "avx2,fma")]
unsafe fn taps_kernel<const CB: usize, const NV: usize>(
    cb: usize,
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    init: Init,
    dst: [*mut f32; MAX_CB],
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; CB];
    for c in 0..cb {
        for v in 0..NV {
            acc[c][v] = match init {
                Init::Bias(b) => _mm256_set1_ps(b[c]),
                Init::From(src) => _mm256_loadu_ps(src[c].add(v * VEC)),
            };
        }
    }
    if cb == CB {
        for (t, &off) in taps.iter().enumerate() {
            let xp = x.add(off);
            let wp = w.add(t * CB);
            let mut xv = [_mm256_setzero_ps(); NV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = _mm256_loadu_ps(xp.add(v * VEC));
            }
            for c in 0..CB {
                let wv = _mm256_broadcast_ss(&*wp.add(c));
                for v in 0..NV {
                    acc[c][v] = _mm256_fmadd_ps(wv, xv[v], acc[c][v]);
                }
            }
        }
    } else {
        // Fewer channels than the kernel's rows (3 of 4): the same loop with a runtime count.
        for (t, &off) in taps.iter().enumerate() {
            let xp = x.add(off);
            let wp = w.add(t * cb);
            let mut xv = [_mm256_setzero_ps(); NV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = _mm256_loadu_ps(xp.add(v * VEC));
            }
            for c in 0..cb {
                let wv = _mm256_broadcast_ss(&*wp.add(c));
                for v in 0..NV {
                    acc[c][v] = _mm256_fmadd_ps(wv, xv[v], acc[c][v]);
                }
            }
        }
    }
    for c in 0..cb {
        for v in 0..NV {
            _mm256_storeu_ps(dst[c].add(v * VEC), acc[c][v]);
        }
    }
}

/// Runs a row of column blocks for one pass over `taps` (a range of source channels), writing
/// `out[c][cols]` for the block's channels: initialised from `bias` on the first pass, added to
/// what is there on later passes. `x_at(c0)` is the source pointer for column block `c0`.
///
/// # Safety
/// As [`tap_block`] for every column block (with `nv * 8` columns from `x_at(c0)`).
unsafe fn row_pass(
    cb: usize,
    cols: &[(usize, usize, usize)],
    x_at: impl Fn(usize) -> *const f32,
    taps: &[usize],
    w: &[f32],
    bias: Option<&[f32; MAX_CB]>,
    out: &mut [&mut [f32]],
    out_at: usize,
) {
    debug_assert!(w.len() >= taps.len() * cb && out.len() == cb);
    let mut tmp = [[0f32; MAX_COLS]; MAX_CB];
    for &(c0, n, nv) in cols {
        let full = n == nv * VEC;
        let mut dst = [std::ptr::null_mut::<f32>(); MAX_CB];
        let mut src = [std::ptr::null::<f32>(); MAX_CB];
        for c in 0..cb {
            if full {
                dst[c] = out[c][out_at + c0..out_at + c0 + n].as_mut_ptr();
            } else {
                if bias.is_none() {
                    tmp[c][..n].copy_from_slice(&out[c][out_at + c0..out_at + c0 + n]);
                }
                dst[c] = tmp[c].as_mut_ptr();
            }
            src[c] = dst[c];
        }
        let init = match bias {
            Some(b) => Init::Bias(b),
            None => Init::From(src),
        };
        // SAFETY: dst / src rows hold nv * 8 floats (whole output span or tmp); the rest is
        // the caller's contract.
        unsafe { tap_block((cb, nv), x_at(c0), taps, w.as_ptr(), init, dst) };
        if !full {
            for c in 0..cb {
                out[c][out_at + c0..out_at + c0 + n].copy_from_slice(&tmp[c][..n]);
            }
        }
    }
}

/// Source channels per pass so one output row's source rows stay in L1.
fn channels_per_pass(rows_per_channel: usize, row_floats: usize, channels: usize) -> usize {
    (ROW_BUDGET / (rows_per_channel * row_floats * 4).max(1)).clamp(1, channels.max(1))
}

pub(super) fn forward(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
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
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let shared = if local {
            Vec::new()
        } else {
            let pads = (p.pad_top, p.pad_left);
            pad_planes(input, (p.in_h, p.in_w), (n0 * c, (n1 - n0) * c), pads, geo)
        };
        let (shared, packed, taps, blocks) = (&shared, &packed, &taps, &blocks);
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
                work.into_par_iter().for_each_init(
                    || {
                        if local {
                            vec![0f32; cig * geo.plane()]
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
                                pad_plane(x, (p.in_h, p.in_w), pads, oy0 * p.stride_h, geo, dst);
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
                        let cols = column_blocks(ow, cb);
                        let w = &packed[w_at..w_at + k_len * cb];
                        let n_rows = rows[0].len() / ow;
                        for r in 0..n_rows {
                            let base = (oy0 + r - row0) * row_step;
                            for i0 in (0..cig).step_by(per_pass) {
                                let i1 = (i0 + per_pass).min(cig);
                                let init = if i0 == 0 { Some(&b) } else { None };
                                // SAFETY: every tap read for this row and any column block
                                // is below max_read <= x.len() (checked above); w holds the
                                // pass's taps * cb floats.
                                unsafe {
                                    row_pass(
                                        cb,
                                        &cols,
                                        |c0| x.as_ptr().add(base + c0),
                                        &taps[i0 * kk..i1 * kk],
                                        &w[i0 * kk * cb..i1 * kk * cb],
                                        init,
                                        &mut rows,
                                        r * ow,
                                    )
                                };
                            }
                        }
                    },
                );
            });
    }
}

/// One phase class of the input gradient: padded rows `ry + sh * u`, columns `rx + sw * v`.
struct Phase {
    ry: usize,
    rx: usize,
    /// Taps (ocl, ky, kx) that reach this class, as offsets into the padded output gradient;
    /// `ocl_start[ocl]` is where output channel `ocl`'s taps begin.
    taps: Vec<usize>,
    ocl_start: Vec<usize>,
    packed: Vec<f32>,
    /// Blocks of input channels: (first channel, count, start in `packed`).
    blocks: Vec<(usize, usize, usize)>,
}

pub(super) fn backward_data(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, cog) = (
        p.in_channels,
        p.out_channels,
        p.in_per_group(),
        p.out_per_group(),
    );
    let (kh, kw, sh, sw, dh, dw) = (
        p.kernel_h,
        p.kernel_w,
        p.stride_h,
        p.stride_w,
        p.dilation_h,
        p.dilation_w,
    );
    // Padded output gradient: `top` / `left` zeros so every tap offset is non-negative, rows and
    // columns up to the last class row / column, plus a column block of slack.
    let top = (kh - 1) * dh / sh;
    let left = (kw - 1) * dw / sw;
    let u_end = (p.pad_top + p.in_h - 1) / sh + 1;
    let v_end = (p.pad_left + p.in_w - 1) / sw + 1;
    let qh = top + oh.max(u_end);
    let qw = left + ow.max(v_end) + MAX_COLS;
    let q_plane = qh * qw;
    let k_plane = kh * kw;
    let phases: Vec<Phase> = (0..sh * sw)
        .map(|ph| {
            let (ry, rx) = (ph / sw, ph % sw);
            let kys: Vec<usize> = (0..kh).filter(|ky| ky * dh % sh == ry).collect();
            let kxs: Vec<usize> = (0..kw).filter(|kx| kx * dw % sw == rx).collect();
            let mut taps = Vec::new();
            let mut tap_w = Vec::new();
            let mut ocl_start = Vec::new();
            for ocl in 0..cog {
                ocl_start.push(taps.len());
                for &ky in &kys {
                    for &kx in &kxs {
                        let a = (ky * dh - ry) / sh;
                        let b = (kx * dw - rx) / sw;
                        taps.push((ocl * qh + top - a) * qw + left - b);
                        tap_w.push((ocl, ky * kw + kx));
                    }
                }
            }
            ocl_start.push(taps.len());
            let (packed, blocks) = pack_blocks(c, cig, taps.len(), |ic, t| {
                let (g, icg) = (ic / cig, ic % cig);
                let (ocl, k) = tap_w[t];
                weight[((g * cog + ocl) * cig + icg) * k_plane + k]
            });
            Phase {
                ry,
                rx,
                taps,
                ocl_start,
                packed,
                blocks,
            }
        })
        .collect();
    let max_tap = phases
        .iter()
        .flat_map(|ph| ph.taps.iter())
        .max()
        .copied()
        .unwrap_or(0);
    let max_read = max_tap + (u_end - 1) * qw + (v_end - 1) + MAX_COLS;
    assert!(
        max_read <= cog * q_plane,
        "direct: padded reads out of range"
    );
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    // One block of input channels per group: each task pads its own group's output gradient.
    let local = cig <= MAX_CB;
    let nb = if local {
        p.batch
    } else {
        chunk_items(p, oc_n * q_plane)
    };
    let blocks_per_item = phases.first().map_or(1, |ph| ph.blocks.len());
    let rows_per = rows_per_task(nb * blocks_per_item, p.in_h);
    let per_pass = channels_per_pass(kh.div_ceil(sh), qw, cog);
    let pad_grad = |n: usize, oc0: usize, count: usize, dst: &mut [f32]| {
        for (i, q) in dst.chunks_mut(q_plane).take(count).enumerate() {
            q.fill(0.0);
            let src = &grad_out[(n * oc_n + oc0 + i) * out_plane..][..out_plane];
            for oy in 0..oh {
                q[(top + oy) * qw + left..][..ow].copy_from_slice(&src[oy * ow..(oy + 1) * ow]);
            }
        }
    };
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let mut shared = Vec::new();
        if !local {
            shared = vec![0f32; (n1 - n0) * oc_n * q_plane];
            shared
                .par_chunks_mut(q_plane)
                .enumerate()
                .for_each(|(i, dst)| {
                    pad_grad(n0 + i / oc_n, i % oc_n, 1, dst);
                });
        }
        let (shared, phases, pad_grad) = (&shared, &phases, &pad_grad);
        grad_input[n0 * c * in_plane..n1 * c * in_plane]
            .par_chunks_mut(c * in_plane)
            .enumerate()
            .for_each(|(ni, item)| {
                let n = n0 + ni;
                let mut rest = item;
                let mut work = Vec::new();
                for (bi, &(ic0, cb, _)) in phases[0].blocks.iter().enumerate() {
                    let (planes, tail) = rest.split_at_mut(cb * in_plane);
                    rest = tail;
                    for (iy0, rows) in row_tasks(planes, (p.in_h, p.in_w), rows_per) {
                        work.push((bi, ic0, cb, iy0, rows));
                    }
                }
                work.into_par_iter().for_each_init(
                    || {
                        if local {
                            vec![0f32; cog * q_plane]
                        } else {
                            Vec::new()
                        }
                    },
                    |own, (bi, ic0, cb, iy0, mut rows)| {
                        let g = ic0 / cig;
                        let q_group = if local {
                            pad_grad(n, g * cog, cog, own);
                            &own[..]
                        } else {
                            &shared[(ni * oc_n + g * cog) * q_plane..][..cog * q_plane]
                        };
                        let n_rows = rows[0].len() / p.in_w;
                        for ph in phases {
                            let (_, _, w_at) = ph.blocks[bi];
                            let w = &ph.packed[w_at..w_at + ph.taps.len() * cb];
                            // Class rows / columns inside this task's input rows and the input.
                            let y_lo = p.pad_top + iy0;
                            let y_hi = y_lo + n_rows;
                            let u_lo = y_lo.saturating_sub(ph.ry).div_ceil(sh);
                            let u_hi = if y_hi > ph.ry {
                                (y_hi - 1 - ph.ry) / sh + 1
                            } else {
                                0
                            };
                            let x_hi = p.pad_left + p.in_w;
                            let v_lo = p.pad_left.saturating_sub(ph.rx).div_ceil(sw);
                            let v_hi = if x_hi > ph.rx {
                                (x_hi - 1 - ph.rx) / sw + 1
                            } else {
                                0
                            };
                            if u_lo >= u_hi || v_lo >= v_hi {
                                continue;
                            }
                            let cols = column_blocks(v_hi - v_lo, cb);
                            let ix0 = ph.rx + sw * v_lo - p.pad_left;
                            let mut strip = [[0f32; MAX_COLS]; MAX_CB];
                            for u in u_lo..u_hi {
                                let r = ph.ry + sh * u - y_lo;
                                let base = u * qw + v_lo;
                                if sw == 1 {
                                    // Class columns are input columns: write rows in place.
                                    let mut out: Vec<&mut [f32]> = rows
                                        .iter_mut()
                                        .map(|d| &mut d[r * p.in_w + ix0..(r + 1) * p.in_w])
                                        .collect();
                                    passes(ph, per_pass, cb, &cols, q_group, base, w, &mut out, 0);
                                } else {
                                    // Strided columns: compute a block at a time, then scatter.
                                    for &(c0, n, nv) in &cols {
                                        let mut out: Vec<&mut [f32]> =
                                            strip.iter_mut().take(cb).map(|s| &mut s[..]).collect();
                                        let one = [(0, n, nv)];
                                        passes(
                                            ph,
                                            per_pass,
                                            cb,
                                            &one,
                                            q_group,
                                            base + c0,
                                            w,
                                            &mut out,
                                            0,
                                        );
                                        for (i, dx) in rows.iter_mut().enumerate() {
                                            let d = &mut dx[r * p.in_w..(r + 1) * p.in_w];
                                            for (j, &v) in strip[i][..n].iter().enumerate() {
                                                d[ix0 + sw * (c0 + j)] = v;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        // Classes that no tap reaches (stride larger than the dilated kernel)
                        // were skipped above only when they hold no input positions, so every
                        // position has been written: those with no taps got zero sums.
                    },
                );
            });
    }
}

/// Runs one class row of backward data over all output channels of the group, `per_pass`
/// output channels' taps at a time.
#[allow(clippy::too_many_arguments)]
fn passes(
    ph: &Phase,
    per_pass: usize,
    cb: usize,
    cols: &[(usize, usize, usize)],
    q: &[f32],
    base: usize,
    w: &[f32],
    out: &mut [&mut [f32]],
    out_at: usize,
) {
    let zero = [0f32; MAX_CB];
    let cog = ph.ocl_start.len() - 1;
    if ph.taps.is_empty() {
        for o in out.iter_mut() {
            let n: usize = cols.iter().map(|c| c.1).sum();
            o[out_at..out_at + n].fill(0.0);
        }
        return;
    }
    for o0 in (0..cog).step_by(per_pass) {
        let (t0, t1) = (ph.ocl_start[o0], ph.ocl_start[(o0 + per_pass).min(cog)]);
        let init = if o0 == 0 { Some(&zero) } else { None };
        // SAFETY: the class row `base` lies below u_end and column blocks end below v_end +
        // MAX_COLS, so every tap read is below max_read <= q.len() (checked by the caller);
        // w holds taps * cb floats.
        unsafe {
            row_pass(
                cb,
                cols,
                |c0| q.as_ptr().add(base + c0),
                &ph.taps[t0..t1],
                &w[t0 * cb..t1 * cb],
                init,
                out,
                out_at,
            )
        };
    }
}

pub(super) fn backward_weight(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
) {
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, cog) = (
        p.in_channels,
        p.out_channels,
        p.in_per_group(),
        p.out_per_group(),
    );
    let (kh, kw) = (p.kernel_h, p.kernel_w);
    let k_plane = kh * kw;
    let geo = input_geometry(p, out_hw);
    let plane_p = geo.plane();
    let row_step = p.stride_h * geo.row();
    let taps: Vec<usize> = (0..k_plane)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            let (q, o) = (
                kx * p.dilation_w % geo.phases,
                kx * p.dilation_w / geo.phases,
            );
            (ky * p.dilation_h * geo.phases + q) * geo.width + o
        })
        .collect();
    let max_read = taps.iter().max().copied().unwrap_or(0) + (oh - 1) * row_step + ow;
    assert!(max_read <= plane_p, "direct: padded reads out of range");
    // Depthwise-like shapes have one output channel per group: spend the registers on taps.
    let (ocb, tb) = if cog == 1 { (1, 8) } else { (3, 3) };
    // One block per group: each input plane has one reader, which pads it itself.
    let local = cog <= ocb;
    let out_plane = oh * ow;
    let in_plane = p.in_h * p.in_w;
    grad_weight.fill(0.0);
    let nb = if local {
        p.batch
    } else {
        chunk_items(p, c * plane_p)
    };
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let shared = if local {
            Vec::new()
        } else {
            let pads = (p.pad_top, p.pad_left);
            pad_planes(input, (p.in_h, p.in_w), (n0 * c, (n1 - n0) * c), pads, geo)
        };
        // Tasks: (block of output channels in one group, input channel), owning those
        // channels' gradient for that input channel.
        let mut work = Vec::new();
        let mut rest = &mut grad_weight[..];
        for g in 0..p.groups {
            for o0 in (g * cog..(g + 1) * cog).step_by(ocb) {
                let cb = ocb.min((g + 1) * cog - o0);
                let (block, tail) = rest.split_at_mut(cb * cig * k_plane);
                rest = tail;
                let mut per_icg: Vec<Vec<&mut [f32]>> = (0..cig).map(|_| Vec::new()).collect();
                for oc_rows in block.chunks_mut(cig * k_plane) {
                    for (icg, part) in oc_rows.chunks_mut(k_plane).enumerate() {
                        per_icg[icg].push(part);
                    }
                }
                for (icg, parts) in per_icg.into_iter().enumerate() {
                    work.push((o0, g * cig + icg, parts));
                }
            }
        }
        let (shared, taps) = (&shared, &taps);
        work.into_par_iter().for_each_init(
            || {
                if local {
                    vec![0f32; plane_p]
                } else {
                    Vec::new()
                }
            },
            |own, (o0, ic, mut parts)| {
                let cb = parts.len();
                let mut total = vec![0f64; cb * k_plane];
                for n in n0..n1 {
                    let x = if local {
                        let src = &input[(n * c + ic) * in_plane..][..in_plane];
                        pad_plane(src, (p.in_h, p.in_w), (p.pad_top, p.pad_left), 0, geo, own);
                        &own[..]
                    } else {
                        &shared[((n - n0) * c + ic) * plane_p..][..plane_p]
                    };
                    let dy0 = (n * oc_n + o0) * out_plane;
                    let dy = &grad_out[dy0..dy0 + cb * out_plane];
                    for t0 in (0..k_plane).step_by(tb) {
                        let tn = tb.min(k_plane - t0);
                        // SAFETY: reads of x stay below max_read <= plane_p (checked above);
                        // dy holds cb planes of oh x ow; the CPU has AVX2+FMA (caller).
                        let sums = unsafe {
                            weight_block((cb, tn), x, row_step, &taps[t0..t0 + tn], dy, (oh, ow))
                        };
                        for (o, s) in sums.iter().take(cb).enumerate() {
                            for (t, &v) in s.iter().take(tn).enumerate() {
                                total[o * k_plane + t0 + t] += v as f64;
                            }
                        }
                    }
                }
                for (part, tot) in parts.iter_mut().zip(total.chunks(k_plane)) {
                    for (g, &t) in part.iter_mut().zip(tot) {
                        *g += t as f32;
                    }
                }
            },
        );
    }
}

/// Sums `dy[o][oy][ox] * x[oy * row_step + tap + ox]` over one item for `cb` output channels
/// and `tn` taps.
///
/// # Safety
/// `x` must be readable at `oy * row_step + tap + ox` for all `oy < oh`, `ox < ow` and taps;
/// `dy` must hold `cb * oh * ow` floats; the CPU must have AVX2+FMA.
unsafe fn weight_block(
    (cb, tn): (usize, usize),
    x: &[f32],
    row_step: usize,
    taps: &[usize],
    dy: &[f32],
    hw: (usize, usize),
) -> [[f32; 8]; 3] {
    let x = x.as_ptr();
    let dy = dy.as_ptr();
    // SAFETY: forwarded contract.
    unsafe {
        match (cb, tn) {
            (3, 3) => weight_kernel::<3, 3>(x, row_step, taps, dy, hw),
            (3, 2) => weight_kernel::<3, 2>(x, row_step, taps, dy, hw),
            (3, _) => weight_kernel::<3, 1>(x, row_step, taps, dy, hw),
            (2, 3) => weight_kernel::<2, 3>(x, row_step, taps, dy, hw),
            (2, 2) => weight_kernel::<2, 2>(x, row_step, taps, dy, hw),
            (2, _) => weight_kernel::<2, 1>(x, row_step, taps, dy, hw),
            (_, 8) => weight_kernel::<1, 8>(x, row_step, taps, dy, hw),
            (_, 7) => weight_kernel::<1, 7>(x, row_step, taps, dy, hw),
            (_, 6) => weight_kernel::<1, 6>(x, row_step, taps, dy, hw),
            (_, 5) => weight_kernel::<1, 5>(x, row_step, taps, dy, hw),
            (_, 4) => weight_kernel::<1, 4>(x, row_step, taps, dy, hw),
            (_, 3) => weight_kernel::<1, 3>(x, row_step, taps, dy, hw),
            (_, 2) => weight_kernel::<1, 2>(x, row_step, taps, dy, hw),
            (_, _) => weight_kernel::<1, 1>(x, row_step, taps, dy, hw),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn weight_kernel<const CB: usize, const TN: usize>(
    x: *const f32,
    row_step: usize,
    taps: &[usize],
    dy: *const f32,
    (oh, ow): (usize, usize),
) -> [[f32; 8]; 3] {
    let mut acc = [[_mm256_setzero_ps(); TN]; CB];
    let mut off = [0usize; TN];
    off.copy_from_slice(&taps[..TN]);
    let full = ow / VEC * VEC;
    let tail = ow - full;
    // Lanes below `tail` on, the rest off: masked loads read nothing past the row.
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail as i32), lane);
    for oy in 0..oh {
        let xr = x.add(oy * row_step);
        let dr = dy.add(oy * ow);
        let mut ox = 0;
        while ox < full {
            let mut d = [_mm256_setzero_ps(); CB];
            for (o, d) in d.iter_mut().enumerate() {
                *d = _mm256_loadu_ps(dr.add(o * oh * ow + ox));
            }
            for t in 0..TN {
                let xv = _mm256_loadu_ps(xr.add(off[t] + ox));
                for o in 0..CB {
                    acc[o][t] = _mm256_fmadd_ps(d[o], xv, acc[o][t]);
                }
            }
            ox += VEC;
        }
        if tail > 0 {
            let mut d = [_mm256_setzero_ps(); CB];
            for (o, d) in d.iter_mut().enumerate() {
                *d = _mm256_maskload_ps(dr.add(o * oh * ow + full), mask);
            }
            for t in 0..TN {
                let xv = _mm256_maskload_ps(xr.add(off[t] + full), mask);
                for o in 0..CB {
                    acc[o][t] = _mm256_fmadd_ps(d[o], xv, acc[o][t]);
                }
            }
        }
    }
    let mut out = [[0f32; 8]; 3];
    for o in 0..CB {
        for t in 0..TN {
            // Horizontal sum of the eight lanes.
            let v = acc[o][t];
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            out[o][t] = _mm_cvtss_f32(s);
        }
    }
    out
}
