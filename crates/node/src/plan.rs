//! Compiled plans: the binding side of `ferroconv_kernels::plan`. The TypeScript tracer records
//! one forward's (or one training step's) calls into this binding (`src/plan/trace.ts`) and
//! hands them over as JSON: per step the entry's name and its arguments, with every typed array
//! replaced by an operand (an input, a state array, or a temp). Each step is rebuilt here from
//! the same argument structs and parsing as its eager entry and calls the same kernel, so a plan
//! computes what the eager calls computed. `CompiledPlan.run` then does the whole forward or
//! step as one async task, off the JavaScript thread. Integer arrays (labels, max-pool indices)
//! travel as float arrays of the same bytes and are seen as `i32` by the steps that use them.
use crate::activation::{ce_params, CrossEntropyArgs};
use crate::args::{invalid, kernel_err, size, sizes};
use crate::conv::{conv_params, Conv2dArgs};
use crate::elementwise::size_list;
use crate::linalg::{linear_sizes, LinearArgs};
use crate::nd::int_list;
use crate::norm::{bn_params, lrn_params, BatchNormArgs, LrnArgs};
use crate::optim::{
    adadelta_params, adagrad_params, adam_params, rmsprop_params, sgd_params, AdadeltaStepArgs,
    AdagradStepArgs, AdamStepArgs, RmspropStepArgs, SgdStepArgs,
};
use crate::pool::{adaptive_params, avg_options, pool_params, AdaptivePoolArgs, Pool2dArgs};
use crate::quant::{QAddArgs, QConcatArgs, QConvArgs, QOp, QTensorArgs};
use ferroconv_kernels::activation::{self, Activation};
use ferroconv_kernels::batchnorm::BnStats;
use ferroconv_kernels::broadcast::{self, NdOp};
use ferroconv_kernels::elementwise::{self, BinaryOp};
use ferroconv_kernels::pad::{self, PadMode};
use ferroconv_kernels::plan::{
    as_i32, as_i32_mut, Operand, Plan, Source, StateArray, Step, StepFn,
};
use ferroconv_kernels::quant::PackedQConv;
use ferroconv_kernels::{batchnorm, conv, linear, lrn, optim, pool, softmax};
use napi::bindgen_prelude::{Float32Array, Float64Array, Object};
use napi::Env;
use napi_derive::napi;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanSpec {
    input_lens: Vec<usize>,
    state_lens: Vec<usize>,
    temp_lens: Vec<usize>,
    steps: Vec<StepSpec>,
    outputs: Vec<OperandSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    op: String,
    args: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperandSpec {
    /// 'input' | 'state' | 'temp'
    src: String,
    id: usize,
    offset: usize,
    len: usize,
}

impl OperandSpec {
    fn operand(&self) -> napi::Result<Operand> {
        let src = match self.src.as_str() {
            "input" => Source::Input(self.id),
            "state" => Source::State(self.id),
            "temp" => Source::Temp(self.id),
            other => return Err(invalid(format!("operand: unknown source '{other}'"))),
        };
        Ok(Operand {
            src,
            offset: self.offset,
            len: self.len,
        })
    }
}

/// One recorded call's arguments, turned into a step's operands and parsed parameters.
struct Args<'a> {
    op: &'a str,
    args: &'a [Value],
    reads: Vec<Operand>,
    writes: Vec<Operand>,
}

impl<'a> Args<'a> {
    fn get(&self, i: usize) -> napi::Result<&'a Value> {
        self.args.get(i).ok_or_else(|| {
            invalid(format!(
                "{}: expected at least {} arguments, got {}",
                self.op,
                i + 1,
                self.args.len()
            ))
        })
    }

    fn parse<T: DeserializeOwned>(&self, i: usize) -> napi::Result<T> {
        T::deserialize(self.get(i)?).map_err(|e| invalid(format!("{}: argument {i}: {e}", self.op)))
    }

    fn operand_at(&self, v: &Value, i: usize) -> napi::Result<Operand> {
        let spec = v
            .get("operand")
            .ok_or_else(|| invalid(format!("{}: argument {i} must be an array", self.op)))?;
        OperandSpec::deserialize(spec)
            .map_err(|e| invalid(format!("{}: argument {i}: {e}", self.op)))?
            .operand()
    }

    /// Argument `i` as a read operand; its index among the step's reads.
    fn read(&mut self, i: usize) -> napi::Result<usize> {
        let o = self.operand_at(self.get(i)?, i)?;
        self.reads.push(o);
        Ok(self.reads.len() - 1)
    }

    /// [`Args::read`] for an optional array (null when absent).
    fn read_opt(&mut self, i: usize) -> napi::Result<Option<usize>> {
        if self.get(i)?.is_null() {
            return Ok(None);
        }
        self.read(i).map(Some)
    }

    /// A list of arrays (concat's inputs): the indices of their reads.
    fn read_list(&mut self, i: usize) -> napi::Result<Vec<usize>> {
        let list = self.get(i)?.as_array().ok_or_else(|| {
            invalid(format!(
                "{}: argument {i} must be a list of arrays",
                self.op
            ))
        })?;
        let mut at = Vec::with_capacity(list.len());
        for v in list {
            let o = self.operand_at(v, i)?;
            self.reads.push(o);
            at.push(self.reads.len() - 1);
        }
        Ok(at)
    }

    /// Argument `i` as a written operand (the step's writes are in the order of these calls).
    fn write(&mut self, i: usize) -> napi::Result<()> {
        let o = self.operand_at(self.get(i)?, i)?;
        self.writes.push(o);
        Ok(())
    }

    /// [`Args::write`] for an optional array: whether it is there.
    fn write_opt(&mut self, i: usize) -> napi::Result<bool> {
        if self.get(i)?.is_null() {
            return Ok(false);
        }
        self.write(i).map(|_| true)
    }

    /// A list of written arrays (split's outputs): how many.
    fn write_list(&mut self, i: usize) -> napi::Result<usize> {
        let list = self.get(i)?.as_array().ok_or_else(|| {
            invalid(format!(
                "{}: argument {i} must be a list of arrays",
                self.op
            ))
        })?;
        for v in list {
            let o = self.operand_at(v, i)?;
            self.writes.push(o);
        }
        Ok(list.len())
    }

    fn step(self, run: StepFn) -> Step {
        Step {
            name: self.op.to_string(),
            reads: self.reads,
            writes: self.writes,
            run,
        }
    }
}

/// A concatenation (`concatChannelsAffine`: DenseNet's cat + batch norm + ReLU) whose only
/// reader is a 1x1 conv's input: step `Into(j)` at the concatenation, `From(i)` at the conv.
enum CatConv {
    Into(usize),
    From(usize),
}

/// The temps an argument names (operands, lists of them).
fn temps_named(v: &Value, out: &mut Vec<usize>) {
    match v {
        Value::Array(list) => list.iter().for_each(|x| temps_named(x, out)),
        Value::Object(_) => {
            if let Some(Ok(o)) = v.get("operand").map(OperandSpec::deserialize) {
                if o.src == "temp" {
                    out.push(o.id);
                }
            }
        }
        _ => {}
    }
}

