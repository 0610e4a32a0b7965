//! BatchNorm2d over NCHW tensors, as torch: training forward (batch statistics, running
//! statistics updated in place with momentum and the unbiased variance, mean and inverse std
//! saved for backward), inference forward (running statistics) and both backwards.
//!
//! Statistics are summed in f64 with an exact-mean two-pass (corrected) variance, so large planes
//! and large means stay accurate. Work is split over channels: a channel's statistics and its
//! normalisation run in the same task, so the second and third passes over a channel's N planes
//! come from cache. A channel's result does not depend on the thread count.
use crate::error::{check_len, check_positive, numel};
use crate::simd::{kernel, Target};
use crate::{bail, simd, Result};
use rayon::prelude::*;

/// Shape and hyper-parameters of a BatchNorm2d call. `momentum` is torch's (weight of the new
/// batch statistics), `eps` is added to the variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm2dParams {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm2dParams {
    /// The parameters of batch_norm2d over an input of shape `[N, C, H, W]`, checked as
    /// [`validate`](Self::validate) checks them.
    pub fn from_shape(input: [usize; 4], momentum: f64, eps: f64) -> Result<BatchNorm2dParams> {
        let [batch, channels, height, width] = input;
        let p = BatchNorm2dParams {
            batch,
            channels,
            height,
            width,
            momentum,
            eps,
        };
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        check_positive("batch", self.batch)?;
        check_positive("channels", self.channels)?;
        check_positive("height", self.height)?;
        check_positive("width", self.width)?;
        numel(
            "input",
            &[self.batch, self.channels, self.height, self.width],
        )?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            bail!("eps: expected a positive finite number, got {}", self.eps);
        }
        if !(0.0..=1.0).contains(&self.momentum) {
            bail!(
                "momentum: expected a number in [0, 1], got {}",
                self.momentum
            );
        }
        Ok(())
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.channels * self.height * self.width
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Values per channel: the statistics' sample size.
    fn count(&self) -> usize {
        self.batch * self.plane()
    }
}

/// Checks `p`, then that every `full` buffer (name, length) has the input's size and every
/// given `per_channel` buffer one value per channel: the argument checks of every entry.
fn check_lens(
    p: &BatchNorm2dParams,
    full: &[(&str, usize)],
    per_channel: &[(&str, Option<usize>)],
) -> Result<()> {
    p.validate()?;
    for &(name, len) in full {
        check_len(name, len, p.input_len())?;
    }
    for &(name, len) in per_channel {
        if let Some(len) = len {
            check_len(name, len, p.channels)?;
        }
    }
    Ok(())
}

fn len_of(v: Option<&[f32]>) -> Option<usize> {
    v.map(<[f32]>::len)
}

/// Splits an NCHW buffer into its planes grouped by channel, so one task can own every plane
/// of its channel (they are strided across the batch).
fn planes_by_channel(buf: &mut [f32], channels: usize, plane: usize) -> Vec<Vec<&mut [f32]>> {
    let mut groups: Vec<Vec<&mut [f32]>> = (0..channels)
        .map(|_| Vec::with_capacity(buf.len() / (plane * channels).max(1)))
        .collect();
    for (i, p) in buf.chunks_mut(plane).enumerate() {
        groups[i % channels].push(p);
    }
    groups
}

/// Values per block: within a block, sums run in 16 f32 lanes (64 values each, vectorised);
/// blocks are added in f64. The error is that of 64-term f32 sums, whatever the plane size.
const BLOCK: usize = 1024;
const LANES: usize = 16;

/// Σ (x - shift), in f64 across blocks. Public to the crate: global average pooling uses it.
#[inline(always)]
pub(crate) fn shifted_sum(xs: &[f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    for block in xs.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v - shift;
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&v| (v - shift) as f64).sum();
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + tail;
    }
    total
}

