//! Indirect convolution: the forward of spatial convolutions without lowering, for the shapes
//! where lowering costs most: few output channels (DenseNet's 128 -> 32 growth convs,
//! GoogLeNet's narrow branches), small maps and moderate weights (see [`applies`]).
//!
//! im2col writes every receptive field out (`C_in * kH * kW` values per output position) so
//! that a GEMM can read it; with 32 output channels each lowered value then serves only 32
//! multiply-adds, and the lowering costs about a third of the convolution. Here the input is
//! copied once into zero-padded planes, and the micro-kernel reads each tap straight from them:
//! the value for output position `i` and tap `r = (c, ky, kx)` sits at `base[i] + off[r]`, with
//! `base[i]` the padded offset of the position's window and `off[r]` the tap's offset in it (an
//! indirection table, as in XNNPACK's indirect GEMM). A tile is 6 output positions (any six:
//! they need not share an output row) by 16 output channels; the weights are packed once per
//! call, or once per model by `prepare_forward`, into 16-channel panels `[kg][16]`. Each tile
//! sums its whole reduction in registers and goes to the output transposed, with the epilogue.
//!
//! Only on AVX2 and AVX-512 (elsewhere im2col runs); groups of 1, any stride, padding and
//! dilation. AVX-512 tiles are 6 positions by 32 or 64 channels (two or four panels), and there
//! 1x1 convs on 7x7 maps run here too, reading the input planes in place a block of channels at
//! a time ([`forward_pointwise`]).
use super::par::{with_scratch, SharedMut};
use super::{Conv2dParams, Epilogue, Forward};
use crate::gemm::{self, Mat, NR};
use crate::simd::{self, Isa};
use rayon::prelude::*;

/// Output positions per tile (the micro-kernel's rows).
const TP: usize = 6;
/// Output channels this path always takes: with this few, im2col's lowering is a large part
/// of the work. With more it takes small maps (at most `SMALL_MAP` positions, where the GEMM's
/// panels run short) and weights of at most `MAX_WEIGHTS` floats: each block of positions reads
/// every weight once, which larger weights pay for from L3 (VGG-16's 512-channel layers on
/// 28x28 maps run 8% faster as a GEMM; ResNet-50's 128-channel ones 15-25% slower).
const FEW_OUT: usize = 64;
const SMALL_MAP: usize = 256;
const MAX_WEIGHTS: usize = 1 << 20;
/// Most output positions of a 1x1 conv this path takes (on AVX-512; see [`small_1x1`]).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SMALL_1X1: usize = 64;
/// Most output positions of a 1x1 conv at batch 1 this path takes (14x14).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SMALL_1X1_B1: usize = 196;
/// Output positions per parallel task of the pointwise forward (16 tiles).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BLOCK: usize = 96;
/// Output positions per parallel task of the other kernels (64 tiles). Each task's sums are
/// stored a block at a time, a run of this many positions in each channel's plane: in blocks of
/// 96 the stem conv (3 -> 64, 7x7 /2) at batch 8, whose 26 MB output goes to DRAM, took
/// 5.5-5.7 ms, in blocks of 384 5.1-5.4; DenseNet's 128->32 @28 at batch 1 (10 tasks of 84
/// positions before, 4 of 196 now) 0.150 -> 0.133-0.138 ms (`conv_b1`, two threads).
const SPATIAL_BLOCK: usize = 384;
/// Most floats of padded input held at once (16 MiB).
const MAX_PADDED: usize = 4 << 20;

/// Whether the forward of `p` runs here: a spatial kernel, one group, a shape where it pays
/// (see [`FEW_OUT`]), padded planes of a bounded size, on a CPU with AVX2.
pub fn applies(p: &Conv2dParams) -> bool {
    let isa = simd::isa();
    let Ok((oh, ow)) = p.validate() else {
        return false;
    };
    let pays = p.out_channels <= FEW_OUT || oh * ow <= SMALL_MAP || p.weight_len() <= MAX_WEIGHTS;
    // 1x1 convs only on AVX-512 (on AVX2 the GEMM stays ahead), see `small_1x1`.
    let pointwise_ok =
        simd::dispatch!(isa, avx512 => small_1x1(p.batch, oh * ow), avx2 => false, _ => false);
    possible(p) && pays && (p.kernel_h * p.kernel_w > 1 || pointwise_ok)
}

/// Whether a 1x1 conv of `batch` items with `positions` outputs each runs here on AVX-512:
/// maps of at most 64 outputs (7x7), where a GEMM's 16-column panels run a quarter empty
/// (49 = 3 x 16 + 1) and 6-position tiles do not, and 14x14 at batch 1, where 196 columns are
/// 12.25 panels and a GEMM's units split unevenly. The two paths' calls taking turns in one
/// process, weights from 48 copies in turn (out of cache, as in a plan): ResNet-50's 1024->256
/// @14 took 0.25 ms here against 0.28 as a GEMM, DenseNet's 1024->128 @14 0.13 against 0.15,
/// 256->1024 @14 the same; at batch 8 the GEMM batches the items' columns and stays ahead.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn small_1x1(batch: usize, positions: usize) -> bool {
    positions <= SMALL_1X1 || (batch == 1 && positions <= SMALL_1X1_B1)
}

