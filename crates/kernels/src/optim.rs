//! Optimizer updates over one parameter tensor, in place: the inner loops of
//! `torch.optim.{SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta}.step()` (PyTorch 1.13,
//! single-tensor path), parallel and vectorised.
//!
//! The TypeScript optimizers round exactly where torch's float32 kernels round (see
//! src/optim/float32.ts): `x.add_(y, alpha=a)` is `x + f32(a) * y` computed exactly and rounded
//! once to float32. The product of two float32 values is exact in f64, so doing the sum in f64
//! and rounding to f32 reproduces the JavaScript results bit for bit on every path (Rust never
//! contracts a multiply and an add into an FMA on its own, so the AVX2 build agrees too).
use crate::error::check_len;
use crate::simd::kernel;
use crate::{bail, simd, Result};
use rayon::prelude::*;

/// Elements per parallel task: large enough that a task costs more than scheduling it.
const CHUNK: usize = 1 << 15;

/// Hyper-parameters of one SGD update (the group's values with lrMult/decayMult applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub maximize: bool,
    /// The momentum buffer is new: it starts as the (decayed) gradient itself, undampened.
    pub first_step: bool,
}

/// The scalars of an update, already rounded to float32 as torch sees Python floats.
#[derive(Clone, Copy)]
struct SgdScalars {
    neg_lr: f32,
    /// Whether to decay at all, decided on the unrounded value as the TypeScript loop does.
    decay: bool,
    weight_decay: f32,
    momentum: f32,
    keep: f32,
    nesterov: bool,
    maximize: bool,
    first_step: bool,
}

/// `x.add_(y, alpha=a)`: x + a * y, the product exact, one rounding (as float32.ts addScaled).
#[inline(always)]
fn add_scaled(x: f32, a: f32, y: f32) -> f32 {
    (x as f64 + a as f64 * y as f64) as f32
}

/// `x.addcmul_(t1, t2, value=v)`: x + (v * t1) * t2, v * t1 rounded, the rest fused (as
/// float32.ts addcmul).
#[inline(always)]
fn addcmul(x: f32, v: f32, t1: f32, t2: f32) -> f32 {
    (x as f64 + (v * t1) as f64 * t2 as f64) as f32
}

/// `x.addcdiv_(t1, t2, value=v)`: x + (v * t1) / t2 rounding after each operation (as
/// float32.ts addcdiv). A float32 operation is the double one rounded to float32 (double has
/// more than twice float32's precision), so plain f32 arithmetic is the JavaScript result;
/// the same holds for `sqrt` and for the `mulScalar`/`addScalar`/`divScalar` helpers.
#[inline(always)]
fn addcdiv(x: f32, v: f32, t1: f32, t2: f32) -> f32 {
    x + v * t1 / t2
}

/// Fails unless `v` is a number >= 0 (infinity passes: the TypeScript checks allow it).
fn check_non_negative(name: &str, v: f64) -> Result<()> {
    if v.is_nan() || v < 0.0 {
        bail!("{name}: expected a non-negative number, got {v}");
    }
    Ok(())
}

/// `b` cut like the parameter into `CHUNK`-sized pieces, or `chunks` Nones when absent, to zip
/// with the other buffers in a parallel loop.
fn optional_chunks(b: Option<&mut [f32]>, chunks: usize) -> Vec<Option<&mut [f32]>> {
    match b {
        Some(b) => b.chunks_mut(CHUNK).map(Some).collect(),
        None => (0..chunks).map(|_| None).collect(),
    }
}

kernel! {
    fn sgd_chunk(p: &mut [f32], g: &[f32], s: SgdScalars) {
        for (pv, &gv) in p.iter_mut().zip(g) {
            let mut d = if s.maximize { -gv } else { gv };
            if s.decay {
                d = add_scaled(d, s.weight_decay, *pv);
            }
            *pv = add_scaled(*pv, s.neg_lr, d);
        }
    }
}

kernel! {
    fn sgd_momentum_chunk(p: &mut [f32], g: &[f32], buf: &mut [f32], s: SgdScalars) {
        for ((pv, &gv), bv) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
            let mut d = if s.maximize { -gv } else { gv };
            if s.decay {
                d = add_scaled(d, s.weight_decay, *pv);
            }
            *bv = if s.first_step {
                d
            } else {
                add_scaled(*bv * s.momentum, s.keep, d)
            };
            d = if s.nesterov {
                add_scaled(d, s.momentum, *bv)
            } else {
                *bv
            };
            *pv = add_scaled(*pv, s.neg_lr, d);
        }
    }
}

