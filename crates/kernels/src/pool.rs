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

    /// Windows (dilation 1) that cover input position `i`, as a range `lo..hi` of outputs.
    fn covering(&self, i: usize) -> (usize, usize) {
        let i = i as i64;
        // ceil((i + pad - kernel + 1) / stride) ..= floor((i + pad) / stride)
        let lo = (i + self.pad - self.kernel + self.stride).div_euclid(self.stride);
        let hi = (i + self.pad).div_euclid(self.stride) + 1;
        let (lo, hi) = (lo.max(0), hi.min(self.out as i64));
        (lo as usize, hi.max(lo) as usize)
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
    max_pool_rows(p, out_hw, input, output, Some(indices));
    Ok(())
}

/// output = max over each window, as [`max_pool2d_forward`] but without the indices, for
/// inference (nothing will run the backward), which saves their write traffic. Same values,
/// NaN winning as in torch; the one difference is the sign of a zero maximum when +0 and -0
/// tie in one window (windows are reduced column by column, not in row-major order).
pub fn max_pool2d_forward_no_indices(
    p: &Pool2dParams,
    input: &[f32],
    output: &mut [f32],
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    max_pool_rows(p, out_hw, input, output, None);
    Ok(())
}

/// Consecutive rows per rayon task when the work is `units` rows of `row_len` input elements
/// each, split over planes: about 16K elements per task, but at least four tasks per thread
/// when there is enough work, so one large plane balances as well as many small ones.
fn rows_per_task(row_len: usize, units: usize) -> usize {
    let by_size = (16 * 1024 / row_len.max(1)).max(1);
    let by_count = (units / (4 * rayon::current_num_threads().max(1))).max(1);
    by_size.min(by_count)
}