/// Whether this path can run the forward of `p` at all (whether it pays is [`applies`]): one
/// group, padded planes of a bounded size, AVX2, and a spatial kernel or AVX-512.
pub fn possible(p: &Conv2dParams) -> bool {
    let isa = simd::isa();
    let avx2 = simd::dispatch!(isa, avx2 => true, _ => false);
    let any_kernel = simd::dispatch!(isa, avx512 => true, avx2 => false, _ => false);
    let plane = (p.in_h + p.pad_top + p.pad_bottom) * (p.in_w + p.pad_left + p.pad_right);
    avx2 && p.groups == 1
        && (p.kernel_h * p.kernel_w > 1 || any_kernel)
        && p.in_channels
            .checked_mul(plane)
            .is_some_and(|n| n <= MAX_PADDED)
}

/// The weights (`[oc][kg]`) as 16-channel panels of their transpose, `[oc / 16][kg][16]`, zero
/// past the last channel.
pub(crate) fn pack_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let kg = p.in_channels * p.kernel_h * p.kernel_w;
    gemm::pack_b_whole(Mat::new(weight, kg, true), kg, p.out_channels)
}

/// Forward with the weights packed by [`pack_weights`].
pub(crate) fn forward(f: Forward<'_>, packed: &[f32], epilogue: &Epilogue<'_>) {
    forward_in(f, packed, epilogue, MAX_PADDED)
}