/// One SGD step on `param` in place, from `grad`, as torch.optim.SGD: with momentum > 0,
/// `momentum_buffer` (same length) is the velocity, updated in place (`first_step`: it is set
/// to the gradient). Without momentum the buffer must be None.
pub fn sgd_step(
    p: &SgdParams,
    param: &mut [f32],
    grad: &[f32],
    momentum_buffer: Option<&mut [f32]>,
) -> Result<()> {
    for (name, v) in [
        ("lr", p.lr),
        ("weightDecay", p.weight_decay),
        ("momentum", p.momentum),
    ] {
        if v.is_nan() || v < 0.0 {
            bail!("{name}: expected a non-negative number, got {v}");
        }
    }
    if p.dampening.is_nan() {
        bail!("dampening: expected a number, got NaN");
    }
    if p.nesterov && (p.momentum <= 0.0 || p.dampening != 0.0) {
        bail!(
            "nesterov: needs momentum > 0 and dampening 0, got momentum {} and dampening {}",
            p.momentum,
            p.dampening
        );
    }
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    let s = SgdScalars {
        neg_lr: -(p.lr as f32),
        decay: p.weight_decay != 0.0,
        weight_decay: p.weight_decay as f32,
        momentum: p.momentum as f32,
        keep: (1.0 - p.dampening) as f32,
        nesterov: p.nesterov,
        maximize: p.maximize,
        first_step: p.first_step,
    };
    let isa = simd::isa();
    match (p.momentum != 0.0, momentum_buffer) {
        (true, Some(buf)) => {
            check_len("momentumBuffer", buf.len(), n)?;
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(buf.par_chunks_mut(CHUNK))
                .for_each(|((pc, gc), bc)| sgd_momentum_chunk(isa, pc, gc, bc, s));
        }
        (true, None) => bail!("momentumBuffer: expected {n} elements (momentum > 0), got none"),
        (false, Some(_)) => bail!("momentumBuffer: expected none (momentum is 0), got a buffer"),
        (false, None) => {
            param
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .for_each(|(pc, gc)| sgd_chunk(isa, pc, gc, s));
        }
    }
    Ok(())
}

/// Hyper-parameters of one Adam or AdamW update (the group's values with lrMult/decayMult applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub amsgrad: bool,
    pub maximize: bool,
    /// AdamW: the weights shrink by lr * weightDecay; Adam: weightDecay * param joins the gradient.
    pub decoupled: bool,
    /// `1 - beta1^step` and `1 - beta2^step` for this step, computed by the caller: the results
    /// are defined by JavaScript's `**`, and libm's `pow` may differ from it in the last bit.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

