//! The AVX2+FMA direct convolution: register-blocked micro-kernels over zero-padded copies.
//!
//! Inputs (forward, backward weight) are copied once per batch chunk into a zero-padded
//! *polyphase* layout: row `y` of a padded plane is stored as `stride_w` phase rows, phase `q`
//! holding padded columns `q, q + sw, q + 2 sw, ...`. Output column `ox` under kernel column `kx`
//! then reads phase `(kx * dw) % sw` at `ox + (kx * dw) / sw`: unit-stride vector loads for every
//! stride and dilation, and no bounds checks in the inner loops (padding is real zeros).
//!
//! Backward data splits the input gradient into `sh x sw` phase classes (rows `Y = ry + sh u`,
//! columns `X = rx + sw v` in padded coordinates). Within a class only the taps with
//! `ky * dh = ry (mod sh)` and `kx * dw = rx (mod sw)` contribute, each as a unit-stride
//! correlation of the zero-padded output gradient: no multiplications by inserted zeros.
//!
//! Forward and backward data share one micro-kernel: a block of up to 4 channels x 24 columns
//! (12 ymm accumulators) summed over a list of taps, each tap an offset into the padded source and
//! one weight per channel. Backward weight keeps up to 3 output channels x 3 taps (or 1 channel x
//! 8 taps, for depthwise) in registers while streaming rows of the output gradient.
use super::super::Conv2dParams;
use rayon::prelude::*;
use std::arch::x86_64::*;

const VEC: usize = 8;
/// Channels per register block of the forward / backward-data kernel.
const MAX_CB: usize = 4;
/// Vectors of columns per register block.
const MAX_NV: usize = 3;
const BLOCK_COLS: usize = VEC * MAX_NV;
/// Bytes of padded copies kept at once; the batch is processed in chunks that fit.
const PAD_BUDGET: usize = 32 << 20;

/// Zero-padded polyphase copies of `planes` planes (see the module comment): element
/// `(plane, y, q, t)` is padded `(y, q + t * phases)`, at `((plane * rows + y) * phases + q) *
/// width + t`.
struct Polyphase {
    data: Vec<f32>,
    rows: usize,
    phases: usize,
    width: usize,
}

impl Polyphase {
    fn plane_len(&self) -> usize {
        self.rows * self.phases * self.width
    }
}

/// Geometry of the padded input as the forward and the weight gradient read it.
#[derive(Clone, Copy)]
struct InputGeometry {
    rows: usize,
    phases: usize,
    width: usize,
}

fn input_geometry(p: &Conv2dParams, (oh, ow): (usize, usize)) -> InputGeometry {
    // Rows and columns past the used extent are never read.
    let rows = (oh - 1) * p.stride_h + p.dilation_h * (p.kernel_h - 1) + 1;
    // Column blocks are whole vectors (lanes past `ow` are computed and dropped), and the
    // widest tap offset is added to them.
    let width = ow.next_multiple_of(VEC) + (p.kernel_w - 1) * p.dilation_w / p.stride_w;
    InputGeometry {
        rows,
        phases: p.stride_w,
        width,
    }
}

