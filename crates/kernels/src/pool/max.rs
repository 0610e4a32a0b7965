//! Max pooling, forward (with and without torch's flat argmax indices) and backward.
use super::*;
use crate::simd::{kernel, Target};
use crate::{bail, simd, Result};

/// output = max over each window, indices = flat position (`ih * in_w + iw`) of the max within
/// its input plane, as torch's `max_pool2d(..., return_indices=True)`: ties go to the first
/// element in row-major order and NaN wins (the last NaN of the window). A window that covers
/// only padding (possible with dilation) gives -inf and index -1, where torch reports an index
/// outside the plane.
pub fn max_pool2d_forward(
    p: &Pool2dParams,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [i32],
) -> Result<()> {
    let out_hw = p.validate()?;
    p.check_indexable()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    check_len("indices", indices.len(), p.output_len(out_hw))?;
    max_pool_rows(p, out_hw, input, output, Some(indices));
    Ok(())
}

/// output = max over each window, as [`max_pool2d_forward`] but without the indices, for
/// inference (nothing will run the backward), which saves their write traffic. Same values,
/// NaN winning as in torch; the one difference is the sign of a zero maximum when +0 and -0
/// tie in one window (windows are reduced column by column, not in row-major order).
pub fn max_pool2d_forward_no_indices(
    p: &Pool2dParams,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    max_pool_rows(p, out_hw, input, output, None);
    Ok(())
}

/// Both max-pool forwards. A task is a run of consecutive output rows, which may cross planes.
/// Each output row is reduced in two steps: the column maxima over the window's input rows
/// (each input row read once per output row, contiguously), then each window's maximum across
/// its columns of that row buffer.
fn max_pool_rows(
    p: &Pool2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    output: &mut [f32],
    indices: Option<&mut [i32]>,
) {
    let g = p.geom(out_hw);
    let out_w = out_hw.1;
    // Each output row reads about stride_h new input rows.
    let row_len = p.in_w.saturating_mul(p.stride_h.min(p.in_h));
    let rows = rows_per_task(row_len, p.batch * p.channels * out_hw.0);
    let chunk = rows * out_w;
    let isa = simd::isa();
    // Slack past the row for the vector loads, which read up to 16 floats from a column.
    let slack = p.in_w + 16;
    // Rows narrower than two vectors: the general path's per-row set-up dominates there.
    let plain_2x2 = (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w) == (2, 2, 2, 2)
        && (p.pad_h, p.pad_w, p.dilation_h, p.dilation_w) == (0, 0, 1, 1)
        && out_hw == (p.in_h / 2, p.in_w / 2)
        && p.in_w < 16;
    // The 3x3, stride-1, pad-1 pools of GoogLeNet's inception branches on 7x7 to 28x28 maps.
    let same_3x3 = (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w) == (3, 3, 1, 1)
        && (p.pad_h, p.pad_w, p.dilation_h, p.dilation_w) == (1, 1, 1, 1)
        && out_hw == (p.in_h, p.in_w)
        && p.in_w <= 32;
    // The 3x3 stride-2 halving pools of GoogLeNet (ceil mode) and ResNet's stem (pad 1) on
    // planes of up to 128 columns.
    let halving_3x3 = (p.kernel_h, p.kernel_w, p.stride_h, p.stride_w) == (3, 3, 2, 2)
        && (p.dilation_h, p.dilation_w) == (1, 1)
        && p.pad_h <= 1
        && p.pad_w <= 1
        && p.in_w <= 128;
    match indices {
        None if same_3x3 => max_pool_3x3_same(p, input, output),
        None if halving_3x3 => max_pool_3x3_s2(p, out_hw, input, output),
        ind if plain_2x2 => max_pool_2x2_narrow(p, out_hw, input, output, ind),
        Some(ind) => output
            .par_chunks_mut(chunk)
            .zip(ind.par_chunks_mut(chunk))
            .enumerate()
            .for_each_init(
                || (vec![0.0f32; slack], vec![0i32; slack]),
                |(vm, vi), (t, (y, i))| max_task::<true>(isa, &g, input, t * rows, y, i, vm, vi),
            ),
        None => output.par_chunks_mut(chunk).enumerate().for_each_init(
            || vec![0.0f32; slack],
            |vm, (t, y)| max_task::<false>(isa, &g, input, t * rows, y, &mut [], vm, &mut []),
        ),
    }
}

