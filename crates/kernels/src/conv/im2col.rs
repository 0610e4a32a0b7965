//! im2col + GEMM convolution. For each (batch item, group) the receptive fields are lowered to
//! the columns of a matrix `col` (`C_in/groups * kH * kW` rows, one column per output position),
//! so the convolution becomes the matrix product `W_g * col`, run by the blocked SGEMM in
//! `crate::gemm`. Lowering goes one block of output positions at a time into a per-thread
//! scratch buffer that stays in cache, instead of materialising the whole matrix (the forward
//! lowers straight into the GEMM's packed panel layout, so the GEMM copies nothing); the weights
//! are packed once per call and reused by every block. A 1x1 stride-1 unpadded convolution needs
//! no lowering at all: the input planes already are the `col` matrix.
//!
//! Blocks of (item, group, positions) are independent in the forward, as are (item, group)
//! pairs in the input gradient, so when there are enough of them they run in parallel with
//! single-threaded GEMMs; otherwise they run in turn and each GEMM uses the pool. The weight
//! gradient is a sum over items: each thread sums a contiguous share into its own buffer.
//!
//! Backward: `grad_input = col2im(W_g^T * grad_out)` (at stride 1, the forward conv of
//! `grad_out` with the rotated weights instead), `grad_weight = sum over items of
//! grad_out * col^T` (col's panels transposed from zero-padded input planes, or from rows
//! lowered in cache), `grad_bias = sum of grad_out over items and positions`.
use super::cat::CatInput;
use super::par::{with_buffer, with_scratch, SharedMut};
use super::{valid_range, Conv2dParams, Epilogue};
use super::{BackwardData, BackwardWeight, Forward};
use crate::gemm::{self, Lhs, Mat, PackedA, Rhs, NR};
use crate::simd;
use rayon::prelude::*;
use std::ops::Range;

/// Floats of lowered columns per block: 256 KiB, about half of a Zen L2, so a block is still
/// in cache when the GEMM reads it.
const COL_BUDGET: usize = 64 * 1024;
/// Fewest output positions per block in the forward/backward-data GEMMs (their N).
const MIN_BLOCK: usize = 64;
/// Fewest positions per block in the weight-gradient GEMM, where they are the shared dimension
/// (one full KC pass of the GEMM, so C is not reloaded every few steps).
const MIN_BLOCK_WEIGHT: usize = 256;

/// Most floats of lowered columns per block whatever the shape (64 MiB).
const MAX_SCRATCH: usize = 16 << 20;
/// Output planes smaller than this many positions are batched over several items per GEMM:
/// a 7x7 plane alone would leave the GEMM's last 16-wide panel with one column (23% of the
/// work wasted), and in the weight gradient a 49-step sum per call would reread all of C.
const MIN_BATCHED_COLS: usize = 256;

/// Whether one block's lowered columns fit in [`MAX_SCRATCH`]. A block is at least one GEMM
/// panel (`NR` columns) of the whole reduction, so a reduction longer than `MAX_SCRATCH / NR`
/// (kernels nearly as large as the image: 1024x1024 taps and up) would need gigabytes of
/// scratch for a handful of outputs; `Auto` sends those to direct summation, which needs none.
pub fn scratch_bounded(p: &Conv2dParams) -> bool {
    let kg = p.in_per_group() * p.kernel_h * p.kernel_w;
    kg.saturating_mul(NR) <= MAX_SCRATCH
}

/// Sizes shared by the three passes, and how the work is cut into blocks. A block is `items`
/// whole batch items (small output planes) or one item's positions `j0..j0+nb` (large ones);
/// its lowered matrix has one column per (item, position), items side by side.
#[derive(Clone, Copy)]
struct Geom {
    batch: usize,
    ohw: usize,
    ow: usize,
    in_plane: usize,
    cig: usize,
    cog: usize,
    /// Rows of the lowered matrix per group: cig * kH * kW.
    kg: usize,
    /// Output positions per block, and how many blocks cover the output plane.
    nb: usize,
    blocks: usize,
    /// Items per block (then nb == ohw and blocks == 1), and how many such groups of items.
    items: usize,
    item_groups: usize,
    /// 1x1, stride 1, no padding: the input plane is the lowered matrix.
    pointwise: bool,
}

impl Geom {
    fn new(p: &Conv2dParams, (oh, ow): (usize, usize), min_block: usize, batching: bool) -> Geom {
        let kg = p.in_per_group() * p.kernel_h * p.kernel_w;
        let ohw = oh * ow;
        let want = ((COL_BUDGET / kg) / NR * NR).max(min_block);
        // Past the minimum block, only a gigantic kg could blow the scratch up: cap it there.
        let nb = want.min(MAX_SCRATCH / kg).clamp(1, ohw);
        let mut items = 1;
        if batching && ohw < MIN_BATCHED_COLS {
            // Enough items to fill the GEMM, but leave at least one group per thread.
            items = (want.max(MIN_BATCHED_COLS) / ohw)
                .min(p.batch.div_ceil(rayon::current_num_threads()))
                .min(MAX_SCRATCH / (kg * ohw))
                .max(1);
        }
        Geom {
            batch: p.batch,
            ohw,
            ow,
            in_plane: p.in_h * p.in_w,
            cig: p.in_per_group(),
            cog: p.out_per_group(),
            kg,
            nb,
            blocks: ohw.div_ceil(nb),
            items,
            item_groups: p.batch.div_ceil(items),
            pointwise: is_pointwise(p),
        }
    }

    /// First output position and length of position block `b`.
    fn block(&self, b: usize) -> (usize, usize) {
        let j0 = b * self.nb;
        (j0, self.nb.min(self.ohw - j0))
    }

    /// The batch items of item group `ig`.
    fn items_of(&self, ig: usize) -> Range<usize> {
        let n0 = ig * self.items;
        n0..(n0 + self.items).min(self.batch)
    }
}

/// One run of a lowered row: `len` consecutive output positions of one output row, starting at
/// block column `col`. Positions `lo..hi` of the run read the input plane of channel `icg` at
/// `src + (t - lo) * stride_w`; the rest fall in the padding.
struct Run {
    icg: usize,
    col: usize,
    len: usize,
    taps: Option<(usize, usize, usize)>,
}

/// Calls `f(row, icg, ky, kx)` for the lowered rows of channels `icgs`, in order.
fn for_each_row(
    p: &Conv2dParams,
    icgs: Range<usize>,
    mut f: impl FnMut(usize, usize, usize, usize),
) {
    for icg in icgs {
        for ky in 0..p.kernel_h {
            for kx in 0..p.kernel_w {
                f((icg * p.kernel_h + ky) * p.kernel_w + kx, icg, ky, kx);
            }
        }
    }
}

/// Enumerates the runs of lowered row `(icg, ky, kx)` over positions `j0..j0+nb`. Bounds are
/// worked out per run, so the per-element work is a copy.
#[allow(clippy::too_many_arguments)]
fn row_runs(
    p: &Conv2dParams,
    g: &Geom,
    (icg, ky, kx): (usize, usize, usize),
    j0: usize,
    nb: usize,
    mut f: impl FnMut(Run),
) {
    let off_x = kx * p.dilation_w;
    let (vlo, vhi) = valid_range(g.ow, p.in_w, p.stride_w, off_x, p.pad_left);
    let mut j = j0;
    while j < j0 + nb {
        let (oy, ox0) = (j / g.ow, j % g.ow);
        let len = (g.ow - ox0).min(j0 + nb - j);
        let y = oy * p.stride_h + ky * p.dilation_h;
        let taps = if y >= p.pad_top && y - p.pad_top < p.in_h {
            let iy = y - p.pad_top;
            let lo = vlo.clamp(ox0, ox0 + len);
            let hi = vhi.clamp(lo, ox0 + len);
            (lo < hi).then(|| {
                let ix = lo * p.stride_w + off_x - p.pad_left;
                (iy * p.in_w + ix, lo - ox0, hi - ox0)
            })
        } else {
            None
        };
        f(Run {
            icg,
            col: j - j0,
            len,
            taps,
        });
        j += len;
    }
}