/// (Σ (x - mean), Σ (x - mean)²), in f64 across blocks.
#[inline(always)]
fn centered_sums(xs: &[f32], mean: f32) -> (f64, f64) {
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for block in xs.chunks(BLOCK) {
        let mut s1 = [0.0f32; LANES];
        let mut s2 = [0.0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(c) {
                let d = v - mean;
                *a += d;
                *b += d * d;
            }
        }
        for &v in chunks.remainder() {
            let d = (v - mean) as f64;
            t1 += d;
            t2 += d * d;
        }
        t1 += s1.iter().map(|&a| a as f64).sum::<f64>();
        t2 += s2.iter().map(|&a| a as f64).sum::<f64>();
    }
    (t1, t2)
}

/// (Σ g, Σ (x - mean) * g), in f64 across blocks.
#[inline(always)]
fn grad_sums(x: &[f32], g: &[f32], mean: f32) -> (f64, f64) {
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for (xb, gb) in x.chunks(BLOCK).zip(g.chunks(BLOCK)) {
        let mut s1 = [0.0f32; LANES];
        let mut s2 = [0.0f32; LANES];
        let mut xc = xb.chunks_exact(LANES);
        let mut gc = gb.chunks_exact(LANES);
        for (cx, cg) in (&mut xc).zip(&mut gc) {
            for (((a, b), &xv), &gv) in s1.iter_mut().zip(s2.iter_mut()).zip(cx).zip(cg) {
                *a += gv;
                *b += (xv - mean) * gv;
            }
        }
        for (&xv, &gv) in xc.remainder().iter().zip(gc.remainder()) {
            t1 += gv as f64;
            t2 += (xv - mean) as f64 * gv as f64;
        }
        t1 += s1.iter().map(|&a| a as f64).sum::<f64>();
        t2 += s2.iter().map(|&a| a as f64).sum::<f64>();
    }
    (t1, t2)
}

/// y = (x - mean) * alpha + beta.
#[inline(always)]
fn normalize_into(y: &mut [f32], x: &[f32], mean: f32, alpha: f32, beta: f32) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - mean) * alpha + beta;
    }
}

/// Per-channel result of the training forward: batch mean and sum of squared deviations.
struct ChannelStats {
    mean: f64,
    var_sum: f64,
}

/// Everything a channel task needs besides its own planes.
struct TrainChannel<'a> {
    input: &'a [f32],
    channel: usize,
    channels: usize,
    plane: usize,
    count: f64,
    eps: f64,
    weight: f32,
    bias: f32,
}

impl TrainChannel<'_> {
    fn x(&self, n: usize) -> &[f32] {
        &self.input[(n * self.channels + self.channel) * self.plane..][..self.plane]
    }
}

/// The three reductions, with explicit vector code at the AVX2 and NEON levels (compilers
/// vectorise these lane-array loops unreliably) and the portable loops otherwise.
struct Reduce<T>(std::marker::PhantomData<T>);

impl<T: Target> Reduce<T> {
    #[inline(always)]
    fn shifted_sum(xs: &[f32], shift: f32) -> f64 {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if T::AVX2 || T::NEON {
            // SAFETY: T is Avx2 or Neon only inside kernel! builds for those levels, which run
            // only on CPUs that have them.
            return unsafe { vector::shifted_sum(xs, shift) };
        }
        shifted_sum(xs, shift)
    }

    #[inline(always)]
    fn centered_sums(xs: &[f32], mean: f32) -> (f64, f64) {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if T::AVX2 || T::NEON {
            // SAFETY: T is Avx2 or Neon only inside kernel! builds for those levels, which run
            // only on CPUs that have them.
            return unsafe { vector::centered_sums(xs, mean) };
        }
        centered_sums(xs, mean)
    }

    #[inline(always)]
    fn grad_sums(x: &[f32], g: &[f32], mean: f32) -> (f64, f64) {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if T::AVX2 || T::NEON {
            // SAFETY: T is Avx2 or Neon only inside kernel! builds for those levels, which run
            // only on CPUs that have them.
            return unsafe { vector::grad_sums(x, g, mean) };
        }
        grad_sums(x, g, mean)
    }
}