/// The 3x3, stride-1, pad-1 max pool without indices on small planes (the output the size of
/// the input), whole planes per task, separably: each value's maximum with the values a row
/// above and below, then across each window of three columns. Both passes run over the whole
/// plane as one flat array (neighbours `w` and 1 floats away), in loops the compiler vectorises
/// with no running maximum in memory, and only each row's first and last columns are fixed up
/// after: GoogLeNet's 7x7 and 14x14 planes are too narrow for row-long vectors. On its
/// 7x7-28x28 maps the general path's set-up per output row made every such pool cost about
/// 0.8 ms at batch 8 whatever its size; row by row this took 0.22-0.30 ms; flat, at batch 1,
/// [1, 832, 7, 7] 0.023 -> 0.008 ms and [1, 480, 14, 14] 0.026 -> 0.013 (`pool_bench`). Same
/// values (NaN wins), up to the sign of a zero maximum.
fn max_pool_3x3_same(p: &Pool2dParams, input: &[f32], output: &mut [f32]) {
    let (h, w) = (p.in_h, p.in_w);
    let plane = h * w;
    let planes = p.batch * p.channels;
    if plane == 0 || planes == 0 {
        return;
    }
    // Tasks in whole rounds of the threads (832 planes of 7x7 made 5 tasks for 2 threads).
    let threads = rayon::current_num_threads();
    let tasks = planes
        .div_ceil(planes_per_task(2 * plane))
        .next_multiple_of(threads)
        .min(planes);
    let per_task = planes.div_ceil(tasks) * plane;
    let isa = simd::isa();
    output
        .par_chunks_mut(per_task)
        .zip(input.par_chunks(per_task))
        .for_each_init(
            || vec![0f32; plane],
            |v, (y, x)| max_3x3_planes(isa, x, h, w, v, y),
        );
}

kernel! {
    /// The `h x w` planes of `x` into `y` for [`max_pool_3x3_same`]; `v` is scratch of one
    /// plane.
    fn max_3x3_planes(x: &[f32], h: usize, w: usize, v: &mut [f32], y: &mut [f32]) {
        let pick = |m: f32, e: f32| if takes_max(e, m) { e } else { m };
        let n = h * w;
        for (yp, xp) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
            // Down the columns: the first row has no row above, the last none below.
            if h == 1 {
                v.copy_from_slice(xp);
            } else {
                for ((o, &b), &c) in v[..w].iter_mut().zip(&xp[..w]).zip(&xp[w..2 * w]) {
                    *o = pick(b, c);
                }
                let inner = v[w..n - w].iter_mut().zip(&xp[..n - 2 * w]);
                for (((o, &a), &b), &c) in inner.zip(&xp[w..n - w]).zip(&xp[2 * w..]) {
                    *o = pick(pick(a, b), c);
                }
                for ((o, &a), &b) in v[n - w..].iter_mut().zip(&xp[n - 2 * w..n - w]).zip(&xp[n - w..]) {
                    *o = pick(a, b);
                }
            }
            // Across the rows: every value with its two neighbours in the flat plane, then each
            // row's first and last column with its one neighbour in the row.
            if w == 1 {
                yp.copy_from_slice(v);
                continue;
            }
            let inner = yp[1..n - 1].iter_mut().zip(&v[..n - 2]);
            for (((o, &a), &b), &c) in inner.zip(&v[1..n - 1]).zip(&v[2..]) {
                *o = pick(pick(a, b), c);
            }
            for (yr, vr) in yp.chunks_exact_mut(w).zip(v.chunks_exact(w)) {
                yr[0] = pick(vr[0], vr[1]);
                yr[w - 1] = pick(vr[w - 2], vr[w - 1]);
            }
        }
    }
}

