//! Activation, softmax and cross-entropy entries. The caller owns every buffer (outputs
//! included); the kernels write into them in place. Cross-entropy saves the softmax in the
//! caller's `probs` so the backward needs no recomputation.
use crate::args::{check_disjoint, invalid, kernel_err, size};
use crate::runtime::{run, write_into};
use ferroconv_kernels::activation::{self, Activation};
use ferroconv_kernels::softmax::{self, CrossEntropyParams, Reduction};
use napi::bindgen_prelude::{Float32Array, Int32Array};
use napi_derive::napi;

/// output <- act(input). `kind`: 'relu' | 'leaky_relu' | 'sigmoid' | 'tanh' | 'clip' |
/// 'hardsigmoid' | 'hardswish' | 'silu' | 'pow'. `alpha`: leaky_relu's negative slope (default
/// 0.01), clip's minimum (default -inf), hardsigmoid's slope (default 0.2), pow's exponent
/// (required); `beta`: clip's maximum
/// (default +inf), hardsigmoid's offset (default 0.5).
#[napi(catch_unwind, js_name = "activationForward")]
pub fn activation_forward(
    kind: String,
    input: Float32Array,
    mut output: Float32Array,
    alpha: Option<f64>,
    beta: Option<f64>,
) -> napi::Result<()> {
    let act = Activation::parse(&kind, alpha, beta).map_err(kernel_err)?;
    write_into(
        "activationForward",
        ("output", &mut output),
        &[("input", &input)],
        |out| activation::activation_forward(act, &input, out),
    )
}

/// gradInput <- d(loss)/d(input). sigmoid/tanh read the forward `output`, every other kind
/// `input` (after `reluInplace`, pass the relu'd buffer: its positive entries are the input's);
/// the buffer a kind does not read may be an empty Float32Array. `alpha`, `beta` as forward.
#[napi(catch_unwind, js_name = "activationBackward")]
pub fn activation_backward(
    kind: String,
    input: Float32Array,
    output: Float32Array,
    grad_output: Float32Array,
    mut grad_input: Float32Array,
    alpha: Option<f64>,
    beta: Option<f64>,
) -> napi::Result<()> {
    let act = Activation::parse(&kind, alpha, beta).map_err(kernel_err)?;
    write_into(
        "activationBackward",
        ("gradInput", &mut grad_input),
        &[
            ("input", &input),
            ("output", &output),
            ("gradOutput", &grad_output),
        ],
        |gi| activation::activation_backward(act, &input, &output, &grad_output, gi),
    )
}

/// data <- relu(data), in place.
#[napi(catch_unwind, js_name = "reluInplace")]
pub fn relu_inplace(mut data: Float32Array) -> napi::Result<()> {
    // SAFETY: the only buffer of this call; the JavaScript thread waits on it.
    let d = unsafe { data.as_mut() };
    run("reluInplace", || activation::relu_inplace(d))
}

/// output <- softmax (or log_softmax when `log`) over each row of a [rows, cols] buffer.
#[napi(catch_unwind, js_name = "softmaxForward")]
pub fn softmax_forward(
    input: Float32Array,
    mut output: Float32Array,
    rows: f64,
    cols: f64,
    log: bool,
) -> napi::Result<()> {
    let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
    write_into(
        "softmaxForward",
        ("output", &mut output),
        &[("input", &input)],
        |out| softmax::softmax_forward(&input, out, rows, cols, log),
    )
}

/// gradInput <- backward of softmax (log_softmax when `log`) from the forward `output`.
#[napi(catch_unwind, js_name = "softmaxBackward")]
pub fn softmax_backward(
    output: Float32Array,
    grad_output: Float32Array,
    mut grad_input: Float32Array,
    rows: f64,
    cols: f64,
    log: bool,
) -> napi::Result<()> {
    let (rows, cols) = (size("rows", rows)?, size("cols", cols)?);
    write_into(
        "softmaxBackward",
        ("gradInput", &mut grad_input),
        &[("output", &output), ("gradOutput", &grad_output)],
        |gi| softmax::softmax_backward(&output, &grad_output, gi, rows, cols, log),
    )
}

#[napi(object, js_name = "CrossEntropyArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrossEntropyArgs {
    /// Rows of the logits.
    pub batch: f64,
    /// Columns of the logits.
    pub classes: f64,
    /// In [0, 1] (default 0).
    pub label_smoothing: Option<f64>,
    /// Target value that contributes no loss or gradient (default -100).
    pub ignore_index: Option<f64>,
    /// 'mean' (default) | 'sum' | 'none'.
    pub reduction: Option<String>,
}

