//! Int8 entries (kernels' `quant`). A uint8 or int8 tensor of `n` values travels in a
//! Float32Array of `ceil(n / 4)` floats holding its bytes (an int32 bias, one float per value,
//! bit for bit), so quantized graphs use the same arrays, tracer and plan arena as float ones.
//! Each entry parses its arguments into a [`QOp`], which both the eager entry and the plan's
//! step run, so the two cannot disagree.
use crate::args::{invalid, kernel_err, size, sizes};
use crate::conv::{conv_params, Conv2dArgs};
use crate::pool::{adaptive_params, avg_options, pool_params, AdaptivePoolArgs, Pool2dArgs};
use crate::runtime::{given, write_into};
use ferroconv_kernels::conv::Conv2dParams;
use ferroconv_kernels::plan::as_i32;
use ferroconv_kernels::pool::{AvgPoolOptions, Pool2dParams};
use ferroconv_kernels::quant::{
    self, Nchw, PackedQConv, QConvEpilogue, QConvOut, QParams, QResidual,
};
use ferroconv_kernels::{bail, Result};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// The first `n` bytes of `a`, which must hold exactly `ceil(n / 4)` floats.
pub(crate) fn bytes<'a>(name: &str, a: &'a [f32], n: usize) -> Result<&'a [u8]> {
    if a.len() != n.div_ceil(4) {
        bail!(
            "{name}: expected {n} bytes in {} floats, got {} floats",
            n.div_ceil(4),
            a.len()
        );
    }
    Ok(&bytemuck::cast_slice(a)[..n])
}

pub(crate) fn bytes_mut<'a>(name: &str, a: &'a mut [f32], n: usize) -> Result<&'a mut [u8]> {
    if a.len() != n.div_ceil(4) {
        bail!(
            "{name}: expected {n} bytes in {} floats, got {} floats",
            n.div_ceil(4),
            a.len()
        );
    }
    Ok(&mut bytemuck::cast_slice_mut(a)[..n])
}

fn zero_point(name: &str, v: f64) -> napi::Result<i32> {
    if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
        return Err(invalid(format!(
            "{name}: expected an integer zero point in 0..=255, got {v}"
        )));
    }
    Ok(v as i32)
}

fn qparams(name: &str, v: &[f64]) -> napi::Result<QParams> {
    if v.len() != 2 {
        return Err(invalid(format!(
            "{name}: expected [scale, zeroPoint], got {} numbers",
            v.len()
        )));
    }
    let q = QParams {
        scale: v[0] as f32,
        zero_point: zero_point(&format!("{name}: zeroPoint"), v[1])?,
    };
    q.check(name).map_err(kernel_err)?;
    Ok(q)
}

#[napi(object, js_name = "QTensorArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QTensorArgs {
    /// The float tensor's NCHW shape [N, C, H, W] (the uint8 one is NHWC).
    pub shape: Vec<f64>,
    pub scale: f64,
    pub zero_point: f64,
}

#[napi(object, js_name = "QConvArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QConvArgs {
    /// The conv's geometry; `inputShape` is the logical [N, C, H, W] of the NHWC input.
    pub conv: Conv2dArgs,
    pub input_zero_point: f64,
    /// The uint8 output's zero point (ignored for a float output).
    pub output_zero_point: f64,
    /// A residual's zero point and r_scale / y_scale, when one is passed.
    pub residual: Option<Vec<f64>>,
    pub relu: bool,
    /// Write float32 (dequantized) instead of uint8.
    pub float_output: bool,
}

#[napi(object, js_name = "QAddArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QAddArgs {
    pub len: f64,
    /// [scale, zeroPoint] of a, b and the output.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub output: Vec<f64>,
    pub relu: bool,
}

#[napi(object, js_name = "QConcatArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QConcatArgs {
    /// N * H * W.
    pub pixels: f64,
    pub channels: Vec<f64>,
    /// [scale, zeroPoint] of each input, then of the output.
    pub inputs: Vec<Vec<f64>>,
    pub output: Vec<f64>,
}

/// A parsed int8 call: what it computes, its reads in order, one write.
pub(crate) enum QOp {
    Quantize(Nchw, f32, i32),
    Dequantize(Nchw, f32, i32),
    Conv(Box<ConvOp>),
    MaxPool(Pool2dParams, usize, usize),
    AvgPool(Pool2dParams, AvgPoolOptions, i32, usize, usize),
    Adaptive(Nchw, usize, usize),
    Add(usize, QParams, QParams, QParams, bool),
    Concat(usize, Vec<usize>, Vec<QParams>, QParams),
    Relu(usize, i32),
}

pub(crate) struct ConvOp {
    p: Conv2dParams,
    out_len: usize,
    x_zp: i32,
    y_zp: i32,
    residual: Option<(i32, f32)>,
    relu: bool,
    float_out: bool,
    has_bias: bool,
}

