//! Winograd F(4x4, 3x3) convolution for 3x3 kernels at stride 1 and dilation 1 (any padding, any
//! groups). Each 4x4 block of outputs is computed from the 6x6 input tile under it with 36
//! multiplies per (in, out) channel pair instead of 144:
//!
//! `Y = A^T [ sum_c (G g_oc,c G^T) .* (B^T d_c B) ] A`
//!
//! The elementwise product summed over channels is, for each of the 36 transform points, a matrix
//! product `M_xi = U_xi (C_out x C_in) * V_xi (C_in x tiles)`, run by the blocked SGEMM in
//! `crate::gemm`; weights are transformed (`U = G g G^T`) and packed once per call.
//!
//! Maps of at most 7x7 at small batches (fewer than [`SMALL_TILES`] tiles of 4x4: 7x7 maps at
//! batch 1 to 3) use F(2x2, 3x3) instead: 2x2 output blocks from 4x4 input tiles, 16 transform
//! points and multiplies per pair instead of 36 (against 36 for direct), the same code with the
//! tile side a const parameter ([`tile_side`]). The matrices are Lavin & Gray's for F(2, 3),
//! with constants of at most 1 (and 1/2 in `G`), so it rounds less than F(4x4).
//!
//! Tiles are processed in blocks of whole tile rows (one tile row = one batch item's row of
//! `ceil(out_w / side)` tiles) sized so the transformed inputs `V` and products `M` of a block stay
//! in L2/L3: input transform -> 36 (F(2x2): 16) GEMMs -> output transform (plus the epilogue: bias, folded batch norm,
//! residual, ReLU), block after block. With
//! enough blocks they run in parallel (single-threaded GEMMs); otherwise blocks run in turn and
//! each step is split over the pool (channels, transform points, output channels).
//!
//! Transforms run 16 tiles of one tile row at a time, lanes in fixed-size arrays, so the compiler
//! vectorises them; each is a `kernel!`, compiled per SIMD level. Both give
//! bit-identical transforms (no FMA contraction); only the GEMM differs between the paths.
//!
//! Interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray 2016, the matrices below):
//! the best-conditioned small integer set for F(4, 3). Rounding grows with the transform
//! constants (up to 8 in `A`, 5 in `B`), so the error is a few 1e-6 of the largest output
//! rather than 1e-7: `tests/conv_winograd.rs` measures it.
//!
//! Backward data at stride 1 is a 3x3 convolution of the output gradient with the weights rotated
//! 180 degrees and in/out channels swapped, padded by `2 - pad` on each side; when every pad is
//! at most 2 it runs through this forward. Backward weight runs F(2x2, 3x3) backwards
//! ([`backward_weight`]). Every shape this algorithm does not apply to (see [`applies`]) falls
//! back to im2col + GEMM.
use super::par::{with_scratch, SharedMut};
use super::{im2col, Conv2dParams, Epilogue};
use super::{BackwardData, BackwardWeight, Forward};
use crate::gemm::{self, Lhs, Mat, PackedA};
use crate::simd::{kernel, Isa};
use rayon::prelude::*;
use std::ops::Range;

/// Transform points per tile of F(4x4, 3x3) (6 x 6), the most of either tile size.
const POINTS: usize = 36;
/// F(4x4, 3x3) tiles below which a forward uses F(2x2, 3x3) (see [`tile_side`]).
const SMALL_TILES: usize = 16;
/// Tiles per transform step: two AVX vectors of lanes.
const TB: usize = 16;
type Lanes = [f32; TB];
/// Floats of transformed inputs and products per block: 1 MiB, about L2, so a block made by the
/// input transform is still in cache for its GEMMs and the output transform.
const BLOCK_BUDGET: usize = 256 * 1024;
/// Most floats of block scratch per thread (64 MiB); larger blocks fall back to im2col.
const MAX_SCRATCH: usize = 16 << 20;
/// Tiles per block of a weight gradient: each block's 16 products read and write all of `dU`
/// (16 floats per weight), so a block must have many tiles (the GEMMs' K) to pay for that.
const GRAD_BLOCK_COLS: usize = 1024;
/// Most floats of a weight gradient block's transformed input and output gradient (16 MiB).
const GRAD_BLOCK_FLOATS: usize = 4 << 20;
/// Fewest tile columns per block, so the GEMMs are not starved of columns (their N).
const MIN_BLOCK_COLS: usize = 64;

/// Whether Winograd F(4x4, 3x3) computes this shape itself (else it falls back to im2col; so
/// do the rare shapes whose single tile row of transformed data would exceed 64 MiB).
pub fn applies(p: &Conv2dParams) -> bool {
    p.kernel_h == 3
        && p.kernel_w == 3
        && p.stride_h == 1
        && p.stride_w == 1
        && p.dilation_h == 1
        && p.dilation_w == 1
}

/// Whether `ConvAlgo::Auto` should pick Winograd over im2col + GEMM (measurements in
/// `bench/results/auto-rules.md`). Winograd pays the weight transform once per call (36 values
/// per (in, out) pair, plus page faults when the transformed weights are too large to keep
/// between calls), so it needs enough tiles to share it over and channels enough to keep the 36
/// GEMMs efficient; small maps of 512 channels, 64-channel 14x14 layers (wasted work in the
/// partial tiles) and 32-channel layers do not gain.
pub fn pays_off(p: &Conv2dParams) -> bool {
    dense_enough(p, 64, 128, |cig, _cog| cig > 64)
}

/// The rule both [`pays_off`] and [`pays_off_prepared`] apply: Winograd applies, one group, at
/// least `min_channels` either side and `min_tiles` output tiles, `wide` (given the channels)
/// or a map of 28x28 and up, and the transformed weights within the memory bound.
fn dense_enough(
    p: &Conv2dParams,
    min_channels: usize,
    min_tiles: usize,
    wide: impl Fn(usize, usize) -> bool,
) -> bool {
    let Ok((oh, ow)) = p.validate() else {
        return false;
    };
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let m = tile_side(p, (oh, ow));
    let tiles = p.batch * oh.div_ceil(m) * ow.div_ceil(m);
    applies(p)
        && p.groups == 1
        && cig >= min_channels
        && cog >= min_channels
        && tiles >= min_tiles
        && (wide(cig, cog) || oh * ow >= 28 * 28)
        && within_memory_bound(p)
}

