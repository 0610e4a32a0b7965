//! FFT grid sizes, cached transform plans, and the 2-D real transforms of one plane that the
//! FFT convolution is built from.
//!
//! A plane of the convolution (an input channel, a kernel, an output gradient) is placed in an
//! `fh x fw` grid. Rows are transformed two at a time as the real and imaginary parts of one
//! complex row (then separated by Hermitian symmetry), all rows of a plane in one batched rustfft
//! call; then the `fw / 2 + 1` non-redundant columns, again in one call. Batched calls of
//! 2^a 3^b lengths are where rustfft's AVX code is fast; a real-FFT call per row costs several
//! times more in call overhead alone.
//!
//! Spectra are stored planar and *tile-major*: bins (numbered `col * fh + row`) are cut into
//! tiles of [`TILE`] bins, and a set of `planes` spectra is laid out tile by tile, each tile
//! holding, for every plane, `TILE` real parts then `TILE` imaginary parts: one cache line. The
//! pointwise products then stream whole cache lines (consecutive planes are consecutive lines)
//! instead of touching one line in each of thousands of pages, and run as plain FMAs over the
//! eight bins of a tile.
use crate::simd::kernel;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Bins per tile of the spectra layout: one 8-float SIMD vector of real parts and one of
/// imaginary parts, together one 64-byte cache line.
pub(crate) const TILE: usize = 8;

/// Smallest `m >= n` of the form 2^a 3^b (even unless `n == 1` when `even`). rustfft's AVX
/// algorithms cover those lengths; factors 5 and 7 run much slower per element
/// (`bench/results/auto-rules.md`).
pub(crate) fn good_size(n: usize, even: bool) -> usize {
    let mut m = n.max(1);
    loop {
        if !(even && m > 1 && m % 2 == 1) {
            let mut r = m;
            for f in [2, 3] {
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
    /// Bins of one spectrum, `cw * fh`.
    pub bins: usize,
    /// Tiles per spectrum, `bins / TILE` rounded up (the padding bins stay zero).
    pub tiles: usize,
    /// Planes a task transforms together: the tile-major scatter / gather then moves `group`
    /// consecutive cache lines per tile instead of one line per page touched.
    pub group: usize,
    row_fwd: Arc<dyn Fft<f32>>,
    row_inv: Arc<dyn Fft<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
    scratch_len: usize,
}

/// Per-thread buffers for the transforms of one grid size, reused across planes.
pub(crate) struct Work {
    /// Row pairs packed as complex rows, `fw` each.
    rows: Vec<Complex<f32>>,
    real_row: Vec<f32>,
    scratch: Vec<Complex<f32>>,
}

/// One axis of a [`Placement`]: source indices `src0..src0 + count` land at grid positions
/// `grid0, grid0 + step, ...`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    pub src0: usize,
    pub count: usize,
    pub grid0: usize,
    pub step: usize,
}

impl Axis {
    /// How many of the placed elements fall inside a grid of `len`.
    fn inside(&self, len: usize) -> usize {
        if self.count == 0 || self.grid0 >= len {
            0
        } else {
            self.count.min((len - self.grid0 - 1) / self.step + 1)
        }
    }
}

/// Where a window of a source plane (rows `src_w` floats long) lands in the grid. Elements that
/// would land outside the grid are dropped (callers size the grid so that dropped elements never
/// influence what they read back).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub src_w: usize,
    pub rows: Axis,
    pub cols: Axis,
}

struct Planners {
    planner: FftPlanner<f32>,
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
            planner: FftPlanner::new(),
            plans: HashMap::new(),
        })
    });
    // Entries are inserted whole or not at all, so a lock poisoned by a panic elsewhere still
    // guards consistent maps.
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = guard.plans.get(&(fh, fw)) {
        return Arc::clone(p);
    }
    let planners = &mut *guard;
    let row_fwd = planners.planner.plan_fft_forward(fw);
    let row_inv = planners.planner.plan_fft_inverse(fw);
    let col_fwd = planners.planner.plan_fft_forward(fh);
    let col_inv = planners.planner.plan_fft_inverse(fh);
    let scratch_len = [&row_fwd, &row_inv, &col_fwd, &col_inv]
        .iter()
        .map(|f| f.get_inplace_scratch_len())
        .max()
        .unwrap_or(0);
    let cw = fw / 2 + 1;
    let p = Arc::new(Plan2d {
        fh,
        fw,
        cw,
        bins: cw * fh,
        tiles: (cw * fh).div_ceil(TILE),
        // Up to 16 planes, keeping the per-thread group buffer within ~512 KB.
        group: ((512 << 10) / (cw * fh * 8)).clamp(1, 16),
        row_fwd,
        row_inv,
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

/// Write access to a tile-major buffer of `planes` spectra, one range of planes per caller.
pub(crate) struct TileMajorMut<'a> {
    ptr: *mut f32,
    planes: usize,
    tiles: usize,
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the writer only writes whole planes, and `write` requires that no two threads write
// the same plane at once; distinct planes occupy disjoint floats.
unsafe impl Send for TileMajorMut<'_> {}
unsafe impl Sync for TileMajorMut<'_> {}

impl<'a> TileMajorMut<'a> {
    pub fn new(buf: &'a mut [f32], planes: usize, tiles: usize) -> Self {
        assert!(
            buf.len() >= planes * tiles * 2 * TILE,
            "fft: spectra buffer too small"
        );
        TileMajorMut {
            ptr: buf.as_mut_ptr(),
            planes,
            tiles,
            _buf: std::marker::PhantomData,
        }
    }

    /// Stores planes `plane0..plane0 + count` from `src`, which holds their column-major
    /// spectra of `bins` bins each, one after the other (padding bins become zero).
    ///
    /// # Safety
    /// No other thread may write those planes through this writer during the call.
    pub unsafe fn write(&self, plane0: usize, count: usize, src: &[Complex<f32>], bins: usize) {
        // SAFETY: the caller upholds the contract.
        unsafe { write_planes(crate::simd::isa(), self, plane0, count, src, bins) }
    }
}

kernel! {
    /// # Safety
    /// As [`TileMajorMut::write`].
    unsafe fn write_planes(tm: &TileMajorMut<'_>, plane0: usize, count: usize, src: &[Complex<f32>], bins: usize) {
        assert!(plane0 + count <= tm.planes && bins <= tm.tiles * TILE);
        assert!(src.len() >= count * bins);
        for t in 0..tm.tiles {
            // SAFETY: tile t of planes plane0..plane0+count lies inside the buffer (checked in
            // `new` and above) and belongs to those planes alone, which this caller owns.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    tm.ptr.add((t * tm.planes + plane0) * 2 * TILE),
                    count * 2 * TILE,
                )
            };
            let lo = (t * TILE).min(bins);
            let hi = (lo + TILE).min(bins);
            for (g, chunk) in out.chunks_exact_mut(2 * TILE).enumerate() {
                let (re, im) = chunk.split_at_mut(TILE);
                for (j, v) in src[g * bins + lo..g * bins + hi].iter().enumerate() {
                    re[j] = v.re;
                    im[j] = v.im;
                }
                re[hi - lo..].fill(0.0);
                im[hi - lo..].fill(0.0);
            }
        }
    }
}

