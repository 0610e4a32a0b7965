//! Optimizer updates over one parameter tensor, in place: the inner loop of
//! `torch.optim.SGD.step()` (PyTorch 1.13, single-tensor path), parallel and vectorised.
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
