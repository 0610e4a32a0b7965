//! N-D padding (ONNX Pad, torch's F.pad, numpy.pad): constant, edge, reflect and wrap modes,
//! with negative pads cropping, forward and backward.
//!
//! Each output axis maps an output coordinate to an input coordinate (or to "the constant") once
//! per call; the tensor is then walked as rows of its last axis. The leading axes with no padding
//! are split across threads: in the backward of the edge, reflect and wrap modes several outputs
//! add into one input element, and those never cross a leading index, so no two threads write the
//! same gradient.
use crate::error::{check_len, numel};
use crate::{bail, Result};
use rayon::prelude::*;

/// How a padded position is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value (ONNX "constant", numpy "constant").
    Constant,
    /// The nearest border element (ONNX "edge", torch "replicate").
    Edge,
    /// Mirrored without repeating the border (ONNX/numpy/torch "reflect").
    Reflect,
    /// Wrapped around (ONNX "wrap", torch "circular").
    Wrap,
}

impl PadMode {
    pub fn parse(name: &str) -> Result<PadMode> {
        match name {
            "constant" => Ok(PadMode::Constant),
            "edge" => Ok(PadMode::Edge),
            "reflect" => Ok(PadMode::Reflect),
            "wrap" => Ok(PadMode::Wrap),
            other => {
                bail!("mode: expected one of 'constant', 'edge', 'reflect', 'wrap', got '{other}'")
            }
        }
    }
}

/// Most dimensions a pad takes.
pub const MAX_PAD_RANK: usize = 8;

/// The output shape of padding `shape` by `begins` and `ends` (negative values crop), checked:
/// no axis may shrink below zero, and edge/reflect/wrap need a non-empty axis to copy from when
/// they pad it.
pub fn padded_shape(
    mode: PadMode,
    shape: &[usize],
    begins: &[i64],
    ends: &[i64],
) -> Result<Vec<usize>> {
    let rank = shape.len();
    if rank > MAX_PAD_RANK {
        bail!("shape: at most {MAX_PAD_RANK} dimensions, got {rank}");
    }
    if begins.len() != rank || ends.len() != rank {
        bail!(
            "pads: expected {rank} begins and {rank} ends, got {} and {}",
            begins.len(),
            ends.len()
        );
    }
    let mut out = Vec::with_capacity(rank);
    for d in 0..rank {
        let len = shape[d] as i128 + begins[d] as i128 + ends[d] as i128;
        if len < 0 {
            bail!(
                "pads: axis {d} of size {} padded by {} and {} would have {len} elements",
                shape[d],
                begins[d],
                ends[d]
            );
        }
        if mode != PadMode::Constant && shape[d] == 0 && (begins[d] > 0 || ends[d] > 0) {
            bail!("pads: axis {d} is empty, so {mode:?} padding has nothing to copy from");
        }
        out.push(usize::try_from(len).map_err(|_| crate::KernelError("pads: too large".into()))?);
    }
    numel("output", &out)?;
    Ok(out)
}

/// Input coordinate of output coordinate `o` along an axis of `n` elements padded by `begin` in
/// front, or None where the constant goes.
fn source(mode: PadMode, o: usize, n: usize, begin: i64) -> Option<usize> {
    let i = o as i64 - begin;
    let n = n as i64;
    if (0..n).contains(&i) {
        return Some(i as usize);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, n - 1) as usize),
        PadMode::Wrap => Some(i.rem_euclid(n) as usize),
        PadMode::Reflect => {
            if n == 1 {
                return Some(0);
            }
            // Mirror about 0 and n - 1: period 2(n - 1), numpy's repeated reflection.
            let period = 2 * (n - 1);
            let r = i.rem_euclid(period);
            Some(if r < n { r } else { period - r } as usize)
        }
    }
}

struct Layout {
    /// Per axis, the input coordinate of every output coordinate.
    maps: Vec<Vec<Option<usize>>>,
    in_strides: Vec<usize>,
    out_shape: Vec<usize>,
    /// Leading axes with no padding (never the last axis) and their product: the units split
    /// across threads.
    lead_axes: usize,
    lead: usize,
    /// Input and output elements per leading unit.
    in_unit: usize,
    out_unit: usize,
}

fn layout(mode: PadMode, shape: &[usize], begins: &[i64], ends: &[i64]) -> Result<Layout> {
    let out_shape = padded_shape(mode, shape, begins, ends)?;
    numel("shape", shape)?;
    let rank = shape.len();
    let maps = (0..rank)
        .map(|d| {
            (0..out_shape[d])
                .map(|o| source(mode, o, shape[d], begins[d]))
                .collect()
        })
        .collect();
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let lead_axes = (0..rank.saturating_sub(1))
        .take_while(|&d| begins[d] == 0 && ends[d] == 0)
        .count();
    Ok(Layout {
        maps,
        in_strides,
        lead_axes,
        lead: shape[..lead_axes].iter().product(),
        in_unit: shape[lead_axes..].iter().product(),
        out_unit: out_shape[lead_axes..].iter().product(),
        out_shape,
    })
}

