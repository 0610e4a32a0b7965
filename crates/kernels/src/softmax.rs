//! Softmax and log-softmax over the last dimension of a `[rows, cols]` buffer, and the fused
//! softmax + cross-entropy loss with integer targets, forward and backward, following
//! `torch.nn.functional.cross_entropy` (label smoothing, per-class weights, `ignore_index`,
//! reduction mean | sum | none).
//!
//! Rows are independent, so they are split across threads in blocks of about
//! [`GRAIN`](crate::vmath::GRAIN) floats; every reduction across rows runs serially afterwards
//! in a fixed order, so results do not depend on the thread count.
use crate::error::{check_len, check_positive, numel};
use crate::simd::{self, kernel, Isa};
use crate::vmath::{self, rows_per_task};
use crate::{bail, Result};
use rayon::prelude::*;

fn check_rows_cols(rows: usize, cols: usize) -> Result<usize> {
    check_positive("rows", rows)?;
    check_positive("cols", cols)?;
    numel("input", &[rows, cols])
}

/// Runs `f(first_row, block)` over blocks of whole rows of `out`, in parallel when there is
/// more than one block.
fn for_each_row_block(out: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let rows = rows_per_task(cols);
    let block = rows * cols;
    if out.len() <= block {
        f(0, out);
    } else {
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, c)| f(i * rows, c));
    }
}

/// One row of softmax: y = e^(x - max) / sum.
fn softmax_row(isa: Isa, x: &[f32], y: &mut [f32]) -> (f32, f32) {
    let m = vmath::max(isa, x);
    let s = vmath::exp_shift(isa, x, m, y);
    vmath::scale(isa, y, 1.0 / s);
    (m, s)
}

kernel! {
    // (x - max) - ln(sum), in this order: subtracting max + ln(sum) in one go loses digits when
    // max is large.
    fn log_softmax_finish(x: &[f32], y: &mut [f32], m: f32, log_sum: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v - m) - log_sum;
        }
    }
}

/// output = softmax(input) (or log_softmax when `log`) along each row of `[rows, cols]`.
pub fn softmax_forward(
    input: &[f32],
    output: &mut [f32],
    rows: usize,
    cols: usize,
    log: bool,
) -> Result<()> {
    let n = check_rows_cols(rows, cols)?;
    check_len("input", input.len(), n)?;
    check_len("output", output.len(), n)?;
    let isa = simd::isa();
    for_each_row_block(output, cols, |r0, block| {
        let xs = &input[r0 * cols..r0 * cols + block.len()];
        for (x, y) in xs.chunks_exact(cols).zip(block.chunks_exact_mut(cols)) {
            if log {
                let m = vmath::max(isa, x);
                let s = vmath::exp_shift_sum(isa, x, m);
                log_softmax_finish(isa, x, y, m, s.ln());
            } else {
                softmax_row(isa, x, y);
            }
        }
    });
    Ok(())
}

kernel! {
    // softmax: dx = y * (g - sum(g * y)).
    fn softmax_backward_row(y: &[f32], g: &[f32], gi: &mut [f32], dot: f32) {
        for ((o, &s), &d) in gi.iter_mut().zip(y).zip(g) {
            *o = s * (d - dot);
        }
    }
}

/// log-softmax: dx = g - e^y * sum(g), with y the saved log-probabilities.
fn log_softmax_backward_row(isa: Isa, y: &[f32], g: &[f32], gi: &mut [f32]) {
    let total = vmath::sum(isa, g);
    // gi <- e^y first, then g - gi * total in a vectorisable pass.
    vmath::exp_shift(isa, y, 0.0, gi);
    sub_scaled(isa, g, gi, total);
}

kernel! {
    fn sub_scaled(g: &[f32], gi: &mut [f32], total: f32) {
        for (o, &d) in gi.iter_mut().zip(g) {
            *o = d - *o * total;
        }
    }
}

/// grad_input of softmax (or log_softmax when `log`) from the forward `output` and grad_output.
pub fn softmax_backward(
    output: &[f32],
    grad_output: &[f32],
    grad_input: &mut [f32],
    rows: usize,
    cols: usize,
    log: bool,
) -> Result<()> {
    let n = check_rows_cols(rows, cols)?;
    check_len("output", output.len(), n)?;
    check_len("gradOutput", grad_output.len(), n)?;
    check_len("gradInput", grad_input.len(), n)?;
    let isa = simd::isa();
    for_each_row_block(grad_input, cols, |r0, block| {
        let range = r0 * cols..r0 * cols + block.len();
        let ys = output[range.clone()].chunks_exact(cols);
        let gs = grad_output[range].chunks_exact(cols);
        for ((y, g), gi) in ys.zip(gs).zip(block.chunks_exact_mut(cols)) {
            if log {
                log_softmax_backward_row(isa, y, g, gi);
            } else {
                let dot = vmath::dot(isa, g, y);
                softmax_backward_row(isa, y, g, gi, dot);
            }
        }
    });
    Ok(())
}

/// How per-sample losses are combined, as torch's `reduction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Weighted mean: the sum divided by the total weight of the non-ignored targets (their
    /// count without class weights).
    Mean,
    Sum,
    None,
}