/// Copies planes `first..first + count` of `src` (`h x w` each) into a polyphase buffer with
/// `pad_top` / `pad_left` zeros before the data.
fn polyphase(
    src: &[f32],
    (h, w): (usize, usize),
    (first, count): (usize, usize),
    (pad_top, pad_left): (usize, usize),
    geo: InputGeometry,
) -> Polyphase {
    let mut out = Polyphase {
        data: Vec::new(),
        rows: geo.rows,
        phases: geo.phases,
        width: geo.width,
    };
    let plane_len = out.plane_len();
    // Zeroed by the allocator: padding stays zero, data overwrites the rest.
    out.data = vec![0.0; count * plane_len];
    let (rows, phases, width) = (geo.rows, geo.phases, geo.width);
    out.data
        .par_chunks_mut(plane_len)
        .enumerate()
        .for_each(|(i, dst)| {
            let x = &src[(first + i) * h * w..][..h * w];
            for y in pad_top..rows.min(pad_top + h) {
                let x_row = &x[(y - pad_top) * w..(y - pad_top + 1) * w];
                let d_row = &mut dst[y * phases * width..(y + 1) * phases * width];
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

/// How many row ranges to cut each block of planes into so the pool has enough tasks.
fn rows_per_task(blocks: usize, rows: usize) -> usize {
    let want = (4 * rayon::current_num_threads()).div_ceil(blocks.max(1));
    rows.div_ceil(want.clamp(1, rows)).max(1)
}

/// Runs the tap kernel for a block of `cb` channels and `nv` vectors. `tmp[c][..]` receives the
/// block's values (`init[c]` plus the tap sums).
///
/// # Safety
/// For every tap offset `o`, `x.add(o)` must be readable for `nv * 8` floats, and `w` for
/// `taps.len() * cb` floats. The CPU must have AVX2+FMA.
#[inline]
unsafe fn tap_block(
    (cb, nv): (usize, usize),
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    init: &[f32; MAX_CB],
    tmp: &mut [[f32; BLOCK_COLS]; MAX_CB],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (cb, nv) {
            (4, 3) => taps_kernel::<4, 3>(x, taps, w, init, tmp),
            (4, 2) => taps_kernel::<4, 2>(x, taps, w, init, tmp),
            (4, _) => taps_kernel::<4, 1>(x, taps, w, init, tmp),
            (3, 3) => taps_kernel::<3, 3>(x, taps, w, init, tmp),
            (3, 2) => taps_kernel::<3, 2>(x, taps, w, init, tmp),
            (3, _) => taps_kernel::<3, 1>(x, taps, w, init, tmp),
            (2, 3) => taps_kernel::<2, 3>(x, taps, w, init, tmp),
            (2, 2) => taps_kernel::<2, 2>(x, taps, w, init, tmp),
            (2, _) => taps_kernel::<2, 1>(x, taps, w, init, tmp),
            (_, 3) => taps_kernel::<1, 3>(x, taps, w, init, tmp),
            (_, 2) => taps_kernel::<1, 2>(x, taps, w, init, tmp),
            (_, _) => taps_kernel::<1, 1>(x, taps, w, init, tmp),
        }
    }
}

/// `CB x NV` vectors of accumulators; per tap, `NV` loads feed `CB * NV` FMAs.
#[target_feature(enable = "avx2,fma")]
unsafe fn taps_kernel<const CB: usize, const NV: usize>(
    x: *const f32,
    taps: &[usize],
    w: *const f32,
    init: &[f32; MAX_CB],
    tmp: &mut [[f32; BLOCK_COLS]; MAX_CB],
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; CB];
    for c in 0..CB {
        for v in 0..NV {
            acc[c][v] = _mm256_set1_ps(init[c]);
        }
    }
    let mut wp = w;
    for &off in taps {
        let xp = x.add(off);
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
        wp = wp.add(CB);
    }
    for c in 0..CB {
        for v in 0..NV {
            _mm256_storeu_ps(tmp[c].as_mut_ptr().add(v * VEC), acc[c][v]);
        }
    }
}

/// Packs weights for tap lists: for each block of up to `MAX_CB` consecutive "channels" of the
/// kernel (output channels in the forward, input channels in backward data), `taps` entries of
/// `cb` floats, `weight_of(channel, tap)` each. Blocks never straddle `group_len` boundaries.
/// Returns the packed floats and each block's start.
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
    let geo = input_geometry(p, out_hw);
    let plane_p = geo.rows * geo.phases * geo.width;
    let row_step = p.stride_h * geo.phases * geo.width;
    // Tap (icg, ky, kx): offset from the group's first padded plane at (oy, ox) = (0, 0).
    let taps: Vec<usize> = (0..cig * kh * kw)
        .map(|t| {
            let (icg, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
            let (q, o) = (
                kx * p.dilation_w % geo.phases,
                kx * p.dilation_w / geo.phases,
            );
            icg * plane_p + ((ky * p.dilation_h) * geo.phases + q) * geo.width + o
        })
        .collect();
    let k_len = cig * kh * kw;
    let (packed, blocks) = pack_blocks(oc_n, cog, k_len, |oc, t| weight[oc * k_len + t]);
    // Every read of the kernel stays inside the group's padded planes.
    let max_read =
        taps.iter().max().copied().unwrap_or(0) + (oh - 1) * row_step + ow.next_multiple_of(VEC);
    assert!(
        max_read <= cig * plane_p,
        "direct: padded reads out of range"
    );
    let out_plane = oh * ow;
    let nb = chunk_items(p, c * plane_p);
    let rows_per = rows_per_task(nb * blocks.len(), oh);
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let pad = polyphase(
            input,
            (p.in_h, p.in_w),
            (n0 * c, (n1 - n0) * c),
            (p.pad_top, p.pad_left),
            geo,
        );
        let (pad, packed, taps, blocks) = (&pad, &packed, &taps, &blocks);
        output[n0 * oc_n * out_plane..n1 * oc_n * out_plane]
            .par_chunks_mut(oc_n * out_plane)
            .enumerate()
            .for_each(|(ni, item)| {
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
                work.into_par_iter()
                    .for_each(|(oc0, cb, w_at, oy0, mut rows)| {
                        let g = oc0 / cog;
                        let x_group = &pad.data[(ni * c + g * cig) * plane_p..][..cig * plane_p];
                        let mut init = [0f32; MAX_CB];
                        for (i, v) in init.iter_mut().take(cb).enumerate() {
                            *v = bias.map_or(0.0, |b| b[oc0 + i]);
                        }
                        let mut tmp = [[0f32; BLOCK_COLS]; MAX_CB];
                        let n_rows = rows[0].len() / ow;
                        for r in 0..n_rows {
                            let oy = oy0 + r;
                            for ox0 in (0..ow).step_by(BLOCK_COLS) {
                                let valid = BLOCK_COLS.min(ow - ox0);
                                let nv = valid.div_ceil(VEC);
                                // SAFETY: the reads of every tap for this row and column block stay
                                // within x_group (max_read check above: oy < oh, ox0 + nv*8 <=
                                // ow rounded up); packed holds k_len * cb floats from w_at.
                                unsafe {
                                    tap_block(
                                        (cb, nv),
                                        x_group.as_ptr().add(oy * row_step + ox0),
                                        taps,
                                        packed[w_at..w_at + k_len * cb].as_ptr(),
                                        &init,
                                        &mut tmp,
                                    );
                                }
                                for (i, y) in rows.iter_mut().enumerate() {
                                    y[r * ow + ox0..r * ow + ox0 + valid]
                                        .copy_from_slice(&tmp[i][..valid]);
                                }
                            }
                        }
                    });
            });
    }
}

/// One phase class of the input gradient: padded rows `ry + sh * u`, columns `rx + sw * v`.
struct Phase {
    ry: usize,
    rx: usize,
    /// Taps (ocl, ky, kx) that reach this class, as offsets into the padded output gradient.
    taps: Vec<usize>,
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
    // columns up to the last class row / column, plus a vector block of columns of slack.
    let top = (kh - 1) * dh / sh;
    let left = (kw - 1) * dw / sw;
    let u_end = (p.pad_top + p.in_h - 1) / sh + 1;
    let v_end = (p.pad_left + p.in_w - 1) / sw + 1;
    let qh = top + oh.max(u_end);
    let qw = left + ow.max(v_end) + BLOCK_COLS;
    let q_plane = qh * qw;
    let k_plane = kh * kw;
    let phases: Vec<Phase> = (0..sh * sw)
        .map(|ph| {
            let (ry, rx) = (ph / sw, ph % sw);
            let kys: Vec<usize> = (0..kh).filter(|ky| ky * dh % sh == ry).collect();
            let kxs: Vec<usize> = (0..kw).filter(|kx| kx * dw % sw == rx).collect();
            let mut taps = Vec::new();
            let mut tap_w = Vec::new();
            for ocl in 0..cog {
                for &ky in &kys {
                    for &kx in &kxs {
                        let a = (ky * dh - ry) / sh;
                        let b = (kx * dw - rx) / sw;
                        taps.push((ocl * qh + top - a) * qw + left - b);
                        tap_w.push((ocl, ky * kw + kx));
                    }
                }
            }
            let n_taps = taps.len();
            let (packed, blocks) = pack_blocks(c, cig, n_taps, |ic, t| {
                let (g, icg) = (ic / cig, ic % cig);
                let (ocl, k) = tap_w[t];
                weight[((g * cog + ocl) * cig + icg) * k_plane + k]
            });
            Phase {
                ry,
                rx,
                taps,
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
    let max_read = max_tap + (u_end - 1) * qw + (v_end - 1) + BLOCK_COLS;
    assert!(
        max_read <= cog * q_plane,
        "direct: padded reads out of range"
    );
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let nb = chunk_items(p, oc_n * q_plane);
    let blocks_per_item = phases.first().map_or(1, |ph| ph.blocks.len());
    let rows_per = rows_per_task(nb * blocks_per_item, p.in_h);
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let mut q = vec![0f32; (n1 - n0) * oc_n * q_plane];
        q.par_chunks_mut(q_plane).enumerate().for_each(|(i, dst)| {
            let src = &grad_out[(n0 * oc_n + i) * out_plane..][..out_plane];
            for oy in 0..oh {
                dst[(top + oy) * qw + left..][..ow].copy_from_slice(&src[oy * ow..(oy + 1) * ow]);
            }
        });
        let (q, phases) = (&q, &phases);
        grad_input[n0 * c * in_plane..n1 * c * in_plane]
            .par_chunks_mut(c * in_plane)
            .enumerate()
            .for_each(|(ni, item)| {
                let mut rest = item;
                let mut work = Vec::new();
                for (bi, &(ic0, cb, _)) in phases[0].blocks.iter().enumerate() {
                    let (planes, tail) = rest.split_at_mut(cb * in_plane);
                    rest = tail;
                    for (iy0, rows) in row_tasks(planes, (p.in_h, p.in_w), rows_per) {
                        work.push((bi, ic0, cb, iy0, rows));
                    }
                }
                work.into_par_iter()
                    .for_each(|(bi, ic0, cb, iy0, mut rows)| {
                        let g = ic0 / cig;
                        let q_group = &q[(ni * oc_n + g * cog) * q_plane..][..cog * q_plane];
                        let n_rows = rows[0].len() / p.in_w;
                        let init = [0f32; MAX_CB];
                        let mut tmp = [[0f32; BLOCK_COLS]; MAX_CB];
                        for ph in phases {
                            let (_, _, w_at) = ph.blocks[bi];
                            let w = &ph.packed[w_at..w_at + ph.taps.len() * cb];
                            // Class rows whose input row falls in this task's rows.
                            let y_lo = p.pad_top + iy0;
                            let y_hi = y_lo + n_rows;
                            let u_lo = y_lo.saturating_sub(ph.ry).div_ceil(sh);
                            let u_hi = if y_hi > ph.ry {
                                (y_hi - 1 - ph.ry) / sh + 1
                            } else {
                                0
                            };
                            let x_lo = p.pad_left;
                            let v_lo = x_lo.saturating_sub(ph.rx).div_ceil(sw);
                            let x_hi = p.pad_left + p.in_w;
                            let v_hi = if x_hi > ph.rx {
                                (x_hi - 1 - ph.rx) / sw + 1
                            } else {
                                0
                            };
                            for u in u_lo..u_hi {
                                let r = ph.ry + sh * u - y_lo;
                                for v0 in (v_lo..v_hi).step_by(BLOCK_COLS) {
                                    let valid = BLOCK_COLS.min(v_hi - v0);
                                    let nv = valid.div_ceil(VEC);
                                    // SAFETY: u < u_end and v0 + nv*8 <= v_end - 1 + BLOCK_COLS,
                                    // so with the largest tap every read is below max_read <=
                                    // q_group's length (checked above); w holds taps * cb floats.
                                    unsafe {
                                        tap_block(
                                            (cb, nv),
                                            q_group.as_ptr().add(u * qw + v0),
                                            &ph.taps,
                                            w.as_ptr(),
                                            &init,
                                            &mut tmp,
                                        );
                                    }
                                    let ix0 = ph.rx + sw * v0 - p.pad_left;
                                    for (i, dx) in rows.iter_mut().enumerate() {
                                        let dst = &mut dx[r * p.in_w..(r + 1) * p.in_w];
                                        if sw == 1 {
                                            dst[ix0..ix0 + valid].copy_from_slice(&tmp[i][..valid]);
                                        } else {
                                            for (j, &v) in tmp[i][..valid].iter().enumerate() {
                                                dst[ix0 + sw * j] = v;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    });
            });
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
    let plane_p = geo.rows * geo.phases * geo.width;
    let row_step = p.stride_h * geo.phases * geo.width;
    let taps: Vec<usize> = (0..k_plane)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            let (q, o) = (
                kx * p.dilation_w % geo.phases,
                kx * p.dilation_w / geo.phases,
            );
            ((ky * p.dilation_h) * geo.phases + q) * geo.width + o
        })
        .collect();
    let max_read = taps.iter().max().copied().unwrap_or(0) + (oh - 1) * row_step + ow;
    assert!(max_read <= plane_p, "direct: padded reads out of range");
    // Depthwise-like shapes have one output channel per group: spend the registers on taps.
    let (ocb, tb) = if cog == 1 { (1, 8) } else { (3, 3) };
    let out_plane = oh * ow;
    grad_weight.fill(0.0);
    let nb = chunk_items(p, c * plane_p);
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let pad = polyphase(
            input,
            (p.in_h, p.in_w),
            (n0 * c, (n1 - n0) * c),
            (p.pad_top, p.pad_left),
            geo,
        );
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
        let (pad, taps) = (&pad, &taps);
        work.into_par_iter().for_each(|(o0, ic, mut parts)| {
            let cb = parts.len();
            for t0 in (0..k_plane).step_by(tb) {
                let tn = tb.min(k_plane - t0);
                let mut total = [[0f64; 8]; 3];
                for ni in 0..n1 - n0 {
                    let x = &pad.data[(ni * c + ic) * plane_p..][..plane_p];
                    let dy0 = ((n0 + ni) * oc_n + o0) * out_plane;
                    let dy = &grad_out[dy0..dy0 + cb * out_plane];
                    // SAFETY: reads of x stay below max_read <= plane_p (checked above);
                    // dy holds cb planes of oh x ow; the CPU has AVX2+FMA (caller).
                    let sums = unsafe {
                        weight_block((cb, tn), x, row_step, &taps[t0..t0 + tn], dy, (oh, ow))
                    };
                    for (tot, s) in total.iter_mut().zip(&sums) {
                        for (a, &b) in tot.iter_mut().zip(s) {
                            *a += b as f64;
                        }
                    }
                }
                for (o, part) in parts.iter_mut().enumerate() {
                    for t in 0..tn {
                        part[t0 + t] += total[o][t] as f32;
                    }
                }
            }
        });
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
