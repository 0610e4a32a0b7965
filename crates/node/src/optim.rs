//! Optimizer entries: one parameter's update in place (the loop of torch.optim.SGD.step()).
use crate::args::{check_disjoint, kernel_err};
use crate::runtime::run;
use ferroconv_kernels::optim::{self, SgdParams};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// Hyper-parameters of one SGD update; lr and weightDecay already include lrMult/decayMult.
#[napi(object, js_name = "SgdStepArgs")]
pub struct SgdStepArgs {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub maximize: bool,
    /// The momentum buffer was just created: it is set to the gradient, not blended with it.
    pub first_step: bool,
}

/// param (in place) <- one torch.optim.SGD step from grad; momentumBuffer (in place) is the
/// velocity when momentum > 0 and must be null when it is 0. Bit-identical to the TypeScript
/// rounding in src/optim/float32.ts.
#[napi(catch_unwind, js_name = "sgdStep")]
pub fn sgd_step(
    mut param: Float32Array,
    grad: Float32Array,
    mut momentum_buffer: Option<Float32Array>,
    args: SgdStepArgs,
) -> napi::Result<()> {
    check_disjoint("param", &param, &[("grad", &grad)])?;
    if let Some(b) = &momentum_buffer {
        check_disjoint("momentumBuffer", b, &[("grad", &grad), ("param", &param)])?;
    }
    let p = SgdParams {
        lr: args.lr,
        weight_decay: args.weight_decay,
        momentum: args.momentum,
        dampening: args.dampening,
        nesterov: args.nesterov,
        maximize: args.maximize,
        first_step: args.first_step,
    };
    // SAFETY: param and the buffer are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, bm) = unsafe { (param.as_mut(), momentum_buffer.as_mut().map(|b| b.as_mut())) };
    run("sgdStep", || optim::sgd_step(&p, pm, &grad, bm))?.map_err(kernel_err)
}