impl Reduction {
    pub fn parse(name: &str) -> Result<Reduction> {
        match name {
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            "none" => Ok(Reduction::None),
            other => bail!("reduction: expected one of 'mean', 'sum', 'none', got '{other}'"),
        }
    }
}

/// Shape and options of one cross-entropy call over logits `[batch, classes]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropyParams {
    pub batch: usize,
    pub classes: usize,
    /// In [0, 1]: the target distribution is (1 - ls) one-hot + ls uniform.
    pub label_smoothing: f64,
    /// Samples whose target equals this contribute neither loss nor gradient (torch: -100).
    pub ignore_index: i64,
    pub reduction: Reduction,
}

impl CrossEntropyParams {
    pub fn new(batch: usize, classes: usize) -> CrossEntropyParams {
        CrossEntropyParams {
            batch,
            classes,
            label_smoothing: 0.0,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }

    pub fn validate(&self) -> Result<usize> {
        check_positive("batch", self.batch)?;
        check_positive("classes", self.classes)?;
        let ls = self.label_smoothing;
        if !(0.0..=1.0).contains(&ls) {
            bail!("labelSmoothing: expected a number in [0, 1], got {ls}");
        }
        numel("logits", &[self.batch, self.classes])
    }

    /// Checks every target is a class index or `ignore_index`, before any output is written.
    fn check_targets(&self, targets: &[i32]) -> Result<()> {
        check_len("targets", targets.len(), self.batch)?;
        for (i, &t) in targets.iter().enumerate() {
            if t as i64 != self.ignore_index && (t < 0 || t as usize >= self.classes) {
                bail!(
                    "targets[{i}]: expected a class index in [0, {}) or ignoreIndex ({}), got {t}",
                    self.classes,
                    self.ignore_index
                );
            }
        }
        Ok(())
    }

    fn check_weights(&self, class_weights: Option<&[f32]>) -> Result<()> {
        if let Some(w) = class_weights {
            check_len("classWeights", w.len(), self.classes)?;
        }
        Ok(())
    }

    /// The class a sample contributes to, or None when it is ignored. Only valid after
    /// [`check_targets`](Self::check_targets).
    #[inline]
    fn target(&self, t: i32) -> Option<usize> {
        (t as i64 != self.ignore_index).then_some(t as usize)
    }

    /// What the summed loss is divided by: 1 for sum/none; for mean the total weight of the
    /// non-ignored targets (0 when all are ignored, making the loss NaN as in torch).
    fn divisor(&self, targets: &[i32], class_weights: Option<&[f32]>) -> f64 {
        if self.reduction != Reduction::Mean {
            return 1.0;
        }
        targets
            .iter()
            .filter_map(|&t| self.target(t))
            .map(|t| class_weights.map_or(1.0, |w| w[t] as f64))
            .sum()
    }
}

kernel! {
    /// Sum over c of w[c] * (m - x[c]) (or of m - x[c] when `w` is empty): the part of
    /// -sum_c w_c log p_c that does not involve ln(sum). Every term is >= 0, so nothing cancels.
    fn weighted_gap(x: &[f32], w: &[f32], m: f32) -> f32 {
        const LANES: usize = 16;
        let mut acc = [0.0f32; LANES];
        let mut xc = x.chunks_exact(LANES);
        if w.is_empty() {
            for c in &mut xc {
                for i in 0..LANES {
                    acc[i] += m - c[i];
                }
            }
            for (a, &v) in acc.iter_mut().zip(xc.remainder()) {
                *a += m - v;
            }
        } else {
            let mut wc = w.chunks_exact(LANES);
            for (c, k) in (&mut xc).zip(&mut wc) {
                for i in 0..LANES {
                    acc[i] += k[i] * (m - c[i]);
                }
            }
            for ((a, &v), &k) in acc.iter_mut().zip(xc.remainder()).zip(wc.remainder()) {
                *a += k * (m - v);
            }
        }
        acc.iter().map(|&v| v as f64).sum::<f64>() as f32
    }
}

/// Fused softmax + cross-entropy. Writes the softmax of `logits` into `probs` (what the backward
/// needs) and each sample's unreduced loss into `losses` (0 for ignored samples), and returns
/// the reduced loss: the weighted mean for `Mean`, the sum for `Sum` and `None`.
///
/// Per sample with target t, log-probabilities lp and class weights w (all 1 when absent):
/// loss = (1 - ls) * (-w_t lp_t) + ls / C * sum_c (-w_c lp_c), as torch computes it.
pub fn cross_entropy_forward(
    p: &CrossEntropyParams,
    logits: &[f32],
    targets: &[i32],
    class_weights: Option<&[f32]>,
    probs: &mut [f32],
    losses: &mut [f32],
) -> Result<f64> {
    let n = p.validate()?;
    check_len("logits", logits.len(), n)?;
    p.check_targets(targets)?;
    p.check_weights(class_weights)?;
    check_len("probs", probs.len(), n)?;
    check_len("losses", losses.len(), p.batch)?;
    let c = p.classes;
    let ls = p.label_smoothing;
    let w_all: &[f32] = class_weights.unwrap_or(&[]);
    let w_total: f64 = w_all.iter().map(|&v| v as f64).sum();
    let isa = simd::isa();
    let row_loss = |x: &[f32], y: &mut [f32], t: i32| -> f32 {
        let (m, s) = softmax_row(isa, x, y);
        let Some(t) = p.target(t) else {
            return 0.0;
        };
        let log_sum = (s as f64).ln();
        let w_t = class_weights.map_or(1.0, |w| w[t] as f64);
        // -lp_c = (m - x_c) + ln(sum)
        let nll = w_t * ((m - x[t]) as f64 + log_sum);
        let mut loss = (1.0 - ls) * nll;
        if ls > 0.0 {
            let w_sum = if class_weights.is_some() {
                w_total
            } else {
                c as f64
            };
            let smooth = weighted_gap(isa, x, w_all, m) as f64 + w_sum * log_sum;
            loss += ls / c as f64 * smooth;
        }
        loss as f32
    };
    let rows = rows_per_task(c);
    if p.batch <= rows {
        for (((x, y), l), &t) in logits
            .chunks_exact(c)
            .zip(probs.chunks_exact_mut(c))
            .zip(losses.iter_mut())
            .zip(targets)
        {
            *l = row_loss(x, y, t);
        }
    } else {
        probs
            .par_chunks_mut(rows * c)
            .zip(losses.par_chunks_mut(rows))
            .enumerate()
            .for_each(|(b, (ys, ls_out))| {
                let r0 = b * rows;
                let xs = &logits[r0 * c..r0 * c + ys.len()];
                for (((x, y), l), &t) in xs
                    .chunks_exact(c)
                    .zip(ys.chunks_exact_mut(c))
                    .zip(ls_out.iter_mut())
                    .zip(&targets[r0..])
                {
                    *l = row_loss(x, y, t);
                }
            });
    }
    let total: f64 = losses.iter().map(|&v| v as f64).sum();
    Ok(total / p.divisor(targets, class_weights))
}

/// grad_logits of [`cross_entropy_forward`] from the saved `probs`. `grad_output` holds one
/// number (d loss / d reduced loss) for `Mean` and `Sum`, one per sample for `None`.
///
/// Per non-ignored sample, with g its upstream gradient (divided by the mean's divisor):
/// dx_j = g * (p_j * ((1 - ls) w_t + ls/C * W) - (1 - ls) w_t [j = t] - ls/C * w_j),
/// W = sum_c w_c. Ignored samples get zero gradient.
pub fn cross_entropy_backward(
    p: &CrossEntropyParams,
    probs: &[f32],
    targets: &[i32],
    class_weights: Option<&[f32]>,
    grad_output: &[f32],
    grad_logits: &mut [f32],
) -> Result<()> {
    let n = p.validate()?;
    check_len("probs", probs.len(), n)?;
    p.check_targets(targets)?;
    p.check_weights(class_weights)?;
    let per_sample = p.reduction == Reduction::None;
    check_len(
        "gradOutput",
        grad_output.len(),
        if per_sample { p.batch } else { 1 },
    )?;
    check_len("gradLogits", grad_logits.len(), n)?;
    let c = p.classes;
    let ls = p.label_smoothing;
    let divisor = p.divisor(targets, class_weights);
    let w_sum = class_weights.map_or(c as f64, |w| w.iter().map(|&v| v as f64).sum());
    let isa = simd::isa();
    let row_grad = |i: usize, y: &[f32], gi: &mut [f32]| {
        let Some(t) = p.target(targets[i]) else {
            gi.fill(0.0);
            return;
        };
        let g = if per_sample {
            grad_output[i] as f64
        } else {
            grad_output[0] as f64 / divisor
        };
        let w_t = class_weights.map_or(1.0, |w| w[t] as f64);
        let hot = (1.0 - ls) * w_t;
        let uniform = ls / c as f64;
        let coef = (g * (hot + uniform * w_sum)) as f32;
        scaled_copy(isa, y, gi, coef);
        match class_weights {
            Some(w) if uniform > 0.0 => {
                sub_scaled_weights(isa, w, gi, (g * uniform) as f32);
            }
            None if uniform > 0.0 => {
                let u = (g * uniform) as f32;
                for v in gi.iter_mut() {
                    *v -= u;
                }
            }
            _ => {}
        }
        gi[t] -= (g * hot) as f32;
    };
    for_each_row_block(grad_logits, c, |r0, block| {
        let ys = probs[r0 * c..r0 * c + block.len()].chunks_exact(c);
        for (k, (y, gi)) in ys.zip(block.chunks_exact_mut(c)).enumerate() {
            row_grad(r0 + k, y, gi);
        }
    });
    Ok(())
}

kernel! {
    fn scaled_copy(y: &[f32], gi: &mut [f32], s: f32) {
        for (o, &v) in gi.iter_mut().zip(y) {
            *o = v * s;
        }
    }
}

kernel! {
    fn sub_scaled_weights(w: &[f32], gi: &mut [f32], s: f32) {
        for (o, &v) in gi.iter_mut().zip(w) {
            *o -= v * s;
        }
    }
}
