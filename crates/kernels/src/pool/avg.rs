//! Average pooling (count_include_pad, ceil_mode, divisor_override), forward and backward.
use super::*;
use crate::simd::{kernel, Target};
use crate::{simd, Result};

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
    let isa = simd::isa();
    output
        .par_chunks_mut(out_plane)
        .zip(input.par_chunks(in_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each(|(y, x)| avg_plane(isa, &g, opts, x, y));
    Ok(())
}

/// Leading interior outputs done with AVX2 (strides 1 and 2); returns how many.
#[inline(always)]
fn avg_run_simd<T: Target>(x: &[f32], run: &Run, divisor: f32, out: &mut [f32]) -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if T::AVX2 || T::NEON {
        // SAFETY: T is Avx2 or Neon only inside avg_plane's builds for those levels, which run
        // only on CPUs that have them.
        return unsafe {
            match run.stride {
                1 => vector::avg_run::<1>(x, run, divisor, out),
                2 => vector::avg_run::<2>(x, run, divisor, out),
                _ => 0,
            }
        };
    }
    let _ = (x, run, divisor, out);
    0
}

kernel! {
    fn avg_plane<[T]>(g: &Geom, opts: &AvgPoolOptions, x: &[f32], y: &mut [f32]) {
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
                let done = avg_run_simd::<T>(x, &run, dv, out);
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
    let isa = simd::isa();
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
            |(row, up), (t, gi)| avg_back_task(isa, &ctx, t * rows, gi, row, up),
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

kernel! {
    fn avg_back_task(
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
}
