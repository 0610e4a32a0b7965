//! Normalisation entries: BatchNorm2d (training forward with in-place running statistics,
//! inference forward, training backward) and LocalResponseNorm (forward and backward). Callers
//! own every buffer; kernels write outputs in place.
use crate::args::{kernel_err, size, sizes};
use crate::pool::{check_buffers, span};
use crate::runtime::run;
use ferroconv_kernels::batchnorm::{self, BatchNorm2dParams, BnStats};
use ferroconv_kernels::lrn::{self, LrnParams};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;
use std::ops::Range;

#[napi(object, js_name = "BatchNormArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchNormArgs {
    /// [N, C, H, W]
    pub input_shape: Vec<f64>,
    /// Weight of the batch statistics in the running ones, in [0, 1] (torch's default 0.1).
    pub momentum: f64,
    /// Added to the variance, > 0 (torch's default 1e-5).
    pub eps: f64,
}

pub(crate) fn bn_params(a: &BatchNormArgs) -> napi::Result<BatchNorm2dParams> {
    let input = sizes::<4>("inputShape", &a.input_shape)?;
    BatchNorm2dParams::from_shape(input, a.momentum, a.eps).map_err(kernel_err)
}

/// Names and address ranges of the buffers that are present.
fn present<'a>(bufs: &[(&'a str, Option<&Float32Array>)]) -> Vec<(&'a str, Range<usize>)> {
    bufs.iter()
        .filter_map(|(name, b)| b.map(|b| (*name, span(b))))
        .collect()
}

/// Training forward: output normalised with the batch statistics; saveMean / saveInvstd get
/// the batch mean and 1 / sqrt(biased var + eps) per channel; runningMean / runningVar, when
/// given, are updated in place with momentum and the unbiased variance, as torch.
#[napi(catch_unwind, js_name = "batchNorm2dForwardTrain")]
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_forward_train(
    input: Float32Array,
    weight: Option<Float32Array>,
    bias: Option<Float32Array>,
    mut running_mean: Option<Float32Array>,
    mut running_var: Option<Float32Array>,
    mut output: Float32Array,
    mut save_mean: Float32Array,
    mut save_invstd: Float32Array,
    args: BatchNormArgs,
) -> napi::Result<()> {
    let p = bn_params(&args)?;
    check_buffers(
        &present(&[
            ("output", Some(&output)),
            ("saveMean", Some(&save_mean)),
            ("saveInvstd", Some(&save_invstd)),
            ("runningMean", running_mean.as_ref()),
            ("runningVar", running_var.as_ref()),
        ]),
        &present(&[
            ("input", Some(&input)),
            ("weight", weight.as_ref()),
            ("bias", bias.as_ref()),
        ]),
    )?;
    let x: &[f32] = &input;
    let (w, b) = (weight.as_deref(), bias.as_deref());
    // SAFETY: every written buffer is disjoint from the inputs and from the others (checked
    // above), and the JavaScript thread is blocked in this call.
    let (y, m, s) = unsafe { (output.as_mut(), save_mean.as_mut(), save_invstd.as_mut()) };
    let rm = running_mean.as_mut().map(|a| unsafe { a.as_mut() });
    let rv = running_var.as_mut().map(|a| unsafe { a.as_mut() });
    run("batchNorm2dForwardTrain", || {
        batchnorm::batch_norm2d_forward_train(&p, x, w, b, rm, rv, y, m, s)
    })?
    .map_err(kernel_err)
}

/// scale, shift <- an eval batch norm (after a conv with `convBias`, or alone) as a per-channel
/// affine map: scale = weight / sqrt(runningVar + eps), shift = bias + (convBias - runningMean)
/// * scale, in double precision, each rounded once to float32 (the fused epilogues' constants).
#[allow(clippy::too_many_arguments)]
#[napi(catch_unwind, js_name = "batchNormFold")]
pub fn batch_norm_fold(
    running_mean: Float32Array,
    running_var: Float32Array,
    weight: Option<Float32Array>,
    bias: Option<Float32Array>,
    conv_bias: Option<Float32Array>,
    eps: f64,
    mut scale: Float32Array,
    mut shift: Float32Array,
) -> napi::Result<()> {
    check_buffers(
        &[("scale", span(&scale)), ("shift", span(&shift))],
        &present(&[
            ("runningMean", Some(&running_mean)),
            ("runningVar", Some(&running_var)),
            ("weight", weight.as_ref()),
            ("bias", bias.as_ref()),
            ("convBias", conv_bias.as_ref()),
        ]),
    )?;
    let (w, b, cb) = (weight.as_deref(), bias.as_deref(), conv_bias.as_deref());
    // SAFETY: the outputs are disjoint from the inputs and from each other (checked above); the
    // JavaScript thread waits on this call.
    let (s, t) = unsafe { (scale.as_mut(), shift.as_mut()) };
    batchnorm::fold(&running_mean, &running_var, w, b, cb, eps, s, t).map_err(kernel_err)
}

/// Inference forward: output = (input - runningMean) / sqrt(runningVar + eps) * weight + bias.
#[napi(catch_unwind, js_name = "batchNorm2dForwardEval")]
pub fn batch_norm2d_forward_eval(
    input: Float32Array,
    weight: Option<Float32Array>,
    bias: Option<Float32Array>,
    running_mean: Float32Array,
    running_var: Float32Array,
    mut output: Float32Array,
    args: BatchNormArgs,
) -> napi::Result<()> {
    let p = bn_params(&args)?;
    check_buffers(
        &[("output", span(&output))],
        &present(&[
            ("input", Some(&input)),
            ("weight", weight.as_ref()),
            ("bias", bias.as_ref()),
            ("runningMean", Some(&running_mean)),
            ("runningVar", Some(&running_var)),
        ]),
    )?;
    let (x, rm, rv): (&[f32], &[f32], &[f32]) = (&input, &running_mean, &running_var);
    let (w, b) = (weight.as_deref(), bias.as_deref());
    // SAFETY: disjoint from the inputs (checked above); the JavaScript thread waits on this call.
    let y = unsafe { output.as_mut() };
    run("batchNorm2dForwardEval", || {
        batchnorm::batch_norm2d_forward_eval(&p, x, w, b, rm, rv, y)
    })?
    .map_err(kernel_err)
}

