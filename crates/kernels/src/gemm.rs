//! Single-precision GEMM (row-major `C = alpha * op(A) * op(B) + beta * C`), the engine under
//! im2col convolution and the linear layer. No BLAS dependency: a BLIS-style blocked algorithm
//! with packed panels, an AVX2+FMA 6x16 register-tile micro-kernel (portable fallback when the CPU
//! or `simd::set_level` says no), and rayon parallelism over tiles of C.
//!
//! Blocking (sized for Zen-class cores: 32 KiB L1d, 512 KiB L2):
//! - at most `KC` = 256 steps of the shared dimension per pass (passes balanced: 576 goes as
//!   2 x 288), so one packed B micro-panel (<= 16 KiB) stays in L1 while A micro-panels stream
//!   past it;
//! - `MC` = 144 rows of op(A) per block (144 x 256 floats = 144 KiB, stays in L2);
//! - `NCB` = 256 columns of op(B) per unit (256 KiB of packed B, also in L2).
//!
//! op(A) is packed once per call (per 16 MiB range of the shared dimension for huge ones) and
//! shared; C is cut into independent units of rows x columns that each pack their own slice of
//! B and run the whole shared dimension, so the threads meet only at the end of the call.
//! Units split C, never the shared dimension, so every C element is summed in the same order
//! whatever the thread count: results do not depend on the pool size.
use crate::error::{check_len, numel};
use crate::{bail, Result};
use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;

/// Rows of the register tile.
pub(crate) const MR: usize = 6;
/// Columns of the register tile (two AVX vectors).
pub(crate) const NR: usize = 16;
const MC: usize = 144;
const KC: usize = 256;
/// Most columns of B one unit packs: 256 x 256 floats = 256 KiB, half of L2.
const NCB: usize = 256;
/// Narrowest parallel unit: 4 panels, so each A block brought into L2 is used 4 times per row.
const MIN_UNIT_COLS: usize = 64;
/// Fewest rows a parallel unit is cut down to, so repacking its B slice stays cheap.
const MIN_UNIT_ROWS: usize = 96;
/// Most floats of packed A held at once (16 MiB); larger problems pack A a range at a time.
const A_PACK_FLOATS: usize = 4 << 20;

/// Work (m*n*k) below which threading costs more than it saves.
const PARALLEL_MIN_WORK: f64 = 262_144.0;

/// Public entry: `C = alpha * op(A) * op(B) + beta * C` on row-major matrices with leading
/// dimensions `lda`, `ldb`, `ldc`, where `op(X)` is `X` or its transpose. `op(A)` is `m x k`,
/// `op(B)` is `k x n`, `C` is `m x n`. With `beta == 0` the old contents of `C` are never read
/// (NaN in C does not leak into the result). Runs on the current rayon pool.
#[allow(clippy::too_many_arguments)] // the BLAS argument list, kept so callers can read it as one
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<()> {
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    check_matrix("a", "lda", a.len(), a_rows, a_cols, lda)?;
    check_matrix("b", "ldb", b.len(), b_rows, b_cols, ldb)?;
    check_matrix("c", "ldc", c.len(), m, n, ldc)?;
    crate::scratch::fallible("sgemm", || {
        sgemm_unchecked(
            trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
        );
        Ok(())
    })
}

/// [`sgemm`] on tightly packed matrices (`lda = trans_a ? m : k`, `ldb = trans_b ? k : n`,
/// `ldc = n`), with exact buffer lengths required.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_tight(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) -> Result<()> {
    check_len("a", a.len(), numel("a", &[m, k])?)?;
    check_len("b", b.len(), numel("b", &[k, n])?)?;
    check_len("c", c.len(), numel("c", &[m, n])?)?;
    let lda = if trans_a { m } else { k };
    let ldb = if trans_b { k } else { n };
    crate::scratch::fallible("sgemm", || {
        sgemm_unchecked(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, n);
        Ok(())
    })
}

/// Checks that a `rows x cols` row-major matrix with leading dimension `ld` fits in `len` floats.
fn check_matrix(
    name: &str,
    ld_name: &str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<()> {
    if ld < cols.max(1) {
        bail!("{ld_name}: expected at least {}, got {ld}", cols.max(1));
    }
    let need = min_len(rows, cols, ld)
        .ok_or_else(|| crate::KernelError(format!("{name}: matrix size overflows")))?;
    if len < need {
        bail!("{name}: expected at least {need} elements, got {len}");
    }
    Ok(())
}

/// Floats spanned by a `rows x cols` matrix with leading dimension `ld` (None on overflow).
fn min_len(rows: usize, cols: usize, ld: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(ld)?.checked_add(cols)
}

/// Internal fast path for kernels whose shapes are already validated: no error formatting, and
/// threading decided by the problem size on the current pool. The asserts only guard against
/// bugs in the caller (they keep the raw-pointer stores in bounds), never user input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_unchecked(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let par = want_parallel(m, n, k);
    let a = Lhs::Raw {
        data: a,
        ld: lda,
        trans: trans_a,
    };
    let b = Rhs {
        data: b,
        ld: ldb,
        trans: trans_b,
    };
    gemm(m, n, k, alpha, a, b, beta, c, ldc, par);
}