/// Writes one run of a lowered row into `dst` (`run.len` floats): input taps, 0 in the padding.
/// `x` holds the cig planes of one (item, group).
fn lower_run(dst: &mut [f32], r: &Run, x: &[f32], g: &Geom, stride_w: usize) {
    match r.taps {
        None => dst.fill(0.0),
        Some((src, lo, hi)) => {
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            let plane = &x[r.icg * g.in_plane..][..g.in_plane];
            let dst = &mut dst[lo..hi];
            copy_strided(dst, &plane[src..], stride_w);
        }
    }
}

/// `dst[i] = src[i * stride]`: a lowered run, or a subsampled row. Stride 2 goes over pairs so
/// the compiler turns it into vector loads and shuffles; `step_by(2)` went element by element,
/// and lowering took 38% of a 1x1 stride-2 conv (ResNet-50's 256->512 on a 56x56 map, batch 8).
#[inline]
fn copy_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            for (d, pair) in dst[..last].iter_mut().zip(src[..2 * last].chunks_exact(2)) {
                *d = pair[0];
            }
            dst[last] = src[2 * last];
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *d = v;
            }
        }
    }
}

/// Where a block's input lives: group `gi` of items `items`, positions `j0..j0+nb` of each.
#[derive(Clone)]
struct BlockSrc<'a> {
    input: &'a [f32],
    in_channels: usize,
    gi: usize,
    items: Range<usize>,
    j0: usize,
    nb: usize,
}

impl<'a> BlockSrc<'a> {
    fn new(
        input: &'a [f32],
        in_channels: usize,
        gi: usize,
        items: Range<usize>,
        block: (usize, usize),
    ) -> Self {
        let (j0, nb) = block;
        BlockSrc {
            input,
            in_channels,
            gi,
            items,
            j0,
            nb,
        }
    }

    fn cols(&self) -> usize {
        self.items.len() * self.nb
    }

    /// The cig input planes of item `n` in this block's group.
    fn planes(&self, g: &Geom, n: usize) -> &[f32] {
        &self.input[(n * self.in_channels + self.gi * g.cig) * g.in_plane..][..g.cig * g.in_plane]
    }

    /// Lowered row `rc = (icg, ky, kx)` of the block into `row` (cols() floats).
    fn lower_row(&self, p: &Conv2dParams, g: &Geom, rc: (usize, usize, usize), row: &mut [f32]) {
        for (t, n) in self.items.clone().enumerate() {
            let x = self.planes(g, n);
            let dst = &mut row[t * self.nb..(t + 1) * self.nb];
            row_runs(p, g, rc, self.j0, self.nb, |r| {
                lower_run(&mut dst[r.col..r.col + r.len], &r, x, g, p.stride_w);
            });
        }
    }
}

/// The block's lowered matrix straight in the GEMM's packed-B layout (panel-major,
/// `[panel][kg][NR]`, see `gemm::Rhs::Packed`), so the GEMM need not copy it again. Each
/// lowered row is built in `row` (cols() rounded up to NR floats, stays in L1) and then dealt
/// out to the panels in NR-float pieces.
fn im2col_packed(p: &Conv2dParams, g: &Geom, src: &BlockSrc<'_>, dst: &mut [f32], row: &mut [f32]) {
    let cols = src.cols();
    // Runs never reach past cols: the tail of the last panel stays zero.
    row[cols..].fill(0.0);
    for_each_row(p, 0..g.cig, |r, icg, ky, kx| {
        src.lower_row(p, g, (icg, ky, kx), &mut row[..cols]);
        for (q, piece) in row.chunks_exact(NR).enumerate() {
            gemm::copy_panel_row(&mut dst[(q * g.kg + r) * NR..][..NR], piece);
        }
    });
}

/// [`im2col_packed`] with the lowered rows dealt out over the pool, by input channel (each
/// thread lowers whole rows into its own row buffer; rows land in disjoint places of `dst`).
fn im2col_packed_par(p: &Conv2dParams, g: &Geom, src: &BlockSrc<'_>, dst: &mut [f32]) {
    let cols = src.cols();
    let row_len = cols.next_multiple_of(NR);
    assert!(
        dst.len() >= row_len * g.kg,
        "im2col: packed block too short"
    );
    let out = SharedMut(dst.as_mut_ptr());
    let per = g.cig.div_ceil(4 * rayon::current_num_threads()).max(1);
    (0..g.cig.div_ceil(per)).into_par_iter().for_each(|c| {
        let icgs = c * per..((c + 1) * per).min(g.cig);
        with_scratch(row_len, |row| {
            row[cols..].fill(0.0);
            for_each_row(p, icgs, |r, icg, ky, kx| {
                src.lower_row(p, g, (icg, ky, kx), &mut row[..cols]);
                for (q, piece) in row.chunks_exact(NR).enumerate() {
                    // SAFETY: row r of panel q lies inside dst (asserted above: row_len / NR
                    // panels of kg rows), and row r belongs to this channel range alone.
                    let d =
                        unsafe { std::slice::from_raw_parts_mut(out.at((q * g.kg + r) * NR), NR) };
                    gemm::copy_panel_row(d, piece);
                }
            });
        });
    });
}

thread_local! {
    static PACKED_T: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    // The weight gradient's output gradient of a block, packed (or first gathered, when the
    // block spans items) once for all of the block's chunks. Taken out while in use, as the
    // conv scratch is, so a nested use on the same thread (work stealing) allocates its own.
    static PACKED_DY: std::cell::Cell<Option<PackedA>> = const { std::cell::Cell::new(None) };
    static DY_BLOCK: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's buffer for [`im2col_packed_t`]'s output (contents
/// unspecified): a buffer of its own, as the lowering takes the conv scratch for its rows.
fn with_packed_t<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&PACKED_T, len, f)
}

/// The block's lowered matrix transposed, straight in the GEMM's packed-B layout: op(B) =
/// col^T (`cols x kg`, the weight gradient's right operand), panel q holding lowered rows
/// `16q..16q+16` as columns. Each panel's rows are lowered into `rows` (16 x cols floats, stays
/// in L1 for a block of 256 positions) and transposed from there: the lowered matrix never
/// goes to memory whole, where the GEMM would have to read it back across rows to pack it.
/// Only `panels` are written, from the start of `dst`. `par` deals them out over the pool (each
/// thread with a row buffer of its own).
fn im2col_packed_t(
    p: &Conv2dParams,
    g: &Geom,
    src: &BlockSrc<'_>,
    panels: Range<usize>,
    dst: &mut [f32],
    par: bool,
) {
    let cols = src.cols();
    let (first, panels) = (panels.start, panels.len());
    assert!(
        dst.len() >= panels * cols * NR,
        "im2col: packed transposed block too short"
    );
    let taps = p.kernel_h * p.kernel_w;
    let panel = |q: usize, d: &mut [f32], rows: &mut [f32]| {
        let r0 = (first + q) * NR;
        let nr = NR.min(g.kg - r0);
        if g.pointwise {
            // Lowered row r of a 1x1 stride-1 conv is input plane r at the block's positions,
            // item by item: each item's columns are a contiguous piece of the panel, transposed
            // straight from its planes (copying the rows out first took half the weight
            // gradient of 832->32 @7 at batch 8).
            for (t, n) in src.items.clone().enumerate() {
                let x = src.planes(g, n);
                let planes: [&[f32]; NR] = std::array::from_fn(|j| {
                    &x[(r0 + j.min(nr - 1)) * g.in_plane + src.j0..][..src.nb]
                });
                gemm::pack_b_panel_rows(&mut d[t * src.nb * NR..], &planes[..nr], src.nb);
            }
            return;
        }
        for (i, row) in rows.chunks_exact_mut(cols).take(nr).enumerate() {
            let r = r0 + i;
            let (icg, ky, kx) = (r / taps, (r % taps) / p.kernel_w, r % p.kernel_w);
            src.lower_row(p, g, (icg, ky, kx), row);
        }
        let lowered: [&[f32]; NR] = std::array::from_fn(|j| &rows[j.min(nr - 1) * cols..][..cols]);
        gemm::pack_b_panel_rows(d, &lowered[..nr], cols);
    };
    if par && panels > 1 {
        let out = SharedMut(dst.as_mut_ptr());
        (0..panels).into_par_iter().for_each(|q| {
            with_scratch(NR * cols, |rows| {
                // SAFETY: panel q is dst[q * cols * NR..][..cols * NR], inside dst (asserted
                // above) and written by this task alone.
                let d = unsafe { std::slice::from_raw_parts_mut(out.at(q * cols * NR), cols * NR) };
                panel(q, d, rows);
            });
        });
    } else {
        with_scratch(NR * cols, |rows| {
            for (q, d) in dst.chunks_exact_mut(cols * NR).take(panels).enumerate() {
                panel(q, d, rows);
            }
        });
    }
}

