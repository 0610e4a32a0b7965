//! FFT convolution, forward and backward. Pays off for large kernels at stride 1, where direct
//! summation costs `kh * kw` multiply-adds per output and the FFT roughly a constant number per
//! output whatever the kernel size.
//!
//! Planes are cut into overlap-save tiles: each tile of outputs reads a window of the padded
//! input, `(tile - 1) * stride + dilation * (k - 1) + 1` long per axis, and that window is placed
//! in an `fh x fw` grid at least that large, so the circular products never wrap onto positions
//! that are read back. Per tile:
//! - forward: `y = corr(x_win, w_dil)`, i.e. `Y = X * conj(W)` summed over input channels, read
//!   at the strided positions `(oy * sh, ox * sw)`;
//! - backward data: `dx_win = conv(dz, w_dil)` with `dz` the tile's output gradient spread to the
//!   strided positions, i.e. `DX = DZ * W` summed over output channels, added into the window
//!   (windows of neighbouring tiles overlap: overlap-add);
//! - backward weight: `dw = corr(x_win, dz)`, i.e. `DW = X * conj(DZ)` summed over batch items
//!   and tiles, read at the dilated tap positions.
//!
//! Small grids keep the transformed weights (one spectrum per (out, in) channel pair) small
//! enough to stay in cache; large grids transform fewer, larger tiles. [`Layout::new`] picks the
//! grid with a cost model. The pointwise sums are small complex matrix products per frequency bin
//! (`fft/cgemm.rs`).
//!
//! Memory is bounded by working through the batch in chunks and the output channels in blocks:
//! the spectra of one batch chunk's inputs (or input gradients) stay resident while weight and
//! output spectra are made block by block. Weights are transformed once per call unless the batch
//! has to be split to stay within the budget (then once per batch chunk).
//!
//! Accuracy: FFT rounding is spread over a whole tile, so the error is about 1e-7 of the largest
//! values involved rather than of each output; `tests/conv_fft.rs` measures it.
use super::Conv2dParams;
use super::{BackwardData, BackwardWeight, Forward};
use rayon::prelude::*;

mod cgemm;
mod plan;

use cgemm::{Part, Planes, Product, Spectra, SpectraOut};
use plan::{gather, Axis, Placement, Plan2d, TileMajorMut};

/// Bytes of spectra kept for one batch chunk (inputs or input gradients, all channels).
const CHUNK_BUDGET: usize = 48 << 20;
/// Bytes of spectra made per output-channel block (weights plus per-item outputs).
const BLOCK_BUDGET: usize = 16 << 20;
/// Cost model, in units of one complex multiply-add of the pointwise products: transforming one
/// grid element (forward or inverse, including the layout shuffles), and keeping one weight
/// spectrum bin (written once, streamed once; weight spectra are the largest buffers).
const FFT_COST: f64 = 16.0;
const WEIGHT_BIN_COST: f64 = 16.0;
/// Extra transform cost of a grid side with a factor 3 (rustfft's radix-3 passes are slower per
/// element than its radix-2 ones; see `bench/results/auto-rules.md`).
const RADIX3_PENALTY: f64 = 1.2;

/// Spectra buffers run to tens of megabytes. Fresh ones cost page faults and zeroing by the OS on
/// every call (a fifth of the time of a typical layer), so a few are kept for the next call.
/// Their contents are stale: every user writes what it reads (or zeroes it first).
struct Scratch(Vec<f32>);

const CACHED_BUFFERS: usize = 3;
static CACHE: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

