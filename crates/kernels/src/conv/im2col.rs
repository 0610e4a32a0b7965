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
//! Backward: `grad_input = col2im(W_g^T * grad_out)`, `grad_weight = sum over items of
//! grad_out * col^T`, `grad_bias = sum of grad_out over items and positions`.
use super::Conv2dParams;
use crate::gemm::{self, Lhs, PackedA, Rhs, NR};
use rayon::prelude::*;
use std::cell::Cell;
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

thread_local! {
    // Lowered-column scratch reused by every block run on this thread. Taken out while in use,
    // so a nested use on the same thread (rayon work stealing) just allocates its own.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    SCRATCH.set(buf);
    r
}

/// Base pointer of an output that parallel tasks write in disjoint, interleaved tiles.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every task writes only its own (item, group, block) tile; the buffer outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `off` must lie inside the output buffer.
    unsafe fn at(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// Sizes shared by the three passes.
#[derive(Clone, Copy)]
struct Geom {
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
    /// 1x1, stride 1, no padding: the input plane is the lowered matrix.
    pointwise: bool,
}

impl Geom {
    fn new(p: &Conv2dParams, (oh, ow): (usize, usize), min_block: usize) -> Geom {
        let kg = p.in_per_group() * p.kernel_h * p.kernel_w;
        let ohw = oh * ow;
        // Past the minimum block, only a gigantic kg could blow the scratch up: cap it there.
        let nb = ((COL_BUDGET / kg) / NR * NR)
            .max(min_block)
            .min(MAX_SCRATCH / kg)
            .clamp(1, ohw);
        Geom {
            ohw,
            ow,
            in_plane: p.in_h * p.in_w,
            cig: p.in_per_group(),
            cog: p.out_per_group(),
            kg,
            nb,
            blocks: ohw.div_ceil(nb),
            pointwise: p.kernel_h == 1
                && p.kernel_w == 1
                && p.stride_h == 1
                && p.stride_w == 1
                && p.pad_top + p.pad_bottom + p.pad_left + p.pad_right == 0,
        }
    }

    /// First output position and length of block `b`.
    fn block(&self, b: usize) -> (usize, usize) {
        let j0 = b * self.nb;
        (j0, self.nb.min(self.ohw - j0))
    }
}

/// One run of a lowered row: `len` consecutive output positions of one output row, starting at
/// block column `col`. Positions `lo..hi` of the run read the input plane of channel `icg` at
/// `src + (t - lo) * stride_w`; the rest fall in the padding.
struct Run {
    row: usize,
    icg: usize,
    col: usize,
    len: usize,
    taps: Option<(usize, usize, usize)>,
}

/// Enumerates, for channels `icgs` and block positions `j0..j0+nb`, every run of every lowered
/// row `(icg, ky, kx)`. Bounds are worked out per run, so the per-element work is a copy.
fn for_each_run(
    p: &Conv2dParams,
    g: &Geom,
    icgs: Range<usize>,
    j0: usize,
    nb: usize,
    mut f: impl FnMut(Run),
) {
    for icg in icgs {
        for ky in 0..p.kernel_h {
            for kx in 0..p.kernel_w {
                let row = (icg * p.kernel_h + ky) * p.kernel_w + kx;
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
                        row,
                        icg,
                        col: j - j0,
                        len,
                        taps,
                    });
                    j += len;
                }
            }
        }
    }
}

/// Output columns `lo..hi` whose input column `ox * stride + off - pad` lies in `0..in_len`.
fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    off: usize,
    pad: usize,
) -> (usize, usize) {
    let lo = if pad > off {
        (pad - off).div_ceil(stride)
    } else {
        0
    };
    let hi = if in_len + pad > off {
        (in_len + pad - off).div_ceil(stride)
    } else {
        0
    };
    let lo = lo.min(out_len);
    (lo, hi.min(out_len).max(lo))
}

/// Writes one run of a lowered row into `dst` (`run.len` floats): input taps, 0 in the padding.
fn lower_run(dst: &mut [f32], r: &Run, x: &[f32], g: &Geom, stride_w: usize) {
    match r.taps {
        None => dst.fill(0.0),
        Some((src, lo, hi)) => {
            dst[..lo].fill(0.0);
            dst[hi..].fill(0.0);
            let plane = &x[r.icg * g.in_plane..][..g.in_plane];
            let dst = &mut dst[lo..hi];
            if stride_w == 1 {
                dst.copy_from_slice(&plane[src..src + dst.len()]);
            } else {
                for (d, &v) in dst.iter_mut().zip(plane[src..].iter().step_by(stride_w)) {
                    *d = v;
                }
            }
        }
    }
}

/// col[row][t] = input tap of block position j0 + t (0 in the padding); `col` is kg x nb.
fn im2col_block(p: &Conv2dParams, g: &Geom, x: &[f32], j0: usize, nb: usize, col: &mut [f32]) {
    for_each_run(p, g, 0..g.cig, j0, nb, |r| {
        lower_run(
            &mut col[r.row * nb + r.col..][..r.len],
            &r,
            x,
            g,
            p.stride_w,
        );
    });
}