/// `dw (cog x kg, ldc kg) = beta * dw + dy * col^T` for one block of `cols` positions: `dy`
/// (cog x cols) packed once, then the transposed lowered columns in chunks of panels (about
/// [`COL_BUDGET`] floats, so a chunk is still in L2 when the GEMM reads it), `fill(panels,
/// chunk)` writing panels `panels` of col^T (packed-B layout, `cols x 16` each) from the start
/// of `chunk`, each chunk's product taken as soon as it is filled. The chunks split only C's
/// columns: every sum runs over the same positions in the same passes as one GEMM over all of
/// them, so the bits do not depend on the chunking.
#[allow(clippy::too_many_arguments)]
fn chunked_product(
    (cog, kg, cols): (usize, usize, usize),
    dy: Mat<'_>,
    beta: f32,
    dwg: &mut [f32],
    par: bool,
    fill: impl Fn(Range<usize>, &mut [f32]),
) {
    let panels = kg.div_ceil(NR);
    let per = (COL_BUDGET / (cols * NR)).clamp(1, panels);
    let mut a = PACKED_DY.take().unwrap_or_else(PackedA::empty);
    a.repack(false, cog, cols, dy.data, dy.ld, par);
    with_packed_t(per * cols * NR, |col| {
        for q0 in (0..panels).step_by(per) {
            let q1 = (q0 + per).min(panels);
            let chunk = &mut col[..(q1 - q0) * cols * NR];
            fill(q0..q1, chunk);
            let n = (q1 * NR).min(kg) - q0 * NR;
            let (lhs, rhs) = (Lhs::Packed(&a), Rhs::Packed(chunk));
            gemm::gemm(
                cog,
                n,
                cols,
                1.0,
                lhs,
                rhs,
                beta,
                &mut dwg[q0 * NR..],
                kg,
                par,
            );
        }
    });
    // Kept for the next block unless huge, as the scratch buffers are.
    if a.capacity() * 4 <= crate::scratch::RETAIN_BYTES {
        PACKED_DY.set(Some(a));
    }
}

/// [`chunked_product`] with the block's columns lowered run by run ([`im2col_packed_t`]).
fn lowered_product(
    p: &Conv2dParams,
    g: &Geom,
    src: &BlockSrc<'_>,
    dy: Mat<'_>,
    beta: f32,
    dwg: &mut [f32],
    par: bool,
) {
    chunked_product(
        (g.cog, g.kg, src.cols()),
        dy,
        beta,
        dwg,
        par,
        |panels, chunk| im2col_packed_t(p, g, src, panels, chunk, par),
    );
}

