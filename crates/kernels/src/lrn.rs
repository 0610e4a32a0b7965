//! Local response normalisation across channels (AlexNet, GoogLeNet), forward and backward,
//! exactly as torch.nn.LocalResponseNorm:
//!
//!   scale[c] = k + alpha / size * Σ x[c']²,  c' in c - size/2 ..= c + (size-1)/2 (clipped)
//!   y[c]     = x[c] / scale[c]^beta
//!
//! torch divides alpha by `size` even where the window is clipped at the first or last channel,
//! and the window is asymmetric for even sizes. The forward saves `scale` for the backward:
//!
//!   dx[j] = dy[j] / scale[j]^beta - 2 alpha beta / size * x[j] * Σ dy[c] y[c] / scale[c],
//!   c in j - (size-1)/2 ..= j + size/2 (the forward window mirrored).
//!
//! Each output plane (n, c) is one rayon task reading its few neighbouring input planes, so
//! every inner loop is a contiguous, vectorisable pass over a plane.
use crate::error::{check_len, check_positive, numel};
use crate::simd::kernel;
use crate::{bail, simd, Result};
use rayon::prelude::*;

/// Shape and hyper-parameters of a LocalResponseNorm call (torch's defaults: alpha 1e-4,
/// beta 0.75, k 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrnParams {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Channels in the window.
    pub size: usize,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

impl LrnParams {
    pub fn validate(&self) -> Result<()> {
        check_positive("batch", self.batch)?;
        check_positive("channels", self.channels)?;
        check_positive("height", self.height)?;
        check_positive("width", self.width)?;
        check_positive("size", self.size)?;
        numel(
            "input",
            &[self.batch, self.channels, self.height, self.width],
        )?;
        for (name, v) in [("alpha", self.alpha), ("beta", self.beta), ("k", self.k)] {
            if !v.is_finite() {
                bail!("{name}: expected a finite number, got {v}");
            }
        }
        Ok(())
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Channels whose squares enter scale[c].
    fn forward_window(&self, c: usize) -> std::ops::Range<usize> {
        let lo = c.saturating_sub(self.size / 2);
        let hi = c.saturating_add((self.size - 1) / 2).saturating_add(1);
        lo..hi.min(self.channels)
    }

    /// Channels c whose forward window contains channel j.
    fn backward_window(&self, j: usize) -> std::ops::Range<usize> {
        let lo = j.saturating_sub((self.size - 1) / 2);
        let hi = j.saturating_add(self.size / 2).saturating_add(1);
        lo..hi.min(self.channels)
    }
}

/// scale^beta, with exact-enough fast forms for the betas networks use, so the loops that apply
/// it stay vectorisable (powf is a scalar libm call).
#[derive(Clone, Copy)]
enum Power {
    One,
    Half,
    ThreeQuarters,
    Other(f32),
}

impl Power {
    fn of(beta: f64) -> Power {
        if beta == 1.0 {
            Power::One
        } else if beta == 0.5 {
            Power::Half
        } else if beta == 0.75 {
            Power::ThreeQuarters
        } else {
            Power::Other(beta as f32)
        }
    }
}

/// Runs `body` with the power function as a distinct closure per variant, so each call site
/// is compiled (and vectorised) with its own form.
macro_rules! with_power {
    ($pow:expr, |$f:ident| $body:expr) => {
        match $pow {
            Power::One => {
                let $f = |s: f32| s;
                $body
            }
            Power::Half => {
                let $f = |s: f32| s.sqrt();
                $body
            }
            Power::ThreeQuarters => {
                let $f = |s: f32| {
                    let r = s.sqrt();
                    r * r.sqrt()
                };
                $body
            }
            Power::Other(b) => {
                let $f = |s: f32| s.powf(b);
                $body
            }
        }
    };
}

/// Input plane (n, c) of an NCHW buffer.
fn plane_of<'a>(buf: &'a [f32], p: &LrnParams, n: usize, c: usize) -> &'a [f32] {
    let len = p.plane();
    &buf[(n * p.channels + c) * len..][..len]
}