/// The 3x3, stride-2 max pool without indices on planes of up to 128 columns, whole planes per
/// task: each output row's (up to) three input rows reduced elementwise over the whole row (a
/// loop the compiler vectorises), then each window across three columns of that. The general
/// path's set-up per output row (window taps, vector prologues) cost more than the work on
/// these rows: GoogLeNet's four halving pools at batch 1 took 80-150 us each (pool_bench:
/// [1, 480, 28, 28] 0.17 ms, 11 GB/s). Same values (NaN wins), up to the sign of a zero maximum.
fn max_pool_3x3_s2(p: &Pool2dParams, out_hw: (usize, usize), input: &[f32], output: &mut [f32]) {
    let (h, w) = (p.in_h, p.in_w);
    let (plane_in, plane_out) = (h * w, out_hw.0 * out_hw.1);
    if plane_out == 0 {
        return;
    }
    let planes = planes_per_task(plane_in + plane_out);
    let isa = simd::isa();
    #[cfg(target_arch = "x86_64")]
    if simd::dispatch!(isa, avx512 => out_hw.1 <= 64, avx2 => false, _ => false) {
        output
            .par_chunks_mut(planes * plane_out)
            .enumerate()
            .for_each(|(t, y)| {
                for (k, yp) in y.chunks_exact_mut(plane_out).enumerate() {
                    // The plane and everything after it (see the function).
                    let x = &input[(t * planes + k) * plane_in..];
                    // SAFETY: AVX-512 (this branch); rows of at most 128 columns (the caller's
                    // rule) and 64 outputs.
                    unsafe { max_3x3_s2_plane_avx512(p, out_hw.1, x, yp) };
                }
            });
        return;
    }
    output
        .par_chunks_mut(planes * plane_out)
        .enumerate()
        .for_each_init(
            || vec![0f32; w],
            |v, (t, y)| {
                for (k, yp) in y.chunks_exact_mut(plane_out).enumerate() {
                    let x = &input[(t * planes + k) * plane_in..][..plane_in];
                    max_3x3_s2_plane(isa, p, out_hw.1, x, v, yp);
                }
            },
        );
}