kernel! {
    fn train_channel<[T]>(t: &TrainChannel, ys: &mut [&mut [f32]]) -> ChannelStats {
        let batch = ys.len();
        // Shifting by one of the channel's own values keeps the f32 partial sums small even when
        // the mean is large next to the spread.
        let first = t.x(0)[0];
        let shift = if first.is_finite() { first } else { 0.0 };
        let mut sum = 0.0;
        for n in 0..batch {
            sum += Reduce::<T>::shifted_sum(t.x(n), shift);
        }
        let mean = shift as f64 + sum / t.count;
        let mean32 = mean as f32;
        let (mut dev, mut sq) = (0.0, 0.0);
        for n in 0..batch {
            let (d, s) = Reduce::<T>::centered_sums(t.x(n), mean32);
            dev += d;
            sq += s;
        }
        // Corrected two-pass: removes what the f32 mean is off by from the sum of squares.
        let var_sum = (sq - dev * dev / t.count).max(0.0);
        let mean = mean32 as f64 + dev / t.count;
        let invstd = 1.0 / (var_sum / t.count + t.eps).sqrt();
        let alpha = (invstd * t.weight as f64) as f32;
        for (n, y) in ys.iter_mut().enumerate() {
            normalize_into(y, t.x(n), mean32, alpha, t.bias);
        }
        ChannelStats { mean, var_sum }
    }
}

/// Training forward: normalises with the batch mean and biased variance, writes the mean and
/// 1/sqrt(var + eps) per channel to `save_mean`/`save_invstd`, and, when given, updates
/// `running_mean`/`running_var` in place: r = (1 - momentum) * r + momentum * batch_stat, with
/// the unbiased variance, exactly as torch.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_forward_train(
    p: &BatchNorm2dParams,
    input: &[f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    running_mean: Option<&mut [f32]>,
    running_var: Option<&mut [f32]>,
    output: &mut [f32],
    save_mean: &mut [f32],
    save_invstd: &mut [f32],
) -> Result<()> {
    check_lens(
        p,
        &[("input", input.len()), ("output", output.len())],
        &[
            ("weight", len_of(weight)),
            ("bias", len_of(bias)),
            ("runningMean", len_of(running_mean.as_deref())),
            ("runningVar", len_of(running_var.as_deref())),
            ("saveMean", Some(save_mean.len())),
            ("saveInvstd", Some(save_invstd.len())),
        ],
    )?;
    let c = p.channels;
    let count = p.count();
    if count < 2 {
        bail!(
            "input: training batch norm needs more than 1 value per channel, got shape [{}, {}, {}, {}]",
            p.batch,
            p.channels,
            p.height,
            p.width
        );
    }
    let isa = simd::isa();
    let plane = p.plane();
    let stats: Vec<ChannelStats> = planes_by_channel(output, c, plane)
        .into_par_iter()
        .enumerate()
        .map(|(ch, mut ys)| {
            let t = TrainChannel {
                input,
                channel: ch,
                channels: c,
                plane,
                count: count as f64,
                eps: p.eps,
                weight: weight.map_or(1.0, |w| w[ch]),
                bias: bias.map_or(0.0, |b| b[ch]),
            };
            train_channel(isa, &t, &mut ys)
        })
        .collect();
    let n = count as f64;
    let m = p.momentum;
    for (ch, s) in stats.iter().enumerate() {
        save_mean[ch] = s.mean as f32;
        save_invstd[ch] = (1.0 / (s.var_sum / n + p.eps).sqrt()) as f32;
    }
    if let Some(rm) = running_mean {
        for (r, s) in rm.iter_mut().zip(&stats) {
            *r = (m * s.mean + (1.0 - m) * *r as f64) as f32;
        }
    }
    if let Some(rv) = running_var {
        for (r, s) in rv.iter_mut().zip(&stats) {
            let unbiased = s.var_sum / (n - 1.0);
            *r = (m * unbiased + (1.0 - m) * *r as f64) as f32;
        }
    }
    Ok(())
}