/// dx[icg] += the lowered gradient rows of channel icg for positions j0..j0+nb (the adjoint of
/// the lowering), reading row r of `dcol` at `dcol[r * ld + off..]`; `dx` holds the cig planes of
/// one (item, group). Planes are independent, so `par` splits them over the pool.
#[allow(clippy::too_many_arguments)]
fn col2im_add(
    p: &Conv2dParams,
    g: &Geom,
    dcol: &[f32],
    (ld, off): (usize, usize),
    j0: usize,
    nb: usize,
    dx: &mut [f32],
    par: bool,
) {
    let sw = p.stride_w;
    let plane = |(icg, dxp): (usize, &mut [f32])| {
        for_each_row(p, icg..icg + 1, |row, icg, ky, kx| {
            row_runs(p, g, (icg, ky, kx), j0, nb, |r| {
                if let Some((src, lo, hi)) = r.taps {
                    let s = &dcol[row * ld + off + r.col + lo..][..hi - lo];
                    if sw == 1 {
                        for (d, &v) in dxp[src..src + s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dxp[src..].iter_mut().step_by(sw).zip(s) {
                            *d += v;
                        }
                    }
                }
            });
        });
    };
    if par {
        dx.par_chunks_mut(g.in_plane).enumerate().for_each(plane);
    } else {
        dx.chunks_mut(g.in_plane).enumerate().for_each(plane);
    }
}

/// Copies grad_out of group `gi`, items `items`, positions j0..j0+nb into `dst` as one
/// row-major matrix (cog x cols), items side by side.
fn gather_grad_out(
    g: &Geom,
    grad_out: &[f32],
    out_channels: usize,
    src: &BlockSrc<'_>,
    dst: &mut [f32],
) {
    let cols = src.cols();
    for r in 0..g.cog {
        for (t, n) in src.items.clone().enumerate() {
            let from =
                &grad_out[(n * out_channels + src.gi * g.cog + r) * g.ohw + src.j0..][..src.nb];
            dst[r * cols + t * src.nb..][..src.nb].copy_from_slice(from);
        }
    }
}

/// Whether `tasks` independent pieces are enough to spread over the pool (each then runs a
/// single-threaded GEMM) rather than running them in turn with multithreaded GEMMs.
fn enough_tasks(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks >= 2 * threads
}

/// Output rows per block of [`forward_shifted`], or `None` where that path does not apply or
/// does not pay: it computes `kW - 1` throwaway columns per output row (up to 1/8 of the
/// work), which only beats the per-run lowering when few output channels share each lowered
/// column (the lowering is then a large part of the work, about a third at 32 channels).
fn shifted_rows(p: &Conv2dParams, (oh, _ow): (usize, usize)) -> Option<usize> {
    let unit = p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1;
    let wp = p.in_w + p.pad_left + p.pad_right;
    let kg = p.in_per_group() * p.kernel_h * p.kernel_w;
    let fits = kg.checked_mul(wp).is_some_and(|v| v <= MAX_SCRATCH);
    if !unit || p.kernel_h * p.kernel_w == 1 || p.out_per_group() > 64 || !fits {
        return None;
    }
    if (p.kernel_w - 1) * 8 > wp {
        return None;
    }
    let want = ((COL_BUDGET / kg) / NR * NR).max(MIN_BLOCK);
    Some(want.div_ceil(wp).clamp(1, oh))
}

/// Forward at stride 1 and dilation 1, lowered over the padded width: with the input rows of a
/// block copied once into a zero-padded buffer `Wp = pad_left + W + pad_right` wide, and the
/// output computed at every padded column (`Wp` positions per output row, of which the last
/// `kW - 1` are thrown away), lowered row `(c, ky, kx)` is the padded plane of `c` shifted by
/// `ky * Wp + kx`: contiguous, so it goes into the packed panels in whole NR-float copies, with
/// no per-run bounds or padding fills.
#[allow(clippy::too_many_arguments)]
fn forward_shifted(
    p: &Conv2dParams,
    (oh, ow): (usize, usize),
    rows: usize,
    input: &[f32],
    packed: &[PackedA],
    epilogue: &Epilogue<'_>,
    output: &mut [f32],
) {
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let (kh, kw) = (p.kernel_h, p.kernel_w);
    let kg = cig * kh * kw;
    let wp = p.in_w + p.pad_left + p.pad_right;
    let (ohw, in_plane) = (oh * ow, p.in_h * p.in_w);
    let blocks = oh.div_ceil(rows);
    let isa = simd::isa();
    let finish = !epilogue.is_identity();
    let tasks = p.batch * p.groups * blocks;
    let out = SharedMut(output.as_mut_ptr());
    let task = |t: usize, par: bool| {
        let (b, gi, n) = (t % blocks, (t / blocks) % p.groups, t / (blocks * p.groups));
        let oy0 = b * rows;
        let nrows = rows.min(oh - oy0);
        let cols = nrows * wp;
        // Padded rows oy0..oy0+nrows+kH-1 of each channel, plus slack: the last panel reads up
        // to kW - 1 + NR floats past them.
        let span = (nrows + kh - 1) * wp + kw + NR;
        let packed_len = gemm::packed_b_len(kg, cols);
        with_scratch(cig * span + packed_len + cog * cols, |buf| {
            let (xp, rest) = buf.split_at_mut(cig * span);
            let (col, ctmp) = rest.split_at_mut(packed_len);
            let x = &input[(n * p.in_channels + gi * cig) * in_plane..][..cig * in_plane];
            for (plane, dst) in x.chunks_exact(in_plane).zip(xp.chunks_exact_mut(span)) {
                dst.fill(0.0);
                for r in 0..nrows + kh - 1 {
                    let py = oy0 + r;
                    if py >= p.pad_top && py - p.pad_top < p.in_h {
                        let iy = py - p.pad_top;
                        dst[r * wp + p.pad_left..][..p.in_w]
                            .copy_from_slice(&plane[iy * p.in_w..][..p.in_w]);
                    }
                }
            }
            let panels = cols.div_ceil(NR);
            for_each_row(p, 0..cig, |r, c, ky, kx| {
                let src = &xp[c * span + ky * wp + kx..];
                for q in 0..panels {
                    gemm::copy_panel_row(&mut col[(q * kg + r) * NR..][..NR], &src[q * NR..][..NR]);
                }
            });
            // SAFETY: ctmp holds cog x cols floats and is this task's own scratch.
            unsafe {
                gemm::gemm_raw(
                    cog,
                    cols,
                    kg,
                    1.0,
                    Lhs::Packed(&packed[gi]),
                    Rhs::Packed(col),
                    0.0,
                    ctmp.as_mut_ptr(),
                    cols,
                    par,
                );
            }
            for r in 0..cog {
                let oc = gi * cog + r;
                for y in 0..nrows {
                    let off = (n * p.out_channels + oc) * ohw + (oy0 + y) * ow;
                    // SAFETY: output rows oy0..oy0+nrows of (n, oc) are inside `output` and
                    // belong to this task alone.
                    let to = unsafe { std::slice::from_raw_parts_mut(out.at(off), ow) };
                    to.copy_from_slice(&ctmp[r * cols + y * wp..][..ow]);
                    if finish {
                        epilogue.apply_row(to, oc, off, isa);
                    }
                }
            }
        });
    };
    if enough_tasks(tasks) {
        (0..tasks).into_par_iter().for_each(|t| task(t, false));
    } else {
        let par = gemm::want_parallel(cog, rows * wp, kg);
        (0..tasks).for_each(|t| task(t, par));
    }
}

/// The forward's left GEMM operands: each group's weights (`cog x kg`) packed, on the whole
/// pool. Made per call, or once by [`super::prepare_forward`] and kept while the weights stay.
pub(crate) fn pack_forward_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<PackedA> {
    let (cog, kg) = (
        p.out_per_group(),
        p.in_per_group() * p.kernel_h * p.kernel_w,
    );
    weight
        .chunks_exact(cog * kg)
        .map(|w| PackedA::new(false, cog, kg, w, kg, true))
        .collect()
}

pub fn forward(f: Forward<'_>, epilogue: &Epilogue<'_>) {
    forward_with(f, epilogue, false)
}

/// [`forward`] on the path its rules pick, or (`alt`) the other one where there is one.
pub(crate) fn forward_with(f: Forward<'_>, epilogue: &Epilogue<'_>, alt: bool) {
    if forward_indirect(f.p, alt) {
        let packed = super::indirect::pack_weights(f.p, f.weight);
        return super::indirect::forward(f, &packed, epilogue);
    }
    let packed = pack_forward_weights(f.p, f.weight);
    forward_packed(f, &packed, epilogue)
}

/// Whether the forward runs on indirect tiles (else the lowering and the blocked GEMM): where
/// [`super::indirect::applies`] says, or (`alt`) the other way where both can run.
pub(crate) fn forward_indirect(p: &Conv2dParams, alt: bool) -> bool {
    let rule = super::indirect::applies(p);
    if alt && super::indirect::possible(p) {
        !rule
    } else {
        rule
    }
}

/// The names of the two ways im2col can run `pass` of `p`, the rules' pick first, or None
/// where it has one way only: the forward on indirect tiles or the GEMM; the input gradient as
/// a forward conv or through col2im; the weight gradient from padded planes or lowered rows.
/// The autotuner times both.
pub fn paths(p: &Conv2dParams, pass: super::ConvPass) -> Option<[&'static str; 2]> {
    use super::ConvPass;
    let (rule, names) = match pass {
        ConvPass::Forward => {
            if !super::indirect::possible(p) {
                return None;
            }
            (super::indirect::applies(p), ["indirect", "gemm"])
        }
        ConvPass::BackwardData => {
            if !data_as_forward_possible(p) {
                return None;
            }
            (data_as_forward_rule(p), ["as-forward", "col2im"])
        }
        ConvPass::BackwardWeight => {
            let out_hw = p.validate().ok()?;
            if !WeightShifted::possible(p) {
                return None;
            }
            (WeightShifted::pays(p, out_hw), ["shifted", "lowered"])
        }
    };
    Some(if rule { names } else { [names[1], names[0]] })
}

/// Whether the input gradient can run as a forward conv ([`super::data_as_forward`]): a spatial
/// kernel at stride 1 with pads within its reach.
fn data_as_forward_possible(p: &Conv2dParams) -> bool {
    let Ok(out_hw) = p.validate() else {
        return false;
    };
    p.kernel_h * p.kernel_w > 1 && super::data_as_forward(p, out_hw).is_some()
}

/// Whether the rules run the input gradient as a forward conv where it can: at stride 1, the
/// input gradient is a forward conv of grad_out (rotated weights, in and out channels swapped),
/// which runs on the forward's paths (indirect tiles, the shifted lowering) with no col2im:
/// that scatter of the kg x positions product back into the planes is most of the work when
/// few output channels make the GEMM short (DenseNet's 3x3 128->32 at batch 8: 208 -> 392
/// GFLOP/s @28, 154 -> 390 @14). The forward conv's output channels are this one's inputs:
/// with fewer than 16 (a network's first layer) its tiles run mostly empty, and col2im stays
/// ahead (3->64 @224: 156 against 49).
fn data_as_forward_rule(p: &Conv2dParams) -> bool {
    p.in_per_group() >= 16
}

/// [`forward`] with the weights already packed by [`pack_forward_weights`].
pub(crate) fn forward_packed(f: Forward<'_>, packed: &[PackedA], epilogue: &Epilogue<'_>) {
    if !is_strided_1x1(f.p) {
        return forward_packed_from(f, packed, epilogue, None);
    }
    // A 1x1 conv with a stride reads every stride-th input of every stride-th row: its input is
    // subsampled first, plane by plane over the pool (each plane read front to back), and the
    // conv then runs as the 1x1 stride-1 one it is on that. Lowered straight from the input,
    // each block gathered short pieces of a few rows from every channel's plane, out of cache
    // at batch 8, and the lowering took 28% of ResNet-50's 256->512 @56 at batch 8 (16% at
    // batch 1). Planes large enough to run item by item (see MIN_BATCHED_COLS) go one item at a
    // time, the subsampled item read back from cache, and the buffer kept between calls stays
    // small: the whole batch's (6.4 MB for that conv at batch 8, on each thread that ran one)
    // added 20 MB to ResNet-50's planned predict. Smaller planes, which the GEMM batches over
    // items, go as many items as fit in SUBSAMPLED_FLOATS (conv_b1 at batch 8, residual
    // epilogue, 3 runs: 256->512 @56 5.1-5.5 ms with the whole batch at once, 4.4-5.0 item by
    // item; 512->1024 @28 4.1-4.7 at once, 4.3-4.6 two items at a time).
    let (p, out_hw, input, weight, output) = f.parts();
    let plane = out_hw.0 * out_hw.1;
    let (in_item, out_item) = (p.in_channels * p.in_h * p.in_w, p.out_channels * plane);
    let items = if plane >= MIN_BATCHED_COLS {
        1
    } else {
        (SUBSAMPLED_FLOATS / (p.in_channels * plane).max(1)).clamp(1, p.batch.max(1))
    };
    for n0 in (0..p.batch).step_by(items) {
        let n1 = (n0 + items).min(p.batch);
        let sub_p = Conv2dParams {
            batch: n1 - n0,
            in_h: out_hw.0,
            in_w: out_hw.1,
            stride_h: 1,
            stride_w: 1,
            ..*p
        };
        let ep = Epilogue {
            residual: epilogue.residual.map(|r| &r[n0 * out_item..n1 * out_item]),
            ..*epilogue
        };
        let x = &input[n0 * in_item..n1 * in_item];
        let y = &mut output[n0 * out_item..n1 * out_item];
        with_buffer(&SUBSAMPLED, (n1 - n0) * p.in_channels * plane, |sub| {
            subsample(p, out_hw, x, sub);
            let f = Forward::new(&sub_p, out_hw, sub, weight, y);
            forward_packed_from(f, packed, &ep, None)
        });
    }
}

/// Most floats of subsampled input [`forward_packed`] makes at once for planes the GEMM
/// batches over items (4 MiB), unless one item needs more.
const SUBSAMPLED_FLOATS: usize = 1 << 20;

/// A 1x1 conv without padding and with a stride (dilation means nothing to a 1x1 kernel).
fn is_strided_1x1(p: &Conv2dParams) -> bool {
    is_unpadded_1x1(p) && !is_pointwise(p)
}

thread_local! {
    // The subsampled input of [`forward_packed`], reused between calls on this thread (taken
    // out while in use, so a nested call allocates its own).
    static SUBSAMPLED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `sub[n, c, y, x] = input[n, c, y * stride_h, x * stride_w]` over the `oh x ow` output
/// positions of a strided 1x1 conv, planes in parallel.
fn subsample(p: &Conv2dParams, (oh, ow): (usize, usize), input: &[f32], sub: &mut [f32]) {
    let (plane_in, plane_out) = (p.in_h * p.in_w, oh * ow);
    if plane_out == 0 {
        return;
    }
    // About 16K floats read per task.
    let per = (16 * 1024 / plane_in.max(1)).max(1);
    sub.par_chunks_mut(per * plane_out)
        .zip(input.par_chunks(per * plane_in))
        .for_each(|(to, from)| {
            for (dst, x) in to
                .chunks_exact_mut(plane_out)
                .zip(from.chunks_exact(plane_in))
            {
                for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
                    copy_strided(row, &x[y * p.stride_h * p.in_w..], p.stride_w);
                }
            }
        });
}

/// Whether [`forward_packed_from`] reads a 1x1 conv's input planes where they are (each item's
/// blocks on their own), so it can take them from a [`CatInput`].
pub(crate) fn reads_planes(p: &Conv2dParams, out_hw: (usize, usize)) -> bool {
    is_pointwise(p) && p.groups == 1 && Geom::new(p, out_hw, MIN_BLOCK, true).items == 1
}

/// [`forward_packed`], with the input's planes taken from `cat` (mapped as they are packed for
/// the GEMM) when given, in place of `f`'s input; only where [`reads_planes`] holds.
pub(crate) fn forward_packed_from(
    f: Forward<'_>,
    packed: &[PackedA],
    epilogue: &Epilogue<'_>,
    cat: Option<&CatInput<'_>>,
) {
    let (p, out_hw, input, _weight, output) = f.parts();
    assert!(
        cat.is_none() || reads_planes(p, out_hw),
        "im2col: a gathered input only where the planes are read in place"
    );
    if let Some(rows) = shifted_rows(p, out_hw) {
        forward_shifted(p, out_hw, rows, input, packed, epilogue, output);
        return;
    }
    let mut g = Geom::new(p, out_hw, MIN_BLOCK, true);
    let threads = rayon::current_num_threads();
    let whole = g.kg.checked_mul((g.items * g.ohw).next_multiple_of(NR));
    if threads > 1
        && g.blocks > 1
        && g.item_groups * p.groups * g.blocks < 4 * threads
        && whole.is_some_and(|n| n <= MAX_SCRATCH)
    {
        // Too few blocks to share out evenly (a 14x14 map at batch 1 is 4 blocks of 64, 64,
        // 64 and 4 positions): lower each item's whole plane at once, over the pool, and let
        // one GEMM over all its positions split the rows and columns between the threads.
        g.nb = g.ohw;
        g.blocks = 1;
    }
    let isa = simd::isa();
    let finish = !epilogue.is_identity();
    let tasks = g.item_groups * p.groups * g.blocks;
    let out = SharedMut(output.as_mut_ptr());
    let task = |t: usize, par: bool| {
        let (b, gi, ig) = (
            t % g.blocks,
            (t / g.blocks) % p.groups,
            t / (g.blocks * p.groups),
        );
        let (j0, nb) = g.block(b);
        let src = BlockSrc::new(input, p.in_channels, gi, g.items_of(ig), (j0, nb));
        let cols = src.cols();
        let single = src.items.len() == 1;
        // C (cog x n, rows ldc apart) = this group's packed weights times B.
        // SAFETY (for every call): C is this task's part of `output` or its own scratch, see below.
        let product = |b: Rhs<'_>, n: usize, c: *mut f32, ldc: usize| unsafe {
            let a = Lhs::Packed(&packed[gi]);
            gemm::gemm_raw(g.cog, n, g.kg, 1.0, a, b, 0.0, c, ldc, par)
        };
        // SAFETY: every output element written below belongs to group gi of this task's items
        // at positions j0..j0+nb: inside `output` and written by this task alone.
        unsafe {
            // C of a single item goes straight to the output (rows ohw apart); several items
            // go through a scratch C and are scattered afterwards.
            let c_out = |n: usize| out.at((n * p.out_channels + gi * g.cog) * g.ohw + j0);
            if let Some(cat) = cat {
                // The item's channels from the pieces, mapped as the GEMM packs them.
                let n = src.items.start;
                let planes = cat.planes(n, g.in_plane);
                let rows: Vec<&[f32]> = planes.iter().map(|x| &x[j0..j0 + nb]).collect();
                let rhs = gemm::Rows {
                    rows: &rows,
                    affine: cat.affine,
                };
                product(Rhs::Rows(rhs), nb, c_out(n), g.ohw);
            } else if single && g.pointwise {
                let rhs = Mat::new(&src.planes(&g, src.items.start)[j0..], g.ohw, false);
                product(rhs.into(), nb, c_out(src.items.start), g.ohw);
            } else {
                let packed_len = gemm::packed_b_len(g.kg, cols);
                let row_len = cols.next_multiple_of(NR);
                let c_len = if single { 0 } else { g.cog * cols };
                with_scratch(packed_len + row_len + c_len, |buf| {
                    let (col, rest) = buf.split_at_mut(packed_len);
                    let (row, ctmp) = rest.split_at_mut(row_len);
                    if par {
                        im2col_packed_par(p, &g, &src, col);
                    } else {
                        im2col_packed(p, &g, &src, col, row);
                    }
                    if single {
                        product(Rhs::Packed(col), nb, c_out(src.items.start), g.ohw);
                    } else {
                        product(Rhs::Packed(col), cols, ctmp.as_mut_ptr(), cols);
                        // Scatter to the items' planes, finishing each row (bias, folded
                        // batch norm, residual, ReLU) while it is in L1.
                        for (t, n) in src.items.clone().enumerate() {
                            for r in 0..g.cog {
                                let to =
                                    std::slice::from_raw_parts_mut(c_out(n).add(r * g.ohw), nb);
                                to.copy_from_slice(&ctmp[r * cols + t * nb..][..nb]);
                                if finish {
                                    let oc = gi * g.cog + r;
                                    let off = (n * p.out_channels + oc) * g.ohw + j0;
                                    epilogue.apply_row(to, oc, off, isa);
                                }
                            }
                        }
                    }
                });
            }
            // A single item's tile was just written by the GEMM: finish it while it is still
            // in cache. A GEMM that ran over the pool (one task for the whole plane) is
            // finished over the pool too: its plane is too large for one core to finish from
            // cache at the speed of two.
            if finish && single {
                let n = src.items.start;
                let finish_row = |r: usize| {
                    let oc = gi * g.cog + r;
                    let off = (n * p.out_channels + oc) * g.ohw + j0;
                    // SAFETY: row `r` of this task's block, written by this task alone.
                    let row = std::slice::from_raw_parts_mut(out.at(off), nb);
                    epilogue.apply_row(row, oc, off, isa);
                };
                if par {
                    (0..g.cog)
                        .into_par_iter()
                        .with_min_len(4)
                        .for_each(finish_row);
                } else {
                    (0..g.cog).for_each(finish_row);
                }
            }
        }
    };
    if enough_tasks(tasks) {
        (0..tasks).into_par_iter().for_each(|t| task(t, false));
    } else {
        let par = gemm::want_parallel(g.cog, g.items * g.nb, g.kg);
        (0..tasks).for_each(|t| task(t, par));
    }
}

