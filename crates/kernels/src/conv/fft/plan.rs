//! FFT grid sizes, cached transform plans, and the 2-D real transforms of one plane that the
//! FFT convolution is built from.
//!
//! A plane of the convolution (an input channel, a kernel, an output gradient) is placed in an
//! `fh x fw` grid and transformed row by row with a real FFT, then column by column with a complex
//! FFT. Spectra are stored *planar*: `lb` real parts, then `lb` imaginary parts, bins numbered
//! `col * fh + row` over the `fw / 2 + 1` non-redundant columns, `lb` rounded up to whole SIMD
//! vectors (the padding bins stay zero). Planar storage lets the pointwise products run as plain
//! FMAs over eight bins at a time.
use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Bins per SIMD vector; spectra are padded to a multiple of it.
pub(crate) const LANES: usize = 8;

/// Smallest `m >= n` whose only prime factors are 2, 3, 5 and 7 (rustfft has fast butterflies
/// for those; other primes fall back to Rader/Bluestein, several times slower), even when `even`
/// and `n > 1` (realfft's even-length path is a half-length complex FFT).
pub(crate) fn good_size(n: usize, even: bool) -> usize {
    let mut m = n.max(1);
    loop {
        if !(even && m > 1 && m % 2 == 1) {
            let mut r = m;
            for f in [2, 3, 5, 7] {
                while r.is_multiple_of(f) {
                    r /= f;
                }
            }
            if r == 1 {
                return m;
            }
        }
        m += 1;
    }
}

/// Plans for one `fh x fw` grid. Plans are immutable and shared between threads.
pub(crate) struct Plan2d {
    pub fh: usize,
    pub fw: usize,
    /// Non-redundant spectrum columns, `fw / 2 + 1`.
    pub cw: usize,
    /// Floats per real or imaginary half of a spectrum (`cw * fh` rounded up to `LANES`).
    pub lb: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    scratch_len: usize,
}

/// Per-thread buffers for the transforms of one grid size, reused across planes.
pub(crate) struct Work {
    row: Vec<f32>,
    row_spec: Vec<Complex<f32>>,
    cols: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

/// Where the elements of a `rows x cols` source plane land in the grid: element `(r, c)` goes
/// to `(r0 + r * r_step, c0 + c * c_step)`. Elements that would land outside the grid are
/// dropped (callers size the grid so that dropped elements never influence what they read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub rows: usize,
    pub cols: usize,
    pub r0: usize,
    pub r_step: usize,
    pub c0: usize,
    pub c_step: usize,
}

struct Planners {
    complex: FftPlanner<f32>,
    real: RealFftPlanner<f32>,
    plans: HashMap<(usize, usize), Arc<Plan2d>>,
}

/// Planning is costly (twiddle tables, algorithm choice), so plans live for the whole process.
/// Shapes in a network are few; the cap only guards against a caller sweeping sizes forever.
const MAX_CACHED_PLANS: usize = 256;

/// The cached plan for an `fh x fw` grid.
pub(crate) fn plan(fh: usize, fw: usize) -> Arc<Plan2d> {
    static PLANNERS: OnceLock<Mutex<Planners>> = OnceLock::new();
    let cell = PLANNERS.get_or_init(|| {
        Mutex::new(Planners {
            complex: FftPlanner::new(),
            real: RealFftPlanner::new(),
            plans: HashMap::new(),
        })
    });
    // A panic while holding the lock cannot leave the maps half-updated in a harmful way (an
    // entry is inserted whole or not at all), so a poisoned lock is still usable.
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.plans.get(&(fh, fw)) {
        return Arc::clone(p);
    }
    let planners = &mut *guard;
    let r2c = planners.real.plan_fft_forward(fw);
    let c2r = planners.real.plan_fft_inverse(fw);
    let col_fwd = planners.complex.plan_fft_forward(fh);
    let col_inv = planners.complex.plan_fft_inverse(fh);
    let scratch_len = r2c
        .get_scratch_len()
        .max(c2r.get_scratch_len())
        .max(col_fwd.get_inplace_scratch_len())
        .max(col_inv.get_inplace_scratch_len());
    let cw = fw / 2 + 1;
    let p = Arc::new(Plan2d {
        fh,
        fw,
        cw,
        lb: (cw * fh).div_ceil(LANES) * LANES,
        r2c,
        c2r,
        col_fwd,
        col_inv,
        scratch_len,
    });
    if planners.plans.len() >= MAX_CACHED_PLANS {
        planners.plans.clear();
    }
    planners.plans.insert((fh, fw), Arc::clone(&p));
    p
}

