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

mod few;
mod gemv;
mod kernel;
mod pack;

pub(crate) use few::FEW_ROWS;
use gemv::*;
use kernel::*;
use pack::*;
pub(crate) use pack::{copy_panel_row, pack_b_panel_rows};

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
        let (a, b) = (Mat::new(a, lda, trans_a), Mat::new(b, ldb, trans_b));
        sgemm_unchecked(m, n, k, alpha, a, b, beta, c, ldc);
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
    // Zero-width matrices still need a leading dimension of 1 to pass sgemm's checks.
    let lda = if trans_a { m } else { k }.max(1);
    let ldb = if trans_b { k } else { n }.max(1);
    sgemm(
        trans_a,
        trans_b,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        n.max(1),
    )
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
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Mat<'_>,
    b: Mat<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    gemm(
        m,
        n,
        k,
        alpha,
        Lhs::Raw(a),
        b,
        beta,
        c,
        ldc,
        want_parallel(m, n, k),
    );
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
    /// A row-major matrix.
    Raw(Mat<'a>),
    /// Packed once by [`PackedA::new`]; its shape is the call's `m x k`.
    Packed(&'a PackedA),
}

/// A row-major operand: its data, leading dimension `ld`, and whether op() transposes it.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub ld: usize,
    pub trans: bool,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a [f32], ld: usize, trans: bool) -> Self {
        Mat { data, ld, trans }
    }
}

/// The right operand op(B) of an internal GEMM call.
#[derive(Clone, Copy)]
pub(crate) enum Rhs<'a> {
    Mat(Mat<'a>),
    /// Already in the packed layout of [`packed_b_len`]: panel-major,
    /// `[round_up(n, NR) / NR][k][NR]`, zero past column n. Producers that can write that layout
    /// directly (im2col) save the GEMM a copy.
    Packed(&'a [f32]),
    /// Rows gathered from anywhere, see [`Rows`].
    Rows(Rows<'a>),
}

/// A right operand whose rows lie anywhere (a conv's input channels gathered from several
/// arrays): row `p` of op(B) is `rows[p][..n]`, mapped through `affine`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub rows: &'a [&'a [f32]],
    pub affine: RowAffine<'a>,
}

/// `v * scale[p] + shift[p]` on row `p` (multiply, then add: no fused multiply-add, so the values
/// are those `elementwise::concat_channels_affine` writes), then max(0, .) with `relu`.
#[derive(Clone, Copy)]
pub struct RowAffine<'a> {
    pub scale: &'a [f32],
    pub shift: &'a [f32],
    pub relu: bool,
}

impl<'a> From<Mat<'a>> for Rhs<'a> {
    fn from(m: Mat<'a>) -> Self {
        Rhs::Mat(m)
    }
}

fn assert_fits(len: usize, (rows, cols): (usize, usize), ld: usize) {
    assert!(
        ld >= cols && min_len(rows, cols, ld).is_some_and(|need| len >= need),
        "gemm: internal caller passed a {rows}x{cols} matrix (ld {ld}) in {len} floats"
    );
}

/// Steps of the shared dimension per pass: at most KC, all passes the same length (576 goes
/// as 2 x 288, not 256 + 256 + 64), so no pass pays a full C update for a few steps.
pub(crate) fn kc_step(k: usize) -> usize {
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
pub(crate) fn gemm<'a>(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    b: impl Into<Rhs<'a>>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: bool,
) {
    assert_fits(c.len(), (m, n), ldc);
    // SAFETY: C is exclusively borrowed and large enough (asserted).
    unsafe { gemm_raw(m, n, k, alpha, a, b, beta, c.as_mut_ptr(), ldc, par) }
}

/// `C = alpha * A * B^T + beta * C` for at most [`FEW_ROWS`] rows of A (`m x k`, row-major)
/// with B stored as `n` rows of `k` (a linear layer's weights), read in place: see `few.rs`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn few_rows(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    par: bool,
) {
    assert!(m <= FEW_ROWS, "few_rows: {m} rows of A");
    assert_fits(a.len(), (m, k), k);
    assert_fits(b.len(), (n, k), k);
    assert_fits(c.len(), (m, n), ldc);
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: C is exclusively borrowed and large enough (asserted).
    unsafe { few::few_rows(m, n, k, alpha, a, b, beta, CPtr(c.as_mut_ptr()), ldc, par) }
}

/// op(B) (`k x n`) packed whole, in the layout of [`Rhs::Packed`], on the pool: for a right
/// operand that many GEMMs share (a linear layer's weights, prepared once).
pub(crate) fn pack_b_whole(b: Mat<'_>, k: usize, n: usize) -> Vec<f32> {
    assert_fits(b.data.len(), if b.trans { (n, k) } else { (k, n) }, b.ld);
    let mut dst = crate::scratch::zeroed(packed_b_len(k, n));
    // A few panels per task: each is a contiguous piece of dst.
    const PANELS: usize = 4;
    if k > 0 {
        dst.par_chunks_mut(PANELS * k * NR)
            .enumerate()
            .for_each(|(t, d)| {
                let j0 = t * PANELS * NR;
                pack_b(d, b, 0, k, j0, (PANELS * NR).min(n - j0));
            });
    }
    dst
}