impl Scratch {
    fn new(len: usize) -> Scratch {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest cached buffer that is large enough, else the largest (it grows).
        let pick = cache
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .or_else(|| cache.iter().enumerate().max_by_key(|(_, v)| v.capacity()))
            .map(|(i, _)| i);
        let mut v = pick.map(|i| cache.swap_remove(i)).unwrap_or_default();
        drop(cache);
        if v.len() < len {
            crate::scratch::grow(&mut v, len);
        } else {
            v.truncate(len);
        }
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() * 4 <= crate::scratch::RETAIN_BYTES {
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() < CACHED_BUFFERS {
                cache.push(v);
            }
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// Overlap-save tiling of one spatial axis.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// Grid length.
    grid: usize,
    /// Outputs per tile (the last tile may have fewer).
    tile: usize,
    /// Number of tiles.
    count: usize,
    out: usize,
    input: usize,
    stride: usize,
    dilation: usize,
    kernel: usize,
    pad: usize,
}

impl Tiling {
    /// `None` when the grid cannot hold one dilated kernel.
    #[allow(clippy::too_many_arguments)]
    fn new(
        grid: usize,
        out: usize,
        input: usize,
        stride: usize,
        dilation: usize,
        kernel: usize,
        pad: usize,
    ) -> Option<Tiling> {
        let span = dilation * (kernel - 1) + 1;
        if grid < span {
            return None;
        }
        let tile = ((grid - span) / stride + 1).min(out);
        Some(Tiling {
            grid,
            tile,
            count: out.div_ceil(tile),
            out,
            input,
            stride,
            dilation,
            kernel,
            pad,
        })
    }

    /// First output and number of outputs of tile `t`.
    fn outputs(&self, t: usize) -> (usize, usize) {
        let o0 = t * self.tile;
        (o0, self.tile.min(self.out - o0))
    }

    /// The input window tile `t` reads: the real input elements in it and where they land.
    fn input_axis(&self, t: usize) -> Axis {
        let (o0, n) = self.outputs(t);
        let used = (n - 1) * self.stride + self.dilation * (self.kernel - 1) + 1;
        // Window in padded coordinates is [o0 * stride, o0 * stride + used).
        let start = o0 * self.stride;
        let end = start + used;
        let src0 = start.max(self.pad) - self.pad;
        let src_end = (end.max(self.pad) - self.pad).min(self.input);
        if src_end <= src0 {
            // The whole window lies in the padding: no input element is read or written. Its
            // offsets would point past the grid and the input (a window left of the input has
            // grid0 > grid; one right of it has src0 > input), so none are given.
            return Axis {
                src0: 0,
                count: 0,
                grid0: 0,
                step: 1,
            };
        }
        Axis {
            src0,
            count: src_end - src0,
            grid0: (src0 + self.pad) - start,
            step: 1,
        }
    }

    /// Tile `t`'s output gradient, spread to the strided positions.
    fn grad_out_axis(&self, t: usize) -> Axis {
        let (o0, n) = self.outputs(t);
        Axis {
            src0: o0,
            count: n,
            grid0: 0,
            step: self.stride,
        }
    }

    fn weight_axis(&self) -> Axis {
        Axis {
            src0: 0,
            count: self.kernel,
            grid0: 0,
            step: self.dilation,
        }
    }
}

/// Lengths 2^a 3^b from `good_size(lo)` up to `good_size(hi)`.
fn grid_candidates(lo: usize, hi: usize, even: bool) -> Vec<usize> {
    let first = plan::good_size(lo, even);
    let last = plan::good_size(hi, even).max(first);
    let mut out = Vec::new();
    let mut m = first;
    while m <= last {
        out.push(m);
        m = plan::good_size(m + 1, even);
    }
    out
}

/// Grid, tiling and blocking for one call.
struct Layout {
    plan: std::sync::Arc<Plan2d>,
    th: Tiling,
    tw: Tiling,
    /// Tiles per plane.
    tiles: usize,
    /// Items per batch chunk.
    nb: usize,
    /// Output channels per block.
    ob: usize,
}

impl Layout {
    fn new(p: &Conv2dParams, (oh, ow): (usize, usize)) -> Layout {
        let axis_h = |g| {
            Tiling::new(
                g,
                oh,
                p.in_h,
                p.stride_h,
                p.dilation_h,
                p.kernel_h,
                p.pad_top,
            )
        };
        let axis_w = |g| {
            Tiling::new(
                g,
                ow,
                p.in_w,
                p.stride_w,
                p.dilation_w,
                p.kernel_w,
                p.pad_left,
            )
        };
        let span_h = p.dilation_h * (p.kernel_h - 1) + 1;
        let span_w = p.dilation_w * (p.kernel_w - 1) + 1;
        let full_h = (oh - 1) * p.stride_h + span_h;
        let full_w = (ow - 1) * p.stride_w + span_w;
        let (n, c, oc) = (p.batch as f64, p.in_channels as f64, p.out_channels as f64);
        let pairs = (p.out_channels * p.in_per_group()) as f64;
        let mut best: Option<(f64, Tiling, Tiling)> = None;
        for gh in grid_candidates(span_h, full_h, false) {
            for gw in grid_candidates(span_w, full_w, true) {
                let (Some(th), Some(tw)) = (axis_h(gh), axis_w(gw)) else {
                    continue;
                };
                let tiles = (th.count * tw.count) as f64;
                let bins = (gh * (gw / 2 + 1)) as f64;
                let mut grid = (gh * gw) as f64;
                // rustfft's radix-3 passes run slower per element than its radix-2 ones.
                for g in [gh, gw] {
                    if g % 3 == 0 {
                        grid *= RADIX3_PENALTY;
                    }
                }
                let cost = n * tiles * bins * pairs
                    + FFT_COST * grid * (n * tiles * (c + oc) + pairs)
                    + WEIGHT_BIN_COST * bins * pairs;
                if best.as_ref().is_none_or(|b| cost < b.0) {
                    best = Some((cost, th, tw));
                }
            }
        }
        // The full grid is always a candidate (it holds every window), so `best` is set; the
        // fallback only keeps this free of panics.
        let (th, tw) = match best {
            Some((_, th, tw)) => (th, tw),
            None => {
                let gh = plan::good_size(full_h, false);
                let gw = plan::good_size(full_w, true);
                let tiling = |g, out, input, s, d, k, pad| Tiling {
                    grid: g,
                    tile: out,
                    count: 1,
                    out,
                    input,
                    stride: s,
                    dilation: d,
                    kernel: k,
                    pad,
                };
                (
                    tiling(
                        gh,
                        oh,
                        p.in_h,
                        p.stride_h,
                        p.dilation_h,
                        p.kernel_h,
                        p.pad_top,
                    ),
                    tiling(
                        gw,
                        ow,
                        p.in_w,
                        p.stride_w,
                        p.dilation_w,
                        p.kernel_w,
                        p.pad_left,
                    ),
                )
            }
        };
        let plan = plan::plan(th.grid, tw.grid);
        let tiles = th.count * tw.count;
        let plane_bytes = plan.buffer_len(1) * 4;
        let nb = (CHUNK_BUDGET / (tiles * p.in_channels * plane_bytes).max(1)).clamp(1, p.batch);
        let ob = (BLOCK_BUDGET / ((nb * tiles + p.in_per_group()) * plane_bytes).max(1))
            .clamp(1, p.out_channels);
        Layout {
            plan,
            th,
            tw,
            tiles,
            nb,
            ob,
        }
    }

    /// Tile `t`'s (row, column) tile indices.
    fn tile_yx(&self, t: usize) -> (usize, usize) {
        (t / self.tw.count, t % self.tw.count)
    }

    fn input_at(&self, p: &Conv2dParams, t: usize) -> Placement {
        let (ty, tx) = self.tile_yx(t);
        Placement {
            src_w: p.in_w,
            rows: self.th.input_axis(ty),
            cols: self.tw.input_axis(tx),
        }
    }

    fn grad_out_at(&self, ow: usize, t: usize) -> Placement {
        let (ty, tx) = self.tile_yx(t);
        Placement {
            src_w: ow,
            rows: self.th.grad_out_axis(ty),
            cols: self.tw.grad_out_axis(tx),
        }
    }

    fn weight_at(&self, p: &Conv2dParams) -> Placement {
        Placement {
            src_w: p.kernel_w,
            rows: self.th.weight_axis(),
            cols: self.tw.weight_axis(),
        }
    }

    /// `1 / (fh * fw)`: rustfft's inverse is unnormalised.
    fn scale(&self) -> f32 {
        1.0 / (self.plan.fh * self.plan.fw) as f32
    }
}

/// Whether the FFT measured faster than direct summation for this shape
/// (`bench/results/auto-rules.md`): stride 1, no dilation, at least 32 input and 32 output
/// channels per group, and either a kernel of 25 or more taps or a 3x3 kernel with 256+
/// channels per group on a 28x28 or larger output. Strided, depthwise and narrow layers lose:
/// the transforms cost more than the products save. For dense 3x3 layers compare with im2col +
/// GEMM too, which this does not know about.
pub fn pays_off(p: &Conv2dParams) -> bool {
    let Ok((oh, ow)) = p.validate() else {
        return false;
    };
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let taps = p.kernel_h * p.kernel_w;
    let unit = p.stride_h == 1 && p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1;
    unit && cig >= 32
        && cog >= 32
        && (taps >= 25 || (taps >= 9 && cig >= 256 && cog >= 256 && oh * ow >= 28 * 28))
}

/// Whether `ConvAlgo::Auto` should pick the FFT over im2col + GEMM for this pass, from the
/// measurements in `bench/results/auto-rules.md`: [`pays_off`]'s 5x5-and-up case, dense, batch 8
/// or more (below that the weight spectra, one per (in, out) pair, are not shared over enough
/// items), and for the backward passes a 24x24 or larger output (a 14x14 layer lost). 3x3
/// kernels are left to Winograd and im2col.
pub fn beats_im2col(p: &Conv2dParams, pass: super::ConvPass) -> bool {
    let Ok((oh, ow)) = p.validate() else {
        return false;
    };
    pays_off(p)
        && p.kernel_h * p.kernel_w >= 25
        && p.groups == 1
        && p.batch >= 8
        && (pass == super::ConvPass::Forward || oh * ow >= 24 * 24)
}

/// The FFT grid `(fh, fw)` and the number of overlap-save tiles `(rows, cols)` used for this
/// shape. For tests and benchmarks that need to know which code paths a shape exercises.
#[doc(hidden)]
pub fn grid_for(p: &Conv2dParams) -> Option<((usize, usize), (usize, usize))> {
    let out_hw = p.validate().ok()?;
    let lay = Layout::new(p, out_hw);
    Some(((lay.th.grid, lay.tw.grid), (lay.th.count, lay.tw.count)))
}

/// Fills the tile-major buffer `spec` with `planes` spectra; `source(i)` gives plane `i`'s source
/// plane and placement. Tasks transform runs of consecutive planes (see `Plan2d::group`).
fn transform_set<'s>(
    plan: &Plan2d,
    spec: &mut [f32],
    planes: usize,
    source: impl Fn(usize) -> (&'s [f32], Placement) + Sync,
) {
    let (group, bins) = (plan.group, plan.bins);
    let out = TileMajorMut::new(spec, planes, plan.tiles);
    (0..planes.div_ceil(group)).into_par_iter().for_each_init(
        || plan.task_buffers(),
        |(w, buf), gi| {
            let p0 = gi * group;
            let count = group.min(planes - p0);
            for (g, cols) in buf[..count * bins].chunks_exact_mut(bins).enumerate() {
                let (src, at) = source(p0 + g);
                plan.forward(w, src, at, cols);
            }
            // SAFETY: each run of planes is visited by exactly one task.
            unsafe { out.write(p0, count, buf, bins) };
        },
    );
}

/// Inverse-transforms spectra into the planes of `out` (`plane_len` floats each): for output
/// plane `q` and tile `t`, spectrum `first(t) + q` of `spec` (holding `spec_planes`) is turned
/// back into grid rows `rows(t)` and handed to `emit(q, t, out_plane, i, row)` for the `i`-th
/// requested row. Tasks own runs of consecutive output planes.
#[allow(clippy::too_many_arguments)]
fn inverse_set(
    plan: &Plan2d,
    spec: &[f32],
    spec_planes: usize,
    out: &mut [f32],
    plane_len: usize,
    tiles: usize,
    first: impl Fn(usize) -> usize + Sync,
    rows: impl Fn(usize) -> Vec<usize> + Sync,
    emit: impl Fn(usize, usize, &mut [f32], usize, &[f32]) + Sync,
) {
    let shape = plan.shape(spec_planes);
    let group = plan.group;
    let isa = crate::simd::isa();
    out.par_chunks_mut(group * plane_len)
        .enumerate()
        .for_each_init(
            || plan.task_buffers(),
            |(w, buf), (gi, outs)| {
                let count = outs.len() / plane_len;
                for t in 0..tiles {
                    gather(isa, spec, shape, first(t) + gi * group, count, buf);
                    let rows_t = rows(t);
                    let planes = outs.chunks_exact_mut(plane_len);
                    for (g, (o, cols)) in planes.zip(buf.chunks_exact_mut(plan.bins)).enumerate() {
                        plan.inverse(w, cols, &rows_t, |i, row| {
                            emit(gi * group + g, t, o, i, row)
                        });
                    }
                }
            },
        );
}

/// Output channel range `o0..o1` split at group boundaries: `(group, s0, s1)`.
fn segments(p: &Conv2dParams, o0: usize, o1: usize) -> Vec<(usize, usize, usize)> {
    let cog = p.out_per_group();
    let mut out = Vec::new();
    let mut s0 = o0;
    while s0 < o1 {
        let g = s0 / cog;
        let s1 = ((g + 1) * cog).min(o1);
        out.push((g, s0, s1));
        s0 = s1;
    }
    out
}

/// Runs the products over all tiles, in parallel over (product, range of tiles, block of rows).
/// `c` holds `c_planes` spectra.
///
/// Every product must write planes no other product in `prods` writes.
fn run_products(
    plan: &Plan2d,
    prods: &[Product],
    a: Spectra,
    b: Spectra,
    c: &mut [f32],
    c_planes: usize,
) {
    for pr in prods {
        assert!(
            pr.m > 0 && pr.n > 0 && pr.c.at(pr.m - 1, pr.n - 1) < c_planes,
            "fft: product output out of range"
        );
    }
    assert!(
        c.len() >= plan.buffer_len(c_planes),
        "fft: product buffer too small"
    );
    // Enough tasks to balance the pool: split the bins first (tasks then share no data), rows
    // of C only when there are too few tiles.
    let target = 8 * rayon::current_num_threads();
    let per_prod = target.div_ceil(prods.len());
    let tile_ranges = per_prod.min(plan.tiles);
    let max_m = prods.iter().map(|pr| pr.m).max().unwrap_or(1);
    let row_blocks = per_prod.div_ceil(tile_ranges).clamp(1, max_m.div_ceil(2));
    let tiles_per = plan.tiles.div_ceil(tile_ranges);
    let out = SharedOut(SpectraOut {
        ptr: c.as_mut_ptr(),
        planes: c_planes,
    });
    let tasks = prods.len() * tile_ranges * row_blocks;
    (0..tasks).into_par_iter().for_each(|task| {
        let out = &out;
        let (rest, rb) = (task / row_blocks, task % row_blocks);
        let (pr, tr) = (&prods[rest / tile_ranges], rest % tile_ranges);
        // Even-sized row blocks keep the 2-row register tiles whole.
        let rows_per = pr.m.div_ceil(row_blocks).next_multiple_of(2);
        let i0 = (rb * rows_per).min(pr.m);
        let t0 = (tr * tiles_per).min(plan.tiles);
        let part = Part {
            t0,
            t1: (t0 + tiles_per).min(plan.tiles),
            i0,
            i1: (i0 + rows_per).min(pr.m),
        };
        // SAFETY: `c` holds c_planes spectra of plan.tiles tiles (checked above). The task
        // writes tiles t0..t1 of the planes of rows i0..i1 of its product; distinct products
        // write distinct planes (caller's contract), distinct row blocks distinct rows and
        // distinct tile ranges distinct tiles, so no two tasks write the same floats, and
        // nothing else touches `c` meanwhile (it is borrowed mutably for this call).
        unsafe { cgemm::run(pr, a, b, out.0, part) };
    });
}

/// The product output, shared by tasks that write disjoint parts of it.
struct SharedOut(SpectraOut);
// SAFETY: only used by `run_products`, whose tasks write disjoint floats.
unsafe impl Sync for SharedOut {}

pub fn forward(f: Forward<'_>, bias: Option<&[f32]>) {
    let (p, out_hw, input, weight, output) = f.parts();
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, tiles) = (p.in_channels, p.out_channels, p.in_per_group(), lay.tiles);
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    let mut x_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * c));
    let mut w_spec = Scratch::new(plan.buffer_len(lay.ob * cig));
    let mut y_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * lay.ob));
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        // Plane ((n - n0) * tiles + t) * c + ic.
        transform_set(plan, &mut x_spec, nb * tiles * c, |i| {
            let (nt, ic) = (i / c, i % c);
            let base = ((n0 + nt / tiles) * c + ic) * in_plane;
            (&input[base..base + in_plane], lay.input_at(p, nt % tiles))
        });
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_set(plan, &mut w_spec, ob * cig, |i| {
                let base = (o0 * cig + i) * k_plane;
                (&weight[base..base + k_plane], lay.weight_at(p))
            });
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: nb * tiles,
                    n: s1 - s0,
                    k: cig,
                    a: Planes {
                        base: g * cig,
                        s_row: c,
                        s_col: 1,
                    },
                    b: Planes {
                        base: (s0 - o0) * cig,
                        s_row: 1,
                        s_col: cig,
                    },
                    c: Planes {
                        base: s0 - o0,
                        s_row: ob,
                        s_col: 1,
                    },
                    conj_b: true,
                    accumulate: false,
                })
                .collect();
            let a = Spectra {
                data: &x_spec,
                planes: nb * tiles * c,
            };
            let b = Spectra {
                data: &w_spec,
                planes: ob * cig,
            };
            run_products(plan, &prods, a, b, &mut y_spec, nb * tiles * ob);
            let y_spec = &y_spec;
            output[n0 * oc_n * out_plane..n1 * oc_n * out_plane]
                .par_chunks_mut(oc_n * out_plane)
                .enumerate()
                .for_each(|(ni, item)| {
                    inverse_set(
                        plan,
                        y_spec,
                        nb * tiles * ob,
                        &mut item[o0 * out_plane..o1 * out_plane],
                        out_plane,
                        tiles,
                        |t| (ni * tiles + t) * ob,
                        |t| {
                            let n = lay.th.outputs(lay.tile_yx(t).0).1;
                            (0..n).map(|i| i * p.stride_h).collect()
                        },
                        |q, t, y, i, row| {
                            let b = bias.map_or(0.0, |b| b[o0 + q]);
                            let (ty, tx) = lay.tile_yx(t);
                            let oy = lay.th.outputs(ty).0 + i;
                            let (ox0, nx) = lay.tw.outputs(tx);
                            let y_row = &mut y[oy * ow + ox0..oy * ow + ox0 + nx];
                            for (j, v) in y_row.iter_mut().enumerate() {
                                *v = row[j * p.stride_w] * scale + b;
                            }
                        },
                    );
                });
        }
    }
}

