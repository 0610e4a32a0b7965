//! Transposed 2-D convolution (torch.nn.functional.conv_transpose2d), forward and backward.
//!
//! No loops of its own: a transposed convolution is the adjoint of a convolution, so each pass is
//! one of conv2d's entry points run on a "conv2d view" of the same tensors, and every speed-up of
//! conv2d (and its [`ConvAlgo::Auto`] choice) applies here for free.
//!
//! The view: conv2d whose *input* is the transposed conv's output `[N, C_out, H_out, W_out]` and
//! whose *output* is the transposed conv's input `[N, C_in, H, W]`. The transposed weight
//! `[C_in, C_out/g, kH, kW]` already is that conv2d's OIHW weight (O = C_in, I/g = C_out/g), with
//! the same groups. Then
//! - transposed forward        = conv2d backward_data (plus the bias),
//! - transposed backward_data  = conv2d forward (no bias),
//! - transposed backward_weight = conv2d backward_weight with input and grad_out swapped.
//!
//! Output padding adds rows/columns at the bottom/right that no kernel tap reaches (they get only
//! the bias). The view keeps top/left padding = `padding` (that fixes where taps land) and picks
//! the bottom/right padding so conv2d's output size comes out exactly `H x W`. When output padding
//! exceeds `padding + stride - 1` (possible only when dilation > stride) even zero bottom padding
//! leaves conv2d an extra window, so the view works on a copy cropped of the untouched rows.
use super::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, nchw_lengths, Conv2dParams,
    ConvAlgo,
};
use crate::error::{check_len, check_positive};
use crate::{bail, scratch, Result};
use rayon::prelude::*;

