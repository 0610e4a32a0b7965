//! The pointwise stage of the FFT convolution: at every frequency bin, a small complex matrix
//! product over channels (or over the batch, for the weight gradient),
//! `C[i, j] (=|+=) sum_k A[i, k] * op(B[k, j])` with `op` the identity or the conjugate.
//!
//! Operands are sets of planar spectra (see `plan.rs`); a matrix element is a whole spectrum,
//! addressed by a plane index `base + i * s_row + k * s_col`. Work is split into bin ranges so
//! that threads write disjoint parts of `C` and the slice of `A` and `B` they read stays in cache.
use super::plan::LANES;

/// How a matrix's elements map to spectrum planes: element `(r, c)` is plane
/// `base + r * s_row + c * s_col`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes {
    pub base: usize,
    pub s_row: usize,
    pub s_col: usize,
}

impl Planes {
    #[inline]
    fn at(&self, r: usize, c: usize) -> usize {
        self.base + r * self.s_row + c * self.s_col
    }
}

/// One product: `m x n` result over a `k`-long contraction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Planes,
    pub b: Planes,
    pub c: Planes,
    pub conj_b: bool,
    pub accumulate: bool,
}

/// A pointer to `C` that several threads write through. Sound only because every caller
/// hands each thread a disjoint set of (plane, bin range) pairs.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub *mut f32);
// SAFETY: see the type's comment; writes through it never overlap between threads.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Computes bins `f0..f1` (multiples of `LANES`, within `lb`) of the product.
///
/// # Safety
/// `c` must point to a buffer holding every plane `prod.c` addresses (each `2 * lb` floats),
/// `a` and `b` must hold every plane their maps address, and no other thread may access the
/// `(C plane, f0..f1)` ranges this call writes while it runs.
pub(crate) unsafe fn run(
    prod: &Product,
    a: &[f32],
    b: &[f32],
    c: SharedOut,
    lb: usize,
    f0: usize,
    f1: usize,
) {
    debug_assert!(f0.is_multiple_of(LANES) && f1.is_multiple_of(LANES) && f1 <= lb);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::use_avx2() {
            // SAFETY: the CPU has AVX2+FMA (checked by use_avx2); pointer contract as above.
            return unsafe { avx2::run(prod, a, b, c, lb, f0, f1) };
        }
    }
    unsafe { run_scalar(prod, a, b, c, lb, f0, f1) }
}

