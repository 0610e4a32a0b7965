//! Matrix-vector products: the GEMM path for a single row or column of C (m == 1 or n == 1),
//! where packing would cost more than it saves.
use super::*;
use crate::vmath;

/// The `k` elements of a row or column, gathered into a contiguous vector.
pub(super) fn gather(k: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..k).map(f).collect()
}

/// How a gemv matrix is read: element (i, p) at `i * ld + p` (`Rows`: each output is a dot
/// product of a contiguous row) or at `p * ld + i` (`Cols`: outputs accumulate scaled rows).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Form {
    Rows,
    Cols,
}

/// Outputs per gemv task: enough contiguous work to be worth a rayon task.
pub(super) const GEMV_CHUNK: usize = 256;

/// y[i * incy] = alpha * sum_p M(i, p) v[p] + beta * y[i * incy] for i in 0..len.
///
/// # Safety
/// `y` must be valid for `len` elements at stride `incy`, touched by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemv(
    len: usize,
    k: usize,
    alpha: f32,
    mat: &[f32],
    ld: usize,
    form: Form,
    v: &[f32],
    beta: f32,
    y: CPtr,
    incy: usize,
    par: bool,
) {
    let isa = crate::simd::isa();
    let chunk = |i0: usize| {
        let i1 = (i0 + GEMV_CHUNK).min(len);
        let mut acc = [0f32; GEMV_CHUNK];
        let acc = &mut acc[..i1 - i0];
        match form {
            Form::Rows => {
                let row = |i: usize| &mat[i * ld..i * ld + k];
                let mut quads = acc.chunks_exact_mut(4);
                let mut i = i0;
                for out in &mut quads {
                    let rows = [row(i), row(i + 1), row(i + 2), row(i + 3)];
                    out.copy_from_slice(&vmath::dot4(isa, rows, v));
                    i += 4;
                }
                for out in quads.into_remainder() {
                    *out = vmath::dot(isa, row(i), v);
                    i += 1;
                }
            }
            Form::Cols => {
                for (p, &vp) in v.iter().enumerate() {
                    vmath::axpy(isa, acc, vp, &mat[p * ld + i0..p * ld + i1]);
                }
            }
        }
        for (i, &a) in (i0..i1).zip(acc.iter()) {
            // SAFETY: i < len, inside y (caller's contract); chunks are disjoint.
            let yi = unsafe { &mut *y.at(i * incy) };
            *yi = if beta == 0.0 {
                alpha * a
            } else {
                alpha * a + beta * *yi
            };
        }
    };
    if par && len > GEMV_CHUNK {
        (0..len).into_par_iter().step_by(GEMV_CHUNK).for_each(chunk);
    } else {
        (0..len).step_by(GEMV_CHUNK).for_each(chunk);
    }
}
