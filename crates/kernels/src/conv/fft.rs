//! FFT convolution, forward and backward. Pays off for large kernels at stride 1, where direct
//! summation costs `kh * kw` multiply-adds per output and the FFT a few per output whatever the
//! kernel size.
//!
//! Every plane is placed in one `fh x fw` grid that covers the *used* extent of the padded input,
//! `E = (out - 1) * stride + dilation * (k - 1) + 1` per axis, so the circular products never wrap
//! onto positions that are read back:
//! - forward: `y = corr(x_pad, w_dil)`, i.e. `Y = X * conj(W)` summed over input channels, read
//!   at the strided positions `(oy * sh, ox * sw)`;
//! - backward data: `dx_pad = conv(dz, w_dil)` with `dz` the output gradient spread to the
//!   strided positions, i.e. `DX = DZ * W` summed over output channels, read at the input
//!   positions (zero past `E`, which the forward never read);
//! - backward weight: `dw = corr(x_pad, dz)`, i.e. `DW = X * conj(DZ)` summed over the batch,
//!   read at the dilated tap positions.
//!
//! The pointwise sums are small complex matrix products per bin (`fft/cgemm.rs`). Memory is
//! bounded by working through the batch in chunks and the output channels in blocks: the
//! spectra of one batch chunk's inputs (or input gradients) stay resident while weight / output
//! spectra are made block by block. Weights are transformed once per call unless the batch has
//! to be split to stay within the budget (then once per batch chunk).
//!
//! Accuracy: the result carries FFT rounding, about `1e-7 * log2(fh * fw)` of the size of the
//! largest terms summed, instead of direct summation's error relative to each output; see
//! `tests/conv_fft.rs` for the measured error and the tolerance used.
use super::Conv2dParams;
use rayon::prelude::*;

mod cgemm;
mod plan;

use cgemm::{Planes, Product, SharedOut};
use plan::{Placement, Plan2d, LANES};

/// Bytes of spectra kept for one batch chunk (inputs or input gradients, all channels).
const CHUNK_BUDGET: usize = 48 << 20;
/// Bytes of spectra made per output-channel block (weights plus per-item outputs).
const BLOCK_BUDGET: usize = 16 << 20;
/// Bins per parallel task of the pointwise products.
const BIN_TILE: usize = 64;

/// Grid and blocking for one call.
struct Layout {
    plan: std::sync::Arc<Plan2d>,
    /// Items per batch chunk.
    nb: usize,
    /// Output channels per block.
    ob: usize,
}

impl Layout {
    fn new(p: &Conv2dParams, out_hw: (usize, usize)) -> Layout {
        let (oh, ow) = out_hw;
        let used_h = (oh - 1) * p.stride_h + p.dilation_h * (p.kernel_h - 1) + 1;
        let used_w = (ow - 1) * p.stride_w + p.dilation_w * (p.kernel_w - 1) + 1;
        let plan = plan::plan(
            plan::good_size(used_h, false),
            plan::good_size(used_w, true),
        );
        let plane_bytes = plan.spec_len() * 4;
        let nb = (CHUNK_BUDGET / (p.in_channels * plane_bytes).max(1)).clamp(1, p.batch);
        let ob = (BLOCK_BUDGET / ((nb + p.in_per_group()) * plane_bytes).max(1))
            .clamp(1, p.out_channels);
        Layout { plan, nb, ob }
    }

    fn input_at(&self, p: &Conv2dParams) -> Placement {
        Placement {
            rows: p.in_h,
            cols: p.in_w,
            r0: p.pad_top,
            r_step: 1,
            c0: p.pad_left,
            c_step: 1,
        }
    }

    fn weight_at(&self, p: &Conv2dParams) -> Placement {
        Placement {
            rows: p.kernel_h,
            cols: p.kernel_w,
            r0: 0,
            r_step: p.dilation_h,
            c0: 0,
            c_step: p.dilation_w,
        }
    }

    fn grad_out_at(&self, p: &Conv2dParams, out_hw: (usize, usize)) -> Placement {
        Placement {
            rows: out_hw.0,
            cols: out_hw.1,
            r0: 0,
            r_step: p.stride_h,
            c0: 0,
            c_step: p.stride_w,
        }
    }

    /// `1 / (fh * fw)`: rustfft's inverse is unnormalised.
    fn scale(&self) -> f32 {
        1.0 / (self.plan.fh * self.plan.fw) as f32
    }
}

/// Transforms `count` consecutive source planes of `plane_len` floats starting at `src` into
/// `spec` (one spectrum each), in parallel.
fn transform_planes(plan: &Plan2d, src: &[f32], plane_len: usize, at: Placement, spec: &mut [f32]) {
    spec.par_chunks_mut(plan.spec_len())
        .zip(src.par_chunks(plane_len))
        .for_each_init(|| plan.work(), |w, (out, x)| plan.forward(w, x, at, out));
}