/// An eval batch norm (after a conv with `conv_bias`, or alone) as a per-channel affine map:
/// `scale = weight / sqrt(running_var + eps)`, `shift = bias + (conv_bias - running_mean) *
/// scale`, computed in f64 (scale unrounded inside shift) and rounded once to f32: what the fused
/// conv and concat epilogues apply. Absent weight, bias and conv bias count as 1, 0 and 0.
#[allow(clippy::too_many_arguments)]
pub fn fold(
    running_mean: &[f32],
    running_var: &[f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    conv_bias: Option<&[f32]>,
    eps: f64,
    scale: &mut [f32],
    shift: &mut [f32],
) -> Result<()> {
    let c = running_mean.len();
    check_positive("runningMean", c)?;
    if !(eps > 0.0 && eps.is_finite()) {
        bail!("eps: expected a positive finite number, got {eps}");
    }
    for (name, len) in [
        ("runningVar", Some(running_var.len())),
        ("weight", len_of(weight)),
        ("bias", len_of(bias)),
        ("convBias", len_of(conv_bias)),
        ("scale", Some(scale.len())),
        ("shift", Some(shift.len())),
    ] {
        if let Some(len) = len {
            check_len(name, len, c)?;
        }
    }
    for ch in 0..c {
        let s = weight.map_or(1.0, |w| w[ch] as f64) / (running_var[ch] as f64 + eps).sqrt();
        let b = bias.map_or(0.0, |b| b[ch] as f64);
        let cb = conv_bias.map_or(0.0, |b| b[ch] as f64);
        scale[ch] = s as f32;
        shift[ch] = (b + (cb - running_mean[ch] as f64) * s) as f32;
    }
    Ok(())
}

/// Inference forward: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.
pub fn batch_norm2d_forward_eval(
    p: &BatchNorm2dParams,
    input: &[f32],
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    running_mean: &[f32],
    running_var: &[f32],
    output: &mut [f32],
) -> Result<()> {
    check_lens(
        p,
        &[("input", input.len()), ("output", output.len())],
        &[
            ("weight", len_of(weight)),
            ("bias", len_of(bias)),
            ("runningMean", Some(running_mean.len())),
            ("runningVar", Some(running_var.len())),
        ],
    )?;
    let c = p.channels;
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ch| {
            let invstd = 1.0 / (running_var[ch] as f64 + p.eps).sqrt();
            let w = weight.map_or(1.0, |w| w[ch] as f64);
            (
                running_mean[ch],
                (invstd * w) as f32,
                bias.map_or(0.0, |b| b[ch]),
            )
        })
        .collect();
    let plane = p.plane();
    let isa = simd::isa();
    output
        .par_chunks_mut(plane)
        .zip(input.par_chunks(plane))
        .enumerate()
        .with_min_len((16 * 1024 / plane).max(1))
        .for_each(|(i, (y, x))| {
            let (mean, alpha, beta) = coef[i % c];
            normalize(isa, y, x, mean, alpha, beta);
        });
    Ok(())
}

kernel! {
    fn normalize(y: &mut [f32], x: &[f32], mean: f32, alpha: f32, beta: f32) {
        normalize_into(y, x, mean, alpha, beta)
    }
}

/// What a backward channel task reads besides its own gradInput planes.
struct BackChannel<'a> {
    input: &'a [f32],
    grad_out: &'a [f32],
    channel: usize,
    channels: usize,
    plane: usize,
    count: f64,
    mean: f32,
    invstd: f32,
    weight: f32,
}

impl BackChannel<'_> {
    fn at(&self, n: usize) -> std::ops::Range<usize> {
        let start = (n * self.channels + self.channel) * self.plane;
        start..start + self.plane
    }
}