pub(crate) fn ce_params(a: &CrossEntropyArgs) -> napi::Result<CrossEntropyParams> {
    let mut p = CrossEntropyParams::new(size("batch", a.batch)?, size("classes", a.classes)?);
    if let Some(ls) = a.label_smoothing {
        p.label_smoothing = ls;
    }
    if let Some(ii) = a.ignore_index {
        if !ii.is_finite() || ii.fract() != 0.0 || ii.abs() > 9.007_199_254_740_991e15 {
            return Err(invalid(format!(
                "ignoreIndex: expected an integer, got {ii}"
            )));
        }
        p.ignore_index = ii as i64;
    }
    if let Some(r) = &a.reduction {
        p.reduction = Reduction::parse(r).map_err(kernel_err)?;
    }
    p.validate().map_err(kernel_err)?;
    Ok(p)
}

/// Byte ranges of an output and an Int32Array input must not overlap either (both can be views
/// of one ArrayBuffer).
fn check_disjoint_targets(
    out_name: &str,
    out: &Float32Array,
    targets: &Int32Array,
) -> napi::Result<()> {
    let o = out.as_ptr_range();
    let t = targets.as_ptr_range();
    let (o0, o1, t0, t1) = (
        o.start as usize,
        o.end as usize,
        t.start as usize,
        t.end as usize,
    );
    if o0 < t1 && t0 < o1 {
        return Err(invalid(format!(
            "{out_name}: must not share memory with targets"
        )));
    }
    Ok(())
}

/// Fused softmax + cross-entropy (torch.nn.functional.cross_entropy with class-index targets).
/// Writes the softmax into `probs` (kept for the backward) and each sample's loss into `losses`
/// (0 for ignored samples); returns the reduced loss (the sum for reduction 'none'), and writes
/// it, rounded to float32, into `total` when given (as a compiled plan sees it).
#[napi(catch_unwind, js_name = "crossEntropyForward")]
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_forward(
    logits: Float32Array,
    targets: Int32Array,
    class_weights: Option<Float32Array>,
    mut probs: Float32Array,
    mut losses: Float32Array,
    args: CrossEntropyArgs,
    mut total: Option<Float32Array>,
) -> napi::Result<f64> {
    let p = ce_params(&args)?;
    if let Some(t) = &total {
        if t.len() != 1 {
            return Err(invalid(format!(
                "total: expected 1 element, got {}",
                t.len()
            )));
        }
        check_disjoint("total", t, &[("probs", &probs), ("losses", &losses)])?;
    }
    for (name, out) in [("probs", &probs), ("losses", &losses)] {
        check_disjoint(name, out, &[("logits", &logits)])?;
        if let Some(w) = &class_weights {
            check_disjoint(name, out, &[("classWeights", w)])?;
        }
        check_disjoint_targets(name, out, &targets)?;
    }
    check_disjoint("losses", &losses, &[("probs", &probs)])?;
    // SAFETY: both outputs are disjoint from every input and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pr, lo) = unsafe { (probs.as_mut(), losses.as_mut()) };
    let value = run("crossEntropyForward", || {
        softmax::cross_entropy_forward(&p, &logits, &targets, class_weights.as_deref(), pr, lo)
    })?
    .map_err(kernel_err)?;
    if let Some(t) = total.as_mut() {
        // SAFETY: one element, disjoint from the other outputs (checked above); the JavaScript
        // thread waits on this call.
        let t = unsafe { t.as_mut() };
        t[0] = value as f32;
    }
    Ok(value)
}

/// gradLogits <- d(loss)/d(logits) of crossEntropyForward, from its `probs`. `gradOutput` holds
/// one number for reduction 'mean'/'sum', one per sample for 'none'.
#[napi(catch_unwind, js_name = "crossEntropyBackward")]
pub fn cross_entropy_backward(
    probs: Float32Array,
    targets: Int32Array,
    class_weights: Option<Float32Array>,
    grad_output: Float32Array,
    mut grad_logits: Float32Array,
    args: CrossEntropyArgs,
) -> napi::Result<()> {
    let p = ce_params(&args)?;
    check_disjoint(
        "gradLogits",
        &grad_logits,
        &[("probs", &probs), ("gradOutput", &grad_output)],
    )?;
    if let Some(w) = &class_weights {
        check_disjoint("gradLogits", &grad_logits, &[("classWeights", w)])?;
    }
    check_disjoint_targets("gradLogits", &grad_logits, &targets)?;
    // SAFETY: disjoint from every input (checked above); the JavaScript thread waits on this call.
    let gl = unsafe { grad_logits.as_mut() };
    run("crossEntropyBackward", || {
        softmax::cross_entropy_backward(
            &p,
            &probs,
            &targets,
            class_weights.as_deref(),
            &grad_output,
            gl,
        )
    })?
    .map_err(kernel_err)
}