/// Whether this shape's transformed weights (36 floats per weight for F(4x4, 3x3), 16 for
/// F(2x2, 3x3), and their packed copy) fit the bound on what is kept between calls, or held
/// by a plan for each layer: past it Winograd trades a lot of memory for its speed (ResNet-50's
/// 512->512 @7 layers would hold 38 MiB each), and neither the rules nor the autotuner take it.
pub fn within_memory_bound(p: &Conv2dParams) -> bool {
    let Ok(out_hw) = p.validate() else {
        return false;
    };
    let m = tile_side(p, out_hw);
    ((m + 2) * (m + 2) * 2)
        .checked_mul(p.in_per_group() * p.out_per_group())
        .is_some_and(|n| n <= MAX_CACHED)
}

/// Output tile side of a forward of `p`: F(2x2, 3x3) where F(4x4, 3x3) would have fewer than
/// [`SMALL_TILES`] tiles, one GEMM column panel (7x7 maps at batch 1 to 3: 4-12 tiles), else
/// F(4x4, 3x3). There each of F(4x4)'s 36 GEMMs per block has a handful of columns; F(2x2) has
/// 16 GEMMs of 4x the columns, for 2.25x fewer multiplies than direct instead of 4x. Measured
/// with `examples/conv_b1` (prepared, batch 1, 2 threads): GoogLeNet's 160->320 and 192->384
/// @7 0.175 and 0.233 ms against 0.24-0.29 and 0.33-0.39 for im2col; ResNet-50's 512->512 @7
/// 1.13-1.56 ms against 1.68-1.82, and with the weights cold (`COLD=2`, as in a plan) 1.29-1.47
/// against 1.50-1.83; GoogLeNet's with cold weights about even (0.32-0.47 ms either way). On
/// 14x14 maps at batch 1 (16 tiles) F(2x2) lost: 49 columns fill four 16-column panels, the
/// last with one (256->256: 1.18-1.31 ms against 0.80-0.85 cold).
///
/// Only maps of at most 7x7 take it: those were measured; larger small-batch maps (8x8 at batch
/// 1-3, say) were not, and keep F(4x4) (or im2col, by the callers' rules).
pub fn tile_side(p: &Conv2dParams, (oh, ow): (usize, usize)) -> usize {
    if oh <= 7 && ow <= 7 && p.batch * oh.div_ceil(4) * ow.div_ceil(4) < SMALL_TILES {
        2
    } else {
        4
    }
}

/// [`pays_off`] for weights transformed once and reused over many calls (a compiled plan's
/// prepared weights, `conv::prepare_forward`): with no transform of the weights per call,
/// Winograd wins on far fewer tiles. Measured with `examples/conv_b1` (prepared, 2 threads,
/// batch 1 and 8, bench/results/auto-rules.md): 2.2-2.6x im2col from 16 tiles (ResNet-50's
/// 256@14 and GoogLeNet's 14x14 layers at batch 1) with 32+ channels either side, and about
/// even for 32 output channels below 28x28 (DenseNet's 128->32 at 14x14). Tiles are counted at
/// the side [`tile_side`] picks: F(4x4) on 4 tiles (7x7 maps at batch 1) was 0.6-0.9x im2col,
/// F(2x2) there has 16 and wins (see [`tile_side`]). The same memory bound as for transformed
/// weights kept between calls: 36 (F(2x2): 16) transformed floats per weight.
///
/// With fewer than 64 output channels on AVX-512, the indirect convolution takes them at any
/// map size where it applies (DenseNet's 128->32 growth convs): in a compiled plan at batch 1,
/// 12 layers @28 took 1.95 ms there against 2.30 as Winograd, and @56 0.53 against 0.60 ms
/// (autotuner timings). Timed warm in a loop the two are within 5% @28, so the autotuner,
/// which needs that margin to replace the rule's pick, kept whichever the rule named.
pub fn pays_off_prepared(p: &Conv2dParams) -> bool {
    let indirect = crate::simd::dispatch!(
        crate::simd::isa(),
        avx512 => super::indirect::applies(p),
        avx2 => false,
        _ => false
    );
    dense_enough(p, 32, 16, |_cig, cog| cog >= 64) && (p.out_per_group() >= 64 || !indirect)
}

/// Sizes of one call and how its tile rows are cut into blocks.
#[derive(Clone, Copy)]
struct Geom {
    in_channels: usize,
    out_channels: usize,
    in_h: usize,
    in_w: usize,
    oh: usize,
    ow: usize,
    pad_top: usize,
    pad_left: usize,
    cig: usize,
    cog: usize,
    /// Output tile side (4 or 2) and transform points per tile ((side + 2)^2).
    m: usize,
    points: usize,
    /// Tile rows per item and tiles per tile row.
    th: usize,
    tw: usize,
    /// Tile rows over the whole batch, tile rows per block, and blocks.
    units: usize,
    per_block: usize,
    blocks: usize,
}

impl Geom {
    fn new(p: &Conv2dParams, out_hw: (usize, usize)) -> Geom {
        Geom::with_side(p, out_hw, tile_side(p, out_hw))
    }

    fn with_side(p: &Conv2dParams, (oh, ow): (usize, usize), m: usize) -> Geom {
        let points = (m + 2) * (m + 2);
        let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
        let (cig, cog) = (p.in_per_group(), p.out_per_group());
        let units = p.batch * th;
        let want_cols = (BLOCK_BUDGET / (points * (cig + cog))).max(MIN_BLOCK_COLS);
        let per_block = (want_cols / tw).clamp(1, units);
        Geom {
            in_channels: p.in_channels,
            out_channels: p.out_channels,
            in_h: p.in_h,
            in_w: p.in_w,
            oh,
            ow,
            pad_top: p.pad_top,
            pad_left: p.pad_left,
            cig,
            cog,
            m,
            points,
            th,
            tw,
            units,
            per_block,
            blocks: units.div_ceil(per_block),
        }
    }

