//! N-D tensor entries the ONNX importer's general graphs need: padding (constant, edge, reflect,
//! wrap; negative pads crop), NumPy-broadcast add/sub/mul/div and the sum back to an operand's
//! shape, gather along an axis, and batched matmul. Shapes and indices arrive as number arrays
//! and are checked here; every buffer is the caller's.
use crate::args::{invalid, kernel_err, sizes};
use crate::elementwise::size_list;
use crate::runtime::{given, write_into};
use ferroconv_kernels::broadcast::{self, NdOp};
use ferroconv_kernels::linear;
use ferroconv_kernels::pad::{self, PadMode};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// Signed integers (pads, indices) from JavaScript numbers.
pub(crate) fn int_list(name: &str, v: &[f64]) -> napi::Result<Vec<i64>> {
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            if !x.is_finite() || x.fract() != 0.0 || x.abs() > 9.007_199_254_740_991e15 {
                return Err(invalid(format!(
                    "{name}[{i}]: expected an integer, got {x}"
                )));
            }
            Ok(x as i64)
        })
        .collect()
}

/// output <- input padded by `begins` / `ends` per axis (negative values crop) in `mode`
/// ('constant' with `value`, 'edge', 'reflect', 'wrap'); `shape` is the input's.
#[napi(catch_unwind, js_name = "padForward")]
pub fn pad_forward(
    mode: String,
    input: Float32Array,
    shape: Vec<f64>,
    begins: Vec<f64>,
    ends: Vec<f64>,
    value: f64,
    mut output: Float32Array,
) -> napi::Result<()> {
    let mode = PadMode::parse(&mode).map_err(kernel_err)?;
    let shape = size_list("shape", &shape)?;
    let (b, e) = (int_list("begins", &begins)?, int_list("ends", &ends)?);
    write_into(
        "padForward",
        ("output", &mut output),
        &[("input", &input)],
        |y| pad::pad_forward(mode, &input, &shape, &b, &e, value as f32, y),
    )
}

/// gradInput (overwritten) of padForward, given gradOutput; `shape` is the input's.
#[napi(catch_unwind, js_name = "padBackward")]
pub fn pad_backward(
    mode: String,
    grad_output: Float32Array,
    shape: Vec<f64>,
    begins: Vec<f64>,
    ends: Vec<f64>,
    mut grad_input: Float32Array,
) -> napi::Result<()> {
    let mode = PadMode::parse(&mode).map_err(kernel_err)?;
    let shape = size_list("shape", &shape)?;
    let (b, e) = (int_list("begins", &begins)?, int_list("ends", &ends)?);
    write_into(
        "padBackward",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output)],
        |g| pad::pad_backward(mode, &grad_output, &shape, &b, &e, g),
    )
}

/// The shape padForward writes, or an Error naming the bad pad.
#[napi(catch_unwind, js_name = "paddedShape")]
pub fn padded_shape(
    mode: String,
    shape: Vec<f64>,
    begins: Vec<f64>,
    ends: Vec<f64>,
) -> napi::Result<Vec<u32>> {
    let mode = PadMode::parse(&mode).map_err(kernel_err)?;
    let shape = size_list("shape", &shape)?;
    let (b, e) = (int_list("begins", &begins)?, int_list("ends", &ends)?);
    let out = pad::padded_shape(mode, &shape, &b, &e).map_err(kernel_err)?;
    out.iter()
        .map(|&d| u32::try_from(d).map_err(|_| invalid("pads: an output dim is too large")))
        .collect()
}

/// output <- a op b ('add', 'sub', 'mul', 'div'), both broadcast by NumPy's rules to the shape
/// broadcastShape gives.
#[napi(catch_unwind, js_name = "binaryNd")]
pub fn binary_nd(
    op: String,
    a: Float32Array,
    a_shape: Vec<f64>,
    b: Float32Array,
    b_shape: Vec<f64>,
    mut output: Float32Array,
) -> napi::Result<()> {
    let op = NdOp::parse(&op).map_err(kernel_err)?;
    let (sa, sb) = (
        size_list("aShape", &a_shape)?,
        size_list("bShape", &b_shape)?,
    );
    write_into(
        "binaryNd",
        ("output", &mut output),
        &[("a", &a), ("b", &b)],
        |y| broadcast::binary_nd(op, &a, &sa, &b, &sb, y),
    )
}