/// The concatenations a plan need not make (see [`CatConv`]): the concatenation's temp is read
/// by one later step only, a fused conv taking the whole temp as its input that can read it in
/// pieces (`conv::cat::reads_pieces`: a 1x1 conv on the GEMM), and is no output of the plan.
/// The conv then reads the concatenation's pieces, bit for bit as it would have read the temp.
/// DenseNet-121 at batch 1: its 18 dense layers and 2 transitions on 56x56 and 28x28 maps.
fn cat_conv_pairs(spec: &PlanSpec) -> std::collections::HashMap<usize, CatConv> {
    let mut users: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (i, s) in spec.steps.iter().enumerate() {
        let mut named = Vec::new();
        s.args.iter().for_each(|a| temps_named(a, &mut named));
        named.sort_unstable();
        named.dedup();
        for t in named {
            users.entry(t).or_default().push(i);
        }
    }
    let outputs: Vec<usize> = spec
        .outputs
        .iter()
        .filter(|o| o.src == "temp")
        .map(|o| o.id)
        .collect();
    let operand = |v: Option<&Value>| v.and_then(|v| v.get("operand")).cloned();
    let mut pairs = std::collections::HashMap::new();
    for (i, s) in spec.steps.iter().enumerate() {
        if s.op != "concatChannelsAffine" {
            continue;
        }
        let Some(Ok(out)) = operand(s.args.get(7)).map(OperandSpec::deserialize) else {
            continue;
        };
        let (Some(list), true) = (users.get(&out.id), out.src == "temp") else {
            continue;
        };
        let [first, j] = list[..] else {
            continue;
        };
        let conv = &spec.steps[j];
        let pointwise = conv
            .args
            .get(7)
            .and_then(|a| Conv2dArgs::deserialize(a).ok())
            .and_then(|a| conv_params(&a).ok())
            .is_some_and(|(p, _)| conv::cat::reads_pieces(&p));
        if first == i
            && conv.op == "conv2dForwardFused"
            && operand(conv.args.first()) == operand(s.args.get(7))
            && !outputs.contains(&out.id)
            && pointwise
        {
            pairs.insert(i, CatConv::Into(j));
            pairs.insert(j, CatConv::From(i));
        }
    }
    pairs
}

/// The step of a 1x1 conv (`conv2dForwardFused` arguments `conv`) that reads its input as the
/// pieces of a `concatChannelsAffine` call (arguments `cat`) that is not made.
fn build_cat_conv(
    cat: &[Value],
    conv: &[Value],
    caches: &mut Vec<Arc<dyn Cache>>,
) -> napi::Result<Step> {
    let mut c = Args {
        op: "concatChannelsAffine",
        args: cat,
        reads: Vec::new(),
        writes: Vec::new(),
    };
    let xs = c.read_list(0)?;
    let channels = size_list("channels", &c.parse::<Vec<f64>>(1)?)?;
    let (batch, plane) = (size("batch", c.parse(2)?)?, size("plane", c.parse(3)?)?);
    let (in_scale, in_shift) = (c.read(4)?, c.read(5)?);
    let in_relu: bool = c.parse(6)?;
    let mut a = Args {
        op: "conv2dForwardFused",
        args: conv,
        reads: c.reads,
        writes: Vec::new(),
    };
    let w = a.read(1)?;
    let (scale, shift, residual) = (a.read_opt(2)?, a.read_opt(3)?, a.read_opt(4)?);
    let relu: bool = a.parse(5)?;
    a.write(6)?;
    let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(7)?)?;
    if p.batch != batch || p.in_h * p.in_w != plane {
        return Err(invalid(format!(
            "the concatenation is {batch} items of {plane} positions, the conv's input {} of {}",
            p.batch,
            p.in_h * p.in_w
        )));
    }
    let prep = Prepared::for_operand(a.reads[w], caches);
    Ok(a.step(Box::new(move |r, o| {
        let pieces: Vec<&[f32]> = xs.iter().map(|&k| r[k]).collect();
        let input = conv::cat::CatInput {
            pieces: &pieces,
            channels: &channels,
            affine: conv::cat::RowAffine {
                scale: r[in_scale],
                shift: r[in_shift],
                relu: in_relu,
            },
        };
        let epilogue = conv::Epilogue {
            scale: scale.map(|k| r[k]),
            shift: shift.map(|k| r[k]),
            residual: residual.map(|k| r[k]),
            relu,
        };
        // Prepared by the rules (untuned): their pick reads the pieces (`cat_conv_pairs`),
        // which the tuner's might not.
        let make = || conv::prepare_forward(&p, r[w], algo).ok();
        match prep.get(r[w], |pw: &conv::PreparedForward| pw.fits(&p, algo), make) {
            Some(pw) => {
                conv::cat::conv2d_forward_cat_prepared(&p, &input, r[w], &pw, &epilogue, o[0], algo)
            }
            None => {
                let mut x = vec![0.0; p.input_len()];
                let a = input.affine;
                elementwise::concat_channels_affine(
                    &pieces, &channels, batch, plane, a.scale, a.shift, a.relu, &mut x,
                )?;
                conv::conv2d_forward_fused(&p, &x, r[w], &epilogue, o[0], algo)
            }
        }
    })))
}

