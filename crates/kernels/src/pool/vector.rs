//! Eight interior outputs per step in vector registers ([`F8`]: AVX2, or NEON pairs), for
//! strides 1 and 2, with the same tap order and update rule as the scalar loops (so the same
//! results, bit for bit). Called only from the AVX2 and NEON builds of the pooling kernels.
use super::max::{Rows, Window};
use super::Run;
use crate::f8::{F8, I8};

/// [`load`] for the flat indices beside the column maxima.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
unsafe fn load_i32<const S: usize>(x: &[i32], off: usize) -> I8 {
    let p = x.as_ptr().add(off);
    if S == 1 {
        I8::load(p)
    } else {
        I8::load_even(p)
    }
}

/// Input values of outputs i..i+8 for one tap: x[off + l * S] for lanes l. Reads
/// x[off..off + 8 * S], which the caller checked is in bounds.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
unsafe fn load<const S: usize>(x: &[f32], off: usize) -> F8 {
    let p = x.as_ptr().add(off);
    if S == 1 {
        F8::load(p)
    } else {
        F8::load_even(p)
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
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
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
    let lanes = I8::iota();
    let xp = x.as_ptr();
    for c in (0..n).step_by(8) {
        let mut b = F8::load(xp.add(rows.first + c));
        let mut a = I8::splat((rows.first + c) as i32);
        for r in 1..rows.count {
            let at = rows.first + r * rows.step + c;
            let v = F8::load(xp.add(at));
            let take = v.gt(b).or(v.is_nan());
            b = F8::select(take, v, b);
            if IDX {
                a = I8::select(take, I8::splat(at as i32), a);
            }
        }
        b.store(vm.as_mut_ptr().add(c));
        if IDX {
            a.add(lanes).store(vi.as_mut_ptr().add(c));
        }
    }
    n
}

/// Interior windows across the column maxima, 8 outputs per step, the same rules as the
/// scalar loop (so the same results, bit for bit). Covers all `y.len()` outputs when there
/// are at least 8 (the last group overlaps the one before), none otherwise.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
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
            (window_group_values::<S>(vm, w, c), I8::splat(0))
        };
        b.store(y.as_mut_ptr().add(i));
        if IDX {
            a.store(ind.as_mut_ptr().add(i));
        }
    }
    n
}

#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
unsafe fn window_group_values<const S: usize>(vm: &[f32], w: &Window, c: usize) -> F8 {
    let mut b = load::<S>(vm, c);
    for k in 1..w.kernel {
        let v = load::<S>(vm, c + k * w.dilation);
        let take = v.gt(b).or(v.is_nan());
        b = F8::select(take, v, b);
    }
    b
}

/// Eight windows starting at column `c`, with their flat indices. Without `NAN`, assumes
/// no NaN and says whether one was seen (the result is then wrong); with it, follows
/// column_takes in full.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
unsafe fn window_group_indexed<const S: usize, const NAN: bool>(
    vm: &[f32],
    vi: &[i32],
    w: &Window,
    c: usize,
) -> (F8, I8, bool) {
    let mut b = load::<S>(vm, c);
    let mut a = load_i32::<S>(vi, c);
    let mut seen_nan = b.is_nan();
    for k in 1..w.kernel {
        let off = c + k * w.dilation;
        let v = load::<S>(vm, off);
        let at = load_i32::<S>(vi, off);
        let earlier = a.gt(at);
        // See column_takes: a number beats a smaller number, or an equal one to its right;
        // NaN beats a number and a NaN to its left in row-major order.
        let mut take = v.gt(b).or(v.eq(b).and(earlier));
        if NAN {
            let (nan_v, nan_b) = (v.is_nan(), b.is_nan());
            let later = at.gt(a);
            let nan_takes = nan_v.and(nan_b.not().or(later));
            take = nan_takes.or(take.and_not(nan_b));
        } else {
            seen_nan = seen_nan.or(v.is_nan());
        }
        b = F8::select(take, v, b);
        a = I8::select(take, at, a);
    }
    (b, a, !NAN && seen_nan.any())
}

/// Window sums of the leading outputs, 8 at a time, divided by `divisor`.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
pub(super) unsafe fn avg_run<const S: usize>(
    x: &[f32],
    run: &Run,
    divisor: f32,
    out: &mut [f32],
) -> usize {
    let (starts, covered) = groups::<S>(x.len(), run, out.len());
    let d = F8::splat(divisor);
    for i in starts {
        let mut acc = F8::zero();
        for r in 0..run.rows {
            let at = run.at(r, i);
            for k in 0..run.kernel_w {
                acc = acc.add(load::<S>(x, at + k * run.dilation_w));
            }
        }
        acc.div(d).store(out.as_mut_ptr().add(i));
    }
    covered
}
