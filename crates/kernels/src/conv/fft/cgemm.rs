//! The pointwise stage of the FFT convolution: at every frequency bin, a small complex matrix
//! product over channels (or over the batch, for the weight gradient),
//! `C[i, j] (=|+=) sum_k A[i, k] * op(B[k, j])` with `op` the identity or the conjugate.
//!
//! Operands are tile-major sets of planar spectra (see `plan.rs`); a matrix element is a whole
//! spectrum, addressed by a plane index `base + i * s_row + k * s_col`. One call handles a range
//! of tiles (8 bins each) and a range of rows of `C`, which is what a parallel task owns.
use super::plan::TILE;
use crate::simd::dispatch;

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
    pub fn at(&self, r: usize, c: usize) -> usize {
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

/// Floats per plane within one tile.
const PLANE: usize = 2 * TILE;

/// A tile-major spectra buffer (see `plan.rs`) and how many planes it holds.
#[derive(Clone, Copy)]
pub(crate) struct Spectra<'a> {
    pub data: &'a [f32],
    pub planes: usize,
}

/// The same for the result, written through a raw pointer by several tasks at once.
#[derive(Clone, Copy)]
pub(crate) struct SpectraOut {
    pub ptr: *mut f32,
    pub planes: usize,
}

/// Which part of a product one call computes: tiles `t0..t1`, result rows `i0..i1`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part {
    pub t0: usize,
    pub t1: usize,
    pub i0: usize,
    pub i1: usize,
}

/// Computes `part` of `prod`.
///
/// # Safety
/// `c.ptr` must be valid for writes of every tile `t0..t1` of every plane `prod.c` addresses for
/// rows `i0..i1`, and no other thread may access those floats during the call.
pub(crate) unsafe fn run(prod: &Product, a: Spectra, b: Spectra, c: SpectraOut, part: Part) {
    if part.i0 >= part.i1 || part.t0 >= part.t1 || prod.n == 0 || prod.k == 0 {
        return;
    }
    let last_a = prod
        .a
        .at(part.i1 - 1, prod.k - 1)
        .max(prod.a.at(part.i0, 0));
    let last_b = prod.b.at(prod.k - 1, prod.n - 1).max(prod.b.at(0, 0));
    assert!(
        last_a < a.planes
            && last_b < b.planes
            && part.t1 * a.planes * PLANE <= a.data.len()
            && part.t1 * b.planes * PLANE <= b.data.len(),
        "fft: product operand out of range"
    );
    dispatch!(crate::simd::isa(),
        // SAFETY: the CPU has AVX2+FMA (this arm); operands checked above; `c` per contract.
        avx2 => unsafe { avx2::run(prod, a, b, c, part) },
        // SAFETY: operands checked above; `c` per contract.
        _ => unsafe { run_scalar(prod, a, b, c, part) },
    )
}

unsafe fn run_scalar(prod: &Product, a: Spectra, b: Spectra, c: SpectraOut, part: Part) {
    for t in part.t0..part.t1 {
        let a_t = &a.data[t * a.planes * PLANE..];
        let b_t = &b.data[t * b.planes * PLANE..];
        for i in part.i0..part.i1 {
            for j in 0..prod.n {
                let mut acc_re = [0f32; TILE];
                let mut acc_im = [0f32; TILE];
                for k in 0..prod.k {
                    let pa = &a_t[prod.a.at(i, k) * PLANE..][..PLANE];
                    let pb = &b_t[prod.b.at(k, j) * PLANE..][..PLANE];
                    let (ar, ai) = pa.split_at(TILE);
                    let (br, bi) = pb.split_at(TILE);
                    for f in 0..TILE {
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
                // SAFETY: this tile of this plane of C is one this call owns (contract).
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        c.ptr.add((t * c.planes + prod.c.at(i, j)) * PLANE),
                        PLANE,
                    )
                };
                let (cr, ci) = out.split_at_mut(TILE);
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
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Part, Product, Spectra, SpectraOut, PLANE, TILE};
    use std::arch::x86_64::*;

    /// Register tile: 2 x 2 complex results of 8 bins each (8 accumulators), which with the
    /// four B vectors and two A vectors of one step fits the 16 ymm registers.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(prod: &Product, a: Spectra, b: Spectra, c: SpectraOut, part: Part) {
        let a_ks = prod.a.s_col * PLANE;
        let b_ks = prod.b.s_row * PLANE;
        for t in part.t0..part.t1 {
            let ap = a.data.as_ptr().add(t * a.planes * PLANE);
            let bp = b.data.as_ptr().add(t * b.planes * PLANE);
            let cp = c.ptr.add(t * c.planes * PLANE);
            let mut j = 0;
            while j < prod.n {
                let nr = (prod.n - j).min(2);
                let b_cols = [
                    bp.add(prod.b.at(0, j) * PLANE),
                    bp.add(prod.b.at(0, j + nr - 1) * PLANE),
                ];
                let mut i = part.i0;
                while i < part.i1 {
                    let mr = (part.i1 - i).min(2);
                    let a_rows = [
                        ap.add(prod.a.at(i, 0) * PLANE),
                        ap.add(prod.a.at(i + mr - 1, 0) * PLANE),
                    ];
                    let c_at = |ii: usize, jj: usize| cp.add(prod.c.at(i + ii, j + jj) * PLANE);
                    let c_tile = [
                        [c_at(0, 0), c_at(0, nr - 1)],
                        [c_at(mr - 1, 0), c_at(mr - 1, nr - 1)],
                    ];
                    let args = (a_rows, a_ks, b_cols, b_ks, c_tile, prod.k, prod.accumulate);
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
                    i += mr;
                }
                j += nr;
            }
        }
    }

    type TileArgs = (
        [*const f32; 2],
        usize,
        [*const f32; 2],
        usize,
        [[*mut f32; 2]; 2],
        usize,
        bool,
    );

    #[inline(always)]
    unsafe fn tile<const MR: usize, const NR: usize, const CONJ: bool>(
        (a, a_ks, b, b_ks, c, k, accumulate): TileArgs,
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
                bi[jj] = _mm256_loadu_ps(b[jj].add(bo + TILE));
            }
            for ii in 0..MR {
                let ar = _mm256_loadu_ps(a[ii].add(ao));
                let ai = _mm256_loadu_ps(a[ii].add(ao + TILE));
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
                let (pr, pi) = (c[ii][jj], c[ii][jj].add(TILE));
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
