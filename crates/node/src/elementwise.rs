//! Elementwise entries: dropout, broadcast add/mul and their backward, channel concat/split,
//! scaling, gradient accumulation and the full sum.
//! Shapes arrive as plain number arrays and are checked here; every buffer is the caller's.
use crate::args::{check_disjoint, kernel_err, size};
use crate::runtime::{run, write_into};
use ferroconv_kernels::elementwise::{self, BinaryOp};
use ferroconv_kernels::reduce;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// A list of sizes of any length (a tensor shape, per-input channel counts).
pub(crate) fn size_list(name: &str, v: &[f64]) -> napi::Result<Vec<usize>> {
    v.iter()
        .enumerate()
        .map(|(i, &x)| size(&format!("{name}[{i}]"), x))
        .collect()
}

/// output <- input * mask, mask[i] = 0 with probability p, else 1/(1-p). The mask is a function
/// of (seed, i) only: the same seed gives the same mask whatever the thread count.
#[napi(catch_unwind, js_name = "dropoutForward")]
pub fn dropout_forward(
    input: Float32Array,
    mut output: Float32Array,
    mut mask: Float32Array,
    p: f64,
    seed: f64,
) -> napi::Result<()> {
    let seed = size("seed", seed)? as u64;
    check_disjoint("output", &output, &[("input", &input)])?;
    check_disjoint("mask", &mask, &[("input", &input), ("output", &output)])?;
    // SAFETY: the outputs are disjoint from the input and from each other (checked above); the
    // JavaScript thread waits on this call.
    let (out, m) = unsafe { (output.as_mut(), mask.as_mut()) };
    run("dropoutForward", || {
        elementwise::dropout_forward(&input, out, m, p, seed)
    })?
    .map_err(kernel_err)
}

/// output <- a op b, `op` 'add' | 'mul', with b broadcast to a's shape by NumPy's rules
/// (aligned from the right; b's non-1 dims adjacent: [C] on [N, C], [1, C, 1, 1] or
/// [N, C, 1, 1] on NCHW, or a's own shape).
#[napi(catch_unwind, js_name = "broadcastBinary")]
pub fn broadcast_binary(
    op: String,
    a: Float32Array,
    a_shape: Vec<f64>,
    b: Float32Array,
    b_shape: Vec<f64>,
    mut output: Float32Array,
) -> napi::Result<()> {
    let op = BinaryOp::parse(&op).map_err(kernel_err)?;
    let a_shape = size_list("aShape", &a_shape)?;
    let b_shape = size_list("bShape", &b_shape)?;
    write_into(
        "broadcastBinary",
        ("output", &mut output),
        &[("a", &a), ("b", &b)],
        |out| elementwise::broadcast_binary(op, &a, &a_shape, &b, &b_shape, out),
    )
}

/// gradA (a's shape) and gradB (b's shape, summed over the broadcast dims) of broadcastBinary;
/// pass null for a gradient that is not needed.
#[allow(clippy::too_many_arguments)]
#[napi(catch_unwind, js_name = "broadcastBinaryBackward")]
pub fn broadcast_binary_backward(
    op: String,
    a: Float32Array,
    a_shape: Vec<f64>,
    b: Float32Array,
    b_shape: Vec<f64>,
    grad_output: Float32Array,
    mut grad_a: Option<Float32Array>,
    mut grad_b: Option<Float32Array>,
) -> napi::Result<()> {
    let op = BinaryOp::parse(&op).map_err(kernel_err)?;
    let a_shape = size_list("aShape", &a_shape)?;
    let b_shape = size_list("bShape", &b_shape)?;
    let ins = [("a", &a), ("b", &b), ("gradOutput", &grad_output)];
    if let Some(ga) = &grad_a {
        check_disjoint("gradA", ga, &ins)?;
    }
    if let Some(gb) = &grad_b {
        check_disjoint("gradB", gb, &ins)?;
        if let Some(ga) = &grad_a {
            check_disjoint("gradB", gb, &[("gradA", ga)])?;
        }
    }
    // SAFETY: the outputs are disjoint from the inputs and from each other (checked above).
    let ga = grad_a.as_mut().map(|g| unsafe { g.as_mut() });
    let gb = grad_b.as_mut().map(|g| unsafe { g.as_mut() });
    run("broadcastBinaryBackward", || {
        elementwise::broadcast_binary_backward(op, &a, &a_shape, &b, &b_shape, &grad_output, ga, gb)
    })?
    .map_err(kernel_err)
}

