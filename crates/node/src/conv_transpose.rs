//! conv_transpose2d entries (as torch.nn.functional.conv_transpose2d): shapes and
//! hyper-parameters come in as plain numbers, results go into buffers the JavaScript side owns.
use crate::args::{kernel_err, size, sizes};
use crate::runtime::{given, write_into, write_into_pair};
use ferroconv_kernels::conv::transpose::{self, ConvTranspose2dParams};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

#[napi(object, js_name = "ConvTranspose2dArgs")]
pub struct ConvTranspose2dArgs {
    /// [N, C_in, H, W]
    pub input_shape: Vec<f64>,
    /// [C_in, C_out / groups, kH, kW]
    pub weight_shape: Vec<f64>,
    /// [sH, sW]
    pub stride: Vec<f64>,
    /// [pH, pW]: removed from both sides of the output
    pub padding: Vec<f64>,
    /// [opH, opW]: extra rows/columns at the bottom/right of the output
    pub output_padding: Vec<f64>,
    /// [dH, dW]
    pub dilation: Vec<f64>,
    pub groups: f64,
}

pub fn conv_transpose_params(a: &ConvTranspose2dArgs) -> napi::Result<ConvTranspose2dParams> {
    ConvTranspose2dParams::from_shapes(
        sizes("inputShape", &a.input_shape)?,
        sizes("weightShape", &a.weight_shape)?,
        sizes("stride", &a.stride)?,
        sizes("padding", &a.padding)?,
        sizes("outputPadding", &a.output_padding)?,
        sizes("dilation", &a.dilation)?,
        size("groups", a.groups)?,
    )
    .map_err(kernel_err)
}

/// Output spatial size [outH, outW] of a conv_transpose2d, or an Error naming the bad argument.
#[napi(catch_unwind, js_name = "convTranspose2dOutputSize")]
pub fn conv_transpose2d_output_size(args: ConvTranspose2dArgs) -> napi::Result<Vec<f64>> {
    let p = conv_transpose_params(&args)?;
    let (oh, ow) = p.validate().map_err(kernel_err)?;
    // f64, not u32: exact for every size a buffer can have, never silently truncated.
    Ok(vec![oh as f64, ow as f64])
}

/// output <- conv_transpose2d(input, weight) + bias, written into the caller's `output`.
#[napi(catch_unwind, js_name = "convTranspose2dForward")]
pub fn conv_transpose2d_forward(
    input: Float32Array,
    weight: Float32Array,
    bias: Option<Float32Array>,
    mut output: Float32Array,
    args: ConvTranspose2dArgs,
) -> napi::Result<()> {
    let p = conv_transpose_params(&args)?;
    let b = bias.as_ref();
    let ins = given(&[
        ("input", Some(&input)),
        ("weight", Some(&weight)),
        ("bias", b),
    ]);
    write_into(
        "convTranspose2dForward",
        ("output", &mut output),
        &ins,
        |y| transpose::conv_transpose2d_forward(&p, &input, &weight, bias.as_deref(), y),
    )
}

/// gradInput <- d(loss)/d(input) of conv_transpose2d, given gradOutput.
#[napi(catch_unwind, js_name = "convTranspose2dBackwardData")]
pub fn conv_transpose2d_backward_data(
    grad_output: Float32Array,
    weight: Float32Array,
    mut grad_input: Float32Array,
    args: ConvTranspose2dArgs,
) -> napi::Result<()> {
    let p = conv_transpose_params(&args)?;
    write_into(
        "convTranspose2dBackwardData",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output), ("weight", &weight)],
        |gi| transpose::conv_transpose2d_backward_data(&p, &grad_output, &weight, gi),
    )
}

/// gradWeight (and gradBias when given) of conv_transpose2d, given the input and gradOutput.
#[napi(catch_unwind, js_name = "convTranspose2dBackwardWeight")]
pub fn conv_transpose2d_backward_weight(
    input: Float32Array,
    grad_output: Float32Array,
    mut grad_weight: Float32Array,
    mut grad_bias: Option<Float32Array>,
    args: ConvTranspose2dArgs,
) -> napi::Result<()> {
    let p = conv_transpose_params(&args)?;
    write_into_pair(
        "convTranspose2dBackwardWeight",
        ("gradWeight", &mut grad_weight),
        ("gradBias", grad_bias.as_mut()),
        &[("input", &input), ("gradOutput", &grad_output)],
        |gw, gb| transpose::conv_transpose2d_backward_weight(&p, &input, &grad_output, gw, gb),
    )
}