/// The step for one recorded call: the entries an inference forward makes. Anything else is an
/// Error (the tracer falls back to running the model eagerly).
fn build_step(op: &str, args: &[Value], caches: &mut Vec<Arc<dyn Cache>>) -> napi::Result<Step> {
    let mut a = Args {
        op,
        args,
        reads: Vec::new(),
        writes: Vec::new(),
    };
    let run: StepFn = match op {
        "conv2dForward" => {
            let (x, w, b) = (a.read(0)?, a.read(1)?, a.read_opt(2)?);
            a.write(3)?;
            let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(4)?)?;
            let prep = Prepared::for_operand(a.reads[w], caches);
            Box::new(move |r, o| {
                let bias = b.map(|b| r[b]);
                let make = || conv::prepare_forward_tuned(&p, r[w], algo, r[x], o[0]).ok();
                match prep.get(r[w], |pw: &conv::PreparedForward| pw.fits(&p, algo), make) {
                    Some(pw) => {
                        conv::conv2d_forward_prepared(&p, r[x], r[w], &pw, bias, o[0], algo)
                    }
                    None => conv::conv2d_forward(&p, r[x], r[w], bias, o[0], algo),
                }
            })
        }
        "conv2dForwardFused" => {
            let (x, w) = (a.read(0)?, a.read(1)?);
            let (scale, shift, residual) = (a.read_opt(2)?, a.read_opt(3)?, a.read_opt(4)?);
            let relu: bool = a.parse(5)?;
            a.write(6)?;
            let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(7)?)?;
            let prep = Prepared::for_operand(a.reads[w], caches);
            Box::new(move |r, o| {
                let epilogue = conv::Epilogue {
                    scale: scale.map(|k| r[k]),
                    shift: shift.map(|k| r[k]),
                    residual: residual.map(|k| r[k]),
                    relu,
                };
                let make = || conv::prepare_forward_tuned(&p, r[w], algo, r[x], o[0]).ok();
                match prep.get(r[w], |pw: &conv::PreparedForward| pw.fits(&p, algo), make) {
                    Some(pw) => conv::conv2d_forward_fused_prepared(
                        &p, r[x], r[w], &pw, &epilogue, o[0], algo,
                    ),
                    None => conv::conv2d_forward_fused(&p, r[x], r[w], &epilogue, o[0], algo),
                }
            })
        }
        "maxPool2dForwardNoIndices" => {
            let x = a.read(0)?;
            a.write(1)?;
            let (p, _) = pool_params(&a.parse::<Pool2dArgs>(2)?)?;
            Box::new(move |r, o| pool::max_pool2d_forward_no_indices(&p, r[x], o[0]))
        }
        "avgPool2dForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            let args = a.parse::<Pool2dArgs>(2)?;
            let ((p, _), opts) = (pool_params(&args)?, avg_options(&args)?);
            Box::new(move |r, o| pool::avg_pool2d_forward(&p, &opts, r[x], o[0]))
        }
        "adaptiveAvgPool2dForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            let p = adaptive_params(&a.parse::<AdaptivePoolArgs>(2)?)?;
            Box::new(move |r, o| pool::adaptive_avg_pool2d_forward(&p, r[x], o[0]))
        }
        "linearForward" => {
            let (x, w, b) = (a.read(0)?, a.read(1)?, a.read_opt(2)?);
            a.write(3)?;
            let (batch, i, n) = linear_sizes(&a.parse::<LinearArgs>(4)?)?;
            // Small batches (or one output) read the weights in place: nothing to prepare.
            let prep = (batch > linear::SMALL_BATCH && n > 1)
                .then(|| Prepared::for_operand(a.reads[w], caches));
            Box::new(move |r, o| {
                let bias = b.map(|b| r[b]);
                let make = || linear::prepare_forward(i, n, r[w]).ok();
                let fits = |pw: &linear::PreparedLinear| pw.fits(i, n);
                match prep.as_ref().and_then(|c| c.get(r[w], fits, make)) {
                    Some(pw) => {
                        linear::linear_forward_prepared(batch, i, n, r[x], r[w], &pw, bias, o[0])
                    }
                    None => linear::linear_forward(batch, i, n, r[x], r[w], bias, o[0]),
                }
            })
        }
        "activationForward" => {
            let kind: String = a.parse(0)?;
            let alpha: Option<f64> = a.args.get(3).map(|_| a.parse(3)).transpose()?.flatten();
            let beta: Option<f64> = a.args.get(4).map(|_| a.parse(4)).transpose()?.flatten();
            let act = Activation::parse(&kind, alpha, beta).map_err(kernel_err)?;
            let x = a.read(1)?;
            a.write(2)?;
            Box::new(move |r, o| activation::activation_forward(act, r[x], o[0]))
        }
        "quantizeU8" | "dequantizeU8" => {
            let x = a.read(0)?;
            a.write(1)?;
            let q = QOp::quantize(&a.parse::<QTensorArgs>(2)?, op == "dequantizeU8")?;
            Box::new(move |r, o| q.run(&[r[x]], o[0], None))
        }
        "qconv2dForward" => {
            let (x, w, b, m) = (a.read(0)?, a.read(1)?, a.read_opt(2)?, a.read(3)?);
            let res = a.read_opt(4)?;
            a.write(5)?;
            let q = QOp::conv(&a.parse::<QConvArgs>(6)?, b.is_some(), res.is_some())?;
            let prep = Prepared::for_operand(a.reads[w], caches);
            Box::new(move |r, o| {
                let reads: Vec<&[f32]> = [Some(x), Some(w), b, Some(m), res]
                    .into_iter()
                    .flatten()
                    .map(|k| r[k])
                    .collect();
                let packed = q.conv_params().and_then(|p| {
                    let make = || {
                        let n = p.weight_shape().iter().product();
                        let wb = crate::quant::bytes("qconv2dForward: weight", r[w], n).ok()?;
                        PackedQConv::new(p, bytemuck::cast_slice(wb)).ok()
                    };
                    prep.get(r[w], |pw: &PackedQConv| pw.fits(p), make)
                });
                q.run(&reads, o[0], packed.as_deref())
            })
        }
        "maxPool2dU8" | "avgPool2dU8" | "adaptiveAvgPool2dU8" => {
            let x = a.read(0)?;
            a.write(1)?;
            let q = match op {
                "maxPool2dU8" => QOp::max_pool(&a.parse::<Pool2dArgs>(2)?)?,
                "avgPool2dU8" => QOp::avg_pool(&a.parse::<Pool2dArgs>(2)?, a.parse(3)?)?,
                _ => QOp::adaptive(&a.parse::<AdaptivePoolArgs>(2)?)?,
            };
            Box::new(move |r, o| q.run(&[r[x]], o[0], None))
        }
        "addU8" => {
            let (x, y) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let q = QOp::add(&a.parse::<QAddArgs>(3)?)?;
            Box::new(move |r, o| q.run(&[r[x], r[y]], o[0], None))
        }
        "concatU8" => {
            let xs = a.read_list(0)?;
            a.write(1)?;
            let q = QOp::concat(&a.parse::<QConcatArgs>(2)?)?;
            Box::new(move |r, o| {
                let views: Vec<&[f32]> = xs.iter().map(|&k| r[k]).collect();
                q.run(&views, o[0], None)
            })
        }
        "reluU8" => {
            a.write(0)?;
            let q = QOp::relu(a.parse(1)?, a.parse(2)?)?;
            Box::new(move |_, o| q.run(&[], o[0], None))
        }
        "reluInplace" => {
            a.write(0)?;
            Box::new(|_, o| {
                activation::relu_inplace(o[0]);
                Ok(())
            })
        }
        "softmaxForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            let rows = size("rows", a.parse(2)?)?;
            let cols = size("cols", a.parse(3)?)?;
            let log: bool = a.parse(4)?;
            Box::new(move |r, o| softmax::softmax_forward(r[x], o[0], rows, cols, log))
        }
        "batchNorm2dForwardEval" => {
            let (x, w, b) = (a.read(0)?, a.read_opt(1)?, a.read_opt(2)?);
            let (rm, rv) = (a.read(3)?, a.read(4)?);
            a.write(5)?;
            let p = bn_params(&a.parse::<BatchNormArgs>(6)?)?;
            Box::new(move |r, o| {
                let (w, b) = (w.map(|k| r[k]), b.map(|k| r[k]));
                batchnorm::batch_norm2d_forward_eval(&p, r[x], w, b, r[rm], r[rv], o[0])
            })
        }
        "batchNormFold" => {
            let (rm, rv) = (a.read(0)?, a.read(1)?);
            let (w, b, cb) = (a.read_opt(2)?, a.read_opt(3)?, a.read_opt(4)?);
            let eps: f64 = a.parse(5)?;
            a.write(6)?;
            a.write(7)?;
            Box::new(move |r, o| {
                let [scale, shift] = o else {
                    unreachable!("two writes");
                };
                let opt = |k: Option<usize>| k.map(|k| r[k]);
                batchnorm::fold(r[rm], r[rv], opt(w), opt(b), opt(cb), eps, scale, shift)
            })
        }
        "concatChannels" | "concatChannelsAffine" => {
            let xs = a.read_list(0)?;
            let channels = size_list("channels", &a.parse::<Vec<f64>>(1)?)?;
            let batch = size("batch", a.parse(2)?)?;
            let plane = size("plane", a.parse(3)?)?;
            if op == "concatChannels" {
                a.write(4)?;
                Box::new(move |r, o| {
                    let views: Vec<&[f32]> = xs.iter().map(|&k| r[k]).collect();
                    elementwise::concat_channels(&views, &channels, batch, plane, o[0])
                })
            } else {
                let (scale, shift) = (a.read(4)?, a.read(5)?);
                let relu: bool = a.parse(6)?;
                a.write(7)?;
                Box::new(move |r, o| {
                    let views: Vec<&[f32]> = xs.iter().map(|&k| r[k]).collect();
                    let (s, t) = (r[scale], r[shift]);
                    elementwise::concat_channels_affine(
                        &views, &channels, batch, plane, s, t, relu, o[0],
                    )
                })
            }
        }
        "lrnForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            a.write(2)?;
            let p = lrn_params(&a.parse::<LrnArgs>(3)?)?;
            Box::new(move |r, o| {
                let [y, s] = o else {
                    unreachable!("two writes");
                };
                lrn::lrn_forward(&p, r[x], y, s)
            })
        }
        "broadcastBinary" => {
            let kind = BinaryOp::parse(&a.parse::<String>(0)?).map_err(kernel_err)?;
            let (x, y) = (a.read(1)?, a.read(3)?);
            let x_shape = size_list("aShape", &a.parse::<Vec<f64>>(2)?)?;
            let y_shape = size_list("bShape", &a.parse::<Vec<f64>>(4)?)?;
            a.write(5)?;
            Box::new(move |r, o| {
                elementwise::broadcast_binary(kind, r[x], &x_shape, r[y], &y_shape, o[0])
            })
        }
        "transpose" => {
            let x = a.read(0)?;
            let shape = size_list("shape", &a.parse::<Vec<f64>>(1)?)?;
            let perm = size_list("perm", &a.parse::<Vec<f64>>(2)?)?;
            a.write(3)?;
            Box::new(move |r, o| elementwise::transpose(r[x], &shape, &perm, o[0]))
        }
        "padForward" | "padBackward" => {
            let mode = PadMode::parse(&a.parse::<String>(0)?).map_err(kernel_err)?;
            let x = a.read(1)?;
            let shape = size_list("shape", &a.parse::<Vec<f64>>(2)?)?;
            let begins = int_list("begins", &a.parse::<Vec<f64>>(3)?)?;
            let ends = int_list("ends", &a.parse::<Vec<f64>>(4)?)?;
            if a.op == "padForward" {
                let value = a.parse::<f64>(5)? as f32;
                a.write(6)?;
                Box::new(move |r, o| {
                    pad::pad_forward(mode, r[x], &shape, &begins, &ends, value, o[0])
                })
            } else {
                a.write(5)?;
                Box::new(move |r, o| pad::pad_backward(mode, r[x], &shape, &begins, &ends, o[0]))
            }
        }
        "binaryNd" => {
            let kind = NdOp::parse(&a.parse::<String>(0)?).map_err(kernel_err)?;
            let (x, y) = (a.read(1)?, a.read(3)?);
            let x_shape = size_list("aShape", &a.parse::<Vec<f64>>(2)?)?;
            let y_shape = size_list("bShape", &a.parse::<Vec<f64>>(4)?)?;
            a.write(5)?;
            Box::new(move |r, o| broadcast::binary_nd(kind, r[x], &x_shape, r[y], &y_shape, o[0]))
        }
        "sumTo" => {
            let x = a.read(0)?;
            let from = size_list("inputShape", &a.parse::<Vec<f64>>(1)?)?;
            let to = size_list("shape", &a.parse::<Vec<f64>>(2)?)?;
            a.write(3)?;
            Box::new(move |r, o| broadcast::sum_to(r[x], &from, &to, o[0]))
        }
        "gatherForward" | "gatherBackward" => {
            let x = a.read(0)?;
            let [outer, len, inner] = sizes::<3>("dims", &a.parse::<Vec<f64>>(1)?)?;
            let idx = int_list("indices", &a.parse::<Vec<f64>>(2)?)?;
            a.write(3)?;
            if a.op == "gatherForward" {
                Box::new(move |r, o| broadcast::gather_forward(r[x], outer, len, inner, &idx, o[0]))
            } else {
                Box::new(move |r, o| {
                    broadcast::gather_backward(r[x], outer, len, inner, &idx, o[0])
                })
            }
        }
        "matmulBatched" => {
            let (x, y) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let [m, n, k] = sizes::<3>("dims", &a.parse::<Vec<f64>>(3)?)?;
            let (ta, tb): (bool, bool) = (a.parse(4)?, a.parse(5)?);
            let flat = size_list("entries", &a.parse::<Vec<f64>>(6)?)?;
            if !flat.len().is_multiple_of(3) {
                return Err(invalid("matmulBatched: entries must be triples"));
            }
            let entries: Vec<[usize; 3]> = flat.chunks(3).map(|t| [t[0], t[1], t[2]]).collect();
            Box::new(move |r, o| {
                linear::matmul_batched(ta, tb, m, n, k, r[x], r[y], o[0], &entries)
            })
        }
        "scale" => {
            let x = a.read(0)?;
            let factor: f64 = a.parse(1)?;
            a.write(2)?;
            Box::new(move |r, o| elementwise::scale(r[x], factor, o[0]))
        }
        "conv2dBackwardData" => {
            let (go, w) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(3)?)?;
            Box::new(move |r, o| conv::conv2d_backward_data(&p, r[go], r[w], o[0], algo))
        }
        "conv2dBackwardWeight" => {
            let (x, go) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let has_gb = a.write_opt(3)?;
            let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(4)?)?;
            Box::new(move |r, o| {
                let mut w = writes(o);
                let gw = next(&mut w)?;
                let gb = opt_next(&mut w, has_gb)?;
                conv::conv2d_backward_weight(&p, r[x], r[go], gw, gb, algo)
            })
        }
        "batchNorm2dForwardTrain" => {
            let (x, wt, b) = (a.read(0)?, a.read_opt(1)?, a.read_opt(2)?);
            let (has_rm, has_rv) = (a.write_opt(3)?, a.write_opt(4)?);
            a.write(5)?;
            a.write(6)?;
            a.write(7)?;
            let p = bn_params(&a.parse::<BatchNormArgs>(8)?)?;
            Box::new(move |r, o| {
                let mut w = writes(o);
                let rm = opt_next(&mut w, has_rm)?;
                let rv = opt_next(&mut w, has_rv)?;
                let (y, m, s) = (next(&mut w)?, next(&mut w)?, next(&mut w)?);
                let (wt, b) = (wt.map(|k| r[k]), b.map(|k| r[k]));
                batchnorm::batch_norm2d_forward_train(&p, r[x], wt, b, rm, rv, y, m, s)
            })
        }
        "batchNorm2dBackward" => {
            let (x, go, wt) = (a.read(0)?, a.read(1)?, a.read_opt(2)?);
            let (m, v) = (a.read(3)?, a.read(4)?);
            a.write(5)?;
            let (has_gw, has_gb) = (a.write_opt(6)?, a.write_opt(7)?);
            let p = bn_params(&a.parse::<BatchNormArgs>(8)?)?;
            let batch = match a.parse::<String>(9)?.as_str() {
                "batch" => true,
                "running" => false,
                other => {
                    return Err(invalid(format!(
                        "stats: expected 'batch' or 'running', got '{other}'"
                    )))
                }
            };
            Box::new(move |r, o| {
                let mut w = writes(o);
                let gi = next(&mut w)?;
                let gw = opt_next(&mut w, has_gw)?;
                let gb = opt_next(&mut w, has_gb)?;
                let stats = if batch {
                    BnStats::Batch {
                        mean: r[m],
                        invstd: r[v],
                    }
                } else {
                    BnStats::Running {
                        mean: r[m],
                        var: r[v],
                    }
                };
                batchnorm::batch_norm2d_backward(
                    &p,
                    r[x],
                    r[go],
                    wt.map(|k| r[k]),
                    stats,
                    gi,
                    gw,
                    gb,
                )
            })
        }
        "maxPool2dForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            a.write(2)?;
            let (p, _) = pool_params(&a.parse::<Pool2dArgs>(3)?)?;
            Box::new(move |r, o| {
                let [y, ind] = o else {
                    unreachable!("two writes");
                };
                pool::max_pool2d_forward(&p, r[x], y, as_i32_mut(ind))
            })
        }
        "maxPool2dBackward" => {
            let (go, ind) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let (p, _) = pool_params(&a.parse::<Pool2dArgs>(3)?)?;
            Box::new(move |r, o| pool::max_pool2d_backward(&p, r[go], as_i32(r[ind]), o[0]))
        }
        "avgPool2dBackward" => {
            let go = a.read(0)?;
            a.write(1)?;
            let args = a.parse::<Pool2dArgs>(2)?;
            let ((p, _), opts) = (pool_params(&args)?, avg_options(&args)?);
            Box::new(move |r, o| pool::avg_pool2d_backward(&p, &opts, r[go], o[0]))
        }
        "adaptiveAvgPool2dBackward" => {
            let go = a.read(0)?;
            a.write(1)?;
            let p = adaptive_params(&a.parse::<AdaptivePoolArgs>(2)?)?;
            Box::new(move |r, o| pool::adaptive_avg_pool2d_backward(&p, r[go], o[0]))
        }
        "linearBackward" => {
            let (x, wt, go) = (a.read(0)?, a.read(1)?, a.read(2)?);
            let has = [a.write_opt(3)?, a.write_opt(4)?, a.write_opt(5)?];
            let (batch, i, n) = linear_sizes(&a.parse::<LinearArgs>(6)?)?;
            Box::new(move |r, o| {
                let mut w = writes(o);
                let gi = opt_next(&mut w, has[0])?;
                let gw = opt_next(&mut w, has[1])?;
                let gb = opt_next(&mut w, has[2])?;
                linear::linear_backward(batch, i, n, r[x], r[wt], r[go], gi, gw, gb)
            })
        }
        "activationBackward" => {
            let kind: String = a.parse(0)?;
            let alpha: Option<f64> = a.args.get(5).map(|_| a.parse(5)).transpose()?.flatten();
            let beta: Option<f64> = a.args.get(6).map(|_| a.parse(6)).transpose()?.flatten();
            let act = Activation::parse(&kind, alpha, beta).map_err(kernel_err)?;
            let (x, y, go) = (a.read(1)?, a.read(2)?, a.read(3)?);
            a.write(4)?;
            Box::new(move |r, o| activation::activation_backward(act, r[x], r[y], r[go], o[0]))
        }
        "softmaxBackward" => {
            let (y, go) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            let rows = size("rows", a.parse(3)?)?;
            let cols = size("cols", a.parse(4)?)?;
            let log: bool = a.parse(5)?;
            Box::new(move |r, o| softmax::softmax_backward(r[y], r[go], o[0], rows, cols, log))
        }
        "crossEntropyForward" => {
            let (x, t, cw) = (a.read(0)?, a.read(1)?, a.read_opt(2)?);
            a.write(3)?;
            a.write(4)?;
            let p = ce_params(&a.parse::<CrossEntropyArgs>(5)?)?;
            let has_total = a.args.len() > 6 && a.write_opt(6)?;
            Box::new(move |r, o| {
                let mut w = writes(o);
                let (probs, losses) = (next(&mut w)?, next(&mut w)?);
                let cw = cw.map(|k| r[k]);
                let v = softmax::cross_entropy_forward(&p, r[x], as_i32(r[t]), cw, probs, losses)?;
                if let Some(total) = opt_next(&mut w, has_total)? {
                    total.fill(v as f32);
                }
                Ok(())
            })
        }
        "crossEntropyBackward" => {
            let (probs, t, cw, go) = (a.read(0)?, a.read(1)?, a.read_opt(2)?, a.read(3)?);
            a.write(4)?;
            let p = ce_params(&a.parse::<CrossEntropyArgs>(5)?)?;
            Box::new(move |r, o| {
                let cw = cw.map(|k| r[k]);
                softmax::cross_entropy_backward(&p, r[probs], as_i32(r[t]), cw, r[go], o[0])
            })
        }
        "dropoutForward" => {
            let x = a.read(0)?;
            a.write(1)?;
            a.write(2)?;
            let p: f64 = a.parse(3)?;
            let seed = size("seed", a.parse(4)?)? as u64;
            Box::new(move |r, o| {
                let [y, m] = o else {
                    unreachable!("two writes");
                };
                elementwise::dropout_forward(r[x], y, m, p, seed)
            })
        }
        "dropoutBackward" => {
            let (go, m) = (a.read(0)?, a.read(1)?);
            a.write(2)?;
            Box::new(move |r, o| elementwise::dropout_backward(r[go], r[m], o[0]))
        }
        "broadcastBinaryBackward" => {
            let kind = BinaryOp::parse(&a.parse::<String>(0)?).map_err(kernel_err)?;
            let (x, y, go) = (a.read(1)?, a.read(3)?, a.read(5)?);
            let x_shape = size_list("aShape", &a.parse::<Vec<f64>>(2)?)?;
            let y_shape = size_list("bShape", &a.parse::<Vec<f64>>(4)?)?;
            let (has_ga, has_gb) = (a.write_opt(6)?, a.write_opt(7)?);
            Box::new(move |r, o| {
                let mut w = writes(o);
                let ga = opt_next(&mut w, has_ga)?;
                let gb = opt_next(&mut w, has_gb)?;
                let (xs, ys) = (&x_shape[..], &y_shape[..]);
                elementwise::broadcast_binary_backward(kind, r[x], xs, r[y], ys, r[go], ga, gb)
            })
        }
        "splitChannels" => {
            let x = a.read(0)?;
            a.write_list(1)?;
            let channels = size_list("channels", &a.parse::<Vec<f64>>(2)?)?;
            let batch = size("batch", a.parse(3)?)?;
            let plane = size("plane", a.parse(4)?)?;
            Box::new(move |r, o| elementwise::split_channels(r[x], o, &channels, batch, plane))
        }
        "lrnBackward" => {
            let (x, y, sc, go) = (a.read(0)?, a.read(1)?, a.read(2)?, a.read(3)?);
            a.write(4)?;
            let p = lrn_params(&a.parse::<LrnArgs>(5)?)?;
            Box::new(move |r, o| lrn::lrn_backward(&p, r[x], r[y], r[sc], r[go], o[0]))
        }
        "accumulateGrad" => {
            a.write(0)?;
            let g = a.read(1)?;
            Box::new(move |r, o| elementwise::accumulate(o[0], r[g]))
        }
        "fill" => {
            a.write(0)?;
            let value: f64 = a.parse(1)?;
            Box::new(move |_, o| {
                elementwise::fill(o[0], value);
                Ok(())
            })
        }
        "copy" => {
            let x = a.read(0)?;
            a.write(1)?;
            Box::new(move |r, o| elementwise::copy(r[x], o[0]))
        }
        "assertFinite" => {
            let x = a.read(0)?;
            let what: String = a.parse(1)?;
            Box::new(move |r, _| elementwise::check_finite(r[x], &what))
        }
        "clipGradNorm" => {
            a.write_list(0)?;
            let max_norm: f64 = a.parse(1)?;
            Box::new(move |_, o| {
                elementwise::clip_grad_norm(o, max_norm);
                Ok(())
            })
        }
        "sgdStep" => {
            a.write(0)?;
            let g = a.read(1)?;
            let has_buf = a.write_opt(2)?;
            let p = sgd_params(&a.parse::<SgdStepArgs>(3)?);
            Box::new(move |r, o| {
                let mut w = writes(o);
                let param = next(&mut w)?;
                optim::sgd_step(&p, param, r[g], opt_next(&mut w, has_buf)?)
            })
        }
        "adamStep" => {
            a.write(0)?;
            let g = a.read(1)?;
            a.write(2)?;
            a.write(3)?;
            let has_max = a.write_opt(4)?;
            let p = adam_params(&a.parse::<AdamStepArgs>(5)?);
            Box::new(move |r, o| {
                let mut w = writes(o);
                let (param, m, v) = (next(&mut w)?, next(&mut w)?, next(&mut w)?);
                optim::adam_step(&p, param, r[g], m, v, opt_next(&mut w, has_max)?)
            })
        }
        "rmspropStep" => {
            a.write(0)?;
            let g = a.read(1)?;
            a.write(2)?;
            let (has_avg, has_buf) = (a.write_opt(3)?, a.write_opt(4)?);
            let p = rmsprop_params(&a.parse::<RmspropStepArgs>(5)?);
            Box::new(move |r, o| {
                let mut w = writes(o);
                let (param, sq) = (next(&mut w)?, next(&mut w)?);
                let avg = opt_next(&mut w, has_avg)?;
                optim::rmsprop_step(&p, param, r[g], sq, avg, opt_next(&mut w, has_buf)?)
            })
        }
        "adagradStep" => {
            a.write(0)?;
            let g = a.read(1)?;
            a.write(2)?;
            let p = adagrad_params(&a.parse::<AdagradStepArgs>(3)?)?;
            Box::new(move |r, o| {
                let [param, sum] = o else {
                    unreachable!("two writes");
                };
                optim::adagrad_step(&p, param, r[g], sum)
            })
        }
        "adadeltaStep" => {
            a.write(0)?;
            let g = a.read(1)?;
            a.write(2)?;
            a.write(3)?;
            let p = adadelta_params(&a.parse::<AdadeltaStepArgs>(4)?);
            Box::new(move |r, o| {
                let [param, sq, acc] = o else {
                    unreachable!("three writes");
                };
                optim::adadelta_step(&p, param, r[g], sq, acc)
            })
        }
        other => return Err(invalid(format!("{other}: no plan step for this entry"))),
    };
    Ok(a.step(run))
}