#[derive(Clone, Copy)]
struct AdamScalars {
    maximize: bool,
    decoupled: bool,
    decay: bool,
    weight_decay: f32,
    /// 1 - lr * weightDecay (AdamW).
    keep: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

/// One element of torch's _single_tensor_adam/_adamw (as src/optim/adam.ts did it).
#[inline(always)]
fn adam_element(
    p: &mut f32,
    g: f32,
    m: &mut f32,
    v: &mut f32,
    max_v: Option<&mut f32>,
    s: &AdamScalars,
) {
    let mut g = if s.maximize { -g } else { g };
    if s.decoupled {
        *p *= s.keep;
    } else if s.decay {
        g = add_scaled(g, s.weight_decay, *p);
    }
    *m = add_scaled(*m * s.beta1, s.one_minus_beta1, g);
    *v = addcmul(*v * s.beta2, s.one_minus_beta2, g, g);
    let second = match max_v {
        Some(mx) => {
            if *v > *mx || v.is_nan() {
                *mx = *v;
            }
            *mx
        }
        None => *v,
    };
    let denom = second.sqrt() / s.bias_correction2_sqrt + s.eps;
    *p = addcdiv(*p, s.neg_step_size, *m, denom);
}

kernel! {
    fn adam_chunk(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        max_v: Option<&mut [f32]>,
        s: AdamScalars,
    ) {
        let pgmv = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
        match max_v {
            None => {
                for (((pv, &gv), mv), vv) in pgmv {
                    adam_element(pv, gv, mv, vv, None, &s);
                }
            }
            Some(max_v) => {
                for ((((pv, &gv), mv), vv), xv) in pgmv.zip(max_v.iter_mut()) {
                    adam_element(pv, gv, mv, vv, Some(xv), &s);
                }
            }
        }
    }
}

/// One Adam (or, `decoupled`, AdamW) step on `param` in place, from `grad`, as torch.optim.Adam
/// and AdamW: `exp_avg` and `exp_avg_sq` (same length) are the moments, updated in place;
/// `max_exp_avg_sq` is the running maximum of the second moment with `amsgrad`, None without.
pub fn adam_step(
    p: &AdamParams,
    param: &mut [f32],
    grad: &[f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    max_exp_avg_sq: Option<&mut [f32]>,
) -> Result<()> {
    check_non_negative("lr", p.lr)?;
    check_non_negative("weightDecay", p.weight_decay)?;
    check_non_negative("eps", p.eps)?;
    for (name, b) in [("betas[0]", p.beta1), ("betas[1]", p.beta2)] {
        if !(0.0..1.0).contains(&b) {
            bail!("{name}: expected a number in [0, 1), got {b}");
        }
    }
    for (name, c) in [
        ("biasCorrection1", p.bias_correction1),
        ("biasCorrection2", p.bias_correction2),
    ] {
        if !(c > 0.0 && c <= 1.0) {
            bail!("{name}: expected a number in (0, 1], got {c}");
        }
    }
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    check_len("expAvg", exp_avg.len(), n)?;
    check_len("expAvgSq", exp_avg_sq.len(), n)?;
    match (&max_exp_avg_sq, p.amsgrad) {
        (Some(b), true) => check_len("maxExpAvgSq", b.len(), n)?,
        (None, true) => bail!("maxExpAvgSq: expected {n} elements (amsgrad), got none"),
        (Some(_), false) => bail!("maxExpAvgSq: expected none (amsgrad is off), got a buffer"),
        (None, false) => {}
    }
    // The scalars as src/optim/adam.ts computed them in double before they met the tensors.
    let s = AdamScalars {
        maximize: p.maximize,
        decoupled: p.decoupled,
        decay: p.weight_decay != 0.0,
        weight_decay: p.weight_decay as f32,
        keep: (1.0 - p.lr * p.weight_decay) as f32,
        beta1: p.beta1 as f32,
        one_minus_beta1: (1.0 - p.beta1) as f32,
        beta2: p.beta2 as f32,
        one_minus_beta2: (1.0 - p.beta2) as f32,
        bias_correction2_sqrt: p.bias_correction2.sqrt() as f32,
        eps: p.eps as f32,
        neg_step_size: (-(p.lr / p.bias_correction1)) as f32,
    };
    let isa = simd::isa();
    let max_chunks = optional_chunks(max_exp_avg_sq, n.div_ceil(CHUNK));
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(exp_avg.par_chunks_mut(CHUNK))
        .zip(exp_avg_sq.par_chunks_mut(CHUNK))
        .zip(max_chunks)
        .for_each(|((((pc, gc), mc), vc), xc)| adam_chunk(isa, pc, gc, mc, vc, xc, s));
    Ok(())
}

/// The gradient as the update sees it: negated with `maximize`, plus L2 decay when `decay`.
#[inline(always)]
fn decayed_grad(g: f32, p: f32, maximize: bool, decay: bool, weight_decay: f32) -> f32 {
    let g = if maximize { -g } else { g };
    if decay {
        add_scaled(g, weight_decay, p)
    } else {
        g
    }
}

/// Hyper-parameters of one RMSprop update (the group's values with lrMult/decayMult applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmspropParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub alpha: f64,
    pub eps: f64,
    pub momentum: f64,
    pub centered: bool,
    pub maximize: bool,
}

#[derive(Clone, Copy)]
struct RmspropScalars {
    maximize: bool,
    decay: bool,
    weight_decay: f32,
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    momentum: f32,
    neg_lr: f32,
}

/// One element of torch's _single_tensor_rmsprop (as src/optim/rmsprop.ts did it).
#[inline(always)]
fn rmsprop_element(
    p: &mut f32,
    g: f32,
    sq: &mut f32,
    grad_avg: Option<&mut f32>,
    buf: Option<&mut f32>,
    s: &RmspropScalars,
) {
    let g = decayed_grad(g, *p, s.maximize, s.decay, s.weight_decay);
    *sq = addcmul(*sq * s.alpha, s.one_minus_alpha, g, g);
    let avg = match grad_avg {
        Some(ga) => {
            *ga = add_scaled(*ga * s.alpha, s.one_minus_alpha, g);
            addcmul(*sq, -1.0, *ga, *ga).sqrt()
        }
        None => sq.sqrt(),
    } + s.eps;
    match buf {
        Some(b) => {
            *b = addcdiv(*b * s.momentum, 1.0, g, avg);
            *p = add_scaled(*p, s.neg_lr, *b);
        }
        None => *p = addcdiv(*p, s.neg_lr, g, avg),
    }
}

kernel! {
    fn rmsprop_chunk(
        p: &mut [f32],
        g: &[f32],
        sq: &mut [f32],
        grad_avg: Option<&mut [f32]>,
        buf: Option<&mut [f32]>,
        s: RmspropScalars,
    ) {
        let psq = p.iter_mut().zip(g).zip(sq.iter_mut());
        match (grad_avg, buf) {
            (None, None) => {
                for ((pv, &gv), qv) in psq {
                    rmsprop_element(pv, gv, qv, None, None, &s);
                }
            }
            (Some(ga), None) => {
                for (((pv, &gv), qv), av) in psq.zip(ga.iter_mut()) {
                    rmsprop_element(pv, gv, qv, Some(av), None, &s);
                }
            }
            (None, Some(b)) => {
                for (((pv, &gv), qv), bv) in psq.zip(b.iter_mut()) {
                    rmsprop_element(pv, gv, qv, None, Some(bv), &s);
                }
            }
            (Some(ga), Some(b)) => {
                for ((((pv, &gv), qv), av), bv) in psq.zip(ga.iter_mut()).zip(b.iter_mut()) {
                    rmsprop_element(pv, gv, qv, Some(av), Some(bv), &s);
                }
            }
        }
    }
}

/// One RMSprop step on `param` in place, from `grad`, as torch.optim.RMSprop: `square_avg` is
/// the running mean square; `grad_avg` the running mean (with `centered`, else None);
/// `momentum_buffer` the velocity (with momentum > 0, else None). All updated in place.
pub fn rmsprop_step(
    p: &RmspropParams,
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    grad_avg: Option<&mut [f32]>,
    momentum_buffer: Option<&mut [f32]>,
) -> Result<()> {
    for (name, v) in [
        ("lr", p.lr),
        ("weightDecay", p.weight_decay),
        ("alpha", p.alpha),
        ("eps", p.eps),
        ("momentum", p.momentum),
    ] {
        check_non_negative(name, v)?;
    }
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    check_len("squareAvg", square_avg.len(), n)?;
    check_optional("gradAvg", grad_avg.as_deref(), p.centered, "centered", n)?;
    check_optional(
        "momentumBuffer",
        momentum_buffer.as_deref(),
        p.momentum > 0.0,
        "momentum > 0",
        n,
    )?;
    let s = RmspropScalars {
        maximize: p.maximize,
        decay: p.weight_decay != 0.0,
        weight_decay: p.weight_decay as f32,
        alpha: p.alpha as f32,
        one_minus_alpha: (1.0 - p.alpha) as f32,
        eps: p.eps as f32,
        momentum: p.momentum as f32,
        neg_lr: -(p.lr as f32),
    };
    let isa = simd::isa();
    let chunks = n.div_ceil(CHUNK);
    let avg_chunks = optional_chunks(grad_avg, chunks);
    let buf_chunks = optional_chunks(momentum_buffer, chunks);
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(square_avg.par_chunks_mut(CHUNK))
        .zip(avg_chunks)
        .zip(buf_chunks)
        .for_each(|((((pc, gc), qc), ac), bc)| rmsprop_chunk(isa, pc, gc, qc, ac, bc, s));
    Ok(())
}

/// Checks an optional state buffer: `n` elements when `wanted` (because of `why`), else absent.
fn check_optional(name: &str, b: Option<&[f32]>, wanted: bool, why: &str, n: usize) -> Result<()> {
    match (b, wanted) {
        (Some(b), true) => check_len(name, b.len(), n),
        (None, true) => bail!("{name}: expected {n} elements ({why}), got none"),
        (Some(_), false) => bail!("{name}: expected none (not {why}), got a buffer"),
        (None, false) => Ok(()),
    }
}

/// Hyper-parameters of one Adagrad update (the group's values with lrMult/decayMult applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub lr_decay: f64,
    pub eps: f64,
    pub maximize: bool,
    /// This update's number, from 1: the effective lr is lr / (1 + (step - 1) * lrDecay).
    pub step: u64,
}