unsafe fn run_scalar(
    prod: &Product,
    a: &[f32],
    b: &[f32],
    c: SharedOut,
    lb: usize,
    f0: usize,
    f1: usize,
) {
    let sl = 2 * lb;
    let len = f1 - f0;
    let mut acc_re = vec![0f32; len];
    let mut acc_im = vec![0f32; len];
    for i in 0..prod.m {
        for j in 0..prod.n {
            acc_re.fill(0.0);
            acc_im.fill(0.0);
            for k in 0..prod.k {
                let pa = prod.a.at(i, k) * sl;
                let pb = prod.b.at(k, j) * sl;
                let (ar, ai) = (&a[pa + f0..pa + f1], &a[pa + lb + f0..pa + lb + f1]);
                let (br, bi) = (&b[pb + f0..pb + f1], &b[pb + lb + f0..pb + lb + f1]);
                for f in 0..len {
                    let (xr, xi, yr, yi) = (ar[f], ai[f], br[f], bi[f]);
                    if prod.conj_b {
                        acc_re[f] += xr * yr + xi * yi;
                        acc_im[f] += xi * yr - xr * yi;
                    } else {
                        acc_re[f] += xr * yr - xi * yi;
                        acc_im[f] += xr * yi + xi * yr;
                    }
                }
            }
            let pc = prod.c.at(i, j) * sl;
            // SAFETY: plane pc is inside C and the bin range is this call's own (contract).
            let (cr, ci) = unsafe {
                (
                    std::slice::from_raw_parts_mut(c.0.add(pc + f0), len),
                    std::slice::from_raw_parts_mut(c.0.add(pc + lb + f0), len),
                )
            };
            if prod.accumulate {
                cr.iter_mut().zip(&acc_re).for_each(|(o, v)| *o += v);
                ci.iter_mut().zip(&acc_im).for_each(|(o, v)| *o += v);
            } else {
                cr.copy_from_slice(&acc_re);
                ci.copy_from_slice(&acc_im);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Product, SharedOut, LANES};
    use std::arch::x86_64::*;

    /// Register tile: 2 x 2 complex results of 8 bins each (8 accumulators), which with the
    /// four B vectors and two A vectors of one step fits the 16 ymm registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(
        prod: &Product,
        a: &[f32],
        b: &[f32],
        c: SharedOut,
        lb: usize,
        f0: usize,
        f1: usize,
    ) {
        let sl = 2 * lb;
        // Bounds of every plane the loops below touch, checked once instead of per load.
        let max_a = prod.a.at(prod.m - 1, prod.k - 1);
        let max_b = prod.b.at(prod.k - 1, prod.n - 1);
        assert!((max_a + 1) * sl <= a.len() && (max_b + 1) * sl <= b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let a_ks = prod.a.s_col * sl;
        let b_ks = prod.b.s_row * sl;
        let mut f = f0;
        while f < f1 {
            let mut i = 0;
            while i < prod.m {
                let mr = (prod.m - i).min(2);
                let mut j = 0;
                while j < prod.n {
                    let nr = (prod.n - j).min(2);
                    let a_rows = [
                        ap.add(prod.a.at(i, 0) * sl + f),
                        ap.add(prod.a.at(i + mr - 1, 0) * sl + f),
                    ];
                    let b_cols = [
                        bp.add(prod.b.at(0, j) * sl + f),
                        bp.add(prod.b.at(0, j + nr - 1) * sl + f),
                    ];
                    let c_at = |ii: usize, jj: usize| c.0.add(prod.c.at(i + ii, j + jj) * sl + f);
                    let c_tile = [
                        [c_at(0, 0), c_at(0, nr - 1)],
                        [c_at(mr - 1, 0), c_at(mr - 1, nr - 1)],
                    ];
                    let args = (
                        a_rows,
                        a_ks,
                        b_cols,
                        b_ks,
                        c_tile,
                        lb,
                        prod.k,
                        prod.accumulate,
                    );
                    match (mr, nr, prod.conj_b) {
                        (2, 2, true) => tile::<2, 2, true>(args),
                        (2, 2, false) => tile::<2, 2, false>(args),
                        (2, _, true) => tile::<2, 1, true>(args),
                        (2, _, false) => tile::<2, 1, false>(args),
                        (_, 2, true) => tile::<1, 2, true>(args),
                        (_, 2, false) => tile::<1, 2, false>(args),
                        (_, _, true) => tile::<1, 1, true>(args),
                        (_, _, false) => tile::<1, 1, false>(args),
                    }
                    j += nr;
                }
                i += mr;
            }
            f += LANES;
        }
    }

    type TileArgs = (
        [*const f32; 2],
        usize,
        [*const f32; 2],
        usize,
        [[*mut f32; 2]; 2],
        usize,
        usize,
        bool,
    );

    #[inline(always)]
    unsafe fn tile<const MR: usize, const NR: usize, const CONJ: bool>(
        (a, a_ks, b, b_ks, c, lb, k, accumulate): TileArgs,
    ) {
        let mut cr = [[_mm256_setzero_ps(); NR]; MR];
        let mut ci = [[_mm256_setzero_ps(); NR]; MR];
        let mut ao = 0;
        let mut bo = 0;
        for _ in 0..k {
            let mut br = [_mm256_setzero_ps(); NR];
            let mut bi = [_mm256_setzero_ps(); NR];
            for jj in 0..NR {
                br[jj] = _mm256_loadu_ps(b[jj].add(bo));
                bi[jj] = _mm256_loadu_ps(b[jj].add(bo + lb));
            }
            for ii in 0..MR {
                let ar = _mm256_loadu_ps(a[ii].add(ao));
                let ai = _mm256_loadu_ps(a[ii].add(ao + lb));
                for jj in 0..NR {
                    cr[ii][jj] = _mm256_fmadd_ps(ar, br[jj], cr[ii][jj]);
                    if CONJ {
                        cr[ii][jj] = _mm256_fmadd_ps(ai, bi[jj], cr[ii][jj]);
                        ci[ii][jj] = _mm256_fmadd_ps(ai, br[jj], ci[ii][jj]);
                        ci[ii][jj] = _mm256_fnmadd_ps(ar, bi[jj], ci[ii][jj]);
                    } else {
                        cr[ii][jj] = _mm256_fnmadd_ps(ai, bi[jj], cr[ii][jj]);
                        ci[ii][jj] = _mm256_fmadd_ps(ar, bi[jj], ci[ii][jj]);
                        ci[ii][jj] = _mm256_fmadd_ps(ai, br[jj], ci[ii][jj]);
                    }
                }
            }
            ao += a_ks;
            bo += b_ks;
        }
        for ii in 0..MR {
            for jj in 0..NR {
                let (pr, pi) = (c[ii][jj], c[ii][jj].add(lb));
                if accumulate {
                    _mm256_storeu_ps(pr, _mm256_add_ps(_mm256_loadu_ps(pr), cr[ii][jj]));
                    _mm256_storeu_ps(pi, _mm256_add_ps(_mm256_loadu_ps(pi), ci[ii][jj]));
                } else {
                    _mm256_storeu_ps(pr, cr[ii][jj]);
                    _mm256_storeu_ps(pi, ci[ii][jj]);
                }
            }
        }
    }
}
