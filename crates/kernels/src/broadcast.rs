//! N-D broadcasting (NumPy's rules, both operands broadcast): add, sub, mul and div, a sum
//! reducing a tensor to a shape it was broadcast from (their gradients), and gather along an
//! axis with its scatter-add backward. These are the general forms ONNX graphs ask for; the
//! per-channel patterns of CNNs keep their faster paths in `elementwise`.
use crate::error::{check_len, numel};
use crate::vmath::{for_each_chunk, GRAIN};
use crate::{bail, Result};
use rayon::prelude::*;

/// Most dimensions a broadcast takes.
pub const MAX_RANK: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl NdOp {
    pub fn parse(name: &str) -> Result<NdOp> {
        match name {
            "add" => Ok(NdOp::Add),
            "sub" => Ok(NdOp::Sub),
            "mul" => Ok(NdOp::Mul),
            "div" => Ok(NdOp::Div),
            other => bail!("op: expected one of 'add', 'sub', 'mul', 'div', got '{other}'"),
        }
    }

    #[inline(always)]
    fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            NdOp::Add => a + b,
            NdOp::Sub => a - b,
            NdOp::Mul => a * b,
            NdOp::Div => a / b,
        }
    }
}

/// The shape both operands broadcast to, or an Error naming the dims that clash.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    if rank > MAX_RANK {
        bail!("shape: at most {MAX_RANK} dimensions, got {rank}");
    }
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let (x, y) = (at(a, i), at(b, i));
        if x != y && x != 1 && y != 1 {
            bail!("shapes {a:?} and {b:?} do not broadcast: dim {i} is {x} against {y}");
        }
        out.push(if x == 1 { y } else { x });
    }
    numel("output", &out)?;
    Ok(out)
}

/// Strides of `shape` (aligned to the right of `out`) in `out`'s coordinates: 0 where broadcast.
fn strides_in(shape: &[usize], out: &[usize]) -> [usize; MAX_RANK] {
    let mut s = [0usize; MAX_RANK];
    let off = out.len() - shape.len();
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        if shape[d] != 1 {
            s[d + off] = acc;
        }
        acc *= shape[d];
    }
    s
}

/// Calls `f(i, src)` for output elements `start..start + len` in order, with `src` the offset
/// in the operand whose strides are `s` (an odometer over `out`'s coordinates).
#[inline(always)]
fn walk(
    out: &[usize],
    s: &[usize; MAX_RANK],
    start: usize,
    len: usize,
    mut f: impl FnMut(usize, usize),
) {
    let rank = out.len();
    if len == 0 {
        return;
    }
    if rank == 0 {
        f(0, 0);
        return;
    }
    let mut coord = [0usize; MAX_RANK];
    let mut rest = start;
    let mut src = 0;
    for d in (0..rank).rev() {
        coord[d] = rest % out[d];
        rest /= out[d];
        src += coord[d] * s[d];
    }
    for i in 0..len {
        f(i, src);
        // Next coordinate.
        let mut d = rank - 1;
        loop {
            coord[d] += 1;
            src += s[d];
            if coord[d] < out[d] {
                break;
            }
            src -= coord[d] * s[d];
            coord[d] = 0;
            if d == 0 {
                break;
            }
            d -= 1;
        }
    }
}

/// output = a op b with both broadcast to [`broadcast_shape`]`(a_shape, b_shape)`.
pub fn binary_nd(
    op: NdOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    output: &mut [f32],
) -> Result<()> {
    let out = broadcast_shape(a_shape, b_shape)?;
    check_len("a", a.len(), numel("aShape", a_shape)?)?;
    check_len("b", b.len(), numel("bShape", b_shape)?)?;
    check_len("output", output.len(), out.iter().product())?;
    let (sa, sb) = (strides_in(a_shape, &out), strides_in(b_shape, &out));
    for_each_chunk(output, |start, chunk| {
        let mut offs = Vec::with_capacity(chunk.len());
        walk(&out, &sb, start, chunk.len(), |_, j| offs.push(j));
        walk(&out, &sa, start, chunk.len(), |i, ia| {
            chunk[i] = op.apply(a[ia], b[offs[i]])
        });
    });
    Ok(())
}