fn nchw(shape: &[f64]) -> napi::Result<Nchw> {
    let [n, c, h, w] = sizes::<4>("shape", shape)?;
    let s = Nchw { n, c, h, w };
    s.len().map_err(kernel_err)?;
    Ok(s)
}

impl QOp {
    pub(crate) fn quantize(a: &QTensorArgs, dequantize: bool) -> napi::Result<QOp> {
        let s = nchw(&a.shape)?;
        let zp = zero_point("zeroPoint", a.zero_point)?;
        Ok(if dequantize {
            QOp::Dequantize(s, a.scale as f32, zp)
        } else {
            QOp::Quantize(s, a.scale as f32, zp)
        })
    }

    pub(crate) fn conv(a: &QConvArgs, has_bias: bool, has_residual: bool) -> napi::Result<QOp> {
        let (p, _) = conv_params(&a.conv)?;
        let (oh, ow) = p.validate().map_err(kernel_err)?;
        let residual = match (&a.residual, has_residual) {
            (Some(r), true) if r.len() == 2 => {
                Some((zero_point("residual zeroPoint", r[0])?, r[1] as f32))
            }
            (None, false) => None,
            _ => {
                return Err(invalid(
                    "qconv2dForward: a residual needs args.residual = [zeroPoint, mult]",
                ))
            }
        };
        Ok(QOp::Conv(Box::new(ConvOp {
            out_len: p.batch * oh * ow * p.out_channels,
            p,
            x_zp: zero_point("inputZeroPoint", a.input_zero_point)?,
            y_zp: zero_point("outputZeroPoint", a.output_zero_point)?,
            residual,
            relu: a.relu,
            float_out: a.float_output,
            has_bias,
        })))
    }

    pub(crate) fn max_pool(a: &Pool2dArgs) -> napi::Result<QOp> {
        let (p, (oh, ow)) = pool_params(a)?;
        Ok(QOp::MaxPool(p, oh, ow))
    }

    pub(crate) fn avg_pool(a: &Pool2dArgs, zp: f64) -> napi::Result<QOp> {
        let (p, (oh, ow)) = pool_params(a)?;
        Ok(QOp::AvgPool(
            p,
            avg_options(a)?,
            zero_point("zeroPoint", zp)?,
            oh,
            ow,
        ))
    }

    pub(crate) fn adaptive(a: &AdaptivePoolArgs) -> napi::Result<QOp> {
        adaptive_params(a)?;
        let s = nchw(&a.input_shape)?;
        let [oh, ow] = sizes::<2>("outputSize", &a.output_size)?;
        Ok(QOp::Adaptive(s, oh, ow))
    }

    pub(crate) fn add(a: &QAddArgs) -> napi::Result<QOp> {
        Ok(QOp::Add(
            size("len", a.len)?,
            qparams("a", &a.a)?,
            qparams("b", &a.b)?,
            qparams("output", &a.output)?,
            a.relu,
        ))
    }

    pub(crate) fn concat(a: &QConcatArgs) -> napi::Result<QOp> {
        let channels = a
            .channels
            .iter()
            .enumerate()
            .map(|(i, &c)| size(&format!("channels[{i}]"), c))
            .collect::<napi::Result<Vec<_>>>()?;
        if a.inputs.len() != channels.len() {
            return Err(invalid(format!(
                "concatU8: {} inputs' parameters for {} channel counts",
                a.inputs.len(),
                channels.len()
            )));
        }
        let qs = a
            .inputs
            .iter()
            .enumerate()
            .map(|(i, q)| qparams(&format!("inputs[{i}]"), q))
            .collect::<napi::Result<Vec<_>>>()?;
        Ok(QOp::Concat(
            size("pixels", a.pixels)?,
            channels,
            qs,
            qparams("output", &a.output)?,
        ))
    }

    pub(crate) fn relu(len: f64, zp: f64) -> napi::Result<QOp> {
        Ok(QOp::Relu(size("len", len)?, zero_point("zeroPoint", zp)?))
    }

    /// A conv's geometry (for packing its weights), None for other ops.
    pub(crate) fn conv_params(&self) -> Option<&Conv2dParams> {
        match self {
            QOp::Conv(c) => Some(&c.p),
            _ => None,
        }
    }