/// Floats of a packed op(B) (`k x n`), [`Rhs::Packed`].
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    round_up(n, NR) * k
}

/// [`gemm`] writing through a raw pointer, for callers whose parallel tasks write disjoint
/// tiles of one matrix (overlapping `&mut` slices would be undefined behaviour).
///
/// # Safety
/// `c` must point at an `m x n` row-major block with leading dimension `ldc` (`ldc >= n`) that is
/// valid for reads and writes and that nothing else accesses during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw<'a>(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Lhs<'_>,
    b: impl Into<Rhs<'a>>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    par: bool,
) {
    let b = b.into();
    match &a {
        Lhs::Raw(a) => assert_fits(a.data.len(), if a.trans { (k, m) } else { (m, k) }, a.ld),
        Lhs::Packed(pa) => assert!(pa.m == m && pa.k == k, "gemm: packed A shape mismatch"),
    }
    match b {
        Rhs::Mat(b) => assert_fits(b.data.len(), if b.trans { (n, k) } else { (k, n) }, b.ld),
        Rhs::Packed(bp) => assert!(bp.len() >= packed_b_len(k, n), "gemm: packed B too short"),
        Rhs::Rows(r) => assert!(
            r.rows.len() >= k
                && r.rows[..k].iter().all(|row| row.len() >= n)
                && r.affine.scale.len() >= k
                && r.affine.shift.len() >= k,
            "gemm: gathered B rows too short"
        ),
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        scale_c(m, n, beta, c, ldc);
        return;
    }
    if let (Lhs::Raw(Mat { data, ld, trans }), Rhs::Mat(b)) = (&a, b) {
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
    let isa = crate::simd::isa();
    let m_pad = round_up(m, MR);
    let grid = Grid::new(m, n, par, matches!(b, Rhs::Packed(_)));
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
            Lhs::Raw(Mat { data, ld, trans }) => {
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
                    Rhs::Mat(b) => {
                        let bp = b_buf.get(round_up(cols.len(), NR) * kc);
                        pack_b(bp, b, pc, kc, cols.start, cols.len());
                        (bp, kc * NR)
                    }
                    Rhs::Packed(all) => (&all[cols.start * k + pc * NR..], k * NR),
                    Rhs::Rows(r) => {
                        let bp = b_buf.get(round_up(cols.len(), NR) * kc);
                        pack_b_rows(isa, bp, r, pc, kc, cols.start, cols.len());
                        (bp, kc * NR)
                    }
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
                    isa,
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
/// chunk (B already packed by the caller is not repacked, so its rows split finer). Chunks
/// get whole MR-row and NR-column panels, as evenly as the panels divide: 13 panels in 4
/// chunks go 3-3-3-4, not 4-4-4-1.
#[derive(Clone, Copy)]
struct Grid {
    m: usize,
    n: usize,
    row_panels: usize,
    col_panels: usize,
    row_chunks: usize,
    col_chunks: usize,
}

impl Grid {
    fn new(m: usize, n: usize, par: bool, b_packed: bool) -> Grid {
        let (row_panels, col_panels) = (m.div_ceil(MR), n.div_ceil(NR));
        let mut col_chunks = n.div_ceil(NCB);
        let mut row_chunks = 1;
        if par {
            let threads = rayon::current_num_threads();
            let target = 4 * threads;
            let min_rows = if b_packed { 4 * MR } else { MIN_UNIT_ROWS };
            col_chunks = col_chunks.max(target.min(n.div_ceil(MIN_UNIT_COLS)));
            if col_chunks < target {
                row_chunks = target.div_ceil(col_chunks).min(m.div_ceil(min_rows)).max(1);
            } else if col_chunks < 8 * threads {
                // A whole number of units per thread, so no thread is left with one more than
                // the others: ResNet-50's 1x1 64->256 conv on a 56x56 map at batch 1 was 13
                // units of 256 columns, 7 on one thread and 6 on the other (conv_b1: 0.30 ->
                // 0.236 ms as 14).
                col_chunks = col_chunks.next_multiple_of(threads).min(col_panels.max(1));
            }
        }
        Grid {
            m,
            n,
            row_panels,
            col_panels,
            row_chunks: row_chunks.clamp(1, row_panels.max(1)),
            col_chunks: col_chunks.clamp(1, col_panels.max(1)),
        }
    }

    fn units(&self) -> usize {
        self.row_chunks * self.col_chunks
    }

    fn unit(&self, u: usize) -> (Range<usize>, Range<usize>) {
        let (r, c) = (u / self.col_chunks, u % self.col_chunks);
        let cut = |i: usize, panels: usize, chunks: usize, width: usize, len: usize| {
            (i * panels / chunks * width).min(len)
        };
        let rows = cut(r, self.row_panels, self.row_chunks, MR, self.m)
            ..cut(r + 1, self.row_panels, self.row_chunks, MR, self.m);
        let cols = cut(c, self.col_panels, self.col_chunks, NR, self.n)
            ..cut(c + 1, self.col_panels, self.col_chunks, NR, self.n);
        (rows, cols)
    }
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
