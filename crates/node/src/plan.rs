//! Compiled plans: the binding side of `ferroconv_kernels::plan`. The TypeScript tracer records
//! one forward's calls into this binding (`src/plan/trace.ts`) and hands them over as JSON: per
//! step the entry's name and its arguments, with every typed array replaced by an operand (the
//! input, a state array, or a temp). Each step is rebuilt here from the same argument structs
//! and parsing as its eager entry and calls the same kernel, so a plan computes what the eager
//! calls computed. `CompiledPlan.run` then does the whole forward as one async task, off the
//! JavaScript thread.
use crate::args::{invalid, kernel_err, size};
use crate::conv::{conv_params, Conv2dArgs};
use crate::elementwise::size_list;
use crate::linalg::{linear_sizes, LinearArgs};
use crate::norm::{bn_params, lrn_params, BatchNormArgs, LrnArgs};
use crate::pool::{adaptive_params, avg_options, pool_params, AdaptivePoolArgs, Pool2dArgs};
use ferroconv_kernels::activation::{self, Activation};
use ferroconv_kernels::elementwise::{self, BinaryOp};
use ferroconv_kernels::plan::{Operand, Plan, Source, Step, StepFn};
use ferroconv_kernels::{batchnorm, conv, linear, lrn, pool, softmax};
use napi::bindgen_prelude::{Float32Array, Object};
use napi::Env;
use napi_derive::napi;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::sync::{Arc, Mutex};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlanSpec {
    input_len: usize,
    state_lens: Vec<usize>,
    temp_lens: Vec<usize>,
    steps: Vec<StepSpec>,
    output: OperandSpec,
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
            "input" => Source::Input,
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

    fn step(self, run: StepFn) -> Step {
        Step {
            name: self.op.to_string(),
            reads: self.reads,
            writes: self.writes,
            run,
        }
    }
}