/// Whether a problem of this size should be split over the current pool.
pub(crate) fn want_parallel(m: usize, n: usize, k: usize) -> bool {
    rayon::current_num_threads() > 1 && (m as f64) * (n as f64) * (k as f64) >= PARALLEL_MIN_WORK
}

/// op(A), `m x k`, in every pass (`kc_step(k)` steps of the shared dimension) packed into
/// MR-row panels: the block starting at shared index `p0` (length `kc`) sits at `m_pad * p0`,
/// panel `i` of it at `i * MR * kc`, laid out `[kc][MR]`. Rows past `m` are zero.
pub(crate) struct PackedA {
    buf: AlignedBuf,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs op(A) (`m x k`, stored row-major with leading dimension `ld`).
    pub(crate) fn new(trans: bool, m: usize, k: usize, a: &[f32], ld: usize, par: bool) -> Self {
        assert_fits(a.len(), if trans { (k, m) } else { (m, k) }, ld);
        let m_pad = round_up(m, MR);
        let mut buf = AlignedBuf::default();
        pack_a(buf.get(m_pad * k), a, ld, trans, m, 0..k, kc_step(k), par);
        PackedA { buf, m, k }
    }

    /// Packs a new op(A) into this one's buffer, which grows only when it must (callers that
    /// keep packed operands between calls skip the allocation and its page faults).
    pub(crate) fn repack(
        &mut self,
        trans: bool,
        m: usize,
        k: usize,
        a: &[f32],
        ld: usize,
        par: bool,
    ) {
        assert_fits(a.len(), if trans { (k, m) } else { (m, k) }, ld);
        let m_pad = round_up(m, MR);
        pack_a(
            self.buf.get(m_pad * k),
            a,
            ld,
            trans,
            m,
            0..k,
            kc_step(k),
            par,
        );
        (self.m, self.k) = (m, k);
    }

    /// A packed operand with no buffer yet, for [`repack`](Self::repack).
    pub(crate) fn empty() -> Self {
        PackedA {
            buf: AlignedBuf::default(),
            m: 0,
            k: 0,
        }
    }

    /// Floats held by the buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.buf.len()
    }

    /// The packed blocks of shared indices `ks` (KC-aligned start).
    fn range(&self, ks: Range<usize>) -> &[f32] {
        let m_pad = round_up(self.m, MR);
        &self.buf.slice()[m_pad * ks.start..m_pad * ks.end]
    }
}

/// The left operand op(A) of an internal GEMM call.
pub(crate) enum Lhs<'a> {
    /// Row-major with leading dimension `ld`, transposed when `trans`.
    Raw {
        data: &'a [f32],
        ld: usize,
        trans: bool,
    },
    /// Packed once by [`PackedA::new`]; its shape is the call's `m x k`.
    Packed(&'a PackedA),
}

/// The right operand op(B) of an internal GEMM call: row-major, leading dimension `ld`.
#[derive(Clone, Copy)]
pub(crate) struct Rhs<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub trans: bool,
}

fn assert_fits(len: usize, (rows, cols): (usize, usize), ld: usize) {
    assert!(
        ld >= cols && min_len(rows, cols, ld).is_some_and(|need| len >= need),
        "gemm: internal caller passed a {rows}x{cols} matrix (ld {ld}) in {len} floats"
    );
}

/// Steps of the shared dimension per pass: at most KC, all passes the same length (576 goes
/// as 2 x 288, not 256 + 256 + 64), so no pass pays a full C update for a few steps.
fn kc_step(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC).max(1)).max(1)
}

#[inline]
fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// A reusable float buffer whose slice starts on a 64-byte boundary (cache-line aligned panels).
#[derive(Default)]
struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn get(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len + 16 {
            self.buf = crate::scratch::zeroed(len + 16);
        }
        self.off = self.buf.as_ptr().align_offset(64).min(16);
        self.len = len;
        &mut self.buf[self.off..self.off + len]
    }

    fn slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
}