/// Lowers block positions j0..j0+nb straight into the GEMM's packed-B layout (panel-major,
/// `[panel][kg][NR]`, see `gemm::gemm_raw_packed_b`), so the GEMM need not copy it again. Each
/// lowered row is built in `row` (round_up(nb, NR) floats, stays in L1) and then dealt out to
/// the panels in NR-float pieces.
fn im2col_packed(
    p: &Conv2dParams,
    g: &Geom,
    x: &[f32],
    j0: usize,
    nb: usize,
    dst: &mut [f32],
    row: &mut [f32],
) {
    fn deal(row: &[f32], r: usize, kg: usize, dst: &mut [f32]) {
        for (q, piece) in row.chunks_exact(NR).enumerate() {
            gemm::copy_panel_row(&mut dst[(q * kg + r) * NR..][..NR], piece);
        }
    }
    // Runs never reach past nb: the tail of the last panel stays zero.
    row[nb..].fill(0.0);
    let mut current = None;
    for_each_run(p, g, 0..g.cig, j0, nb, |r| {
        if current != Some(r.row) {
            if let Some(done) = current {
                deal(row, done, g.kg, dst);
            }
            current = Some(r.row);
        }
        lower_run(&mut row[r.col..r.col + r.len], &r, x, g, p.stride_w);
    });
    if let Some(done) = current {
        deal(row, done, g.kg, dst);
    }
}

