//! Fully-connected layer as torch.nn.Linear: `output = input * weight^T + bias`, with input
//! `[batch, in_features]`, weight `[out_features, in_features]`, bias and output rows of
//! `out_features`. Forward and backward are GEMMs (see `crate::gemm`); outputs are overwritten.
use crate::bail;
use crate::error::{check_len, check_positive, numel};
use crate::gemm::{self, sgemm_unchecked, Lhs, Mat, Rhs};
use crate::Result;
use rayon::prelude::*;

/// Checks the three sizes and returns (input, weight, output) lengths.
fn lens(batch: usize, in_f: usize, out_f: usize) -> Result<(usize, usize, usize)> {
    check_positive("batch", batch)?;
    check_positive("inFeatures", in_f)?;
    check_positive("outFeatures", out_f)?;
    Ok((
        numel("input", &[batch, in_f])?,
        numel("weight", &[out_f, in_f])?,
        numel("output", &[batch, out_f])?,
    ))
}

/// Checks a forward's buffers and starts the output: with a bias, every row is set to it and
/// the GEMM accumulates onto it (the returned beta is 1); without, beta is 0.
#[allow(clippy::too_many_arguments)]
fn start_output(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<f32> {
    let (x_len, w_len, y_len) = lens(batch, in_f, out_f)?;
    check_len("input", input.len(), x_len)?;
    check_len("weight", weight.len(), w_len)?;
    if let Some(b) = bias {
        check_len("bias", b.len(), out_f)?;
    }
    check_len("output", output.len(), y_len)?;
    Ok(match bias {
        Some(b) => {
            output
                .chunks_exact_mut(out_f)
                .for_each(|row| row.copy_from_slice(b));
            1.0
        }
        None => 0.0,
    })
}

/// Batches up to this size read the weights in place (`gemm::few_rows`: each weight row
/// streamed once for all the batch's rows), so they need no [`PreparedLinear`].
pub const SMALL_BATCH: usize = gemm::FEW_ROWS;

/// A linear layer's weights prepared once for the GEMM (transposed and packed into the
/// panels it reads), for forwards whose weights do not change between calls (a compiled
/// plan's inference runs) at batches above [`SMALL_BATCH`], where packing the weights on every
/// call would cost more than it saves. Smaller batches need none.
pub struct PreparedLinear {
    in_f: usize,
    out_f: usize,
    packed: Vec<f32>,
}

impl PreparedLinear {
    /// Floats held.
    pub fn floats(&self) -> usize {
        self.packed.len()
    }

    /// Whether these were prepared for `in_f -> out_f`.
    pub fn fits(&self, in_f: usize, out_f: usize) -> bool {
        (self.in_f, self.out_f) == (in_f, out_f)
    }
}

/// Prepares `weight` (`[out_f, in_f]`) for [`linear_forward_prepared`].
pub fn prepare_forward(in_f: usize, out_f: usize, weight: &[f32]) -> Result<PreparedLinear> {
    let (_, w_len, _) = lens(1, in_f, out_f)?;
    check_len("weight", weight.len(), w_len)?;
    crate::scratch::fallible("linear", || {
        let packed = gemm::pack_b_whole(Mat::new(weight, in_f, true), in_f, out_f);
        Ok(PreparedLinear {
            in_f,
            out_f,
            packed,
        })
    })
}

/// [`linear_forward`] with the weights prepared by [`prepare_forward`] from `weight`; the
/// results are bit for bit the same.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_prepared(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    prepared: &PreparedLinear,
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    if !prepared.fits(in_f, out_f) {
        bail!("linear: prepared weights are for another shape");
    }
    if batch <= SMALL_BATCH || out_f == 1 {
        // A matrix-vector product, or a few rows that read the weights in place.
        return linear_forward(batch, in_f, out_f, input, weight, bias, output);
    }
    let beta = start_output(batch, in_f, out_f, input, weight, bias, output)?;
    crate::scratch::fallible("linear", || {
        let x = Lhs::Raw(Mat::new(input, in_f, false));
        let par = gemm::want_parallel(batch, out_f, in_f);
        let b = Rhs::Packed(&prepared.packed);
        gemm::gemm(batch, out_f, in_f, 1.0, x, b, beta, output, out_f, par);
        Ok(())
    })
}

/// output[b, o] = sum_i input[b, i] * weight[o, i] + bias[o].
pub fn linear_forward(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let beta = start_output(batch, in_f, out_f, input, weight, bias, output)?;
    crate::scratch::fallible("linear", || {
        if (2..=SMALL_BATCH).contains(&batch) {
            let par = gemm::want_parallel(batch, out_f, in_f);
            gemm::few_rows(
                batch, out_f, in_f, 1.0, input, weight, beta, output, out_f, par,
            );
            return Ok(());
        }
        let (x, w) = (Mat::new(input, in_f, false), Mat::new(weight, in_f, true));
        sgemm_unchecked(batch, out_f, in_f, 1.0, x, w, beta, output, out_f);
        Ok(())
    })
}