/// One plane of [`max_pool_3x3_s2`] with AVX-512, on rows of up to 128 columns and 64 outputs,
/// in registers: each output row's column maxima (up to eight vectors, -inf past the row), the
/// padded row they make (shifted one lane with a left pad), then sixteen outputs at a time, the
/// window's three columns split out by lane permutes (the even columns, the odd ones, and the
/// evens one step on). The scalar windows of [`max_3x3_s2_plane`] cost more than the rest on
/// small planes (`pool_bench`, GoogLeNet's [1, 480, 28, 28] in ceil mode: 0.16 ms on one
/// thread). The same `pick` in the same order (NaN wins), so the same values, bit for bit.
///
/// # Safety
/// AVX-512 F; `in_w <= 128`, `ow <= 64`, `pad_w <= 1`; `x` starts at the plane (and may run on
/// past it), `y` is the plane's outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn max_3x3_s2_plane_avx512(p: &Pool2dParams, ow: usize, x: &[f32], y: &mut [f32]) {
    use std::arch::x86_64::*;
    let (h, w) = (p.in_h, p.in_w);
    assert!(w <= 128 && ow <= 64 && p.pad_w <= 1);
    let (nv, ninf) = (w.div_ceil(16), _mm512_set1_ps(f32::NEG_INFINITY));
    // torch's rule, as `takes_max`: the new value wins when larger or NaN.
    let pick = |m: __m512, e: __m512| {
        let take =
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(e, m) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(e, e);
        _mm512_mask_blend_ps(take, m, e)
    };
    let idx = |first: i32| {
        _mm512_set_epi32(
            first + 30,
            first + 28,
            first + 26,
            first + 24,
            first + 22,
            first + 20,
            first + 18,
            first + 16,
            first + 14,
            first + 12,
            first + 10,
            first + 8,
            first + 6,
            first + 4,
            first + 2,
            first,
        )
    };
    let (evens, odds) = (idx(0), idx(1));
    let groups = ow.div_ceil(16);
    for r in 0..y.len() / ow.max(1) {
        let lo = (2 * r).saturating_sub(p.pad_h);
        let hi = (2 * r + 3 - p.pad_h).min(h);
        if lo >= hi {
            y[r * ow..][..ow].fill(f32::NEG_INFINITY);
            continue;
        }
        // Column maxima of rows lo..hi in registers, row after row (each input row read front
        // to back), the lanes past the row -inf.
        // Whole vectors, the last reading on past the row (the next row's values, set to -inf
        // after): loads with a mask, on an input in DRAM, ran at a quarter of the speed (batch
        // 8). Only past the end of the input is a load masked.
        let mut m = [ninf; 10];
        for iy in lo..hi {
            for (k, mk) in m.iter_mut().enumerate().take(nv) {
                let at = iy * w + 16 * k;
                let e = if at + 16 <= x.len() {
                    _mm512_loadu_ps(x.as_ptr().add(at))
                } else {
                    _mm512_maskz_loadu_ps((1u16 << (x.len() - at)) - 1, x[at..].as_ptr())
                };
                *mk = if iy == lo { e } else { pick(*mk, e) };
            }
        }
        let tail = w - 16 * (nv - 1);
        if tail < 16 {
            m[nv - 1] = _mm512_mask_mov_ps(ninf, (1u16 << tail) - 1, m[nv - 1]);
        }
        // The padded row: with a left pad, every vector one lane on (-inf first).
        let mut pv = [ninf; 10];
        for k in 0..=nv {
            let prev = if k == 0 { ninf } else { m[k - 1] };
            pv[k] = if p.pad_w == 0 {
                m[k]
            } else {
                _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
                    _mm512_castps_si512(m[k]),
                    _mm512_castps_si512(prev),
                ))
            };
        }
        // Window c covers padded columns 2c, 2c + 1, 2c + 2.
        let deal = |g: usize| {
            let (a, b) = (pv[2 * g], pv[2 * g + 1]);
            (
                _mm512_permutex2var_ps(a, evens, b),
                _mm512_permutex2var_ps(a, odds, b),
            )
        };
        let mut next = deal(0);
        for g in 0..groups {
            let (even, odd) = next;
            next = deal(g + 1);
            let even_on = _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(next.0),
                _mm512_castps_si512(even),
            ));
            let out = pick(pick(even, odd), even_on);
            // Whole vectors where they stay inside the plane's outputs (a part past the row
            // lands on the next row's outputs, written after), a masked store at its end.
            let at = r * ow + 16 * g;
            if at + 16 <= y.len() {
                _mm512_storeu_ps(y.as_mut_ptr().add(at), out);
            } else {
                let n = (ow - 16 * g).min(16);
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(at), (1u16 << n) - 1, out);
            }
        }
    }
}