    /// Runs the op on its reads (in the entry's argument order, optional ones left out) into
    /// `out`; `packed` is a conv's prepared weights, when a plan has them.
    pub(crate) fn run(
        &self,
        r: &[&[f32]],
        out: &mut [f32],
        packed: Option<&PackedQConv>,
    ) -> Result<()> {
        match self {
            QOp::Quantize(s, scale, zp) => {
                let n = s.len()?;
                quant::quantize_nchw_to_nhwc(
                    *s,
                    r[0],
                    *scale,
                    *zp,
                    bytes_mut("quantizeU8: output", out, n)?,
                )
            }
            QOp::Dequantize(s, scale, zp) => {
                let n = s.len()?;
                quant::dequantize_nhwc_to_nchw(
                    *s,
                    bytes("dequantizeU8: input", r[0], n)?,
                    *scale,
                    *zp,
                    out,
                )
            }
            QOp::Conv(c) => {
                let p = &c.p;
                let x = bytes("qconv2dForward: input", r[0], p.input_len())?;
                let wlen = p.weight_shape().iter().product();
                let w: &[i8] = bytemuck::cast_slice(bytes("qconv2dForward: weight", r[1], wlen)?);
                let mut at = 2;
                let bias = if c.has_bias {
                    at += 1;
                    Some(as_i32(r[2]))
                } else {
                    None
                };
                let mult = r[at];
                let residual = match c.residual {
                    Some((zero_point, mult)) => Some(QResidual {
                        data: bytes("qconv2dForward: residual", r[at + 1], c.out_len)?,
                        zero_point,
                        mult,
                    }),
                    None => None,
                };
                let e = QConvEpilogue {
                    x_zero_point: c.x_zp,
                    bias,
                    mult,
                    y_zero_point: c.y_zp,
                    residual,
                    relu: c.relu,
                };
                let y = if c.float_out {
                    QConvOut::F32(out)
                } else {
                    QConvOut::U8(bytes_mut("qconv2dForward: output", out, c.out_len)?)
                };
                match packed {
                    Some(pw) => quant::qconv2d(p, x, pw, &e, y),
                    None => quant::qconv2d_unpacked(p, x, w, &e, y),
                }
            }
            QOp::MaxPool(p, oh, ow) => quant::max_pool2d_u8(
                p,
                bytes("maxPool2dU8: input", r[0], p.input_len())?,
                bytes_mut("maxPool2dU8: output", out, p.output_len((*oh, *ow)))?,
            ),
            QOp::AvgPool(p, opts, zp, oh, ow) => quant::avg_pool2d_u8(
                p,
                opts,
                bytes("avgPool2dU8: input", r[0], p.input_len())?,
                *zp,
                bytes_mut("avgPool2dU8: output", out, p.output_len((*oh, *ow)))?,
            ),
            QOp::Adaptive(s, oh, ow) => {
                let x = bytes("adaptiveAvgPool2dU8: input", r[0], s.len()?)?;
                let y = bytes_mut("adaptiveAvgPool2dU8: output", out, s.n * s.c * oh * ow)?;
                quant::adaptive_avg_pool2d_u8(*s, *oh, *ow, x, y)
            }
            QOp::Add(len, qa, qb, qy, relu) => quant::add_u8(
                bytes("addU8: a", r[0], *len)?,
                *qa,
                bytes("addU8: b", r[1], *len)?,
                *qb,
                *qy,
                *relu,
                bytes_mut("addU8: output", out, *len)?,
            ),
            QOp::Concat(pixels, channels, qs, qy) => {
                if r.len() != channels.len() {
                    bail!(
                        "concatU8: {} inputs for {} channel counts",
                        r.len(),
                        channels.len()
                    );
                }
                let mut parts = Vec::with_capacity(r.len());
                for (i, ((x, &c), &q)) in r.iter().zip(channels).zip(qs).enumerate() {
                    let n = pixels.checked_mul(c).ok_or_else(|| {
                        ferroconv_kernels::KernelError("concatU8: sizes overflow".into())
                    })?;
                    parts.push(quant::ConcatPart {
                        data: bytes(&format!("concatU8: input {i}"), x, n)?,
                        channels: c,
                        q,
                    });
                }
                let total: usize = channels.iter().sum();
                let y = bytes_mut("concatU8: output", out, pixels.saturating_mul(total))?;
                quant::concat_nhwc(*pixels, &parts, *qy, y)
            }
            QOp::Relu(len, zp) => quant::relu_u8(bytes_mut("reluU8: x", out, *len)?, *zp),
        }
    }
}

/// Runs `op` eagerly on the kernel pool.
fn eager(
    name: &str,
    op: QOp,
    reads: &[(&str, &Float32Array)],
    out: &mut Float32Array,
) -> napi::Result<()> {
    let views: Vec<&[f32]> = reads.iter().map(|(_, a)| &***a).collect();
    write_into(name, ("output", out), reads, |y| op.run(&views, y, None))
}

/// output (uint8 NHWC) <- quantize(input (float NCHW), scale, zeroPoint), ONNX QuantizeLinear.
#[napi(catch_unwind, js_name = "quantizeU8")]
pub fn quantize_u8(
    input: Float32Array,
    mut output: Float32Array,
    args: QTensorArgs,
) -> napi::Result<()> {
    eager(
        "quantizeU8",
        QOp::quantize(&args, false)?,
        &[("input", &input)],
        &mut output,
    )
}

