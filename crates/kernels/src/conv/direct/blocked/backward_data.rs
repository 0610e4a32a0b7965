//! The input gradient: one pass per phase class of the input, each a sum of unit-stride
//! correlations of the zero-padded output gradient (see the parent module).
use super::*;
use crate::conv::BackwardData;

/// One phase class of the input gradient: padded rows `ry + sh * u`, columns `rx + sw * v`.
pub(super) struct Phase {
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

pub(in crate::conv::direct) fn backward_data(b: BackwardData<'_>) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
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
    let item_work = MAX_CB.min(cig) * rows_per.min(p.in_h) * p.in_w * cog * k_plane;
    // Writes the data positions only: buffers are zeroed when made and always padded with
    // this geometry, so everything else stays zero.
    let pad_grad = |n: usize, oc0: usize, count: usize, dst: &mut [f32]| {
        for (i, q) in dst.chunks_mut(q_plane).take(count).enumerate() {
            let src = &grad_out[(n * oc_n + oc0 + i) * out_plane..][..out_plane];
            for oy in 0..oh {
                let d = &mut q[(top + oy) * qw + left..][..ow];
                // SAFETY: this module's SIMD level (see the module comment).
                unsafe { copy_row(d, &src[oy * ow..(oy + 1) * ow]) };
            }
        }
    };
    for n0 in (0..p.batch).step_by(nb) {
        let n1 = (n0 + nb).min(p.batch);
        let mut shared = Vec::new();
        if !local {
            shared = crate::scratch::zeroed::<f32>((n1 - n0) * oc_n * q_plane);
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
                let per_task = items_per_task(work.len(), item_work);
                run_grouped(
                    work,
                    per_task,
                    || {
                        if local {
                            crate::scratch::zeroed::<f32>(cog * q_plane)
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
                            if sw == 1 {
                                // Class columns are input columns: write the class rows (sh
                                // input rows apart) in place; one row at a time when there
                                // are several passes (see the forward).
                                let step = if per_pass < cog { 1 } else { u_hi - u_lo };
                                for u0 in (u_lo..u_hi).step_by(step) {
                                    let nu = step.min(u_hi - u0);
                                    let r0 = ph.ry + sh * u0 - y_lo;
                                    let out = part_ptrs(&mut rows, r0 * p.in_w + ix0);
                                    let shape = (nu, qw, sh * p.in_w);
                                    // SAFETY: class rows u0.. and the column blocks read below
                                    // max_read <= q_group.len() (checked above); each out
                                    // pointer starts row r0 of this task's own rows, and the nu
                                    // class rows sh apart each span the class columns.
                                    unsafe {
                                        passes(
                                            ph,
                                            per_pass,
                                            cb,
                                            &cols,
                                            shape,
                                            q_group,
                                            u0 * qw + v_lo,
                                            w,
                                            out,
                                        )
                                    };
                                }
                            } else {
                                // Strided columns: compute a block at a time, then scatter.
                                let mut strip = [[0f32; MAX_COLS]; MAX_CB];
                                for u in u_lo..u_hi {
                                    let r = ph.ry + sh * u - y_lo;
                                    for &(c0, n, nv) in &cols {
                                        let mut out = [std::ptr::null_mut(); MAX_CB];
                                        for (o, s) in out.iter_mut().zip(strip.iter_mut()) {
                                            *o = s.as_mut_ptr();
                                        }
                                        let one = [(0, n, nv)];
                                        let base = u * qw + v_lo + c0;
                                        // SAFETY: reads as above; strip rows hold MAX_COLS >= n
                                        // floats.
                                        unsafe {
                                            passes(
                                                ph,
                                                per_pass,
                                                cb,
                                                &one,
                                                (1, qw, 0),
                                                q_group,
                                                base,
                                                w,
                                                out,
                                            )
                                        };
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

/// Runs `rows` class rows of backward data (`shape = (rows, source row step, destination row
/// step)`) over all output channels of the group, `per_pass` output channels' taps at a time.
///
/// # Safety
/// Each of the first `cb` `out` pointers must be valid for writes of the columns `cols` spans
/// on every destination row and not aliased elsewhere; every tap read from `base` on must stay
/// below `q.len()` (the caller's bounds check).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn passes(
    ph: &Phase,
    per_pass: usize,
    cb: usize,
    cols: &[(usize, usize, usize)],
    shape: (usize, usize, usize),
    q: &[f32],
    base: usize,
    w: &[f32],
    out: [*mut f32; MAX_CB],
) {
    let cog = ph.ocl_start.len() - 1;
    if ph.taps.is_empty() {
        let n: usize = cols.iter().map(|c| c.1).sum();
        for &o in out.iter().take(cb) {
            for r in 0..shape.0 {
                // SAFETY: the caller's contract.
                unsafe { std::slice::from_raw_parts_mut(o.add(r * shape.2), n) }.fill(0.0);
            }
        }
        return;
    }
    let zero = [0f32; MAX_CB];
    for o0 in (0..cog).step_by(per_pass) {
        let (t0, t1) = (ph.ocl_start[o0], ph.ocl_start[(o0 + per_pass).min(cog)]);
        let init = if o0 == 0 { Some(&zero) } else { None };
        // SAFETY: reads as the caller's contract; w holds taps * cb floats.
        unsafe {
            row_pass(
                cb,
                cols,
                shape,
                q.as_ptr().add(base),
                &ph.taps[t0..t1],
                &w[t0 * cb..t1 * cb],
                init,
                out,
            )
        };
    }
}