/// The shape two shapes broadcast to (NumPy's rules), or an Error naming the dims that clash.
#[napi(catch_unwind, js_name = "broadcastShape")]
pub fn broadcast_shape(a_shape: Vec<f64>, b_shape: Vec<f64>) -> napi::Result<Vec<u32>> {
    let (sa, sb) = (
        size_list("aShape", &a_shape)?,
        size_list("bShape", &b_shape)?,
    );
    let out = broadcast::broadcast_shape(&sa, &sb).map_err(kernel_err)?;
    out.iter()
        .map(|&d| u32::try_from(d).map_err(|_| invalid("shape: a dim is too large")))
        .collect()
}

/// output (of `shape`) <- input summed over the dims `shape` is broadcast along to `inputShape`.
#[napi(catch_unwind, js_name = "sumTo")]
pub fn sum_to(
    input: Float32Array,
    input_shape: Vec<f64>,
    shape: Vec<f64>,
    mut output: Float32Array,
) -> napi::Result<()> {
    let (si, so) = (
        size_list("inputShape", &input_shape)?,
        size_list("shape", &shape)?,
    );
    write_into(
        "sumTo",
        ("output", &mut output),
        &[("input", &input)],
        |y| broadcast::sum_to(&input, &si, &so, y),
    )
}

/// output [outer, indices, inner] <- input [outer, axisLen, inner] at `indices` (negative count
/// from the end) along the middle axis.
#[napi(catch_unwind, js_name = "gatherForward")]
pub fn gather_forward(
    input: Float32Array,
    dims: Vec<f64>,
    indices: Vec<f64>,
    mut output: Float32Array,
) -> napi::Result<()> {
    let [outer, axis_len, inner] = sizes::<3>("dims", &dims)?;
    let idx = int_list("indices", &indices)?;
    write_into(
        "gatherForward",
        ("output", &mut output),
        &[("input", &input)],
        |y| broadcast::gather_forward(&input, outer, axis_len, inner, &idx, y),
    )
}

/// gradInput (overwritten) of gatherForward: gathered rows' gradients added back.
#[napi(catch_unwind, js_name = "gatherBackward")]
pub fn gather_backward(
    grad_output: Float32Array,
    dims: Vec<f64>,
    indices: Vec<f64>,
    mut grad_input: Float32Array,
) -> napi::Result<()> {
    let [outer, axis_len, inner] = sizes::<3>("dims", &dims)?;
    let idx = int_list("indices", &indices)?;
    write_into(
        "gatherBackward",
        ("gradInput", &mut grad_input),
        &[("gradOutput", &grad_output)],
        |g| broadcast::gather_backward(&grad_output, outer, axis_len, inner, &idx, g),
    )
}

/// c (zeroed first) <- for each [ia, ib, ic] of `entries` (flat triples), c[ic] += op(a[ia]) *
/// op(b[ib]) with `dims` = [m, n, k] and the transposes given.
#[napi(catch_unwind, js_name = "matmulBatched")]
pub fn matmul_batched(
    a: Float32Array,
    b: Float32Array,
    mut c: Float32Array,
    dims: Vec<f64>,
    trans_a: bool,
    trans_b: bool,
    entries: Vec<f64>,
) -> napi::Result<()> {
    let [m, n, k] = sizes::<3>("dims", &dims)?;
    if !entries.len().is_multiple_of(3) {
        return Err(invalid(format!(
            "entries: expected triples, got {} numbers",
            entries.len()
        )));
    }
    let flat = size_list("entries", &entries)?;
    let triples: Vec<[usize; 3]> = flat.chunks(3).map(|t| [t[0], t[1], t[2]]).collect();
    let ins = given(&[("a", Some(&a)), ("b", Some(&b))]);
    write_into("matmulBatched", ("c", &mut c), &ins, |y| {
        linear::matmul_batched(trans_a, trans_b, m, n, k, &a, &b, y, &triples)
    })
}
