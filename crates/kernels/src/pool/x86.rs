//! Eight interior outputs per step in AVX2 registers, for strides 1 and 2, with the same tap
//! order and update rule as the scalar loops (so the same results, bit for bit).
use super::max::{Rows, Window};
use super::Run;
use std::arch::x86_64::*;

/// [`load`] for the flat indices beside the column maxima.
#[inline(always)]
unsafe fn load_i32<const S: usize>(x: &[i32], off: usize) -> __m256i {
    let as_f32 = std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len());
    _mm256_castps_si256(load::<S>(as_f32, off))
}

/// Input values of outputs i..i+8 for one tap: x[off + l * S] for lanes l. Reads
/// x[off..off + 8 * S], which the caller checked is in bounds.
#[inline(always)]
unsafe fn load<const S: usize>(x: &[f32], off: usize) -> __m256 {
    let p = x.as_ptr().add(off);
    if S == 1 {
        _mm256_loadu_ps(p)
    } else {
        let lo = _mm256_loadu_ps(p);
        let hi = _mm256_loadu_ps(p.add(8));
        // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6], then 64-bit pairs reordered to 0 2 1 3.
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            even,
        )))
    }
}

/// Start of each 8-output group of a run of `n`, as long as the group's loads stay inside
/// the plane: 0, 8, 16, ... and, when `n` is not a multiple of 8, a last group ending at
/// `n` that overlaps the one before (recomputing an output gives the same value). Returns
/// the starts and how many leading outputs they cover.
#[inline(always)]
fn groups<const S: usize>(x_len: usize, run: &Run, n: usize) -> (Groups, usize) {
    // The farthest read of group [i, i + 8) is at(last row, i) + last tap + 8 * S.
    let last_tap = (run.kernel_w - 1) * run.dilation_w;
    let fits = |i: usize| run.at(run.rows - 1, i) + last_tap + 8 * S <= x_len;
    let mut full = n / 8;
    while full > 0 && !fits((full - 1) * 8) {
        full -= 1;
    }
    let tail = full == n / 8 && !n.is_multiple_of(8) && n >= 8 && fits(n - 8);
    let covered = if tail { n } else { full * 8 };
    (
        Groups {
            next: 0,
            full,
            tail: if tail { Some(n - 8) } else { None },
        },
        covered,
    )
}

struct Groups {
    next: usize,
    full: usize,
    tail: Option<usize>,
}

impl Iterator for Groups {
    type Item = usize;
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.next < self.full {
            self.next += 1;
            Some((self.next - 1) * 8)
        } else {
            self.tail.take()
        }
    }
}

/// [`super::column_max`] for the leading columns, 8 at a time; returns how many.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn column_max<const IDX: bool>(
    x: &[f32],
    rows: &Rows,
    vm: &mut [f32],
    vi: &mut [i32],
) -> usize {
    let mut n = rows.len.min(vm.len());
    if IDX {
        n = n.min(vi.len());
    }
    let n = n / 8 * 8;
    let last = rows.first + (rows.count - 1) * rows.step + n;
    if n == 0 || last > x.len() {
        return 0;
    }
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let xp = x.as_ptr();
    for c in (0..n).step_by(8) {
        let mut b = _mm256_loadu_ps(xp.add(rows.first + c));
        let mut a = _mm256_set1_epi32((rows.first + c) as i32);
        for r in 1..rows.count {
            let at = rows.first + r * rows.step + c;
            let v = _mm256_loadu_ps(xp.add(at));
            let take = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, b),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
            );
            b = _mm256_blendv_ps(b, v, take);
            if IDX {
                let cand = _mm256_castsi256_ps(_mm256_set1_epi32(at as i32));
                a = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), cand, take));
            }
        }
        _mm256_storeu_ps(vm.as_mut_ptr().add(c), b);
        if IDX {
            let a = _mm256_add_epi32(a, lanes);
            _mm256_storeu_si256(vi.as_mut_ptr().add(c) as *mut __m256i, a);
        }
    }
    n
}

