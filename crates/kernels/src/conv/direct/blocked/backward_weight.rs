//! The weight gradient: output channels x taps kept in registers while rows of the output
//! gradient stream past (see the parent module).
use super::*;
use crate::conv::BackwardWeight;

pub(in crate::conv::direct) fn backward_weight(b: BackwardWeight<'_>) {
    let (p, out_hw, input, grad_out, (grad_weight, _)) = b.parts();
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
    // 12 taps x 1 channel or 3 x 3 accumulators; taps split evenly (3x3 in one block of 9).
    let (ocb, tb) = if cog == 1 {
        (1, k_plane.div_ceil(k_plane.div_ceil(MAX_TAPS)))
    } else {
        (3, 3)
    };
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
        let item_work = ocb.min(cog) * (n1 - n0) * out_plane * k_plane;
        let per_task = items_per_task(work.len(), item_work);
        run_grouped(
            work,
            per_task,
            || {
                if local {
                    crate::scratch::zeroed::<f32>(plane_p)
                } else {
                    Vec::new()
                }
            },
            |own, (o0, ic, mut parts)| {
                let cb = parts.len();
                let mut total = crate::scratch::zeroed::<f64>(cb * k_plane);
                for n in n0..n1 {
                    let x = if local {
                        let src = &input[(n * c + ic) * in_plane..][..in_plane];
                        let pads = (p.pad_top, p.pad_left);
                        // SAFETY: this module's SIMD level (see the module comment). `own` is
                        // zeroed when made and only ever padded with this geometry and padding.
                        unsafe { pad_plane(src, (p.in_h, p.in_w), pads, 0, geo, own) };
                        &own[..]
                    } else {
                        &shared[((n - n0) * c + ic) * plane_p..][..plane_p]
                    };
                    let dy0 = (n * oc_n + o0) * out_plane;
                    let dy = &grad_out[dy0..dy0 + cb * out_plane];
                    for t0 in (0..k_plane).step_by(tb) {
                        let tn = tb.min(k_plane - t0);
                        // SAFETY: reads of x stay below max_read <= plane_p (checked above);
                        // dy holds cb planes of oh x ow; the CPU has this module's SIMD level.
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
/// `dy` must hold `cb * oh * ow` floats; the CPU must have this module's SIMD level.
pub(super) unsafe fn weight_block(
    (cb, tn): (usize, usize),
    x: &[f32],
    row_step: usize,
    taps: &[usize],
    dy: &[f32],
    hw: (usize, usize),
) -> [[f32; MAX_TAPS]; 3] {
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
            (_, 12) => weight_kernel::<1, 12>(x, row_step, taps, dy, hw),
            (_, 11) => weight_kernel::<1, 11>(x, row_step, taps, dy, hw),
            (_, 10) => weight_kernel::<1, 10>(x, row_step, taps, dy, hw),
            (_, 9) => weight_kernel::<1, 9>(x, row_step, taps, dy, hw),
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

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
pub(super) unsafe fn weight_kernel<const CB: usize, const TN: usize>(
    x: *const f32,
    row_step: usize,
    taps: &[usize],
    dy: *const f32,
    (oh, ow): (usize, usize),
) -> [[f32; MAX_TAPS]; 3] {
    let mut acc = [[F8::zero(); TN]; CB];
    let mut off = [0usize; TN];
    off.copy_from_slice(&taps[..TN]);
    let full = ow / VEC * VEC;
    let tail = ow - full;
    // Tail loads read nothing past the row.
    let part = Tail::new(tail);
    for oy in 0..oh {
        let xr = x.add(oy * row_step);
        let dr = dy.add(oy * ow);
        let mut ox = 0;
        while ox < full {
            let mut d = [F8::zero(); CB];
            for (o, d) in d.iter_mut().enumerate() {
                *d = F8::load(dr.add(o * oh * ow + ox));
            }
            for t in 0..TN {
                let xv = F8::load(xr.add(off[t] + ox));
                for o in 0..CB {
                    acc[o][t] = acc[o][t].mul_add(d[o], xv);
                }
            }
            ox += VEC;
        }
        if tail > 0 {
            let mut d = [F8::zero(); CB];
            for (o, d) in d.iter_mut().enumerate() {
                *d = F8::load_tail(dr.add(o * oh * ow + full), part);
            }
            for t in 0..TN {
                let xv = F8::load_tail(xr.add(off[t] + full), part);
                for o in 0..CB {
                    acc[o][t] = acc[o][t].mul_add(d[o], xv);
                }
            }
        }
    }
    let mut out = [[0f32; MAX_TAPS]; 3];
    for o in 0..CB {
        for t in 0..TN {
            out[o][t] = acc[o][t].sum();
        }
    }
    out
}
