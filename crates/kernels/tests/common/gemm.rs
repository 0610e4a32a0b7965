//! One sgemm problem checked against its definition, shared by the table test (`gemm.rs`) and
//! the property test (`kernel_props.rs`).
use super::rand_vec;
use ferroconv_kernels::gemm::sgemm;

/// `C = alpha * op(A) * op(B) + beta * C` with `op(A)` of `m x k`, every leading dimension
/// padded by `pad` floats past the BLAS minimum.
#[derive(Clone, Copy, Debug)]
pub struct GemmCase {
    pub ta: bool,
    pub tb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub pad: usize,
}

impl GemmCase {
    /// Runs sgemm on deterministic inputs and compares it with an f64 loop
    /// (`|got - want| <= 1e-5 sqrt(k) (1 + |want|)`); the padding between rows of C must be
    /// left untouched. Returns C.
    pub fn check(&self) -> Vec<f32> {
        let GemmCase {
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            beta,
            pad,
        } = *self;
        // BLAS leading dimensions: at least the row length and at least 1 (k may be 0).
        let lda = (if ta { m } else { k }).max(1) + pad;
        let ldb = (if tb { k } else { n }).max(1) + pad;
        let ldc = n + pad;
        let a = rand_vec((if ta { k } else { m }) * lda, 5, 1.0);
        let b = rand_vec((if tb { n } else { k }) * ldb, 6, 1.0);
        let c0 = rand_vec(m * ldc, 7, 1.0);
        let at = |i: usize, l: usize| if ta { a[l * lda + i] } else { a[i * lda + l] } as f64;
        let bt = |l: usize, j: usize| if tb { b[j * ldb + l] } else { b[l * ldb + j] } as f64;
        let mut c = c0.clone();
        sgemm(ta, tb, m, n, k, alpha, &a, lda, &b, ldb, beta, &mut c, ldc).unwrap();
        let tol = 1e-5 * (k as f64).sqrt().max(1.0);
        for i in 0..m {
            for j in 0..ldc {
                let (got, old) = (c[i * ldc + j], c0[i * ldc + j]);
                if j >= n {
                    assert_eq!(
                        got.to_bits(),
                        old.to_bits(),
                        "{self:?}: sgemm wrote padding"
                    );
                    continue;
                }
                let dot: f64 = (0..k).map(|l| at(i, l) * bt(l, j)).sum();
                let prior = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * old as f64
                };
                let want = alpha as f64 * dot + prior;
                assert!(
                    (got as f64 - want).abs() <= tol * (1.0 + want.abs()),
                    "{self:?}: c[{i}][{j}] = {got}, want {want}"
                );
            }
        }
        c
    }
}