thread_local! {
    // Pack buffers reused across calls on the same thread. Taken out while in use (not
    // borrowed), so a nested call on the same thread just allocates its own.
    static PACK_A: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
    static PACK_B: Cell<AlignedBuf> = Cell::new(AlignedBuf::default());
}

/// Raw base pointer of C shared by the tasks that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: tasks given a CPtr write pairwise-disjoint tiles of C (see `macro_kernel`), and the
// buffer outlives them (the rayon scope ends before `gemm` returns).
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The pointer `off` floats further on. A method (not field access) so closures capture the
    /// whole Send + Sync wrapper.
    ///
    /// # Safety
    /// `off` must stay inside C.
    #[inline]
    unsafe fn at(self, off: usize) -> *mut f32 {
        self.0.add(off)
    }
}

/// `C = alpha * op(A) * op(B) + beta * C` for internal callers; `par` lets it use the pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    b: Rhs<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: bool,
) {
    assert_fits(c.len(), (m, n), ldc);
    // SAFETY: C is exclusively borrowed and large enough (asserted).
    unsafe { gemm_raw(m, n, k, alpha, a, b, beta, c.as_mut_ptr(), ldc, par) }
}

/// [`gemm`] writing through a raw pointer, for callers whose parallel tasks write disjoint
/// tiles of one matrix (overlapping `&mut` slices would be undefined behaviour).
///
/// # Safety
/// `c` must point at an `m x n` row-major block with leading dimension `ldc` (`ldc >= n`) that is
/// valid for reads and writes and that nothing else accesses during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    b: Rhs<'_>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    par: bool,
) {
    gemm_impl(m, n, k, alpha, a, BSrc::Mat(b), beta, c, ldc, par)
}

/// [`gemm_raw`] with op(B) already in the packed layout of [`packed_b_len`]: panel-major,
/// `[round_up(n, NR) / NR][k][NR]`, zero past column n. Producers that can write that layout
/// directly (im2col) save the GEMM a copy.
///
/// # Safety
/// As for [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw_packed_b(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    bp: &[f32],
    beta: f32,
    c: *mut f32,
    ldc: usize,
    par: bool,
) {
    assert!(bp.len() >= packed_b_len(k, n), "gemm: packed B too short");
    gemm_impl(m, n, k, alpha, a, BSrc::Packed(bp), beta, c, ldc, par)
}

/// Floats of a packed op(B) (`k x n`) for [`gemm_raw_packed_b`].
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    round_up(n, NR) * k
}