/// Shape and hyper-parameters of one conv_transpose2d call (torch's argument names and meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    /// Total output channels: the weight's second dimension times `groups`.
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Implicit padding removed from each side of the output (torch's `padding`).
    pub pad_h: usize,
    pub pad_w: usize,
    /// Extra rows/columns added at the bottom/right of the output.
    pub output_pad_h: usize,
    pub output_pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

/// How one call maps onto conv2d.
#[derive(Debug, Clone, Copy)]
enum View {
    /// conv2d over the full output buffer.
    Direct(Conv2dParams),
    /// conv2d over the output cropped to `in_h x in_w` of the view (the cut rows/columns are
    /// beyond every kernel tap).
    Cropped(Conv2dParams),
    /// No input pixel lands inside the output at all: forward is the bias alone.
    Empty,
}

impl ConvTranspose2dParams {
    /// The parameters of conv_transpose2d(input, weight) from the tensors' shapes, as torch reads
    /// them: input `[N, C_in, H, W]`, weight `[C_in, C_out / groups, kH, kW]`, stride `[sH, sW]`,
    /// padding `[pH, pW]`, output padding `[opH, opW]`, dilation `[dH, dW]`. Checks everything
    /// [`validate`](Self::validate) checks, then the weight's channels against the input's.
    pub fn from_shapes(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
        output_padding: [usize; 2],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<ConvTranspose2dParams> {
        let [batch, in_channels, in_h, in_w] = input;
        let [weight_in, out_per_group, kernel_h, kernel_w] = weight;
        let Some(out_channels) = out_per_group.checked_mul(groups) else {
            bail!(
                "conv_transpose2d: the weight {weight:?} with {groups} groups has more output \
                 channels than fit in memory"
            );
        };
        let p = ConvTranspose2dParams {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            stride_h: stride[0],
            stride_w: stride[1],
            pad_h: padding[0],
            pad_w: padding[1],
            output_pad_h: output_padding[0],
            output_pad_w: output_padding[1],
            dilation_h: dilation[0],
            dilation_w: dilation[1],
            groups,
        };
        p.validate()?;
        if weight_in != in_channels {
            bail!(
                "conv_transpose2d: the weight {weight:?} takes {weight_in} input channels, but the \
                 input {input:?} has {in_channels} (expected weight shape [{in_channels}, \
                 {out_per_group}, {kernel_h}, {kernel_w}])"
            );
        }
        Ok(p)
    }

    /// Checks the hyper-parameters and returns the output (height, width).
    pub fn validate(&self) -> Result<(usize, usize)> {
        self.check_common()?;
        // As torch: a larger output padding would add rows that no stride/dilation step explains.
        let op_ok = |op: usize, s: usize, d: usize| op < s || op < d;
        if !op_ok(self.output_pad_h, self.stride_h, self.dilation_h)
            || !op_ok(self.output_pad_w, self.stride_w, self.dilation_w)
        {
            bail!(
                "outputPadding: must be smaller than either stride or dilation in each dimension, \
                 got outputPadding [{}, {}] with stride [{}, {}] and dilation [{}, {}]",
                self.output_pad_h,
                self.output_pad_w,
                self.stride_h,
                self.stride_w,
                self.dilation_h,
                self.dilation_w
            );
        }
        // (in - 1) * stride + dilation * (k - 1) + output_padding + 1 - 2 * padding, kept as the
        // unpadded extent and the padding so nothing goes negative before it is checked.
        let extent = |n: usize, s: usize, d: usize, k: usize, op: usize| {
            (n - 1)
                .checked_mul(s)?
                .checked_add(d.checked_mul(k - 1)?)?
                .checked_add(op)?
                .checked_add(1)
        };
        let full_h = extent(
            self.in_h,
            self.stride_h,
            self.dilation_h,
            self.kernel_h,
            self.output_pad_h,
        );
        let full_w = extent(
            self.in_w,
            self.stride_w,
            self.dilation_w,
            self.kernel_w,
            self.output_pad_w,
        );
        let (Some(full_h), Some(full_w), Some(cut_h), Some(cut_w)) = (
            full_h,
            full_w,
            self.pad_h.checked_mul(2),
            self.pad_w.checked_mul(2),
        ) else {
            bail!("conv_transpose2d: sizes overflow");
        };
        if full_h <= cut_h || full_w <= cut_w {
            bail!(
                "padding: output size {}x{} for input {}x{} is not positive (padding [{}, {}] \
                 too large)",
                full_h as i128 - cut_h as i128,
                full_w as i128 - cut_w as i128,
                self.in_h,
                self.in_w,
                self.pad_h,
                self.pad_w
            );
        }
        let out_h = full_h - cut_h;
        let out_w = full_w - cut_w;
        // Refuse shapes whose buffers could not exist, before anyone allocates them.
        self.check_numel((out_h, out_w))?;
        Ok((out_h, out_w))
    }

    /// `[C_in, C_out / groups, kH, kW]`, as torch stores a transposed-conv weight.
    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.in_channels,
            self.out_channels / self.groups.max(1),
            self.kernel_h,
            self.kernel_w,
        ]
    }

    nchw_lengths!();

    /// The conv2d that this call is the adjoint of. Call after `validate`.
    fn view(&self, out_hw: (usize, usize)) -> Result<View> {
        // Along one axis: (view input length, bottom padding). Top padding stays `pad` so that
        // conv2d's window `i` starts at `i * stride - pad`, exactly where input pixel `i` lands.
        // conv2d then yields `floor((len + pad + bottom - span) / stride) + 1` windows, which must
        // be the transposed conv's input size `n`; with span = dilation * (k - 1) + 1 that needs
        // `0 <= output_pad - pad + bottom - crop < stride`.
        let axis = |out: usize, pad: usize, op: usize, s: usize| {
            let crop = op.saturating_sub(pad.saturating_add(s - 1));
            (out - crop, pad.saturating_sub(op), crop)
        };
        let (len_h, bottom, crop_h) = axis(out_hw.0, self.pad_h, self.output_pad_h, self.stride_h);
        let (len_w, right, crop_w) = axis(out_hw.1, self.pad_w, self.output_pad_w, self.stride_w);
        if len_h == 0 || len_w == 0 {
            return Ok(View::Empty);
        }
        let p = Conv2dParams {
            batch: self.batch,
            in_channels: self.out_channels,
            in_h: len_h,
            in_w: len_w,
            out_channels: self.in_channels,
            kernel_h: self.kernel_h,
            kernel_w: self.kernel_w,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_top: self.pad_h,
            pad_bottom: bottom,
            pad_left: self.pad_w,
            pad_right: right,
            dilation_h: self.dilation_h,
            dilation_w: self.dilation_w,
            groups: self.groups,
        };
        let got = p.validate()?;
        if got != (self.in_h, self.in_w) {
            // The algebra above rules this out; an error beats a wrong answer if it is ever wrong.
            bail!(
                "conv_transpose2d: internal conv2d view gives {}x{} windows for a {}x{} input",
                got.0,
                got.1,
                self.in_h,
                self.in_w
            );
        }
        Ok(if crop_h == 0 && crop_w == 0 {
            View::Direct(p)
        } else {
            View::Cropped(p)
        })
    }
}