/// Both max-pool forwards. A task is a run of consecutive output rows, which may cross planes.
/// Each output row is reduced in two steps: the column maxima over the window's input rows
/// (each input row read once per output row, contiguously), then each window's maximum across
/// its columns of that row buffer.
fn max_pool_rows(
    p: &Pool2dParams,
    out_hw: (usize, usize),
    input: &[f32],
    output: &mut [f32],
    indices: Option<&mut [i32]>,
) {
    let g = p.geom(out_hw);
    let out_w = out_hw.1;
    // Each output row reads about stride_h new input rows.
    let row_len = p.in_w.saturating_mul(p.stride_h.min(p.in_h));
    let rows = rows_per_task(row_len, p.batch * p.channels * out_hw.0);
    let chunk = rows * out_w;
    let avx2 = simd::use_avx2();
    // Slack past the row for the AVX2 loads, which read up to 16 floats from a column.
    let slack = p.in_w + 16;
    match indices {
        Some(ind) => output
            .par_chunks_mut(chunk)
            .zip(ind.par_chunks_mut(chunk))
            .enumerate()
            .for_each_init(
                || (vec![0.0f32; slack], vec![0i32; slack]),
                |(vm, vi), (t, (y, i))| max_task::<true>(avx2, &g, input, t * rows, y, i, vm, vi),
            ),
        None => output.par_chunks_mut(chunk).enumerate().for_each_init(
            || vec![0.0f32; slack],
            |vm, (t, y)| max_task::<false>(avx2, &g, input, t * rows, y, &mut [], vm, &mut []),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn max_task<const IDX: bool>(
    avx2: bool,
    g: &Geom,
    input: &[f32],
    first_row: usize,
    y: &mut [f32],
    ind: &mut [i32],
    vm: &mut [f32],
    vi: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { max_task_avx2::<IDX>(g, input, first_row, y, ind, vm, vi) };
    }
    let _ = avx2;
    max_task_impl::<false, IDX>(g, input, first_row, y, ind, vm, vi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_task_avx2<const IDX: bool>(
    g: &Geom,
    input: &[f32],
    first_row: usize,
    y: &mut [f32],
    ind: &mut [i32],
    vm: &mut [f32],
    vi: &mut [i32],
) {
    max_task_impl::<true, IDX>(g, input, first_row, y, ind, vm, vi)
}

/// torch's update rule: a strictly larger value, or any NaN, takes the slot. Starting from
/// -inf with the index of the window's first element, this is exactly torch's loop.
#[inline(always)]
fn takes_max(v: f32, best: f32) -> bool {
    (v > best) | v.is_nan()
}

/// Whether a column's winner (`v` at flat index `at`) replaces the running winner of the
/// columns to its left (`best` at `arg`), so that reducing a window column by column picks the
/// element torch's row-major loop picks: the last NaN in row-major order, else the first
/// maximum. Within one window two columns' flat indices order them by row first (their
/// column distance is below the row length), so the flat index decides both tie rules.
#[inline(always)]
fn column_takes(v: f32, at: i32, best: f32, arg: i32) -> bool {
    if v.is_nan() {
        !best.is_nan() || at > arg
    } else {
        !best.is_nan() && (v > best || (v == best && at < arg))
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn max_task_impl<const AVX2: bool, const IDX: bool>(
    g: &Geom,
    input: &[f32],
    first_row: usize,
    y: &mut [f32],
    ind: &mut [i32],
    vm: &mut [f32],
    vi: &mut [i32],
) {
    let (in_w, out_h, out_w) = (g.w.input as usize, g.h.out, g.w.out);
    let in_plane = g.h.input as usize * in_w;
    for (r, y_row) in y.chunks_exact_mut(out_w).enumerate() {
        let (plane, oh) = ((first_row + r) / out_h, (first_row + r) % out_h);
        let x = &input[plane * in_plane..(plane + 1) * in_plane];
        let i_row = if IDX {
            &mut ind[r * out_w..(r + 1) * out_w]
        } else {
            &mut [][..]
        };
        max_row::<AVX2, IDX>(g, x, oh, y_row, i_row, vm, vi);
    }
}

#[inline(always)]
fn max_row<const AVX2: bool, const IDX: bool>(
    g: &Geom,
    x: &[f32],
    oh: usize,
    y_row: &mut [f32],
    i_row: &mut [i32],
    vm: &mut [f32],
    vi: &mut [i32],
) {
    let in_w = g.w.input as usize;
    let (hs, jh_lo, jh_hi) = g.h.taps(oh);
    if jh_lo >= jh_hi {
        y_row.fill(f32::NEG_INFINITY);
        if IDX {
            i_row.fill(-1);
        }
        return;
    }
    let row_of = |jh: usize| (hs + jh as i64 * g.h.dilation) as usize;
    // Column maxima over the window's rows, rows in order, torch's rule.
    let rows = Rows {
        first: row_of(jh_lo) * in_w,
        step: g.h.dilation as usize * in_w,
        count: jh_hi - jh_lo,
        len: in_w,
    };
    column_max::<AVX2, IDX>(x, &rows, &mut vm[..in_w], vi);
    // Each window across its columns: border windows tap by tap, clipped to the input.
    let (ow_lo, ow_hi) = g.w.interior();
    for ow in (0..ow_lo).chain(ow_hi..g.w.out) {
        let (ws, jw_lo, jw_hi) = g.w.taps(ow);
        if jw_lo >= jw_hi {
            y_row[ow] = f32::NEG_INFINITY;
            if IDX {
                i_row[ow] = -1;
            }
            continue;
        }
        let col = |jw: usize| (ws + jw as i64 * g.w.dilation) as usize;
        let taps = (jw_lo..jw_hi).map(col);
        let (b, a) = window_max_scalar::<IDX>(vm, vi, taps);
        y_row[ow] = b;
        if IDX {
            i_row[ow] = a;
        }
    }
    if ow_lo < ow_hi {
        let w = Window {
            col0: g.w.start(ow_lo) as usize,
            stride: g.w.stride as usize,
            kernel: g.w.kernel as usize,
            dilation: g.w.dilation as usize,
        };
        let y = &mut y_row[ow_lo..ow_hi];
        let i = if IDX {
            &mut i_row[ow_lo..ow_hi]
        } else {
            &mut [][..]
        };
        let done = window_max_simd::<AVX2, IDX>(vm, vi, &w, y, i);
        for o in done..y.len() {
            let at = w.col0 + o * w.stride;
            let taps = (0..w.kernel).map(|k| at + k * w.dilation);
            let (b, a) = window_max_scalar::<IDX>(vm, vi, taps);
            y[o] = b;
            if IDX {
                i[o] = a;
            }
        }
    }
}

/// Interior windows of a row buffer: output `o` taps columns `col0 + o * stride + k *
/// dilation` for k < kernel, all inside the input row.
#[derive(Clone, Copy)]
struct Window {
    col0: usize,
    stride: usize,
    kernel: usize,
    dilation: usize,
}

/// One window across the column maxima `vm` (flat indices `vi`), columns in order.
#[inline(always)]
fn window_max_scalar<const IDX: bool>(
    vm: &[f32],
    vi: &[i32],
    mut cols: impl Iterator<Item = usize>,
) -> (f32, i32) {
    let Some(c) = cols.next() else {
        return (f32::NEG_INFINITY, -1);
    };
    let (mut b, mut a) = (vm[c], if IDX { vi[c] } else { 0 });
    for c in cols {
        if IDX {
            if column_takes(vm[c], vi[c], b, a) {
                (b, a) = (vm[c], vi[c]);
            }
        } else if takes_max(vm[c], b) {
            b = vm[c];
        }
    }
    (b, a)
}

/// The input rows of one output row's windows: `count` rows of `len` starting at plane
/// offsets `first + r * step`.
#[derive(Clone, Copy)]
struct Rows {
    first: usize,
    step: usize,
    count: usize,
    len: usize,
}

/// vm[c] = the maximum of column c over `rows`, vi[c] its flat index, rows in order with
/// torch's rule. Each column keeps its running maximum in a register across the rows and is
/// stored once: a read-modify-write of vm per row would let LLVM turn the blend into a masked
/// store, which is very slow on some CPUs (AMD).
#[inline(always)]
fn column_max<const AVX2: bool, const IDX: bool>(
    x: &[f32],
    rows: &Rows,
    vm: &mut [f32],
    vi: &mut [i32],
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is true only inside max_task_avx2, which runs only when the CPU has
        // AVX2 and FMA.
        done = unsafe { x86::column_max::<IDX>(x, rows, vm, vi) };
    }
    for c in done..rows.len {
        let (mut b, mut a) = (x[rows.first + c], rows.first + c);
        for r in 1..rows.count {
            let at = rows.first + r * rows.step + c;
            if takes_max(x[at], b) {
                (b, a) = (x[at], at);
            }
        }
        vm[c] = b;
        if IDX {
            vi[c] = a as i32;
        }
    }
}

/// Leading interior windows done with AVX2 (strides 1 and 2); returns how many.
#[inline(always)]
fn window_max_simd<const AVX2: bool, const IDX: bool>(
    vm: &[f32],
    vi: &[i32],
    w: &Window,
    y: &mut [f32],
    ind: &mut [i32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: AVX2 is true only inside max_task_avx2, which runs only when the CPU has
        // AVX2 and FMA.
        return unsafe {
            match w.stride {
                1 => x86::window_max::<1, IDX>(vm, vi, w, y, ind),
                2 => x86::window_max::<2, IDX>(vm, vi, w, y, ind),
                _ => 0,
            }
        };
    }
    let _ = (vm, vi, w, y, ind);
    0
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

/// Eight interior outputs per step in AVX2 registers, for strides 1 and 2, with the same tap
/// order and update rule as the scalar loops (so the same results, bit for bit).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Rows, Run, Window};
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
                let nan_takes =
                    _mm256_and_ps(nan_v, _mm256_or_ps(_mm256_xor_ps(nan_b, all), later));
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

/// grad_input of avg_pool2d (overwrites grad_input), as a gather: each input row sums the
/// scaled gradients of the output rows whose windows cover it into a row buffer, then each
/// input element sums the entries of the windows that cover it. Every element is written
/// once, by one task, with contiguous vectorisable loops.
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
    let (out_h, out_w) = out_hw;
    // The forward's divisor of every window, shared by all planes.
    let h_windows: Vec<_> = (0..out_h).map(|o| g.h.avg_window(o)).collect();
    let w_windows: Vec<_> = (0..out_w).map(|o| g.w.avg_window(o)).collect();
    let mut divisors = Vec::with_capacity(out_h * out_w);
    for &(h_lo, h_hi, h_padded) in &h_windows {
        for &(w_lo, w_hi, w_padded) in &w_windows {
            let empty = h_lo >= h_hi || w_lo >= w_hi;
            divisors.push(if empty {
                1.0
            } else {
                avg_divisor(opts, (h_padded, w_padded), (h_hi - h_lo, w_hi - w_lo))
            });
        }
    }
    let spread = Spread::new(&g.w);
    let rows = rows_per_task(p.in_w, p.batch * p.channels * p.in_h);
    let avx2 = simd::use_avx2();
    let ctx = AvgBack {
        g: &g,
        divisors: &divisors,
        spread: &spread,
        grad_out,
    };
    grad_input
        .par_chunks_mut(rows * p.in_w)
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; out_w], vec![0.0f32; spread.len]),
            |(row, up), (t, gi)| avg_back_task(avx2, &ctx, t * rows, gi, row, up),
        );
    Ok(())
}

struct AvgBack<'a> {
    g: &'a Geom,
    divisors: &'a [f32],
    spread: &'a Spread,
    grad_out: &'a [f32],
}

/// How one row of window sums spreads over an input row. Input `iw` is covered by windows
/// `ow` with `ow * stride - pad + k = iw` (k < kernel). With the row placed at positions
/// `ow * stride + shift` of an otherwise zero buffer `up`, input `iw` is the sum of
/// `up[iw..=iw + taps - 1]`: `taps` contiguous shifted adds, clipped to the kernel offsets
/// that can reach the row at all. Very large kernels or strides (which would make `up` huge)
/// take the per-element fallback instead.
struct Spread {
    /// Kernel offsets that matter: taps = k_hi - k_lo + 1; 0 when nothing covers the row.
    taps: usize,
    shift: i64,
    /// `up` length; 0 means use the fallback.
    len: usize,
    /// Fallback: the windows covering each input column.
    covering: Vec<(usize, usize)>,
}

impl Spread {
    fn new(a: &Axis) -> Spread {
        let out = a.out as i64;
        let k_lo = (a.pad - (out - 1) * a.stride).max(0);
        let k_hi = (a.kernel - 1).min(a.pad + a.input - 1);
        let taps = (k_hi - k_lo + 1).max(0);
        let len = a.input + taps;
        if taps > 0 && len <= 4 * a.input + 64 {
            Spread {
                taps: taps as usize,
                shift: k_hi - a.pad,
                len: len as usize,
                covering: vec![],
            }
        } else {
            Spread {
                taps: taps as usize,
                shift: 0,
                len: 0,
                covering: (0..a.input as usize).map(|i| a.covering(i)).collect(),
            }
        }
    }
}

fn avg_back_task(
    avx2: bool,
    c: &AvgBack,
    first_row: usize,
    gi: &mut [f32],
    row: &mut [f32],
    up: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` comes from simd::use_avx2(), true only when the CPU has AVX2 and FMA.
        return unsafe { avg_back_task_avx2(c, first_row, gi, row, up) };
    }
    let _ = avx2;
    avg_back_task_impl(c, first_row, gi, row, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avg_back_task_avx2(
    c: &AvgBack,
    first_row: usize,
    gi: &mut [f32],
    row: &mut [f32],
    up: &mut [f32],
) {
    avg_back_task_impl(c, first_row, gi, row, up)
}

#[inline(always)]
fn avg_back_task_impl(
    c: &AvgBack,
    first_row: usize,
    gi: &mut [f32],
    row: &mut [f32],
    up: &mut [f32],
) {
    let (in_h, in_w) = (c.g.h.input as usize, c.g.w.input as usize);
    let (out_h, out_w) = (c.g.h.out, c.g.w.out);
    let (sw, sp) = (c.g.w.stride as usize, c.spread);
    for (r, gi_row) in gi.chunks_exact_mut(in_w).enumerate() {
        let (plane, ih) = ((first_row + r) / in_h, (first_row + r) % in_h);
        let go = &c.grad_out[plane * out_h * out_w..(plane + 1) * out_h * out_w];
        let (oh_lo, oh_hi) = c.g.h.covering(ih);
        if oh_lo >= oh_hi || sp.taps == 0 {
            gi_row.fill(0.0);
            continue;
        }
        // Sum over the covering output rows of gradOutput / divisor.
        let rows = go[oh_lo * out_w..oh_hi * out_w]
            .chunks_exact(out_w)
            .zip(c.divisors[oh_lo * out_w..oh_hi * out_w].chunks_exact(out_w));
        for (i, (g, d)) in rows.enumerate() {
            if i == 0 {
                for ((s, &g), &d) in row.iter_mut().zip(g).zip(d) {
                    *s = g / d;
                }
            } else {
                for ((s, &g), &d) in row.iter_mut().zip(g).zip(d) {
                    *s += g / d;
                }
            }
        }
        if sp.len == 0 {
            for (v, &(lo, hi)) in gi_row.iter_mut().zip(&sp.covering) {
                *v = row[lo..hi].iter().sum();
            }
            continue;
        }
        // Only the positions ow * stride + shift are ever written, so the zeros between them
        // (stride > 1) stay zero from the task's start.
        for (ow, &s) in row.iter().enumerate() {
            let at = (ow * sw) as i64 + sp.shift;
            if at >= 0 && (at as usize) < up.len() {
                up[at as usize] = s;
            }
        }
        gi_row.copy_from_slice(&up[..in_w]);
        for m in 1..sp.taps {
            for (v, &u) in gi_row.iter_mut().zip(&up[m..m + in_w]) {
                *v += u;
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