pub fn backward_data(b: BackwardData<'_>) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, tiles) = (p.in_channels, p.out_channels, p.in_per_group(), lay.tiles);
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    let mut dx_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * c));
    let mut w_spec = Scratch::new(plan.buffer_len(lay.ob * cig));
    let mut dz_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * lay.ob));
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        dx_spec.fill(0.0);
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_set(plan, &mut w_spec, ob * cig, |i| {
                let base = (o0 * cig + i) * k_plane;
                (&weight[base..base + k_plane], lay.weight_at(p))
            });
            // Plane ((n - n0) * tiles + t) * ob + (oc - o0).
            transform_set(plan, &mut dz_spec, nb * tiles * ob, |i| {
                let (nt, ocl) = (i / ob, i % ob);
                let base = ((n0 + nt / tiles) * oc_n + o0 + ocl) * out_plane;
                (
                    &grad_out[base..base + out_plane],
                    lay.grad_out_at(ow, nt % tiles),
                )
            });
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: nb * tiles,
                    n: cig,
                    k: s1 - s0,
                    a: Planes {
                        base: s0 - o0,
                        s_row: ob,
                        s_col: 1,
                    },
                    b: Planes {
                        base: (s0 - o0) * cig,
                        s_row: cig,
                        s_col: 1,
                    },
                    c: Planes {
                        base: g * cig,
                        s_row: c,
                        s_col: 1,
                    },
                    conj_b: false,
                    accumulate: true,
                })
                .collect();
            let a = Spectra {
                data: &dz_spec,
                planes: nb * tiles * ob,
            };
            let b = Spectra {
                data: &w_spec,
                planes: ob * cig,
            };
            run_products(plan, &prods, a, b, &mut dx_spec, nb * tiles * c);
        }
        let dx_spec = &dx_spec;
        grad_input[n0 * c * in_plane..n1 * c * in_plane]
            .par_chunks_mut(c * in_plane)
            .enumerate()
            .for_each(|(ni, item)| {
                // Windows overlap and some inputs are in none (never read by the forward: their
                // gradient is 0), so accumulate into zeros.
                item.fill(0.0);
                inverse_set(
                    plan,
                    dx_spec,
                    nb * tiles * c,
                    item,
                    in_plane,
                    tiles,
                    |t| (ni * tiles + t) * c,
                    |t| {
                        let rows = lay.input_at(p, t).rows;
                        (0..rows.count).map(|i| rows.grid0 + i).collect()
                    },
                    |_, t, dx, i, row| {
                        let at = lay.input_at(p, t);
                        let iy = at.rows.src0 + i;
                        let dst = &mut dx[iy * p.in_w + at.cols.src0..][..at.cols.count];
                        let src = &row[at.cols.grid0..at.cols.grid0 + at.cols.count];
                        for (d, &v) in dst.iter_mut().zip(src) {
                            *d += v * scale;
                        }
                    },
                );
            });
    }
}