#[derive(Clone, Copy)]
enum BSrc<'a> {
    Mat(Rhs<'a>),
    Packed(&'a [f32]),
}

/// # Safety
/// As for [`gemm_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_impl(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    b: BSrc<'_>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    par: bool,
) {
    match &a {
        Lhs::Raw { data, ld, trans } => {
            assert_fits(data.len(), if *trans { (k, m) } else { (m, k) }, *ld)
        }
        Lhs::Packed(pa) => assert!(pa.m == m && pa.k == k, "gemm: packed A shape mismatch"),
    }
    if let BSrc::Mat(b) = b {
        assert_fits(b.data.len(), if b.trans { (n, k) } else { (k, n) }, b.ld);
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    if let (Lhs::Raw { data, ld, trans }, BSrc::Mat(b)) = (&a, b) {
        let (data, ld, trans) = (*data, *ld, *trans);
        // A single row or column of C is a matrix-vector product: memory-bound, and a 6x16
        // tile would run mostly empty, so it gets its own path.
        if m == 1 {
            let v = gather(k, |p| if trans { data[p * ld] } else { data[p] });
            let form = if b.trans { Form::Rows } else { Form::Cols };
            gemv(n, k, alpha, b.data, b.ld, form, &v, beta, CPtr(c), 1, par);
            return;
        }
        if n == 1 {
            let v = gather(k, |p| if b.trans { b.data[p] } else { b.data[p * b.ld] });
            let form = if trans { Form::Cols } else { Form::Rows };
            gemv(m, k, alpha, data, ld, form, &v, beta, CPtr(c), ldc, par);
            return;
        }
    }
    let avx = crate::simd::use_avx2();
    let m_pad = round_up(m, MR);
    let grid = Grid::new(m, n, par);
    let cp = CPtr(c);
    let mut a_buf = PACK_A.take();
    // A is packed for a whole range of the shared dimension at once (all of it unless that
    // would be huge), so units then run over the range with no barrier per KC step.
    let step = kc_step(k);
    let span = (A_PACK_FLOATS / m_pad / step * step).max(step);
    for k0 in (0..k).step_by(span) {
        let ks = k0..(k0 + span).min(k);
        let ap: &[f32] = match &a {
            Lhs::Packed(pa) => pa.range(ks.clone()),
            Lhs::Raw { data, ld, trans } => {
                let ap = a_buf.get(m_pad * ks.len());
                pack_a(ap, data, *ld, *trans, m, ks.clone(), step, par);
                ap
            }
        };
        let unit = |u: usize| {
            let (rows, cols) = grid.unit(u);
            let mut b_buf = PACK_B.take();
            for pc in ks.clone().step_by(step) {
                let kc = step.min(ks.end - pc);
                // This KC step of the unit's columns: panel q at bp[q * stride..][..kc * NR].
                let (bp, stride): (&[f32], usize) = match b {
                    BSrc::Mat(b) => {
                        let bp = b_buf.get(round_up(cols.len(), NR) * kc);
                        pack_b(bp, b, pc, kc, cols.start, cols.len());
                        (bp, kc * NR)
                    }
                    BSrc::Packed(all) => (&all[cols.start * k + pc * NR..], k * NR),
                };
                let apc = &ap[m_pad * (pc - ks.start)..m_pad * (pc - ks.start + kc)];
                let beta_now = if pc == 0 { beta } else { 1.0 };
                // SAFETY: the unit's tile lies inside the m x n block at `c` (caller's
                // contract), and units cover disjoint tiles.
                let c_unit = CPtr(cp.at(cols.start));
                let n_unit = cols.len();
                macro_kernel(
                    m,
                    rows.clone(),
                    n_unit,
                    kc,
                    apc,
                    bp,
                    stride,
                    alpha,
                    beta_now,
                    c_unit,
                    ldc,
                    avx,
                );
            }
            PACK_B.set(b_buf);
        };
        if par && grid.units() > 1 {
            (0..grid.units())
                .into_par_iter()
                .with_max_len(1)
                .for_each(unit);
        } else {
            (0..grid.units()).for_each(unit);
        }
    }
    PACK_A.set(a_buf);
}

/// How C splits into independent units (a range of rows by a range of columns). Each unit
/// packs its own slice of B, at most `NCB` columns so it stays in L2 while the A blocks stream
/// past, and walks its rows in MC blocks. With threads, columns are split further (down to
/// `MIN_UNIT_COLS`) until there are enough units to even out uneven cores (the machine may be
/// shared); only when that is not enough are rows split too, which repacks B once per row
/// chunk.
#[derive(Clone, Copy)]
struct Grid {
    m: usize,
    n: usize,
    mh: usize,
    nw: usize,
    row_chunks: usize,
    col_chunks: usize,
}

impl Grid {
    fn new(m: usize, n: usize, par: bool) -> Grid {
        let mut col_chunks = n.div_ceil(NCB);
        let mut row_chunks = 1;
        if par {
            let target = 4 * rayon::current_num_threads();
            col_chunks = col_chunks.max(target.min(n.div_ceil(MIN_UNIT_COLS)));
            if col_chunks < target {
                row_chunks = target
                    .div_ceil(col_chunks)
                    .min(m.div_ceil(MIN_UNIT_ROWS))
                    .max(1);
            }
        }
        let nw = round_up(n.div_ceil(col_chunks), NR);
        let mh = round_up(m.div_ceil(row_chunks), MR);
        Grid {
            m,
            n,
            mh,
            nw,
            row_chunks: m.div_ceil(mh),
            col_chunks: n.div_ceil(nw),
        }
    }

    fn units(&self) -> usize {
        self.row_chunks * self.col_chunks
    }

    fn unit(&self, u: usize) -> (Range<usize>, Range<usize>) {
        let (r, c) = (u / self.col_chunks, u % self.col_chunks);
        let (r0, c0) = (r * self.mh, c * self.nw);
        (
            r0..(r0 + self.mh).min(self.m),
            c0..(c0 + self.nw).min(self.n),
        )
    }
}

fn gather(k: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
    (0..k).map(f).collect()
}

/// How a gemv matrix is read: element (i, p) at `i * ld + p` (`Rows`: each output is a dot
/// product of a contiguous row) or at `p * ld + i` (`Cols`: outputs accumulate scaled rows).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Rows,
    Cols,
}

/// Outputs per gemv task: enough contiguous work to be worth a rayon task.
const GEMV_CHUNK: usize = 256;