kernel! {
    /// (Σ gy, Σ (x - mean) * gy) of one channel, after writing its grad input planes `gis`.
    fn back_channel<[T]>(t: &BackChannel, gis: &mut [&mut [f32]]) -> (f64, f64) {
        let (mut sum_g, mut dotp) = (0.0, 0.0);
        for n in 0..gis.len() {
            let r = t.at(n);
            let (s, d) = Reduce::<T>::grad_sums(&t.input[r.clone()], &t.grad_out[r], t.mean);
            sum_g += s;
            dotp += d;
        }
        let invstd = t.invstd as f64;
        // torch's training backward: dx = (dy - mean(dy) - (x - mean) * k) * invstd * w with
        // k = Σ (x - mean) dy * invstd² / n.
        let k = (dotp * invstd * invstd / t.count) as f32;
        let grad_mean = (sum_g / t.count) as f32;
        let scale = t.invstd * t.weight;
        for (n, gi) in gis.iter_mut().enumerate() {
            let r = t.at(n);
            let x = &t.input[r.clone()];
            let gy = &t.grad_out[r];
            for ((o, &xv), &gv) in gi.iter_mut().zip(x).zip(gy) {
                *o = (gv - grad_mean - (xv - t.mean) * k) * scale;
            }
        }
        (sum_g, dotp)
    }
}

/// The per-channel statistics a batch-norm backward runs from.
#[derive(Debug, Clone, Copy)]
pub enum BnStats<'a> {
    /// Training: the forward's saved batch mean and 1 / sqrt(biased var + eps). The gradient
    /// flows through the batch statistics too.
    Batch { mean: &'a [f32], invstd: &'a [f32] },
    /// Inference: the running mean and variance, fixed, so the layer is a per-channel affine
    /// map.
    Running { mean: &'a [f32], var: &'a [f32] },
}

impl BnStats<'_> {
    /// The statistics with the public names they are checked under.
    pub fn names(&self) -> [(&'static str, &[f32]); 2] {
        match *self {
            BnStats::Batch { mean, invstd } => [("saveMean", mean), ("saveInvstd", invstd)],
            BnStats::Running { mean, var } => [("runningMean", mean), ("runningVar", var)],
        }
    }
}

/// The tensors of one backward call once checked.
struct Backward<'a> {
    input: &'a [f32],
    grad_out: &'a [f32],
    weight: Option<&'a [f32]>,
    grad_input: &'a mut [f32],
    grad_weight: Option<&'a mut [f32]>,
    grad_bias: Option<&'a mut [f32]>,
}

/// Batch-norm backward from `stats`: grad input (always), and grad weight and grad bias when
/// asked for, all overwritten. With [`BnStats::Batch`] it is the training backward, through the
/// batch statistics; with [`BnStats::Running`] the inference one.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm2d_backward(
    p: &BatchNorm2dParams,
    input: &[f32],
    grad_out: &[f32],
    weight: Option<&[f32]>,
    stats: BnStats<'_>,
    grad_input: &mut [f32],
    grad_weight: Option<&mut [f32]>,
    grad_bias: Option<&mut [f32]>,
) -> Result<()> {
    let [(n0, s0), (n1, s1)] = stats.names();
    check_lens(
        p,
        &[
            ("input", input.len()),
            ("gradOutput", grad_out.len()),
            ("gradInput", grad_input.len()),
        ],
        &[
            ("weight", len_of(weight)),
            (n0, Some(s0.len())),
            (n1, Some(s1.len())),
            ("gradWeight", len_of(grad_weight.as_deref())),
            ("gradBias", len_of(grad_bias.as_deref())),
        ],
    )?;
    let call = Backward {
        input,
        grad_out,
        weight,
        grad_input,
        grad_weight,
        grad_bias,
    };
    match stats {
        BnStats::Batch { mean, invstd } => backward_batch(p, call, mean, invstd),
        BnStats::Running { mean, var } => backward_running(p, call, mean, var),
    }
    Ok(())
}