    /// The F(2x2, 3x3) geometry of a weight gradient: blocks of about [`GRAD_BLOCK_COLS`] tiles
    /// where the scratch allows (see [`weight_grad`]).
    fn for_weight_grad(p: &Conv2dParams, out_hw: (usize, usize)) -> Geom {
        let mut g = Geom::with_side(p, out_hw, 2);
        let fit = GRAD_BLOCK_FLOATS / (g.points * (g.cig + g.cog));
        let pays = 8 * g.cig * g.cog / (g.cig + g.cog);
        let want_cols = pays
            .clamp(MIN_BLOCK_COLS, GRAD_BLOCK_COLS)
            .min(fit)
            .max(MIN_BLOCK_COLS);
        g.per_block = (want_cols / g.tw).clamp(1, g.units);
        g.blocks = g.units.div_ceil(g.per_block);
        g
    }

    fn block(&self, b: usize) -> Range<usize> {
        let u0 = b * self.per_block;
        u0..(u0 + self.per_block).min(self.units)
    }

    /// Floats between rows of V and M (one row per (channel, transform point)) for a block of
    /// `units` tile rows: its columns plus TB of slack, so transforms store whole lane chunks.
    fn pitch(&self, units: usize) -> usize {
        units * self.tw + TB
    }

    /// Floats of V (`cig x 36 x pitch`) and M (`cog x 36 x pitch`) for the largest block (None
    /// if that overflows).
    fn scratch_len(&self) -> Option<usize> {
        (self.cig + self.cog)
            .checked_mul(self.points)?
            .checked_mul(self.pitch(self.per_block))
    }
}

kernel! {
    /// Transformed weights `U = G g G^T` of output channel `oc` for tile side `M`, 16 input
    /// channels at a time (lanes over input channels), written to `u` (layout `[xi][ic]`, rows
    /// of `cig`).
    fn weight_rows<const M: usize>(g: &Geom, weight: &[f32], oc: usize, u: &mut [f32]) {
        let r = M + 2;
        for ic0 in (0..g.cig).step_by(TB) {
            let nl = TB.min(g.cig - ic0);
            let mut w = [[0f32; TB]; 9];
            for l in 0..nl {
                let src = &weight[(oc * g.cig + ic0 + l) * 9..][..9];
                for k in 0..9 {
                    w[k][l] = src[k];
                }
            }
            // t[i][kx] = (G g)[i][kx] (along ky), then u[i][j] = (t G^T)[i][j] (along kx).
            let mut t = [[[0f32; TB]; 3]; 6];
            for kx in 0..3 {
                for l in 0..TB {
                    let o = gt::<M>(w[kx][l], w[3 + kx][l], w[6 + kx][l]);
                    for i in 0..r {
                        t[i][kx][l] = o[i];
                    }
                }
            }
            for (i, ti) in t.iter().enumerate().take(r) {
                let mut row = [[0f32; TB]; 6];
                for l in 0..TB {
                    let o = gt::<M>(ti[0][l], ti[1][l], ti[2][l]);
                    for j in 0..r {
                        row[j][l] = o[j];
                    }
                }
                for (j, rw) in row.iter().enumerate().take(r) {
                    u[(i * r + j) * g.cig + ic0..][..nl].copy_from_slice(&rw[..nl]);
                }
            }
        }
    }
}

/// `G g` for one 3-vector, tile side `M` (4: six values; 2: four, then zeros).
#[inline(always)]
fn gt<const M: usize>(a: f32, b: f32, c: f32) -> [f32; 6] {
    if M == 2 {
        // F(2, 3): G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
        let ac = a + c;
        return [a, (ac + b) * 0.5, (ac - b) * 0.5, c, 0.0, 0.0];
    }
    let ac = a + c;
    let (p, q) = (a * (1.0 / 24.0) + c * (1.0 / 6.0), b * (1.0 / 12.0));
    [
        a * 0.25,
        -(ac + b) * (1.0 / 6.0),
        -(ac - b) * (1.0 / 6.0),
        p + q,
        p - q,
        c,
    ]
}

/// Transformed weights of one call: `u` (layout `[oc][xi][ic]`) and its packed GEMM operands.
/// The last call's are kept (when not too large) so the next call reuses the memory instead of
/// faulting in fresh pages; their contents are always rewritten.
struct Packed {
    u: Vec<f32>,
    a: Vec<PackedA>,
}

static CACHE: std::sync::Mutex<Option<Packed>> = std::sync::Mutex::new(None);
/// Most floats of transformed and packed weights kept between calls.
const MAX_CACHED: usize = crate::scratch::RETAIN_BYTES / 4;

impl Packed {
    fn take() -> Packed {
        let cached = CACHE.lock().unwrap_or_else(|e| e.into_inner()).take();
        cached.unwrap_or(Packed {
            u: Vec::new(),
            a: Vec::new(),
        })
    }

    fn keep(self) {
        let held = self.u.len() + self.a.iter().map(PackedA::capacity).sum::<usize>();
        if held <= MAX_CACHED {
            *CACHE.lock().unwrap_or_else(|e| e.into_inner()) = Some(self);
        }
    }
}