pub fn backward_weight(b: BackwardWeight<'_>) {
    let (p, out_hw, input, grad_out, (grad_weight, grad_bias)) = b.parts();
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let (oh, ow) = out_hw;
    let (c, oc_n, cig, tiles) = (p.in_channels, p.out_channels, p.in_per_group(), lay.tiles);
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    grad_weight.fill(0.0);
    let mut x_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * c));
    let mut dw_spec = Scratch::new(plan.buffer_len(lay.ob * cig));
    let mut dz_spec = Scratch::new(plan.buffer_len(lay.nb * tiles * lay.ob));
    let tap_rows: Vec<usize> = (0..p.kernel_h).map(|ky| ky * p.dilation_h).collect();
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        transform_set(plan, &mut x_spec, nb * tiles * c, |i| {
            let (nt, ic) = (i / c, i % c);
            let base = ((n0 + nt / tiles) * c + ic) * in_plane;
            (&input[base..base + in_plane], lay.input_at(p, nt % tiles))
        });
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_set(plan, &mut dz_spec, nb * tiles * ob, |i| {
                let (nt, ocl) = (i / ob, i % ob);
                let base = ((n0 + nt / tiles) * oc_n + o0 + ocl) * out_plane;
                (
                    &grad_out[base..base + out_plane],
                    lay.grad_out_at(ow, nt % tiles),
                )
            });
            // The contraction runs over (batch item, tile) pairs.
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: cig,
                    n: s1 - s0,
                    k: nb * tiles,
                    a: Planes {
                        base: g * cig,
                        s_row: 1,
                        s_col: c,
                    },
                    b: Planes {
                        base: s0 - o0,
                        s_row: ob,
                        s_col: 1,
                    },
                    c: Planes {
                        base: (s0 - o0) * cig,
                        s_row: 1,
                        s_col: cig,
                    },
                    conj_b: true,
                    accumulate: false,
                })
                .collect();
            let a = Spectra {
                data: &x_spec,
                planes: nb * tiles * c,
            };
            let b = Spectra {
                data: &dz_spec,
                planes: nb * tiles * ob,
            };
            run_products(plan, &prods, a, b, &mut dw_spec, ob * cig);
            inverse_set(
                plan,
                &dw_spec,
                ob * cig,
                &mut grad_weight[o0 * cig * k_plane..o1 * cig * k_plane],
                k_plane,
                1,
                |_| 0,
                |_| tap_rows.clone(),
                |_, _, gw, ky, row| {
                    let g_row = &mut gw[ky * p.kernel_w..(ky + 1) * p.kernel_w];
                    for (kx, g) in g_row.iter_mut().enumerate() {
                        *g += row[kx * p.dilation_w] * scale;
                    }
                },
            );
        }
    }
    if let Some(gb) = grad_bias {
        super::direct::bias_grad(grad_out, p.batch, oc_n, out_plane, gb);
    }
}