/// output (of `shape`) = input (of `input_shape`) summed over the dims `shape` broadcasts along,
/// in f64: the gradient of a broadcast operand. `shape` must broadcast to `input_shape`.
pub fn sum_to(
    input: &[f32],
    input_shape: &[usize],
    shape: &[usize],
    output: &mut [f32],
) -> Result<()> {
    let full = broadcast_shape(input_shape, shape)?;
    if full != input_shape {
        bail!("shape: {shape:?} does not broadcast to {input_shape:?}");
    }
    check_len("input", input.len(), numel("inputShape", input_shape)?)?;
    check_len("output", output.len(), numel("shape", shape)?)?;
    let s = strides_in(shape, &full);
    let mut acc = vec![0f64; output.len()];
    walk(&full, &s, 0, input.len(), |i, j| acc[j] += input[i] as f64);
    for (o, v) in output.iter_mut().zip(acc) {
        *o = v as f32;
    }
    Ok(())
}

/// Checks gather's indices against an axis of `axis_len` and returns them in [0, axis_len).
fn gather_indices(indices: &[i64], axis_len: usize) -> Result<Vec<usize>> {
    let n = axis_len as i64;
    indices
        .iter()
        .map(|&i| {
            if i < -n || i >= n {
                bail!("indices: {i} is out of range for an axis of {axis_len}");
            }
            Ok(if i < 0 { i + n } else { i } as usize)
        })
        .collect()
}

/// output [outer, indices.len(), inner] = input [outer, axis_len, inner] at `indices` along the
/// middle axis (negative indices count from the end), as numpy.take and ONNX Gather.
pub fn gather_forward(
    input: &[f32],
    outer: usize,
    axis_len: usize,
    inner: usize,
    indices: &[i64],
    output: &mut [f32],
) -> Result<()> {
    let idx = gather_indices(indices, axis_len)?;
    check_len(
        "input",
        input.len(),
        numel("input", &[outer, axis_len, inner])?,
    )?;
    check_len(
        "output",
        output.len(),
        numel("output", &[outer, idx.len(), inner])?,
    )?;
    let block = idx.len() * inner;
    if block == 0 {
        return Ok(());
    }
    let per = (GRAIN / block).max(1);
    output
        .par_chunks_mut(block * per)
        .enumerate()
        .for_each(|(t, chunk)| {
            for (k, out) in chunk.chunks_mut(block).enumerate() {
                let o = t * per + k;
                for (dst, &i) in out.chunks_mut(inner).zip(&idx) {
                    let at = (o * axis_len + i) * inner;
                    dst.copy_from_slice(&input[at..at + inner]);
                }
            }
        });
    Ok(())
}

/// grad_input = the gradient of [`gather_forward`]: each gathered row's gradient added into the
/// row it came from (repeated indices add up).
pub fn gather_backward(
    grad_output: &[f32],
    outer: usize,
    axis_len: usize,
    inner: usize,
    indices: &[i64],
    grad_input: &mut [f32],
) -> Result<()> {
    let idx = gather_indices(indices, axis_len)?;
    check_len(
        "gradOutput",
        grad_output.len(),
        numel("gradOutput", &[outer, idx.len(), inner])?,
    )?;
    check_len(
        "gradInput",
        grad_input.len(),
        numel("gradInput", &[outer, axis_len, inner])?,
    )?;
    grad_input.fill(0.0);
    let block = axis_len * inner;
    if block == 0 {
        return Ok(());
    }
    grad_input
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(o, gi)| {
            let g = &grad_output[o * idx.len() * inner..(o + 1) * idx.len() * inner];
            for (src, &i) in g.chunks(inner.max(1)).zip(&idx) {
                for (d, &v) in gi[i * inner..(i + 1) * inner].iter_mut().zip(src) {
                    *d += v;
                }
            }
        });
    Ok(())
}