/// y[i * incy] = alpha * sum_p M(i, p) v[p] + beta * y[i * incy] for i in 0..len.
///
/// # Safety
/// `y` must be valid for `len` elements at stride `incy`, touched by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemv(
    len: usize,
    k: usize,
    alpha: f32,
    mat: &[f32],
    ld: usize,
    form: Form,
    v: &[f32],
    beta: f32,
    y: CPtr,
    incy: usize,
    par: bool,
) {
    let avx = crate::simd::use_avx2();
    let chunk = |i0: usize| {
        let i1 = (i0 + GEMV_CHUNK).min(len);
        let mut acc = [0f32; GEMV_CHUNK];
        let acc = &mut acc[..i1 - i0];
        match form {
            Form::Rows => {
                for (i, out) in (i0..i1).zip(acc.iter_mut()) {
                    *out = dot(&mat[i * ld..i * ld + k], v, avx);
                }
            }
            Form::Cols => {
                for (p, &vp) in v.iter().enumerate() {
                    axpy(acc, vp, &mat[p * ld + i0..p * ld + i1], avx);
                }
            }
        }
        for (i, &a) in (i0..i1).zip(acc.iter()) {
            // SAFETY: i < len, inside y (caller's contract); chunks are disjoint.
            let yi = unsafe { &mut *y.at(i * incy) };
            *yi = if beta == 0.0 {
                alpha * a
            } else {
                alpha * a + beta * *yi
            };
        }
    };
    if par && len > GEMV_CHUNK {
        (0..len).into_par_iter().step_by(GEMV_CHUNK).for_each(chunk);
    } else {
        (0..len).step_by(GEMV_CHUNK).for_each(chunk);
    }
}

/// Dot product with eight independent partial sums per lane group, so it vectorises.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 32];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..32 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_lanes(y: &mut [f32], s: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += s * xi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], s: f32, x: &[f32]) {
    axpy_lanes(y, s, x)
}

fn dot(a: &[f32], b: &[f32], avx: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: `avx` comes from simd::use_avx2(), which checked the CPU.
        return unsafe { dot_avx2(a, b) };
    }
    let _ = avx;
    dot_lanes(a, b)
}

fn axpy(y: &mut [f32], s: f32, x: &[f32], avx: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: as in `dot`.
        return unsafe { axpy_avx2(y, s, x) };
    }
    let _ = avx;
    axpy_lanes(y, s, x)
}

/// C = beta * C (the whole product vanished: k == 0 or alpha == 0).
///
/// # Safety
/// As for [`gemm_raw`].
unsafe fn scale_c(m: usize, n: usize, beta: f32, c: *mut f32, ldc: usize) {
    for i in 0..m {
        let row = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
        if beta == 0.0 {
            row.fill(0.0);
        } else if beta != 1.0 {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}

/// Packs rows `0..m` of op(A), shared indices `ks`, into `dst` (m_pad * ks.len() floats): one
/// block per `step` of the shared dimension (the block of shared index p0 at
/// `m_pad * (p0 - ks.start)`), each block a run of MR-row panels `[kc][MR]`.
#[allow(clippy::too_many_arguments)]
fn pack_a(
    dst: &mut [f32],
    a: &[f32],
    lda: usize,
    trans: bool,
    m: usize,
    ks: Range<usize>,
    step: usize,
    par: bool,
) {
    let m_pad = round_up(m, MR);
    // Every (block, panel) pair is independent: list them all so one parallel loop (one
    // barrier) packs the whole range.
    let mut jobs = Vec::with_capacity(m_pad / MR * ks.len().div_ceil(step));
    let mut rest = dst;
    for p0 in ks.clone().step_by(step) {
        let kc = step.min(ks.end - p0);
        let (block, tail) = rest.split_at_mut(m_pad * kc);
        rest = tail;
        for (ip, d) in block.chunks_mut(MR * kc).enumerate() {
            jobs.push((p0, kc, ip * MR, d));
        }
    }
    let job = |(p0, kc, i0, d): (usize, usize, usize, &mut [f32])| {
        pack_a_panel(d, a, lda, trans, i0, MR.min(m - i0), p0, kc);
    };
    if par {
        jobs.into_par_iter().with_min_len(8).for_each(job);
    } else {
        jobs.into_iter().for_each(job);
    }
}

#[allow(clippy::too_many_arguments)]
fn pack_a_panel(
    dst: &mut [f32],
    a: &[f32],
    lda: usize,
    trans: bool,
    i0: usize,
    mr: usize,
    p0: usize,
    kc: usize,
) {
    if trans {
        // op(A)[i][p] = a[p * lda + i]: each step of p is a contiguous run of MR floats.
        for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
            let src = &a[(p0 + p) * lda + i0..][..mr];
            match (<&mut [f32; MR]>::try_from(d), <&[f32; MR]>::try_from(src)) {
                (Ok(d), Ok(s)) => *d = *s,
                (Ok(d), Err(_)) => {
                    d[..mr].copy_from_slice(src);
                    d[mr..].fill(0.0);
                }
                (Err(_), _) => unreachable!("chunks_exact_mut(MR) yields MR floats"),
            }
        }
    } else if mr == MR {
        let rows: [&[f32]; MR] = std::array::from_fn(|i| &a[(i0 + i) * lda + p0..][..kc]);
        for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
            for i in 0..MR {
                d[i] = rows[i][p];
            }
        }
    } else {
        dst.fill(0.0);
        for i in 0..mr {
            let row = &a[(i0 + i) * lda + p0..][..kc];
            for (p, &v) in row.iter().enumerate() {
                dst[p * MR + i] = v;
            }
        }
    }
}