pub fn backward_data(b: BackwardData<'_>) {
    backward_data_with(b, false)
}

/// [`backward_data`] on the path its rules pick, or (`alt`) the other one where there is one
/// (see [`paths`]).
pub(crate) fn backward_data_with(b: BackwardData<'_>, alt: bool) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
    if data_as_forward_possible(p) && (data_as_forward_rule(p) != alt) {
        if let Some(q) = super::data_as_forward(p, out_hw) {
            let rotated = super::rotate_for_data(p, weight);
            let f = Forward::new(&q, (p.in_h, p.in_w), grad_out, &rotated, grad_input);
            return forward(f, &Epilogue::default());
        }
    }
    // Items are batched only when a task's items own one contiguous run of grad_input (one
    // group); pointwise convs write grad_input straight from the GEMM, one item at a time.
    let batching = p.groups == 1 && !is_pointwise(p);
    let g = Geom::new(p, out_hw, MIN_BLOCK, batching);
    // W_g^T (kg x cog), packed once and shared by every item and block.
    let packed: Vec<PackedA> = weight
        .chunks_exact(g.cog * g.kg)
        .map(|w| PackedA::new(true, g.kg, g.cog, w, g.kg, true))
        .collect();
    let item_len = g.cig * g.in_plane;
    // Task t covers group t % groups of item group t / groups and owns its slice of dx.
    let task = |t: usize, dx: &mut [f32], par: bool| {
        let (ig, gi) = (t / p.groups, t % p.groups);
        let items = g.items_of(ig);
        let lhs = || Lhs::Packed(&packed[gi]);
        if g.pointwise {
            let n = items.start;
            let dy = &grad_out[(n * p.out_channels + gi * g.cog) * g.ohw..][..g.cog * g.ohw];
            let rhs = Mat::new(dy, g.ohw, false);
            gemm::gemm(g.kg, g.ohw, g.cog, 1.0, lhs(), rhs, 0.0, dx, g.ohw, par);
            return;
        }
        dx.fill(0.0);
        for b in 0..g.blocks {
            let (j0, nb) = g.block(b);
            let src = BlockSrc {
                input: &[],
                in_channels: p.in_channels,
                gi,
                items: items.clone(),
                j0,
                nb,
            };
            let cols = src.cols();
            let single = items.len() == 1;
            let dy_len = if single { 0 } else { g.cog * cols };
            with_scratch(g.kg * cols + dy_len, |buf| {
                let (dcol, dyg) = buf.split_at_mut(g.kg * cols);
                let rhs = if single {
                    let n = items.start;
                    Mat::new(
                        &grad_out[(n * p.out_channels + gi * g.cog) * g.ohw + j0..],
                        g.ohw,
                        false,
                    )
                } else {
                    gather_grad_out(&g, grad_out, p.out_channels, &src, dyg);
                    Mat::new(dyg, cols, false)
                };
                gemm::gemm(g.kg, cols, g.cog, 1.0, lhs(), rhs, 0.0, dcol, cols, par);
                for (t, dxi) in dx.chunks_mut(item_len).enumerate() {
                    col2im_add(p, &g, dcol, (cols, t * nb), j0, nb, dxi, par);
                }
            });
        }
    };
    // Tasks own disjoint slices of grad_input, so they parallelise without sharing.
    let chunk = if g.items > 1 {
        g.items * item_len
    } else {
        item_len
    };
    let chunks = grad_input.chunks_mut(chunk);
    if enough_tasks(g.item_groups * p.groups) {
        chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .enumerate()
            .for_each(|(t, dx)| task(t, dx, false));
    } else {
        let par = gemm::want_parallel(g.kg, g.items * g.nb, g.cog);
        chunks.enumerate().for_each(|(t, dx)| task(t, dx, par));
    }
}