/// Training backward, from the saved batch mean and inverse std: grad input, grad weight
/// (Σ (x - mean) * invstd * dy) and grad bias (Σ dy).
fn backward_batch(
    p: &BatchNorm2dParams,
    call: Backward<'_>,
    save_mean: &[f32],
    save_invstd: &[f32],
) {
    let Backward {
        input,
        grad_out,
        weight,
        grad_input,
        grad_weight,
        grad_bias,
    } = call;
    let c = p.channels;
    let isa = simd::isa();
    let plane = p.plane();
    let count = p.count() as f64;
    let sums: Vec<(f64, f64)> = planes_by_channel(grad_input, c, plane)
        .into_par_iter()
        .enumerate()
        .map(|(ch, mut gis)| {
            let t = BackChannel {
                input,
                grad_out,
                channel: ch,
                channels: c,
                plane,
                count,
                mean: save_mean[ch],
                invstd: save_invstd[ch],
                weight: weight.map_or(1.0, |w| w[ch]),
            };
            back_channel(isa, &t, &mut gis)
        })
        .collect();
    if let Some(gw) = grad_weight {
        for ((o, &(_, dotp)), &inv) in gw.iter_mut().zip(&sums).zip(save_invstd) {
            *o = (dotp * inv as f64) as f32;
        }
    }
    if let Some(gb) = grad_bias {
        for (o, &(sum_g, _)) in gb.iter_mut().zip(&sums) {
            *o = sum_g as f32;
        }
    }
}

/// Vector versions of the reductions (AVX2, or NEON pairs, through [`crate::f8`]): the same
/// blocking (f32 lanes within a block of `BLOCK` values, f64 across blocks), in registers.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector {
    use super::BLOCK;
    use crate::f8::{D4, F8};

    #[inline]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    #[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
    pub(super) unsafe fn shifted_sum(xs: &[f32], shift: f32) -> f64 {
        let sh = F8::splat(shift);
        let mut total = D4::zero();
        let mut tail = 0.0f64;
        for block in xs.chunks(BLOCK) {
            let mut acc = [F8::zero(); 4];
            let mut chunks = block.chunks_exact(32);
            for c in &mut chunks {
                let p = c.as_ptr();
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = a.add(F8::load(p.add(8 * j)).sub(sh));
                }
            }
            for a in acc {
                total = total.add_widened(a);
            }
            for &v in chunks.remainder() {
                tail += (v - shift) as f64;
            }
        }
        total.sum() + tail
    }

    #[inline]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    #[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
    pub(super) unsafe fn centered_sums(xs: &[f32], mean: f32) -> (f64, f64) {
        let m = F8::splat(mean);
        let (mut t1, mut t2) = (D4::zero(), D4::zero());
        let (mut r1, mut r2) = (0.0f64, 0.0f64);
        for block in xs.chunks(BLOCK) {
            let mut s1 = [F8::zero(); 2];
            let mut s2 = [F8::zero(); 2];
            let mut chunks = block.chunks_exact(16);
            for c in &mut chunks {
                let p = c.as_ptr();
                for j in 0..2 {
                    let d = F8::load(p.add(8 * j)).sub(m);
                    s1[j] = s1[j].add(d);
                    s2[j] = s2[j].mul_add(d, d);
                }
            }
            for j in 0..2 {
                t1 = t1.add_widened(s1[j]);
                t2 = t2.add_widened(s2[j]);
            }
            for &v in chunks.remainder() {
                let d = (v - mean) as f64;
                r1 += d;
                r2 += d * d;
            }
        }
        (t1.sum() + r1, t2.sum() + r2)
    }

    #[inline]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
    #[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
    pub(super) unsafe fn grad_sums(x: &[f32], g: &[f32], mean: f32) -> (f64, f64) {
        let m = F8::splat(mean);
        let (mut t1, mut t2) = (D4::zero(), D4::zero());
        let (mut r1, mut r2) = (0.0f64, 0.0f64);
        for (xb, gb) in x.chunks(BLOCK).zip(g.chunks(BLOCK)) {
            let mut s1 = [F8::zero(); 2];
            let mut s2 = [F8::zero(); 2];
            let mut xc = xb.chunks_exact(16);
            let mut gc = gb.chunks_exact(16);
            for (cx, cg) in (&mut xc).zip(&mut gc) {
                let (px, pg) = (cx.as_ptr(), cg.as_ptr());
                for j in 0..2 {
                    let gv = F8::load(pg.add(8 * j));
                    let d = F8::load(px.add(8 * j)).sub(m);
                    s1[j] = s1[j].add(gv);
                    s2[j] = s2[j].mul_add(d, gv);
                }
            }
            for j in 0..2 {
                t1 = t1.add_widened(s1[j]);
                t2 = t2.add_widened(s2[j]);
            }
            for (&xv, &gv) in xc.remainder().iter().zip(gc.remainder()) {
                r1 += gv as f64;
                r2 += (xv - mean) as f64 * gv as f64;
            }
        }
        (t1.sum() + r1, t2.sum() + r2)
    }
}

