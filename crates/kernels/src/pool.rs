//! 2-D pooling over NCHW tensors, forward and backward, with PyTorch's exact semantics: max pool
//! (with the flat per-plane argmax indices torch returns), average pool (count_include_pad,
//! ceil_mode, divisor_override) and adaptive average pool (global pooling is its 1x1 case).
//!
//! Work is split over the N*C planes with rayon. Inside a plane each output row is split into
//! border columns (window clipped by padding; handled one element at a time) and interior
//! columns (whole window inside the input), where every kernel tap becomes one loop over a row
//! of outputs reading the input at a fixed stride, so the compiler can vectorise it.
use crate::error::{check_len, check_positive, numel};
use crate::{bail, simd, KernelError, Result};
use rayon::prelude::*;

/// Shape and hyper-parameters of a max or average pool call (torch's `kernel_size`, `stride`,
/// `padding`, `dilation`, `ceil_mode`). Average pooling requires dilation 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Zero (avg) or -inf (max) padding on both sides of each dim, at most half the kernel.
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub ceil_mode: bool,
}

/// How average pooling divides a window's sum (torch's `count_include_pad` and
/// `divisor_override`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPoolOptions {
    /// Count the zero padding in the divisor (torch's default, true).
    pub count_include_pad: bool,
    /// Divide every window by this instead; must be positive.
    pub divisor_override: Option<usize>,
}

impl Default for AvgPoolOptions {
    fn default() -> Self {
        AvgPoolOptions {
            count_include_pad: true,
            divisor_override: None,
        }
    }
}

/// Output length of one pooled dim, torch's `pooling_output_shape`: in ceil mode the last window
/// must still start inside the input or the left padding. May be < 1; the caller rejects that.
fn pooled_len(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    ceil: bool,
) -> Result<i64> {
    let overflow = || KernelError("pool2d: sizes overflow".to_string());
    let (i, k, s, p, d) = (
        input as i128,
        kernel as i128,
        stride as i128,
        pad as i128,
        dilation as i128,
    );
    let span = d.checked_mul(k - 1).ok_or_else(overflow)? + 1;
    // The plane loops do window arithmetic in i64; keep every intermediate well inside it.
    if i + 2 * p + s + span > i64::MAX as i128 {
        return Err(overflow());
    }
    let numer = i + 2 * p - span + if ceil { s - 1 } else { 0 };
    let mut out = numer.div_euclid(s) + 1;
    if ceil && (out - 1) * s >= i + p {
        out -= 1;
    }
    Ok(out as i64)
}

