//! Direct convolution: no lowering, no extra memory. Each output plane (n, oc) is built row by
//! row; for every tap (ic, ky, kx) the valid span of output columns is computed once, so the
//! inner loop is a branch-free axpy over a contiguous row (vectorised by the compiler when the
//! stride is 1).
use super::Conv2dParams;
use rayon::prelude::*;

/// First and one-past-last output column whose input column `ox*stride + off - pad` is inside
/// `0..in_w`.
#[inline]
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    off: usize,
    pad: usize,
) -> (usize, usize) {
    // ox*stride + off >= pad  ->  ox >= ceil((pad - off) / stride)
    let lo = if pad > off {
        (pad - off).div_ceil(stride)
    } else {
        0
    };
    // ox*stride + off - pad < in_len  ->  ox < ceil((in_len + pad - off) / stride)
    let hi = if in_len + pad > off {
        (in_len + pad - off).div_ceil(stride)
    } else {
        0
    };
    (lo.min(out_len), hi.min(out_len).max(lo.min(out_len)))
}

pub fn forward(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
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

/// PLACEHOLDER until the direct backward is written: the reference loop nest.
pub fn backward_data(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    super::reference::backward_data(p, out_hw, grad_out, weight, grad_input)
}

/// PLACEHOLDER until the direct backward is written: the reference loop nest.
pub fn backward_weight(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    super::reference::backward_weight(p, out_hw, input, grad_out, grad_weight, grad_bias)
}