/// Σ x with the vector reduction, for global average pooling.
///
/// # Safety
/// The CPU must have the target's vector level (AVX2 and FMA; NEON).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
#[cfg_attr(target_arch = "aarch64", target_feature(enable = "neon"))]
pub(crate) unsafe fn shifted_sum_vector(xs: &[f32]) -> f64 {
    vector::shifted_sum(xs, 0.0)
}

/// Inference backward: with the running statistics fixed the layer is a per-channel affine map
/// y = (x - mean) * invstd * w + b, so grad input = dy * invstd * w, grad weight =
/// Σ dy (x - mean) invstd and grad bias = Σ dy.
///
/// Rounds exactly as the TypeScript loop it replaced: invstd and invstd * w in double, each grad
/// input rounded once from the double product, and per (image, channel) plane a double sum in
/// index order that is added into the float32 result, image after image. The sums stay
/// sequential for that reason; the planes run in parallel over channels.
fn backward_running(
    p: &BatchNorm2dParams,
    call: Backward<'_>,
    running_mean: &[f32],
    running_var: &[f32],
) {
    let Backward {
        input,
        grad_out: grad_output,
        weight,
        grad_input,
        grad_weight,
        grad_bias,
    } = call;
    let c = p.channels;
    // (invstd, invstd * w) per channel, in double.
    let coef: Vec<(f64, f64)> = (0..c)
        .map(|ch| {
            let invstd = 1.0 / (running_var[ch] as f64 + p.eps).sqrt();
            (invstd, invstd * weight.map_or(1.0, |w| w[ch] as f64))
        })
        .collect();
    let plane = p.plane();
    let isa = simd::isa();
    grad_input
        .par_chunks_mut(plane)
        .zip(grad_output.par_chunks(plane))
        .enumerate()
        .with_min_len((16 * 1024 / plane).max(1))
        .for_each(|(i, (gi, go))| crate::elementwise::scale_f64(isa, go, coef[i % c].1, gi));
    if grad_weight.is_none() && grad_bias.is_none() {
        return;
    }
    let sums = |ch: usize| -> (f32, f32) {
        let (invstd, mean) = (coef[ch].0, running_mean[ch] as f64);
        let (mut gw, mut gb) = (0.0f32, 0.0f32);
        for n in 0..p.batch {
            let start = (n * c + ch) * plane;
            let (x, gy) = (
                &input[start..start + plane],
                &grad_output[start..start + plane],
            );
            let (mut sw, mut sb) = (0.0f64, 0.0f64);
            for (&xv, &gv) in x.iter().zip(gy) {
                sw += gv as f64 * (xv as f64 - mean) * invstd;
                sb += gv as f64;
            }
            gw = (gw as f64 + sw) as f32;
            gb = (gb as f64 + sb) as f32;
        }
        (gw, gb)
    };
    let per_channel: Vec<(f32, f32)> = (0..c).into_par_iter().map(sums).collect();
    if let Some(gw) = grad_weight {
        for (o, s) in gw.iter_mut().zip(&per_channel) {
            *o = s.0;
        }
    }
    if let Some(gb) = grad_bias {
        for (o, s) in gb.iter_mut().zip(&per_channel) {
            *o = s.1;
        }
    }
}