/// dx[icg] += the lowered gradient rows of channel icg (the adjoint of [`im2col_block`]);
/// `dx` holds the cig planes of one (item, group). Planes are independent, so `par` splits
/// them over the pool.
fn col2im_add(
    p: &Conv2dParams,
    g: &Geom,
    dcol: &[f32],
    j0: usize,
    nb: usize,
    dx: &mut [f32],
    par: bool,
) {
    let sw = p.stride_w;
    let plane = |(icg, dxp): (usize, &mut [f32])| {
        for_each_run(p, g, icg..icg + 1, j0, nb, |r| {
            if let Some((src, lo, hi)) = r.taps {
                let s = &dcol[r.row * nb + r.col + lo..][..hi - lo];
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
    };
    if par {
        dx.par_chunks_mut(g.in_plane).enumerate().for_each(plane);
    } else {
        dx.chunks_mut(g.in_plane).enumerate().for_each(plane);
    }
}

/// Whether `tasks` independent pieces are enough to spread over the pool (each then runs a
/// single-threaded GEMM) rather than running them in turn with multithreaded GEMMs.
fn enough_tasks(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks >= 2 * threads
}

pub fn forward(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    let g = Geom::new(p, out_hw, MIN_BLOCK);
    let packed: Vec<PackedA> = weight
        .chunks_exact(g.cog * g.kg)
        .map(|w| PackedA::new(false, g.cog, g.kg, w, g.kg, false))
        .collect();
    let tasks = p.batch * p.groups * g.blocks;
    let out = SharedOut(output.as_mut_ptr());
    let task = |t: usize, par: bool| {
        let (b, gi, n) = (
            t % g.blocks,
            (t / g.blocks) % p.groups,
            t / (g.blocks * p.groups),
        );
        let (j0, nb) = g.block(b);
        let x = &input[(n * p.in_channels + gi * g.cig) * g.in_plane..][..g.cig * g.in_plane];
        let lhs = || Lhs::Packed(&packed[gi]);
        // SAFETY: the tile (cog rows of nb positions, row stride ohw) of output channel block
        // gi of item n is inside `output` and written by this task alone.
        unsafe {
            let c = out.at((n * p.out_channels + gi * g.cog) * g.ohw + j0);
            if g.pointwise {
                let rhs = Rhs {
                    data: &x[j0..],
                    ld: g.ohw,
                    trans: false,
                };
                gemm::gemm_raw(g.cog, nb, g.kg, 1.0, lhs(), rhs, 0.0, c, g.ohw, par);
            } else {
                let packed_len = gemm::packed_b_len(g.kg, nb);
                let row_len = nb.next_multiple_of(NR);
                with_scratch(packed_len + row_len, |buf| {
                    let (col, row) = buf.split_at_mut(packed_len);
                    im2col_packed(p, &g, x, j0, nb, col, row);
                    gemm::gemm_raw_packed_b(g.cog, nb, g.kg, 1.0, lhs(), col, 0.0, c, g.ohw, par);
                });
            }
            if let Some(bias) = bias {
                for (r, &bv) in bias[gi * g.cog..(gi + 1) * g.cog].iter().enumerate() {
                    let row = std::slice::from_raw_parts_mut(c.add(r * g.ohw), nb);
                    row.iter_mut().for_each(|v| *v += bv);
                }
            }
        }
    };
    if enough_tasks(tasks) {
        (0..tasks).into_par_iter().for_each(|t| task(t, false));
    } else {
        let par = gemm::want_parallel(g.cog, g.nb, g.kg);
        (0..tasks).for_each(|t| task(t, par));
    }
}

pub fn backward_data(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let g = Geom::new(p, out_hw, MIN_BLOCK);
    // W_g^T (kg x cog), packed once and shared by every item and block.
    let packed: Vec<PackedA> = weight
        .chunks_exact(g.cog * g.kg)
        .map(|w| PackedA::new(true, g.kg, g.cog, w, g.kg, false))
        .collect();
    let item = |t: usize, dx: &mut [f32], par: bool| {
        let (n, gi) = (t / p.groups, t % p.groups);
        let dy = &grad_out[(n * p.out_channels + gi * g.cog) * g.ohw..][..g.cog * g.ohw];
        let lhs = || Lhs::Packed(&packed[gi]);
        if g.pointwise {
            let rhs = Rhs {
                data: dy,
                ld: g.ohw,
                trans: false,
            };
            gemm::gemm(g.kg, g.ohw, g.cog, 1.0, lhs(), rhs, 0.0, dx, g.ohw, par);
            return;
        }
        dx.fill(0.0);
        for b in 0..g.blocks {
            let (j0, nb) = g.block(b);
            with_scratch(g.kg * nb, |dcol| {
                let rhs = Rhs {
                    data: &dy[j0..],
                    ld: g.ohw,
                    trans: false,
                };
                gemm::gemm(g.kg, nb, g.cog, 1.0, lhs(), rhs, 0.0, dcol, nb, par);
                col2im_add(p, &g, dcol, j0, nb, dx, par);
            });
        }
    };
    // Items (n, group) own disjoint slices of grad_input, so they parallelise without sharing.
    let chunks = grad_input.chunks_mut(g.cig * g.in_plane);
    if enough_tasks(p.batch * p.groups) {
        chunks
            .collect::<Vec<_>>()
            .into_par_iter()
            .enumerate()
            .for_each(|(t, dx)| item(t, dx, false));
    } else {
        let par = gemm::want_parallel(g.kg, g.nb, g.cog);
        chunks.enumerate().for_each(|(t, dx)| item(t, dx, par));
    }
}

pub fn backward_weight(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    let g = Geom::new(p, out_hw, MIN_BLOCK_WEIGHT);
    // dW_g = sum over (item, block) of dY_g[:, block] * col_block^T; `units` indexes the
    // (item, block) pairs, the first one of a range overwrites `dw`, the rest accumulate.
    let accumulate = |dw: &mut [f32], units: Range<usize>, par: bool| {
        for (i, u) in units.enumerate() {
            let (n, b) = (u / g.blocks, u % g.blocks);
            let (j0, nb) = g.block(b);
            let beta = if i == 0 { 0.0 } else { 1.0 };
            for (gi, dwg) in dw.chunks_exact_mut(g.cog * g.kg).enumerate() {
                let dy = &grad_out[(n * p.out_channels + gi * g.cog) * g.ohw..][..g.cog * g.ohw];
                let x =
                    &input[(n * p.in_channels + gi * g.cig) * g.in_plane..][..g.cig * g.in_plane];
                let lhs = Lhs::Raw {
                    data: &dy[j0..],
                    ld: g.ohw,
                    trans: false,
                };
                if g.pointwise {
                    let rhs = Rhs {
                        data: &x[j0..],
                        ld: g.ohw,
                        trans: true,
                    };
                    gemm::gemm(g.cog, g.kg, nb, 1.0, lhs, rhs, beta, dwg, g.kg, par);
                } else {
                    with_scratch(g.kg * nb, |col| {
                        im2col_block(p, &g, x, j0, nb, col);
                        let rhs = Rhs {
                            data: col,
                            ld: nb,
                            trans: true,
                        };
                        gemm::gemm(g.cog, g.kg, nb, 1.0, lhs, rhs, beta, dwg, g.kg, par);
                    });
                }
            }
        }
    };
    let units = p.batch * g.blocks;
    let wlen = grad_weight.len();
    let threads = rayon::current_num_threads();
    if enough_tasks(units) {
        // Contiguous ranges of units per thread; the first writes grad_weight directly, the
        // others private partial sums added at the end.
        let ranges: Vec<Range<usize>> = (0..threads)
            .map(|t| units * t / threads..units * (t + 1) / threads)
            .collect();
        let partials: Vec<Vec<f32>> = rayon::join(
            || accumulate(grad_weight, ranges[0].clone(), false),
            || {
                ranges[1..]
                    .par_iter()
                    .map(|r| {
                        let mut dw = vec![0.0; wlen];
                        accumulate(&mut dw, r.clone(), false);
                        dw
                    })
                    .collect()
            },
        )
        .1;
        for part in &partials {
            grad_weight
                .par_chunks_mut(4096)
                .zip(part.par_chunks(4096))
                .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
        }
    } else {
        let par = gemm::want_parallel(g.cog, g.kg, g.nb);
        accumulate(grad_weight, 0..units, par);
    }
    if let Some(gb) = grad_bias {
        bias_grad(p, g.ohw, grad_out, gb);
    }
}

/// grad_bias[oc] = sum of grad_out over items and positions (f64 accumulation: the sums can be
/// long).
fn bias_grad(p: &Conv2dParams, ohw: usize, grad_out: &[f32], gb: &mut [f32]) {
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