#[derive(Clone, Copy)]
struct AdagradScalars {
    maximize: bool,
    decay: bool,
    weight_decay: f32,
    eps: f32,
    neg_clr: f32,
}

kernel! {
    fn adagrad_chunk(p: &mut [f32], g: &[f32], sum: &mut [f32], s: AdagradScalars) {
        for ((pv, &gv), sv) in p.iter_mut().zip(g).zip(sum.iter_mut()) {
            let g = decayed_grad(gv, *pv, s.maximize, s.decay, s.weight_decay);
            *sv = addcmul(*sv, 1.0, g, g);
            let std = sv.sqrt() + s.eps;
            *pv = addcdiv(*pv, s.neg_clr, g, std);
        }
    }
}

/// One Adagrad step on `param` in place, from `grad`, as torch.optim.Adagrad (dense): `sum`
/// accumulates the squared gradients in place (the caller fills it with
/// initialAccumulatorValue before the first step).
pub fn adagrad_step(
    p: &AdagradParams,
    param: &mut [f32],
    grad: &[f32],
    sum: &mut [f32],
) -> Result<()> {
    for (name, v) in [
        ("lr", p.lr),
        ("weightDecay", p.weight_decay),
        ("lrDecay", p.lr_decay),
        ("eps", p.eps),
    ] {
        check_non_negative(name, v)?;
    }
    if p.step == 0 || p.step > 1 << 53 {
        bail!("step: expected an integer in 1..2^53, got {}", p.step);
    }
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    check_len("sum", sum.len(), n)?;
    let s = AdagradScalars {
        maximize: p.maximize,
        decay: p.weight_decay != 0.0,
        weight_decay: p.weight_decay as f32,
        eps: p.eps as f32,
        neg_clr: (-(p.lr / (1.0 + (p.step - 1) as f64 * p.lr_decay))) as f32,
    };
    let isa = simd::isa();
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(sum.par_chunks_mut(CHUNK))
        .for_each(|((pc, gc), sc)| adagrad_chunk(isa, pc, gc, sc, s));
    Ok(())
}