/// Packs op(B) rows `p0..p0+kc`, columns `j0..j0+nc`, into NR-column panels `[kc][NR]`
/// (zero past column nc).
fn pack_b(dst: &mut [f32], b: Rhs<'_>, p0: usize, kc: usize, j0: usize, nc: usize) {
    let panels = nc.div_ceil(NR);
    if !b.trans {
        // op(B)[p][j] = b[p * ldb + j]: read each source row once, sequentially, and deal it
        // out to the panels.
        for p in 0..kc {
            let src = &b.data[(p0 + p) * b.ld + j0..][..nc];
            for (jp, chunk) in src.chunks(NR).enumerate() {
                let d = &mut dst[(jp * kc + p) * NR..][..NR];
                copy_panel_row(d, chunk);
            }
        }
        return;
    }
    let avx = crate::simd::use_avx2();
    for jp in 0..panels {
        let d = &mut dst[jp * kc * NR..][..kc * NR];
        let j = j0 + jp * NR;
        let nr = NR.min(nc - jp * NR);
        #[cfg(target_arch = "x86_64")]
        if avx && nr == NR {
            // Bounds of all sixteen source rows, checked once for the raw loads.
            let _ = &b.data[(j + NR - 1) * b.ld + p0..][..kc];
            // SAFETY: AVX2 checked; rows j..j+16 each hold kc floats from p0 (checked above,
            // rows are ld >= kc apart); `d` holds kc * NR floats.
            unsafe { pack_b_trans_avx2(d, b.data.as_ptr().add(j * b.ld + p0), b.ld, kc) };
            continue;
        }
        let _ = avx;
        if nr < NR {
            d.fill(0.0);
        }
        // op(B)[p][j] = b[j * ldb + p]: read each source row once, scatter down the panel.
        for jj in 0..nr {
            let src = &b.data[(j + jj) * b.ld + p0..][..kc];
            for (dv, &v) in d[jj..].iter_mut().step_by(NR).zip(src) {
                *dv = v;
            }
        }
    }
}

/// One NR-float row of a packed panel from up to NR source floats, zero-filled; the full case
/// is a fixed-size copy (two vector moves, not a memmove call).
#[inline(always)]
pub(crate) fn copy_panel_row(d: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; NR]>::try_from(&mut d[..NR]),
        <&[f32; NR]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => {
            d[..src.len()].copy_from_slice(src);
            d[src.len()..NR].fill(0.0);
        }
    }
}

/// Packs a full 16-column panel of a transposed B: dst[p][j] = src[j * ld + p], 8x8 blocks
/// transposed in registers (eight loads, 24 shuffles, eight stores per 64 floats).
///
/// # Safety
/// CPU has AVX2; rows `src + j * ld` for j in 0..16 hold `kc` readable floats; `dst` holds
/// `kc * 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_trans_avx2(dst: &mut [f32], src: *const f32, ld: usize, kc: usize) {
    use std::arch::x86_64::*;
    debug_assert!(dst.len() >= kc * NR);
    let d = dst.as_mut_ptr();
    let mut p = 0;
    while p + 8 <= kc {
        for half in 0..2 {
            let row = |i: usize| _mm256_loadu_ps(src.add((half * 8 + i) * ld + p));
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let cols = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (i, col) in cols.into_iter().enumerate() {
                _mm256_storeu_ps(d.add((p + i) * NR + half * 8), col);
            }
        }
        p += 8;
    }
    for p in p..kc {
        for j in 0..NR {
            *d.add(p * NR + j) = *src.add(j * ld + p);
        }
    }
}

