//! Pooling entries: max pooling (with the int32 argmax indices its backward needs, or without
//! them for inference), average and adaptive average pooling, forward and backward. Callers own
//! every buffer; kernels write outputs in place.
use crate::args::{invalid, kernel_err, size, sizes};
use crate::runtime::{run, write_into};
use ferroconv_kernels::pool::{self, AdaptivePool2dParams, AvgPoolOptions, Pool2dParams};
use napi::bindgen_prelude::{Float32Array, Int32Array};
use napi_derive::napi;
use std::ops::Range;

#[napi(object, js_name = "Pool2dArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pool2dArgs {
    /// [N, C, H, W]
    pub input_shape: Vec<f64>,
    /// [kH, kW]
    pub kernel: Vec<f64>,
    /// [sH, sW]
    pub stride: Vec<f64>,
    /// [pH, pW], on both sides of each dim; at most half the kernel, as torch requires.
    pub padding: Vec<f64>,
    /// [dH, dW]; average pooling needs [1, 1].
    pub dilation: Vec<f64>,
    /// Round the output size up (torch's ceil_mode); the last window still starts inside the
    /// input or its left padding.
    pub ceil_mode: bool,
    /// Average pooling: count zero padding in the divisor. Default true, as torch.
    pub count_include_pad: Option<bool>,
    /// Average pooling: divide every window by this positive integer instead.
    pub divisor_override: Option<f64>,
}

pub(crate) fn pool_params(a: &Pool2dArgs) -> napi::Result<(Pool2dParams, (usize, usize))> {
    let p = Pool2dParams::from_shapes(
        sizes("inputShape", &a.input_shape)?,
        sizes("kernel", &a.kernel)?,
        sizes("stride", &a.stride)?,
        sizes("padding", &a.padding)?,
        sizes("dilation", &a.dilation)?,
        a.ceil_mode,
    )
    .map_err(kernel_err)?;
    let out = p.validate().map_err(kernel_err)?;
    Ok((p, out))
}

pub(crate) fn avg_options(a: &Pool2dArgs) -> napi::Result<AvgPoolOptions> {
    Ok(AvgPoolOptions {
        count_include_pad: a.count_include_pad.unwrap_or(true),
        divisor_override: a
            .divisor_override
            .map(|d| size("divisorOverride", d))
            .transpose()?,
    })
}

/// The memory a typed array views, as an address range.
pub(crate) fn span<T>(s: &[T]) -> Range<usize> {
    let r = s.as_ptr_range();
    r.start as usize..r.end as usize
}

/// Fails when an output shares memory with an input or with another output: kernels read
/// inputs while writing outputs, so aliasing would give wrong answers (and is undefined
/// behaviour in Rust). Works across element types, unlike `args::check_disjoint`.
pub(crate) fn check_buffers(
    outputs: &[(&str, Range<usize>)],
    inputs: &[(&str, Range<usize>)],
) -> napi::Result<()> {
    for (i, (out_name, o)) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(&outputs[i + 1..]);
        for (name, r) in others {
            // Empty views hold no memory (and get a length error from the kernel instead).
            if !o.is_empty() && !r.is_empty() && o.start < r.end && r.start < o.end {
                return Err(invalid(format!(
                    "{out_name}: must not share memory with {name}"
                )));
            }
        }
    }
    Ok(())
}

/// Output spatial size [outH, outW] of a max or average pool, or an Error naming the bad
/// argument.
#[napi(catch_unwind, js_name = "pool2dOutputSize")]
pub fn pool2d_output_size(args: Pool2dArgs) -> napi::Result<Vec<f64>> {
    let (_, (oh, ow)) = pool_params(&args)?;
    Ok(vec![oh as f64, ow as f64])
}

/// output <- max_pool2d(input); indices <- flat position (ih * W + iw) of each max within its
/// input plane, as torch's return_indices (-1 for a window that covers only padding).
#[napi(catch_unwind, js_name = "maxPool2dForward")]
pub fn max_pool2d_forward(
    input: Float32Array,
    mut output: Float32Array,
    mut indices: Int32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    let (p, _) = pool_params(&args)?;
    check_buffers(
        &[("output", span(&output)), ("indices", span(&indices))],
        &[("input", span(&input))],
    )?;
    let x: &[f32] = &input;
    // SAFETY: the outputs are disjoint from the input and from each other (checked above), and
    // the JavaScript thread is blocked in this call, so nothing else touches them meanwhile.
    let (y, ind) = unsafe { (output.as_mut(), indices.as_mut()) };
    run("maxPool2dForward", || {
        pool::max_pool2d_forward(&p, x, y, ind)
    })?
    .map_err(kernel_err)
}

