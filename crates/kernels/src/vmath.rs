//! Vector math shared by the pointwise kernels (activation, softmax/loss, elementwise): an AVX2
//! `exp` for the transcendental functions LLVM cannot vectorise, lane-parallel sums and `axpy`
//! (also gemv's), and the chunked parallel loop that keeps small tensors on the calling thread.
use crate::simd::{dispatch, kernel, Isa};
use rayon::prelude::*;

/// Floats per parallel task (128 KiB): big enough that rayon's per-task cost is noise, small
/// enough that a 2-core machine splits a 224x224x64 activation into hundreds of tasks. A power
/// of two, so chunk starts never straddle a 2^32 boundary (dropout keys its hash on that).
pub(crate) const GRAIN: usize = 1 << 15;

/// Runs `f(start, chunk)` over `GRAIN`-sized chunks of `out`, in parallel only when there is
/// more than one chunk: a small tensor costs one plain call on the current thread.
pub(crate) fn for_each_chunk(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if out.len() <= GRAIN {
        f(0, out);
    } else {
        out.par_chunks_mut(GRAIN)
            .enumerate()
            .for_each(|(i, c)| f(i * GRAIN, c));
    }
}

/// Rows per parallel task for row-wise kernels over `cols`-wide rows.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (GRAIN / cols.max(1)).max(1)
}

/// Lanes of the accumulators below: independent partial sums the compiler keeps in vector
/// registers (two ymm under AVX2, four xmm otherwise). Both paths add in the same order, so
/// they agree bit for bit.
const LANES: usize = 16;

#[inline(always)]
fn fold_lanes(acc: [f32; LANES]) -> f32 {
    let mut s = 0.0f64;
    for v in acc {
        s += v as f64;
    }
    s as f32
}

kernel! {
    /// Sum of `x`.
    pub(crate) fn sum(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += v;
        }
        fold_lanes(acc)
    }
}

kernel! {
    /// Sum of `x[i] * y[i]`.
    pub(crate) fn dot(x: &[f32], y: &[f32]) -> f32 {
        let mut acc = [0.0f32; LANES];
        let mut xc = x.chunks_exact(LANES);
        let mut yc = y.chunks_exact(LANES);
        for (a, b) in (&mut xc).zip(&mut yc) {
            for i in 0..LANES {
                acc[i] += a[i] * b[i];
            }
        }
        for ((s, &a), &b) in acc.iter_mut().zip(xc.remainder()).zip(yc.remainder()) {
            *s += a * b;
        }
        fold_lanes(acc)
    }
}

kernel! {
    /// Four dot products with one vector, `[x0 . y, x1 . y, x2 . y, x3 . y]`, each summed
    /// exactly as [`dot`] sums it (the same results bit for bit): reading four rows at once
    /// keeps more loads in flight, so a matrix-vector product streams its matrix from memory
    /// faster than one row at a time.
    pub(crate) fn dot4(x: [&[f32]; 4], y: &[f32]) -> [f32; 4] {
        let [x0, x1, x2, x3] = x;
        let n = y.len();
        let (x0, x1, x2, x3) = (&x0[..n], &x1[..n], &x2[..n], &x3[..n]);
        let mut a0 = [0.0f32; LANES];
        let mut a1 = [0.0f32; LANES];
        let mut a2 = [0.0f32; LANES];
        let mut a3 = [0.0f32; LANES];
        let chunks = y
            .chunks_exact(LANES)
            .zip(x0.chunks_exact(LANES))
            .zip(x1.chunks_exact(LANES))
            .zip(x2.chunks_exact(LANES))
            .zip(x3.chunks_exact(LANES));
        for ((((yc, c0), c1), c2), c3) in chunks {
            for i in 0..LANES {
                a0[i] += c0[i] * yc[i];
                a1[i] += c1[i] * yc[i];
                a2[i] += c2[i] * yc[i];
                a3[i] += c3[i] * yc[i];
            }
        }
        let tail = n / LANES * LANES;
        let mut out = [0.0f32; 4];
        for ((o, a), xr) in out.iter_mut().zip([a0, a1, a2, a3]).zip([x0, x1, x2, x3]) {
            let mut a = a;
            for ((s, &u), &v) in a.iter_mut().zip(&xr[tail..]).zip(&y[tail..]) {
                *s += u * v;
            }
            *o = fold_lanes(a);
        }
        out
    }
}