/// C[rows, 0..n] = alpha * Apack[rows] * Bpack + beta * C[rows, 0..n] for one KC pass, where
/// `c` points at column 0 of the unit, `ap` holds the packed panels of all m rows and `bp` the
/// unit's n columns (panel q at `q * b_stride`). Rows go in MC blocks (one A block stays in
/// L2), then NR panels of B (one stays in L1), then MR panels of A.
///
/// # Safety
/// Rows `rows` by columns `0..n` at `c` (leading dimension `ldc`) must be writable and touched
/// by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel(
    m: usize,
    rows: Range<usize>,
    n: usize,
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    b_stride: usize,
    alpha: f32,
    beta: f32,
    c: CPtr,
    ldc: usize,
    avx: bool,
) {
    for ic in rows.clone().step_by(MC) {
        let ic_end = (ic + MC).min(rows.end);
        for jr in (0..n).step_by(NR) {
            let nr = NR.min(n - jr);
            let bpanel = &bp[jr / NR * b_stride..][..kc * NR];
            for ir in (ic..ic_end).step_by(MR) {
                let mr = MR.min(m - ir);
                let apanel = &ap[ir * kc..(ir + MR) * kc];
                tile(
                    kc,
                    apanel,
                    bpanel,
                    c.at(ir * ldc + jr),
                    ldc,
                    mr,
                    nr,
                    alpha,
                    beta,
                    avx,
                );
            }
        }
    }
}

/// One MR x NR tile of C (possibly clipped to mr x nr at the edges).
///
/// # Safety
/// `c` must point at an `mr x nr` block (leading dimension `ldc`) no other thread touches.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile(
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
    avx: bool,
) {
    debug_assert!(ap.len() >= MR * kc && bp.len() >= NR * kc);
    #[cfg(target_arch = "x86_64")]
    if avx {
        if mr == MR && nr == NR {
            kernel_6x16_avx2(kc, ap.as_ptr(), bp.as_ptr(), c, ldc, alpha, beta);
        } else if mr < MR {
            // A short last row panel (m = 32 leaves 2 of 6 rows): only its real rows are
            // computed, in the same order as the full kernel, so results do not change.
            let mut tmp = [0f32; MR * NR];
            let (a, b, t) = (ap.as_ptr(), bp.as_ptr(), tmp.as_mut_ptr());
            match mr {
                1 => kernel_rows_avx2::<1>(kc, a, b, t, alpha),
                2 => kernel_rows_avx2::<2>(kc, a, b, t, alpha),
                3 => kernel_rows_avx2::<3>(kc, a, b, t, alpha),
                4 => kernel_rows_avx2::<4>(kc, a, b, t, alpha),
                _ => kernel_rows_avx2::<5>(kc, a, b, t, alpha),
            }
            store_edge(&tmp, c, ldc, mr, nr, beta);
        } else {
            let mut tmp = [0f32; MR * NR];
            kernel_6x16_avx2(
                kc,
                ap.as_ptr(),
                bp.as_ptr(),
                tmp.as_mut_ptr(),
                NR,
                alpha,
                0.0,
            );
            store_edge(&tmp, c, ldc, mr, nr, beta);
        }
        return;
    }
    let _ = avx;
    let mut tmp = [0f32; MR * NR];
    kernel_scalar(kc, ap, bp, &mut tmp, alpha);
    store_edge(&tmp, c, ldc, mr, nr, beta);
}

/// C[i][j] = tmp[i][j] + beta * C[i][j] over the clipped tile (C unread when beta == 0).
///
/// # Safety
/// As for [`tile`].
unsafe fn store_edge(
    tmp: &[f32; MR * NR],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    beta: f32,
) {
    for i in 0..mr {
        let row = std::slice::from_raw_parts_mut(c.add(i * ldc), nr);
        let t = &tmp[i * NR..i * NR + nr];
        if beta == 0.0 {
            row.copy_from_slice(t);
        } else {
            for (cv, &tv) in row.iter_mut().zip(t) {
                *cv = tv + beta * *cv;
            }
        }
    }
}

/// Portable micro-kernel: tmp = alpha * Apanel * Bpanel over a full MR x NR tile.
fn kernel_scalar(kc: usize, ap: &[f32], bp: &[f32], tmp: &mut [f32; MR * NR], alpha: f32) {
    let mut acc = [[0f32; NR]; MR];
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)).take(kc) {
        for i in 0..MR {
            let ai = a[i];
            for j in 0..NR {
                acc[i][j] += ai * b[j];
            }
        }
    }
    for i in 0..MR {
        for j in 0..NR {
            tmp[i * NR + j] = alpha * acc[i][j];
        }
    }
}