/// Batch-norm backward: gradInput always, gradWeight and gradBias when given, all overwritten.
/// `stats` says what `mean` and `spread` are: "batch" for the training forward's saveMean and
/// saveInvstd, "running" for the running mean and variance (inference, statistics fixed).
#[napi(catch_unwind, js_name = "batchNorm2dBackward")]
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_backward(
    input: Float32Array,
    grad_output: Float32Array,
    weight: Option<Float32Array>,
    mean: Float32Array,
    spread: Float32Array,
    mut grad_input: Float32Array,
    mut grad_weight: Option<Float32Array>,
    mut grad_bias: Option<Float32Array>,
    args: BatchNormArgs,
    #[napi(ts_arg_type = "'batch' | 'running'")] stats: String,
) -> napi::Result<()> {
    let p = bn_params(&args)?;
    let (m, v): (&[f32], &[f32]) = (&mean, &spread);
    let stats = match stats.as_str() {
        "batch" => BnStats::Batch { mean: m, invstd: v },
        "running" => BnStats::Running { mean: m, var: v },
        other => {
            return Err(napi::Error::from_reason(format!(
                "batchNorm2dBackward: stats: expected 'batch' or 'running', got '{other}'"
            )))
        }
    };
    let [(n0, _), (n1, _)] = stats.names();
    check_buffers(
        &present(&[
            ("gradInput", Some(&grad_input)),
            ("gradWeight", grad_weight.as_ref()),
            ("gradBias", grad_bias.as_ref()),
        ]),
        &present(&[
            ("input", Some(&input)),
            ("gradOutput", Some(&grad_output)),
            ("weight", weight.as_ref()),
            (n0, Some(&mean)),
            (n1, Some(&spread)),
        ]),
    )?;
    let (x, go): (&[f32], &[f32]) = (&input, &grad_output);
    let w = weight.as_deref();
    // SAFETY: every written buffer is disjoint from the inputs and from the others (checked
    // above), and the JavaScript thread is blocked in this call.
    let gi = unsafe { grad_input.as_mut() };
    let gw = grad_weight.as_mut().map(|g| unsafe { g.as_mut() });
    let gb = grad_bias.as_mut().map(|g| unsafe { g.as_mut() });
    run("batchNorm2dBackward", || {
        batchnorm::batch_norm2d_backward(&p, x, go, w, stats, gi, gw, gb)
    })?
    .map_err(kernel_err)
}

#[napi(object, js_name = "LrnArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LrnArgs {
    /// [N, C, H, W]
    pub input_shape: Vec<f64>,
    /// Channels in the window.
    pub size: f64,
    /// torch's defaults: alpha 1e-4, beta 0.75, k 1.
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

pub(crate) fn lrn_params(a: &LrnArgs) -> napi::Result<LrnParams> {
    let [n, c, h, w] = sizes::<4>("inputShape", &a.input_shape)?;
    let p = LrnParams {
        batch: n,
        channels: c,
        height: h,
        width: w,
        size: size("size", a.size)?,
        alpha: a.alpha,
        beta: a.beta,
        k: a.k,
    };
    p.validate().map_err(kernel_err)?;
    Ok(p)
}

/// output <- local_response_norm(input); scale (same size as input) <- k + alpha / size * the
/// window's sum of squares, kept for the backward.
#[napi(catch_unwind, js_name = "lrnForward")]
pub fn lrn_forward(
    input: Float32Array,
    mut output: Float32Array,
    mut scale: Float32Array,
    args: LrnArgs,
) -> napi::Result<()> {
    let p = lrn_params(&args)?;
    check_buffers(
        &[("output", span(&output)), ("scale", span(&scale))],
        &[("input", span(&input))],
    )?;
    let x: &[f32] = &input;
    // SAFETY: the outputs are disjoint from the input and from each other (checked above); the
    // JavaScript thread waits on this call.
    let (y, s) = unsafe { (output.as_mut(), scale.as_mut()) };
    run("lrnForward", || lrn::lrn_forward(&p, x, y, s))?.map_err(kernel_err)
}

/// gradInput <- d(loss)/d(input) of local_response_norm, from the forward's input, output and
/// scale and the incoming gradOutput.
#[napi(catch_unwind, js_name = "lrnBackward")]
pub fn lrn_backward(
    input: Float32Array,
    output: Float32Array,
    scale: Float32Array,
    grad_output: Float32Array,
    mut grad_input: Float32Array,
    args: LrnArgs,
) -> napi::Result<()> {
    let p = lrn_params(&args)?;
    check_buffers(
        &[("gradInput", span(&grad_input))],
        &[
            ("input", span(&input)),
            ("output", span(&output)),
            ("scale", span(&scale)),
            ("gradOutput", span(&grad_output)),
        ],
    )?;
    let (x, y, s, go): (&[f32], &[f32], &[f32], &[f32]) = (&input, &output, &scale, &grad_output);
    // SAFETY: disjoint from the inputs (checked above); the JavaScript thread waits on this call.
    let gi = unsafe { grad_input.as_mut() };
    run("lrnBackward", || lrn::lrn_backward(&p, x, y, s, go, gi))?.map_err(kernel_err)
}