/// output <- torch.cat(inputs, dim=1) for NCHW `inputs[k]` of shape [batch, channels[k], H, W],
/// plane = H * W.
#[napi(catch_unwind, js_name = "concatChannels")]
pub fn concat_channels(
    inputs: Vec<Float32Array>,
    channels: Vec<f64>,
    batch: f64,
    plane: f64,
    mut output: Float32Array,
) -> napi::Result<()> {
    let channels = size_list("channels", &channels)?;
    let (batch, plane) = (size("batch", batch)?, size("plane", plane)?);
    let names: Vec<String> = (0..inputs.len()).map(|k| format!("inputs[{k}]")).collect();
    let ins: Vec<(&str, &Float32Array)> = names.iter().map(|n| n.as_str()).zip(&inputs).collect();
    check_disjoint("output", &output, &ins)?;
    let views: Vec<&[f32]> = inputs.iter().map(|x| &x[..]).collect();
    // SAFETY: disjoint from every input (checked above); the JavaScript thread waits on this call.
    let out = unsafe { output.as_mut() };
    run("concatChannels", || {
        elementwise::concat_channels(&views, &channels, batch, plane, out)
    })?
    .map_err(kernel_err)
}

/// output <- relu?(torch.cat(inputs, dim=1) * scale[c] + shift[c]) per output channel c: a
/// concat plus an eval batch norm folded to `scale`/`shift` ([sum(channels)] each) in one pass.
#[allow(clippy::too_many_arguments)]
#[napi(catch_unwind, js_name = "concatChannelsAffine")]
pub fn concat_channels_affine(
    inputs: Vec<Float32Array>,
    channels: Vec<f64>,
    batch: f64,
    plane: f64,
    scale: Float32Array,
    shift: Float32Array,
    relu: bool,
    mut output: Float32Array,
) -> napi::Result<()> {
    let channels = size_list("channels", &channels)?;
    let (batch, plane) = (size("batch", batch)?, size("plane", plane)?);
    let names: Vec<String> = (0..inputs.len()).map(|k| format!("inputs[{k}]")).collect();
    let mut ins: Vec<(&str, &Float32Array)> =
        names.iter().map(|n| n.as_str()).zip(&inputs).collect();
    ins.push(("scale", &scale));
    ins.push(("shift", &shift));
    check_disjoint("output", &output, &ins)?;
    let views: Vec<&[f32]> = inputs.iter().map(|x| &x[..]).collect();
    // SAFETY: disjoint from every input (checked above); the JavaScript thread waits on this call.
    let out = unsafe { output.as_mut() };
    run("concatChannelsAffine", || {
        elementwise::concat_channels_affine(
            &views, &channels, batch, plane, &scale, &shift, relu, out,
        )
    })?
    .map_err(kernel_err)
}

/// The inverse of concatChannels (and its backward): outputs[k] <- channels
/// [sum(channels[..k]), sum(channels[..=k])) of `input`.
#[napi(catch_unwind, js_name = "splitChannels")]
pub fn split_channels(
    input: Float32Array,
    mut outputs: Vec<Float32Array>,
    channels: Vec<f64>,
    batch: f64,
    plane: f64,
) -> napi::Result<()> {
    let channels = size_list("channels", &channels)?;
    let (batch, plane) = (size("batch", batch)?, size("plane", plane)?);
    let names: Vec<String> = (0..outputs.len())
        .map(|k| format!("outputs[{k}]"))
        .collect();
    for (k, out) in outputs.iter().enumerate() {
        check_disjoint(&names[k], out, &[("input", &input)])?;
        let earlier: Vec<(&str, &Float32Array)> = names[..k]
            .iter()
            .map(|n| n.as_str())
            .zip(&outputs[..k])
            .collect();
        check_disjoint(&names[k], out, &earlier)?;
    }
    // SAFETY: every output is disjoint from the input and from the other outputs (checked
    // above); the JavaScript thread waits on this call.
    let mut views: Vec<&mut [f32]> = outputs.iter_mut().map(|o| unsafe { o.as_mut() }).collect();
    run("splitChannels", || {
        elementwise::split_channels(&input, &mut views, &channels, batch, plane)
    })?
    .map_err(kernel_err)
}

/// gradInput <- gradOutput * mask, the mask saved by dropoutForward (already scaled).
#[napi(catch_unwind, js_name = "dropoutBackward")]
pub fn dropout_backward(
    grad_output: Float32Array,
    mask: Float32Array,
    mut grad_input: Float32Array,
) -> napi::Result<()> {
    write_into(
        "dropoutBackward",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output), ("mask", &mask)],
        |gi| elementwise::dropout_backward(&grad_output, &mask, gi),
    )
}