/// Transforms the planes `(n, c)` for `n` in `n0..n1`, `c` in `c0..c1` of an NCHW tensor with
/// `channels` channels into `spec`, ordered `(n - n0) * (c1 - c0) + (c - c0)`.
#[allow(clippy::too_many_arguments)]
fn transform_nc(
    plan: &Plan2d,
    src: &[f32],
    channels: usize,
    plane_len: usize,
    (n0, n1): (usize, usize),
    (c0, c1): (usize, usize),
    at: Placement,
    spec: &mut [f32],
) {
    let per_item = (c1 - c0) * plan.spec_len();
    spec[..(n1 - n0) * per_item]
        .par_chunks_mut(per_item)
        .enumerate()
        .for_each(|(i, item_spec)| {
            let base = ((n0 + i) * channels + c0) * plane_len;
            transform_planes(
                plan,
                &src[base..base + (c1 - c0) * plane_len],
                plane_len,
                at,
                item_spec,
            );
        });
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

/// Runs the products (one per segment) over all bins, in parallel over (product, bin tile).
///
/// Every product must write planes no other product in `prods` writes.
fn run_products(prods: &[Product], a: &[f32], b: &[f32], c: &mut [f32], lb: usize) {
    let sl = 2 * lb;
    for pr in prods {
        let last = pr.c.base + (pr.m - 1) * pr.c.s_row + (pr.n - 1) * pr.c.s_col;
        assert!(
            (last + 1) * sl <= c.len(),
            "fft: product output out of range"
        );
    }
    let tiles = lb.div_ceil(BIN_TILE);
    let out = SharedOut(c.as_mut_ptr());
    (0..prods.len() * tiles).into_par_iter().for_each(|t| {
        let (pr, tile) = (&prods[t / tiles], t % tiles);
        let f0 = tile * BIN_TILE;
        let f1 = (f0 + BIN_TILE).min(lb);
        debug_assert!(f1.is_multiple_of(LANES));
        // SAFETY: the C planes were bounds-checked above; distinct products write distinct planes
        // (caller's contract) and distinct tiles of one product write distinct bins, so no two
        // tasks write the same floats, and nothing else touches `c` meanwhile (borrowed mutably).
        unsafe { cgemm::run(pr, a, b, out, lb, f0, f1) };
    });
}

pub fn forward(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let sl = plan.spec_len();
    let (oh, ow) = out_hw;
    let (c, oc_n, cig) = (p.in_channels, p.out_channels, p.in_per_group());
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    let mut x_spec = vec![0f32; lay.nb * c * sl];
    let mut w_spec = vec![0f32; lay.ob * cig * sl];
    let mut y_spec = vec![0f32; lay.nb * lay.ob * sl];
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        transform_nc(
            plan,
            input,
            c,
            in_plane,
            (n0, n1),
            (0, c),
            lay.input_at(p),
            &mut x_spec,
        );
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_planes(
                plan,
                &weight[o0 * cig * k_plane..o1 * cig * k_plane],
                k_plane,
                lay.weight_at(p),
                &mut w_spec[..ob * cig * sl],
            );
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: nb,
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
            run_products(&prods, &x_spec, &w_spec, &mut y_spec, plan.lb);
            let y_spec = &y_spec;
            output[n0 * oc_n * out_plane..n1 * oc_n * out_plane]
                .par_chunks_mut(oc_n * out_plane)
                .enumerate()
                .for_each(|(ni, item)| {
                    item[o0 * out_plane..o1 * out_plane]
                        .par_chunks_mut(out_plane)
                        .enumerate()
                        .for_each_init(
                            || plan.work(),
                            |w, (oi, y)| {
                                let b = bias.map_or(0.0, |b| b[o0 + oi]);
                                let spec = &y_spec[(ni * ob + oi) * sl..][..sl];
                                let rows = (0..oh).map(|oy| oy * p.stride_h);
                                plan.inverse(w, spec, rows, |oy, row| {
                                    let y_row = &mut y[oy * ow..(oy + 1) * ow];
                                    for (ox, v) in y_row.iter_mut().enumerate() {
                                        *v = row[ox * p.stride_w] * scale + b;
                                    }
                                });
                            },
                        );
                });
        }
    }
}