/// output <- max_pool2d(input) without indices, for inference (no backward will run): the
/// same values as maxPool2dForward, minus the int32 index traffic.
#[napi(catch_unwind, js_name = "maxPool2dForwardNoIndices")]
pub fn max_pool2d_forward_no_indices(
    input: Float32Array,
    mut output: Float32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    let (p, _) = pool_params(&args)?;
    write_into(
        "maxPool2dForwardNoIndices",
        ("output", &mut output),
        &[("input", &input)],
        |y| pool::max_pool2d_forward_no_indices(&p, &input, y),
    )
}

/// gradInput <- gradOutput scattered through the forward's indices. An index outside its
/// input plane is an Error.
#[napi(catch_unwind, js_name = "maxPool2dBackward")]
pub fn max_pool2d_backward(
    grad_output: Float32Array,
    indices: Int32Array,
    mut grad_input: Float32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    let (p, _) = pool_params(&args)?;
    check_buffers(
        &[("gradInput", span(&grad_input))],
        &[
            ("gradOutput", span(&grad_output)),
            ("indices", span(&indices)),
        ],
    )?;
    let (go, ind): (&[f32], &[i32]) = (&grad_output, &indices);
    // SAFETY: disjoint from the inputs (checked above); the JavaScript thread waits on this call.
    let gi = unsafe { grad_input.as_mut() };
    run("maxPool2dBackward", || {
        pool::max_pool2d_backward(&p, go, ind, gi)
    })?
    .map_err(kernel_err)
}

/// output <- avg_pool2d(input) with torch's count_include_pad / divisor_override rules.
#[napi(catch_unwind, js_name = "avgPool2dForward")]
pub fn avg_pool2d_forward(
    input: Float32Array,
    mut output: Float32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    let (p, _) = pool_params(&args)?;
    let o = avg_options(&args)?;
    write_into(
        "avgPool2dForward",
        ("output", &mut output),
        &[("input", &input)],
        |y| pool::avg_pool2d_forward(&p, &o, &input, y),
    )
}

/// gradInput <- d(loss)/d(input) of avg_pool2d, given gradOutput.
#[napi(catch_unwind, js_name = "avgPool2dBackward")]
pub fn avg_pool2d_backward(
    grad_output: Float32Array,
    mut grad_input: Float32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    let (p, _) = pool_params(&args)?;
    let o = avg_options(&args)?;
    write_into(
        "avgPool2dBackward",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output)],
        |gi| pool::avg_pool2d_backward(&p, &o, &grad_output, gi),
    )
}

#[napi(object, js_name = "AdaptivePoolArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdaptivePoolArgs {
    /// [N, C, H, W]
    pub input_shape: Vec<f64>,
    /// [outH, outW]; [1, 1] is global average pooling.
    pub output_size: Vec<f64>,
}

pub(crate) fn adaptive_params(a: &AdaptivePoolArgs) -> napi::Result<AdaptivePool2dParams> {
    let input = sizes::<4>("inputShape", &a.input_shape)?;
    let output_size = sizes::<2>("outputSize", &a.output_size)?;
    AdaptivePool2dParams::from_shapes(input, output_size).map_err(kernel_err)
}

/// output <- adaptive_avg_pool2d(input, outputSize), torch's bins.
#[napi(catch_unwind, js_name = "adaptiveAvgPool2dForward")]
pub fn adaptive_avg_pool2d_forward(
    input: Float32Array,
    mut output: Float32Array,
    args: AdaptivePoolArgs,
) -> napi::Result<()> {
    let p = adaptive_params(&args)?;
    write_into(
        "adaptiveAvgPool2dForward",
        ("output", &mut output),
        &[("input", &input)],
        |y| pool::adaptive_avg_pool2d_forward(&p, &input, y),
    )
}

/// gradInput <- d(loss)/d(input) of adaptive_avg_pool2d, given gradOutput.
#[napi(catch_unwind, js_name = "adaptiveAvgPool2dBackward")]
pub fn adaptive_avg_pool2d_backward(
    grad_output: Float32Array,
    mut grad_input: Float32Array,
    args: AdaptivePoolArgs,
) -> napi::Result<()> {
    let p = adaptive_params(&args)?;
    write_into(
        "adaptiveAvgPool2dBackward",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output)],
        |gi| pool::adaptive_avg_pool2d_backward(&p, &grad_output, gi),
    )
}