pub(crate) fn is_pointwise(p: &Conv2dParams) -> bool {
    is_unpadded_1x1(p) && p.stride_h == 1 && p.stride_w == 1
}

fn is_unpadded_1x1(p: &Conv2dParams) -> bool {
    p.kernel_h == 1 && p.kernel_w == 1 && p.pad_top + p.pad_bottom + p.pad_left + p.pad_right == 0
}

pub fn backward_weight(b: BackwardWeight<'_>) {
    backward_weight_with(b, false)
}

/// [`backward_weight`] on the path its rules pick, or (`alt`) the other one where there is
/// one (see [`paths`]).
pub(crate) fn backward_weight_with(b: BackwardWeight<'_>, alt: bool) {
    let (p, out_hw, input, grad_out, (grad_weight, grad_bias)) = b.parts();
    let shifted = WeightShifted::possible(p) && (WeightShifted::pays(p, out_hw) != alt);
    if let Some(s) = shifted.then(|| WeightShifted::new(p, out_hw)).flatten() {
        let accumulate = |dw: &mut [f32], units: Range<usize>, par: bool| {
            for (i, u) in units.enumerate() {
                let beta = if i == 0 { 0.0 } else { 1.0 };
                s.unit(p, input, grad_out, u, beta, dw, par);
            }
        };
        let par = gemm::want_parallel(s.cog, s.kg, s.items * s.rows * s.wq);
        sum_units(s.item_groups * s.blocks, grad_weight, accumulate, par);
        if let Some(gb) = grad_bias {
            bias_grad(p, out_hw.0 * out_hw.1, grad_out, gb);
        }
        return;
    }
    let g = Geom::new(p, out_hw, MIN_BLOCK_WEIGHT, true);
    // dW_g = sum over blocks of dY_g[:, block] * col_block^T; `units` indexes the (item group,
    // position block) pairs, the first of a range overwrites `dw`, the rest accumulate.
    let accumulate = |dw: &mut [f32], units: Range<usize>, par: bool| {
        for (i, u) in units.enumerate() {
            let (ig, b) = (u / g.blocks, u % g.blocks);
            let (j0, nb) = g.block(b);
            let beta = if i == 0 { 0.0 } else { 1.0 };
            for (gi, dwg) in dw.chunks_exact_mut(g.cog * g.kg).enumerate() {
                let src = BlockSrc::new(input, p.in_channels, gi, g.items_of(ig), (j0, nb));
                let cols = src.cols();
                if src.items.len() == 1 {
                    let n = src.items.start;
                    let dy = &grad_out[(n * p.out_channels + gi * g.cog) * g.ohw + j0..];
                    let lhs = Lhs::Raw(Mat::new(dy, g.ohw, false));
                    if g.pointwise {
                        let rhs = Mat::new(&src.planes(&g, n)[j0..], g.ohw, true);
                        gemm::gemm(g.cog, g.kg, nb, 1.0, lhs, rhs, beta, dwg, g.kg, par);
                        continue;
                    }
                    lowered_product(p, &g, &src, Mat::new(dy, g.ohw, false), beta, dwg, par);
                } else {
                    let mut dyg = DY_BLOCK.take();
                    crate::scratch::grow(&mut dyg, g.cog * cols);
                    gather_grad_out(&g, grad_out, p.out_channels, &src, &mut dyg);
                    let dy = Mat::new(&dyg[..g.cog * cols], cols, false);
                    lowered_product(p, &g, &src, dy, beta, dwg, par);
                    crate::scratch::trim(&mut dyg);
                    DY_BLOCK.set(dyg);
                }
            }
        }
    };
    let par = gemm::want_parallel(g.cog, g.kg, g.items * g.nb);
    sum_units(g.item_groups * g.blocks, grad_weight, accumulate, par);
    if let Some(gb) = grad_bias {
        bias_grad(p, g.ohw, grad_out, gb);
    }
}

