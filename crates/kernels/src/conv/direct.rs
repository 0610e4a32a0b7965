//! Direct convolution, forward and backward: no lowering to a matrix product, so no
//! `kh * kw`-fold copies of the input. Best where there is little to share between output
//! channels: depthwise and other grouped convolutions, and small layers.
//!
//! With AVX2+FMA or NEON the work runs in register-blocked micro-kernels over zero-padded copies
//! of the input (see `direct/blocked/mod.rs`). The portable path builds each plane row by row:
//! for every tap the valid span of columns is computed once, so the inner loop is a branch-free
//! axpy over a contiguous row (vectorised by the compiler when the stride is 1).
use super::valid_range;
use super::{BackwardData, BackwardWeight, Forward};
use crate::simd::dispatch;
use rayon::prelude::*;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod blocked;

pub fn forward(f: Forward<'_>, bias: Option<&[f32]>) {
    dispatch!(crate::simd::isa(),
        avx2 => blocked::forward(f, bias),
        neon => blocked::forward(f, bias),
        _ => forward_scalar(f, bias),
    )
}

fn forward_scalar(f: Forward<'_>, bias: Option<&[f32]>) {
    let (p, out_hw, input, weight, output) = f.parts();
    let (oh, ow) = out_hw;
    let plane = oh * ow;
    let in_plane = p.in_h * p.in_w;
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let k_len = cig * p.kernel_h * p.kernel_w;
    output
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(idx, y)| {
            let (n, oc) = (idx / p.out_channels, idx % p.out_channels);
            let g = oc / cog;
            y.fill(bias.map_or(0.0, |b| b[oc]));
            let w_oc = &weight[oc * k_len..(oc + 1) * k_len];
            for icg in 0..cig {
                let ic = g * cig + icg;
                let x = &input[(n * p.in_channels + ic) * in_plane..][..in_plane];
                for ky in 0..p.kernel_h {
                    let (oy_lo, oy_hi) =
                        valid_range(oh, p.in_h, p.stride_h, ky * p.dilation_h, p.pad_top);
                    for kx in 0..p.kernel_w {
                        let w = w_oc[(icg * p.kernel_h + ky) * p.kernel_w + kx];
                        let off = kx * p.dilation_w;
                        let (ox_lo, ox_hi) = valid_range(ow, p.in_w, p.stride_w, off, p.pad_left);
                        if ox_lo >= ox_hi {
                            continue;
                        }
                        for oy in oy_lo..oy_hi {
                            let iy = oy * p.stride_h + ky * p.dilation_h - p.pad_top;
                            let x_row = &x[iy * p.in_w..(iy + 1) * p.in_w];
                            let y_row = &mut y[oy * ow + ox_lo..oy * ow + ox_hi];
                            let ix0 = ox_lo * p.stride_w + off - p.pad_left;
                            if p.stride_w == 1 {
                                let xs = &x_row[ix0..ix0 + y_row.len()];
                                for (yo, &xi) in y_row.iter_mut().zip(xs) {
                                    *yo += w * xi;
                                }
                            } else {
                                for (j, yo) in y_row.iter_mut().enumerate() {
                                    *yo += w * x_row[ix0 + j * p.stride_w];
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// grad_input of conv2d (overwrites `grad_input`).
pub fn backward_data(b: BackwardData<'_>) {
    dispatch!(crate::simd::isa(),
        avx2 => blocked::backward_data(b),
        neon => blocked::backward_data(b),
        _ => backward_data_scalar(b),
    )
}

/// The forward's loop nest with the roles of input and output swapped: each input-gradient
/// plane is owned by one task, which scatters every tap's contribution into it.
fn backward_data_scalar(b: BackwardData<'_>) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
    let (oh, ow) = out_hw;
    let plane = oh * ow;
    let in_plane = p.in_h * p.in_w;
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let k_len = cig * p.kernel_h * p.kernel_w;
    grad_input
        .par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(idx, dx)| {
            let (n, ic) = (idx / p.in_channels, idx % p.in_channels);
            let (g, icg) = (ic / cig, ic % cig);
            dx.fill(0.0);
            for oc in g * cog..(g + 1) * cog {
                let dy = &grad_out[(n * p.out_channels + oc) * plane..][..plane];
                let w_ic = &weight[oc * k_len + icg * p.kernel_h * p.kernel_w..];
                for ky in 0..p.kernel_h {
                    let (oy_lo, oy_hi) =
                        valid_range(oh, p.in_h, p.stride_h, ky * p.dilation_h, p.pad_top);
                    for kx in 0..p.kernel_w {
                        let w = w_ic[ky * p.kernel_w + kx];
                        let off = kx * p.dilation_w;
                        let (ox_lo, ox_hi) = valid_range(ow, p.in_w, p.stride_w, off, p.pad_left);
                        if ox_lo >= ox_hi {
                            continue;
                        }
                        for oy in oy_lo..oy_hi {
                            let iy = oy * p.stride_h + ky * p.dilation_h - p.pad_top;
                            let dx_row = &mut dx[iy * p.in_w..(iy + 1) * p.in_w];
                            let dy_row = &dy[oy * ow + ox_lo..oy * ow + ox_hi];
                            let ix0 = ox_lo * p.stride_w + off - p.pad_left;
                            if p.stride_w == 1 {
                                let d = &mut dx_row[ix0..ix0 + dy_row.len()];
                                for (di, &g) in d.iter_mut().zip(dy_row) {
                                    *di += w * g;
                                }
                            } else {
                                for (j, &g) in dy_row.iter().enumerate() {
                                    dx_row[ix0 + j * p.stride_w] += w * g;
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// grad_weight (and grad_bias) of conv2d (overwrites both).
pub fn backward_weight(mut b: BackwardWeight<'_>) {
    let (p, out_hw, grad_out) = (b.p, b.out_hw, b.grad_out);
    let grad_bias = b.grads.1.take();
    dispatch!(crate::simd::isa(),
        avx2 => blocked::backward_weight(b),
        neon => blocked::backward_weight(b),
        _ => backward_weight_scalar(b),
    );
    if let Some(gb) = grad_bias {
        bias_grad(grad_out, p.batch, p.out_channels, out_hw.0 * out_hw.1, gb);
    }
}

/// One task per output channel owns that channel's weight gradient. Each tap's dot product
/// runs row by row in f32 and is summed in f64 across rows and batch items (the sums can run
/// over many thousands of terms).
fn backward_weight_scalar(b: BackwardWeight<'_>) {
    let (p, out_hw, input, grad_out, (grad_weight, _)) = b.parts();
    let (oh, ow) = out_hw;
    let plane = oh * ow;
    let in_plane = p.in_h * p.in_w;
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let k_plane = p.kernel_h * p.kernel_w;
    grad_weight
        .par_chunks_mut(cig * k_plane)
        .enumerate()
        .for_each(|(oc, gw)| {
            let g = oc / cog;
            let mut acc = vec![0f64; cig * k_plane];
            for n in 0..p.batch {
                let dy = &grad_out[(n * p.out_channels + oc) * plane..][..plane];
                for icg in 0..cig {
                    let ic = g * cig + icg;
                    let x = &input[(n * p.in_channels + ic) * in_plane..][..in_plane];
                    for ky in 0..p.kernel_h {
                        let (oy_lo, oy_hi) =
                            valid_range(oh, p.in_h, p.stride_h, ky * p.dilation_h, p.pad_top);
                        for kx in 0..p.kernel_w {
                            let off = kx * p.dilation_w;
                            let (ox_lo, ox_hi) =
                                valid_range(ow, p.in_w, p.stride_w, off, p.pad_left);
                            if ox_lo >= ox_hi {
                                continue;
                            }
                            let mut sum = 0f64;
                            for oy in oy_lo..oy_hi {
                                let iy = oy * p.stride_h + ky * p.dilation_h - p.pad_top;
                                let x_row = &x[iy * p.in_w..(iy + 1) * p.in_w];
                                let dy_row = &dy[oy * ow + ox_lo..oy * ow + ox_hi];
                                let ix0 = ox_lo * p.stride_w + off - p.pad_left;
                                let row: f32 = if p.stride_w == 1 {
                                    let xs = &x_row[ix0..ix0 + dy_row.len()];
                                    dy_row.iter().zip(xs).map(|(&a, &b)| a * b).sum()
                                } else {
                                    dy_row
                                        .iter()
                                        .enumerate()
                                        .map(|(j, &a)| a * x_row[ix0 + j * p.stride_w])
                                        .sum()
                                };
                                sum += row as f64;
                            }
                            acc[(icg * p.kernel_h + ky) * p.kernel_w + kx] += sum;
                        }
                    }
                }
            }
            for (g, a) in gw.iter_mut().zip(acc) {
                *g = a as f32;
            }
        });
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
