//! Fully-connected layer as torch.nn.Linear: `output = input * weight^T + bias`, with input
//! `[batch, in_features]`, weight `[out_features, in_features]`, bias and output rows of
//! `out_features`. Forward and backward are GEMMs (see `crate::gemm`); outputs are overwritten.
use crate::bail;
use crate::error::{check_len, check_positive, numel};
use crate::gemm::{self, sgemm_unchecked, Lhs, Mat, Rhs};
use crate::Result;
use rayon::prelude::*;

/// Checks the three sizes and returns (input, weight, output) lengths.
fn lens(batch: usize, in_f: usize, out_f: usize) -> Result<(usize, usize, usize)> {
    check_positive("batch", batch)?;
    check_positive("inFeatures", in_f)?;
    check_positive("outFeatures", out_f)?;
    Ok((
        numel("input", &[batch, in_f])?,
        numel("weight", &[out_f, in_f])?,
        numel("output", &[batch, out_f])?,
    ))
}

/// Checks a forward's buffers and starts the output: with a bias, every row is set to it and
/// the GEMM accumulates onto it (the returned beta is 1); without, beta is 0.
#[allow(clippy::too_many_arguments)]
fn start_output(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<f32> {
    let (x_len, w_len, y_len) = lens(batch, in_f, out_f)?;
    check_len("input", input.len(), x_len)?;
    check_len("weight", weight.len(), w_len)?;
    if let Some(b) = bias {
        check_len("bias", b.len(), out_f)?;
    }
    check_len("output", output.len(), y_len)?;
    Ok(match bias {
        Some(b) => {
            output
                .chunks_exact_mut(out_f)
                .for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    })
}

/// A linear layer's weights prepared once for the GEMM (transposed and packed into the
/// panels it reads), for forwards whose weights do not change between calls (a compiled
/// plan's inference runs): at batch 8, packing AlexNet's or VGG's classifier weights on every
/// call costs more than the product itself. Batch 1 needs none (it is a matrix-vector product).
pub struct PreparedLinear {
    in_f: usize,
    out_f: usize,
    packed: Vec<f32>,
}

impl PreparedLinear {
    /// Floats held.
    pub fn floats(&self) -> usize {
        self.packed.len()
    }

    /// Whether these were prepared for `in_f -> out_f`.
    pub fn fits(&self, in_f: usize, out_f: usize) -> bool {
        (self.in_f, self.out_f) == (in_f, out_f)
    }
}

/// Prepares `weight` (`[out_f, in_f]`) for [`linear_forward_prepared`].
pub fn prepare_forward(in_f: usize, out_f: usize, weight: &[f32]) -> Result<PreparedLinear> {
    let (_, w_len, _) = lens(1, in_f, out_f)?;
    check_len("weight", weight.len(), w_len)?;
    crate::scratch::fallible("linear", || {
        let packed = gemm::pack_b_whole(Mat::new(weight, in_f, true), in_f, out_f);
        Ok(PreparedLinear {
            in_f,
            out_f,
            packed,
        })
    })
}

/// [`linear_forward`] with the weights prepared by [`prepare_forward`] from `weight`; the
/// results are bit for bit the same.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_prepared(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    prepared: &PreparedLinear,
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    if !prepared.fits(in_f, out_f) {
        bail!("linear: prepared weights are for another shape");
    }
    if batch == 1 || out_f == 1 {
        // A matrix-vector product reads the weights as they are.
        return linear_forward(batch, in_f, out_f, input, weight, bias, output);
    }
    let beta = start_output(batch, in_f, out_f, input, weight, bias, output)?;
    crate::scratch::fallible("linear", || {
        let x = Lhs::Raw(Mat::new(input, in_f, false));
        let par = gemm::want_parallel(batch, out_f, in_f);
        let b = Rhs::Packed(&prepared.packed);
        gemm::gemm(batch, out_f, in_f, 1.0, x, b, beta, output, out_f, par);
        Ok(())
    })
}

/// output[b, o] = sum_i input[b, i] * weight[o, i] + bias[o].
pub fn linear_forward(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let beta = start_output(batch, in_f, out_f, input, weight, bias, output)?;
    crate::scratch::fallible("linear", || {
        let (x, w) = (Mat::new(input, in_f, false), Mat::new(weight, in_f, true));
        sgemm_unchecked(batch, out_f, in_f, 1.0, x, w, beta, output, out_f);
        Ok(())
    })
}

/// Gradients of [`linear_forward`] given `grad_out` (`[batch, out_features]`); each requested
/// gradient is overwritten: grad_input = grad_out * weight, grad_weight = grad_out^T * input,
/// grad_bias = column sums of grad_out.
#[allow(clippy::too_many_arguments)] // one optional output per parameter, as the layer has
pub fn linear_backward(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    grad_out: &[f32],
    grad_input: Option<&mut [f32]>,
    grad_weight: Option<&mut [f32]>,
    grad_bias: Option<&mut [f32]>,
) -> Result<()> {
    let (x_len, w_len, y_len) = lens(batch, in_f, out_f)?;
    check_len("input", input.len(), x_len)?;
    check_len("weight", weight.len(), w_len)?;
    check_len("gradOutput", grad_out.len(), y_len)?;
    if let Some(g) = &grad_input {
        check_len("gradInput", g.len(), x_len)?;
    }
    if let Some(g) = &grad_weight {
        check_len("gradWeight", g.len(), w_len)?;
    }
    if let Some(g) = &grad_bias {
        check_len("gradBias", g.len(), out_f)?;
    }
    crate::scratch::fallible("linear", move || {
        if let Some(gx) = grad_input {
            let (dy, w) = (
                Mat::new(grad_out, out_f, false),
                Mat::new(weight, in_f, false),
            );
            sgemm_unchecked(batch, in_f, out_f, 1.0, dy, w, 0.0, gx, in_f);
        }
        if let Some(gw) = grad_weight {
            let (dy, x) = (
                Mat::new(grad_out, out_f, true),
                Mat::new(input, in_f, false),
            );
            sgemm_unchecked(out_f, in_f, batch, 1.0, dy, x, 0.0, gw, in_f);
        }
        if let Some(gb) = grad_bias {
            // Column sums in f64: batches can be long and the sum is a reduction of many terms.
            gb.par_iter_mut().enumerate().for_each(|(o, g)| {
                let s: f64 = (0..batch).map(|b| grad_out[b * out_f + o] as f64).sum();
                *g = s as f32;
            });
        }
        Ok(())
    })
}