impl Plan2d {
    /// Floats of one planar spectrum.
    pub fn spec_len(&self) -> usize {
        2 * self.lb
    }

    pub fn work(&self) -> Work {
        Work {
            row: vec![0.0; self.fw],
            row_spec: vec![Complex::default(); self.cw],
            cols: vec![Complex::default(); self.cw * self.fh],
            scratch: vec![Complex::default(); self.scratch_len],
        }
    }

    /// Writes into `spec` (`spec_len()` floats) the spectrum of `src` placed by `at`.
    pub fn forward(&self, w: &mut Work, src: &[f32], at: Placement, spec: &mut [f32]) {
        let (fh, fw, cw) = (self.fh, self.fw, self.cw);
        let rows = count_inside(at.rows, at.r0, at.r_step, fh);
        let cols = count_inside(at.cols, at.c0, at.c_step, fw);
        w.cols.fill(Complex::default());
        if cols > 0 {
            for r in 0..rows {
                let gr = at.r0 + r * at.r_step;
                w.row.fill(0.0);
                let src_row = &src[r * at.cols..r * at.cols + cols];
                if at.c_step == 1 {
                    w.row[at.c0..at.c0 + cols].copy_from_slice(src_row);
                } else {
                    for (c, &v) in src_row.iter().enumerate() {
                        w.row[at.c0 + c * at.c_step] = v;
                    }
                }
                // Lengths match the plan by construction; the only other error realfft reports
                // concerns inverse inputs.
                let _ = self
                    .r2c
                    .process_with_scratch(&mut w.row, &mut w.row_spec, &mut w.scratch);
                for (k, &v) in w.row_spec.iter().enumerate() {
                    w.cols[k * fh + gr] = v;
                }
            }
            self.col_fwd
                .process_with_scratch(&mut w.cols, &mut w.scratch[..]);
        }
        let (re, im) = spec.split_at_mut(self.lb);
        for ((r, i), v) in re.iter_mut().zip(im.iter_mut()).zip(&w.cols) {
            *r = v.re;
            *i = v.im;
        }
        re[cw * fh..].fill(0.0);
        im[cw * fh..].fill(0.0);
    }

    /// Inverse-transforms `spec` (unnormalised: values come out `fh * fw` times too large) and
    /// calls `emit(i, row)` with the real grid row `grid_rows[i]` for each requested row.
    pub fn inverse(
        &self,
        w: &mut Work,
        spec: &[f32],
        grid_rows: impl Iterator<Item = usize>,
        mut emit: impl FnMut(usize, &[f32]),
    ) {
        let (fh, cw) = (self.fh, self.cw);
        let (re, im) = spec.split_at(self.lb);
        for ((v, &r), &i) in w.cols.iter_mut().zip(re).zip(im) {
            *v = Complex::new(r, i);
        }
        self.col_inv
            .process_with_scratch(&mut w.cols, &mut w.scratch[..]);
        for (i, gr) in grid_rows.enumerate() {
            for (k, v) in w.row_spec.iter_mut().enumerate() {
                *v = w.cols[k * fh + gr];
            }
            // A real row's DC (and even-length Nyquist) bin is real; rounding leaves a tiny
            // imaginary part there that realfft would reject.
            w.row_spec[0].im = 0.0;
            if self.fw.is_multiple_of(2) {
                w.row_spec[cw - 1].im = 0.0;
            }
            let _ = self
                .c2r
                .process_with_scratch(&mut w.row_spec, &mut w.row, &mut w.scratch);
            emit(i, &w.row);
        }
    }
}

/// How many of `n` elements placed at `start + i * step` fall below `limit`.
fn count_inside(n: usize, start: usize, step: usize, limit: usize) -> usize {
    if start >= limit {
        0
    } else {
        n.min((limit - start - 1) / step + 1)
    }
}