impl Pool2dParams {
    /// Checks the hyper-parameters and returns the output (height, width).
    pub fn validate(&self) -> Result<(usize, usize)> {
        check_positive("batch", self.batch)?;
        check_positive("channels", self.channels)?;
        check_positive("input height", self.in_h)?;
        check_positive("input width", self.in_w)?;
        check_positive("kernel height", self.kernel_h)?;
        check_positive("kernel width", self.kernel_w)?;
        check_positive("stride", self.stride_h.min(self.stride_w))?;
        check_positive("dilation", self.dilation_h.min(self.dilation_w))?;
        if self.pad_h > self.kernel_h / 2 || self.pad_w > self.kernel_w / 2 {
            bail!(
                "padding: expected at most half the kernel size ({}x{} for a {}x{} kernel), got {}x{}",
                self.kernel_h / 2,
                self.kernel_w / 2,
                self.kernel_h,
                self.kernel_w,
                self.pad_h,
                self.pad_w
            );
        }
        let oh = pooled_len(
            self.in_h,
            self.kernel_h,
            self.stride_h,
            self.pad_h,
            self.dilation_h,
            self.ceil_mode,
        )?;
        let ow = pooled_len(
            self.in_w,
            self.kernel_w,
            self.stride_w,
            self.pad_w,
            self.dilation_w,
            self.ceil_mode,
        )?;
        if oh < 1 || ow < 1 {
            bail!(
                "input: {}x{} is too small for a {}x{} window (stride {}x{}, padding {}x{}, dilation {}x{}): output would be {}x{}",
                self.in_h,
                self.in_w,
                self.kernel_h,
                self.kernel_w,
                self.stride_h,
                self.stride_w,
                self.pad_h,
                self.pad_w,
                self.dilation_h,
                self.dilation_w,
                oh,
                ow
            );
        }
        let (oh, ow) = (oh as usize, ow as usize);
        numel("input", &[self.batch, self.channels, self.in_h, self.in_w])?;
        numel("output", &[self.batch, self.channels, oh, ow])?;
        Ok((oh, ow))
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    /// Output length; only meaningful after [`validate`](Self::validate) succeeded.
    pub fn output_len(&self, out_hw: (usize, usize)) -> usize {
        self.batch * self.channels * out_hw.0 * out_hw.1
    }

    fn geom(&self, out_hw: (usize, usize)) -> Geom {
        Geom {
            h: Axis::new(
                self.in_h,
                out_hw.0,
                self.kernel_h,
                self.stride_h,
                self.pad_h,
                self.dilation_h,
            ),
            w: Axis::new(
                self.in_w,
                out_hw.1,
                self.kernel_w,
                self.stride_w,
                self.pad_w,
                self.dilation_w,
            ),
        }
    }

    fn check_avg(&self, opts: &AvgPoolOptions) -> Result<(usize, usize)> {
        let out_hw = self.validate()?;
        if self.dilation_h != 1 || self.dilation_w != 1 {
            bail!(
                "dilation: average pooling has no dilation, expected 1x1, got {}x{}",
                self.dilation_h,
                self.dilation_w
            );
        }
        if opts.divisor_override == Some(0) {
            bail!("divisorOverride: expected a positive integer, got 0");
        }
        Ok(out_hw)
    }

    fn check_indexable(&self) -> Result<()> {
        if self.in_h.saturating_mul(self.in_w) > i32::MAX as usize {
            bail!(
                "input: a {}x{} plane is too large for int32 indices",
                self.in_h,
                self.in_w
            );
        }
        Ok(())
    }
}

/// One spatial dim of a pooling window, in the signed arithmetic the window edges need.
/// `validate` guarantees none of these sums can overflow i64.
#[derive(Debug, Clone, Copy)]
struct Axis {
    input: i64,
    out: usize,
    kernel: i64,
    stride: i64,
    pad: i64,
    dilation: i64,
}

impl Axis {
    fn new(
        input: usize,
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Axis {
        Axis {
            input: input as i64,
            out,
            kernel: kernel as i64,
            stride: stride as i64,
            pad: pad as i64,
            dilation: dilation as i64,
        }
    }

    fn start(&self, o: usize) -> i64 {
        o as i64 * self.stride - self.pad
    }

    /// Dilated taps of window `o`: its start and the range of tap numbers `j` whose position
    /// `start + j * dilation` is inside the input. The range is bounded by the input, not the
    /// kernel, so absurd kernels cost nothing.
    fn taps(&self, o: usize) -> (i64, usize, usize) {
        let start = self.start(o);
        let lo = if start < 0 {
            (-start + self.dilation - 1) / self.dilation
        } else {
            0
        };
        let hi = if self.input > start {
            ((self.input - start + self.dilation - 1) / self.dilation).min(self.kernel)
        } else {
            0
        };
        (start, lo as usize, hi.max(lo) as usize)
    }

    /// Outputs whose whole window lies inside the input, as a range `lo..hi`.
    fn interior(&self) -> (usize, usize) {
        let lo = ((self.pad + self.stride - 1) / self.stride).min(self.out as i64) as usize;
        let last_start = self.input - 1 + self.pad - (self.kernel - 1) * self.dilation;
        let hi = if last_start < 0 {
            0
        } else {
            (last_start / self.stride + 1).min(self.out as i64) as usize
        };
        (lo, hi.max(lo))
    }

    /// Average-pool window `o` (dilation 1): the input range it covers, and its extent clipped
    /// only at the padded border, which is what torch divides by with count_include_pad.
    fn avg_window(&self, o: usize) -> (usize, usize, i64) {
        let start = self.start(o);
        let end = (start + self.kernel).min(self.input + self.pad);
        let padded_extent = end - start;
        let lo = start.max(0);
        let hi = end.min(self.input).max(lo);
        (lo as usize, hi as usize, padded_extent)
    }
}

#[derive(Debug, Clone, Copy)]
struct Geom {
    h: Axis,
    w: Axis,
}

/// Planes per rayon task: small planes are grouped so a task has enough work to be worth it.
fn planes_per_task(plane_len: usize) -> usize {
    (16 * 1024 / plane_len.max(1)).max(1)
}

// ---------------------------------------------------------------------------------------------
// Max pool
// ---------------------------------------------------------------------------------------------

/// output = max over each window, indices = flat position (`ih * in_w + iw`) of the max within
/// its input plane, as torch's `max_pool2d(..., return_indices=True)`: ties go to the first
/// element in row-major order and NaN wins (the last NaN of the window). A window that covers
/// only padding (possible with dilation) gives -inf and index -1, where torch reports an index
/// outside the plane.
pub fn max_pool2d_forward(
    p: &Pool2dParams,
    input: &[f32],
    output: &mut [f32],
    indices: &mut [i32],
) -> Result<()> {
    let out_hw = p.validate()?;
    p.check_indexable()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    check_len("indices", indices.len(), p.output_len(out_hw))?;
    let g = p.geom(out_hw);
    let (in_plane, out_plane) = (p.in_h * p.in_w, out_hw.0 * out_hw.1);
    let avx2 = simd::use_avx2();
    output
        .par_chunks_mut(out_plane)
        .zip(indices.par_chunks_mut(out_plane))
        .zip(input.par_chunks(in_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each(|((y, ind), x)| max_plane(avx2, &g, x, y, ind));
    Ok(())
}

fn max_plane(avx2: bool, g: &Geom, x: &[f32], y: &mut [f32], ind: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { max_plane_avx2(g, x, y, ind) };
    }
    let _ = avx2;
    max_plane_impl::<false>(g, x, y, ind)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_plane_avx2(g: &Geom, x: &[f32], y: &mut [f32], ind: &mut [i32]) {
    max_plane_impl::<true>(g, x, y, ind)
}

/// torch's update rule: a strictly larger value, or any NaN, takes the slot. Starting from
/// -inf with the index of the window's first element, this is exactly torch's loop.
#[inline(always)]
fn takes_max(v: f32, best: f32) -> bool {
    (v > best) | v.is_nan()
}

/// The interior windows of one output row: whole kernel inside the input, rows
/// `first_row + r * row_step` (r < rows, offsets into the plane), output `i` starting at column
/// `col0 + i * stride`.
#[derive(Clone, Copy)]
struct Run {
    first_row: usize,
    row_step: usize,
    rows: usize,
    col0: usize,
    stride: usize,
    kernel_w: usize,
    dilation_w: usize,
}

impl Run {
    /// Plane offset of output `i`'s first tap in row `r`.
    #[inline(always)]
    fn at(&self, r: usize, i: usize) -> usize {
        self.first_row + r * self.row_step + self.col0 + i * self.stride
    }
}

/// Interior outputs `from..` of a run, one at a time, taps in row-major order.
#[inline(always)]
fn max_run_scalar(x: &[f32], run: &Run, from: usize, best: &mut [f32], arg: &mut [i32]) {
    for i in from..best.len() {
        let (mut b, mut a) = (f32::NEG_INFINITY, run.at(0, i) as i32);
        for r in 0..run.rows {
            let at = run.at(r, i);
            for k in 0..run.kernel_w {
                let idx = at + k * run.dilation_w;
                let v = x[idx];
                let take = takes_max(v, b);
                b = if take { v } else { b };
                a = if take { idx as i32 } else { a };
            }
        }
        best[i] = b;
        arg[i] = a;
    }
}

/// Leading interior outputs done with AVX2 (strides 1 and 2); returns how many.
#[inline(always)]
fn max_run_simd<const AVX2: bool>(
    x: &[f32],
    run: &Run,
    best: &mut [f32],
    arg: &mut [i32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is true only inside max_plane_avx2, which runs only when the CPU has
        // AVX2 and FMA.
        return unsafe {
            match run.stride {
                1 => x86::max_run::<1>(x, run, best, arg),
                2 => x86::max_run::<2>(x, run, best, arg),
                _ => 0,
            }
        };
    }
    let _ = (x, run, best, arg);
    0
}

#[inline(always)]
fn max_plane_impl<const AVX2: bool>(g: &Geom, x: &[f32], y: &mut [f32], ind: &mut [i32]) {
    let in_w = g.w.input as usize;
    let out_w = g.w.out;
    let (ow_lo, ow_hi) = g.w.interior();
    let dh = g.h.dilation;
    for (oh, (y_row, i_row)) in y
        .chunks_exact_mut(out_w)
        .zip(ind.chunks_exact_mut(out_w))
        .enumerate()
    {
        let (hs, jh_lo, jh_hi) = g.h.taps(oh);
        if jh_lo >= jh_hi {
            y_row.fill(f32::NEG_INFINITY);
            i_row.fill(-1);
            continue;
        }
        let row_of = |jh: usize| (hs + jh as i64 * dh) as usize;
        for ow in (0..ow_lo).chain(ow_hi..out_w) {
            let (ws, jw_lo, jw_hi) = g.w.taps(ow);
            let mut best = f32::NEG_INFINITY;
            let mut arg = -1i32;
            if jw_lo < jw_hi {
                for jh in jh_lo..jh_hi {
                    let ih = row_of(jh);
                    for jw in jw_lo..jw_hi {
                        let k = ih * in_w + (ws + jw as i64 * g.w.dilation) as usize;
                        let v = x[k];
                        if arg < 0 || takes_max(v, best) {
                            best = v;
                            arg = k as i32;
                        }
                    }
                }
            }
            y_row[ow] = best;
            i_row[ow] = arg;
        }
        if ow_lo < ow_hi {
            let run = Run {
                first_row: row_of(jh_lo) * in_w,
                row_step: dh as usize * in_w,
                rows: jh_hi - jh_lo,
                col0: g.w.start(ow_lo) as usize,
                stride: g.w.stride as usize,
                kernel_w: g.w.kernel as usize,
                dilation_w: g.w.dilation as usize,
            };
            let best = &mut y_row[ow_lo..ow_hi];
            let arg = &mut i_row[ow_lo..ow_hi];
            let done = max_run_simd::<AVX2>(x, &run, best, arg);
            max_run_scalar(x, &run, done, best, arg);
        }
    }
}

/// Eight interior outputs per step in AVX2 registers, for strides 1 and 2, with the same tap
/// order and update rule as the scalar loops (so the same results, bit for bit).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Run;
    use std::arch::x86_64::*;

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

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_run<const S: usize>(
        x: &[f32],
        run: &Run,
        best: &mut [f32],
        arg: &mut [i32],
    ) -> usize {
        let (starts, covered) = groups::<S>(x.len(), run, best.len().min(arg.len()));
        let s = S as i32;
        let lanes = _mm256_setr_epi32(0, s, 2 * s, 3 * s, 4 * s, 5 * s, 6 * s, 7 * s);
        for i in starts {
            let mut b = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut a = _mm256_add_epi32(_mm256_set1_epi32(run.at(0, i) as i32), lanes);
            for r in 0..run.rows {
                let at = run.at(r, i);
                for k in 0..run.kernel_w {
                    let off = at + k * run.dilation_w;
                    let v = load::<S>(x, off);
                    let cand = _mm256_add_epi32(_mm256_set1_epi32(off as i32), lanes);
                    let take = _mm256_or_ps(
                        _mm256_cmp_ps::<_CMP_GT_OQ>(v, b),
                        _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
                    );
                    b = _mm256_blendv_ps(b, v, take);
                    a = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(a),
                        _mm256_castsi256_ps(cand),
                        take,
                    ));
                }
            }
            _mm256_storeu_ps(best.as_mut_ptr().add(i), b);
            _mm256_storeu_si256(arg.as_mut_ptr().add(i) as *mut __m256i, a);
        }
        covered
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
}

/// grad_input = scatter-add of grad_out through the forward's indices (overwrites grad_input).
/// An index outside its plane is an error; -1 (a window of padding only) contributes nothing.
/// On error grad_input is left partly written.
pub fn max_pool2d_backward(
    p: &Pool2dParams,
    grad_out: &[f32],
    indices: &[i32],
    grad_input: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    p.check_indexable()?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("indices", indices.len(), p.output_len(out_hw))?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    let (in_plane, out_plane) = (p.in_h * p.in_w, out_hw.0 * out_hw.1);
    grad_input
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .zip(indices.par_chunks(out_plane))
        .enumerate()
        .with_min_len(planes_per_task(in_plane))
        .try_for_each(|(plane, ((gi, go), ind))| {
            gi.fill(0.0);
            for (i, (&g, &k)) in go.iter().zip(ind).enumerate() {
                match gi.get_mut(k as usize) {
                    Some(slot) if k >= 0 => *slot += g,
                    _ if k == -1 => {}
                    _ => bail!(
                        "indices: element {} is {k}, expected -1 or an index into the {}x{} input plane (0..{})",
                        plane * out_plane + i,
                        p.in_h,
                        p.in_w,
                        in_plane - 1
                    ),
                }
            }
            Ok(())
        })
}

// ---------------------------------------------------------------------------------------------
// Average pool
// ---------------------------------------------------------------------------------------------

/// What torch divides a window's sum by: the override, the window clipped at the padded border
/// (count_include_pad), or the number of real input elements in it.
#[inline(always)]
fn avg_divisor(opts: &AvgPoolOptions, padded: (i64, i64), real: (usize, usize)) -> f32 {
    match opts.divisor_override {
        Some(d) => d as f32,
        None if opts.count_include_pad => (padded.0 as f64 * padded.1 as f64) as f32,
        None => (real.0 as f64 * real.1 as f64) as f32,
    }
}

/// output = mean of each window, as torch's `avg_pool2d`.
pub fn avg_pool2d_forward(
    p: &Pool2dParams,
    opts: &AvgPoolOptions,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    let out_hw = p.check_avg(opts)?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    let g = p.geom(out_hw);
    let (in_plane, out_plane) = (p.in_h * p.in_w, out_hw.0 * out_hw.1);
    let avx2 = simd::use_avx2();
    output
        .par_chunks_mut(out_plane)
        .zip(input.par_chunks(in_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each(|(y, x)| avg_plane(avx2, &g, opts, x, y));
    Ok(())
}

fn avg_plane(avx2: bool, g: &Geom, opts: &AvgPoolOptions, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { avg_plane_avx2(g, opts, x, y) };
    }
    let _ = avx2;
    avg_plane_impl::<false>(g, opts, x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avg_plane_avx2(g: &Geom, opts: &AvgPoolOptions, x: &[f32], y: &mut [f32]) {
    avg_plane_impl::<true>(g, opts, x, y)
}

/// Leading interior outputs done with AVX2 (strides 1 and 2); returns how many.
#[inline(always)]
fn avg_run_simd<const AVX2: bool>(x: &[f32], run: &Run, divisor: f32, out: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is true only inside avg_plane_avx2, which runs only when the CPU has
        // AVX2 and FMA.
        return unsafe {
            match run.stride {
                1 => x86::avg_run::<1>(x, run, divisor, out),
                2 => x86::avg_run::<2>(x, run, divisor, out),
                _ => 0,
            }
        };
    }
    let _ = (x, run, divisor, out);
    0
}

#[inline(always)]
fn avg_plane_impl<const AVX2: bool>(g: &Geom, opts: &AvgPoolOptions, x: &[f32], y: &mut [f32]) {
    let in_w = g.w.input as usize;
    let out_w = g.w.out;
    let (ow_lo, ow_hi) = g.w.interior();
    for (oh, y_row) in y.chunks_exact_mut(out_w).enumerate() {
        let (h_lo, h_hi, h_padded) = g.h.avg_window(oh);
        if h_lo >= h_hi {
            y_row.fill(0.0);
            continue;
        }
        for ow in (0..ow_lo).chain(ow_hi..out_w) {
            let (w_lo, w_hi, w_padded) = g.w.avg_window(ow);
            if w_lo >= w_hi {
                y_row[ow] = 0.0;
                continue;
            }
            let mut sum = 0.0f32;
            for ih in h_lo..h_hi {
                for &v in &x[ih * in_w + w_lo..ih * in_w + w_hi] {
                    sum += v;
                }
            }
            y_row[ow] = sum / avg_divisor(opts, (h_padded, w_padded), (h_hi - h_lo, w_hi - w_lo));
        }
        if ow_lo < ow_hi {
            let kw = g.w.kernel as usize;
            let run = Run {
                first_row: h_lo * in_w,
                row_step: in_w,
                rows: h_hi - h_lo,
                col0: g.w.start(ow_lo) as usize,
                stride: g.w.stride as usize,
                kernel_w: kw,
                dilation_w: 1,
            };
            // Interior windows span the full kernel width, so one divisor serves the whole row.
            let dv = avg_divisor(opts, (h_padded, kw as i64), (h_hi - h_lo, kw));
            let out = &mut y_row[ow_lo..ow_hi];
            let done = avg_run_simd::<AVX2>(x, &run, dv, out);
            for (i, o) in out.iter_mut().enumerate().skip(done) {
                let mut sum = 0.0f32;
                for r in 0..run.rows {
                    let at = run.at(r, i);
                    for &v in &x[at..at + kw] {
                        sum += v;
                    }
                }
                *o = sum / dv;
            }
        }
    }
}

/// grad_input of avg_pool2d (overwrites grad_input): each window spreads grad_out / divisor
/// over the input elements it covered.
pub fn avg_pool2d_backward(
    p: &Pool2dParams,
    opts: &AvgPoolOptions,
    grad_out: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    let out_hw = p.check_avg(opts)?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    let g = p.geom(out_hw);
    let (in_plane, out_plane) = (p.in_h * p.in_w, out_hw.0 * out_hw.1);
    let avx2 = simd::use_avx2();
    grad_input
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each_init(Vec::new, |scratch, (gi, go)| {
            avg_back_plane(avx2, &g, opts, go, gi, scratch)
        });
    Ok(())
}

fn avg_back_plane(
    avx2: bool,
    g: &Geom,
    opts: &AvgPoolOptions,
    go: &[f32],
    gi: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { avg_back_plane_avx2(g, opts, go, gi, scratch) };
    }
    let _ = avx2;
    avg_back_plane_impl(g, opts, go, gi, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avg_back_plane_avx2(
    g: &Geom,
    opts: &AvgPoolOptions,
    go: &[f32],
    gi: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    avg_back_plane_impl(g, opts, go, gi, scratch)
}

/// One tap of the backward over a run of interior outputs: dst[i * stride] += src[i].
#[inline(always)]
fn scatter_tap(dst: &mut [f32], stride: usize, src: &[f32]) {
    let n = src.len();
    if n == 0 {
        return;
    }
    let (head, tail) = dst.split_at_mut((n - 1) * stride);
    for (chunk, &s) in head.chunks_exact_mut(stride).zip(&src[..n - 1]) {
        chunk[0] += s;
    }
    tail[0] += src[n - 1];
}

#[inline(always)]
fn avg_back_plane_impl(
    g: &Geom,
    opts: &AvgPoolOptions,
    go: &[f32],
    gi: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    gi.fill(0.0);
    let in_w = g.w.input as usize;
    let out_w = g.w.out;
    let (ow_lo, ow_hi) = g.w.interior();
    let sw = g.w.stride as usize;
    for (oh, go_row) in go.chunks_exact(out_w).enumerate() {
        let (h_lo, h_hi, h_padded) = g.h.avg_window(oh);
        if h_lo >= h_hi {
            continue;
        }
        for ow in (0..ow_lo).chain(ow_hi..out_w) {
            let (w_lo, w_hi, w_padded) = g.w.avg_window(ow);
            if w_lo >= w_hi {
                continue;
            }
            let d =
                go_row[ow] / avg_divisor(opts, (h_padded, w_padded), (h_hi - h_lo, w_hi - w_lo));
            for ih in h_lo..h_hi {
                for v in &mut gi[ih * in_w + w_lo..ih * in_w + w_hi] {
                    *v += d;
                }
            }
        }
        if ow_lo < ow_hi {
            let n = ow_hi - ow_lo;
            let kw = g.w.kernel as usize;
            let dv = avg_divisor(opts, (h_padded, kw as i64), (h_hi - h_lo, kw));
            scratch.clear();
            scratch.extend(go_row[ow_lo..ow_hi].iter().map(|&v| v / dv));
            let col0 = g.w.start(ow_lo) as usize;
            for ih in h_lo..h_hi {
                let row = &mut gi[ih * in_w..(ih + 1) * in_w];
                for k in 0..kw {
                    let off = col0 + k;
                    let dst = &mut row[off..off + (n - 1) * sw + 1];
                    match sw {
                        1 => scatter_tap(dst, 1, scratch),
                        2 => scatter_tap(dst, 2, scratch),
                        s => scatter_tap(dst, s, scratch),
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Adaptive average pool
// ---------------------------------------------------------------------------------------------

/// Shape of an adaptive average pool: input [batch, channels, in_h, in_w] pooled to
/// [out_h, out_w]. Output 1x1 is global average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePool2dParams {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl AdaptivePool2dParams {
    pub fn validate(&self) -> Result<()> {
        check_positive("batch", self.batch)?;
        check_positive("channels", self.channels)?;
        check_positive("input height", self.in_h)?;
        check_positive("input width", self.in_w)?;
        check_positive("output height", self.out_h)?;
        check_positive("output width", self.out_w)?;
        numel("input", &[self.batch, self.channels, self.in_h, self.in_w])?;
        numel(
            "output",
            &[self.batch, self.channels, self.out_h, self.out_w],
        )?;
        Ok(())
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.in_h * self.in_w
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.channels * self.out_h * self.out_w
    }
}

/// torch's adaptive bins: output `o` of `out` covers input `floor(o*in/out)..ceil((o+1)*in/out)`.
fn adaptive_bins(input: usize, out: usize) -> Vec<(usize, usize)> {
    let (i, n) = (input as u128, out as u128);
    (0..n)
        .map(|o| {
            let lo = o * i / n;
            let hi = ((o + 1) * i).div_ceil(n);
            (lo as usize, hi as usize)
        })
        .collect()
}

/// output = adaptive_avg_pool2d(input, (out_h, out_w)), as torch.
pub fn adaptive_avg_pool2d_forward(
    p: &AdaptivePool2dParams,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len())?;
    let (in_plane, out_plane) = (p.in_h * p.in_w, p.out_h * p.out_w);
    let avx2 = simd::use_avx2();
    if out_plane == 1 {
        // Global pooling: torch computes it as a mean over the plane.
        let count = in_plane as f64;
        output
            .par_iter_mut()
            .zip(input.par_chunks(in_plane))
            .with_min_len(planes_per_task(in_plane))
            .for_each(|(y, x)| *y = (plane_sum(avx2, x) / count) as f32);
        return Ok(());
    }
    let hb = adaptive_bins(p.in_h, p.out_h);
    let wb = adaptive_bins(p.in_w, p.out_w);
    output
        .par_chunks_mut(out_plane)
        .zip(input.par_chunks(in_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each_init(
            || vec![0.0f32; p.in_w],
            |rows, (y, x)| adaptive_plane(avx2, &hb, &wb, x, y, rows),
        );
    Ok(())
}

fn plane_sum(avx2: bool, x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { plane_sum_avx2(x) };
    }
    let _ = avx2;
    crate::batchnorm::shifted_sum(x, 0.0)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_sum_avx2(x: &[f32]) -> f64 {
    crate::batchnorm::shifted_sum_avx2(x)
}

fn adaptive_plane(
    avx2: bool,
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    x: &[f32],
    y: &mut [f32],
    rows: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { adaptive_plane_avx2(hb, wb, x, y, rows) };
    }
    let _ = avx2;
    adaptive_plane_impl(hb, wb, x, y, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adaptive_plane_avx2(
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    x: &[f32],
    y: &mut [f32],
    rows: &mut [f32],
) {
    adaptive_plane_impl(hb, wb, x, y, rows)
}

/// Sums each bin's rows into `rows` (contiguous, vectorisable), then each bin's columns of it.
#[inline(always)]
fn adaptive_plane_impl(
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    x: &[f32],
    y: &mut [f32],
    rows: &mut [f32],
) {
    let in_w = rows.len();
    for (&(h_lo, h_hi), y_row) in hb.iter().zip(y.chunks_exact_mut(wb.len())) {
        rows.copy_from_slice(&x[h_lo * in_w..(h_lo + 1) * in_w]);
        for ih in h_lo + 1..h_hi {
            for (r, &v) in rows.iter_mut().zip(&x[ih * in_w..(ih + 1) * in_w]) {
                *r += v;
            }
        }
        let kh = (h_hi - h_lo) as f32;
        for (&(w_lo, w_hi), out) in wb.iter().zip(y_row.iter_mut()) {
            let sum: f32 = rows[w_lo..w_hi].iter().sum();
            *out = sum / kh / (w_hi - w_lo) as f32;
        }
    }
}

/// grad_input of adaptive_avg_pool2d (overwrites grad_input).
pub fn adaptive_avg_pool2d_backward(
    p: &AdaptivePool2dParams,
    grad_out: &[f32],
    grad_input: &mut [f32],
) -> Result<()> {
    p.validate()?;
    check_len("gradOutput", grad_out.len(), p.output_len())?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    let (in_plane, out_plane) = (p.in_h * p.in_w, p.out_h * p.out_w);
    if out_plane == 1 {
        let count = in_plane as f32;
        grad_input
            .par_chunks_mut(in_plane)
            .zip(grad_out.par_iter())
            .with_min_len(planes_per_task(in_plane))
            .for_each(|(gi, &g)| gi.fill(g / count));
        return Ok(());
    }
    let hb = adaptive_bins(p.in_h, p.out_h);
    let wb = adaptive_bins(p.in_w, p.out_w);
    let avx2 = simd::use_avx2();
    grad_input
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each_init(
            || vec![0.0f32; p.in_w],
            |row, (gi, go)| adaptive_back_plane(avx2, &hb, &wb, go, gi, row),
        );
    Ok(())
}

fn adaptive_back_plane(
    avx2: bool,
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    go: &[f32],
    gi: &mut [f32],
    row: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { adaptive_back_plane_avx2(hb, wb, go, gi, row) };
    }
    let _ = avx2;
    adaptive_back_plane_impl(hb, wb, go, gi, row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adaptive_back_plane_avx2(
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    go: &[f32],
    gi: &mut [f32],
    row: &mut [f32],
) {
    adaptive_back_plane_impl(hb, wb, go, gi, row)
}

/// Spreads each output row over one input row's worth of columns, then adds that row into
/// every input row of the bin.
#[inline(always)]
fn adaptive_back_plane_impl(
    hb: &[(usize, usize)],
    wb: &[(usize, usize)],
    go: &[f32],
    gi: &mut [f32],
    row: &mut [f32],
) {
    gi.fill(0.0);
    let in_w = row.len();
    for (&(h_lo, h_hi), go_row) in hb.iter().zip(go.chunks_exact(wb.len())) {
        row.fill(0.0);
        let kh = (h_hi - h_lo) as f32;
        for (&(w_lo, w_hi), &g) in wb.iter().zip(go_row) {
            let d = g / kh / (w_hi - w_lo) as f32;
            for r in &mut row[w_lo..w_hi] {
                *r += d;
            }
        }
        for ih in h_lo..h_hi {
            for (v, &r) in gi[ih * in_w..(ih + 1) * in_w].iter_mut().zip(row.iter()) {
                *v += r;
            }
        }
    }
}