kernel! {
    /// One plane of [`max_pool_3x3_s2`]; `v` is scratch of one input row.
    fn max_3x3_s2_plane(p: &Pool2dParams, ow: usize, x: &[f32], v: &mut [f32], y: &mut [f32]) {
        let (h, w) = (p.in_h, p.in_w);
        let pick = |m: f32, e: f32| if takes_max(e, m) { e } else { m };
        // Indices start - pad .. start - pad + 3 clipped to 0..len.
        let taps = |o: usize, pad: usize, len: usize| {
            let s = (2 * o) as isize - pad as isize;
            (s.max(0) as usize, (s + 3).clamp(0, len as isize) as usize)
        };
        for (r, yr) in y.chunks_exact_mut(ow).enumerate() {
            let (lo, hi) = taps(r, p.pad_h, h);
            if lo >= hi {
                yr.fill(f32::NEG_INFINITY);
                continue;
            }
            v.copy_from_slice(&x[lo * w..][..w]);
            for iy in lo + 1..hi {
                for (m, &e) in v.iter_mut().zip(&x[iy * w..][..w]) {
                    *m = pick(*m, e);
                }
            }
            // Interior windows (all three columns inside): pairs of columns two apart, which
            // the compiler loads as interleaved vectors; the clipped ones at the borders.
            let first = p.pad_w.div_ceil(2).min(ow);
            let past = if w + p.pad_w >= 3 {
                ((w + p.pad_w - 3) / 2 + 1).clamp(first, ow)
            } else {
                first
            };
            if first < past {
                let s0 = 2 * first - p.pad_w;
                let pairs = v[s0..].chunks_exact(2).zip(v[s0 + 2..].iter().step_by(2));
                for (o, (ab, &c)) in yr[first..past].iter_mut().zip(pairs) {
                    *o = pick(pick(ab[0], ab[1]), c);
                }
            }
            for c in (0..first).chain(past..ow) {
                let (lo, hi) = taps(c, p.pad_w, w);
                yr[c] = if lo >= hi {
                    f32::NEG_INFINITY
                } else {
                    v[lo + 1..hi].iter().fold(v[lo], |m, &e| pick(m, e))
                };
            }
        }
    }
}

/// The 2x2, stride-2 max pool on narrow rows (the MNIST network's 7x7 and 14x14 maps,
/// GoogLeNet's last 14x14 pool), with or without indices, plane by plane with torch's row-major
/// loop written out: there the general path's per-row set-up cost more than the four comparisons
/// per output (7x7 maps at batch 64 with indices: 0.13-0.25 ms against 0.6; GoogLeNet's 832@14 at
/// batch 1 in a plan: 0.118 ms by the general path; on 28-column rows this loop was 4x slower
/// than the general path). Each row pair's outputs then go in one vector step
/// ([`narrow_row_pair`]; the MNIST network's three pools at batch 64 with indices, in its
/// training plan: 1.31-1.36 -> 0.69-0.91 ms), the loop written out only for the input's last
/// row pair.
fn max_pool_2x2_narrow(
    p: &Pool2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    output: &mut [f32],
    indices: Option<&mut [i32]>,
) {
    let (oh_n, ow_n) = out_hw;
    let in_w = p.in_w;
    let (plane_in, plane_out) = (p.in_h * in_w, oh_n * ow_n);
    if plane_out == 0 {
        return;
    }
    let per_task = (crate::vmath::GRAIN / plane_in.max(1)).max(1) * plane_out;
    let isa = simd::isa();
    // Task `t`'s planes: outputs `y`, and their indices when asked for.
    let task = |t: usize, y: &mut [f32], mut ind: Option<&mut [i32]>| {
        let first = t * (per_task / plane_out);
        for (k, yp) in y.chunks_exact_mut(plane_out).enumerate() {
            let at = (first + k) * plane_in;
            let x = &input[at..(first + k + 1) * plane_in];
            for oh in 0..oh_n {
                let r0 = 2 * oh * in_w;
                let r1 = r0 + in_w;
                let yr = &mut yp[oh * ow_n..][..ow_n];
                // A whole row pair in vectors where 16 floats from each row start lie in the
                // input (all but the input's last row pair).
                if at + r1 + 2 * NARROW <= input.len() {
                    let rows = (
                        &input[at + r0..][..2 * NARROW],
                        &input[at + r1..][..2 * NARROW],
                    );
                    let ir = ind
                        .as_deref_mut()
                        .map(|ip| &mut ip[k * plane_out + oh * ow_n..][..ow_n]);
                    narrow_row_pair(isa, rows, (r0, in_w), yr, ir);
                    continue;
                }
                for (ow, yv) in yr.iter_mut().enumerate() {
                    let c = 2 * ow;
                    let (mut best, mut at) = (x[r0 + c], r0 + c);
                    // Selects, not branches: on real data which element wins is a coin toss,
                    // and mispredicted branches cost more than the comparisons.
                    for cand in [r0 + c + 1, r1 + c, r1 + c + 1] {
                        let v = x[cand];
                        let take = takes_max(v, best);
                        best = if take { v } else { best };
                        at = if take { cand } else { at };
                    }
                    *yv = best;
                    if let Some(ip) = ind.as_deref_mut() {
                        ip[k * plane_out + oh * ow_n + ow] = at as i32;
                    }
                }
            }
        }
    };
    match indices {
        Some(ind) => output
            .par_chunks_mut(per_task)
            .zip(ind.par_chunks_mut(per_task))
            .enumerate()
            .for_each(|(t, (y, i))| task(t, y, Some(i))),
        None => output
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(t, y)| task(t, y, None)),
    }
}

