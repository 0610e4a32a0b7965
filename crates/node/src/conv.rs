//! conv2d entries: the JavaScript side passes shapes and hyper-parameters as plain numbers and
//! the output buffer it owns; the kernel writes into that buffer in place (no copy).
use crate::args::{kernel_err, size, sizes};
use crate::runtime::{given, write_into, write_into_pair};
use ferroconv_kernels::conv::tune::{self, TunedPass};
use ferroconv_kernels::conv::{self, Conv2dParams, ConvAlgo, ConvPass};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

#[napi(object, js_name = "Conv2dArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conv2dArgs {
    /// [N, C_in, H, W]
    pub input_shape: Vec<f64>,
    /// [C_out, C_in / groups, kH, kW]
    pub weight_shape: Vec<f64>,
    /// [sH, sW]
    pub stride: Vec<f64>,
    /// [top, bottom, left, right]
    pub padding: Vec<f64>,
    /// [dH, dW]
    pub dilation: Vec<f64>,
    pub groups: f64,
    /// 'auto' | 'direct' | ...
    pub algo: Option<String>,
}

pub fn conv_params(a: &Conv2dArgs) -> napi::Result<(Conv2dParams, ConvAlgo)> {
    let p = Conv2dParams::from_shapes(
        sizes("inputShape", &a.input_shape)?,
        sizes("weightShape", &a.weight_shape)?,
        sizes("stride", &a.stride)?,
        sizes("padding", &a.padding)?,
        sizes("dilation", &a.dilation)?,
        size("groups", a.groups)?,
    )
    .map_err(kernel_err)?;
    let algo = ConvAlgo::parse(a.algo.as_deref().unwrap_or("auto")).map_err(kernel_err)?;
    Ok((p, algo))
}

/// Output spatial size [outH, outW] of a conv2d, or an Error naming the bad argument.
#[napi(catch_unwind, js_name = "conv2dOutputSize")]
pub fn conv2d_output_size(args: Conv2dArgs) -> napi::Result<Vec<f64>> {
    let (p, _) = conv_params(&args)?;
    let (oh, ow) = p.validate().map_err(kernel_err)?;
    // f64, not u32: exact for every size a buffer can have, never silently truncated.
    Ok(vec![oh as f64, ow as f64])
}

/// The algorithms this conv2d runs, per pass: [forward, backward data, backward weight] (what
/// `algo: 'auto'` chooses for the shape, or the forced one).
#[napi(catch_unwind, js_name = "conv2dAlgorithms")]
pub fn conv2d_algorithms(args: Conv2dArgs) -> napi::Result<Vec<String>> {
    let (p, algo) = conv_params(&args)?;
    p.validate().map_err(kernel_err)?;
    [
        ConvPass::Forward,
        ConvPass::BackwardData,
        ConvPass::BackwardWeight,
    ]
    .iter()
    .map(|&pass| {
        let tuned = match pass {
            ConvPass::Forward => TunedPass::Forward,
            ConvPass::BackwardData => TunedPass::BackwardData,
            ConvPass::BackwardWeight => TunedPass::BackwardWeight,
        };
        match algo {
            ConvAlgo::Auto => {
                crate::runtime::run("conv2dAlgorithms", || tune::lookup(&p, tuned).algo)
            }
            forced => Ok(forced.resolve_for(&p, pass)),
        }
        .map(|a| a.name().to_string())
    })
    .collect()
}

/// One shape the autotuner timed (`convTuning()`).
#[napi(object)]
pub struct TunedConv {
    /// [N, C_in, H, W]
    pub input_shape: Vec<u32>,
    /// [C_out, C_in / groups, kH, kW]
    pub weight_shape: Vec<u32>,
    pub stride: Vec<u32>,
    /// [top, bottom, left, right]
    pub padding: Vec<u32>,
    pub dilation: Vec<u32>,
    pub groups: u32,
    /// 'forward', 'forward-prepared' (a compiled plan's, weights prepared once),
    /// 'backward-data' or 'backward-weight'.
    pub pass: String,
    pub threads: u32,
    pub simd: String,
    /// The algorithm `auto` runs for this shape and pass, and for im2col where it has two ways
    /// of running the pass, which one: 'im2col:indirect' or 'im2col:gemm' (forward),
    /// 'im2col:as-forward' or 'im2col:col2im' (input gradient), 'im2col:shifted' or
    /// 'im2col:lowered' (weight gradient).
    pub algo: String,
    /// What the fixed rules pick (deterministic mode's choice).
    pub rule: String,
    /// Each candidate's best time, in milliseconds, by algorithm name.
    pub ms: std::collections::HashMap<String, f64>,
}

fn dims(v: &[usize]) -> Vec<u32> {
    v.iter()
        .map(|&d| u32::try_from(d).unwrap_or(u32::MAX))
        .collect()
}

/// Every choice the autotuner made in this process or loaded from its cache file.
#[napi(catch_unwind, js_name = "convTuning")]
pub fn conv_tuning() -> Vec<TunedConv> {
    tune::entries()
        .into_iter()
        .map(|t| {
            let p = t.params;
            TunedConv {
                input_shape: dims(&[p.batch, p.in_channels, p.in_h, p.in_w]),
                weight_shape: dims(&p.weight_shape()),
                stride: dims(&[p.stride_h, p.stride_w]),
                padding: dims(&[p.pad_top, p.pad_bottom, p.pad_left, p.pad_right]),
                dilation: dims(&[p.dilation_h, p.dilation_w]),
                groups: dims(&[p.groups])[0],
                pass: t.pass.name().to_string(),
                threads: dims(&[t.threads])[0],
                simd: t.simd.to_string(),
                algo: t.name(t.algo),
                rule: t.name(t.rule),
                ms: t
                    .seconds
                    .iter()
                    .map(|&(c, s)| (t.name(c), s * 1e3))
                    .collect(),
            }
        })
        .collect()
}