kernel! {
    /// `y += s * x`.
    pub(crate) fn axpy(y: &mut [f32], s: f32, x: &[f32]) {
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi += s * xi;
        }
    }
}

kernel! {
    /// Largest element (NaNs are skipped here; they still poison whatever uses the row).
    pub(crate) fn max(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a = if v > *a { v } else { *a };
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a = if v > *a { v } else { *a };
        }
        acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
}

kernel! {
    /// `y *= s`.
    pub(crate) fn scale(y: &mut [f32], s: f32) {
        for v in y.iter_mut() {
            *v *= s;
        }
    }
}

/// AVX2+FMA versions of the kernels that need `exp`, which LLVM cannot vectorise (it is a libm
/// call). The scalar fallbacks use libm's `expf`/`tanhf`, so tests comparing the two paths check
/// the approximations below against the accurate functions.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// e^x, Cephes' `expf` scheme: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for
    /// e^r, and 2^n built in the exponent bits. Relative error about 2 ulp on [-87.3, 88];
    /// below that range the result is 0 (libm would give denormals), above it e^88. NaN
    /// propagates.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(x_in: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.3);
        // Ordered compare: false for NaN, so NaN is not flushed.
        let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x_in, lo);
        // max/min return their second operand when either is NaN: keep x second to propagate it.
        let x = _mm256_min_ps(_mm256_set1_ps(88.0), _mm256_max_ps(lo, x_in));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // r = x - n ln2, with ln2 split in two so n * ln2_hi is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(underflow, _mm256_mul_ps(e, _mm256_castsi256_ps(bits)))
    }

    /// Applies `f` to `x` eight floats at a time into `y` (same length); the tail goes through
    /// a zero-padded register so every element sees the same approximation.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn map8(x: &[f32], y: &mut [f32], f: impl Fn(__m256) -> __m256) {
        let n = x.len().min(y.len());
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), f(v));
            i += 8;
        }
        if i < n {
            let mut buf = [0.0f32; 8];
            buf[..n - i].copy_from_slice(&x[i..n]);
            let v = f(_mm256_loadu_ps(buf.as_ptr()));
            _mm256_storeu_ps(buf.as_mut_ptr(), v);
            y[i..n].copy_from_slice(&buf[..n - i]);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn abs8(x: __m256) -> __m256 {
        _mm256_andnot_ps(_mm256_set1_ps(-0.0), x)
    }

    /// 1 / (1 + e^-x) via e = e^-|x| (never overflows): 1/(1+e) for x >= 0, e/(1+e) below.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid8(x: __m256) -> __m256 {
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), abs8(x)));
        let s = _mm256_div_ps(_mm256_set1_ps(1.0), _mm256_add_ps(_mm256_set1_ps(1.0), e));
        let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_setzero_ps());
        _mm256_blendv_ps(s, _mm256_mul_ps(e, s), neg)
    }

    /// tanh: Cephes' odd polynomial below |x| = 0.625 (where (1-e)/(1+e) would cancel), and
    /// (1 - e)/(1 + e) with e = e^(-2|x|) above; the sign of x is put back at the end.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh8(x: __m256) -> __m256 {
        let ax = abs8(x);
        let e = exp8(_mm256_mul_ps(ax, _mm256_set1_ps(-2.0)));
        let one = _mm256_set1_ps(1.0);
        let big = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
        let z = _mm256_mul_ps(ax, ax);
        let mut p = _mm256_set1_ps(-5.704_988_7e-3);
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.063_909e-2));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.373_971_6e-2));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.333_144_2e-1));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.333_328e-1));
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), ax, ax);
        let use_small = _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625));
        let r = _mm256_blendv_ps(big, small, use_small);
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        _mm256_or_ps(r, sign)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sigmoid(x: &[f32], y: &mut [f32]) {
        map8(x, y, |v| sigmoid8(v))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh(x: &[f32], y: &mut [f32]) {
        map8(x, y, |v| tanh8(v))
    }

    /// y = e^(x - shift); returns the sum of y (summed in 8 lanes, then in f64).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shift(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        let n = x.len().min(y.len());
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), s));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), v);
            acc = _mm256_add_ps(acc, v);
            i += 8;
        }
        let mut total = hsum(acc);
        if i < n {
            map8(&x[i..n], &mut y[i..n], |v| exp8(_mm256_sub_ps(v, s)));
            total += y[i..n].iter().map(|&v| v as f64).sum::<f64>();
        }
        total as f32
    }

    /// Sum of e^(x - shift), nothing stored (log-softmax needs only the sum).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shift_sum(x: &[f32], shift: f32) -> f32 {
        let s = _mm256_set1_ps(shift);
        let mut acc = _mm256_setzero_ps();
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), s)));
        }
        let mut total = hsum(acc);
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0.0f32; 8];
            map8(rest, &mut buf[..rest.len()], |v| exp8(_mm256_sub_ps(v, s)));
            total += buf[..rest.len()].iter().map(|&v| v as f64).sum::<f64>();
        }
        total as f32
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f64 {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        lanes.iter().map(|&x| x as f64).sum()
    }
}