/// [`forward`] padding at most `budget` floats of input at a time (whole items).
fn forward_in(f: Forward<'_>, packed: &[f32], epilogue: &Epilogue<'_>, budget: usize) {
    let isa = simd::isa();
    if super::im2col::is_pointwise(f.p)
        && simd::dispatch!(isa, avx512 => true, avx2 => false, _ => false)
    {
        return forward_pointwise(f, packed, epilogue);
    }
    let (p, (oh, ow), input, _, output) = f.parts();
    let (hp, wp) = (
        p.in_h + p.pad_top + p.pad_bottom,
        p.in_w + p.pad_left + p.pad_right,
    );
    let (plane, ohw, cin, cout) = (hp * wp, oh * ow, p.in_channels, p.out_channels);
    let kg = cin * p.kernel_h * p.kernel_w;
    let item = cin * plane;
    // Tap offsets inside a padded window, in the weights' (c, ky, kx) order.
    let mut off = Vec::with_capacity(kg);
    for c in 0..cin {
        for ky in 0..p.kernel_h {
            for kx in 0..p.kernel_w {
                off.push(c * plane + ky * p.dilation_h * wp + kx * p.dilation_w);
            }
        }
    }
    // Items go in groups whose padded planes fit the budget; tasks are (item, position block).
    let per_group = (budget / item.max(1)).clamp(1, p.batch);
    // Blocks of at most SPATIAL_BLOCK positions, as even as whole tiles allow (784 goes
    // 264-264-256); smaller ones (down to five tiles) where the items' blocks give the threads
    // fewer than two tasks each, before the channel panels are split (see `tasks_per_item`).
    let threads = rayon::current_num_threads();
    let items_here = per_group.min(p.batch);
    let mut blocks = ohw.div_ceil(SPATIAL_BLOCK);
    while items_here * blocks < 2 * threads && ohw.div_ceil(blocks + 1) >= 5 * TP {
        blocks += 1;
    }
    let mut block = ohw.div_ceil(blocks).next_multiple_of(TP);
    // Then as many tasks as make whole rounds of the threads, if up to half as many blocks again
    // give that: DenseNet's 128->32 @28 at batch 1 is 9 blocks of 90 positions, which kept one
    // thread of two idle for a ninth of the time (0.244 ms; in 10 blocks of 84, 0.186).
    let first = ohw.div_ceil(block);
    if (items_here * first) % threads != 0 {
        if let Some(b) = (first + 1..=first + first / 2)
            .map(|more| ohw.div_ceil(more).next_multiple_of(TP))
            .find(|&b| (items_here * ohw.div_ceil(b)) % threads == 0)
        {
            block = b;
        }
    }
    let blocks = ohw.div_ceil(block);
    let isa = simd::isa();
    let off_max = off.iter().max().copied().unwrap_or(0);
    // A 1x1 conv sums its taps in the passes the GEMM would (see `tile_sum`), so it gives the
    // GEMM's bits; other kernels sum all taps in one chain.
    let chunk = if p.kernel_h * p.kernel_w == 1 {
        gemm::kc_step(kg)
    } else {
        kg.max(1)
    };
    let out = SharedMut(output.as_mut_ptr());
    let panels = cout.div_ceil(NR);
    // AVX-512 tiles take two or four adjacent channel panels at once (see `tile_sum`).
    let pairs = simd::dispatch!(isa, avx512 => true, avx2 => false, _ => false);
    // Tasks are (item, position block, run of channel panels): channels are split too when
    // positions alone give too few tasks to keep every thread busy (a 7x7 map at batch 1).
    let want = 2 * threads;
    let tasks_per_item = blocks * (want.div_ceil(items_here * blocks)).clamp(1, panels);
    let splits = tasks_per_item / blocks;
    with_scratch(per_group * item, |xp| {
        for n0 in (0..p.batch).step_by(per_group) {
            let items = per_group.min(p.batch - n0);
            // Zero-padded copies of the group's input planes, a plane per task.
            xp[..items * item]
                .par_chunks_mut(plane)
                .enumerate()
                .for_each(|(k, dst)| {
                    let src = &input[(n0 * cin + k) * p.in_h * p.in_w..][..p.in_h * p.in_w];
                    // Only the padding is zeroed: clearing the whole plane first was 3% of
                    // the profile of DenseNet's 128->32 @56 at batch 8 on one thread.
                    let (rows, (top, data)) = (p.in_h * wp, dst.split_at_mut(p.pad_top * wp));
                    top.fill(0.0);
                    let (data, bottom) = data.split_at_mut(rows);
                    bottom.fill(0.0);
                    for (d, row) in data.chunks_exact_mut(wp).zip(src.chunks_exact(p.in_w)) {
                        let (left, rest) = d.split_at_mut(p.pad_left);
                        left.fill(0.0);
                        rest[..p.in_w].copy_from_slice(row);
                        rest[p.in_w..].fill(0.0);
                    }
                });
            let xp: &[f32] = xp;
            let off = &off[..];
            (0..items * tasks_per_item).into_par_iter().for_each(|t| {
                let (i, b, s) = (t / tasks_per_item, t % tasks_per_item / splits, t % splits);
                let n = n0 + i;
                let qs = s * panels / splits..(s + 1) * panels / splits;
                let np = qs.len();
                let (j0, j1) = (b * block, ((b + 1) * block).min(ohw));
                let x = &xp[i * item..][..item];
                // The block's sums, position-major: ct[j][oc] (panels of 16 channels).
                with_scratch(SPATIAL_BLOCK * np * NR, |ct| {
                    // Window bases of the block's positions, six per tile; positions past
                    // the block repeat its last one (their results are not used).
                    let tiles = (j1 - j0).div_ceil(TP);
                    let mut bases = [[0usize; TP]; SPATIAL_BLOCK / TP];
                    for (tj, tb) in bases[..tiles].iter_mut().enumerate() {
                        for (t, bv) in tb.iter_mut().enumerate() {
                            let pos = (j0 + tj * TP + t).min(j1 - 1);
                            let (oy, ox) = (pos / ow, pos % ow);
                            *bv = oy * p.stride_h * wp + ox * p.stride_w;
                        }
                    }
                    // Panel by panel (four or two at a time on AVX-512), so the panels' weights
                    // serve every tile of the block from cache before the next are read.
                    let mut qi = 0;
                    while qi < np {
                        let many = match np - qi {
                            _ if !pairs => 1,
                            4.. => 4,
                            r => r.min(2),
                        };
                        let q = qs.start + qi;
                        let w = &packed[q * kg * NR..][..many * kg * NR];
                        for (tj, base) in bases[..tiles].iter().enumerate() {
                            let at = ((tj * np + qi) * TP) * NR;
                            let tile = &mut ct[at..][..many * TP * NR];
                            tile_sum(isa, x, base, (off, off_max, chunk), w, tile);
                        }
                        qi += many;
                    }
                    // SAFETY: positions j0..j1 of item n's channels in panels qs are inside the
                    // output and belong to this task alone.
                    unsafe {
                        store_block(ct, qs.clone(), (n, cout, ohw), (j0, j1), out, epilogue, isa)
                    };
                });
            });
        }
    });
}

/// Taps per block of the pointwise forward: one block of four weight panels (16 KiB) and of the
/// block's input rows (at most `BLOCK` x 64 floats, 24 KiB) stay in L1 while every tile of the
/// block uses them (blocks of 32 taps ran 3-7% slower).
#[cfg(target_arch = "x86_64")]
const PW_TAPS: usize = 64;
/// Most channel panels per task of the pointwise forward: the task's sums, `BLOCK` x 16 x this
/// many floats (96 KiB), stay in L2 while the blocks of taps go past.
#[cfg(target_arch = "x86_64")]
const PW_PANELS: usize = 16;

