//! Optimizer entries: one parameter's update in place (the loops of torch.optim's step()).
use crate::args::size;
use crate::args::{check_disjoint, kernel_err};
use crate::runtime::run;
use ferroconv_kernels::optim::{
    self, AdadeltaParams, AdagradParams, AdamParams, RmspropParams, SgdParams,
};
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// Hyper-parameters of one SGD update; lr and weightDecay already include lrMult/decayMult.
#[napi(object, js_name = "SgdStepArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
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
    let p = sgd_params(&args);
    // SAFETY: param and the buffer are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, bm) = unsafe { (param.as_mut(), momentum_buffer.as_mut().map(|b| b.as_mut())) };
    run("sgdStep", || optim::sgd_step(&p, pm, &grad, bm))?.map_err(kernel_err)
}

/// Fails unless the state buffers being updated share no memory with the gradient or with each
/// other (`bufs` in order: each is checked against grad and the ones before it).
fn check_state_disjoint(
    grad: &Float32Array,
    bufs: &[(&str, Option<&Float32Array>)],
) -> napi::Result<()> {
    let present: Vec<(&str, &Float32Array)> = bufs
        .iter()
        .filter_map(|&(n, b)| b.map(|b| (n, b)))
        .collect();
    for (i, &(name, b)) in present.iter().enumerate() {
        let mut others = vec![("grad", grad)];
        others.extend_from_slice(&present[..i]);
        check_disjoint(name, b, &others)?;
    }
    Ok(())
}

/// Hyper-parameters of one Adam/AdamW update; lr and weightDecay already include
/// lrMult/decayMult.
#[napi(object, js_name = "AdamStepArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdamStepArgs {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub amsgrad: bool,
    pub maximize: bool,
    /// AdamW's decoupled weight decay (the weights shrink) instead of Adam's L2 term.
    pub decoupled: bool,
    /// 1 - beta1 ** step and 1 - beta2 ** step, as JavaScript computes them.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

/// param, expAvg, expAvgSq and (amsgrad) maxExpAvgSq, all in place <- one torch.optim.Adam
/// (or, decoupled, AdamW) step from grad; maxExpAvgSq must be null without amsgrad.
/// Bit-identical to the TypeScript rounding in src/optim/float32.ts.
#[napi(catch_unwind, js_name = "adamStep")]
pub fn adam_step(
    mut param: Float32Array,
    grad: Float32Array,
    mut exp_avg: Float32Array,
    mut exp_avg_sq: Float32Array,
    mut max_exp_avg_sq: Option<Float32Array>,
    args: AdamStepArgs,
) -> napi::Result<()> {
    check_state_disjoint(
        &grad,
        &[
            ("param", Some(&param)),
            ("expAvg", Some(&exp_avg)),
            ("expAvgSq", Some(&exp_avg_sq)),
            ("maxExpAvgSq", max_exp_avg_sq.as_ref()),
        ],
    )?;
    let p = adam_params(&args);
    // SAFETY: the buffers written are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, m, v, mx) = unsafe {
        (
            param.as_mut(),
            exp_avg.as_mut(),
            exp_avg_sq.as_mut(),
            max_exp_avg_sq.as_mut().map(|b| b.as_mut()),
        )
    };
    run("adamStep", || optim::adam_step(&p, pm, &grad, m, v, mx))?.map_err(kernel_err)
}

/// Hyper-parameters of one RMSprop update; lr and weightDecay already include lrMult/decayMult.
#[napi(object, js_name = "RmspropStepArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RmspropStepArgs {
    pub lr: f64,
    pub weight_decay: f64,
    pub alpha: f64,
    pub eps: f64,
    pub momentum: f64,
    pub centered: bool,
    pub maximize: bool,
}

/// param, squareAvg, gradAvg (centered only, else null) and momentumBuffer (momentum > 0 only,
/// else null), all in place <- one torch.optim.RMSprop step from grad. Bit-identical to the
/// TypeScript rounding in src/optim/float32.ts.
#[napi(catch_unwind, js_name = "rmspropStep")]
pub fn rmsprop_step(
    mut param: Float32Array,
    grad: Float32Array,
    mut square_avg: Float32Array,
    mut grad_avg: Option<Float32Array>,
    mut momentum_buffer: Option<Float32Array>,
    args: RmspropStepArgs,
) -> napi::Result<()> {
    check_state_disjoint(
        &grad,
        &[
            ("param", Some(&param)),
            ("squareAvg", Some(&square_avg)),
            ("gradAvg", grad_avg.as_ref()),
            ("momentumBuffer", momentum_buffer.as_ref()),
        ],
    )?;
    let p = rmsprop_params(&args);
    // SAFETY: the buffers written are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, sq, ga, b) = unsafe {
        (
            param.as_mut(),
            square_avg.as_mut(),
            grad_avg.as_mut().map(|b| b.as_mut()),
            momentum_buffer.as_mut().map(|b| b.as_mut()),
        )
    };
    run("rmspropStep", || {
        optim::rmsprop_step(&p, pm, &grad, sq, ga, b)
    })?
    .map_err(kernel_err)
}