/// output <- input * factor, the product rounded once to float32 (factor is any number).
#[napi(catch_unwind, js_name = "scale")]
pub fn scale(input: Float32Array, factor: f64, mut output: Float32Array) -> napi::Result<()> {
    check_disjoint("output", &output, &[("input", &input)])?;
    // SAFETY: disjoint from the input (checked above); the JavaScript thread waits on this call.
    let out = unsafe { output.as_mut() };
    run("scale", || elementwise::scale(&input, factor, out))?.map_err(kernel_err)
}

/// output <- input with its axes permuted (output axis i is input axis perm[i]), as numpy's
/// transpose and ONNX Transpose; `shape` is the input's.
#[napi(catch_unwind, js_name = "transpose")]
pub fn transpose(
    input: Float32Array,
    shape: Vec<f64>,
    perm: Vec<f64>,
    mut output: Float32Array,
) -> napi::Result<()> {
    let shape = size_list("shape", &shape)?;
    let perm = size_list("perm", &perm)?;
    check_disjoint("output", &output, &[("input", &input)])?;
    // SAFETY: disjoint from the input (checked above); the JavaScript thread waits on this call.
    let out = unsafe { output.as_mut() };
    run("transpose", || {
        elementwise::transpose(&input, &shape, &perm, out)
    })?
    .map_err(kernel_err)
}

/// accumulator (in place) <- accumulator + grad, in float32: autograd summing a new gradient
/// into a leaf's `.grad`.
#[napi(catch_unwind, js_name = "accumulateGrad")]
pub fn accumulate_grad(mut accumulator: Float32Array, grad: Float32Array) -> napi::Result<()> {
    check_disjoint("accumulator", &accumulator, &[("grad", &grad)])?;
    // SAFETY: disjoint from grad (checked above); the JavaScript thread waits on this call.
    let acc = unsafe { accumulator.as_mut() };
    run("accumulateGrad", || elementwise::accumulate(acc, &grad))?.map_err(kernel_err)
}

/// The sum of all elements in double precision, added in index order (Tensor.sum()).
#[napi(catch_unwind, js_name = "sum")]
pub fn sum(input: Float32Array) -> napi::Result<f64> {
    run("sum", || reduce::sum(&input))
}

/// output <- value everywhere (rounded to float32).
#[napi(catch_unwind, js_name = "fill")]
pub fn fill(mut output: Float32Array, value: f64) -> napi::Result<()> {
    // SAFETY: the only array; the JavaScript thread waits on this call.
    elementwise::fill(unsafe { output.as_mut() }, value);
    Ok(())
}

/// output <- input (same length, no shared memory).
#[napi(catch_unwind, js_name = "copy")]
pub fn copy(input: Float32Array, mut output: Float32Array) -> napi::Result<()> {
    check_disjoint("output", &output, &[("input", &input)])?;
    // SAFETY: disjoint from the input (checked above); the JavaScript thread waits on this call.
    let out = unsafe { output.as_mut() };
    run("copy", || elementwise::copy(&input, out))?.map_err(kernel_err)
}

/// Throws "`what` is not finite: ..." when `input` holds a NaN or an infinity.
#[napi(catch_unwind, js_name = "assertFinite")]
pub fn assert_finite(input: Float32Array, what: String) -> napi::Result<()> {
    elementwise::check_finite(&input, &what).map_err(kernel_err)
}

/// Clips the gradients' joint L2 norm to `maxNorm` in place (fit's `clipGradNorm`); returns the
/// norm before clipping. The arrays must not share memory.
#[napi(catch_unwind, js_name = "clipGradNorm")]
pub fn clip_grad_norm(mut grads: Vec<Float32Array>, max_norm: f64) -> napi::Result<f64> {
    let names: Vec<String> = (0..grads.len()).map(|k| format!("grads[{k}]")).collect();
    for k in 1..grads.len() {
        let earlier: Vec<(&str, &Float32Array)> = names[..k]
            .iter()
            .map(|n| n.as_str())
            .zip(&grads[..k])
            .collect();
        check_disjoint(&names[k], &grads[k], &earlier)?;
    }
    // SAFETY: the arrays are pairwise disjoint (checked above); the JavaScript thread waits on
    // this call.
    let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| unsafe { g.as_mut() }).collect();
    Ok(elementwise::clip_grad_norm(&mut views, max_norm))
}
