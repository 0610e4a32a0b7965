//! Eight f32 lanes as one value, for hand-blocked kernels written once for every SIMD level
//! that has vectors: one AVX2 register on x86-64, a pair of NEON registers on aarch64.
//!
//! Register-blocked kernels (the direct convolution's) are shaped by how many accumulators fit
//! in the register file, not by the vector width. Eight lanes keep one blocking for both ISAs:
//! AVX2's 16 registers hold the 8-vector blocks, NEON's 32 hold the same blocks as pairs. So a
//! kernel written against [`F8`] compiles to `vfmadd231ps` on x86-64 and to two `fmla` on aarch64,
//! and the two levels compute the same sums in the same order (up to FMA contraction, which
//! both have).
//!
//! Every method carries its level's `target_feature`, so callers must be `target_feature`
//! functions of the same level: `#[cfg_attr(target_arch = "x86_64", target_feature(enable =
//! "avx2,fma"))]` with `#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]`.

/// Lanes per vector.
pub(crate) const LANES: usize = 8;

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    /// Eight f32 lanes.
    #[derive(Clone, Copy)]
    pub(crate) struct F8(__m256);

    /// Which lanes of a partial vector are live: the first `n` (`n <= 8`).
    #[derive(Clone, Copy)]
    pub(crate) struct Tail {
        n: usize,
        mask: __m256i,
    }

    impl Tail {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn new(n: usize) -> Tail {
            let mask = _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            Tail { n, mask }
        }
    }

    impl F8 {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn zero() -> F8 {
            F8(_mm256_setzero_ps())
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn splat(v: f32) -> F8 {
            F8(_mm256_set1_ps(v))
        }

        /// # Safety
        /// `p` must be readable for 8 floats.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn load(p: *const f32) -> F8 {
            // SAFETY: contract.
            F8(unsafe { _mm256_loadu_ps(p) })
        }

        /// # Safety
        /// `p` must be writable for 8 floats.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn store(self, p: *mut f32) {
            // SAFETY: contract.
            unsafe { _mm256_storeu_ps(p, self.0) }
        }

        /// The first `n` (of `Tail::new(n)`) floats at `p`, zeros in the other lanes.
        ///
        /// # Safety
        /// `p` must be readable for `n` (of `Tail::new(n)`) floats.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn load_tail(p: *const f32, t: Tail) -> F8 {
            // SAFETY: the masked load reads only the lanes below t.n (contract).
            F8(unsafe { _mm256_maskload_ps(p, t.mask) })
        }

        /// Stores the first `n < 8` (of `Tail::new(n)`) lanes with plain 4-, 2- and 1-lane
        /// stores. Masked stores (`vmaskmovps`) are microcoded and very slow on AMD Zen, and a
        /// copy loop would become a call to `memcpy`.
        ///
        /// # Safety
        /// `p` must be writable for `n` (of `Tail::new(n)`) floats.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn store_tail(self, p: *mut f32, t: Tail) {
            let n = t.n;
            debug_assert!(n < 8, "store_tail is for partial vectors");
            let mut lo = _mm256_castps256_ps128(self.0);
            let mut d = p;
            // SAFETY: each store writes lanes below n (contract).
            unsafe {
                if n >= 4 {
                    _mm_storeu_ps(d, lo);
                    lo = _mm256_extractf128_ps(self.0, 1);
                    d = d.add(4);
                }
                if n & 2 != 0 {
                    _mm_store_sd(d.cast(), _mm_castps_pd(lo));
                    lo = _mm_movehl_ps(lo, lo);
                    d = d.add(2);
                }
                if n & 1 != 0 {
                    _mm_store_ss(d, lo);
                }
            }
        }

        /// `self + a * b`, fused.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn mul_add(self, a: F8, b: F8) -> F8 {
            F8(_mm256_fmadd_ps(a.0, b.0, self.0))
        }

        /// The sum of the eight lanes: halves, then pairs, then the last two.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn sum(self) -> f32 {
            let v = self.0;
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn add(self, o: F8) -> F8 {
            F8(_mm256_add_ps(self.0, o.0))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn sub(self, o: F8) -> F8 {
            F8(_mm256_sub_ps(self.0, o.0))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn div(self, o: F8) -> F8 {
            F8(_mm256_div_ps(self.0, o.0))
        }

        /// Lanes `p[0], p[2], ..., p[14]`.
        ///
        /// # Safety
        /// `p` must be readable for 16 floats.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn load_even(p: *const f32) -> F8 {
            // SAFETY: contract.
            let (lo, hi) = unsafe { (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) };
            // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], then 64-bit pairs reordered to 0 2 1 3.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
            F8(_mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                _mm256_castps_pd(even),
            )))
        }

        /// Lanes where `self > o` (false where either is NaN).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn gt(self, o: F8) -> M8 {
            M8(_mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0))
        }

        /// Lanes where `self == o` (false where either is NaN).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn eq(self, o: F8) -> M8 {
            M8(_mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn is_nan(self) -> M8 {
            M8(_mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0))
        }

        /// `m ? a : b` lane by lane.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn select(m: M8, a: F8, b: F8) -> F8 {
            F8(_mm256_blendv_ps(b.0, a.0, m.0))
        }
    }

    /// A lane mask (all ones or all zeros per lane), from a comparison.
    #[derive(Clone, Copy)]
    pub(crate) struct M8(__m256);

    impl M8 {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn or(self, o: M8) -> M8 {
            M8(_mm256_or_ps(self.0, o.0))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn and(self, o: M8) -> M8 {
            M8(_mm256_and_ps(self.0, o.0))
        }

        /// `self & !o`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn and_not(self, o: M8) -> M8 {
            M8(_mm256_andnot_ps(o.0, self.0))
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn not(self) -> M8 {
            M8(_mm256_xor_ps(
                self.0,
                _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
            ))
        }

        /// Whether any lane is on.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn any(self) -> bool {
            _mm256_movemask_ps(self.0) != 0
        }
    }

    /// Eight i32 lanes (flat indices beside [`F8`] values).
    #[derive(Clone, Copy)]
    pub(crate) struct I8(__m256i);

    impl I8 {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn splat(v: i32) -> I8 {
            I8(_mm256_set1_epi32(v))
        }

        /// 0, 1, ..., 7.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn iota() -> I8 {
            I8(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
        }

        /// # Safety
        /// `p` must be readable for 8 values.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn load(p: *const i32) -> I8 {
            // SAFETY: contract.
            I8(unsafe { _mm256_loadu_si256(p.cast()) })
        }

        /// Lanes `p[0], p[2], ..., p[14]`.
        ///
        /// # Safety
        /// `p` must be readable for 16 values.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn load_even(p: *const i32) -> I8 {
            // SAFETY: contract (the shuffle moves bits, whatever they mean).
            I8(_mm256_castps_si256(unsafe { F8::load_even(p.cast()) }.0))
        }

        /// # Safety
        /// `p` must be writable for 8 values.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) unsafe fn store(self, p: *mut i32) {
            // SAFETY: contract.
            unsafe { _mm256_storeu_si256(p.cast(), self.0) }
        }

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn add(self, o: I8) -> I8 {
            I8(_mm256_add_epi32(self.0, o.0))
        }

        /// Lanes where `self > o`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn gt(self, o: I8) -> M8 {
            M8(_mm256_castsi256_ps(_mm256_cmpgt_epi32(self.0, o.0)))
        }

        /// `m ? a : b` lane by lane.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn select(m: M8, a: I8, b: I8) -> I8 {
            let (a, b) = (_mm256_castsi256_ps(a.0), _mm256_castsi256_ps(b.0));
            I8(_mm256_castps_si256(_mm256_blendv_ps(b, a, m.0)))
        }
    }

    /// Four f64 lanes: the wide accumulator of reductions over [`F8`] values.
    #[derive(Clone, Copy)]
    pub(crate) struct D4(__m256d);

    impl D4 {
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn zero() -> D4 {
            D4(_mm256_setzero_pd())
        }

        /// Adds the eight lanes of `v` in f64: lane `i` gets `v[i] + v[i + 4]`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn add_widened(self, v: F8) -> D4 {
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v.0));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v.0));
            D4(_mm256_add_pd(self.0, _mm256_add_pd(lo, hi)))
        }

        /// `(l0 + l1) + (l2 + l3)`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn sum(self) -> f64 {
            let mut a = [0.0f64; 4];
            // SAFETY: a holds 4 doubles.
            unsafe { _mm256_storeu_pd(a.as_mut_ptr(), self.0) };
            (a[0] + a[1]) + (a[2] + a[3])
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use std::arch::aarch64::*;

    /// Eight f32 lanes: lanes 0-3 in the first register, 4-7 in the second.
    #[derive(Clone, Copy)]
    pub(crate) struct F8(float32x4_t, float32x4_t);

    /// Which lanes of a partial vector are live: the first `n` (`n <= 8`).
    #[derive(Clone, Copy)]
    pub(crate) struct Tail {
        n: usize,
    }

    impl Tail {
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn new(n: usize) -> Tail {
            Tail { n }
        }
    }

    impl F8 {
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn zero() -> F8 {
            F8(vdupq_n_f32(0.0), vdupq_n_f32(0.0))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn splat(v: f32) -> F8 {
            F8(vdupq_n_f32(v), vdupq_n_f32(v))
        }

        /// # Safety
        /// `p` must be readable for 8 floats.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn load(p: *const f32) -> F8 {
            // SAFETY: contract.
            unsafe { F8(vld1q_f32(p), vld1q_f32(p.add(4))) }
        }

        /// # Safety
        /// `p` must be writable for 8 floats.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn store(self, p: *mut f32) {
            // SAFETY: contract.
            unsafe {
                vst1q_f32(p, self.0);
                vst1q_f32(p.add(4), self.1);
            }
        }

        /// The first `n` (of `Tail::new(n)`) floats at `p`, zeros in the other lanes. NEON has no masked
        /// load: the live lanes go through a buffer on the stack.
        ///
        /// # Safety
        /// `p` must be readable for `n` (of `Tail::new(n)`) floats.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn load_tail(p: *const f32, t: Tail) -> F8 {
            let mut buf = [0f32; 8];
            // SAFETY: reads t.n <= 8 floats (contract) into the 8-float buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), t.n.min(8));
                F8::load(buf.as_ptr())
            }
        }

        /// Stores the first `n` (of `Tail::new(n)`) lanes.
        ///
        /// # Safety
        /// `p` must be writable for `n` (of `Tail::new(n)`) floats.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn store_tail(self, p: *mut f32, t: Tail) {
            let mut buf = [0f32; 8];
            // SAFETY: writes t.n <= 8 floats (contract) from the 8-float buffer.
            unsafe {
                self.store(buf.as_mut_ptr());
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, t.n.min(8));
            }
        }

        /// `self + a * b`, fused.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn mul_add(self, a: F8, b: F8) -> F8 {
            F8(vfmaq_f32(self.0, a.0, b.0), vfmaq_f32(self.1, a.1, b.1))
        }

        /// The sum of the eight lanes: halves, then pairs, then the last two (the order of
        /// the AVX2 level).
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn sum(self) -> f32 {
            let s = vaddq_f32(self.0, self.1);
            let s = vadd_f32(vget_low_f32(s), vget_high_f32(s));
            vget_lane_f32::<0>(s) + vget_lane_f32::<1>(s)
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn add(self, o: F8) -> F8 {
            F8(vaddq_f32(self.0, o.0), vaddq_f32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn sub(self, o: F8) -> F8 {
            F8(vsubq_f32(self.0, o.0), vsubq_f32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn div(self, o: F8) -> F8 {
            F8(vdivq_f32(self.0, o.0), vdivq_f32(self.1, o.1))
        }

        /// Lanes `p[0], p[2], ..., p[14]` (`ld2` de-interleaves).
        ///
        /// # Safety
        /// `p` must be readable for 16 floats.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn load_even(p: *const f32) -> F8 {
            // SAFETY: contract.
            unsafe { F8(vld2q_f32(p).0, vld2q_f32(p.add(8)).0) }
        }

        /// Lanes where `self > o` (false where either is NaN).
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn gt(self, o: F8) -> M8 {
            M8(vcgtq_f32(self.0, o.0), vcgtq_f32(self.1, o.1))
        }

        /// Lanes where `self == o` (false where either is NaN).
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn eq(self, o: F8) -> M8 {
            M8(vceqq_f32(self.0, o.0), vceqq_f32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn is_nan(self) -> M8 {
            M8(
                vmvnq_u32(vceqq_f32(self.0, self.0)),
                vmvnq_u32(vceqq_f32(self.1, self.1)),
            )
        }

        /// `m ? a : b` lane by lane.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn select(m: M8, a: F8, b: F8) -> F8 {
            F8(vbslq_f32(m.0, a.0, b.0), vbslq_f32(m.1, a.1, b.1))
        }
    }

    /// A lane mask (all ones or all zeros per lane), from a comparison.
    #[derive(Clone, Copy)]
    pub(crate) struct M8(uint32x4_t, uint32x4_t);

    impl M8 {
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn or(self, o: M8) -> M8 {
            M8(vorrq_u32(self.0, o.0), vorrq_u32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn and(self, o: M8) -> M8 {
            M8(vandq_u32(self.0, o.0), vandq_u32(self.1, o.1))
        }

        /// `self & !o`.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn and_not(self, o: M8) -> M8 {
            M8(vbicq_u32(self.0, o.0), vbicq_u32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn not(self) -> M8 {
            M8(vmvnq_u32(self.0), vmvnq_u32(self.1))
        }

        /// Whether any lane is on.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn any(self) -> bool {
            vmaxvq_u32(vorrq_u32(self.0, self.1)) != 0
        }
    }

    /// Eight i32 lanes (flat indices beside [`F8`] values).
    #[derive(Clone, Copy)]
    pub(crate) struct I8(int32x4_t, int32x4_t);

    impl I8 {
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn splat(v: i32) -> I8 {
            I8(vdupq_n_s32(v), vdupq_n_s32(v))
        }

        /// 0, 1, ..., 7.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn iota() -> I8 {
            let lanes = [0i32, 1, 2, 3, 4, 5, 6, 7];
            // SAFETY: lanes holds 8 values.
            unsafe { I8::load(lanes.as_ptr()) }
        }

        /// # Safety
        /// `p` must be readable for 8 values.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn load(p: *const i32) -> I8 {
            // SAFETY: contract.
            unsafe { I8(vld1q_s32(p), vld1q_s32(p.add(4))) }
        }

        /// Lanes `p[0], p[2], ..., p[14]`.
        ///
        /// # Safety
        /// `p` must be readable for 16 values.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn load_even(p: *const i32) -> I8 {
            // SAFETY: contract.
            unsafe { I8(vld2q_s32(p).0, vld2q_s32(p.add(8)).0) }
        }

        /// # Safety
        /// `p` must be writable for 8 values.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn store(self, p: *mut i32) {
            // SAFETY: contract.
            unsafe {
                vst1q_s32(p, self.0);
                vst1q_s32(p.add(4), self.1);
            }
        }

        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn add(self, o: I8) -> I8 {
            I8(vaddq_s32(self.0, o.0), vaddq_s32(self.1, o.1))
        }

        /// Lanes where `self > o`.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn gt(self, o: I8) -> M8 {
            M8(vcgtq_s32(self.0, o.0), vcgtq_s32(self.1, o.1))
        }

        /// `m ? a : b` lane by lane.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn select(m: M8, a: I8, b: I8) -> I8 {
            I8(vbslq_s32(m.0, a.0, b.0), vbslq_s32(m.1, a.1, b.1))
        }
    }

    /// Four f64 lanes: the wide accumulator of reductions over [`F8`] values.
    #[derive(Clone, Copy)]
    pub(crate) struct D4(float64x2_t, float64x2_t);

    impl D4 {
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn zero() -> D4 {
            D4(vdupq_n_f64(0.0), vdupq_n_f64(0.0))
        }

        /// Adds the eight lanes of `v` in f64: lane `i` gets `v[i] + v[i + 4]` (as AVX2).
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn add_widened(self, v: F8) -> D4 {
            let lo = vaddq_f64(
                vcvt_f64_f32(vget_low_f32(v.0)),
                vcvt_f64_f32(vget_low_f32(v.1)),
            );
            let hi = vaddq_f64(vcvt_high_f64_f32(v.0), vcvt_high_f64_f32(v.1));
            D4(vaddq_f64(self.0, lo), vaddq_f64(self.1, hi))
        }

        /// `(l0 + l1) + (l2 + l3)`.
        #[inline]
        #[target_feature(enable = "neon")]
        pub(crate) fn sum(self) -> f64 {
            vaddvq_f64(self.0) + vaddvq_f64(self.1)
        }
    }
}

pub(crate) use imp::{Tail, D4, F8, I8};