/// Output columns of [`max_pool_2x2_narrow`]'s vector form: rows under 16 wide have at most 7.
const NARROW: usize = 8;

kernel! {
    /// One row pair of [`max_pool_2x2_narrow`] (`y.len()` outputs, at most [`NARROW`]), with
    /// their flat indices when asked for: the pair's 16 leading floats of each row split into
    /// even and odd columns, then torch's four candidates in its order, 8 outputs a vector.
    /// `rows` are 16 floats from each row's start (past the row they are unused); `(r0, w)`:
    /// the first row's offset in its plane and the row length, for the indices.
    fn narrow_row_pair(
        rows: (&[f32], &[f32]),
        geom: (usize, usize),
        y: &mut [f32],
        ind: Option<&mut [i32]>,
    ) {
        let (r0, w) = geom;
        let split = |row: &[f32]| {
            let s: &[f32; 2 * NARROW] = row[..2 * NARROW].try_into().expect("16 floats");
            let even: [f32; NARROW] = std::array::from_fn(|i| s[2 * i]);
            let odd: [f32; NARROW] = std::array::from_fn(|i| s[2 * i + 1]);
            (even, odd)
        };
        let ((a, b), (c, d)) = (split(rows.0), split(rows.1));
        let base = r0 as i32;
        let mut best = a;
        let mut at: [i32; NARROW] = std::array::from_fn(|i| base + 2 * i as i32);
        for (cand, off) in [(b, 1), (c, w as i32), (d, w as i32 + 1)] {
            for i in 0..NARROW {
                let take = takes_max(cand[i], best[i]);
                best[i] = if take { cand[i] } else { best[i] };
                at[i] = if take { base + 2 * i as i32 + off } else { at[i] };
            }
        }
        let n = y.len();
        y.copy_from_slice(&best[..n]);
        if let Some(ip) = ind {
            ip.copy_from_slice(&at[..n]);
        }
    }
}

/// torch's update rule: a strictly larger value, or any NaN, takes the slot. Starting from
/// -inf with the index of the window's first element, this is exactly torch's loop.
#[inline(always)]
fn takes_max(v: f32, best: f32) -> bool {
    (v > best) | v.is_nan()
}

/// Whether a column's winner (`v` at flat index `at`) replaces the running winner of the
/// columns to its left (`best` at `arg`), so that reducing a window column by column picks the
/// element torch's row-major loop picks: the last NaN in row-major order, else the first
/// maximum. Within one window two columns' flat indices order them by row first (their
/// column distance is below the row length), so the flat index decides both tie rules.
#[inline(always)]
fn column_takes(v: f32, at: i32, best: f32, arg: i32) -> bool {
    if v.is_nan() {
        !best.is_nan() || at > arg
    } else {
        !best.is_nan() && (v > best || (v == best && at < arg))
    }
}

