//! `C = alpha * A * B^T + beta * C` for a few rows of A (at most [`FEW_ROWS`]) with B stored as
//! rows (`n x k`): a linear layer's forward at small batch, B being its weights. Each tile of
//! four weight rows is read from memory once, a block of the shared dimension at a time, and
//! used for every row of A while it sits in L1, so the product streams the weights at memory
//! speed with no packed copy of them. A packed copy (the GEMM's panels, prepared once per plan)
//! is as fast at batch 8 but doubles what a plan holds for AlexNet's and VGG's classifiers
//! (235 and 494 MB), which put their peak memory above ONNX Runtime's.
//!
//! Written here rather than taken from the GEMM: its 6x16 tiles want B packed (or packed per
//! call, which at batch 8 costs more than the product), and a matrix-vector product per row of
//! A would read the weights once per row.
use super::CPtr;
use crate::simd::{dispatch, kernel, Isa};
use rayon::prelude::*;

/// Most rows of A this path takes.
pub(crate) const FEW_ROWS: usize = 8;
/// Weight rows per tile.
const ROWS: usize = 4;
/// Shared-dimension block: four weight rows (8 KiB) and eight rows of A (16 KiB) stay in L1.
const KB: usize = 512;
/// Partial sums per (weight row, row of A), kept between blocks: one AVX2 vector.
const LANES: usize = 8;
/// Floats of a tile's partial sums, kept between blocks of the shared dimension.
const ACC: usize = ROWS * FEW_ROWS * LANES;
/// Weight rows per parallel task, at most.
const TASK_ROWS: usize = 64;

