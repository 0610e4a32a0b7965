//! Packing of op(A) into MR-row panels and of op(B) into NR-column panels, laid out as the
//! micro-kernels read them.
use super::*;
use crate::simd::dispatch;

/// Packs rows `0..m` of op(A), shared indices `ks`, into `dst` (m_pad * ks.len() floats): one
/// block per `step` of the shared dimension (the block of shared index p0 at
/// `m_pad * (p0 - ks.start)`), each block a run of MR-row panels `[kc][MR]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_a(
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
pub(super) fn pack_a_panel(
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

/// Rows of B the non-transposed [`pack_b`] prefetches ahead of the one it copies. Each row is
/// a run of at most 256 floats (1 KiB) of a much longer row (a 1x1 conv's input plane), too
/// short for the hardware prefetcher to get going before the next row starts; the input of a
/// batch-8 56x56 layer comes from DRAM. 1x1 256->64 @56 at batch 8: 3.1 -> 2.46 ms, 64->256:
/// 2.7 -> 2.5 ms (scratch benchmark, medians; 2 and 8 rows ahead gave about the same).
const PACK_B_AHEAD: usize = 4;

/// Prefetches every cache line of `row` into L1.
#[inline(always)]
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for l in (0..row.len()).step_by(16) {
        // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
        unsafe {
            use std::arch::x86_64::*;
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(l) as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Packs op(B) rows `p0..p0+kc`, columns `j0..j0+nc`, into NR-column panels `[kc][NR]`
/// (zero past column nc).
pub(super) fn pack_b(dst: &mut [f32], b: Mat<'_>, p0: usize, kc: usize, j0: usize, nc: usize) {
    let panels = nc.div_ceil(NR);
    if !b.trans {
        // op(B)[p][j] = b[p * ldb + j]: read each source row once, sequentially, and deal it
        // out to the panels.
        for p in 0..kc {
            if p + PACK_B_AHEAD < kc {
                prefetch_row(&b.data[(p0 + p + PACK_B_AHEAD) * b.ld + j0..][..nc]);
            }
            let src = &b.data[(p0 + p) * b.ld + j0..][..nc];
            for (jp, chunk) in src.chunks(NR).enumerate() {
                let d = &mut dst[(jp * kc + p) * NR..][..NR];
                copy_panel_row(d, chunk);
            }
        }
        return;
    }
    let isa = crate::simd::isa();
    for jp in 0..panels {
        let d = &mut dst[jp * kc * NR..][..kc * NR];
        let j = j0 + jp * NR;
        let nr = NR.min(nc - jp * NR);
        let done = nr == NR
            && dispatch!(isa,
                avx2 => {
                    // Bounds of all sixteen source rows, checked once for the raw loads.
                    let _ = &b.data[(j + NR - 1) * b.ld + p0..][..kc];
                    let src = b.data[j * b.ld + p0..].as_ptr();
                    // SAFETY: the CPU has AVX2 (this arm); rows j..j+16 each hold kc floats
                    // from p0 (checked above, rows are ld >= kc apart); `d` holds kc * NR.
                    unsafe {
                        let rows = std::array::from_fn(|i| src.add(i * b.ld));
                        pack_b_trans_avx2(d, &rows, kc)
                    };
                    true
                },
                _ => false,
            );
        if done {
            continue;
        }
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

crate::simd::kernel! {
    /// [`pack_b`] for gathered rows (see [`super::Rows`]): rows `p0..p0+kc`, columns
    /// `j0..j0+nc`, each row mapped through the affine map (a kernel, so the map runs in
    /// vectors: DenseNet's 1x1 convs pack every input value through it).
    pub(super) fn pack_b_rows(
        dst: &mut [f32],
        b: super::Rows<'_>,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
    ) {
        for p in 0..kc {
            if p + PACK_B_AHEAD < kc {
                prefetch_row(&b.rows[p0 + p + PACK_B_AHEAD][j0..][..nc]);
            }
            let src = &b.rows[p0 + p][j0..][..nc];
            let a = b.affine;
            let (s, t) = (a.scale[p0 + p], a.shift[p0 + p]);
            for (jp, chunk) in src.chunks(NR).enumerate() {
                let d = &mut dst[(jp * kc + p) * NR..][..NR];
                affine_map(&mut d[..chunk.len()], chunk, s, t, a.relu);
                d[chunk.len()..].fill(0.0);
            }
        }
    }
}

/// `d = v * s + t` for each `v` of `src` (then max(0, .) with `relu`): the multiply and the add
/// rounded apart, as `elementwise::concat_channels_affine` does, so the values are its bits.
#[inline(always)]
fn affine_map(d: &mut [f32], src: &[f32], s: f32, t: f32, relu: bool) {
    for (o, &v) in d.iter_mut().zip(src) {
        let y = v * s + t;
        *o = if relu && y < 0.0 { 0.0 } else { y };
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

/// One panel of a packed op(B) from `rows.len() <= NR` rows of `k` floats that op(B)
/// transposes: `dst[p][j] = rows[j][p]`, zero past the last row. The rows may lie anywhere
/// (the weight gradient's shifted planes).
pub(crate) fn pack_b_panel_rows(dst: &mut [f32], rows: &[&[f32]], k: usize) {
    assert!(
        rows.len() <= NR && dst.len() >= k * NR && rows.iter().all(|r| r.len() >= k),
        "gemm: packed B panel or its rows too short"
    );
    let d = &mut dst[..k * NR];
    let done = dispatch!(crate::simd::isa(),
        avx2 => match <&[&[f32]; NR]>::try_from(rows) {
            Ok(full) => {
                let ptrs = full.map(|r| r.as_ptr());
                // SAFETY: the CPU has AVX2 (this arm); every row holds k floats and `d` k * NR
                // (asserted above).
                unsafe { pack_b_trans_avx2(d, &ptrs, k) };
                true
            }
            Err(_) => false,
        },
        _ => false,
    );
    if done {
        return;
    }
    if rows.len() < NR {
        d.fill(0.0);
    }
    for (j, row) in rows.iter().enumerate() {
        for (dv, &v) in d[j..].iter_mut().step_by(NR).zip(&row[..k]) {
            *dv = v;
        }
    }
}

/// Packs a full 16-column panel of a transposed B: dst[p][j] = rows[j][p], 8x8 blocks
/// transposed in registers (eight loads, 24 shuffles, eight stores per 64 floats).
///
/// # Safety
/// CPU has AVX2; each of the 16 `rows` holds `kc` readable floats; `dst` holds `kc * 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_b_trans_avx2(dst: &mut [f32], rows: &[*const f32; NR], kc: usize) {
    use std::arch::x86_64::*;
    debug_assert!(dst.len() >= kc * NR);
    let d = dst.as_mut_ptr();
    let mut p = 0;
    while p + 8 <= kc {
        for half in 0..2 {
            let row = |i: usize| _mm256_loadu_ps(rows[half * 8 + i].add(p));
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
        for (j, row) in rows.iter().enumerate() {
            *d.add(p * NR + j) = *row.add(p);
        }
    }
}