kernel! {
    /// Reads planes `plane0..plane0 + count` of the tile-major buffer `spec` (holding `planes`
    /// spectra of `tiles` tiles) into `dst` as column-major spectra of `bins` bins each.
    pub(crate) fn gather(
        spec: &[f32],
        shape: (usize, usize, usize),
        plane0: usize,
        count: usize,
        dst: &mut [Complex<f32>],
    ) {
        let (planes, tiles, bins) = shape;
        for t in 0..tiles {
            let src = &spec[(t * planes + plane0) * 2 * TILE..][..count * 2 * TILE];
            let lo = (t * TILE).min(bins);
            let hi = (lo + TILE).min(bins);
            for (g, chunk) in src.chunks_exact(2 * TILE).enumerate() {
                for (j, v) in dst[g * bins + lo..g * bins + hi].iter_mut().enumerate() {
                    *v = Complex::new(chunk[j], chunk[TILE + j]);
                }
            }
        }
    }
}

impl Plan2d {
    /// Floats of a tile-major buffer holding `planes` spectra.
    pub fn buffer_len(&self, planes: usize) -> usize {
        planes * self.tiles * 2 * TILE
    }

    /// The (planes, tiles, bins) shape `gather` wants.
    pub fn shape(&self, planes: usize) -> (usize, usize, usize) {
        (planes, self.tiles, self.bins)
    }

    pub fn work(&self) -> Work {
        Work {
            rows: vec![Complex::default(); self.fh.div_ceil(2) * self.fw],
            real_row: vec![0.0; self.fw],
            scratch: vec![Complex::default(); self.scratch_len],
        }
    }

    /// Buffers of one task: transform buffers and room for `group` column-major spectra.
    pub fn task_buffers(&self) -> (Work, Vec<Complex<f32>>) {
        (
            self.work(),
            vec![Complex::default(); self.group * self.bins],
        )
    }

    /// Writes into `cols` (`bins` long) the column-major spectrum of `src` placed by `at`.
    pub fn forward(&self, w: &mut Work, src: &[f32], at: Placement, cols: &mut [Complex<f32>]) {
        forward_cols(crate::simd::isa(), self, w, src, at, cols)
    }