/// Transforms the weights and packs them for the GEMM, one operand per (group, transform
/// point): `U_xi` is `cog x cig`. None when the buffers would not fit in memory.
fn pack_weights(g: &Geom, groups: usize, weight: &[f32]) -> Option<Packed> {
    let row = g.points.checked_mul(g.cig)?;
    let total = row.checked_mul(g.out_channels)?;
    total.checked_mul(2 * std::mem::size_of::<f32>())?;
    let mut packed = Packed::take();
    if packed.u.len() < total {
        packed.u = crate::scratch::zeroed(total);
    }
    let isa = crate::simd::isa();
    packed.u[..total]
        .par_chunks_mut(row)
        .enumerate()
        .for_each(|(oc, dst)| match g.m {
            2 => weight_rows::<2>(isa, g, weight, oc, dst),
            _ => weight_rows::<4>(isa, g, weight, oc, dst),
        });
    let points = g.points;
    packed.a.resize_with(groups * points, PackedA::empty);
    let per_group = g.cog * row;
    let u = &packed.u;
    packed.a[..groups * points]
        .par_iter_mut()
        .enumerate()
        .for_each(|(k, a)| {
            let (gi, xi) = (k / points, k % points);
            let src = &u[gi * per_group + xi * g.cig..(gi + 1) * per_group];
            a.repack(false, g.cog, g.cig, src, row, false);
        });
    Some(packed)
}

/// Lane chunks of a block of `units` tile rows: `(k0, nu, t0, tb)` covers tiles `t0..t0+tb` of
/// the block's tile rows `k0..k0+nu`, lane `j * tb + t` for tile `t0 + t` of row `k0 + j`; its
/// columns `k0 * tw + t0 ..` are contiguous. Narrow planes put several tile rows in one chunk so
/// the lanes are not mostly empty.
fn lane_chunks(tw: usize, units: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let rows_per = (TB / tw).max(1);
    (0..units).step_by(rows_per).flat_map(move |k0| {
        let nu = rows_per.min(units - k0);
        (0..tw)
            .step_by(TB)
            .map(move |t0| (k0, nu, t0, TB.min(tw - t0)))
    })
}