kernel! {
    #[allow(clippy::too_many_arguments)]
    fn max_task<[T], const IDX: bool>(
        g: &Geom,
        input: &[f32],
        first_row: usize,
        y: &mut [f32],
        ind: &mut [i32],
        vm: &mut [f32],
        vi: &mut [i32],
    ) {
        let (in_w, out_h, out_w) = (g.w.input as usize, g.h.out, g.w.out);
        let in_plane = g.h.input as usize * in_w;
        for (r, y_row) in y.chunks_exact_mut(out_w).enumerate() {
            let (plane, oh) = ((first_row + r) / out_h, (first_row + r) % out_h);
            let x = &input[plane * in_plane..(plane + 1) * in_plane];
            let i_row = if IDX {
                &mut ind[r * out_w..(r + 1) * out_w]
            } else {
                &mut [][..]
            };
            max_row::<T, IDX>(g, x, oh, y_row, i_row, vm, vi);
        }
    }
}

#[inline(always)]
fn max_row<T: Target, const IDX: bool>(
    g: &Geom,
    x: &[f32],
    oh: usize,
    y_row: &mut [f32],
    i_row: &mut [i32],
    vm: &mut [f32],
    vi: &mut [i32],
) {
    let in_w = g.w.input as usize;
    let (hs, jh_lo, jh_hi) = g.h.taps(oh);
    if jh_lo >= jh_hi {
        y_row.fill(f32::NEG_INFINITY);
        if IDX {
            i_row.fill(-1);
        }
        return;
    }
    let row_of = |jh: usize| (hs + jh as i64 * g.h.dilation) as usize;
    // Column maxima over the window's rows, rows in order, torch's rule.
    let rows = Rows {
        first: row_of(jh_lo) * in_w,
        step: g.h.dilation as usize * in_w,
        count: jh_hi - jh_lo,
        len: in_w,
    };
    column_max::<T, IDX>(x, &rows, &mut vm[..in_w], vi);
    // Each window across its columns: border windows tap by tap, clipped to the input.
    let (ow_lo, ow_hi) = g.w.interior();
    for ow in (0..ow_lo).chain(ow_hi..g.w.out) {
        let (ws, jw_lo, jw_hi) = g.w.taps(ow);
        if jw_lo >= jw_hi {
            y_row[ow] = f32::NEG_INFINITY;
            if IDX {
                i_row[ow] = -1;
            }
            continue;
        }
        let col = |jw: usize| (ws + jw as i64 * g.w.dilation) as usize;
        let taps = (jw_lo..jw_hi).map(col);
        let (b, a) = window_max_scalar::<IDX>(vm, vi, taps);
        y_row[ow] = b;
        if IDX {
            i_row[ow] = a;
        }
    }
    if ow_lo < ow_hi {
        let w = Window {
            col0: g.w.start(ow_lo) as usize,
            stride: g.w.stride as usize,
            kernel: g.w.kernel as usize,
            dilation: g.w.dilation as usize,
        };
        let y = &mut y_row[ow_lo..ow_hi];
        let i = if IDX {
            &mut i_row[ow_lo..ow_hi]
        } else {
            &mut [][..]
        };
        // Leading interior windows done with vectors (strides 1 and 2).
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        // SAFETY: T is Avx2 or Neon only inside max_task's builds for those levels, which run
        // only on CPUs that have them.
        let done = match (T::AVX2 || T::NEON, w.stride) {
            (true, 1) => unsafe { vector::window_max::<1, IDX>(vm, vi, &w, y, i) },
            (true, 2) => unsafe { vector::window_max::<2, IDX>(vm, vi, &w, y, i) },
            _ => 0,
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let done = 0;
        for o in done..y.len() {
            let at = w.col0 + o * w.stride;
            let taps = (0..w.kernel).map(|k| at + k * w.dilation);
            let (b, a) = window_max_scalar::<IDX>(vm, vi, taps);
            y[o] = b;
            if IDX {
                i[o] = a;
            }
        }
    }
}

/// Interior windows of a row buffer: output `o` taps columns `col0 + o * stride + k *
/// dilation` for k < kernel, all inside the input row.
#[derive(Clone, Copy)]
pub(super) struct Window {
    pub(super) col0: usize,
    pub(super) stride: usize,
    pub(super) kernel: usize,
    pub(super) dilation: usize,
}

/// One window across the column maxima `vm` (flat indices `vi`), columns in order.
#[inline(always)]
fn window_max_scalar<const IDX: bool>(
    vm: &[f32],
    vi: &[i32],
    mut cols: impl Iterator<Item = usize>,
) -> (f32, i32) {
    let Some(c) = cols.next() else {
        return (f32::NEG_INFINITY, -1);
    };
    let (mut b, mut a) = (vm[c], if IDX { vi[c] } else { 0 });
    for c in cols {
        if IDX {
            if column_takes(vm[c], vi[c], b, a) {
                (b, a) = (vm[c], vi[c]);
            }
        } else if takes_max(vm[c], b) {
            b = vm[c];
        }
    }
    (b, a)
}

/// The input rows of one output row's windows: `count` rows of `len` starting at plane
/// offsets `first + r * step`.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) first: usize,
    pub(super) step: usize,
    pub(super) count: usize,
    pub(super) len: usize,
}