pub fn backward_data(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let sl = plan.spec_len();
    let (oh, ow) = out_hw;
    let (c, oc_n, cig) = (p.in_channels, p.out_channels, p.in_per_group());
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    // Positions of the padded input past these were never read by the forward: gradient 0.
    let used_h = (oh - 1) * p.stride_h + p.dilation_h * (p.kernel_h - 1) + 1;
    let used_w = (ow - 1) * p.stride_w + p.dilation_w * (p.kernel_w - 1) + 1;
    let mut dx_spec = vec![0f32; lay.nb * c * sl];
    let mut w_spec = vec![0f32; lay.ob * cig * sl];
    let mut dz_spec = vec![0f32; lay.nb * lay.ob * sl];
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        dx_spec.fill(0.0);
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_planes(
                plan,
                &weight[o0 * cig * k_plane..o1 * cig * k_plane],
                k_plane,
                lay.weight_at(p),
                &mut w_spec[..ob * cig * sl],
            );
            transform_nc(
                plan,
                grad_out,
                oc_n,
                out_plane,
                (n0, n1),
                (o0, o1),
                lay.grad_out_at(p, out_hw),
                &mut dz_spec,
            );
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: nb,
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
            run_products(&prods, &dz_spec, &w_spec, &mut dx_spec, plan.lb);
        }
        let dx_spec = &dx_spec;
        grad_input[n0 * c * in_plane..n1 * c * in_plane]
            .par_chunks_mut(in_plane)
            .enumerate()
            .for_each_init(
                || plan.work(),
                |w, (idx, dx)| {
                    dx.fill(0.0);
                    let spec = &dx_spec[idx * sl..][..sl];
                    let limit_h = used_h.min(plan.fh);
                    let iy_end = limit_h.saturating_sub(p.pad_top).min(p.in_h);
                    let ix_end = used_w.min(plan.fw).saturating_sub(p.pad_left).min(p.in_w);
                    if iy_end == 0 || ix_end == 0 {
                        return;
                    }
                    let rows = (0..iy_end).map(|iy| iy + p.pad_top);
                    plan.inverse(w, spec, rows, |iy, row| {
                        let src = &row[p.pad_left..p.pad_left + ix_end];
                        for (d, &v) in dx[iy * p.in_w..iy * p.in_w + ix_end].iter_mut().zip(src) {
                            *d = v * scale;
                        }
                    });
                },
            );
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
    let lay = Layout::new(p, out_hw);
    let plan = &*lay.plan;
    let sl = plan.spec_len();
    let (oh, ow) = out_hw;
    let (c, oc_n, cig) = (p.in_channels, p.out_channels, p.in_per_group());
    let in_plane = p.in_h * p.in_w;
    let out_plane = oh * ow;
    let k_plane = p.kernel_h * p.kernel_w;
    let scale = lay.scale();
    grad_weight.fill(0.0);
    let mut x_spec = vec![0f32; lay.nb * c * sl];
    let mut dw_spec = vec![0f32; lay.ob * cig * sl];
    let mut dz_spec = vec![0f32; lay.nb * lay.ob * sl];
    for n0 in (0..p.batch).step_by(lay.nb) {
        let n1 = (n0 + lay.nb).min(p.batch);
        let nb = n1 - n0;
        transform_nc(
            plan,
            input,
            c,
            in_plane,
            (n0, n1),
            (0, c),
            lay.input_at(p),
            &mut x_spec,
        );
        for o0 in (0..oc_n).step_by(lay.ob) {
            let o1 = (o0 + lay.ob).min(oc_n);
            let ob = o1 - o0;
            transform_nc(
                plan,
                grad_out,
                oc_n,
                out_plane,
                (n0, n1),
                (o0, o1),
                lay.grad_out_at(p, out_hw),
                &mut dz_spec,
            );
            let prods: Vec<Product> = segments(p, o0, o1)
                .into_iter()
                .map(|(g, s0, s1)| Product {
                    m: cig,
                    n: s1 - s0,
                    k: nb,
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
            run_products(&prods, &x_spec, &dz_spec, &mut dw_spec, plan.lb);
            let dw_spec = &dw_spec;
            grad_weight[o0 * cig * k_plane..o1 * cig * k_plane]
                .par_chunks_mut(k_plane)
                .enumerate()
                .for_each_init(
                    || plan.work(),
                    |w, (idx, gw)| {
                        let spec = &dw_spec[idx * sl..][..sl];
                        let rows = (0..p.kernel_h).map(|ky| ky * p.dilation_h);
                        plan.inverse(w, spec, rows, |ky, row| {
                            let g_row = &mut gw[ky * p.kernel_w..(ky + 1) * p.kernel_w];
                            for (kx, g) in g_row.iter_mut().enumerate() {
                                *g += row[kx * p.dilation_w] * scale;
                            }
                        });
                    },
                );
        }
    }
    if let Some(gb) = grad_bias {
        bias_grad(grad_out, p.batch, oc_n, out_plane, gb);
    }
}

/// grad_bias[oc] = sum of grad_out over batch and positions (f64 sums: the batch can be long).
pub(crate) fn bias_grad(
    grad_out: &[f32],
    batch: usize,
    channels: usize,
    plane: usize,
    grad_bias: &mut [f32],
) {
    grad_bias.par_iter_mut().enumerate().for_each(|(oc, g)| {
        let mut s = 0f64;
        for n in 0..batch {
            let base = (n * channels + oc) * plane;
            s += grad_out[base..base + plane]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
        *g = s as f32;
    });
}