/// Input transform of one channel for a lane chunk: `planes[j]` is the channel's plane of the
/// item of the chunk's tile row `j`, and that tile row's index in the plane.
#[inline(always)]
fn input_chunk<const M: usize>(
    g: &Geom,
    planes: &[(&[f32], usize)],
    t0: usize,
    tb: usize,
    v: &mut [Lanes; POINTS],
) {
    let taps = M + 2;
    // e[r][j] = (d B)[r][j]: each input row transformed along x.
    let mut e = [[[0f32; TB]; 6]; 6];
    let base = (M * t0) as isize - g.pad_left as isize;
    let w = g.in_w as isize;
    const SEG: usize = 4 * TB + 2;
    for (r, er) in e.iter_mut().enumerate().take(taps) {
        // ph[q][lane] = tap q of the lane's tile in input row r.
        let mut ph = [[0f32; TB]; 6];
        for (j, &(x, ty)) in planes.iter().enumerate() {
            let iy = (M * ty + r) as isize - g.pad_top as isize;
            if iy < 0 || iy >= g.in_h as isize {
                continue; // padding rows transform to zeros
            }
            let src = &x[iy as usize * g.in_w..][..g.in_w];
            // The row segment under the chunk, zero where it leaves the plane.
            let mut seg = [0f32; SEG];
            let lo = (-base).clamp(0, SEG as isize);
            let hi = (w - base).min((M * tb + 2) as isize).max(lo);
            if lo < hi {
                let (lo, hi) = (lo as usize, hi as usize);
                let s0 = (base + lo as isize) as usize;
                seg[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
            }
            if planes.len() == 1 {
                // Fixed trip counts: the compiler turns this into shuffles.
                for t in 0..TB {
                    for q in 0..taps {
                        ph[q][t] = seg[M * t + q];
                    }
                }
            } else {
                for t in 0..tb {
                    for q in 0..taps {
                        ph[q][j * tb + t] = seg[M * t + q];
                    }
                }
            }
        }
        for t in 0..TB {
            let o = bt::<M>(ph[0][t], ph[1][t], ph[2][t], ph[3][t], ph[4][t], ph[5][t]);
            for q in 0..taps {
                er[q][t] = o[q];
            }
        }
    }
    // Then along y: v[i * taps + j] = (B^T e)[i][j].
    for j in 0..taps {
        for t in 0..TB {
            let o = bt::<M>(
                e[0][j][t], e[1][j][t], e[2][j][t], e[3][j][t], e[4][j][t], e[5][j][t],
            );
            for i in 0..taps {
                v[i * taps + j][t] = o[i];
            }
        }
    }
}

/// `B^T d` for one 6-vector (tile side 4), or for the first four values (side 2, then zeros).
#[inline(always)]
fn bt<const M: usize>(d0: f32, d1: f32, d2: f32, d3: f32, d4: f32, d5: f32) -> [f32; 6] {
    if M == 2 {
        // F(2, 3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
        return [d0 - d2, d1 + d2, d2 - d1, d1 - d3, 0.0, 0.0];
    }
    let a = d4 - d2;
    let b = d3 - d1;
    let s12 = d1 + d2;
    let s34 = d3 + d4;
    [
        4.0 * d0 - 5.0 * d2 + d4,
        s34 - 4.0 * s12,
        (d4 - d3) + 4.0 * (d1 - d2),
        a + 2.0 * b,
        a - 2.0 * b,
        4.0 * d1 - 5.0 * d3 + d5,
    ]
}

/// `A^T m` for one 6-vector (tile side 4), or for the first four values (side 2: two outputs,
/// then zeros).
#[inline(always)]
fn at<const M: usize>(m0: f32, m1: f32, m2: f32, m3: f32, m4: f32, m5: f32) -> [f32; 4] {
    if M == 2 {
        // F(2, 3): A^T = [1 1 1 0; 0 1 -1 -1].
        return [m0 + m1 + m2, m1 - m2 - m3, 0.0, 0.0];
    }
    let d12 = m1 - m2;
    let s12 = m1 + m2;
    let d34 = m3 - m4;
    let s34 = m3 + m4;
    [
        m0 + s12 + s34,
        d12 + 2.0 * d34,
        s12 + 4.0 * s34,
        d12 + 8.0 * d34 + m5,
    ]
}

kernel! {
    /// Input transform of channels `chans` (of the block's group) for the block's tile rows into
    /// `v` (layout `[c][xi][pitch]`, `c` relative to `chans.start`; see [`Geom::pitch`]).
    fn input_block<const M: usize>(
        g: &Geom,
        input: &[f32],
        gi: usize,
        units: &Range<usize>,
        chans: Range<usize>,
        v: &mut [f32],
    ) {
        let pitch = g.pitch(units.len());
        let in_plane = g.in_h * g.in_w;
        let mut lanes = [[0f32; TB]; POINTS];
        for (c, vc) in chans.zip(v.chunks_exact_mut(g.points * pitch)) {
            for (k0, nu, t0, tb) in lane_chunks(g.tw, units.len()) {
                let mut planes = [(&input[..0], 0usize); TB];
                for (j, pl) in planes[..nu].iter_mut().enumerate() {
                    let u = units.start + k0 + j;
                    let off = ((u / g.th) * g.in_channels + gi * g.cig + c) * in_plane;
                    *pl = (&input[off..][..in_plane], u % g.th);
                }
                input_chunk::<M>(g, &planes[..nu], t0, tb, &mut lanes);
                // Whole 16-lane stores: spare lanes land in columns a later chunk rewrites, or in
                // the row's slack.
                let col = k0 * g.tw + t0;
                for (xi, l) in lanes.iter().enumerate().take(g.points) {
                    vc[xi * pitch + col..][..TB].copy_from_slice(l);
                }
            }
        }
    }
}

kernel! {
    /// Output transform of output channels `chans` (relative to the group) from `m` (layout
    /// `[oc][xi][pitch]`, `oc` relative to `chans.start`), then the epilogue on each output row
    /// segment while it is still in registers/L1, into the output.
    ///
    /// # Safety
    /// `out` must be the output buffer; the rows of these channels and tile rows must be written by
    /// nobody else meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn output_block<const M: usize>(
        g: &Geom,
        gi: usize,
        units: &Range<usize>,
        chans: Range<usize>,
        m: &[f32],
        ep: &Epilogue<'_>,
        out: SharedMut,
    ) {
        let pitch = g.pitch(units.len());
        let finish = !ep.is_identity();
        let taps = M + 2;
        for (oc, mc) in chans.zip(m.chunks_exact(g.points * pitch)) {
            let o = gi * g.cog + oc;
            for (k0, nu, t0, tb) in lane_chunks(g.tw, units.len()) {
                let col = k0 * g.tw + t0;
                let mut lanes = [[0f32; TB]; POINTS];
                for (xi, l) in lanes.iter_mut().enumerate().take(g.points) {
                    l.copy_from_slice(&mc[xi * pitch + col..][..TB]);
                }
                // f[i][b] = (m A)[i][b], then y[a][b] = (A^T f)[a][b].
                let mut f = [[[0f32; TB]; 4]; 6];
                for (i, fi) in f.iter_mut().enumerate().take(taps) {
                    // Row i's points; F(2x2) reads four of the six (its rows are four long).
                    let r = &lanes[i * taps..i * taps + 6];
                    for t in 0..TB {
                        let o = at::<M>(r[0][t], r[1][t], r[2][t], r[3][t], r[4][t], r[5][t]);
                        for b in 0..M {
                            fi[b][t] = o[b];
                        }
                    }
                }
                let mut y = [[[0f32; TB]; 4]; 4];
                for b in 0..M {
                    for t in 0..TB {
                        let o = at::<M>(
                            f[0][b][t], f[1][b][t], f[2][b][t], f[3][b][t], f[4][b][t], f[5][b][t],
                        );
                        for a in 0..M {
                            y[a][b][t] = o[a];
                        }
                    }
                }
                let x0 = M * t0;
                let len = (M * tb).min(g.ow - x0);
                for (a, ya) in y.iter().enumerate().take(M) {
                    // Output row a of every lane's tile, lanes side by side: a fixed-size
                    // interleave of the M columns, which compiles to shuffles (indexing lane by
                    // lane for each unit kept it scalar: a fifth of the layer's time).
                    let mut rows = [0f32; 4 * TB];
                    for (t, q) in rows.chunks_exact_mut(M).take(TB).enumerate() {
                        for b in 0..M {
                            q[b] = ya[b][t];
                        }
                    }
                    for (j, row) in rows.chunks_exact_mut(M * tb).take(nu).enumerate() {
                        let u = units.start + k0 + j;
                        let (n, ty) = (u / g.th, u % g.th);
                        let oy = M * ty + a;
                        if oy >= g.oh {
                            continue;
                        }
                        let off = ((n * g.out_channels + o) * g.oh + oy) * g.ow + x0;
                        if finish {
                            ep.apply_row_inline(&mut row[..len], o, off);
                        }
                        std::ptr::copy_nonoverlapping(row.as_ptr(), out.at(off), len);
                    }
                }
            }
        }
    }
}

/// The input transform of a block's tile rows `units` (group `gi`) into `v` (see
/// [`input_block`]), split over the pool by channels when `par`.
fn transform_inputs<const M: usize>(
    g: &Geom,
    input: &[f32],
    gi: usize,
    units: &Range<usize>,
    v: &mut [f32],
    par: bool,
    isa: Isa,
) {
    if par {
        let ld = g.points * g.pitch(units.len());
        let per = chans_per_piece(g.cig);
        v.par_chunks_mut(per * ld).enumerate().for_each(|(k, vk)| {
            let c0 = k * per;
            input_block::<M>(isa, g, input, gi, units, c0..(c0 + per).min(g.cig), vk);
        });
    } else {
        input_block::<M>(isa, g, input, gi, units, 0..g.cig, v);
    }
}

/// Channels per parallel piece of a transform: a few pieces per thread.
fn chans_per_piece(chans: usize) -> usize {
    chans.div_ceil(4 * rayon::current_num_threads()).max(1)
}