/// A step's written slices in the order its builder declared them.
fn writes<'a, 'b>(o: &'a mut [&'b mut [f32]]) -> impl Iterator<Item = &'a mut [f32]> + use<'a, 'b> {
    o.iter_mut().map(|s| &mut **s)
}

fn next<'a>(
    w: &mut impl Iterator<Item = &'a mut [f32]>,
) -> ferroconv_kernels::Result<&'a mut [f32]> {
    w.next().ok_or_else(|| {
        ferroconv_kernels::KernelError("a plan step got fewer writes than it declared".into())
    })
}

/// The next written slice if the step has this optional output.
fn opt_next<'a>(
    w: &mut impl Iterator<Item = &'a mut [f32]>,
    present: bool,
) -> ferroconv_kernels::Result<Option<&'a mut [f32]>> {
    if present {
        next(w).map(Some)
    } else {
        Ok(None)
    }
}

thread_local! {
    /// The content tokens of the state arrays of the run this thread is computing (see
    /// [`CompiledPlan::run`]). A thread waiting inside a step for the pool may compute another
    /// run meanwhile; that run sets its own tokens and puts these back when it ends
    /// ([`with_tokens`]), so a step always sees its own run's.
    static RUN_TOKENS: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `tokens` as this thread's run tokens, then restores the ones before.
fn with_tokens<T>(tokens: Vec<f64>, f: impl FnOnce() -> T) -> T {
    let before = RUN_TOKENS.with(|t| t.replace(tokens));
    struct Restore(Option<Vec<f64>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(v) = self.0.take() {
                RUN_TOKENS.with(|t| *t.borrow_mut() = v);
            }
        }
    }
    let _restore = Restore(Some(before));
    f()
}

