//! Fully-connected layer as torch.nn.Linear: `output = input * weight^T + bias`, with input
//! `[batch, in_features]`, weight `[out_features, in_features]`, bias and output rows of
//! `out_features`. Forward and backward are GEMMs (see `crate::gemm`); outputs are overwritten.
use crate::error::{check_len, check_positive, numel};
use crate::gemm::{sgemm_unchecked, Mat};
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
    let (x_len, w_len, y_len) = lens(batch, in_f, out_f)?;
    check_len("input", input.len(), x_len)?;
    check_len("weight", weight.len(), w_len)?;
    if let Some(b) = bias {
        check_len("bias", b.len(), out_f)?;
    }
    check_len("output", output.len(), y_len)?;
    // With a bias, start every row from it and let the GEMM accumulate (beta = 1).
    let beta = match bias {
        Some(b) => {
            output
                .chunks_exact_mut(out_f)
                .for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    };
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
