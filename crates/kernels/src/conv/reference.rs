//! The plain loop nest that defines conv2d. Slow and obviously right: every other algorithm and
//! every backward is tested against it. Arguments are assumed already validated.
use super::Conv2dParams;
use super::{BackwardData, BackwardWeight, Forward};

/// Calls `f(input_index, output_index, weight_index)` for every (input, output, weight) triple
/// that meet in one batch item: flat indices into the item's input `[C_in, H, W]`, its output
/// `[C_out, H_out, W_out]` and the whole weight `[C_out, C_in / groups, kH, kW]`.
fn for_each_tap(p: &Conv2dParams, out_hw: (usize, usize), mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = out_hw;
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    for oc in 0..p.out_channels {
        let g = oc / cog;
        for oy in 0..oh {
            for ox in 0..ow {
                for icg in 0..cig {
                    let ic = g * cig + icg;
                    for ky in 0..p.kernel_h {
                        let iy =
                            (oy * p.stride_h + ky * p.dilation_h) as isize - p.pad_top as isize;
                        if iy < 0 || iy >= p.in_h as isize {
                            continue;
                        }
                        for kx in 0..p.kernel_w {
                            let ix = (ox * p.stride_w + kx * p.dilation_w) as isize
                                - p.pad_left as isize;
                            if ix < 0 || ix >= p.in_w as isize {
                                continue;
                            }
                            let in_idx = (ic * p.in_h + iy as usize) * p.in_w + ix as usize;
                            let out_idx = (oc * oh + oy) * ow + ox;
                            let w_idx = ((oc * cig + icg) * p.kernel_h + ky) * p.kernel_w + kx;
                            f(in_idx, out_idx, w_idx);
                        }
                    }
                }
            }
        }
    }
}

pub fn forward(f: Forward<'_>, bias: Option<&[f32]>) {
    let (p, out_hw, input, weight, output) = f.parts();
    let in_item = p.in_channels * p.in_h * p.in_w;
    let out_plane = out_hw.0 * out_hw.1;
    let out_item = p.out_channels * out_plane;
    for n in 0..p.batch {
        let x = &input[n * in_item..(n + 1) * in_item];
        let y = &mut output[n * out_item..(n + 1) * out_item];
        for (oc, plane) in y.chunks_mut(out_plane).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[oc]));
        }
        let mut acc = vec![0f64; out_item];
        for_each_tap(p, out_hw, |i, o, w| {
            acc[o] += x[i] as f64 * weight[w] as f64
        });
        for (yo, a) in y.iter_mut().zip(acc) {
            *yo += a as f32;
        }
    }
}

/// grad_input = conv2d's input gradient (overwrites `grad_input`).
pub fn backward_data(b: BackwardData<'_>) {
    let (p, out_hw, grad_out, weight, grad_input) = b.parts();
    let in_item = p.in_channels * p.in_h * p.in_w;
    let out_item = p.out_channels * out_hw.0 * out_hw.1;
    for n in 0..p.batch {
        let gy = &grad_out[n * out_item..(n + 1) * out_item];
        let mut acc = vec![0f64; in_item];
        for_each_tap(p, out_hw, |i, o, w| {
            acc[i] += gy[o] as f64 * weight[w] as f64
        });
        for (g, a) in grad_input[n * in_item..(n + 1) * in_item]
            .iter_mut()
            .zip(acc)
        {
            *g = a as f32;
        }
    }
}

/// grad_weight (and grad_bias) of conv2d (overwrites both).
pub fn backward_weight(b: BackwardWeight<'_>) {
    let (p, out_hw, input, grad_out, (grad_weight, grad_bias)) = b.parts();
    let in_item = p.in_channels * p.in_h * p.in_w;
    let out_plane = out_hw.0 * out_hw.1;
    let out_item = p.out_channels * out_plane;
    let mut acc = vec![0f64; grad_weight.len()];
    let mut bacc = vec![0f64; p.out_channels];
    for n in 0..p.batch {
        let x = &input[n * in_item..(n + 1) * in_item];
        let gy = &grad_out[n * out_item..(n + 1) * out_item];
        for_each_tap(p, out_hw, |i, o, w| acc[w] += x[i] as f64 * gy[o] as f64);
        for (oc, b) in bacc.iter_mut().enumerate() {
            *b += gy[oc * out_plane..(oc + 1) * out_plane]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>();
        }
    }
    for (g, a) in grad_weight.iter_mut().zip(acc) {
        *g = a as f32;
    }
    if let Some(gb) = grad_bias {
        for (g, a) in gb.iter_mut().zip(bacc) {
            *g = a as f32;
        }
    }
}
