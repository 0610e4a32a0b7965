//! PLACEHOLDER: the im2col algorithm is not written yet; these entries delegate to the reference
//! loop nest so the dispatch compiles and answers correctly.
use super::{reference, Conv2dParams};

pub fn forward(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) {
    reference::forward(p, out_hw, input, weight, bias, output)
}

pub fn backward_data(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) {
    reference::backward_data(p, out_hw, grad_out, weight, grad_input)
}

pub fn backward_weight(
    p: &Conv2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
) {
    reference::backward_weight(p, out_hw, input, grad_out, grad_weight, grad_bias)
}
