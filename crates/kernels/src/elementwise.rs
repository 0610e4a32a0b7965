//! Elementwise kernels: dropout with a counter-based generator, broadcast add/mul with the
//! reduction their backward needs, channel concat/split of NCHW tensors (DenseNet, GoogLeNet's
//! inception blocks), scaling by a number and gradient accumulation.
//!
//! Dropout's random bits are a hash of (seed, element index), so a mask depends on the seed
//! alone, never on how the work was split across threads. The broadcast backward sums in fixed
//! blocks combined in a fixed order, so it does not depend on the thread count either.
use crate::error::{check_len, check_positive, numel};
use crate::simd::{self, kernel, Isa};
use crate::vmath::{self, for_each_chunk, GRAIN};
use crate::{bail, Result};
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Dropout

/// 32-bit integer hash with full avalanche (Wellons' "lowbias32"); plain integer multiplies and
/// shifts, so the mask loop vectorises (vpmulld under AVX2).
#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[inline(always)]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one chunk of dropout needs: the generator keys for its 2^32-element block (the 64-bit
/// seed and the high half of the element index, mixed once so the inner loop works on 32-bit
/// lanes), the drop threshold and the keep scale 1/(1-p).
#[derive(Clone, Copy)]
struct DropoutChunk {
    k0: u32,
    k1: u32,
    threshold: u32,
    scale: f32,
}

impl DropoutChunk {
    fn new(seed: u64, index_hi: u64, threshold: u32, scale: f32) -> DropoutChunk {
        let z = splitmix64(seed ^ splitmix64(index_hi));
        DropoutChunk {
            k0: z as u32,
            k1: (z >> 32) as u32,
            threshold,
            scale,
        }
    }

    /// The uniform 24-bit number of the element whose index has low 32 bits `lo`.
    #[inline(always)]
    fn bits(&self, lo: u32) -> u32 {
        mix32(mix32(lo ^ self.k0).wrapping_add(self.k1)) >> 8
    }
}

/// Elements whose 24-bit number is below this are dropped: probability round(p * 2^24) / 2^24.
fn drop_threshold(p: f64) -> u32 {
    (p * (1u32 << 24) as f64).round() as u32
}

fn check_probability(p: f64) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        bail!("p: expected a probability in [0, 1), got {p}");
    }
    Ok(())
}

kernel! {
    fn dropout_chunk(x: &[f32], y: &mut [f32], mask: &mut [f32], d: DropoutChunk, base: u32) {
        let n = x.len().min(y.len()).min(mask.len());
        for j in 0..n {
            let m = if d.bits(base.wrapping_add(j as u32)) >= d.threshold {
                d.scale
            } else {
                0.0
            };
            mask[j] = m;
            y[j] = x[j] * m;
        }
    }
}

/// output = input * mask, with mask[i] = 0 with probability p and 1/(1-p) otherwise (so the
/// expected output is the input, as `torch.nn.functional.dropout` in training mode). The mask
/// is a pure function of (`seed`, i): the same seed gives the same mask on any thread count.
/// p = 0 copies the input and fills the mask with ones.
pub fn dropout_forward(
    input: &[f32],
    output: &mut [f32],
    mask: &mut [f32],
    p: f64,
    seed: u64,
) -> Result<()> {
    check_probability(p)?;
    check_len("output", output.len(), input.len())?;
    check_len("mask", mask.len(), input.len())?;
    if p == 0.0 {
        output.copy_from_slice(input);
        mask.fill(1.0);
        return Ok(());
    }
    let threshold = drop_threshold(p);
    let scale = (1.0 / (1.0 - p)) as f32;
    let isa = simd::isa();
    let run = |start: usize, y: &mut [f32], m: &mut [f32]| {
        // Chunks start at multiples of GRAIN (a power of two below 2^32): a chunk never
        // straddles two 2^32 blocks, so one pair of keys serves it.
        let d = DropoutChunk::new(seed, (start as u64) >> 32, threshold, scale);
        let x = &input[start..start + y.len()];
        dropout_chunk(isa, x, y, m, d, start as u32);
    };
    if output.len() <= GRAIN {
        run(0, output, mask);
    } else {
        output
            .par_chunks_mut(GRAIN)
            .zip(mask.par_chunks_mut(GRAIN))
            .enumerate()
            .for_each(|(i, (y, m))| run(i * GRAIN, y, m));
    }
    Ok(())
}