/// `c[i * ldc + j] = alpha * sum_p a[i * k + p] * b[j * k + p] + beta * c[i * ldc + j]` for
/// `i < m`, `j < n`; with `beta == 0` C is not read. `par` lets it use the pool.
///
/// # Safety
/// `c` must be valid for reads and writes of the `m x n` block (leading dimension `ldc`) and
/// touched by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn few_rows(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: CPtr,
    ldc: usize,
    par: bool,
) {
    debug_assert!(m <= FEW_ROWS && a.len() >= m * k && b.len() >= n * k);
    let isa = crate::simd::isa();
    let threads = if par { rayon::current_num_threads() } else { 1 };
    // Tasks of whole tiles, as many as the threads at least, each at most TASK_ROWS rows.
    let per = n.div_ceil(threads).div_ceil(ROWS) * ROWS;
    let per = per.clamp(ROWS, TASK_ROWS);
    // A copied out with rows a cache line more than a multiple of 16 floats apart: k floats
    // apart (k a multiple of 1024, as classifiers' are) would map every row, and the weight
    // rows, to one set of the L1, more lines than it has ways.
    let ld = k.next_multiple_of(16) + 16;
    let mut xs = crate::scratch::zeroed::<f32>(m * ld);
    for (dst, src) in xs.chunks_exact_mut(ld).zip(a.chunks_exact(k.max(1))) {
        dst[..k].copy_from_slice(src);
    }
    let task = |t: usize| {
        let mut acc = [0f32; ACC];
        for j0 in (t * per..n.min((t + 1) * per)).step_by(ROWS) {
            let rows = ROWS.min(n - j0);
            acc.fill(0.0);
            for p0 in (0..k).step_by(KB) {
                let len = KB.min(k - p0);
                let w = |r: usize| &b[(j0 + r.min(rows - 1)) * k + p0..][..len];
                let x = |i: usize| &xs[i * ld + p0..][..len];
                tile(isa, m, [w(0), w(1), w(2), w(3)], x, &mut acc);
            }
            for i in 0..m {
                for r in 0..rows {
                    let lanes = &acc[(r * FEW_ROWS + i) * LANES..][..LANES];
                    let s = lanes.iter().map(|&v| v as f64).sum::<f64>() as f32;
                    // SAFETY: i < m, j0 + r < n: inside C (caller's contract); tasks write
                    // disjoint columns.
                    let cij = unsafe { &mut *c.at(i * ldc + j0 + r) };
                    *cij = if beta == 0.0 {
                        alpha * s
                    } else {
                        alpha * s + beta * *cij
                    };
                }
            }
        }
    };
    let tasks = n.div_ceil(per);
    if tasks > 1 && par {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Adds one block of the shared dimension to a tile's partial sums: four weight rows (`w`,
/// padded by repeating the last) against the `m` rows of A (`x(i)`), two rows of A at a time,
/// an odd last one paired with itself into a partial-sum slot nothing reads (slot `m`, inside
/// the tile since an odd `m` is below [`FEW_ROWS`]). AVX-512 CPUs run the AVX2 block: the
/// product is bound by the memory streaming the weights, not by the vector width.
fn tile<'s>(
    isa: Isa,
    m: usize,
    w: [&[f32]; ROWS],
    x: impl Fn(usize) -> &'s [f32],
    acc: &mut [f32; ACC],
) {
    let xi = |i: usize| x(i.min(m - 1));
    dispatch!(isa,
        avx2 => for i0 in (0..m).step_by(2) {
            // SAFETY: this arm runs only on CPUs with AVX2 and FMA (dispatch!).
            unsafe { block_avx2(w, [xi(i0), xi(i0 + 1)], acc, i0 * LANES) }
        },
        _ => for i0 in (0..m).step_by(2) {
            block(isa, w, [xi(i0), xi(i0 + 1)], acc, i0 * LANES)
        }
    )
}

/// Start of the partial sums of weight row `r` and row `i` of A, `off` being `i * LANES`.
#[inline(always)]
fn slot(r: usize, off: usize) -> usize {
    r * FEW_ROWS * LANES + off
}

kernel! {
    /// [`tile`]'s block for four weight rows and two rows of A, eight accumulators of eight
    /// lanes (a multiply then an add per step, as the portable kernels do).
    fn block(w: [&[f32]; ROWS], x: [&[f32]; 2], acc: &mut [f32; ACC], off: usize) {
        let len = x[0].len();
        let [w0, w1, w2, w3] = w.map(|r| &r[..len]);
        let [x0, x1] = [&x[0][..len], &x[1][..len]];
        let mut v = [[0f32; LANES]; 8];
        for (k, vk) in v.iter_mut().enumerate() {
            vk.copy_from_slice(&acc[slot(k / 2, off + (k % 2) * LANES)..][..LANES]);
        }
        let chunks = w0
            .chunks_exact(LANES)
            .zip(w1.chunks_exact(LANES))
            .zip(w2.chunks_exact(LANES))
            .zip(w3.chunks_exact(LANES))
            .zip(x0.chunks_exact(LANES).zip(x1.chunks_exact(LANES)));
        for ((((c0, c1), c2), c3), (y0, y1)) in chunks {
            for l in 0..LANES {
                v[0][l] += c0[l] * y0[l];
                v[1][l] += c0[l] * y1[l];
                v[2][l] += c1[l] * y0[l];
                v[3][l] += c1[l] * y1[l];
                v[4][l] += c2[l] * y0[l];
                v[5][l] += c2[l] * y1[l];
                v[6][l] += c3[l] * y0[l];
                v[7][l] += c3[l] * y1[l];
            }
        }
        let tail = len / LANES * LANES;
        for (k, vk) in v.iter_mut().enumerate() {
            let (wr, xr) = ([w0, w1, w2, w3][k / 2], [x0, x1][k % 2]);
            for (l, (&a, &b)) in wr[tail..].iter().zip(&xr[tail..]).enumerate() {
                vk[l] += a * b;
            }
            acc[slot(k / 2, off + (k % 2) * LANES)..][..LANES].copy_from_slice(vk);
        }
    }
}

/// [`block`] with AVX2: the same eight accumulators, fused multiply-adds.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(w: [&[f32]; ROWS], x: [&[f32]; 2], acc: &mut [f32; ACC], off: usize) {
    use std::arch::x86_64::*;
    let len = x[0].len();
    assert!(w.iter().all(|r| r.len() == len) && x[1].len() == len);
    let mut v = [[_mm256_setzero_ps(); 2]; ROWS];
    for (r, vr) in v.iter_mut().enumerate() {
        for (i, vi) in vr.iter_mut().enumerate() {
            *vi = _mm256_loadu_ps(acc[slot(r, off + i * LANES)..][..LANES].as_ptr());
        }
    }
    let (wp, xp) = (w.map(|r| r.as_ptr()), x.map(|r| r.as_ptr()));
    let mut p = 0;
    while p + LANES <= len {
        let (x0, x1) = (_mm256_loadu_ps(xp[0].add(p)), _mm256_loadu_ps(xp[1].add(p)));
        for (vr, &wr) in v.iter_mut().zip(&wp) {
            let wv = _mm256_loadu_ps(wr.add(p));
            vr[0] = _mm256_fmadd_ps(wv, x0, vr[0]);
            vr[1] = _mm256_fmadd_ps(wv, x1, vr[1]);
        }
        p += LANES;
    }
    for (r, vr) in v.iter().enumerate() {
        for (i, &vi) in vr.iter().enumerate() {
            let dst = &mut acc[slot(r, off + i * LANES)..][..LANES];
            _mm256_storeu_ps(dst.as_mut_ptr(), vi);
            for q in p..len {
                dst[q - p] += w[r][q] * x[i][q];
            }
        }
    }
}
