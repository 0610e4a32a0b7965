//! Recurrent cells: one GRU step's gate math (ferroconv_kernels::recurrent), forward and backward.
use crate::args::sizes;
use crate::runtime::{write_into, write_into_pair};
use ferroconv_kernels::recurrent;
use napi::bindgen_prelude::Float32Array;
use napi_derive::napi;

/// hOut [N, H] and gates [N, 3H] (r, z, n, kept for the backward) of one GRU step, from the
/// projections gi = x W_ih^T + b_ih and gh = h W_hh^T + b_hh ([N, 3H] each) and h [N, H];
/// `dims` = [N, H].
#[napi(catch_unwind, js_name = "gruCellForward")]
pub fn gru_cell_forward(
    gi: Float32Array,
    gh: Float32Array,
    h: Float32Array,
    dims: Vec<f64>,
    mut h_out: Float32Array,
    mut gates: Float32Array,
) -> napi::Result<()> {
    let [batch, hidden] = sizes::<2>("dims", &dims)?;
    write_into_pair(
        "gruCellForward",
        ("hOut", &mut h_out),
        ("gates", Some(&mut gates)),
        &[("gi", &gi), ("gh", &gh), ("h", &h)],
        |y, g| match g {
            Some(g) => recurrent::gru_cell_forward(&gi, &gh, &h, batch, hidden, y, g),
            None => Err(ferroconv_kernels::KernelError("gates: missing".into())),
        },
    )
}

/// grads [N, 7H] (per row: d gi [3H], d gh [3H], d h through the gates [H]) of gruCellForward,
/// from its saved gates, gh, h and gradHOut [N, H]; `dims` = [N, H].
#[napi(catch_unwind, js_name = "gruCellBackward")]
pub fn gru_cell_backward(
    gates: Float32Array,
    gh: Float32Array,
    h: Float32Array,
    grad_h_out: Float32Array,
    dims: Vec<f64>,
    mut grads: Float32Array,
) -> napi::Result<()> {
    let [batch, hidden] = sizes::<2>("dims", &dims)?;
    write_into(
        "gruCellBackward",
        ("grads", &mut grads),
        &[
            ("gates", &gates),
            ("gh", &gh),
            ("h", &h),
            ("gradHOut", &grad_h_out),
        ],
        |y| recurrent::gru_cell_backward(&gates, &gh, &h, &grad_h_out, batch, hidden, y),
    )
}