    // The shuffles around the FFT calls are plain loops; compiled for AVX2 they vectorise.

    /// Inverse-transforms the column-major spectrum `cols` (overwritten) and calls
    /// `emit(i, row)` with real grid row `grid_rows[i]` for each requested row. Unnormalised:
    /// values come out `fh * fw` times too large.
    pub fn inverse(
        &self,
        w: &mut Work,
        cols: &mut [Complex<f32>],
        grid_rows: &[usize],
        emit: impl FnMut(usize, &[f32]),
    ) {
        inverse_rows(crate::simd::isa(), self, w, cols, grid_rows, emit)
    }
}

kernel! {
    fn forward_cols(plan: &Plan2d, w: &mut Work, src: &[f32], at: Placement, cols: &mut [Complex<f32>]) {
        let (fh, fw, cw) = (plan.fh, plan.fw, plan.cw);
        let rows = at.rows.inside(fh);
        let width = at.cols.inside(fw);
        cols.fill(Complex::default());
        if width == 0 || rows == 0 {
            return;
        }
        let pairs = rows.div_ceil(2);
        let packed = &mut w.rows[..pairs * fw];
        packed.fill(Complex::default());
        for r in 0..rows {
            let row = &mut packed[(r / 2) * fw..(r / 2 + 1) * fw];
            let start = (at.rows.src0 + r) * at.src_w + at.cols.src0;
            let src_row = &src[start..start + width];
            for (c, &v) in src_row.iter().enumerate() {
                let z = &mut row[at.cols.grid0 + c * at.cols.step];
                if r % 2 == 0 {
                    z.re = v;
                } else {
                    z.im = v;
                }
            }
        }
        plan.row_fwd.process_with_scratch(packed, &mut w.scratch);
        // z = a + i b with a, b real: A[k] = (Z[k] + conj Z[-k]) / 2,
        // B[k] = (Z[k] - conj Z[-k]) / 2i.
        for pair in 0..pairs {
            let z = &packed[pair * fw..(pair + 1) * fw];
            let ra = at.rows.grid0 + 2 * pair * at.rows.step;
            let rb = ra + at.rows.step;
            let has_b = 2 * pair + 1 < rows;
            for k in 0..cw {
                let zk = z[k];
                let zc = z[(fw - k) % fw].conj();
                let s = zk + zc;
                cols[k * fh + ra] = Complex::new(0.5 * s.re, 0.5 * s.im);
                if has_b {
                    let d = zk - zc;
                    cols[k * fh + rb] = Complex::new(0.5 * d.im, -0.5 * d.re);
                }
            }
        }
        plan.col_fwd.process_with_scratch(cols, &mut w.scratch);
    }
}

kernel! {
    fn inverse_rows(plan: &Plan2d, w: &mut Work,
        cols: &mut [Complex<f32>],
        grid_rows: &[usize],
        emit: impl FnMut(usize, &[f32]),
    ) {
        let mut emit = emit;
        let (fh, fw, cw) = (plan.fh, plan.fw, plan.cw);
        let pairs = grid_rows.len().div_ceil(2);
        if pairs == 0 {
            return;
        }
        plan.col_inv.process_with_scratch(cols, &mut w.scratch);
        // Two half-spectra A, B of real rows become one full complex row Z = A + iB, whose
        // inverse transform is a + ib.
        let nyquist = if fw % 2 == 0 { Some(fw / 2) } else { None };
        let half = |k: usize, r: usize| -> Complex<f32> {
            let mut v = cols[k * fh + r];
            // A real row's DC (and even-length Nyquist) bin is real; drop rounding residue.
            if k == 0 || Some(k) == nyquist {
                v.im = 0.0;
            }
            v
        };
        for pair in 0..pairs {
            let ra = grid_rows[2 * pair];
            let rb = grid_rows.get(2 * pair + 1).copied();
            let row = &mut w.rows[pair * fw..(pair + 1) * fw];
            for (k, z) in row.iter_mut().enumerate() {
                let (kk, mirrored) = if k < cw { (k, false) } else { (fw - k, true) };
                let mut a = half(kk, ra);
                let mut b = rb.map_or(Complex::default(), |rb| half(kk, rb));
                if mirrored {
                    a = a.conj();
                    b = b.conj();
                }
                *z = Complex::new(a.re - b.im, a.im + b.re);
            }
        }
        plan.row_inv
            .process_with_scratch(&mut w.rows[..pairs * fw], &mut w.scratch);
        for i in 0..grid_rows.len() {
            let row = &w.rows[(i / 2) * fw..(i / 2 + 1) * fw];
            for (d, z) in w.real_row.iter_mut().zip(row) {
                *d = if i % 2 == 0 { z.re } else { z.im };
            }
            emit(i, &w.real_row);
        }
    }
}