/// Most weight-gradient floats (1 MiB) for which [`sum_units`] splits as few units as threads
/// over the pool: each thread but the first then sums into a private copy, added at the end.
const EVEN_SPLIT_MAX: usize = 256 * 1024;

/// Runs `accumulate(dw, units, par)` over `0..units` into `grad_weight`: with enough units,
/// contiguous ranges per thread, the first writing grad_weight directly and the others private
/// partial sums added at the end (each with single-threaded GEMMs); otherwise all in turn with
/// `par` (GEMMs on the pool).
fn sum_units(
    units: usize,
    grad_weight: &mut [f32],
    accumulate: impl Fn(&mut [f32], Range<usize>, bool) + Sync,
    par: bool,
) {
    let wlen = grad_weight.len();
    let threads = rayon::current_num_threads();
    // As many units as threads (or a multiple) split evenly too, where the private sums are
    // small: the 1x1 convs on 7x7 maps at batch 8 come as two groups of four items, and run
    // in turn each product took six trips through the pool (lowering and GEMM per chunk of
    // panels); 832->32 at batch 8 went 0.226 -> 0.207 ms with this alone.
    let even =
        threads > 1 && units >= threads && units.is_multiple_of(threads) && wlen <= EVEN_SPLIT_MAX;
    if !(enough_tasks(units) || even) {
        accumulate(grad_weight, 0..units, par);
        return;
    }
    super::par::sum_over_threads(units, grad_weight, |dw, r| accumulate(dw, r, false));
}

/// The weight gradient at dilation 1 over a widened output row, as [`forward_shifted`] runs
/// the forward. A block's input rows are copied once, zero-padded, into `sh * sw` phase planes
/// per channel (phase `(py, px)` holds padded pixel `(u * sh + py, v * sw + px)` at `(u, v)`,
/// rows `Wq = ceil(Wp / sw)` wide, `Wp = pad_left + W + pad_right`), and grad_out is widened to
/// `Wq` columns per row with zeros in the extra ones. Lowered row `(c, ky, kx)` is then phase
/// plane `(ky % sh, kx % sw)` of `c` shifted by `(ky / sh) * Wq + kx / sw`: contiguous, so the
/// GEMM's packed panels are transposed straight from the planes, with no per-run lowering (on
/// 14x14 maps that lowering cost twice the GEMM; strided, it gathers one float at a time). The
/// extra columns multiply zeros: `Wq / W_out - 1` more work (1/7 at 14x14 with a 3x3 kernel
/// and pad 1, 1/28 at stride 2 on 56x56). Blocks are `rows` output rows of `items` whole
/// items, about [`MIN_BLOCK_WEIGHT`] positions.
#[derive(Clone, Copy)]
struct WeightShifted {
    wq: usize,
    oh: usize,
    ow: usize,
    cig: usize,
    cog: usize,
    kg: usize,
    rows: usize,
    blocks: usize,
    items: usize,
    item_groups: usize,
}

impl WeightShifted {
    /// Whether the weight gradient of `p` can run from padded planes: a spatial kernel,
    /// dilation 1.
    fn possible(p: &Conv2dParams) -> bool {
        p.dilation_h == 1 && p.dilation_w == 1 && p.kernel_h * p.kernel_w > 1
    }

    /// Whether the rules take the planes where [`possible`](Self::possible).
    fn pays(p: &Conv2dParams, (_oh, ow): (usize, usize)) -> bool {
        let (sh, sw) = (p.stride_h, p.stride_w);
        let wq = (p.in_w + p.pad_left + p.pad_right).div_ceil(sw);
        let wide = p.out_per_group() > if sh * sw == 1 { 128 } else { 256 };
        // At stride 1 with more than 128 output channels per group, the GEMM is long enough
        // that the lowering is a small part of the work and the throwaway columns cost more
        // than it (conv_bench stride1, batch 8: 3x3 256->512 @28 441 -> 390 GFLOP/s, 512->512
        // @14 430 -> 365, 256->256 @14 395 -> 385; against 128->32 @14 176 -> 287, @28 230 ->
        // 312, 64->64 @56 325 -> 351, 128->128 @28 360 -> 383, 96->128 @28 345 -> 378).
        // Strided, the lowering gathers one float at a time and costs more: the planes win up
        // to 256 channels (losers, batch 8: 3x3 s2 64->128 @56 270 -> 307, 128->128 @56 274 ->
        // 307, 256->256 @28 341 -> 355, 7x7 s2 3->64 166 -> 217, 11x11 s4 3->64 201 -> 296;
        // 512->512 @14 357 -> 337 stays with the lowering). Past a quarter of throwaway
        // columns (kernels wider than a third of the row: 5x5 on 7x7 maps), the per-run
        // lowering stays too; below that it costs more than they do (3x3 128->32 @7, 2 of 9
        // columns thrown away: 93 -> 120 GFLOP/s).
        !wide && (wq - ow) * 4 <= wq
    }