/// output (float NCHW) <- scale * (input (uint8 NHWC) - zeroPoint), ONNX DequantizeLinear.
#[napi(catch_unwind, js_name = "dequantizeU8")]
pub fn dequantize_u8(
    input: Float32Array,
    mut output: Float32Array,
    args: QTensorArgs,
) -> napi::Result<()> {
    eager(
        "dequantizeU8",
        QOp::quantize(&args, true)?,
        &[("input", &input)],
        &mut output,
    )
}

/// output <- requantize(conv2d(input, weight) + bias (+ residual), ReLU), uint8 NHWC in and out
/// (float out with `floatOutput`); weight int8 OIHW, bias int32 or null, mult one float per
/// output channel (see the kernels' `QConvEpilogue`).
#[allow(clippy::too_many_arguments)]
#[napi(catch_unwind, js_name = "qconv2dForward")]
pub fn qconv2d_forward(
    input: Float32Array,
    weight: Float32Array,
    bias: Option<Float32Array>,
    mult: Float32Array,
    residual: Option<Float32Array>,
    mut output: Float32Array,
    args: QConvArgs,
) -> napi::Result<()> {
    let op = QOp::conv(&args, bias.is_some(), residual.is_some())?;
    let reads = given(&[
        ("input", Some(&input)),
        ("weight", Some(&weight)),
        ("bias", bias.as_ref()),
        ("mult", Some(&mult)),
        ("residual", residual.as_ref()),
    ]);
    eager("qconv2dForward", op, &reads, &mut output)
}

/// Max pooling of a uint8 NHWC tensor (same quantization out).
#[napi(catch_unwind, js_name = "maxPool2dU8")]
pub fn max_pool2d_u8(
    input: Float32Array,
    mut output: Float32Array,
    args: Pool2dArgs,
) -> napi::Result<()> {
    eager(
        "maxPool2dU8",
        QOp::max_pool(&args)?,
        &[("input", &input)],
        &mut output,
    )
}

/// Average pooling of a uint8 NHWC tensor whose zero point is `zeroPoint`.
#[napi(catch_unwind, js_name = "avgPool2dU8")]
pub fn avg_pool2d_u8(
    input: Float32Array,
    mut output: Float32Array,
    args: Pool2dArgs,
    zero_point: f64,
) -> napi::Result<()> {
    eager(
        "avgPool2dU8",
        QOp::avg_pool(&args, zero_point)?,
        &[("input", &input)],
        &mut output,
    )
}

/// Adaptive average pooling of a uint8 NHWC tensor (torch's bins).
#[napi(catch_unwind, js_name = "adaptiveAvgPool2dU8")]
pub fn adaptive_avg_pool2d_u8(
    input: Float32Array,
    mut output: Float32Array,
    args: AdaptivePoolArgs,
) -> napi::Result<()> {
    eager(
        "adaptiveAvgPool2dU8",
        QOp::adaptive(&args)?,
        &[("input", &input)],
        &mut output,
    )
}

/// output <- requantize(a + b), ReLU optional (QLinearAdd).
#[napi(catch_unwind, js_name = "addU8")]
pub fn add_u8(
    a: Float32Array,
    b: Float32Array,
    mut output: Float32Array,
    args: QAddArgs,
) -> napi::Result<()> {
    eager(
        "addU8",
        QOp::add(&args)?,
        &[("a", &a), ("b", &b)],
        &mut output,
    )
}

/// output <- the inputs concatenated along channels (NHWC), each requantized to the output's.
#[napi(catch_unwind, js_name = "concatU8")]
pub fn concat_u8(
    inputs: Vec<Float32Array>,
    mut output: Float32Array,
    args: QConcatArgs,
) -> napi::Result<()> {
    let op = QOp::concat(&args)?;
    let reads: Vec<(&str, &Float32Array)> = inputs.iter().map(|a| ("input", a)).collect();
    eager("concatU8", op, &reads, &mut output)
}

/// x <- max(x, zeroPoint) in place: ReLU on a uint8 tensor of `len` values.
#[napi(catch_unwind, js_name = "reluU8")]
pub fn relu_u8(mut x: Float32Array, len: f64, zero_point: f64) -> napi::Result<()> {
    let op = QOp::relu(len, zero_point)?;
    write_into("reluU8", ("x", &mut x), &[], |y| op.run(&[], y, None))
}

/// Which int8 kernels run on this CPU now ("scalar", "avx2 ...", "avx512-vnni ...").
#[napi(js_name = "int8Path")]
pub fn int8_path() -> String {
    quant::int8_path().name().to_string()
}