/// Hyper-parameters of one Adadelta update (the group's values with lrMult/decayMult applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdadeltaParams {
    pub lr: f64,
    pub weight_decay: f64,
    pub rho: f64,
    pub eps: f64,
    pub maximize: bool,
}

#[derive(Clone, Copy)]
struct AdadeltaScalars {
    maximize: bool,
    decay: bool,
    weight_decay: f32,
    rho: f32,
    one_minus_rho: f32,
    eps: f32,
    neg_lr: f32,
}

kernel! {
    fn adadelta_chunk(
        p: &mut [f32],
        g: &[f32],
        square_avg: &mut [f32],
        acc_delta: &mut [f32],
        s: AdadeltaScalars,
    ) {
        let it = p.iter_mut().zip(g).zip(square_avg.iter_mut()).zip(acc_delta.iter_mut());
        for (((pv, &gv), sq), acc) in it {
            let g = decayed_grad(gv, *pv, s.maximize, s.decay, s.weight_decay);
            *sq = addcmul(*sq * s.rho, s.one_minus_rho, g, g);
            let std = (*sq + s.eps).sqrt();
            let delta = (*acc + s.eps).sqrt() / std * g;
            *acc = addcmul(*acc * s.rho, s.one_minus_rho, delta, delta);
            *pv = add_scaled(*pv, s.neg_lr, delta);
        }
    }
}

/// One Adadelta step on `param` in place, from `grad`, as torch.optim.Adadelta: `square_avg`
/// and `acc_delta` (same length) are the running averages of squared gradients and squared
/// updates, updated in place.
pub fn adadelta_step(
    p: &AdadeltaParams,
    param: &mut [f32],
    grad: &[f32],
    square_avg: &mut [f32],
    acc_delta: &mut [f32],
) -> Result<()> {
    for (name, v) in [
        ("lr", p.lr),
        ("weightDecay", p.weight_decay),
        ("eps", p.eps),
    ] {
        check_non_negative(name, v)?;
    }
    if !(0.0..=1.0).contains(&p.rho) {
        bail!("rho: expected a number in [0, 1], got {}", p.rho);
    }
    let n = param.len();
    check_len("grad", grad.len(), n)?;
    check_len("squareAvg", square_avg.len(), n)?;
    check_len("accDelta", acc_delta.len(), n)?;
    let s = AdadeltaScalars {
        maximize: p.maximize,
        decay: p.weight_decay != 0.0,
        weight_decay: p.weight_decay as f32,
        rho: p.rho as f32,
        one_minus_rho: (1.0 - p.rho) as f32,
        eps: p.eps as f32,
        neg_lr: -(p.lr as f32),
    };
    let isa = simd::isa();
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(square_avg.par_chunks_mut(CHUNK))
        .zip(acc_delta.par_chunks_mut(CHUNK))
        .for_each(|(((pc, gc), qc), ac)| adadelta_chunk(isa, pc, gc, qc, ac, s));
    Ok(())
}