/// Elements of a weight compared on every reuse of its prepared form (see [`Prepared::get`]).
const SAMPLES: usize = 64;

/// Weights in a prepared form a step keeps between runs.
trait Weights: Send + Sync + 'static {
    fn floats(&self) -> usize;
}

impl Weights for PackedQConv {
    fn floats(&self) -> usize {
        self.bytes() / 4
    }
}

impl Weights for conv::PreparedForward {
    fn floats(&self) -> usize {
        self.floats()
    }
}

impl Weights for linear::PreparedLinear {
    fn floats(&self) -> usize {
        self.floats()
    }
}

/// A step's weights prepared once (a conv's packed for the GEMM by `conv::prepare_forward`, a
/// linear layer's by `linear::prepare_forward`) and reused by the runs that pass the same
/// weights. The weights are a state array; JavaScript names the contents of each state array
/// with a token that changes whenever ferroconv writes the array (`contentToken` in
/// src/tensor.ts) and passes the tokens with each inference run. Runs with no tokens (training
/// steps, whose weights change every step) prepare nothing. As a net for writes made behind
/// ferroconv's back, a reuse also compares a sample of the weights with the values they had
/// when prepared, and prepares again when any differs.
struct Prepared<T> {
    /// The state array holding the whole weight, when it is one.
    state: Option<usize>,
    slot: Mutex<Option<PreparedEntry<T>>>,
}

