//! Recurrent cells: the gate math of one GRU step with torch.nn.GRU's equations (gate order
//! r, z, n), forward and backward. The two matrix products around it (x W_ih^T + b_ih for every
//! step at once, h W_hh^T + b_hh per step) stay GEMMs in the caller; what is fused here is the
//! element-wise part, one pass over a step's [N, 3H] pre-activations instead of a dozen ops.
//!
//!   r  = sigmoid(gi_r + gh_r)          z = sigmoid(gi_z + gh_z)
//!   n  = tanh(gi_n + r * gh_n)         h' = (1 - z) * n + z * h
use crate::error::{check_len, check_positive, Result};

/// sigmoid that never evaluates exp of a large positive number (as the activation kernels).
fn sigmoid(v: f32) -> f32 {
    let e = (-v.abs()).exp();
    let s = 1.0 / (1.0 + e);
    if v < 0.0 {
        e * s
    } else {
        s
    }
}

fn check(batch: usize, hidden: usize, bufs: &[(&str, usize, usize)]) -> Result<()> {
    check_positive("batch", batch)?;
    check_positive("hidden", hidden)?;
    for &(name, len, per_row) in bufs {
        let expected = batch
            .checked_mul(per_row)
            .ok_or_else(|| crate::KernelError(format!("{name}: size overflows")))?;
        check_len(name, len, expected)?;
    }
    Ok(())
}

/// One GRU step: `h_out` [N, H] from the input projection `gi` [N, 3H], the hidden projection
/// `gh` [N, 3H] (biases included in both) and the previous state `h` [N, H]. `gates` [N, 3H]
/// receives r, z and n for the backward pass.
pub fn gru_cell_forward(
    gi: &[f32],
    gh: &[f32],
    h: &[f32],
    batch: usize,
    hidden: usize,
    h_out: &mut [f32],
    gates: &mut [f32],
) -> Result<()> {
    let three = 3 * hidden;
    check(
        batch,
        hidden,
        &[
            ("gi", gi.len(), three),
            ("gh", gh.len(), three),
            ("h", h.len(), hidden),
            ("hOut", h_out.len(), hidden),
            ("gates", gates.len(), three),
        ],
    )?;
    for b in 0..batch {
        let (gi, gh) = (&gi[b * three..][..three], &gh[b * three..][..three]);
        let g = &mut gates[b * three..][..three];
        for j in 0..hidden {
            let r = sigmoid(gi[j] + gh[j]);
            let z = sigmoid(gi[hidden + j] + gh[hidden + j]);
            let n = (gi[2 * hidden + j] + r * gh[2 * hidden + j]).tanh();
            g[j] = r;
            g[hidden + j] = z;
            g[2 * hidden + j] = n;
            h_out[b * hidden + j] = (1.0 - z) * n + z * h[b * hidden + j];
        }
    }
    Ok(())
}

/// The backward of [`gru_cell_forward`]: from the saved `gates`, `gh`, `h` and the gradient of
/// h' (`grad_h_out` [N, H]), writes `grads` [N, 7H]: per row the gradient of gi (3H), of gh
/// (3H) and of h through the z-gate path (H; the path through gh adds on via W_hh).
pub fn gru_cell_backward(
    gates: &[f32],
    gh: &[f32],
    h: &[f32],
    grad_h_out: &[f32],
    batch: usize,
    hidden: usize,
    grads: &mut [f32],
) -> Result<()> {
    let three = 3 * hidden;
    let seven = 7 * hidden;
    check(
        batch,
        hidden,
        &[
            ("gates", gates.len(), three),
            ("gh", gh.len(), three),
            ("h", h.len(), hidden),
            ("gradHOut", grad_h_out.len(), hidden),
            ("grads", grads.len(), seven),
        ],
    )?;
    for b in 0..batch {
        let (g, ghr) = (&gates[b * three..][..three], &gh[b * three..][..three]);
        let out = &mut grads[b * seven..][..seven];
        for j in 0..hidden {
            let (r, z, n) = (g[j], g[hidden + j], g[2 * hidden + j]);
            let d = grad_h_out[b * hidden + j];
            let dn = d * (1.0 - z) * (1.0 - n * n);
            let dz = d * (h[b * hidden + j] - n) * z * (1.0 - z);
            let dr = dn * ghr[2 * hidden + j] * r * (1.0 - r);
            // gi: r, z, n; gh: r, z, r * n; then h.
            out[j] = dr;
            out[hidden + j] = dz;
            out[2 * hidden + j] = dn;
            out[three + j] = dr;
            out[three + hidden + j] = dz;
            out[three + 2 * hidden + j] = dn * r;
            out[2 * three + j] = d * z;
        }
    }
    Ok(())
}