/// One block (tile rows `units` of group `gi`): input transform, 36 or 16 GEMMs (one per
/// transform point), output transform.
/// `buf` holds V then M. `par` splits each step over the pool.
#[allow(clippy::too_many_arguments)]
fn run_block<const M: usize>(
    g: &Geom,
    gi: usize,
    units: Range<usize>,
    input: &[f32],
    packed: &[PackedA],
    ep: &Epilogue<'_>,
    out: SharedMut,
    buf: &mut [f32],
    par: bool,
    isa: Isa,
) {
    let cols = units.len() * g.tw;
    let pitch = g.pitch(units.len());
    let ld = g.points * pitch;
    let (v, rest) = buf.split_at_mut(g.cig * ld);
    let m = &mut rest[..g.cog * ld];
    transform_inputs::<M>(g, input, gi, &units, v, par, isa);
    let v: &[f32] = v;
    let mp = SharedMut(m.as_mut_ptr());
    let product = |xi: usize| {
        let rhs = Mat::new(&v[xi * pitch..], ld, false);
        // SAFETY: M_xi (cog x cols at xi * pitch, rows ld apart) lies inside m, and each xi is
        // written by one call only.
        unsafe {
            gemm::gemm_raw(
                g.cog,
                cols,
                g.cig,
                1.0,
                Lhs::Packed(&packed[xi]),
                rhs,
                0.0,
                mp.at(xi * pitch),
                ld,
                false,
            )
        }
    };
    if par {
        (0..g.points).into_par_iter().for_each(product);
    } else {
        (0..g.points).for_each(product);
    }
    let m: &[f32] = m;
    // SAFETY: this block alone writes the rows of its tile rows in group gi's channels.
    if par {
        let per = chans_per_piece(g.cog);
        m.par_chunks(per * ld).enumerate().for_each(|(k, mk)| {
            let c0 = k * per;
            unsafe {
                output_block::<M>(isa, g, gi, &units, c0..(c0 + per).min(g.cog), mk, ep, out)
            };
        });
    } else {
        unsafe { output_block::<M>(isa, g, gi, &units, 0..g.cog, m, ep, out) };
    }
}

/// Winograd forward of a shape [`applies`] accepts; false (nothing written) when the transformed
/// weights would not fit in memory.
fn forward_impl(f: Forward<'_>, ep: &Epilogue<'_>) -> bool {
    let g = Geom::new(f.p, f.out_hw);
    // A block is at least one whole tile row: planes thousands of pixels wide with many channels
    // would need more scratch than is sensible; im2col handles them in bounded blocks.
    let Some(scratch) = g.scratch_len().filter(|&n| n <= MAX_SCRATCH) else {
        return false;
    };
    let Some(cache) = pack_weights(&g, f.p.groups, f.weight) else {
        return false;
    };
    run_forward(f, &g, scratch, &cache.a, ep);
    cache.keep();
    true
}

/// A shape's transformed and packed weights, made once to serve many forwards (see
/// [`super::prepare_forward`]); None where the forward would not run Winograd (it falls back to
/// im2col: a shape [`applies`] refuses, too much scratch, weights too large for memory).
pub(crate) fn prepare(p: &Conv2dParams, weight: &[f32]) -> Option<Vec<PackedA>> {
    let out_hw = p.validate().ok()?;
    let g = Geom::new(p, out_hw);
    if !applies(p) || g.scratch_len().filter(|&n| n <= MAX_SCRATCH).is_none() {
        return None;
    }
    let mut packed = pack_weights(&g, p.groups, weight)?;
    let mut a = std::mem::take(&mut packed.a);
    a.truncate(p.groups * g.points);
    packed.keep(); // the transform's buffer, for the next call to reuse
    Some(a)
}

/// The forward with weights from [`prepare`] for this shape (16 operands per group were made
/// for F(2x2, 3x3), 36 for F(4x4, 3x3)).
pub(crate) fn forward_prepared(f: Forward<'_>, packed: &[PackedA], ep: &Epilogue<'_>) {
    let m = if packed.len() == 16 * f.p.groups {
        2
    } else {
        4
    };
    let g = Geom::with_side(f.p, f.out_hw, m);
    let scratch = g.scratch_len().unwrap_or(0);
    run_forward(f, &g, scratch, packed, ep);
}

/// The forward's blocks (input transform, a GEMM per transform point, output transform) over the pool.
fn run_forward(f: Forward<'_>, g: &Geom, scratch: usize, packed: &[PackedA], ep: &Epilogue<'_>) {
    let (p, _, input, _, output) = f.parts();
    let g = *g;
    let out = SharedMut(output.as_mut_ptr());
    let isa = crate::simd::isa();
    let tasks = p.groups * g.blocks;
    let threads = rayon::current_num_threads();
    let task = |t: usize, buf: &mut [f32], par: bool| {
        let (gi, b) = (t / g.blocks, t % g.blocks);
        let packed = &packed[gi * g.points..(gi + 1) * g.points];
        let units = g.block(b);
        match g.m {
            2 => run_block::<2>(&g, gi, units, input, packed, ep, out, buf, par, isa),
            _ => run_block::<4>(&g, gi, units, input, packed, ep, out, buf, par, isa),
        }
    };
    if threads > 1 && tasks >= 2 * threads {
        (0..tasks)
            .into_par_iter()
            .for_each(|t| with_scratch(scratch, |buf| task(t, buf, false)));
    } else {
        with_scratch(scratch, |buf| {
            (0..tasks).for_each(|t| task(t, buf, threads > 1))
        });
    }
}

/// Forward convolution followed by `epilogue` (a bias is `Epilogue::bias`), which the output
/// transform applies to each output row as it writes it. Shapes Winograd does not apply to (see
/// [`applies`]) fall back to im2col + GEMM with the same epilogue.
pub fn forward(mut f: Forward<'_>, epilogue: &Epilogue<'_>) {
    if !(applies(f.p) && forward_impl(f.reborrow(), epilogue)) {
        im2col::forward(f, epilogue)
    }
}