/// The step for one recorded call: the entries an inference forward makes. Anything else is an
/// Error (the tracer falls back to running the model eagerly).
fn build_step(op: &str, args: &[Value]) -> napi::Result<Step> {
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
            Box::new(move |r, o| conv::conv2d_forward(&p, r[x], r[w], b.map(|b| r[b]), o[0], algo))
        }
        "conv2dForwardFused" => {
            let (x, w) = (a.read(0)?, a.read(1)?);
            let (scale, shift, residual) = (a.read_opt(2)?, a.read_opt(3)?, a.read_opt(4)?);
            let relu: bool = a.parse(5)?;
            a.write(6)?;
            let (p, algo) = conv_params(&a.parse::<Conv2dArgs>(7)?)?;
            Box::new(move |r, o| {
                let epilogue = conv::Epilogue {
                    scale: scale.map(|k| r[k]),
                    shift: shift.map(|k| r[k]),
                    residual: residual.map(|k| r[k]),
                    relu,
                };
                conv::conv2d_forward_fused(&p, r[x], r[w], &epilogue, o[0], algo)
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
            Box::new(move |r, o| {
                linear::linear_forward(batch, i, n, r[x], r[w], b.map(|b| r[b]), o[0])
            })
        }
        "activationForward" => {
            let kind: String = a.parse(0)?;
            let slope: Option<f64> = a.args.get(3).map(|_| a.parse(3)).transpose()?.flatten();
            let act = Activation::parse(&kind, slope).map_err(kernel_err)?;
            let x = a.read(1)?;
            a.write(2)?;
            Box::new(move |r, o| activation::activation_forward(act, r[x], o[0]))
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
        "scale" => {
            let x = a.read(0)?;
            let factor: f64 = a.parse(1)?;
            a.write(2)?;
            Box::new(move |r, o| elementwise::scale(r[x], factor, o[0]))
        }
        other => return Err(invalid(format!("{other}: no plan step for this entry"))),
    };
    Ok(a.step(run))
}

struct Shared {
    plan: Plan,
    /// The arena of the last finished run, kept for the next (a run that finds it taken by a
    /// concurrent one makes its own).
    arena: Mutex<Option<Vec<f32>>>,
}

/// A model's forward for one input shape, compiled: the kernel calls of one traced eager
/// forward over a planned arena. `run` computes it off the JavaScript thread.
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
        let spec: PlanSpec =
            serde_json::from_str(&spec).map_err(|e| invalid(format!("CompiledPlan: {e}")))?;
        let steps = spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                build_step(&s.op, &s.args).map_err(|e| {
                    invalid(format!("CompiledPlan: step {i} ({}): {}", s.op, e.reason))
                })
            })
            .collect::<napi::Result<Vec<_>>>()?;
        let output = spec
            .output
            .operand()
            .map_err(|e| invalid(format!("CompiledPlan: {}", e.reason)))?;
        let plan = Plan::new(
            spec.input_len,
            spec.state_lens,
            spec.temp_lens,
            steps,
            output,
        )
        .map_err(|e| invalid(format!("CompiledPlan: {e}")))?;
        Ok(CompiledPlan {
            shared: Arc::new(Shared {
                plan,
                arena: Mutex::new(None),
            }),
        })
    }

    /// Bytes of the arena a run uses for the intermediate values.
    #[napi(getter)]
    pub fn arena_bytes(&self) -> f64 {
        (self.shared.plan.arena_len() * 4) as f64
    }

    /// Frees the arena kept from the last run (the next run allocates a new one): for plans the
    /// cache lets go of, so their memory does not wait for the garbage collector.
    #[napi]
    pub fn release_arena(&self) {
        if let Ok(mut slot) = self.shared.arena.lock() {
            *slot = None;
        }
    }

    /// Kernel calls per run.
    #[napi(getter)]
    pub fn steps(&self) -> u32 {
        self.shared.plan.steps() as u32
    }

    /// Floats of the output a run writes.
    #[napi(getter)]
    pub fn output_len(&self) -> f64 {
        self.shared.plan.output_len() as f64
    }

    /// Runs the plan on `input` with the model's current `state` arrays (in the order of the
    /// trace) and writes the result into `output`, on the kernel pool off the JavaScript thread.
    /// The arrays must not be changed until the promise settles (the TypeScript side copies a
    /// state array on write while a run holds it).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn run<'env>(
        &self,
        env: &'env Env,
        input: Float32Array,
        state: Vec<Float32Array>,
        output: Float32Array,
    ) -> napi::Result<Object<'env>> {
        self.shared
            .plan
            .check_args(input.len(), state.iter().map(|s| s.len()), output.len())
            .map_err(|e| invalid(format!("CompiledPlan.run: {e}")))?;
        // Named without an index: the name is only for the error, and building one string per
        // state array on every run would cost more than the check.
        let mut named = vec![("input", &input)];
        named.extend(state.iter().map(|s| ("a state array", s)));
        crate::args::check_disjoint("output", &output, &named)?;
        let mut job = PlanRun {
            shared: self.shared.clone(),
            input,
            state,
            output,
        };
        let pool = crate::runtime::pool()?;
        let (deferred, promise) = env.create_deferred::<(), fn(Env) -> napi::Result<()>>()?;
        // Spawned on the kernel pool itself rather than run from libuv's thread pool (an
        // AsyncTask), whose four threads file system and DNS calls share: concurrent predicts
        // would otherwise hold them all while they wait for the kernels.
        pool.spawn(move || {
            match crate::runtime::caught("CompiledPlan.run", || job.compute()) {
                Ok(Ok(())) => deferred.resolve(|_| Ok(())),
                Ok(Err(e)) | Err(e) => deferred.reject(e),
            }
            // The typed arrays' references are released from here through napi-rs's
            // thread-safe path.
            drop(job);
        });
        Ok(promise)
    }
}

/// One run of a [`CompiledPlan`], computed on a kernel thread.
struct PlanRun {
    shared: Arc<Shared>,
    input: Float32Array,
    state: Vec<Float32Array>,
    output: Float32Array,
}

impl PlanRun {
    fn compute(&mut self) -> napi::Result<()> {
        let plan = &self.shared.plan;
        let taken = self.shared.arena.lock().ok().and_then(|mut a| a.take());
        let mut arena = match taken {
            Some(a) if a.len() == plan.arena_len() => a,
            _ => plan.new_arena(),
        };
        let views: Vec<&[f32]> = self.state.iter().map(|s| &s[..]).collect();
        // SAFETY: the output is disjoint from the input and the state (checked in `run`), and
        // the TypeScript side neither reads nor writes any of these arrays until the promise
        // settles; the napi references keep them alive.
        let output = unsafe { self.output.as_mut() };
        plan.run(&mut arena, &self.input, &views, output)
            .map_err(|e| invalid(format!("CompiledPlan.run: {e}")))?;
        if let Ok(mut slot) = self.shared.arena.lock() {
            *slot = Some(arena);
        }
        Ok(())
    }
}