struct PreparedEntry<T> {
    token: f64,
    sample: Vec<u32>,
    weights: Arc<T>,
}

/// What a plan needs of its caches whatever they hold: to empty them and count their floats.
trait Cache: Send + Sync {
    fn clear(&self);
    fn floats(&self) -> usize;
}

impl<T: Weights> Cache for Prepared<T> {
    fn clear(&self) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
    }

    fn floats(&self) -> usize {
        self.slot
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|e| e.weights.floats()))
            .unwrap_or(0)
    }
}

impl<T: Weights> Prepared<T> {
    /// The cache for a step whose weight is `operand`, registered in `caches` (which
    /// `releaseArena` empties).
    fn for_operand(operand: Operand, caches: &mut Vec<Arc<dyn Cache>>) -> Arc<Prepared<T>> {
        let state = match operand.src {
            Source::State(k) if operand.offset == 0 => Some(k),
            _ => None,
        };
        let cache = Arc::new(Prepared {
            state,
            slot: Mutex::new(None),
        });
        caches.push(cache.clone());
        cache
    }

    fn sample(weight: &[f32]) -> Vec<u32> {
        let step = (weight.len() / SAMPLES).max(1);
        weight.iter().step_by(step).map(|v| v.to_bits()).collect()
    }

    /// The prepared weights for `weight` in this run (`fits` says whether kept ones suit this
    /// call, `make` prepares new ones), or None to compute without: no token, or preparing
    /// failed (the plain kernel then does its own packing).
    fn get(
        &self,
        weight: &[f32],
        fits: impl Fn(&T) -> bool,
        make: impl FnOnce() -> Option<T>,
    ) -> Option<Arc<T>> {
        let k = self.state?;
        let token = RUN_TOKENS.with(|t| t.borrow().get(k).copied())?;
        let mut slot = self.slot.lock().ok()?;
        if let Some(e) = slot.as_ref() {
            if e.token == token && fits(&e.weights) && e.sample == Self::sample(weight) {
                return Some(e.weights.clone());
            }
        }
        *slot = None; // the old weights go before the new ones are made
        let weights = Arc::new(make()?);
        *slot = Some(PreparedEntry {
            token,
            sample: Self::sample(weight),
            weights: weights.clone(),
        });
        Some(weights)
    }
}

struct Shared {
    plan: Plan,
    /// The prepared weights of the plan's conv and linear steps.
    prepared: Vec<Arc<dyn Cache>>,
    /// The op and the JSON arguments of each step as compiled, for the steps a run replaces.
    ops: Vec<String>,
    /// The arena of the last finished run, kept for the next (a run that finds it taken by a
    /// concurrent one makes its own).
    arena: Mutex<Option<Vec<f32>>>,
    /// Whether runs time their steps, and the step times (ms) of the last run that did.
    profiling: std::sync::atomic::AtomicBool,
    step_ms: Mutex<Vec<f64>>,
    /// The state arrays `bindState` gave, which runs passing no state read.
    bound: Mutex<Option<Arc<Vec<Float32Array>>>>,
}

/// A plan from the tracer's JSON (see `src/plan/trace.ts`): the constructor's and `compile`'s work.
fn build_shared(spec: &str) -> napi::Result<Shared> {
    let spec: PlanSpec =
        serde_json::from_str(spec).map_err(|e| invalid(format!("CompiledPlan: {e}")))?;
    let mut prepared = Vec::new();
    let into_conv = cat_conv_pairs(&spec);
    let steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fused = match into_conv.get(&i) {
                // The concatenation the conv at `j` reads in pieces: nothing to do here.
                Some(CatConv::Into(j)) => Ok(Step {
                    name: format!("{} (read in pieces by step {j})", s.op),
                    reads: Vec::new(),
                    writes: Vec::new(),
                    run: Box::new(|_, _| Ok(())),
                }),
                Some(&CatConv::From(k)) => {
                    build_cat_conv(&spec.steps[k].args, &s.args, &mut prepared)
                }
                None => build_step(&s.op, &s.args, &mut prepared),
            };
            fused.map_err(|e| invalid(format!("CompiledPlan: step {i} ({}): {}", s.op, e.reason)))
        })
        .collect::<napi::Result<Vec<_>>>()?;
    let outputs = spec
        .outputs
        .iter()
        .map(|o| o.operand())
        .collect::<napi::Result<Vec<_>>>()
        .map_err(|e| invalid(format!("CompiledPlan: {}", e.reason)))?;
    let ops = spec.steps.iter().map(|s| s.op.clone()).collect();
    let plan = Plan::new(
        spec.input_lens,
        spec.state_lens,
        spec.temp_lens,
        steps,
        outputs,
    )
    .map_err(|e| invalid(format!("CompiledPlan: {e}")))?;
    Ok(Shared {
        plan,
        prepared,
        ops,
        arena: Mutex::new(None),
        profiling: false.into(),
        step_ms: Mutex::new(Vec::new()),
        bound: Mutex::new(None),
    })
}