/// Input gradient: the forward Winograd convolution of `grad_out` with the weights rotated 180
/// degrees and in/out channels swapped, padded by `2 - pad` per side. Falls back to im2col when
/// Winograd does not apply or a pad exceeds 2 (the gradient would need negative padding).
pub fn backward_data(b: BackwardData<'_>) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
    if applies(p) {
        if let Some(q) = super::data_as_forward(p, out_hw) {
            let rotated = super::rotate_for_data(p, weight);
            let f = Forward::new(&q, (p.in_h, p.in_w), grad_out, &rotated, &mut *grad_input);
            if forward_impl(f, &Epilogue::default()) {
                return;
            }
        }
    }
    im2col::backward_data(BackwardData::new(p, out_hw, grad_out, weight, grad_input))
}

/// Weight and bias gradients. The shapes Winograd applies to (3x3, stride 1, dilation 1) run
/// F(2x2, 3x3) ([`weight_grad`]); the others, and those whose scratch would pass the bound,
/// im2col + GEMM.
pub fn backward_weight(b: BackwardWeight<'_>) {
    let (p, out_hw, input, grad_out, (grad_weight, grad_bias)) = b.parts();
    let g = Geom::for_weight_grad(p, out_hw);
    let fits = g.scratch_len().is_some_and(|n| n <= MAX_SCRATCH)
        && (16 * p.in_per_group())
            .checked_mul(p.out_channels)
            .is_some_and(|n| n <= MAX_SCRATCH);
    if applies(p) && fits {
        weight_grad(p, &g, input, grad_out, grad_weight);
        if let Some(gb) = grad_bias {
            im2col::bias_grad(p, out_hw.0 * out_hw.1, grad_out, gb);
        }
        return;
    }
    let grads = (grad_weight, grad_bias);
    im2col::backward_weight(BackwardWeight::new(p, out_hw, input, grad_out, grads))
}

/// Whether the F(2x2, 3x3) weight gradient can beat im2col's on `p`, for the autotuner's
/// candidates: 64+ channels either side on maps of 13x13 and up. Measured at batch 8 and 16
/// (`examples/wgrad_bench`, `conv_bench stride1`): 1.1-1.6x im2col's speed from 96 channels
/// either side on 13x13 to 56x56 maps, about even at 64 channels on 56x56; 0.5-0.8x with 32
/// output channels (DenseNet's 128->32), on 7x7 maps (their 2x2 blocks run a quarter empty)
/// and from 3 input channels. A candidate that can only lose is left out, so that a timing
/// disturbed by a neighbour cannot pick it.
pub fn weight_grad_may_pay(p: &Conv2dParams) -> bool {
    let Ok((oh, ow)) = p.validate() else {
        return false;
    };
    applies(p) && p.in_per_group() >= 64 && p.out_per_group() >= 64 && oh * ow >= 13 * 13
}

/// The weight gradient by Winograd F(2x2, 3x3) run backwards (Lavin & Gray 2016). With
/// `V = B^T d B`, the input tiles transformed as the forward transforms them, and `D = A dY A^T`,
/// each 2x2 block of the output gradient taken to the 16 transform points, the gradient of the
/// transformed weights at point `xi` is one product over all tiles, `dU_xi (C_out x C_in) =
/// sum_tiles D_xi V_xi^T`, and the weight gradient is `G^T dU G` per (out, in) pair: 16
/// multiplies per pair and 2x2 block of outputs where the lowered product does 36. (F(4x4)
/// would do 36 per 4x4 block, 2.25x fewer again, but its constants reach 8 and 1/24, and these
/// sums run over thousands of tiles.) Blocks of tile rows go as in the forward, their transforms
/// in L2 for their GEMMs; with enough blocks each thread sums its own into a private `dU`, the
/// sums added at the end, otherwise blocks run in turn with the 16 GEMMs over the pool.
fn weight_grad(
    p: &Conv2dParams,
    g: &Geom,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
) {
    let g = *g;
    debug_assert_eq!(g.m, 2);
    let isa = crate::simd::isa();
    let (cig, cog) = (g.cig, g.cog);
    // dU of one group: [xi][oc][ic].
    let du_len = g.points * cog * cig;
    let total = p.groups * du_len;
    let scratch = g.scratch_len().unwrap_or(0);
    let threads = rayon::current_num_threads();
    let tasks = p.groups * g.blocks;
    // Tasks `range` summed into `du` (every group's), each group's first overwriting it.
    let accumulate = |du: &mut [f32], range: Range<usize>, par: bool| {
        with_scratch(scratch, |buf| {
            let mut first = vec![true; p.groups];
            for t in range {
                let (gi, b) = (t / g.blocks, t % g.blocks);
                let beta = if first[gi] { 0.0 } else { 1.0 };
                first[gi] = false;
                let dug = &mut du[gi * du_len..(gi + 1) * du_len];
                grad_block(
                    &g,
                    gi,
                    g.block(b),
                    (input, grad_out),
                    dug,
                    beta,
                    buf,
                    par,
                    isa,
                );
            }
            for (gi, untouched) in first.into_iter().enumerate() {
                if untouched {
                    du[gi * du_len..(gi + 1) * du_len].fill(0.0);
                }
            }
        })
    };
    let mut du = crate::scratch::zeroed::<f32>(total);
    if threads > 1 && tasks >= 2 * threads {
        super::par::sum_over_threads(tasks, &mut du, |d, r| accumulate(d, r, false));
    } else {
        accumulate(&mut du, 0..tasks, threads > 1);
    }
    // dW = G^T dU G for each (group, out, in) pair.
    let du = &du;
    grad_weight
        .par_chunks_mut(cig * 9)
        .enumerate()
        .for_each(|(o, dw)| {
            let (gi, oc) = (o / cog, o % cog);
            let d = &du[gi * du_len..(gi + 1) * du_len];
            for (ic, dw) in dw.chunks_exact_mut(9).enumerate() {
                let x = |xi: usize| d[(xi * cog + oc) * cig + ic];
                // t[i] = (dU G)[i] along x, then dW[ky][kx] = (G^T t)[ky][kx] along y.
                let t: [[f32; 3]; 4] = std::array::from_fn(|i| {
                    gtt(x(4 * i), x(4 * i + 1), x(4 * i + 2), x(4 * i + 3))
                });
                for kx in 0..3 {
                    let c = gtt(t[0][kx], t[1][kx], t[2][kx], t[3][kx]);
                    for (ky, &v) in c.iter().enumerate() {
                        dw[ky * 3 + kx] = v;
                    }
                }
            }
        });
}

