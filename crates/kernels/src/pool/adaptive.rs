//! Adaptive average pooling (global pooling is its 1x1 case), forward and backward.
use super::*;
use crate::simd::{dispatch, kernel, Isa};
use crate::{simd, Result};

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
    /// The parameters of adaptive_avg_pool2d over an input of shape `[N, C, H, W]` to
    /// `[outH, outW]`, checked as [`validate`](Self::validate) checks them.
    pub fn from_shapes(input: [usize; 4], output_size: [usize; 2]) -> Result<AdaptivePool2dParams> {
        let [batch, channels, in_h, in_w] = input;
        let [out_h, out_w] = output_size;
        let p = AdaptivePool2dParams {
            batch,
            channels,
            in_h,
            in_w,
            out_h,
            out_w,
        };
        p.validate()?;
        Ok(p)
    }

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
    let isa = simd::isa();
    if out_plane == 1 {
        // Global pooling: torch computes it as a mean over the plane.
        let count = in_plane as f64;
        output
            .par_iter_mut()
            .zip(input.par_chunks(in_plane))
            .with_min_len(planes_per_task(in_plane))
            .for_each(|(y, x)| *y = (plane_sum(isa, x) / count) as f32);
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
            |rows, (y, x)| adaptive_plane(isa, &hb, &wb, x, y, rows),
        );
    Ok(())
}

fn plane_sum(isa: Isa, x: &[f32]) -> f64 {
    dispatch!(isa,
        // SAFETY: the avx2 arm runs only on CPUs with AVX2 and FMA.
        avx2 => unsafe { crate::batchnorm::shifted_sum_vector(x) },
        // SAFETY: the neon arm runs only on CPUs with NEON.
        neon => unsafe { crate::batchnorm::shifted_sum_vector(x) },
        _ => crate::batchnorm::shifted_sum(x, 0.0),
    )
}

kernel! {
    /// Sums each bin's rows into `rows` (contiguous, vectorisable), then each bin's columns of it.
    fn adaptive_plane(
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
    let isa = simd::isa();
    grad_input
        .par_chunks_mut(in_plane)
        .zip(grad_out.par_chunks(out_plane))
        .with_min_len(planes_per_task(in_plane))
        .for_each_init(
            || vec![0.0f32; p.in_w],
            |row, (gi, go)| adaptive_back_plane(isa, &hb, &wb, go, gi, row),
        );
    Ok(())
}

kernel! {
    /// Spreads each output row over one input row's worth of columns, then adds that row into
    /// every input row of the bin.
    fn adaptive_back_plane(
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
}