/// A model's forward for one input shape (or one training step: forward, loss, backward and
/// optimizer update), compiled: the kernel calls of one traced eager call over a planned arena.
/// `run` computes it off the JavaScript thread.
#[napi]
pub struct CompiledPlan {
    shared: Arc<Shared>,
}

#[napi]
impl CompiledPlan {
    /// Builds a plan from the tracer's JSON (see `src/plan/trace.ts`). An entry with no plan
    /// step, malformed arguments or operands out of range give an Error.
    #[napi(constructor)]
    pub fn new(spec: String) -> napi::Result<CompiledPlan> {
        Ok(CompiledPlan {
            shared: Arc::new(build_shared(&spec)?),
        })
    }

    /// Builds a plan as the constructor does, on a thread of its own, so the JavaScript thread
    /// keeps running meanwhile: parsing and building the steps of a zoo model's training step
    /// takes milliseconds. Rejects with the constructor's errors.
    #[napi(ts_return_type = "Promise<CompiledPlan>")]
    pub fn compile(env: &Env, spec: String) -> napi::Result<Object<'_>> {
        type Resolver = Box<dyn FnOnce(Env) -> napi::Result<CompiledPlan> + Send>;
        let (deferred, promise) = env.create_deferred::<CompiledPlan, Resolver>()?;
        // Not the kernel pool: a compile would hold one of its threads while runs of other
        // plans wait for it.
        std::thread::Builder::new()
            .name("ferroconv-compile".into())
            .spawn(move || {
                match crate::runtime::caught("CompiledPlan.compile", || build_shared(&spec)) {
                    Ok(Ok(shared)) => deferred.resolve(Box::new(move |_| {
                        Ok(CompiledPlan {
                            shared: Arc::new(shared),
                        })
                    })),
                    Ok(Err(e)) | Err(e) => deferred.reject(e),
                }
            })
            .map_err(|e| invalid(format!("CompiledPlan.compile: no thread: {e}")))?;
        Ok(promise)
    }

    /// Bytes of the arena a run uses for the intermediate values.
    #[napi(getter)]
    pub fn arena_bytes(&self) -> f64 {
        (self.shared.plan.arena_len() * 4) as f64
    }

    /// Frees the arena kept from the last run and the prepared weights (the next run makes
    /// new ones): for plans the cache lets go of, so their memory does not wait for the
    /// garbage collector.
    #[napi]
    pub fn release_arena(&self) {
        if let Ok(mut slot) = self.shared.arena.lock() {
            *slot = None;
        }
        if let Ok(mut bound) = self.shared.bound.lock() {
            *bound = None;
        }
        for p in &self.shared.prepared {
            p.clear();
        }
    }

    /// Bytes held by the prepared weights of the plan's conv and linear steps.
    #[napi(getter)]
    pub fn prepared_bytes(&self) -> f64 {
        let floats: usize = self.shared.prepared.iter().map(|p| p.floats()).sum();
        (floats * 4) as f64
    }

    /// Makes the following runs time each of their steps (see `stepMs`), or stop doing so.
    #[napi]
    pub fn set_profiling(&self, on: bool) {
        self.shared
            .profiling
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Wall time of each step, in milliseconds, in the last run made while profiling (empty
    /// before one): where the plan's time goes (`bench/profile_plan.ts`).
    #[napi(getter)]
    pub fn step_ms(&self) -> Vec<f64> {
        self.shared
            .step_ms
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Kernel calls per run.
    #[napi(getter)]
    pub fn steps(&self) -> u32 {
        self.shared.plan.steps() as u32
    }

    /// Indices of the state arrays the plan updates (a training step's), increasing: `run`
    /// takes one `updated` array for each.
    #[napi(getter, js_name = "writtenState")]
    pub fn written_state(&self) -> Vec<u32> {
        self.written_indices()
            .into_iter()
            .map(|k| k as u32)
            .collect()
    }

    /// Floats of each output a run writes.
    #[napi(getter)]
    pub fn output_lens(&self) -> Vec<f64> {
        self.shared
            .plan
            .output_lens()
            .iter()
            .map(|&n| n as f64)
            .collect()
    }

    /// Keeps `state` (the model's state arrays, in the order of the trace) for the runs that
    /// pass none, so a predict does not convert and reference hundreds of typed arrays per
    /// call (DenseNet-121: 606, 0.3 ms of the JavaScript thread). Only for plans that write no
    /// state (inference). The caller passes no state only while these are still the model's
    /// arrays, unchanged in length (not detached), and rebinds otherwise; the plan holds them
    /// until the next `bindState` or `releaseArena`.
    #[napi]
    pub fn bind_state(&self, state: Vec<Float32Array>) -> napi::Result<()> {
        if !self.written_indices().is_empty() {
            return Err(invalid(
                "CompiledPlan.bindState: this plan writes state; pass it to each run",
            ));
        }
        self.shared
            .plan
            .check_state(state.iter().map(|s| s.len()))
            .map_err(|e| invalid(format!("CompiledPlan.bindState: {e}")))?;
        let mut slot = self
            .shared
            .bound
            .lock()
            .map_err(|_| invalid("CompiledPlan.bindState: lock poisoned"))?;
        *slot = Some(Arc::new(state));
        Ok(())
    }

    /// Runs the plan on `inputs` with the model's current `state` arrays (in the order of the
    /// trace) and writes the results into `outputs`, on the kernel pool off the JavaScript
    /// thread. A plan that updates state (a training step: parameters, moments, running
    /// statistics) leaves `state` as it was and writes the updated arrays into `updated`, one
    /// per written state array in increasing order (`writtenState`): each is first a copy of
    /// its state array, then updated in place, so JavaScript reading the old arrays meanwhile
    /// sees whole, unchanged weights. `replaced`, when given, is JSON `[[step, args], ...]`:
    /// those steps run this time with other arguments (a new dropout seed, the optimizer's step
    /// count), which must name the same operands. The output and updated arrays must share
    /// memory with no other array; none of the arrays may be written until the promise settles
    /// (the TypeScript side copies a state array on write while a run holds it). `tokens`, one
    /// number per state array, name the arrays' contents: a conv whose weight array comes
    /// with the same token as in an earlier run reuses the weights it prepared then (packed
    /// for the GEMM) instead of preparing them again. Without tokens nothing is kept. A run
    /// given no `state` reads the arrays of the last `bindState`.
    #[allow(clippy::too_many_arguments)]
    #[napi(ts_return_type = "Promise<void>")]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        inputs: Vec<Float32Array>,
        state: Option<Vec<Float32Array>>,
        outputs: Vec<Float32Array>,
        replaced: Option<String>,
        updated: Option<Vec<Float32Array>>,
        tokens: Option<Float64Array>,
    ) -> napi::Result<Object<'env>> {
        let plan = &self.shared.plan;
        let state = match state {
            Some(s) => Arc::new(s),
            None => self
                .shared
                .bound
                .lock()
                .ok()
                .and_then(|b| b.clone())
                .ok_or_else(|| {
                    invalid("CompiledPlan.run: no state given and none bound (bindState)")
                })?,
        };
        plan.check_args(
            inputs.iter().map(|s| s.len()),
            state.iter().map(|s| s.len()),
            outputs.iter().map(|s| s.len()),
        )
        .map_err(|e| invalid(format!("CompiledPlan.run: {e}")))?;
        let updated = updated.unwrap_or_default();
        let written = self.written_indices();
        if updated.len() != written.len() {
            return Err(invalid(format!(
                "CompiledPlan.run: updated: expected {} arrays (one per written state array), got {}",
                written.len(),
                updated.len()
            )));
        }
        for (j, &k) in written.iter().enumerate() {
            if updated[j].len() != state[k].len() {
                return Err(invalid(format!(
                    "CompiledPlan.run: updated[{j}]: expected {} elements (state[{k}]), got {}",
                    state[k].len(),
                    updated[j].len()
                )));
            }
        }
        check_run_memory(&inputs, &state, &outputs, &updated)?;
        // A typed array: one read, where an array of numbers took a call per element (a zoo
        // model passes 300-700 tokens with every predict).
        let tokens = tokens.map(|t| t.to_vec()).unwrap_or_default();
        if !tokens.is_empty() && tokens.len() != state.len() {
            return Err(invalid(format!(
                "CompiledPlan.run: tokens: expected {} numbers (one per state array), got {}",
                state.len(),
                tokens.len()
            )));
        }
        let replaced = match replaced {
            Some(json) => self.replacements(&json)?,
            None => Vec::new(),
        };
        let mut job = PlanRun {
            shared: self.shared.clone(),
            inputs,
            state,
            outputs,
            replaced,
            updated,
            written,
            tokens,
        };
        let pool = crate::runtime::pool()?;
        type Resolver = Box<dyn FnOnce(Env) -> napi::Result<()> + Send>;
        let (deferred, promise) = env.create_deferred::<(), Resolver>()?;
        // Spawned on the kernel pool itself rather than run from libuv's thread pool (an
        // AsyncTask), whose four threads file system and DNS calls share: concurrent predicts
        // would otherwise hold them all while they wait for the kernels.
        pool.spawn(move || {
            match crate::runtime::caught("CompiledPlan.run", || job.compute()) {
                // The run's typed arrays (a zoo model passes 300-600) are released on the
                // JavaScript thread as the promise resolves, all at once. Dropped here, each
                // would be a thread-safe call of its own for that thread to take in turn.
                Ok(Ok(())) => deferred.resolve(Box::new(move |_| {
                    drop(job);
                    Ok(())
                })),
                Ok(Err(e)) | Err(e) => {
                    deferred.reject(e);
                    drop(job);
                }
            }
        });
        Ok(promise)
    }
}

