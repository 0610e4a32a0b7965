//! The macro-kernel (MC x NR x MR loops over one KC pass) and the register-tile micro-kernels:
//! portable, AVX2+FMA 6x16, AVX-512 6x32 (two B panels at once) and NEON 6x16.
use super::*;
use crate::simd::{dispatch, Isa};

/// C[rows, 0..n] = alpha * Apack[rows] * Bpack + beta * C[rows, 0..n] for one KC pass, where
/// `c` points at column 0 of the unit, `ap` holds the packed panels of all m rows and `bp` the
/// unit's n columns (panel q at `q * b_stride`). Rows go in MC blocks (one A block stays in
/// L2), then NR panels of B (one stays in L1), then MR panels of A.
///
/// # Safety
/// Rows `rows` by columns `0..n` at `c` (leading dimension `ldc`) must be writable and touched
/// by nothing else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn macro_kernel(
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
    isa: Isa,
) {
    // The AVX-512 level takes two NR-column panels of B per tile (12 accumulators of 16 lanes,
    // enough independent FMA chains for two 512-bit pipes); the others one.
    let width = dispatch!(isa, avx512 => 2 * NR, avx2 => NR, _ => NR);
    for ic in rows.clone().step_by(MC) {
        let ic_end = (ic + MC).min(rows.end);
        for jr in (0..n).step_by(width) {
            let nr = width.min(n - jr);
            let bpanel = &bp[jr / NR * b_stride..][..kc * NR];
            let bnext = (nr > NR).then(|| &bp[(jr / NR + 1) * b_stride..][..kc * NR]);
            for ir in (ic..ic_end).step_by(MR) {
                let mr = MR.min(m - ir);
                let apanel = &ap[ir * kc..(ir + MR) * kc];
                let at = c.at(ir * ldc + jr);
                match bnext {
                    Some(b1) => {
                        tile_pair(kc, apanel, [bpanel, b1], at, ldc, mr, nr, alpha, beta, isa)
                    }
                    None => tile(kc, apanel, bpanel, at, ldc, mr, nr, alpha, beta, isa),
                }
            }
        }
    }
}

/// An MR x (NR < nr <= 2 NR) tile of C whose columns are the two B panels `bp` (clipped to mr
/// rows at the edge): the AVX-512 kernel in one pass, elsewhere [`tile`] per panel.
///
/// # Safety
/// As for [`tile`].
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile_pair(
    kc: usize,
    ap: &[f32],
    bp: [&[f32]; 2],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
    isa: Isa,
) {
    debug_assert!(nr > NR && nr <= 2 * NR);
    debug_assert!(ap.len() >= MR * kc && bp.iter().all(|b| b.len() >= NR * kc));
    // Elsewhere the two panels go one after the other.
    let apart = || {
        tile(kc, ap, bp[0], c, ldc, mr, NR, alpha, beta, isa);
        tile(kc, ap, bp[1], c.add(NR), ldc, mr, nr - NR, alpha, beta, isa);
    };
    dispatch!(isa,
        avx512 => {
            let b = [bp[0].as_ptr(), bp[1].as_ptr()];
            kernel_avx512_rows::<2>((kc, ap.as_ptr(), b, c, ldc, mr, nr, alpha, beta))
        },
        avx2 => apart(),
        _ => apart()
    )
}

