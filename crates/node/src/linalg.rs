//! Dense linear algebra entries: a raw SGEMM on tightly packed row-major matrices, and the
//! fully-connected layer (torch.nn.Linear layout). Outputs are the caller's buffers, written in
//! place.
use crate::args::{check_disjoint, kernel_err, size};
use crate::runtime::{given, run, write_into};
use ferroconv_kernels::{gemm, linear};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// c <- alpha * op(a) * op(b) + beta * c, row-major with tight leading dimensions
/// (lda = transA ? m : k, ldb = transB ? k : n, ldc = n). With beta = 0, c's old contents are
/// ignored.
#[allow(clippy::too_many_arguments)] // the BLAS argument list
#[napi(catch_unwind, js_name = "sgemm")]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: f64,
    n: f64,
    k: f64,
    alpha: f64,
    a: Float32Array,
    b: Float32Array,
    beta: f64,
    mut c: Float32Array,
) -> napi::Result<()> {
    let (m, n, k) = (size("m", m)?, size("n", n)?, size("k", k)?);
    write_into("sgemm", ("c", &mut c), &[("a", &a), ("b", &b)], |cs| {
        gemm::sgemm_tight(
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha as f32,
            &a,
            &b,
            beta as f32,
            cs,
        )
    })
}

#[napi(object, js_name = "LinearArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinearArgs {
    pub batch: f64,
    pub in_features: f64,
    pub out_features: f64,
}

pub(crate) fn linear_sizes(a: &LinearArgs) -> napi::Result<(usize, usize, usize)> {
    Ok((
        size("batch", a.batch)?,
        size("inFeatures", a.in_features)?,
        size("outFeatures", a.out_features)?,
    ))
}

/// output [batch, out] <- input [batch, in] * weight[out, in]^T + bias [out].
#[napi(catch_unwind, js_name = "linearForward")]
pub fn linear_forward(
    input: Float32Array,
    weight: Float32Array,
    bias: Option<Float32Array>,
    mut output: Float32Array,
    args: LinearArgs,
) -> napi::Result<()> {
    let (batch, in_f, out_f) = linear_sizes(&args)?;
    let b = bias.as_ref();
    let ins = given(&[
        ("input", Some(&input)),
        ("weight", Some(&weight)),
        ("bias", b),
    ]);
    write_into("linearForward", ("output", &mut output), &ins, |y| {
        linear::linear_forward(batch, in_f, out_f, &input, &weight, bias.as_deref(), y)
    })
}

/// gradInput, gradWeight, gradBias (each optional, each overwritten) of linearForward.
#[allow(clippy::too_many_arguments)] // one optional output per parameter of the layer
#[napi(catch_unwind, js_name = "linearBackward")]
pub fn linear_backward(
    input: Float32Array,
    weight: Float32Array,
    grad_output: Float32Array,
    mut grad_input: Option<Float32Array>,
    mut grad_weight: Option<Float32Array>,
    mut grad_bias: Option<Float32Array>,
    args: LinearArgs,
) -> napi::Result<()> {
    let (batch, in_f, out_f) = linear_sizes(&args)?;
    let ins = [
        ("input", &input),
        ("weight", &weight),
        ("gradOutput", &grad_output),
    ];
    let outs = [
        ("gradInput", grad_input.as_ref()),
        ("gradWeight", grad_weight.as_ref()),
        ("gradBias", grad_bias.as_ref()),
    ];
    for (i, (name, out)) in outs.iter().enumerate() {
        let Some(out) = out else { continue };
        check_disjoint(name, out, &ins)?;
        for (other, o) in &outs[i + 1..] {
            if let Some(o) = o {
                check_disjoint(name, out, &[(other, o)])?;
            }
        }
    }
    // SAFETY: the outputs are disjoint from the inputs and from each other (checked above).
    let gi = grad_input.as_mut().map(|g| unsafe { g.as_mut() });
    let gw = grad_weight.as_mut().map(|g| unsafe { g.as_mut() });
    let gb = grad_bias.as_mut().map(|g| unsafe { g.as_mut() });
    run("linearBackward", || {
        linear::linear_backward(
            batch,
            in_f,
            out_f,
            &input,
            &weight,
            &grad_output,
            gi,
            gw,
            gb,
        )
    })?
    .map_err(kernel_err)
}
