//! 2-D pooling over NCHW tensors, forward and backward, with PyTorch's exact semantics: max pool
//! (with the flat per-plane argmax indices torch returns), average pool (count_include_pad,
//! ceil_mode, divisor_override) and adaptive average pool (global pooling is its 1x1 case).
//!
//! Work is split over the N*C planes with rayon. Inside a plane each output row is split into
//! border columns (window clipped by padding; handled one element at a time) and interior
//! columns (whole window inside the input), where every kernel tap becomes one loop over a row
//! of outputs reading the input at a fixed stride, so the compiler can vectorise it.
use crate::error::{check_len, check_positive, numel};
use crate::{bail, KernelError, Result};
use rayon::prelude::*;

mod adaptive;
mod avg;
mod max;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector;

pub use adaptive::*;
pub use avg::*;
pub use max::*;

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
    /// The parameters of max_pool2d / avg_pool2d over an input of shape `[N, C, H, W]` with
    /// kernel `[kH, kW]`, stride `[sH, sW]`, padding `[pH, pW]` and dilation `[dH, dW]`, as
    /// torch reads them; checked as [`validate`](Self::validate) checks them.
    pub fn from_shapes(
        input: [usize; 4],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> Result<Pool2dParams> {
        let [batch, channels, in_h, in_w] = input;
        let p = Pool2dParams {
            batch,
            channels,
            in_h,
            in_w,
            kernel_h: kernel[0],
            kernel_w: kernel[1],
            stride_h: stride[0],
            stride_w: stride[1],
            pad_h: padding[0],
            pad_w: padding[1],
            dilation_h: dilation[0],
            dilation_w: dilation[1],
            ceil_mode,
        };
        p.validate()?;
        Ok(p)
    }

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

    pub(crate) fn check_avg(&self, opts: &AvgPoolOptions) -> Result<(usize, usize)> {
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
    // Read by the vector kernels only.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    kernel_w: usize,
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    dilation_w: usize,
}

impl Run {
    /// Plane offset of output `i`'s first tap in row `r`.
    #[inline(always)]
    fn at(&self, r: usize, i: usize) -> usize {
        self.first_row + r * self.row_step + self.col0 + i * self.stride
    }
}

/// Consecutive rows per rayon task when the work is `units` rows of `row_len` input elements
/// each, split over planes: about 16K elements per task, but at least four tasks per thread
/// when there is enough work, so one large plane balances as well as many small ones.
fn rows_per_task(row_len: usize, units: usize) -> usize {
    let by_size = (16 * 1024 / row_len.max(1)).max(1);
    let by_count = (units / (4 * rayon::current_num_threads().max(1))).max(1);
    by_size.min(by_count)
}