    /// The planes' geometry for `p`, where [`possible`](Self::possible) and their scratch is
    /// bounded.
    fn new(p: &Conv2dParams, (oh, ow): (usize, usize)) -> Option<WeightShifted> {
        let (sh, sw) = (p.stride_h, p.stride_w);
        let wp = p.in_w + p.pad_left + p.pad_right;
        let wq = wp.div_ceil(sw);
        let kg = p.in_per_group() * p.kernel_h * p.kernel_w;
        debug_assert!(Self::possible(p) && wq >= ow);
        let per_item = oh * wq;
        let (rows, items) = if per_item >= MIN_BLOCK_WEIGHT {
            (MIN_BLOCK_WEIGHT.div_ceil(wq).min(oh), 1)
        } else {
            // At least two units per thread where the batch allows, so they run on their own
            // threads with private sums rather than in turn with tiny multithreaded GEMMs
            // (128->32 @7 at batch 8: 120 -> 196 GFLOP/s).
            let threads = rayon::current_num_threads();
            let items = MIN_BLOCK_WEIGHT
                .div_ceil(per_item)
                .min(p.batch.div_ceil(2 * threads))
                .max(1);
            (oh, items)
        };
        let s = WeightShifted {
            wq,
            oh,
            ow,
            cig: p.in_per_group(),
            cog: p.out_per_group(),
            kg,
            rows,
            blocks: oh.div_ceil(rows),
            items,
            item_groups: p.batch.div_ceil(items),
        };
        let planes = p.in_per_group() * items * sh * sw * s.span(p, rows);
        if planes > MAX_SCRATCH || kg.checked_mul(NR).is_none_or(|v| v > MAX_SCRATCH) {
            return None;
        }
        Some(s)
    }

    /// Floats per phase plane of a block of `nrows` output rows: the rows its shifts reach,
    /// and the last shift's overhang past them.
    fn span(&self, p: &Conv2dParams, nrows: usize) -> usize {
        (nrows + (p.kernel_h - 1) / p.stride_h) * self.wq + (p.kernel_w - 1) / p.stride_w + 1
    }

    /// `dw = beta * dw + this unit's share`, for every group; unit `u` is (item group, row
    /// block).
    #[allow(clippy::too_many_arguments)]
    fn unit(
        &self,
        p: &Conv2dParams,
        input: &[f32],
        grad_out: &[f32],
        u: usize,
        beta: f32,
        dw: &mut [f32],
        par: bool,
    ) {
        let (ig, b) = (u / self.blocks, u % self.blocks);
        let n0 = ig * self.items;
        let items = n0..(n0 + self.items).min(p.batch);
        let oy0 = b * self.rows;
        let nrows = self.rows.min(self.oh - oy0);
        let (wq, kh, kw, sh, sw) = (self.wq, p.kernel_h, p.kernel_w, p.stride_h, p.stride_w);
        // Positions per item (its K share), and each channel's phase planes.
        let len = nrows * wq;
        let cols = items.len() * len;
        let span = self.span(p, nrows);
        let per_channel = sh * sw * span;
        let (in_plane, ohw) = (p.in_h * p.in_w, self.oh * self.ow);
        let taps = kh * kw;
        for (gi, dwg) in dw.chunks_exact_mut(self.cog * self.kg).enumerate() {
            with_scratch(
                items.len() * self.cig * per_channel + self.cog * cols,
                |buf| {
                    let (xp, dyw) = buf.split_at_mut(items.len() * self.cig * per_channel);
                    xp.fill(0.0);
                    for (t, n) in items.clone().enumerate() {
                        let x = &input[(n * p.in_channels + gi * self.cig) * in_plane..];
                        let chans = xp[t * self.cig * per_channel..].chunks_exact_mut(per_channel);
                        for (plane, dst) in x.chunks_exact(in_plane).zip(chans) {
                            self.fill_phases(p, plane, oy0, nrows, span, dst);
                        }
                    }
                    dyw.fill(0.0);
                    for r in 0..self.cog {
                        let oc = gi * self.cog + r;
                        for (t, n) in items.clone().enumerate() {
                            let dy = &grad_out[(n * p.out_channels + oc) * ohw + oy0 * self.ow..];
                            for y in 0..nrows {
                                dyw[r * cols + t * len + y * wq..][..self.ow]
                                    .copy_from_slice(&dy[y * self.ow..][..self.ow]);
                            }
                        }
                    }
                    let xp = &*xp;
                    // Where lowered row r of item t starts: its phase plane, shifted.
                    let row = |t: usize, r: usize| {
                        let (c, ky, kx) = (r / taps, (r % taps) / kw, r % kw);
                        let phase = (ky % sh) * sw + kx % sw;
                        let at = (t * self.cig + c) * per_channel + phase * span;
                        &xp[at + (ky / sh) * wq + kx / sw..][..len]
                    };
                    let pack = |q: usize, d: &mut [f32]| {
                        let r0 = q * NR;
                        let nr = NR.min(self.kg - r0);
                        for t in 0..items.len() {
                            let rows: [&[f32]; NR] =
                                std::array::from_fn(|j| row(t, r0 + j.min(nr - 1)));
                            gemm::pack_b_panel_rows(&mut d[t * len * NR..], &rows[..nr], len);
                        }
                    };
                    let dy = Mat::new(dyw, cols, false);
                    let shape = (self.cog, self.kg, cols);
                    chunked_product(shape, dy, beta, dwg, par, |panels, chunk| {
                        if par {
                            chunk
                                .par_chunks_mut(cols * NR)
                                .enumerate()
                                .for_each(|(i, d)| pack(panels.start + i, d));
                        } else {
                            for (i, d) in chunk.chunks_mut(cols * NR).enumerate() {
                                pack(panels.start + i, d);
                            }
                        }
                    });
                },
            );
        }
    }

    /// One channel's phase planes for output rows `oy0..oy0 + nrows` into `dst` (zeroed, `sh *
    /// sw` planes of `span` floats): plane `(py, px)` at `(u, v)` holds the input at padded
    /// `((oy0 + u) * sh + py, v * sw + px)`, zero in the padding.
    fn fill_phases(
        &self,
        p: &Conv2dParams,
        plane: &[f32],
        oy0: usize,
        nrows: usize,
        span: usize,
        dst: &mut [f32],
    ) {
        let (sh, sw) = (p.stride_h, p.stride_w);
        let urows = nrows + (p.kernel_h - 1) / sh;
        for (ph, d) in dst.chunks_exact_mut(span).enumerate() {
            let (py, px) = (ph / sw, ph % sw);
            // Columns v whose padded column v * sw + px holds input column v * sw + px - pl.
            let (vlo, vhi) = valid_range(self.wq, p.in_w, sw, px, p.pad_left);
            for u in 0..urows {
                let y = (oy0 + u) * sh + py;
                if y < p.pad_top || y - p.pad_top >= p.in_h || vlo >= vhi {
                    continue;
                }
                let src = &plane[(y - p.pad_top) * p.in_w + vlo * sw + px - p.pad_left..];
                let to = &mut d[u * self.wq + vlo..u * self.wq + vhi];
                if sw == 1 {
                    to.copy_from_slice(&src[..to.len()]);
                } else {
                    for (d, &v) in to.iter_mut().zip(src.iter().step_by(sw)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// grad_bias[oc] = sum of grad_out over items and positions (f64 accumulation: the sums can be
/// long).
pub(super) fn bias_grad(p: &Conv2dParams, ohw: usize, grad_out: &[f32], gb: &mut [f32]) {
    gb.par_iter_mut().enumerate().for_each(|(oc, out)| {
        let s: f64 = (0..p.batch)
            .map(|n| {
                grad_out[(n * p.out_channels + oc) * ohw..][..ohw]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>()
            })
            .sum();
        *out = s as f32;
    });
}