/// One MR x NR tile of C (possibly clipped to mr x nr at the edges).
///
/// # Safety
/// `c` must point at an `mr x nr` block (leading dimension `ldc`) no other thread touches.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn tile(
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    alpha: f32,
    beta: f32,
    isa: Isa,
) {
    debug_assert!(ap.len() >= MR * kc && bp.len() >= NR * kc);
    dispatch!(isa,
        avx512 => {
            let (a, b) = (ap.as_ptr(), [bp.as_ptr(), bp.as_ptr()]);
            kernel_avx512_rows::<1>((kc, a, b, c, ldc, mr, nr, alpha, beta))
        },
        avx2 => {
            if mr == MR && nr == NR {
                kernel_6x16_avx2(kc, ap.as_ptr(), bp.as_ptr(), c, ldc, alpha, beta);
            } else if mr < MR || nr <= NR / 2 {
                // A short last row panel (m = 32 leaves 2 of 6 rows) or a last column panel
                // of at most 8 columns (a 7x7 map's 49 positions leave 1 of 16): only the
                // real rows and the needed 8-column halves are computed, in the same order as
                // the full kernel, so results do not change.
                let mut tmp = [0f32; MR * NR];
                let (a, b, t) = (ap.as_ptr(), bp.as_ptr(), tmp.as_mut_ptr());
                if nr <= NR / 2 {
                    match mr {
                        1 => kernel_rows_avx2::<1, 1>(kc, a, b, t, alpha),
                        2 => kernel_rows_avx2::<2, 1>(kc, a, b, t, alpha),
                        3 => kernel_rows_avx2::<3, 1>(kc, a, b, t, alpha),
                        4 => kernel_rows_avx2::<4, 1>(kc, a, b, t, alpha),
                        5 => kernel_rows_avx2::<5, 1>(kc, a, b, t, alpha),
                        _ => kernel_rows_avx2::<6, 1>(kc, a, b, t, alpha),
                    }
                } else {
                    match mr {
                        1 => kernel_rows_avx2::<1, 2>(kc, a, b, t, alpha),
                        2 => kernel_rows_avx2::<2, 2>(kc, a, b, t, alpha),
                        3 => kernel_rows_avx2::<3, 2>(kc, a, b, t, alpha),
                        4 => kernel_rows_avx2::<4, 2>(kc, a, b, t, alpha),
                        _ => kernel_rows_avx2::<5, 2>(kc, a, b, t, alpha),
                    }
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
        },
        neon => {
            if mr == MR && nr == NR {
                kernel_6x16_neon(kc, ap.as_ptr(), bp.as_ptr(), c, ldc, alpha, beta);
            } else {
                // Edge tiles: the full tile into a buffer (rows past m are zero in the packed
                // panel), then only the real rows and columns are stored.
                let mut tmp = [0f32; MR * NR];
                let t = tmp.as_mut_ptr();
                kernel_6x16_neon(kc, ap.as_ptr(), bp.as_ptr(), t, NR, alpha, 0.0);
                store_edge(&tmp, c, ldc, mr, nr, beta);
            }
        },
        _ => {
            let mut tmp = [0f32; MR * NR];
            kernel_scalar(kc, ap, bp, &mut tmp, alpha);
            store_edge(&tmp, c, ldc, mr, nr, beta);
        }
    )
}

/// C[i][j] = tmp[i][j] + beta * C[i][j] over the clipped tile (C unread when beta == 0).
///
/// # Safety
/// As for [`tile`].
pub(super) unsafe fn store_edge(
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
pub(super) fn kernel_scalar(
    kc: usize,
    ap: &[f32],
    bp: &[f32],
    tmp: &mut [f32; MR * NR],
    alpha: f32,
) {
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

/// The first `R <= MR` rows and first `V` 8-column halves of the 6x16 tile, `alpha * A * B`
/// into `tmp` (leading dimension NR): the same per-element FMA chain as [`kernel_6x16_avx2`]
/// without the empty rows' and columns' work.
///
/// # Safety
/// CPU has AVX2+FMA; `a` holds `6*kc` floats (an MR-row panel), `b` holds `16*kc`, `tmp` is a
/// writable `R x 16` block; `V` is 1 or 2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn kernel_rows_avx2<const R: usize, const V: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    tmp: *mut f32,
    alpha: f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    for p in 0..kc {
        let mut bv = [_mm256_setzero_ps(); V];
        for (h, v) in bv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(b.add(p * NR + 8 * h));
        }
        let ar = a.add(p * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ar.add(i));
            for (r, &v) in row.iter_mut().zip(&bv) {
                *r = _mm256_fmadd_ps(ai, v, *r);
            }
        }
    }
    let va = _mm256_set1_ps(alpha);
    for (i, row) in acc.iter().enumerate() {
        for (h, r) in row.iter().enumerate() {
            _mm256_storeu_ps(tmp.add(i * NR + 8 * h), _mm256_mul_ps(va, *r));
        }
    }
}

/// Floats of packed A a micro-kernel prefetches ahead of the step it is on (3 KiB: 128 steps
/// of a 6-row panel, about 500 cycles of a full tile's FMAs). Packed A is the weights of a
/// convolution, and in a compiled plan each layer's weights come from DRAM (the plan runs
/// through more weights than the L3 holds): the hardware prefetcher alone left the first pass
/// over each A block waiting on memory. Measured on Zen 5 at batch 1, weights rotated through
/// 48 copies so every call finds them cold (scratch benchmark, median of about 2000 calls):
/// ResNet-50's 1x1 1024->256 @14 0.336 -> 0.273 ms, 256->1024 @14 0.292 -> 0.250 ms (the warm
/// time), 3x3 512->512 @7 (Winograd, 16.7 MB of transformed weights) 0.745 -> 0.535 ms; warm
/// calls unchanged. The tile reads its A panel in step order, and panels of one block lie one
/// after another, so prefetching ahead also reaches into the next tile's panel.
#[cfg(target_arch = "x86_64")]
const PREFETCH_A: usize = 768;

/// Prefetches the two cache lines of packed A `PREFETCH_A` floats past `a` (a 4-step chunk of
/// a 6-row panel is 96 bytes, so two lines keep up with the steps).
///
/// # Safety
/// None beyond a CPU with SSE: prefetches never fault, and the address is only computed.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_a(a: *const f32) {
    use std::arch::x86_64::*;
    let ahead = a.wrapping_add(PREFETCH_A);
    _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
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
pub(super) unsafe fn kernel_6x16_avx2(
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
        prefetch_a(a);
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

/// The arguments of [`kernel_avx512`]: `(kc, a, [b0, b1], c, ldc, mr, nr, alpha, beta)`.
#[cfg(target_arch = "x86_64")]
type Avx512Args = (
    usize,
    *const f32,
    [*const f32; 2],
    *mut f32,
    usize,
    usize,
    usize,
    f32,
    f32,
);

/// [`kernel_avx512`] with its row count `R` the tile's `mr` (rows past it are not computed).
///
/// # Safety
/// As for [`kernel_avx512`], with `mr <= 6`.
#[cfg(target_arch = "x86_64")]
unsafe fn kernel_avx512_rows<const V: usize>(args: Avx512Args) {
    match args.5 {
        1 => kernel_avx512::<1, V>(args),
        2 => kernel_avx512::<2, V>(args),
        3 => kernel_avx512::<3, V>(args),
        4 => kernel_avx512::<4, V>(args),
        5 => kernel_avx512::<5, V>(args),
        _ => kernel_avx512::<6, V>(args),
    }
}

/// AVX-512 micro-kernel: the first `R` rows of a 6-row A panel times `V` (1 or 2) 16-column B
/// panels, `R x V` accumulators of 16 lanes (12 for a full 6x32 tile: each step of the shared
/// dimension loads two vectors of B, broadcasts six scalars of A and issues 12 FMAs). Rows past
/// `mr` and columns past `nr` are not stored; columns go through lane masks, so edge tiles need
/// no buffer.
///
/// Every element is the same FMA chain over the shared dimension as in [`kernel_6x16_avx2`],
/// and C is finished the same way (a full 6x16 panel as `alpha * acc + beta * C` fused, an
/// edge panel as the separately rounded `alpha * acc` plus `beta * C` of [`store_edge`]), so
/// both levels give the same bits.
///
/// # Safety
/// CPU has AVX-512 F/VL/BW/DQ; `a` holds `6*kc` floats, each used `b[h]` (`h < V`) `16*kc`;
/// `c` is a writable `mr x nr` block (`mr <= R`, `nr <= 16 V`) with leading dimension `ldc`,
/// read only when `beta != 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn kernel_avx512<const R: usize, const V: usize>(
    (kc, a, b, c, ldc, mr, nr, alpha, beta): Avx512Args,
) {
    use std::arch::x86_64::*;
    for i in 0..mr {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + nr - 1) as *const i8);
    }
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (mut a, mut b) = (a, b);
    macro_rules! step {
        ($off:expr) => {{
            let mut bv = [_mm512_setzero_ps(); V];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b[h].add($off * NR));
            }
            let ar = a.add($off * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ar.add(i));
                for (r, &v) in row.iter_mut().zip(&bv) {
                    *r = _mm512_fmadd_ps(ai, v, *r);
                }
            }
        }};
    }
    let mut p = kc;
    while p >= 4 {
        for bh in &b[..V] {
            _mm_prefetch::<_MM_HINT_T0>(bh.add(8 * NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(bh.add(10 * NR) as *const i8);
        }
        prefetch_a(a);
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        a = a.add(4 * MR);
        for bh in &mut b[..V] {
            *bh = bh.add(4 * NR);
        }
        p -= 4;
    }
    while p > 0 {
        step!(0);
        a = a.add(MR);
        for bh in &mut b[..V] {
            *bh = bh.add(NR);
        }
        p -= 1;
    }
    let (va, vb) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (i, row) in acc.iter().enumerate().take(mr) {
        for (h, &r) in row.iter().enumerate() {
            let cols = nr.saturating_sub(h * NR).min(NR);
            if cols == 0 {
                break;
            }
            let mask: __mmask16 = if cols == NR { !0 } else { (1u16 << cols) - 1 };
            let cr = c.add(i * ldc + h * NR);
            let scaled = _mm512_mul_ps(va, r);
            // Whole vectors load and store plainly, only a part vector under a mask: masked
            // loads and stores of memory not in cache ran at a fraction of the speed (see
            // `max_3x3_s2_plane_avx512`).
            let load = || {
                if cols == NR {
                    _mm512_loadu_ps(cr)
                } else {
                    _mm512_maskz_loadu_ps(mask, cr)
                }
            };
            let out = if beta == 0.0 {
                scaled
            } else if mr == MR && cols == NR {
                let old = _mm512_mul_ps(vb, load());
                _mm512_fmadd_ps(va, r, old)
            } else {
                _mm512_add_ps(scaled, _mm512_mul_ps(vb, load()))
            };
            if cols == NR {
                _mm512_storeu_ps(cr, out);
            } else {
                _mm512_mask_storeu_ps(cr, mask, out);
            }
        }
    }
}

/// NEON micro-kernel: 24 accumulators (6 rows of four 4-wide vectors) hold the 6x16 tile; each
/// step of the shared dimension loads four vectors of B and the six values of A as one 4-wide
/// and one 2-wide vector, and multiplies by lane (`fmla v.4s, v.4s, v.s[i]`), so no broadcast
/// instructions are needed. 24 + 4 + 2 registers of the 32.
///
/// # Safety
/// `a` holds `6*kc` floats, `b` holds `16*kc`, `c` is a writable 6x16 block with leading
/// dimension `ldc`, read only when `beta != 0`.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(super) unsafe fn kernel_6x16_neon(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::aarch64::*;
    let z = vdupq_n_f32(0.0);
    let mut acc = [[z; 4]; MR];
    for p in 0..kc {
        let bp = b.add(p * NR);
        let bv = [
            vld1q_f32(bp),
            vld1q_f32(bp.add(4)),
            vld1q_f32(bp.add(8)),
            vld1q_f32(bp.add(12)),
        ];
        let ap = a.add(p * MR);
        let a03 = vld1q_f32(ap);
        let a45 = vld1_f32(ap.add(4));
        for j in 0..4 {
            acc[0][j] = vfmaq_laneq_f32::<0>(acc[0][j], bv[j], a03);
            acc[1][j] = vfmaq_laneq_f32::<1>(acc[1][j], bv[j], a03);
            acc[2][j] = vfmaq_laneq_f32::<2>(acc[2][j], bv[j], a03);
            acc[3][j] = vfmaq_laneq_f32::<3>(acc[3][j], bv[j], a03);
            acc[4][j] = vfmaq_lane_f32::<0>(acc[4][j], bv[j], a45);
            acc[5][j] = vfmaq_lane_f32::<1>(acc[5][j], bv[j], a45);
        }
    }
    let va = vdupq_n_f32(alpha);
    for (i, row) in acc.iter().enumerate() {
        let cr = c.add(i * ldc);
        for (j, &v) in row.iter().enumerate() {
            let out = if beta == 0.0 {
                vmulq_f32(va, v)
            } else {
                let old = vmulq_n_f32(vld1q_f32(cr.add(4 * j)), beta);
                vfmaq_f32(old, va, v)
            };
            vst1q_f32(cr.add(4 * j), out);
        }
    }
}