/// vm[c] = the maximum of column c over `rows`, vi[c] its flat index, rows in order with
/// torch's rule. Each column keeps its running maximum in a register across the rows and is
/// stored once: a read-modify-write of vm per row would let LLVM turn the blend into a masked
/// store, which is very slow on some CPUs (AMD).
#[inline(always)]
fn column_max<T: Target, const IDX: bool>(x: &[f32], rows: &Rows, vm: &mut [f32], vi: &mut [i32]) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let done = if T::AVX2 || T::NEON {
        // SAFETY: T is Avx2 or Neon only inside max_task's builds for those levels, which run
        // only on CPUs that have them.
        unsafe { vector::column_max::<IDX>(x, rows, vm, vi) }
    } else {
        0
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let done = 0;
    for c in done..rows.len {
        let (mut b, mut a) = (x[rows.first + c], rows.first + c);
        for r in 1..rows.count {
            let at = rows.first + r * rows.step + c;
            if takes_max(x[at], b) {
                (b, a) = (x[at], at);
            }
        }
        vm[c] = b;
        if IDX {
            vi[c] = a as i32;
        }
    }
}

/// grad_input = scatter-add of grad_out through the forward's indices (overwrites grad_input).
/// An index outside its plane is an error; -1 (a window of padding only) contributes nothing.
/// On error grad_input is left partly written.
pub fn max_pool2d_backward(
    p: &Pool2dParams,
    grad_out: &[f32],
    indices: &[i32],
    grad_input: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    p.check_indexable()?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("indices", indices.len(), p.output_len(out_hw))?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    let (in_plane, out_plane) = (p.in_h * p.in_w, out_hw.0 * out_hw.1);
    grad_input
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .zip(indices.par_chunks(out_plane))
        .enumerate()
        .with_min_len(planes_per_task(in_plane))
        .try_for_each(|(plane, ((gi, go), ind))| {
            gi.fill(0.0);
            for (i, (&g, &k)) in go.iter().zip(ind).enumerate() {
                match gi.get_mut(k as usize) {
                    Some(slot) if k >= 0 => *slot += g,
                    _ if k == -1 => {}
                    _ => bail!(
                        "indices: element {} is {k}, expected -1 or an index into the {}x{} input plane (0..{})",
                        plane * out_plane + i,
                        p.in_h,
                        p.in_w,
                        in_plane - 1
                    ),
                }
            }
            Ok(())
        })
}