/// `auto`'s choices: fixed rules (`true`, deterministic) or timed per shape at first use and
/// kept (`false`, the default).
#[napi(catch_unwind, js_name = "setDeterministicAlgos")]
pub fn set_deterministic_algos(on: bool) {
    tune::set_enabled(!on);
}

/// Forgets every tuned choice of this process (a cache file is left as it is).
#[napi(catch_unwind, js_name = "clearConvTuning")]
pub fn clear_conv_tuning() {
    tune::clear();
}

#[napi(object)]
pub struct TuneCacheLoad {
    /// Choices loaded for this CPU.
    pub loaded: u32,
    /// Lines skipped: malformed, or made on another CPU.
    pub skipped: u32,
}

/// Uses `path` as the tuning cache (created when missing): loads its choices for this CPU and
/// appends each new one. `null` stops persisting. An unreadable, unwritable or oversized file
/// is an Error and changes nothing.
#[napi(catch_unwind, js_name = "setTuneCache")]
pub fn set_tune_cache(path: Option<String>) -> napi::Result<TuneCacheLoad> {
    let load =
        tune::set_cache_file(path.as_deref().map(std::path::Path::new)).map_err(kernel_err)?;
    Ok(TuneCacheLoad {
        loaded: u32::try_from(load.loaded).unwrap_or(u32::MAX),
        skipped: u32::try_from(load.skipped).unwrap_or(u32::MAX),
    })
}

/// output <- conv2d(input, weight) + bias, written into the caller's `output`.
#[napi(catch_unwind, js_name = "conv2dForward")]
pub fn conv2d_forward(
    input: Float32Array,
    weight: Float32Array,
    bias: Option<Float32Array>,
    mut output: Float32Array,
    args: Conv2dArgs,
) -> napi::Result<()> {
    let (p, algo) = conv_params(&args)?;
    let b = bias.as_ref();
    let ins = given(&[
        ("input", Some(&input)),
        ("weight", Some(&weight)),
        ("bias", b),
    ]);
    write_into("conv2dForward", ("output", &mut output), &ins, |y| {
        conv::conv2d_forward(&p, &input, &weight, bias.as_deref(), y, algo)
    })
}

/// gradInput <- d(loss)/d(input) of conv2d, given gradOutput.
#[napi(catch_unwind, js_name = "conv2dBackwardData")]
pub fn conv2d_backward_data(
    grad_output: Float32Array,
    weight: Float32Array,
    mut grad_input: Float32Array,
    args: Conv2dArgs,
) -> napi::Result<()> {
    let (p, algo) = conv_params(&args)?;
    write_into(
        "conv2dBackwardData",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output), ("weight", &weight)],
        |gi| conv::conv2d_backward_data(&p, &grad_output, &weight, gi, algo),
    )
}

/// gradWeight (and gradBias when given) of conv2d, given the input and gradOutput.
#[napi(catch_unwind, js_name = "conv2dBackwardWeight")]
pub fn conv2d_backward_weight(
    input: Float32Array,
    grad_output: Float32Array,
    mut grad_weight: Float32Array,
    mut grad_bias: Option<Float32Array>,
    args: Conv2dArgs,
) -> napi::Result<()> {
    let (p, algo) = conv_params(&args)?;
    write_into_pair(
        "conv2dBackwardWeight",
        ("gradWeight", &mut grad_weight),
        ("gradBias", grad_bias.as_mut()),
        &[("input", &input), ("gradOutput", &grad_output)],
        |gw, gb| conv::conv2d_backward_weight(&p, &input, &grad_output, gw, gb, algo),
    )
}

/// output <- act(conv2d(input, weight) * scale + shift + residual), per output channel: the
/// inference path with a bias or folded batch norm (`scale`, `shift`, each [C_out] or null), a
/// residual shortcut (`residual`, the output's shape, or null) and `relu` done in the conv's own
/// pass over the output.
#[allow(clippy::too_many_arguments)]
#[napi(catch_unwind, js_name = "conv2dForwardFused")]
pub fn conv2d_forward_fused(
    input: Float32Array,
    weight: Float32Array,
    scale: Option<Float32Array>,
    shift: Option<Float32Array>,
    residual: Option<Float32Array>,
    relu: bool,
    mut output: Float32Array,
    args: Conv2dArgs,
) -> napi::Result<()> {
    let (p, algo) = conv_params(&args)?;
    let ins = given(&[
        ("input", Some(&input)),
        ("weight", Some(&weight)),
        ("scale", scale.as_ref()),
        ("shift", shift.as_ref()),
        ("residual", residual.as_ref()),
    ]);
    let epilogue = conv::Epilogue {
        scale: scale.as_deref(),
        shift: shift.as_deref(),
        residual: residual.as_deref(),
        relu,
    };
    write_into("conv2dForwardFused", ("output", &mut output), &ins, |y| {
        conv::conv2d_forward_fused(&p, &input, &weight, &epilogue, y, algo)
    })
}