/// Gradients of [`linear_forward`] given `grad_out` (`[batch, out_features]`); each requested
/// gradient is overwritten: grad_input = grad_out * weight, grad_weight = grad_out^T * input,
/// grad_bias = column sums of grad_out.
#[allow(clippy::too_many_arguments)] // one optional output per parameter, as the layer has
pub fn linear_backward(
    batch: usize,
    in_f: usize,
    out_f: usize,
    input: &[f32],
    weight: &[f32],
    grad_out: &[f32],
    grad_input: Option<&mut [f32]>,
    grad_weight: Option<&mut [f32]>,
    grad_bias: Option<&mut [f32]>,
) -> Result<()> {
    let (x_len, w_len, y_len) = lens(batch, in_f, out_f)?;
    check_len("input", input.len(), x_len)?;
    check_len("weight", weight.len(), w_len)?;
    check_len("gradOutput", grad_out.len(), y_len)?;
    if let Some(g) = &grad_input {
        check_len("gradInput", g.len(), x_len)?;
    }
    if let Some(g) = &grad_weight {
        check_len("gradWeight", g.len(), w_len)?;
    }
    if let Some(g) = &grad_bias {
        check_len("gradBias", g.len(), out_f)?;
    }
    crate::scratch::fallible("linear", move || {
        if let Some(gx) = grad_input {
            let (dy, w) = (
                Mat::new(grad_out, out_f, false),
                Mat::new(weight, in_f, false),
            );
            sgemm_unchecked(batch, in_f, out_f, 1.0, dy, w, 0.0, gx, in_f);
        }
        if let Some(gw) = grad_weight {
            let (dy, x) = (
                Mat::new(grad_out, out_f, true),
                Mat::new(input, in_f, false),
            );
            sgemm_unchecked(out_f, in_f, batch, 1.0, dy, x, 0.0, gw, in_f);
        }
        if let Some(gb) = grad_bias {
            // Column sums in f64: batches can be long and the sum is a reduction of many terms.
            gb.par_iter_mut().enumerate().for_each(|(o, g)| {
                let s: f64 = (0..batch).map(|b| grad_out[b * out_f + o] as f64).sum();
                *g = s as f32;
            });
        }
        Ok(())
    })
}

/// Batched matrix products with broadcasting (numpy.matmul, ONNX MatMul), one GEMM per entry:
/// for each `[ia, ib, ic]` in `entries`, `c[ic] += op(a[ia]) * op(b[ib])`, where `a[i]` is the
/// i-th `m x k` matrix of `a` (`k x m` when `trans_a`), `b[i]` the i-th `k x n` (`n x k` when
/// `trans_b`) and `c[i]` the i-th `m x n`. `c` is zeroed first, so entries sharing an `ic` add up
/// (the gradient of a broadcast operand).
#[allow(clippy::too_many_arguments)]
pub fn matmul_batched(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    entries: &[[usize; 3]],
) -> Result<()> {
    let (a_mat, b_mat, c_mat) = (
        numel("a", &[m, k])?,
        numel("b", &[k, n])?,
        numel("c", &[m, n])?,
    );
    let count = |len: usize, mat: usize, name: &str| -> Result<usize> {
        if mat == 0 {
            // Empty matrices: any index reads nothing.
            return Ok(usize::MAX);
        }
        if !len.is_multiple_of(mat) {
            bail!("{name}: {len} elements is not a whole number of {mat}-element matrices");
        }
        Ok(len / mat)
    };
    let (na, nb, nc) = (
        count(a.len(), a_mat, "a")?,
        count(b.len(), b_mat, "b")?,
        count(c.len(), c_mat, "c")?,
    );
    for e in entries {
        if e[0] >= na || e[1] >= nb || e[2] >= nc {
            bail!("entries: {e:?} is out of range for {na} a, {nb} b and {nc} c matrices");
        }
    }
    c.fill(0.0);
    if c_mat == 0 || k == 0 {
        return Ok(());
    }
    let lda = if trans_a { m } else { k };
    let ldb = if trans_b { k } else { n };
    crate::scratch::fallible("matmul", || {
        for &[ia, ib, ic] in entries {
            let am = Mat::new(&a[ia * a_mat..(ia + 1) * a_mat], lda, trans_a);
            let bm = Mat::new(&b[ib * b_mat..(ib + 1) * b_mat], ldb, trans_b);
            sgemm_unchecked(
                m,
                n,
                k,
                1.0,
                am,
                bm,
                1.0,
                &mut c[ic * c_mat..(ic + 1) * c_mat],
                n,
            );
        }
        Ok(())
    })
}