/// Hyper-parameters of one Adagrad update; lr and weightDecay already include lrMult/decayMult.
#[napi(object, js_name = "AdagradStepArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdagradStepArgs {
    pub lr: f64,
    pub weight_decay: f64,
    pub lr_decay: f64,
    pub eps: f64,
    pub maximize: bool,
    /// This update's number, from 1.
    pub step: f64,
}

/// param and sum (in place) <- one torch.optim.Adagrad step from grad. Bit-identical to the
/// TypeScript rounding in src/optim/float32.ts.
#[napi(catch_unwind, js_name = "adagradStep")]
pub fn adagrad_step(
    mut param: Float32Array,
    grad: Float32Array,
    mut sum: Float32Array,
    args: AdagradStepArgs,
) -> napi::Result<()> {
    check_state_disjoint(&grad, &[("param", Some(&param)), ("sum", Some(&sum))])?;
    let p = adagrad_params(&args)?;
    // SAFETY: the buffers written are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, sm) = unsafe { (param.as_mut(), sum.as_mut()) };
    run("adagradStep", || optim::adagrad_step(&p, pm, &grad, sm))?.map_err(kernel_err)
}

/// Hyper-parameters of one Adadelta update; lr and weightDecay already include
/// lrMult/decayMult.
#[napi(object, js_name = "AdadeltaStepArgs")]
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdadeltaStepArgs {
    pub lr: f64,
    pub weight_decay: f64,
    pub rho: f64,
    pub eps: f64,
    pub maximize: bool,
}

/// param, squareAvg and accDelta (in place) <- one torch.optim.Adadelta step from grad.
/// Bit-identical to the TypeScript rounding in src/optim/float32.ts.
#[napi(catch_unwind, js_name = "adadeltaStep")]
pub fn adadelta_step(
    mut param: Float32Array,
    grad: Float32Array,
    mut square_avg: Float32Array,
    mut acc_delta: Float32Array,
    args: AdadeltaStepArgs,
) -> napi::Result<()> {
    check_state_disjoint(
        &grad,
        &[
            ("param", Some(&param)),
            ("squareAvg", Some(&square_avg)),
            ("accDelta", Some(&acc_delta)),
        ],
    )?;
    let p = adadelta_params(&args);
    // SAFETY: the buffers written are disjoint from grad and from each other (checked above);
    // the JavaScript thread waits on this call.
    let (pm, sq, acc) = unsafe { (param.as_mut(), square_avg.as_mut(), acc_delta.as_mut()) };
    run("adadeltaStep", || {
        optim::adadelta_step(&p, pm, &grad, sq, acc)
    })?
    .map_err(kernel_err)
}

pub(crate) fn sgd_params(a: &SgdStepArgs) -> SgdParams {
    SgdParams {
        lr: a.lr,
        weight_decay: a.weight_decay,
        momentum: a.momentum,
        dampening: a.dampening,
        nesterov: a.nesterov,
        maximize: a.maximize,
        first_step: a.first_step,
    }
}

pub(crate) fn adam_params(a: &AdamStepArgs) -> AdamParams {
    AdamParams {
        lr: a.lr,
        weight_decay: a.weight_decay,
        beta1: a.beta1,
        beta2: a.beta2,
        eps: a.eps,
        amsgrad: a.amsgrad,
        maximize: a.maximize,
        decoupled: a.decoupled,
        bias_correction1: a.bias_correction1,
        bias_correction2: a.bias_correction2,
    }
}

pub(crate) fn rmsprop_params(a: &RmspropStepArgs) -> RmspropParams {
    RmspropParams {
        lr: a.lr,
        weight_decay: a.weight_decay,
        alpha: a.alpha,
        eps: a.eps,
        momentum: a.momentum,
        centered: a.centered,
        maximize: a.maximize,
    }
}

pub(crate) fn adagrad_params(a: &AdagradStepArgs) -> napi::Result<AdagradParams> {
    Ok(AdagradParams {
        lr: a.lr,
        weight_decay: a.weight_decay,
        lr_decay: a.lr_decay,
        eps: a.eps,
        maximize: a.maximize,
        step: size("step", a.step)? as u64,
    })
}

pub(crate) fn adadelta_params(a: &AdadeltaStepArgs) -> AdadeltaParams {
    AdadeltaParams {
        lr: a.lr,
        weight_decay: a.weight_decay,
        rho: a.rho,
        eps: a.eps,
        maximize: a.maximize,
    }
}
