//! The GRU step's gate kernel: its backward against finite differences of its forward (in
//! gi, gh and h), the forward against the equations in f64, and its errors on bad lengths.
use ferroconv_kernels::recurrent::{gru_cell_backward, gru_cell_forward};

mod common;
use common::{check_fd, rand_vec};

const N: usize = 3;
const H: usize = 4;

fn forward(gi: &[f32], gh: &[f32], h: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0; N * H];
    let mut gates = vec![0.0; N * 3 * H];
    gru_cell_forward(gi, gh, h, N, H, &mut out, &mut gates).unwrap();
    (out, gates)
}

#[test]
fn forward_matches_the_equations() {
    let (gi, gh, h) = (
        rand_vec(N * 3 * H, 1, 2.0),
        rand_vec(N * 3 * H, 2, 2.0),
        rand_vec(N * H, 3, 1.0),
    );
    let (out, _) = forward(&gi, &gh, &h);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    for b in 0..N {
        for j in 0..H {
            let at = |v: &[f32], gate: usize| v[b * 3 * H + gate * H + j] as f64;
            let r = sig(at(&gi, 0) + at(&gh, 0));
            let z = sig(at(&gi, 1) + at(&gh, 1));
            let n = (at(&gi, 2) + r * at(&gh, 2)).tanh();
            let want = (1.0 - z) * n + z * h[b * H + j] as f64;
            assert!((out[b * H + j] as f64 - want).abs() < 1e-6, "h'[{b},{j}]");
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let (gi, gh, h) = (
        rand_vec(N * 3 * H, 4, 2.0),
        rand_vec(N * 3 * H, 5, 2.0),
        rand_vec(N * H, 6, 1.0),
    );
    let g = rand_vec(N * H, 7, 1.0);
    let (_, gates) = forward(&gi, &gh, &h);
    let mut grads = vec![0.0; N * 7 * H];
    gru_cell_backward(&gates, &gh, &h, &g, N, H, &mut grads).unwrap();
    let pick = |part: usize, width: usize| -> Vec<f32> {
        (0..N)
            .flat_map(|b| grads[b * 7 * H + part..][..width].to_vec())
            .collect()
    };
    let dot = |out: &[f32]| {
        out.iter()
            .zip(&g)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>()
    };
    check_fd("gi", &gi, &pick(0, 3 * H), 1e-2, 0..N * 3 * H, |x| {
        dot(&forward(x, &gh, &h).0)
    });
    check_fd("gh", &gh, &pick(3 * H, 3 * H), 1e-2, 0..N * 3 * H, |x| {
        dot(&forward(&gi, x, &h).0)
    });
    check_fd("h", &h, &pick(6 * H, H), 1e-2, 0..N * H, |x| {
        dot(&forward(&gi, &gh, x).0)
    });
}

#[test]
fn bad_lengths_are_errors() {
    let mut out = vec![0.0; N * H];
    let mut gates = vec![0.0; N * 3 * H];
    let short = vec![0.0; N * 3 * H - 1];
    let ok = vec![0.0; N * 3 * H];
    let h = vec![0.0; N * H];
    let e = gru_cell_forward(&short, &ok, &h, N, H, &mut out, &mut gates).unwrap_err();
    assert!(
        e.to_string().contains("gi: expected 36 elements, got 35"),
        "{e}"
    );
    let e = gru_cell_forward(&ok, &ok, &h, N, 0, &mut out, &mut gates).unwrap_err();
    assert!(e.to_string().contains("hidden"), "{e}");
    let mut grads = vec![0.0; N * 7 * H - 2];
    let e = gru_cell_backward(&gates, &ok, &h, &h, N, H, &mut grads).unwrap_err();
    assert!(e.to_string().contains("grads"), "{e}");
}