impl CompiledPlan {
    /// Indices of the state arrays some step writes, increasing.
    fn written_indices(&self) -> Vec<usize> {
        let plan = &self.shared.plan;
        (0..plan.state_count())
            .filter(|&k| plan.writes_state(k))
            .collect()
    }

    /// The steps `json` replaces for one run, rebuilt and checked to read and write exactly
    /// what the compiled steps do, in step order.
    fn replacements(&self, json: &str) -> napi::Result<Vec<(usize, StepFn)>> {
        let fail = |m: String| invalid(format!("CompiledPlan.run: replaced: {m}"));
        let list: Vec<(usize, Vec<Value>)> =
            serde_json::from_str(json).map_err(|e| fail(e.to_string()))?;
        let mut out: Vec<(usize, StepFn)> = Vec::with_capacity(list.len());
        for (i, args) in list {
            if out.last().is_some_and(|&(k, _)| k >= i) {
                return Err(fail("steps must be listed in increasing order".into()));
            }
            let op = self.shared.ops.get(i).ok_or_else(|| {
                fail(format!(
                    "step {i}: the plan has {} steps",
                    self.shared.ops.len()
                ))
            })?;
            let step = build_step(op, &args, &mut Vec::new())
                .map_err(|e| fail(format!("step {i} ({op}): {}", e.reason)))?;
            let same = self
                .shared
                .plan
                .step_operands(i)
                .is_some_and(|(r, w)| r == step.reads && w == step.writes);
            if !same {
                return Err(fail(format!(
                    "step {i} ({op}): the arguments name other arrays"
                )));
            }
            out.push((i, step.run));
        }
        Ok(out)
    }
}

/// Fails unless every array a run writes (the outputs, the updated state) shares no memory with
/// any other array of the run. Arrays only read may overlap each other.
fn check_run_memory(
    inputs: &[Float32Array],
    state: &[Float32Array],
    outputs: &[Float32Array],
    updated: &[Float32Array],
) -> napi::Result<()> {
    // (start, end, written, what, index), sorted by start; one sweep finds any overlap that
    // involves a written array.
    let mut spans: Vec<(usize, usize, bool, &str, usize)> = Vec::new();
    let mut add = |arrays: &[Float32Array], what: &'static str, written: bool| {
        for (k, a) in arrays.iter().enumerate() {
            let r = a.as_ptr_range();
            if r.start < r.end {
                spans.push((r.start as usize, r.end as usize, written, what, k));
            }
        }
    };
    add(inputs, "inputs", false);
    add(state, "state", false);
    add(outputs, "outputs", true);
    add(updated, "updated", true);
    spans.sort_unstable_by_key(|s| s.0);
    let (mut end_any, mut end_written) =
        (None::<(usize, &str, usize)>, None::<(usize, &str, usize)>);
    for &(start, end, written, what, k) in &spans {
        let clash = end_written
            .filter(|e| start < e.0)
            .or(end_any.filter(|e| written && start < e.0));
        if let Some((_, other, j)) = clash {
            return Err(invalid(format!(
                "CompiledPlan.run: {what}[{k}] shares memory with {other}[{j}]; \
                 an array the plan writes must not overlap any other"
            )));
        }
        if end_any.is_none_or(|e| end > e.0) {
            end_any = Some((end, what, k));
        }
        if written && end_written.is_none_or(|e| end > e.0) {
            end_written = Some((end, what, k));
        }
    }
    Ok(())
}

/// One run of a [`CompiledPlan`], computed on a kernel thread.
struct PlanRun {
    shared: Arc<Shared>,
    inputs: Vec<Float32Array>,
    state: Arc<Vec<Float32Array>>,
    outputs: Vec<Float32Array>,
    replaced: Vec<(usize, StepFn)>,
    /// Where the written state arrays' new values go, one per index of `written`.
    updated: Vec<Float32Array>,
    written: Vec<usize>,
    tokens: Vec<f64>,
}

impl PlanRun {
    fn compute(&mut self) -> napi::Result<()> {
        let plan = &self.shared.plan;
        let taken = self.shared.arena.lock().ok().and_then(|mut a| a.take());
        let mut arena = match taken {
            Some(a) if a.len() == plan.arena_len() => a,
            _ => plan.new_arena(),
        };
        let inputs: Vec<&[f32]> = self.inputs.iter().map(|s| &s[..]).collect();
        // SAFETY: the arrays written (outputs, updated) share no memory with any other array of
        // the run (checked in `run`), and the TypeScript side neither reads nor writes any of
        // them until the promise settles; the napi references keep them alive.
        let mut updated: Vec<Option<&mut [f32]>> = self
            .updated
            .iter_mut()
            .map(|u| Some(unsafe { u.as_mut() }))
            .collect();
        let mut state: Vec<StateArray> = Vec::with_capacity(self.state.len());
        for (k, s) in self.state.iter().enumerate() {
            match self.written.binary_search(&k) {
                Ok(j) => {
                    let Some(u) = updated[j].take() else {
                        unreachable!("each updated array is taken once");
                    };
                    elementwise::copy(s, u).map_err(|e| invalid(e.0))?;
                    state.push(StateArray::Write(u));
                }
                Err(_) => state.push(StateArray::Read(&s[..])),
            }
        }
        let mut outputs: Vec<&mut [f32]> = self
            .outputs
            .iter_mut()
            .map(|o| unsafe { o.as_mut() })
            .collect();
        let tokens = std::mem::take(&mut self.tokens);
        let profiling = self
            .shared
            .profiling
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut times = vec![0.0; if profiling { plan.steps() } else { 0 }];
        with_tokens(tokens, || {
            plan.run_timed(
                &mut arena,
                &inputs,
                &mut state,
                &mut outputs,
                &self.replaced,
                profiling.then_some(&mut times[..]),
            )
        })
        .map_err(|e| invalid(format!("CompiledPlan.run: {e}")))?;
        if profiling {
            if let Ok(mut t) = self.shared.step_ms.lock() {
                *t = times;
            }
        }
        if let Ok(mut slot) = self.shared.arena.lock() {
            *slot = Some(arena);
        }
        Ok(())
    }
}