fn check_bias(p: &ConvTranspose2dParams, bias: Option<&[f32]>) -> Result<()> {
    if let Some(b) = bias {
        check_len("bias", b.len(), p.out_channels)?;
    }
    Ok(())
}

/// Top-left `to` corner of every `from`-sized plane of `src`.
fn crop(src: &[f32], from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let planes = src.len() / (from.0 * from.1);
    let mut out = crate::scratch::zeroed::<f32>(planes * to.0 * to.1);
    out.par_chunks_mut(to.0 * to.1)
        .zip(src.par_chunks(from.0 * from.1))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_mut(to.1).zip(src.chunks(from.1)) {
                d.copy_from_slice(&s[..to.1]);
            }
        });
    out
}

/// Writes each `from`-sized plane of `src` into the top-left corner of a `to`-sized plane of
/// `dst`, zeroing the rest.
fn uncrop(src: &[f32], from: (usize, usize), dst: &mut [f32], to: (usize, usize)) {
    dst.par_chunks_mut(to.0 * to.1)
        .zip(src.par_chunks(from.0 * from.1))
        .for_each(|(dst, src)| {
            dst.fill(0.0);
            for (d, s) in dst.chunks_mut(to.1).zip(src.chunks(from.1)) {
                d[..from.1].copy_from_slice(s);
            }
        });
}

/// output = conv_transpose2d(input, weight) + bias. Overwrites `output`.
pub fn conv_transpose2d_forward(
    p: &ConvTranspose2dParams,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_bias(p, bias)?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    scratch::fallible("convTranspose2d", || {
        match p.view(out_hw)? {
            View::Direct(v) => conv2d_backward_data(&v, input, weight, output, ConvAlgo::Auto)?,
            View::Cropped(v) => {
                let mut inner = crate::scratch::zeroed::<f32>(v.input_len());
                conv2d_backward_data(&v, input, weight, &mut inner, ConvAlgo::Auto)?;
                uncrop(&inner, (v.in_h, v.in_w), output, out_hw);
            }
            View::Empty => output.fill(0.0),
        }
        Ok(())
    })?;
    if let Some(b) = bias {
        let plane = out_hw.0 * out_hw.1;
        output
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(idx, y)| {
                let v = b[idx % p.out_channels];
                y.iter_mut().for_each(|o| *o += v);
            });
    }
    Ok(())
}

/// grad_input = d(loss)/d(input) given grad_out = d(loss)/d(output). Overwrites `grad_input`.
pub fn conv_transpose2d_backward_data(
    p: &ConvTranspose2dParams,
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    scratch::fallible("convTranspose2d", || {
        match p.view(out_hw)? {
            View::Direct(v) => {
                conv2d_forward(&v, grad_out, weight, None, grad_input, ConvAlgo::Auto)?
            }
            View::Cropped(v) => {
                let inner = crop(grad_out, out_hw, (v.in_h, v.in_w));
                conv2d_forward(&v, &inner, weight, None, grad_input, ConvAlgo::Auto)?
            }
            View::Empty => grad_input.fill(0.0),
        }
        Ok(())
    })?;
    Ok(())
}

/// grad_weight (and grad_bias when given) of conv_transpose2d. Overwrites both.
pub fn conv_transpose2d_backward_weight(
    p: &ConvTranspose2dParams,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("gradWeight", grad_weight.len(), p.weight_len())?;
    if let Some(gb) = &grad_bias {
        check_len("gradBias", gb.len(), p.out_channels)?;
    }
    // conv2d's grad_bias would be per C_in (the view's output channels): not ours, so not asked.
    scratch::fallible("convTranspose2d", || {
        match p.view(out_hw)? {
            View::Direct(v) => {
                conv2d_backward_weight(&v, grad_out, input, grad_weight, None, ConvAlgo::Auto)?
            }
            View::Cropped(v) => {
                let inner = crop(grad_out, out_hw, (v.in_h, v.in_w));
                conv2d_backward_weight(&v, &inner, input, grad_weight, None, ConvAlgo::Auto)?
            }
            View::Empty => grad_weight.fill(0.0),
        }
        Ok(())
    })?;
    if let Some(gb) = grad_bias {
        let plane = out_hw.0 * out_hw.1;
        let item = p.out_channels * plane;
        // f64 sums: a channel can hold batch * H_out * W_out terms.
        gb.par_iter_mut().enumerate().for_each(|(oc, g)| {
            let total: f64 = (0..p.batch)
                .map(|n| {
                    grad_out[n * item + oc * plane..][..plane]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>()
                })
                .sum();
            *g = total as f32;
        });
    }
    Ok(())
}