/// grad_input = grad_output * mask (the mask saved by [`dropout_forward`], already scaled).
pub fn dropout_backward(grad_output: &[f32], mask: &[f32], grad_input: &mut [f32]) -> Result<()> {
    check_len("mask", mask.len(), grad_output.len())?;
    check_len("gradInput", grad_input.len(), grad_output.len())?;
    let isa = simd::isa();
    for_each_chunk(grad_input, |start, gi| {
        let range = start..start + gi.len();
        mul(isa, &grad_output[range.clone()], &mask[range], gi);
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Broadcast add / mul

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    pub fn parse(name: &str) -> Result<BinaryOp> {
        match name {
            "add" => Ok(BinaryOp::Add),
            "mul" => Ok(BinaryOp::Mul),
            other => bail!("op: expected one of 'add', 'mul', got '{other}'"),
        }
    }
}

/// How `b` maps onto `a` once adjacent dims are merged: `a` viewed as `[outer, mid, inner]`
/// and `b` as `[mid]`, i.e. element i of `a` pairs with `b[(i / inner) % mid]`. This covers
/// every pattern a CNN needs: a bias `[C]` on `[N, C]`, `[1, C, 1, 1]` or `[N, C, 1, 1]` on
/// `[N, C, H, W]`, a scalar, and equal shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broadcast {
    pub outer: usize,
    pub mid: usize,
    pub inner: usize,
}

fn fmt_shape(s: &[usize]) -> String {
    let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

impl Broadcast {
    /// NumPy's rules for `b` broadcasting to `a` (dims aligned from the right, missing dims of
    /// `b` count as 1, a dim of `b` is 1 or equal to `a`'s; `a` itself is never broadcast),
    /// restricted to `b`'s non-1 dims forming one contiguous block.
    pub fn plan(a_shape: &[usize], b_shape: &[usize]) -> Result<Broadcast> {
        let a_len = numel("aShape", a_shape)?;
        numel("bShape", b_shape)?;
        let (ar, br) = (a_shape.len(), b_shape.len());
        if br > ar {
            bail!(
                "bShape: {} has more dims than aShape {}; b must broadcast to a's shape",
                fmt_shape(b_shape),
                fmt_shape(a_shape)
            );
        }
        // For each dim of a: does b vary along it (its size > 1 and equal to a's)?
        let mut varies = vec![false; ar];
        for i in 0..ar {
            let ad = a_shape[i];
            let bd = if i >= ar - br {
                b_shape[i - (ar - br)]
            } else {
                1
            };
            if bd == ad {
                // Size-1 dims are neutral; size-0 dims count as varying so `mid` is 0 with the
                // tensor, not 1.
                varies[i] = ad != 1;
            } else if bd != 1 {
                bail!(
                    "bShape: {} does not broadcast to aShape {} (dim {i} of a: b has {bd}, a has {ad})",
                    fmt_shape(b_shape),
                    fmt_shape(a_shape)
                );
            }
        }
        let Some(first) = varies.iter().position(|&v| v) else {
            return Ok(Broadcast {
                outer: 1,
                mid: 1,
                inner: a_len,
            });
        };
        let last = varies.iter().rposition(|&v| v).unwrap_or(first);
        // A dim of size > 1 that b broadcasts along, between two dims where b varies.
        if (first..=last).any(|i| !varies[i] && a_shape[i] > 1) {
            bail!(
                "bShape: broadcasting {} to {} is not supported: the dims where b is not 1 must be adjacent (e.g. [C], [1, C, 1, 1], [N, C, 1, 1] or a's own shape)",
                fmt_shape(b_shape),
                fmt_shape(a_shape)
            );
        }
        let prod = |r: std::ops::Range<usize>| a_shape[r].iter().product::<usize>();
        Ok(Broadcast {
            outer: prod(0..first),
            mid: prod(first..last + 1),
            inner: prod(last + 1..ar),
        })
    }

    fn len(&self) -> usize {
        self.outer * self.mid * self.inner
    }
}

kernel! {
    fn add(x: &[f32], y: &[f32], out: &mut [f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
            *o = a + b;
        }
    }
}

kernel! {
    fn mul(x: &[f32], y: &[f32], out: &mut [f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
            *o = a * b;
        }
    }
}

kernel! {
    fn add_scalar(x: &[f32], b: f32, out: &mut [f32]) {
        for (o, &a) in out.iter_mut().zip(x) {
            *o = a + b;
        }
    }
}

kernel! {
    fn mul_scalar(x: &[f32], b: f32, out: &mut [f32]) {
        for (o, &a) in out.iter_mut().zip(x) {
            *o = a * b;
        }
    }
}

/// out[i] = x[i] op b[(i / inner) % mid] for the flat range `start..start + out.len()`, walked
/// in runs: along `b` itself when inner = 1, else along one broadcast row at a time.
fn broadcast_chunk(
    isa: Isa,
    op: BinaryOp,
    plan: &Broadcast,
    start: usize,
    x: &[f32],
    b: &[f32],
    out: &mut [f32],
) {
    let (mid, inner) = (plan.mid, plan.inner);
    let mut k = 0;
    while k < out.len() {
        let i = start + k;
        if inner == 1 {
            let m = i % mid;
            let run = (mid - m).min(out.len() - k);
            let (xs, bs, os) = (&x[k..k + run], &b[m..m + run], &mut out[k..k + run]);
            match op {
                BinaryOp::Add => add(isa, xs, bs, os),
                BinaryOp::Mul => mul(isa, xs, bs, os),
            }
            k += run;
        } else {
            let bv = b[(i / inner) % mid];
            let run = (inner - i % inner).min(out.len() - k);
            let (xs, os) = (&x[k..k + run], &mut out[k..k + run]);
            match op {
                BinaryOp::Add => add_scalar(isa, xs, bv, os),
                BinaryOp::Mul => mul_scalar(isa, xs, bv, os),
            }
            k += run;
        }
    }
}

/// output = a op b, with `b` broadcast to `a`'s shape (see [`Broadcast::plan`]).
pub fn broadcast_binary(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    output: &mut [f32],
) -> Result<()> {
    let plan = Broadcast::plan(a_shape, b_shape)?;
    check_len("a", a.len(), plan.len())?;
    check_len("b", b.len(), plan.mid)?;
    check_len("output", output.len(), plan.len())?;
    let isa = simd::isa();
    for_each_chunk(output, |start, out| {
        broadcast_chunk(isa, op, &plan, start, &a[start..start + out.len()], b, out);
    });
    Ok(())
}

kernel! {
    // acc[m] += x[m] (* y[m]) in f64: the column sums of the `inner == 1` reduction.
    fn accumulate_row(acc: &mut [f64], x: &[f32], y: &[f32]) {
        if y.is_empty() {
            for (s, &v) in acc.iter_mut().zip(x) {
                *s += v as f64;
            }
        } else {
            for ((s, &v), &w) in acc.iter_mut().zip(x).zip(y) {
                *s += (v * w) as f64;
            }
        }
    }
}

/// grad_b[m] = sum over every element i of a with (i / inner) % mid == m of g[i] (* a[i] when
/// `a` is non-empty), i.e. the gradient reduced over the broadcast dims.
fn reduce_to_b(isa: Isa, plan: &Broadcast, g: &[f32], a: &[f32], grad_b: &mut [f32]) {
    let Broadcast { outer, mid, inner } = *plan;
    let weighted = !a.is_empty();
    if inner == 1 && outer == 1 {
        // Same shape: no reduction at all.
        for_each_chunk(grad_b, |start, gb| {
            let range = start..start + gb.len();
            if weighted {
                mul(isa, &g[range.clone()], &a[range], gb);
            } else {
                gb.copy_from_slice(&g[range]);
            }
        });
        return;
    }
    if inner == 1 {
        // Column sums over `outer` rows of length `mid`: fixed blocks of rows, each summed into
        // its own f64 partial, then the partials added in block order.
        let rows = (GRAIN / mid).max(1);
        let blocks: Vec<usize> = (0..outer.div_ceil(rows)).collect();
        let partial = |blk: &usize| {
            let mut acc = vec![0.0f64; mid];
            for o in blk * rows..((blk + 1) * rows).min(outer) {
                let r = o * mid..(o + 1) * mid;
                let ar: &[f32] = if weighted { &a[r.clone()] } else { &[] };
                accumulate_row(isa, &mut acc, &g[r], ar);
            }
            acc
        };
        let partials: Vec<Vec<f64>> = if blocks.len() > 1 {
            blocks.par_iter().map(partial).collect()
        } else {
            blocks.iter().map(partial).collect()
        };
        for (m, gb) in grad_b.iter_mut().enumerate() {
            *gb = partials.iter().map(|p| p[m]).sum::<f64>() as f32;
        }
        return;
    }
    // inner > 1: one sum per (outer, mid) row of length `inner`, then a sum over `outer`.
    let row_sum = |r: usize| -> f64 {
        let range = r * inner..(r + 1) * inner;
        if weighted {
            vmath::dot(isa, &g[range.clone()], &a[range]) as f64
        } else {
            vmath::sum(isa, &g[range]) as f64
        }
    };
    let n_rows = outer * mid;
    let sums: Vec<f64> = if n_rows * inner > GRAIN {
        (0..n_rows)
            .into_par_iter()
            .with_min_len((GRAIN / inner).max(1))
            .map(row_sum)
            .collect()
    } else {
        (0..n_rows).map(row_sum).collect()
    };
    for (m, gb) in grad_b.iter_mut().enumerate() {
        *gb = (0..outer).map(|o| sums[o * mid + m]).sum::<f64>() as f32;
    }
}

/// Gradients of output = a op b (b broadcast to a): grad_a = g (add) or g * b (mul), at a's
/// shape; grad_b = g (add) or g * a (mul) summed over the dims b was broadcast along. Either
/// gradient may be skipped by passing None.
#[allow(clippy::too_many_arguments)]
pub fn broadcast_binary_backward(
    op: BinaryOp,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    grad_output: &[f32],
    grad_a: Option<&mut [f32]>,
    grad_b: Option<&mut [f32]>,
) -> Result<()> {
    let plan = Broadcast::plan(a_shape, b_shape)?;
    check_len("a", a.len(), plan.len())?;
    check_len("b", b.len(), plan.mid)?;
    check_len("gradOutput", grad_output.len(), plan.len())?;
    if let Some(ga) = &grad_a {
        check_len("gradA", ga.len(), plan.len())?;
    }
    if let Some(gb) = &grad_b {
        check_len("gradB", gb.len(), plan.mid)?;
    }
    if plan.len() == 0 {
        // a is empty: nothing flows back, and b (possibly non-empty) gets zeros.
        if let Some(gb) = grad_b {
            gb.fill(0.0);
        }
        return Ok(());
    }
    let isa = simd::isa();
    if let Some(ga) = grad_a {
        match op {
            BinaryOp::Add => ga.copy_from_slice(grad_output),
            BinaryOp::Mul => for_each_chunk(ga, |start, out| {
                let g = &grad_output[start..start + out.len()];
                broadcast_chunk(isa, BinaryOp::Mul, &plan, start, g, b, out);
            }),
        }
    }
    if let Some(gb) = grad_b {
        let weight: &[f32] = match op {
            BinaryOp::Add => &[],
            BinaryOp::Mul => a,
        };
        reduce_to_b(isa, &plan, grad_output, weight, gb);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Channel concat / split

/// Offsets (in floats, within one sample) where each part's channels start in the
/// concatenated tensor, plus the total; checks the sizes cannot overflow.
/// [`channel_layout`] after checking the parts: one channel count per part (`parts`, the parts'
/// lengths, named `inputs` or `outputs` in errors), each `batch * channels[k] * plane` long;
/// `whole`, when given, is the concatenated tensor's name and length, checked first.
fn channel_parts(
    what: &str,
    parts: &[usize],
    whole: Option<(&str, usize)>,
    channels: &[usize],
    batch: usize,
    plane: usize,
) -> Result<(Vec<usize>, usize)> {
    if parts.len() != channels.len() {
        let one = what.trim_end_matches('s');
        bail!(
            "channels: expected {} numbers (one per {one}), got {}",
            parts.len(),
            channels.len()
        );
    }
    let layout = channel_layout(channels, batch, plane)?;
    if let Some((name, len)) = whole {
        check_len(name, len, batch * layout.1 * plane)?;
    }
    for (k, (&len, &c)) in parts.iter().zip(channels).enumerate() {
        check_len(&format!("{what}[{k}]"), len, batch * c * plane)?;
    }
    Ok(layout)
}

fn channel_layout(channels: &[usize], batch: usize, plane: usize) -> Result<(Vec<usize>, usize)> {
    check_positive("batch", batch)?;
    check_positive("plane", plane)?;
    if channels.is_empty() {
        bail!("channels: expected at least one tensor, got none");
    }
    let mut offsets = Vec::with_capacity(channels.len() + 1);
    let mut total_c = 0usize;
    offsets.push(0);
    for &c in channels {
        total_c = total_c
            .checked_add(c)
            .ok_or_else(|| crate::KernelError("channels: total overflows".into()))?;
        offsets.push(numel("channels", &[total_c, plane])?);
    }
    numel("output", &[batch, total_c, plane])?;
    Ok((offsets, total_c))
}

/// Concatenates NCHW tensors `inputs[k]` of shape `[batch, channels[k], H, W]` (plane = H*W)
/// along C into `output` `[batch, sum(channels), H, W]`, as `torch.cat(dim=1)`.
pub fn concat_channels(
    inputs: &[&[f32]],
    channels: &[usize],
    batch: usize,
    plane: usize,
    output: &mut [f32],
) -> Result<()> {
    let lens: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
    let (offsets, total_c) = channel_parts("inputs", &lens, None, channels, batch, plane)?;
    check_len("output", output.len(), batch * total_c * plane)?;
    let row = offsets[channels.len()];
    if row == 0 {
        return Ok(());
    }
    for_each_chunk(output, |start, out| {
        let mut k_out = 0;
        while k_out < out.len() {
            let pos = start + k_out;
            let (n, r) = (pos / row, pos % row);
            // Which input owns offset r: the last one starting at or before it (zero-channel
            // inputs start where the next begins and own nothing).
            let k = offsets.partition_point(|&o| o <= r) - 1;
            let part = offsets[k + 1] - offsets[k];
            let within = r - offsets[k];
            let run = (part - within).min(out.len() - k_out);
            let src = n * part + within;
            out[k_out..k_out + run].copy_from_slice(&inputs[k][src..src + run]);
            k_out += run;
        }
    });
    Ok(())
}

/// `output = act(cat(inputs, dim 1) * scale[c] + shift[c])` per output channel `c`: a channel
/// concat followed by an eval-mode batch norm (folded to `scale`/`shift`) and optionally ReLU, in
/// one pass, for inference in DenseNet, where every layer normalises the concatenation of all
/// earlier features. Shapes as in [`concat_channels`]; `scale` and `shift` have `sum(channels)`
/// elements.
#[allow(clippy::too_many_arguments)]
pub fn concat_channels_affine(
    inputs: &[&[f32]],
    channels: &[usize],
    batch: usize,
    plane: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
    output: &mut [f32],
) -> Result<()> {
    let lens: Vec<usize> = inputs.iter().map(|x| x.len()).collect();
    let (_, total_c) = channel_parts("inputs", &lens, None, channels, batch, plane)?;
    check_len("scale", scale.len(), total_c)?;
    check_len("shift", shift.len(), total_c)?;
    check_len("output", output.len(), batch * total_c * plane)?;
    if output.is_empty() {
        return Ok(());
    }
    // First output channel of each input.
    let mut first = Vec::with_capacity(channels.len() + 1);
    first.push(0);
    for &c in channels {
        first.push(first[first.len() - 1] + c);
    }
    let isa = simd::isa();
    output
        .par_chunks_mut(plane)
        .enumerate()
        .with_min_len((GRAIN / plane).max(1))
        .for_each(|(i, y)| {
            let (n, c) = (i / total_c, i % total_c);
            let k = first.partition_point(|&f| f <= c) - 1;
            let src = (n * channels[k] + c - first[k]) * plane;
            let x = &inputs[k][src..src + plane];
            if relu {
                affine_relu_into(isa, x, y, scale[c], shift[c]);
            } else {
                affine_into(isa, x, y, scale[c], shift[c]);
            }
        });
    Ok(())
}

// No FMA contraction in either path, so scalar and AVX2 agree bit for bit.
kernel! {
    fn affine_into(x: &[f32], y: &mut [f32], s: f32, b: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * s + b;
        }
    }
}

kernel! {
    fn affine_relu_into(x: &[f32], y: &mut [f32], s: f32, b: f32) {
        for (o, &v) in y.iter_mut().zip(x) {
            let t = v * s + b;
            *o = if t < 0.0 { 0.0 } else { t };
        }
    }
}

/// The inverse of [`concat_channels`] (and its backward): splits `input`
/// `[batch, sum(channels), H, W]` into `outputs[k]` `[batch, channels[k], H, W]`.
pub fn split_channels(
    input: &[f32],
    outputs: &mut [&mut [f32]],
    channels: &[usize],
    batch: usize,
    plane: usize,
) -> Result<()> {
    let lens: Vec<usize> = outputs.iter().map(|y| y.len()).collect();
    let whole = Some(("input", input.len()));
    let (offsets, _) = channel_parts("outputs", &lens, whole, channels, batch, plane)?;
    let row = offsets[channels.len()];
    for (k, out) in outputs.iter_mut().enumerate() {
        let part = offsets[k + 1] - offsets[k];
        if part == 0 {
            continue;
        }
        for_each_chunk(out, |start, out| {
            let mut k_out = 0;
            while k_out < out.len() {
                let pos = start + k_out;
                let (n, within) = (pos / part, pos % part);
                let run = (part - within).min(out.len() - k_out);
                let src = n * row + offsets[k] + within;
                out[k_out..k_out + run].copy_from_slice(&input[src..src + run]);
                k_out += run;
            }
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scale by a number, accumulate gradients

kernel! {
    /// `out = x * s` with the product in double, rounded once: JavaScript's `x[i] * s` stored
    /// into a Float32Array, for any double `s`.
    pub(crate) fn scale_f64(x: &[f32], s: f64, out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v as f64 * s) as f32;
        }
    }
}

/// output = input * factor, bit for bit the TypeScript loop it replaced (src/ops/elementwise.ts
/// `scale`): the factor is not rounded to float32 first, the product is rounded once.
pub fn scale(input: &[f32], factor: f64, output: &mut [f32]) -> Result<()> {
    check_len("output", output.len(), input.len())?;
    let isa = simd::isa();
    for_each_chunk(output, |start, out| {
        scale_f64(isa, &input[start..start + out.len()], factor, out)
    });
    Ok(())
}

kernel! {
    fn add_into(acc: &mut [f32], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v;
        }
    }
}

/// accumulator += grad, elementwise in float32 (autograd adding a leaf's new gradient into its
/// `.grad`, as `acc[i] += g[i]` on Float32Arrays did).
pub fn accumulate(accumulator: &mut [f32], grad: &[f32]) -> Result<()> {
    check_len("grad", grad.len(), accumulator.len())?;
    let isa = simd::isa();
    for_each_chunk(accumulator, |start, acc| {
        add_into(isa, acc, &grad[start..start + acc.len()])
    });
    Ok(())
}

/// output = value everywhere (rounded to float32): constants a traced step needs, such as the
/// gradient 1 that starts a backward pass.
pub fn fill(output: &mut [f32], value: f64) {
    output.fill(value as f32);
}

/// copy = input: a leaf's gradient taken into its own `.grad` array.
pub fn copy(input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output.len(), input.len())?;
    for_each_chunk(output, |start, out| {
        out.copy_from_slice(&input[start..start + out.len()])
    });
    Ok(())
}

/// An error naming `what` and the first value that is NaN or infinite, if any: a training step
/// stops here, before its optimizer update, when the loss is not finite.
pub fn check_finite(input: &[f32], what: &str) -> Result<()> {
    match input.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(crate::KernelError(format!(
            "{what} is not finite: element {i} is {}",
            input[i]
        ))),
    }
}

/// Scales every gradient in place by `max_norm / (norm + 1e-6)` when their joint L2 norm exceeds
/// `max_norm`, and returns the norm: fit()'s `clipGradNorm`. The squares are summed in f64 in
/// order (gradient by gradient, element by element) and each product is rounded once, so a
/// compiled training step clips exactly as the eager one does.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f64) -> f64 {
    let mut sq = 0.0f64;
    for g in grads.iter() {
        for &v in g.iter() {
            let v = v as f64;
            sq += v * v;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let s = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            for v in g.iter_mut() {
                *v = (*v as f64 * s) as f32;
            }
        }
    }
    norm
}

/// Most dimensions a transpose takes.
pub const MAX_TRANSPOSE_RANK: usize = 8;

/// output = input with its axes permuted: output axis i is input axis `perm[i]` (numpy's
/// `transpose(perm)`, ONNX Transpose). Its own backward with the inverse permutation.
pub fn transpose(input: &[f32], shape: &[usize], perm: &[usize], output: &mut [f32]) -> Result<()> {
    let rank = shape.len();
    if rank > MAX_TRANSPOSE_RANK {
        bail!("shape: at most {MAX_TRANSPOSE_RANK} dimensions, got {rank}");
    }
    if perm.len() != rank {
        bail!("perm: expected {rank} axes, got {}", perm.len());
    }
    let mut seen = [false; MAX_TRANSPOSE_RANK];
    for &p in perm {
        if p >= rank || seen[p] {
            bail!("perm: expected a permutation of 0..{rank}, got {perm:?}");
        }
        seen[p] = true;
    }
    let n = numel("shape", shape)?;
    check_len("input", input.len(), n)?;
    check_len("output", output.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    // Row-major strides of the input, then the input stride of each output axis.
    let mut in_stride = [0usize; MAX_TRANSPOSE_RANK];
    let mut acc = 1;
    for d in (0..rank).rev() {
        in_stride[d] = acc;
        acc *= shape[d];
    }
    let mut dims = [1usize; MAX_TRANSPOSE_RANK];
    let mut step = [0usize; MAX_TRANSPOSE_RANK];
    for (i, &p) in perm.iter().enumerate() {
        dims[i] = shape[p];
        step[i] = in_stride[p];
    }
    let rank = rank.max(1);
    for_each_chunk(output, |start, out| {
        // The output coordinates of `start`, then an odometer over the chunk.
        let mut coord = [0usize; MAX_TRANSPOSE_RANK];
        let mut rest = start;
        let mut src = 0;
        for d in (0..rank).rev() {
            coord[d] = rest % dims[d];
            rest /= dims[d];
            src += coord[d] * step[d];
        }
        let last = rank - 1;
        let mut k = 0;
        while k < out.len() {
            // Along the last output axis the source advances by a fixed step.
            let run = (dims[last] - coord[last]).min(out.len() - k);
            let s = step[last];
            for (j, o) in out[k..k + run].iter_mut().enumerate() {
                *o = input[src + j * s];
            }
            k += run;
            src += run * s;
            coord[last] += run;
            let mut d = last;
            while coord[d] == dims[d] && d > 0 {
                src -= dims[d] * step[d];
                coord[d] = 0;
                d -= 1;
                coord[d] += 1;
                src += step[d];
            }
        }
    });
    Ok(())
}