/// `G^T x` for one 4-vector, with F(2, 3)'s `G` (see [`gt`]).
#[inline(always)]
fn gtt(x0: f32, x1: f32, x2: f32, x3: f32) -> [f32; 3] {
    let (s, d) = ((x1 + x2) * 0.5, (x1 - x2) * 0.5);
    [x0 + s, d, s + x3]
}

/// One block of [`weight_grad`] (tile rows `units` of group `gi`): the input transform, the
/// output gradient's, and the 16 products summed into `du` (`[xi][oc][ic]`, over it when `beta`
/// is 1). `buf` holds V then D. `par` splits each step over the pool.
#[allow(clippy::too_many_arguments)]
fn grad_block(
    g: &Geom,
    gi: usize,
    units: Range<usize>,
    (input, grad_out): (&[f32], &[f32]),
    du: &mut [f32],
    beta: f32,
    buf: &mut [f32],
    par: bool,
    isa: Isa,
) {
    let cols = units.len() * g.tw;
    let pitch = g.pitch(units.len());
    let ld = g.points * pitch;
    let (v, rest) = buf.split_at_mut(g.cig * ld);
    let d = &mut rest[..g.cog * ld];
    transform_inputs::<2>(g, input, gi, &units, v, par, isa);
    if par {
        let per = chans_per_piece(g.cog);
        d.par_chunks_mut(per * ld).enumerate().for_each(|(k, dk)| {
            let c0 = k * per;
            grad_out_block(isa, g, grad_out, gi, &units, c0..(c0 + per).min(g.cog), dk);
        });
    } else {
        grad_out_block(isa, g, grad_out, gi, &units, 0..g.cog, d);
    }
    let (v, d): (&[f32], &[f32]) = (v, d);
    let (cog, cig) = (g.cog, g.cig);
    let out = SharedMut(du.as_mut_ptr());
    let product = |xi: usize| {
        // dU_xi (cog x cig) += D_xi (cog x cols) * V_xi^T (cols x cig).
        let a = Lhs::Raw(Mat::new(&d[xi * pitch..], ld, false));
        let b = Mat::new(&v[xi * pitch..], ld, true);
        // SAFETY: dU_xi (cog x cig at xi * cog * cig) lies inside du, and each xi is written
        // by one call only.
        unsafe {
            gemm::gemm_raw(
                cog,
                cig,
                cols,
                1.0,
                a,
                b,
                beta,
                out.at(xi * cog * cig),
                cig,
                false,
            )
        }
    };
    if par {
        (0..g.points).into_par_iter().for_each(product);
    } else {
        (0..g.points).for_each(product);
    }
}

kernel! {
    /// The output gradient of output channels `chans` (of group `gi`) for the block's tile rows,
    /// taken to F(2x2, 3x3)'s 16 transform points, `D = A dY A^T` per 2x2 block (zero past the
    /// output's edges), into `d` (layout `[oc][xi][pitch]`, as [`input_block`] lays out V).
    fn grad_out_block(
        g: &Geom,
        grad_out: &[f32],
        gi: usize,
        units: &Range<usize>,
        chans: Range<usize>,
        d: &mut [f32],
    ) {
        let pitch = g.pitch(units.len());
        let plane = g.oh * g.ow;
        for (oc, dc) in chans.zip(d.chunks_exact_mut(16 * pitch)) {
            let o = gi * g.cog + oc;
            for (k0, nu, t0, tb) in lane_chunks(g.tw, units.len()) {
                // y[a][b][lane]: row a, column b of the lane's 2x2 block of the gradient.
                let mut y = [[[0f32; TB]; 2]; 2];
                for j in 0..nu {
                    let u = units.start + k0 + j;
                    let (n, ty) = (u / g.th, u % g.th);
                    let src = &grad_out[(n * g.out_channels + o) * plane..][..plane];
                    for (a, ya) in y.iter_mut().enumerate() {
                        let oy = 2 * ty + a;
                        if oy >= g.oh {
                            continue;
                        }
                        let row = &src[oy * g.ow..][..g.ow];
                        for t in 0..tb {
                            for (b, yab) in ya.iter_mut().enumerate() {
                                let ox = 2 * (t0 + t) + b;
                                if ox < g.ow {
                                    yab[j * tb + t] = row[ox];
                                }
                            }
                        }
                    }
                }
                // A (y0, y1) = (y0, y0 + y1, y0 - y1, -y1): along y into f[i][b], then along
                // x into the points xi = 4 i + j.
                let mut f = [[[0f32; TB]; 2]; 4];
                for b in 0..2 {
                    for t in 0..TB {
                        let (y0, y1) = (y[0][b][t], y[1][b][t]);
                        f[0][b][t] = y0;
                        f[1][b][t] = y0 + y1;
                        f[2][b][t] = y0 - y1;
                        f[3][b][t] = -y1;
                    }
                }
                let mut pts = [[0f32; TB]; 16];
                for (i, fi) in f.iter().enumerate() {
                    for t in 0..TB {
                        let (x0, x1) = (fi[0][t], fi[1][t]);
                        pts[4 * i][t] = x0;
                        pts[4 * i + 1][t] = x0 + x1;
                        pts[4 * i + 2][t] = x0 - x1;
                        pts[4 * i + 3][t] = -x1;
                    }
                }
                // Whole 16-lane stores, as in input_block.
                let col = k0 * g.tw + t0;
                for (xi, l) in pts.iter().enumerate() {
                    dc[xi * pitch + col..][..TB].copy_from_slice(l);
                }
            }
        }
    }
}