/// output = x / scale^beta; scale (same size as input) is saved for the backward.
pub fn lrn_forward(
    p: &LrnParams,
    input: &[f32],
    output: &mut [f32],
    scale: &mut [f32],
) -> Result<()> {
    p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.input_len())?;
    check_len("scale", scale.len(), p.input_len())?;
    let plane = p.plane();
    let isa = simd::isa();
    output
        .par_chunks_mut(plane)
        .zip(scale.par_chunks_mut(plane))
        .enumerate()
        .with_min_len((16 * 1024 / plane).max(1))
        .for_each(|(i, (y, s))| forward_plane(isa, p, input, i, y, s));
    Ok(())
}

kernel! {
    fn forward_plane(p: &LrnParams, input: &[f32], i: usize, y: &mut [f32], s: &mut [f32]) {
        let (n, c) = (i / p.channels, i % p.channels);
        s.fill(0.0);
        for cc in p.forward_window(c) {
            for (acc, &v) in s.iter_mut().zip(plane_of(input, p, n, cc)) {
                *acc += v * v;
            }
        }
        // torch: avg_pool3d (sum / size) * alpha + k, in float.
        let (size, alpha, k) = (p.size as f32, p.alpha as f32, p.k as f32);
        let x = plane_of(input, p, n, c);
        with_power!(Power::of(p.beta), |pow| {
            for ((o, sc), &xv) in y.iter_mut().zip(s.iter_mut()).zip(x) {
                *sc = *sc / size * alpha + k;
                *o = xv / pow(*sc);
            }
        });
    }
}

/// grad_input of LRN from the forward's input, output and saved scale (overwrites grad_input).
pub fn lrn_backward(
    p: &LrnParams,
    input: &[f32],
    output: &[f32],
    scale: &[f32],
    grad_out: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    p.validate()?;
    let len = p.input_len();
    check_len("input", input.len(), len)?;
    check_len("output", output.len(), len)?;
    check_len("scale", scale.len(), len)?;
    check_len("gradOutput", grad_out.len(), len)?;
    check_len("gradInput", grad_input.len(), len)?;
    let plane = p.plane();
    let isa = simd::isa();
    let bufs = Saved {
        input,
        output,
        scale,
        grad_out,
    };
    grad_input
        .par_chunks_mut(plane)
        .enumerate()
        .with_min_len((16 * 1024 / plane).max(1))
        .for_each_init(
            || vec![0.0f32; plane],
            |acc, (i, gi)| backward_plane(isa, p, &bufs, i, gi, acc),
        );
    Ok(())
}

/// The forward's tensors and the incoming gradient, all NCHW of the input's shape.
struct Saved<'a> {
    input: &'a [f32],
    output: &'a [f32],
    scale: &'a [f32],
    grad_out: &'a [f32],
}

kernel! {
    fn backward_plane(p: &LrnParams, t: &Saved, i: usize, gi: &mut [f32], acc: &mut [f32]) {
        let (n, j) = (i / p.channels, i % p.channels);
        acc.fill(0.0);
        for c in p.backward_window(j) {
            let g = plane_of(t.grad_out, p, n, c);
            let y = plane_of(t.output, p, n, c);
            let s = plane_of(t.scale, p, n, c);
            for (((a, &gv), &yv), &sv) in acc.iter_mut().zip(g).zip(y).zip(s) {
                *a += gv * yv / sv;
            }
        }
        let coef = (2.0 * p.alpha * p.beta / p.size as f64) as f32;
        let g = plane_of(t.grad_out, p, n, j);
        let x = plane_of(t.input, p, n, j);
        let s = plane_of(t.scale, p, n, j);
        with_power!(Power::of(p.beta), |pow| {
            for ((((o, &a), &gv), &xv), &sv) in gi.iter_mut().zip(acc.iter()).zip(g).zip(x).zip(s) {
                *o = gv / pow(sv) - coef * xv * a;
            }
        });
    }
}