/// The forward of a 1x1 stride-1 unpadded conv on AVX-512, with the weights of
/// [`pack_weights`]: tiles of 6 positions by 64 channels (32 for a task's last two panels) as
/// in [`forward_in`], but read straight from the input planes (a tap is a channel, `hw` floats
/// on), with no padded copy, and in
/// blocks of [`PW_TAPS`] taps that stay in L1 while every tile of the task's positions uses them
/// (the general path runs each tile through all its taps, reading the weights from L2 for every
/// tile: 608->128 on 7x7 maps at batch 8 ran at half the FMA peak). The taps are summed in the
/// GEMM's passes, as there ([`tile_sum`]), so the bits are the GEMM's.
#[cfg(target_arch = "x86_64")]
fn forward_pointwise(f: Forward<'_>, packed: &[f32], epilogue: &Epilogue<'_>) {
    let (p, (oh, ow), input, _, output) = f.parts();
    let (ohw, cin, cout) = (oh * ow, p.in_channels, p.out_channels);
    let blocks = ohw.div_ceil(BLOCK);
    let block = ohw.div_ceil(blocks).next_multiple_of(TP);
    let blocks = ohw.div_ceil(block);
    let panels = cout.div_ceil(NR);
    // Tasks take at most PW_PANELS panels, so their sums (reloaded for every block of taps)
    // stay in L2.
    let threads = rayon::current_num_threads();
    let most = panels.div_ceil(2);
    let mut splits = (4 * threads)
        .div_ceil(p.batch * blocks)
        .max(panels.div_ceil(PW_PANELS))
        .clamp(1, most);
    // A few tasks go to the threads in whole rounds: 9 equal tasks on 2 threads keep one of them
    // idle for the ninth (1024->256 @14 at batch 1 took 0.33 ms in 9 tasks, 0.27 in 12).
    while p.batch * blocks * splits < 8 * threads
        && (p.batch * blocks * splits) % threads != 0
        && splits < most
    {
        splits += 1;
    }
    let run_len = gemm::kc_step(cin);
    let isa = simd::isa();
    let out = SharedMut(output.as_mut_ptr());
    (0..p.batch * blocks * splits)
        .into_par_iter()
        .for_each(|t| {
            let (n, b, s) = (t / (blocks * splits), t / splits % blocks, t % splits);
            // Whole pairs of panels per task, so every tile is a four- or two-panel one but
            // maybe the last.
            let pairs = panels.div_ceil(2);
            let qs =
                (s * pairs / splits * 2).min(panels)..((s + 1) * pairs / splits * 2).min(panels);
            let np = qs.len();
            let (j0, j1) = (b * block, ((b + 1) * block).min(ohw));
            let x = &input[n * cin * ohw..][..cin * ohw];
            let tiles = (j1 - j0).div_ceil(TP);
            // Positions of each tile; past the block they repeat its last (results unused).
            let mut bases = [[0usize; TP]; BLOCK / TP];
            for (tj, tb) in bases[..tiles].iter_mut().enumerate() {
                for (i, bv) in tb.iter_mut().enumerate() {
                    *bv = (j0 + tj * TP + i).min(j1 - 1);
                }
            }
            // ct: the block's sums, as in forward_in; chain: a run's partial sums after the first.
            let ct_len = BLOCK * np.max(1) * NR;
            with_scratch(2 * ct_len, |buf| {
                let (ct, chain) = buf.split_at_mut(ct_len);
                for (ci, r0) in (0..cin).step_by(run_len).enumerate() {
                    let r1 = (r0 + run_len).min(cin);
                    let into = if ci == 0 { &mut *ct } else { &mut *chain };
                    for k0 in (r0..r1).step_by(PW_TAPS) {
                        let k1 = (k0 + PW_TAPS).min(r1);
                        let mut qi = 0;
                        while qi < np {
                            let many = if np - qi >= 4 { 4 } else { (np - qi).min(2) };
                            let two = many >= 2;
                            let q = qs.start + qi;
                            let w = &packed[(q * cin + k0) * NR..];
                            let wl = &packed[((q + many - 1) * cin + k0) * NR..];
                            let w1 = if two {
                                &packed[((q + 1) * cin + k0) * NR..]
                            } else {
                                w
                            };
                            assert!(w.len() >= (k1 - k0) * NR && wl.len() >= (k1 - k0) * NR);
                            for (tj, base) in bases[..tiles].iter().enumerate() {
                                let at = ((tj * np + qi) * TP) * NR;
                                let tile = &mut into[at..][..many * TP * NR];
                                // Every position read is below ohw, every tap below cin.
                                assert!(k1 <= cin && base[TP - 1] < ohw);
                                // SAFETY: AVX-512 (checked by the caller); x + k * ohw + base[i]
                                // for k in k0..k1 is inside x, the weights and the tile hold what
                                // is read and written (asserted above).
                                unsafe {
                                    let xs = x.as_ptr().add(k0 * ohw);
                                    let (w0, t0) = (w.as_ptr(), tile.as_mut_ptr());
                                    let ws = [w0, w1.as_ptr()];
                                    let ts = [t0, t0.add(TP * NR)];
                                    // Tap k's inputs are channel k's plane: k * ohw on.
                                    let offs = (0..k1 - k0).map(|k| k * ohw);
                                    let sums = if k0 > r0 { Sums::GoOn } else { Sums::Store };
                                    if many == 4 {
                                        let ws4 = std::array::from_fn(|h| w0.add(h * cin * NR));
                                        let ts4 = std::array::from_fn(|h| t0.add(h * TP * NR));
                                        tile_avx512::<4, true>(xs, base, offs, ws4, ts4, sums)
                                    } else if two {
                                        tile_avx512::<2, true>(xs, base, offs, ws, ts, sums)
                                    } else {
                                        tile_avx512::<1, true>(xs, base, offs, [w0], [t0], sums)
                                    }
                                }
                            }
                            qi += many;
                        }
                    }
                    if ci > 0 {
                        // The run's sums added into the block's, as the GEMM adds each pass into C.
                        let len = tiles * np * TP * NR;
                        ct[..len]
                            .iter_mut()
                            .zip(&chain[..len])
                            .for_each(|(c, v)| *c += v);
                    }
                }
                // SAFETY: positions j0..j1 of item n's channels in panels qs are inside the
                // output and belong to this task alone.
                unsafe {
                    store_block(ct, qs.clone(), (n, cout, ohw), (j0, j1), out, epilogue, isa)
                };
            });
        });
}