/// The first `R < MR` rows of the 6x16 tile, `alpha * A * B` into `tmp` (leading dimension NR):
/// the same per-element FMA chain as [`kernel_6x16_avx2`] without the empty rows' work.
///
/// # Safety
/// CPU has AVX2+FMA; `a` holds `6*kc` floats (an MR-row panel), `b` holds `16*kc`, `tmp` is a
/// writable `R x 16` block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_rows_avx2<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tmp: *mut f32,
    alpha: f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * NR));
        let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
        let ar = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ar.add(i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    let va = _mm256_set1_ps(alpha);
    for (i, row) in acc.iter().enumerate() {
        _mm256_storeu_ps(tmp.add(i * NR), _mm256_mul_ps(va, row[0]));
        _mm256_storeu_ps(tmp.add(i * NR + 8), _mm256_mul_ps(va, row[1]));
    }
}

/// AVX2+FMA micro-kernel: 12 accumulators hold a 6x16 tile of C; each step of the shared
/// dimension loads two vectors of B and broadcasts six scalars of A (12 FMAs, 8 loads), enough
/// independent chains to cover the FMA latency on both pipes.
///
/// # Safety
/// CPU has AVX2+FMA; `a` holds `6*kc` floats, `b` holds `16*kc`, `c` is a writable 6x16 block
/// with leading dimension `ldc`, read only when `beta != 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    for i in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
    }
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    let (mut a, mut b) = (a, b);
    macro_rules! step {
        ($off:expr) => {{
            let b0 = _mm256_loadu_ps(b.add($off * NR));
            let b1 = _mm256_loadu_ps(b.add($off * NR + 8));
            let ar = a.add($off * MR);
            let a0 = _mm256_broadcast_ss(&*ar);
            c00 = _mm256_fmadd_ps(a0, b0, c00);
            c01 = _mm256_fmadd_ps(a0, b1, c01);
            let a1 = _mm256_broadcast_ss(&*ar.add(1));
            c10 = _mm256_fmadd_ps(a1, b0, c10);
            c11 = _mm256_fmadd_ps(a1, b1, c11);
            let a2 = _mm256_broadcast_ss(&*ar.add(2));
            c20 = _mm256_fmadd_ps(a2, b0, c20);
            c21 = _mm256_fmadd_ps(a2, b1, c21);
            let a3 = _mm256_broadcast_ss(&*ar.add(3));
            c30 = _mm256_fmadd_ps(a3, b0, c30);
            c31 = _mm256_fmadd_ps(a3, b1, c31);
            let a4 = _mm256_broadcast_ss(&*ar.add(4));
            c40 = _mm256_fmadd_ps(a4, b0, c40);
            c41 = _mm256_fmadd_ps(a4, b1, c41);
            let a5 = _mm256_broadcast_ss(&*ar.add(5));
            c50 = _mm256_fmadd_ps(a5, b0, c50);
            c51 = _mm256_fmadd_ps(a5, b1, c51);
        }};
    }
    let mut p = kc;
    while p >= 4 {
        _mm_prefetch::<_MM_HINT_T0>(b.add(8 * NR) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.add(10 * NR) as *const i8);
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        a = a.add(4 * MR);
        b = b.add(4 * NR);
        p -= 4;
    }
    while p > 0 {
        step!(0);
        a = a.add(MR);
        b = b.add(NR);
        p -= 1;
    }
    let va = _mm256_set1_ps(alpha);
    let rows = [
        (c00, c01),
        (c10, c11),
        (c20, c21),
        (c30, c31),
        (c40, c41),
        (c50, c51),
    ];
    if beta == 0.0 {
        for (i, (lo, hi)) in rows.into_iter().enumerate() {
            let cr = c.add(i * ldc);
            _mm256_storeu_ps(cr, _mm256_mul_ps(va, lo));
            _mm256_storeu_ps(cr.add(8), _mm256_mul_ps(va, hi));
        }
    } else {
        let vb = _mm256_set1_ps(beta);
        for (i, (lo, hi)) in rows.into_iter().enumerate() {
            let cr = c.add(i * ldc);
            let old_lo = _mm256_mul_ps(vb, _mm256_loadu_ps(cr));
            let old_hi = _mm256_mul_ps(vb, _mm256_loadu_ps(cr.add(8)));
            _mm256_storeu_ps(cr, _mm256_fmadd_ps(va, lo, old_lo));
            _mm256_storeu_ps(cr.add(8), _mm256_fmadd_ps(va, hi, old_hi));
        }
    }
}
