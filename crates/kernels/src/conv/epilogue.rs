//! What an inference forward does to each output element after the convolution sum:
//! `y = act(acc * scale[oc] + shift[oc] + residual)`. Folding a following eval-mode batch norm
//! into `scale`/`shift`, the bias into `shift`, a residual shortcut and a ReLU into the conv
//! saves a full read and write of the activation per folded op (and a fresh output buffer each).
//! im2col applies it to each output tile right after its GEMM and Winograd in its output
//! transform, while the values are still in cache; direct and FFT apply it in one pass afterwards.
use crate::error::check_len;
use crate::simd::{kernel, Isa};
use crate::{simd, Result};
use rayon::prelude::*;

/// Per-element work after the sum. The default is the identity (plain conv without bias).
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Per-output-channel multiplier (e.g. gamma / sqrt(var + eps) of a folded batch norm);
    /// `None` means 1.
    pub scale: Option<&'a [f32]>,
    /// Per-output-channel addend (the bias, or a folded batch norm's shift); `None` means 0.
    pub shift: Option<&'a [f32]>,
    /// A tensor of the output's shape added after scale and shift (a residual shortcut).
    pub residual: Option<&'a [f32]>,
    /// Apply ReLU last (`x < 0 ? 0 : x`, so NaN stays NaN as in torch).
    pub relu: bool,
}

impl<'a> Epilogue<'a> {
    /// The epilogue of a plain conv: add `bias` when given.
    pub fn bias(bias: Option<&'a [f32]>) -> Self {
        Epilogue {
            shift: bias,
            ..Epilogue::default()
        }
    }

    /// Whether it changes nothing (so callers can skip the pass).
    pub fn is_identity(&self) -> bool {
        self.scale.is_none() && self.shift.is_none() && self.residual.is_none() && !self.relu
    }

    pub(crate) fn validate(&self, out_channels: usize, output_len: usize) -> Result<()> {
        if let Some(s) = self.scale {
            check_len("scale", s.len(), out_channels)?;
        }
        if let Some(b) = self.shift {
            check_len("shift", b.len(), out_channels)?;
        }
        if let Some(r) = self.residual {
            check_len("residual", r.len(), output_len)?;
        }
        Ok(())
    }

    /// Channel `oc`'s multiplier and addend.
    pub(crate) fn coef(&self, oc: usize) -> (f32, f32) {
        (
            self.scale.map_or(1.0, |s| s[oc]),
            self.shift.map_or(0.0, |b| b[oc]),
        )
    }

    /// Applies the epilogue to `row`, a run of channel `oc` output elements that starts at
    /// flat output offset `off` (where the residual is read).
    pub(crate) fn apply_row(&self, row: &mut [f32], oc: usize, off: usize, isa: Isa) {
        apply_row(isa, self, row, oc, off)
    }

    /// [`Epilogue::apply_row`] for use inside a [`kernel!`] body: inlined, so it is compiled
    /// for the body's SIMD level.
    #[inline(always)]
    pub(crate) fn apply_row_inline(&self, row: &mut [f32], oc: usize, off: usize) {
        let (s, b) = self.coef(oc);
        match (self.residual, self.relu) {
            (Some(r), true) => affine_add_relu(row, &r[off..off + row.len()], s, b),
            (Some(r), false) => affine_add(row, &r[off..off + row.len()], s, b),
            (None, true) => affine_relu(row, s, b),
            (None, false) => affine(row, s, b),
        }
    }

    /// Applies the epilogue to a whole NCHW output of `out_channels` planes of `plane` elements,
    /// planes in parallel.
    pub(crate) fn apply_all(&self, output: &mut [f32], out_channels: usize, plane: usize) {
        if self.is_identity() || plane == 0 {
            return;
        }
        let isa = simd::isa();
        output
            .par_chunks_mut(plane)
            .enumerate()
            .with_min_len((16 * 1024 / plane).max(1))
            .for_each(|(i, y)| self.apply_row(y, i % out_channels, i * plane, isa));
    }
}

kernel! {
    fn apply_row(ep: &Epilogue<'_>, row: &mut [f32], oc: usize, off: usize) {
        ep.apply_row_inline(row, oc, off)
    }
}

// `v * s + b` without FMA contraction in both paths, so scalar and AVX2 agree bit for bit (and
// s = 1, b = 0 leave v unchanged).
#[inline(always)]
fn affine(y: &mut [f32], s: f32, b: f32) {
    for v in y.iter_mut() {
        *v = *v * s + b;
    }
}

#[inline(always)]
fn affine_relu(y: &mut [f32], s: f32, b: f32) {
    for v in y.iter_mut() {
        let t = *v * s + b;
        *v = if t < 0.0 { 0.0 } else { t };
    }
}

#[inline(always)]
fn affine_add(y: &mut [f32], r: &[f32], s: f32, b: f32) {
    for (v, &r) in y.iter_mut().zip(r) {
        *v = (*v * s + b) + r;
    }
}

#[inline(always)]
fn affine_add_relu(y: &mut [f32], r: &[f32], s: f32, b: f32) {
    for (v, &r) in y.iter_mut().zip(r) {
        let t = (*v * s + b) + r;
        *v = if t < 0.0 { 0.0 } else { t };
    }
}