/// A block's sums `ct` (position-major: tile by tile, panel by panel of the panels `qs`, six
/// positions of 16 channels each) transposed into item `n`'s output planes at positions
/// `j0..j1`, each row piece finished by the epilogue while it is in cache.
///
/// # Safety
/// Positions `j0..j1` of item `n`'s channels in panels `qs` must lie inside the output behind
/// `out` (`cout` planes of `ohw` per item) and be written by nothing else meanwhile.
unsafe fn store_block(
    ct: &[f32],
    qs: std::ops::Range<usize>,
    (n, cout, ohw): (usize, usize, usize),
    (j0, j1): (usize, usize),
    out: SharedMut,
    epilogue: &Epilogue<'_>,
    isa: Isa,
) {
    let np = qs.len();
    #[cfg(target_arch = "x86_64")]
    if simd::dispatch!(isa, avx512 => true, avx2 => false, _ => false) {
        for (qi, q) in qs.clone().enumerate() {
            let rows = (cout - q * NR).min(NR);
            let at = (n * cout + q * NR) * ohw + j0;
            // SAFETY: AVX-512 (this branch); ct holds the block's tiles (each position's 16
            // sums of panel qi), and rows `at + l * ohw` for l < rows, j1 - j0 long, lie inside
            // the output and are this call's alone (the caller's contract).
            transpose_store_avx512(ct, (np, qi), j1 - j0, out.at(at), ohw, rows);
            if !epilogue.is_identity() {
                for l in 0..rows {
                    let row = std::slice::from_raw_parts_mut(out.at(at + l * ohw), j1 - j0);
                    epilogue.apply_row(row, q * NR + l, at + l * ohw, isa);
                }
            }
        }
        return;
    }
    for oc in qs.start * NR..(qs.end * NR).min(cout) {
        let (qi, l) = (oc / NR - qs.start, oc % NR);
        let at = (n * cout + oc) * ohw + j0;
        let row = std::slice::from_raw_parts_mut(out.at(at), j1 - j0);
        // Tile by tile: six positions of a tile sit NR apart in ct.
        for (tj, piece) in row.chunks_mut(TP).enumerate() {
            let src = &ct[((tj * np + qi) * TP) * NR + l..];
            for (ti, v) in piece.iter_mut().enumerate() {
                *v = src[ti * NR];
            }
        }
        if !epilogue.is_identity() {
            epilogue.apply_row(row, oc, at, isa);
        }
    }
}