impl Layout {
    /// For every output row (along the last axis) of one leading unit, in order, the input
    /// offset within the unit of the row it copies from, or None when the row is all constant.
    fn rows(&self) -> Vec<Option<usize>> {
        let rank = self.out_shape.len();
        if rank == 0 {
            return vec![Some(0)];
        }
        let axes = self.lead_axes..rank - 1;
        let count: usize = self.out_shape[axes.clone()].iter().product();
        let mut rows = Vec::with_capacity(count);
        let mut coord = vec![0usize; rank];
        for _ in 0..count {
            let mut off = Some(0usize);
            for d in axes.clone() {
                off = match (off, self.maps[d][coord[d]]) {
                    (Some(o), Some(i)) => Some(o + i * self.in_strides[d]),
                    _ => None,
                };
            }
            rows.push(off);
            for d in axes.clone().rev() {
                coord[d] += 1;
                if coord[d] < self.out_shape[d] {
                    break;
                }
                coord[d] = 0;
            }
        }
        rows
    }

    /// The last axis's map (a scalar's single element maps to itself).
    fn last(&self) -> &[Option<usize>] {
        match self.maps.last() {
            Some(m) => m,
            None => &[Some(0)],
        }
    }
}

/// Leading units per rayon task: about 16K output elements each.
fn units_per_task(unit: usize) -> usize {
    (16 * 1024 / unit.max(1)).max(1)
}

/// output = input padded by `begins` and `ends` per axis (negative values crop) with `mode`;
/// `value` fills the constant mode's padding.
pub fn pad_forward(
    mode: PadMode,
    input: &[f32],
    shape: &[usize],
    begins: &[i64],
    ends: &[i64],
    value: f32,
    output: &mut [f32],
) -> Result<()> {
    let l = layout(mode, shape, begins, ends)?;
    check_len("input", input.len(), l.lead * l.in_unit)?;
    check_len("output", output.len(), l.lead * l.out_unit)?;
    if output.is_empty() {
        return Ok(());
    }
    let rows = l.rows();
    let last = l.last();
    let row_len = last.len();
    // The run of the last axis copied straight from the input row.
    // Output columns [lo, hi) of a row copy input columns [lo - begin, hi - begin) as one run.
    let (n, b) = match shape.last() {
        Some(&n) => (n as i64, begins[shape.len() - 1]),
        None => (1, 0),
    };
    let lo = b.clamp(0, row_len as i64) as usize;
    let hi = (b + n).clamp(lo as i64, row_len as i64) as usize;
    let unit = |(u, out): (usize, &mut [f32])| {
        let src = &input[u * l.in_unit..(u + 1) * l.in_unit];
        for (row, dst) in rows.iter().zip(out.chunks_mut(row_len.max(1))) {
            match row {
                None => dst.fill(value),
                Some(off) => {
                    let at = (off + lo) as i64 - b;
                    dst[lo..hi].copy_from_slice(&src[at as usize..at as usize + (hi - lo)]);
                    for o in (0..lo).chain(hi..row_len) {
                        dst[o] = match last[o] {
                            Some(i) => src[off + i],
                            None => value,
                        };
                    }
                }
            }
        }
    };
    if l.out_unit == 0 {
        return Ok(());
    }
    let per = units_per_task(l.out_unit);
    output
        .par_chunks_mut(l.out_unit * per)
        .enumerate()
        .for_each(|(t, chunk)| {
            chunk
                .chunks_mut(l.out_unit)
                .enumerate()
                .for_each(|(k, out)| unit((t * per + k, out)))
        });
    Ok(())
}

/// grad_input = the gradient of [`pad_forward`]: each output's gradient added into the input
/// element it copied (none for the constant padding).
pub fn pad_backward(
    mode: PadMode,
    grad_output: &[f32],
    shape: &[usize],
    begins: &[i64],
    ends: &[i64],
    grad_input: &mut [f32],
) -> Result<()> {
    let l = layout(mode, shape, begins, ends)?;
    check_len("gradOutput", grad_output.len(), l.lead * l.out_unit)?;
    check_len("gradInput", grad_input.len(), l.lead * l.in_unit)?;
    grad_input.fill(0.0);
    if grad_output.is_empty() || l.in_unit == 0 {
        return Ok(());
    }
    let rows = l.rows();
    let last = l.last();
    let row_len = last.len();
    let unit = |u: usize, gi: &mut [f32]| {
        let g = &grad_output[u * l.out_unit..(u + 1) * l.out_unit];
        for (row, src) in rows.iter().zip(g.chunks(row_len.max(1))) {
            if let Some(off) = row {
                for (&v, s) in src.iter().zip(last) {
                    if let Some(i) = s {
                        gi[off + i] += v;
                    }
                }
            }
        }
    };
    let per = units_per_task(l.out_unit);
    grad_input
        .par_chunks_mut(l.in_unit * per)
        .enumerate()
        .for_each(|(t, chunk)| {
            chunk
                .chunks_mut(l.in_unit)
                .enumerate()
                .for_each(|(k, gi)| unit(t * per + k, gi))
        });
    Ok(())
}