/// NEON versions of the same kernels: the same approximations as [`avx2`] on 4-wide vectors
/// (so the two SIMD levels agree to rounding), with `fmla`/`fmls` for the fused steps.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    /// e^x as [`super::avx2::exp8`]: x = n ln2 + r, a degree-6 polynomial for e^r, 2^n in the
    /// exponent bits; 0 below -87.3, e^88 above 88, NaN propagated.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn exp4(x_in: float32x4_t) -> float32x4_t {
        let lo = vdupq_n_f32(-87.3);
        // Ordered compare: false for NaN, so NaN is not flushed.
        let underflow = vcltq_f32(x_in, lo);
        // fmax/fmin return NaN when either operand is NaN, so NaN carries through.
        let x = vminq_f32(vdupq_n_f32(88.0), vmaxq_f32(lo, x_in));
        let n = vrndnq_f32(vmulq_n_f32(x, std::f32::consts::LOG2_E));
        // r = x - n ln2, with ln2 split in two so n * ln2_hi is exact.
        let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
        let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
        let mut p = vdupq_n_f32(1.987_569_1e-4);
        p = vfmaq_f32(vdupq_n_f32(1.398_199_9e-3), p, r);
        p = vfmaq_f32(vdupq_n_f32(8.333_452e-3), p, r);
        p = vfmaq_f32(vdupq_n_f32(4.166_579_6e-2), p, r);
        p = vfmaq_f32(vdupq_n_f32(1.666_666_5e-1), p, r);
        p = vfmaq_f32(vdupq_n_f32(0.5), p, r);
        let r2 = vmulq_f32(r, r);
        let e = vaddq_f32(vfmaq_f32(r, p, r2), vdupq_n_f32(1.0));
        let bits = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
        let y = vmulq_f32(e, vreinterpretq_f32_s32(bits));
        vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), underflow))
    }

    /// Applies `f` to `x` four floats at a time into `y` (same length); the tail goes through a
    /// zero-padded register so every element sees the same approximation.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn map4(x: &[f32], y: &mut [f32], f: impl Fn(float32x4_t) -> float32x4_t) {
        let n = x.len().min(y.len());
        let mut i = 0;
        while i + 4 <= n {
            vst1q_f32(y.as_mut_ptr().add(i), f(vld1q_f32(x.as_ptr().add(i))));
            i += 4;
        }
        if i < n {
            let mut buf = [0.0f32; 4];
            buf[..n - i].copy_from_slice(&x[i..n]);
            vst1q_f32(buf.as_mut_ptr(), f(vld1q_f32(buf.as_ptr())));
            y[i..n].copy_from_slice(&buf[..n - i]);
        }
    }

    /// 1 / (1 + e^-x) via e = e^-|x| (never overflows): 1/(1+e) for x >= 0, e/(1+e) below.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn sigmoid4(x: float32x4_t) -> float32x4_t {
        let e = exp4(vnegq_f32(vabsq_f32(x)));
        let s = vdivq_f32(vdupq_n_f32(1.0), vaddq_f32(vdupq_n_f32(1.0), e));
        vbslq_f32(vcltzq_f32(x), vmulq_f32(e, s), s)
    }

    /// tanh as [`super::avx2::tanh8`]: an odd polynomial below |x| = 0.625, (1 - e)/(1 + e)
    /// with e = e^(-2|x|) above, and the sign of x put back.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn tanh4(x: float32x4_t) -> float32x4_t {
        let ax = vabsq_f32(x);
        let e = exp4(vmulq_n_f32(ax, -2.0));
        let one = vdupq_n_f32(1.0);
        let big = vdivq_f32(vsubq_f32(one, e), vaddq_f32(one, e));
        let z = vmulq_f32(ax, ax);
        let mut p = vdupq_n_f32(-5.704_988_7e-3);
        p = vfmaq_f32(vdupq_n_f32(2.063_909e-2), p, z);
        p = vfmaq_f32(vdupq_n_f32(-5.373_971_6e-2), p, z);
        p = vfmaq_f32(vdupq_n_f32(1.333_144_2e-1), p, z);
        p = vfmaq_f32(vdupq_n_f32(-3.333_328e-1), p, z);
        let small = vfmaq_f32(ax, vmulq_f32(p, z), ax);
        let r = vbslq_f32(vcltq_f32(ax, vdupq_n_f32(0.625)), small, big);
        let sign = vandq_u32(vreinterpretq_u32_f32(x), vdupq_n_u32(0x8000_0000));
        vreinterpretq_f32_u32(vorrq_u32(vreinterpretq_u32_f32(r), sign))
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn sigmoid(x: &[f32], y: &mut [f32]) {
        map4(x, y, |v| sigmoid4(v))
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn tanh(x: &[f32], y: &mut [f32]) {
        map4(x, y, |v| tanh4(v))
    }

    /// y = e^(x - shift); returns the sum of y (summed in 4 lanes, then in f64).
    #[target_feature(enable = "neon")]
    pub unsafe fn exp_shift(x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
        let n = x.len().min(y.len());
        let s = vdupq_n_f32(shift);
        let mut acc = vdupq_n_f32(0.0);
        let mut i = 0;
        while i + 4 <= n {
            let v = exp4(vsubq_f32(vld1q_f32(x.as_ptr().add(i)), s));
            vst1q_f32(y.as_mut_ptr().add(i), v);
            acc = vaddq_f32(acc, v);
            i += 4;
        }
        let mut total = hsum(acc);
        if i < n {
            map4(&x[i..n], &mut y[i..n], |v| exp4(vsubq_f32(v, s)));
            total += y[i..n].iter().map(|&v| v as f64).sum::<f64>();
        }
        total as f32
    }

    /// Sum of e^(x - shift), nothing stored.
    #[target_feature(enable = "neon")]
    pub unsafe fn exp_shift_sum(x: &[f32], shift: f32) -> f32 {
        let s = vdupq_n_f32(shift);
        let mut acc = vdupq_n_f32(0.0);
        let mut chunks = x.chunks_exact(4);
        for c in &mut chunks {
            acc = vaddq_f32(acc, exp4(vsubq_f32(vld1q_f32(c.as_ptr()), s)));
        }
        let mut total = hsum(acc);
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0.0f32; 4];
            map4(rest, &mut buf[..rest.len()], |v| exp4(vsubq_f32(v, s)));
            total += buf[..rest.len()].iter().map(|&v| v as f64).sum::<f64>();
        }
        total as f32
    }

    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn hsum(v: float32x4_t) -> f64 {
        let mut lanes = [0.0f32; 4];
        vst1q_f32(lanes.as_mut_ptr(), v);
        lanes.iter().map(|&x| x as f64).sum()
    }
}

/// Scalar reference for the softmax pieces: y = e^(x - shift), returns the sum.
pub(crate) fn exp_shift(isa: Isa, x: &[f32], shift: f32, y: &mut [f32]) -> f32 {
    dispatch!(isa,
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { avx2::exp_shift(x, shift, y) },
        // SAFETY: the neon arm runs only on CPUs with NEON.
        neon => unsafe { neon::exp_shift(x, shift, y) },
        _ => {
            let mut total = 0.0f64;
            for (o, &v) in y.iter_mut().zip(x) {
                *o = (v - shift).exp();
                total += *o as f64;
            }
            total as f32
        }
    )
}

/// Sum of e^(x - shift).
pub(crate) fn exp_shift_sum(isa: Isa, x: &[f32], shift: f32) -> f32 {
    dispatch!(isa,
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { avx2::exp_shift_sum(x, shift) },
        // SAFETY: the neon arm runs only on CPUs with NEON.
        neon => unsafe { neon::exp_shift_sum(x, shift) },
        _ => x.iter().map(|&v| (v - shift).exp() as f64).sum::<f64>() as f32,
    )
}