/// Panel `qi` of a block's sums (`ct`, position-major as in [`store_block`]: tile by tile, panel
/// by panel of `np`, six positions of 16 channels each) into `rows` output rows of `len`
/// positions each, `ld` apart from `out` on: 16 positions at a time, one vector per position
/// transposed in registers into one vector per channel (a 16x16 transpose: unpacks of pairs of
/// floats, then of pairs of doubles, then two rounds of 128-bit lane shuffles). The stem
/// convolution (3 -> 64 channels, 7x7, stride 2) at batch 1 spent 18% of its time in the
/// scalar transpose this replaces.
///
/// # Safety
/// CPU has AVX-512 F; `ct` holds the sums of every tile covering `len` positions for `np`
/// panels; `out + l * ld + j` for `l < rows`, `j < len` is writable and written by nothing else.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn transpose_store_avx512(
    ct: &[f32],
    (np, qi): (usize, usize),
    len: usize,
    out: *mut f32,
    ld: usize,
    rows: usize,
) {
    use std::arch::x86_64::*;
    for p0 in (0..len).step_by(NR) {
        let m = (len - p0).min(NR);
        // Position p's 16 sums: tile p / TP, panel qi, row p % TP of the tile.
        let mut r = [_mm512_setzero_ps(); NR];
        for (k, v) in r.iter_mut().enumerate().take(m) {
            let p = p0 + k;
            let at = ((p / TP * np + qi) * TP + p % TP) * NR;
            *v = _mm512_loadu_ps(ct[at..][..NR].as_ptr());
        }
        // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved, per 128-bit lane (columns 4j, 4j+1 and
        // 4j+2, 4j+3).
        let mut t = [_mm512_setzero_ps(); NR];
        for i in 0..NR / 2 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4q + s], lane j: column 4j + s of rows 4q..4q+3.
        let mut u = [_mm512_setzero_ps(); NR];
        for q in 0..NR / 4 {
            let pd = |v: __m512| _mm512_castps_pd(v);
            let (a, b, c, d) = (
                pd(t[4 * q]),
                pd(t[4 * q + 1]),
                pd(t[4 * q + 2]),
                pd(t[4 * q + 3]),
            );
            u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
            u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
            u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
            u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
        }
        // Column 4j + s: lane j of u[s], u[4 + s], u[8 + s], u[12 + s].
        let mask: __mmask16 = if m == NR { !0 } else { (1u16 << m) - 1 };
        for s in 0..4 {
            let p0v = _mm512_shuffle_f32x4::<0x88>(u[s], u[4 + s]);
            let p1v = _mm512_shuffle_f32x4::<0xDD>(u[s], u[4 + s]);
            let q0v = _mm512_shuffle_f32x4::<0x88>(u[8 + s], u[12 + s]);
            let q1v = _mm512_shuffle_f32x4::<0xDD>(u[8 + s], u[12 + s]);
            let cols = [
                (s, _mm512_shuffle_f32x4::<0x88>(p0v, q0v)),
                (4 + s, _mm512_shuffle_f32x4::<0x88>(p1v, q1v)),
                (8 + s, _mm512_shuffle_f32x4::<0xDD>(p0v, q0v)),
                (12 + s, _mm512_shuffle_f32x4::<0xDD>(p1v, q1v)),
            ];
            for (l, v) in cols {
                if l >= rows {
                    continue;
                }
                // A whole vector stores plainly (see `gemm::kernel`'s stores).
                if m == NR {
                    _mm512_storeu_ps(out.add(l * ld + p0), v);
                } else {
                    _mm512_mask_storeu_ps(out.add(l * ld + p0), mask, v);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn forward_pointwise(_: Forward<'_>, _: &[f32], _: &Epilogue<'_>) {
    unreachable!("the pointwise forward runs on AVX-512 only")
}

/// One 6-position by 16-channel tile: `tile[i][l] = sum_r x[base[i] + off[r]] * w[r][l]`; or
/// two or four, for the next panels of weights and the next tiles, when `w` holds that many
/// panels (AVX-512 only: 12 or 24 accumulators of 16 lanes). Four panels read each position's
/// input once per 24 FMAs instead of 12: at batch 1 the 7x7 stride-2 stem (3 -> 64 channels)
/// went from 0.58 to 0.56 ms and AlexNet's 11x11 stride-4 one from 0.36 to 0.33 ms; wider
/// layers (GoogLeNet's 3x3 160->320 and 96->208 @14) gained 2-4% (medians, old and new
/// binaries taking turns).
///
/// The taps go in runs of `chunk`: each run is one FMA chain from zero, and the runs' sums are
/// added into the tile in order. With the GEMM's pass length (`gemm::kc_step`) that is how the
/// SGEMM sums a 1x1 conv (each KC pass's register sums added into C), so the bits are the same
/// whichever path runs a shape.
#[inline]
fn tile_sum(
    isa: Isa,
    x: &[f32],
    base: &[usize; TP],
    (off, off_max, chunk): (&[usize], usize, usize),
    w: &[f32],
    tile: &mut [f32],
) {
    let chunk = chunk.max(1);
    // Every address read is inside x: the largest window base plus the largest tap offset is
    // the last padded input value any output position reads.
    let last = base.iter().max().copied().unwrap_or(0) + off_max;
    let panel = off.len() * NR;
    // Panels in this call: four or two on AVX-512 (as many as `w` holds), else one.
    let many = match w.len() / panel.max(1) {
        4.. => 4,
        n => n.min(2),
    };
    assert!(last < x.len() && w.len() >= panel && tile.len() >= many.max(1) * TP * NR);
    simd::dispatch!(isa,
        avx512 => {
            let (x, w, t) = (x.as_ptr(), w.as_ptr(), tile.as_mut_ptr());
            // SAFETY: the CPU has AVX-512 (this arm) and every index is in bounds (asserted
            // above: two panels and two tiles when `two`).
            unsafe {
                for (ci, run) in off.chunks(chunk).enumerate() {
                    let w = w.add(ci * chunk * NR);
                    let sums = if ci > 0 { Sums::Add } else { Sums::Store };
                    let offs = run.iter().copied();
                    if many == 4 {
                        let ws = std::array::from_fn(|h| w.add(h * panel));
                        let ts = std::array::from_fn(|h| t.add(h * TP * NR));
                        tile_avx512::<4, false>(x, base, offs, ws, ts, sums)
                    } else if many == 2 {
                        let (ws, ts) = ([w, w.add(panel)], [t, t.add(TP * NR)]);
                        tile_avx512::<2, false>(x, base, offs, ws, ts, sums)
                    } else {
                        tile_avx512::<1, false>(x, base, offs, [w], [t], sums)
                    }
                }
            }
        },
        avx2 => {
            debug_assert!(many == 1, "several panels only on AVX-512");
            // SAFETY: the CPU has AVX2 (this arm) and every index is in bounds (asserted above).
            unsafe {
                for (ci, run) in off.chunks(chunk).enumerate() {
                    let w = w.as_ptr().add(ci * chunk * NR);
                    tile_avx2(x.as_ptr(), base, run, w, tile.as_mut_ptr(), ci > 0)
                }
            }
        },
        _ => {
            for (ci, run) in off.chunks(chunk).enumerate() {
                let w = &w[ci * chunk * NR..];
                for (i, &bi) in base.iter().enumerate() {
                    let mut acc = [0f32; NR];
                    for (r, &o) in run.iter().enumerate() {
                        let v = x[bi + o];
                        for (a, &wv) in acc.iter_mut().zip(&w[r * NR..][..NR]) {
                            *a += v * wv;
                        }
                    }
                    let t = &mut tile[i * NR..][..NR];
                    if ci == 0 {
                        t.copy_from_slice(&acc);
                    } else {
                        t.iter_mut().zip(&acc).for_each(|(t, a)| *t += a);
                    }
                }
            }
        }
    )
}

/// AVX2+FMA tile: 12 accumulators (6 positions by two 8-channel halves), per tap two weight
/// vectors and six broadcasts from the positions' windows; the sums go to `tile`, or are
/// added to it with `add`.
///
/// # Safety
/// CPU has AVX2+FMA; `x + base[i] + off[r]` readable for all i, r; `w` holds `off.len() * 16`
/// floats; `tile` holds 6 x 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(
    x: *const f32,
    base: &[usize; TP],
    off: &[usize],
    w: *const f32,
    tile: *mut f32,
    add: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; TP];
    let xs = base.map(|b| x.add(b));
    for (r, &o) in off.iter().enumerate() {
        let w0 = _mm256_loadu_ps(w.add(r * NR));
        let w1 = _mm256_loadu_ps(w.add(r * NR + 8));
        for (i, a) in acc.iter_mut().enumerate() {
            let v = _mm256_broadcast_ss(&*xs[i].add(o));
            a[0] = _mm256_fmadd_ps(v, w0, a[0]);
            a[1] = _mm256_fmadd_ps(v, w1, a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (h, &v) in a.iter().enumerate() {
            let at = tile.add(i * NR + 8 * h);
            let v = if add {
                _mm256_add_ps(_mm256_loadu_ps(at), v)
            } else {
                v
            };
            _mm256_storeu_ps(at, v);
        }
    }
}

/// How an AVX-512 tile's sums meet what its tile buffer holds.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq)]
enum Sums {
    /// Stored over it.
    Store,
    /// Added to it (a later pass of the GEMM's, as in [`tile_avx2`]).
    Add,
    /// Its values are the chain so far, which goes on from them: loaded, summed into, stored,
    /// bit for bit one FMA chain across the calls (the pointwise forward's blocks of taps).
    GoOn,
}

/// AVX-512 tile: `V` (1, 2 or 4) panels of 16 channels, 6 x V accumulators of 16 lanes; per tap
/// `r` (the `r`-th of `offs`, read at `x + base[i] + offs[r]`) V weight vectors and six
/// broadcasts; the sums meet the tile as `sums` says. Each sum is the same FMA chain as in
/// [`tile_avx2`], so the bits are the same.
///
/// With `PREFETCH` (the pointwise forward) each tap also prefetches its weights `PW_TAPS` taps
/// on: the same panels' next block of taps. There the weights are a large 1x1 conv's (512 x 2048
/// in ResNet-50), which a compiled plan finds in DRAM; prefetching them a block ahead took
/// 512->2048 @7 at batch 1 with cold weights from 0.41 to 0.30 ms and 2048->512 from 0.39 to
/// 0.27 (warm: 0.27 and 0.26). The general forward's weights are small enough to stay in L2
/// (128->32: 147 KB), where the prefetches only cost issue slots.
///
/// # Safety
/// CPU has AVX-512 F; `x + base[i] + o` readable for all i and every `o` of `offs`; each used
/// `w[h]` holds 16 floats per tap and each used `tile[h]` 6 x 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn tile_avx512<const V: usize, const PREFETCH: bool>(
    x: *const f32,
    base: &[usize; TP],
    offs: impl Iterator<Item = usize>,
    w: [*const f32; V],
    tile: [*mut f32; V],
    sums: Sums,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; TP];
    if sums == Sums::GoOn {
        for (i, a) in acc.iter_mut().enumerate() {
            for (h, v) in a.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(tile[h].add(i * NR));
            }
        }
    }
    let xs = base.map(|b| x.add(b));
    for (r, o) in offs.enumerate() {
        if PREFETCH {
            for wh in &w[..V] {
                _mm_prefetch::<_MM_HINT_T0>(wh.wrapping_add((r + PW_TAPS) * NR) as *const i8);
            }
        }
        let mut wv = [_mm512_setzero_ps(); V];
        for (h, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w[h].add(r * NR));
        }
        for (i, a) in acc.iter_mut().enumerate() {
            let v = _mm512_set1_ps(*xs[i].add(o));
            for (ah, &wh) in a.iter_mut().zip(&wv) {
                *ah = _mm512_fmadd_ps(v, wh, *ah);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (h, &v) in a.iter().enumerate() {
            let at = tile[h].add(i * NR);
            let v = if sums == Sums::Add {
                _mm512_add_ps(_mm512_loadu_ps(at), v)
            } else {
                v
            };
            _mm512_storeu_ps(at, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic input and weights for `p` in [-1, 1].
    fn data(p: &Conv2dParams) -> (Vec<f32>, Vec<f32>) {
        let x = (0..p.input_len())
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let w = (0..p.weight_len())
            .map(|i| ((i * 13 % 29) as f32) / 14.0 - 1.0)
            .collect();
        (x, w)
    }

    /// Items padded a few at a time (a budget below the batch's input) give the results of
    /// all at once, bit for bit.
    #[test]
    fn item_groups_agree() {
        if !simd::dispatch!(simd::isa(), avx2 => true, _ => false) {
            return; // the path runs only on AVX2
        }
        let p =
            Conv2dParams::from_shapes([5, 3, 9, 11], [7, 3, 3, 3], [2, 1], [1, 2, 0, 1], [1, 2], 1)
                .unwrap();
        let out_hw = p.validate().unwrap();
        let (x, w) = data(&p);
        let packed = pack_weights(&p, &w);
        let ep = Epilogue::default();
        let run = |budget: usize| {
            let mut y = vec![f32::NAN; p.output_len(out_hw)];
            forward_in(
                Forward::new(&p, out_hw, &x, &w, &mut y),
                &packed,
                &ep,
                budget,
            );
            y
        };
        let all = run(MAX_PADDED);
        assert!(all.iter().all(|v| v.is_finite()));
        for budget in [1, 3 * 12 * 14 * 2] {
            let got = run(budget);
            assert!(
                got.iter()
                    .zip(&all)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "budget {budget}"
            );
        }
    }

    /// Blocks re-cut so the tasks make whole rounds of the threads (784 positions: 9 blocks
    /// become 10 on 2 threads, 12 on 3 and 4) still cover every position once: every thread
    /// count gives the bits of one thread, and no output is left unwritten.
    #[test]
    fn thread_rounds_cover_every_position() {
        if !simd::dispatch!(simd::isa(), avx2 => true, _ => false) {
            return; // the path runs only on AVX2
        }
        for (c, oc, hw) in [(24, 32, 28), (16, 40, 56), (8, 32, 13)] {
            let p =
                Conv2dParams::from_shapes([1, c, hw, hw], [oc, c, 3, 3], [1, 1], [1; 4], [1, 1], 1)
                    .unwrap();
            let out_hw = p.validate().unwrap();
            let (x, w) = data(&p);
            let packed = pack_weights(&p, &w);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut y = vec![f32::NAN; p.output_len(out_hw)];
                pool.install(|| {
                    forward(
                        Forward::new(&p, out_hw, &x, &w, &mut y),
                        &packed,
                        &Epilogue::default(),
                    )
                });
                y
            };
            let one = run(1);
            assert!(one.iter().all(|v| v.is_finite()), "{c}->{oc} @{hw}");
            for threads in [2, 3, 4] {
                let got = run(threads);
                assert!(
                    got.iter()
                        .zip(&one)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{c}->{oc} @{hw}, {threads} threads"
                );
            }
        }
    }

    /// The (AVX-512 transposing) store puts every sum where the layout says: blocks of 1 to 40
    /// positions (partial vectors of 16, partial tiles of 6), every panel of three, a last panel
    /// of 5 channels; nothing outside the rows is written.
    #[test]
    fn stored_block_is_the_transpose() {
        let (np, cout, ohw, j0) = (3, 2 * NR + 5, 45, 2);
        for len in [1usize, 5, 6, 15, 16, 17, 33, 40] {
            let ct: Vec<f32> = (0..len.div_ceil(TP) * np * TP * NR)
                .map(|i| i as f32 * 0.5 + 1.0)
                .collect();
            let mut y = vec![-7.0f32; 2 * cout * ohw];
            let out = SharedMut(y.as_mut_ptr());
            let ep = Epilogue::default();
            // SAFETY: positions j0..j0 + len of item 1's channels lie inside y.
            unsafe {
                store_block(
                    &ct,
                    0..np,
                    (1, cout, ohw),
                    (j0, j0 + len),
                    out,
                    &ep,
                    simd::isa(),
                )
            };
            let mut want = vec![-7.0f32; y.len()];
            for oc in 0..cout {
                let (qi, l) = (oc / NR, oc % NR);
                for j in 0..len {
                    want[(cout + oc) * ohw + j0 + j] =
                        ct[((j / TP * np + qi) * TP + j % TP) * NR + l];
                }
            }
            assert_eq!(y, want, "len {len}");
        }
    }
}