/// Interior windows across the column maxima, 8 outputs per step, the same rules as the
/// scalar loop (so the same results, bit for bit). Covers all `y.len()` outputs when there
/// are at least 8 (the last group overlaps the one before), none otherwise.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn window_max<const S: usize, const IDX: bool>(
    vm: &[f32],
    vi: &[i32],
    w: &Window,
    y: &mut [f32],
    ind: &mut [i32],
) -> usize {
    let n = y.len();
    if n < 8 || (IDX && ind.len() != n) {
        return 0;
    }
    // Farthest read: the last group's last tap, 8 * S floats from its start.
    let end = w.col0 + (n - 8) * S + (w.kernel - 1) * w.dilation + 8 * S;
    if end > vm.len() || (IDX && end > vi.len()) {
        return 0;
    }
    let last = if !n.is_multiple_of(8) {
        Some(n - 8)
    } else {
        None
    };
    for i in (0..n / 8).map(|g| g * 8).chain(last) {
        let c = w.col0 + i * S;
        let (b, a) = if IDX {
            // NaN is rare: the cheap rule, redone with the full one when a NaN showed up.
            match window_group_indexed::<S, false>(vm, vi, w, c) {
                (b, a, false) => (b, a),
                _ => {
                    let (b, a, _) = window_group_indexed::<S, true>(vm, vi, w, c);
                    (b, a)
                }
            }
        } else {
            (window_group_values::<S>(vm, w, c), _mm256_setzero_si256())
        };
        _mm256_storeu_ps(y.as_mut_ptr().add(i), b);
        if IDX {
            _mm256_storeu_si256(ind.as_mut_ptr().add(i) as *mut __m256i, a);
        }
    }
    n
}

#[inline(always)]
unsafe fn window_group_values<const S: usize>(vm: &[f32], w: &Window, c: usize) -> __m256 {
    let mut b = load::<S>(vm, c);
    for k in 1..w.kernel {
        let v = load::<S>(vm, c + k * w.dilation);
        let take = _mm256_or_ps(
            _mm256_cmp_ps::<_CMP_GT_OQ>(v, b),
            _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
        );
        b = _mm256_blendv_ps(b, v, take);
    }
    b
}

/// Eight windows starting at column `c`, with their flat indices. Without `NAN`, assumes
/// no NaN and says whether one was seen (the result is then wrong); with it, follows
/// column_takes in full.
#[inline(always)]
unsafe fn window_group_indexed<const S: usize, const NAN: bool>(
    vm: &[f32],
    vi: &[i32],
    w: &Window,
    c: usize,
) -> (__m256, __m256i, bool) {
    let mut b = load::<S>(vm, c);
    let mut a = load_i32::<S>(vi, c);
    let mut seen_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(b, b);
    let all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for k in 1..w.kernel {
        let off = c + k * w.dilation;
        let v = load::<S>(vm, off);
        let at = load_i32::<S>(vi, off);
        let earlier = _mm256_castsi256_ps(_mm256_cmpgt_epi32(a, at));
        let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(v, b);
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(v, b);
        // See column_takes: a number beats a smaller number, or an equal one to its right;
        // NaN beats a number and a NaN to its left in row-major order.
        let mut take = _mm256_or_ps(gt, _mm256_and_ps(eq, earlier));
        if NAN {
            let nan_v = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
            let nan_b = _mm256_cmp_ps::<_CMP_UNORD_Q>(b, b);
            let later = _mm256_castsi256_ps(_mm256_cmpgt_epi32(at, a));
            let nan_takes = _mm256_and_ps(nan_v, _mm256_or_ps(_mm256_xor_ps(nan_b, all), later));
            take = _mm256_or_ps(nan_takes, _mm256_andnot_ps(nan_b, take));
        } else {
            seen_nan = _mm256_or_ps(seen_nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        b = _mm256_blendv_ps(b, v, take);
        a = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(a),
            _mm256_castsi256_ps(at),
            take,
        ));
    }
    (b, a, !NAN && _mm256_movemask_ps(seen_nan) != 0)
}

/// Window sums of the leading outputs, 8 at a time, divided by `divisor`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn avg_run<const S: usize>(
    x: &[f32],
    run: &Run,
    divisor: f32,
    out: &mut [f32],
) -> usize {
    let (starts, covered) = groups::<S>(x.len(), run, out.len());
    let d = _mm256_set1_ps(divisor);
    for i in starts {
        let mut acc = _mm256_setzero_ps();
        for r in 0..run.rows {
            let at = run.at(r, i);
            for k in 0..run.kernel_w {
                acc = _mm256_add_ps(acc, load::<S>(x, at + k * run.dilation_w));
            }
        }
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_div_ps(acc, d));
    }
    covered
}
