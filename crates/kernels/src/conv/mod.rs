//! 2-D convolution (NCHW input, OIHW weight with I = C_in / groups), forward and backward.
//!
//! Several algorithms sit behind one entry point; [`ConvAlgo::Auto`] picks per shape. All of them
//! read and write the same layouts, so they can be checked against each other and against
//! [`reference`], the plain loop nest that defines what the answer is.
use crate::error::{check_len, check_positive};
use crate::{bail, scratch, Result};
pub use epilogue::Epilogue;
use tune::TunedPass;

pub mod cat;
pub mod direct;
pub mod epilogue;
pub mod fft;
pub mod im2col;
mod indirect;
mod par;
pub mod reference;
pub mod transpose;
pub mod tune;
pub mod winograd;

/// Shape and hyper-parameters of one conv2d call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    /// Zero padding per side: top, bottom, left, right.
    pub pad_top: usize,
    pub pad_bottom: usize,
    pub pad_left: usize,
    pub pad_right: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub groups: usize,
}

/// The buffer lengths of an NCHW conv-like call (conv and transposed conv), from its `batch`,
/// channels, input size and `weight_shape()`, the check that they fit in memory, and the checks
/// of sizes and groups both share.
macro_rules! nchw_lengths {
    () => {
        pub fn input_len(&self) -> usize {
            self.batch * self.in_channels * self.in_h * self.in_w
        }

        pub fn weight_len(&self) -> usize {
            self.weight_shape().iter().product()
        }

        /// Output length; only meaningful after [`validate`](Self::validate) succeeded.
        pub fn output_len(&self, out_hw: (usize, usize)) -> usize {
            self.batch * self.out_channels * out_hw.0 * out_hw.1
        }

        /// Whether the input, output and weight element counts fit in memory.
        fn check_numel(&self, (out_h, out_w): (usize, usize)) -> Result<()> {
            crate::error::numel(
                "input",
                &[self.batch, self.in_channels, self.in_h, self.in_w],
            )?;
            crate::error::numel("output", &[self.batch, self.out_channels, out_h, out_w])?;
            crate::error::numel("weight", &self.weight_shape())?;
            Ok(())
        }
        /// The checks conv and transposed conv share: every size positive, and both channel
        /// counts divisible by `groups`.
        fn check_common(&self) -> Result<()> {
            check_positive("batch", self.batch)?;
            check_positive("in_channels", self.in_channels)?;
            // Before out_channels: a transposed conv's out_channels is groups times the weight's.
            check_positive("groups", self.groups)?;
            check_positive("input height", self.in_h)?;
            check_positive("input width", self.in_w)?;
            check_positive("out_channels", self.out_channels)?;
            check_positive("kernel height", self.kernel_h)?;
            check_positive("kernel width", self.kernel_w)?;
            check_positive("stride", self.stride_h.min(self.stride_w))?;
            check_positive("dilation", self.dilation_h.min(self.dilation_w))?;
            for (name, channels) in [
                ("in_channels", self.in_channels),
                ("out_channels", self.out_channels),
            ] {
                if !channels.is_multiple_of(self.groups) {
                    bail!(
                        "groups: {name} ({channels}) must be divisible by groups ({})",
                        self.groups
                    );
                }
            }
            Ok(())
        }
    };
}
pub(crate) use nchw_lengths;

impl Conv2dParams {
    /// The parameters of conv2d(input, weight) from the tensors' shapes, as torch reads them:
    /// input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, kH, kW]`, stride `[sH, sW]`,
    /// padding `[top, bottom, left, right]`, dilation `[dH, dW]`. Checks everything
    /// [`validate`](Self::validate) checks, then the weight's channels against the input's.
    pub fn from_shapes(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 4],
        dilation: [usize; 2],
        groups: usize,
    ) -> Result<Conv2dParams> {
        let [batch, in_channels, in_h, in_w] = input;
        let [out_channels, in_per_group, kernel_h, kernel_w] = weight;
        let p = Conv2dParams {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            stride_h: stride[0],
            stride_w: stride[1],
            pad_top: padding[0],
            pad_bottom: padding[1],
            pad_left: padding[2],
            pad_right: padding[3],
            dilation_h: dilation[0],
            dilation_w: dilation[1],
            groups,
        };
        p.validate()?;
        if in_per_group.checked_mul(groups) != Some(in_channels) {
            bail!(
                "conv2d: the weight {weight:?} takes {in_per_group} input channels per group, but \
                 the input {input:?} has {in_channels} channels in {groups} group(s) (expected \
                 weight shape [{out_channels}, {}, {kernel_h}, {kernel_w}])",
                in_channels / groups
            );
        }
        Ok(p)
    }

    /// Checks the hyper-parameters and returns the output (height, width).
    pub fn validate(&self) -> Result<(usize, usize)> {
        self.check_common()?;
        let span_h = self
            .dilation_h
            .checked_mul(self.kernel_h - 1)
            .map(|v| v + 1);
        let span_w = self
            .dilation_w
            .checked_mul(self.kernel_w - 1)
            .map(|v| v + 1);
        let padded_h = self.in_h.checked_add(self.pad_top + self.pad_bottom);
        let padded_w = self.in_w.checked_add(self.pad_left + self.pad_right);
        let (Some(span_h), Some(span_w), Some(padded_h), Some(padded_w)) =
            (span_h, span_w, padded_h, padded_w)
        else {
            bail!("conv2d: sizes overflow");
        };
        if span_h > padded_h || span_w > padded_w {
            bail!(
                "kernel: dilated kernel {}x{} is larger than the padded input {}x{}",
                span_h,
                span_w,
                padded_h,
                padded_w
            );
        }
        let out_h = (padded_h - span_h) / self.stride_h + 1;
        let out_w = (padded_w - span_w) / self.stride_w + 1;
        // Refuse shapes whose buffers could not exist, before anyone allocates them.
        self.check_numel((out_h, out_w))?;
        Ok((out_h, out_w))
    }

    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel_h,
            self.kernel_w,
        ]
    }

    nchw_lengths!();

    /// Multiply-adds of one forward pass, times two (the FLOP count benchmarks report).
    pub fn flops(&self) -> f64 {
        let (oh, ow) = self.validate().unwrap_or((0, 0));
        2.0 * (self.batch * self.out_channels * oh * ow) as f64
            * (self.in_per_group() * self.kernel_h * self.kernel_w) as f64
    }
}

/// Which pass of a convolution an algorithm is chosen for: the best algorithm can differ
/// between them (see [`ConvAlgo::resolve_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// Which algorithm computes a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvAlgo {
    Auto,
    Direct,
    Im2col,
    Fft,
    /// Winograd F(4x4, 3x3), or F(2x2, 3x3) on maps of at most 7x7 where F(4x4) would have
    /// fewer than 16 tiles ([`winograd::tile_side`]): 3x3 kernels at stride 1 and dilation 1; other shapes, and the
    /// weight gradient, fall back to im2col.
    Winograd,
}

impl ConvAlgo {
    pub fn parse(name: &str) -> Result<ConvAlgo> {
        match name {
            "auto" => Ok(ConvAlgo::Auto),
            "direct" => Ok(ConvAlgo::Direct),
            "im2col" => Ok(ConvAlgo::Im2col),
            "fft" => Ok(ConvAlgo::Fft),
            "winograd" => Ok(ConvAlgo::Winograd),
            other => {
                bail!(
                    "algo: expected one of 'auto', 'direct', 'im2col', 'fft', 'winograd', got \
                     '{other}'"
                )
            }
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Auto => "auto",
            ConvAlgo::Direct => "direct",
            ConvAlgo::Im2col => "im2col",
            ConvAlgo::Fft => "fft",
            ConvAlgo::Winograd => "winograd",
        }
    }

    /// The algorithm `Auto` resolves to for this shape's forward pass.
    pub fn resolve(self, p: &Conv2dParams) -> ConvAlgo {
        self.resolve_for(p, ConvPass::Forward)
    }

    /// The algorithm `Auto` resolves to for this shape's forward pass when the weights are
    /// prepared once for many calls ([`prepare_forward`], as compiled plans do): Winograd
    /// where it pays off without a transform of the weights per call
    /// ([`winograd::pays_off_prepared`]), else as [`ConvAlgo::resolve`].
    pub fn resolve_prepared(self, p: &Conv2dParams) -> ConvAlgo {
        match self.resolve(p) {
            ConvAlgo::Im2col if self == ConvAlgo::Auto && winograd::pays_off_prepared(p) => {
                ConvAlgo::Winograd
            }
            other => other,
        }
    }

    /// The algorithm `Auto` resolves to for this shape and pass.
    pub fn resolve_for(self, p: &Conv2dParams, pass: ConvPass) -> ConvAlgo {
        match self {
            // Depthwise convs lower to one-row GEMMs per channel (the 6-row register tile runs
            // 5/6 empty and every channel repacks its columns): direct's row axpys are cheaper.
            // Everything else is GEMM-bound work, where im2col + the blocked SGEMM reaches a
            // large fraction of FMA peak (measurements: bench/results/auto-rules.md).
            ConvAlgo::Auto if p.groups > 1 && p.groups == p.in_channels => ConvAlgo::Direct,
            // Reductions so long that even one block of lowered columns would take more than
            // im2col's scratch budget (kernels about the size of the image).
            ConvAlgo::Auto if !im2col::scratch_bounded(p) => ConvAlgo::Direct,
            // Dense 3x3 stride-1 layers with 64+ channels and enough tiles: Winograd F(4x4, 3x3)
            // does 4x fewer multiplies (less the partial tiles and the transforms); where it
            // measured faster than im2col is in `winograd::pays_off`.
            ConvAlgo::Auto if winograd::pays_off(p) => ConvAlgo::Winograd,
            // Stride-1 5x5 and larger kernels with 32+ channels over a batch: the FFT's
            // pointwise products beat im2col's k*k-times-larger GEMM; where, per pass, is in
            // `fft::beats_im2col`.
            ConvAlgo::Auto if fft::beats_im2col(p, pass) => ConvAlgo::Fft,
            ConvAlgo::Auto => ConvAlgo::Im2col,
            other => other,
        }
    }
}

/// One way to run a conv pass: an algorithm and, for im2col, which of its two paths for the
/// pass where it has two (`alt`: the one its rules do not pick; see [`im2col::paths`]). What
/// the autotuner chooses between; `Auto` with `alt` false asks for the tuned choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Choice {
    pub algo: ConvAlgo,
    pub alt: bool,
}

impl From<ConvAlgo> for Choice {
    fn from(algo: ConvAlgo) -> Choice {
        Choice { algo, alt: false }
    }
}

fn check_bias(p: &Conv2dParams, bias: Option<&[f32]>) -> Result<()> {
    if let Some(b) = bias {
        check_len("bias", b.len(), p.out_channels)?;
    }
    Ok(())
}

/// Defines the buffers of one conv call (the parameters, the output size `p.validate()` gave,
/// then the call's two input buffers and its output), with `new` taking the fields in order and
/// `parts` giving them back as a tuple.
macro_rules! conv_call {
    ($(#[$m:meta])* $name:ident { $a:ident, $b:ident, $out:ident: $out_ty:ty $(,)? }) => {
        $(#[$m])*
        pub struct $name<'a> {
            pub p: &'a Conv2dParams,
            pub out_hw: (usize, usize),
            pub $a: &'a [f32],
            pub $b: &'a [f32],
            pub $out: $out_ty,
        }

        impl<'a> $name<'a> {
            pub fn new(
                p: &'a Conv2dParams, out_hw: (usize, usize), $a: &'a [f32], $b: &'a [f32], $out: $out_ty,
            ) -> Self {
                $name { p, out_hw, $a, $b, $out }
            }

            #[allow(clippy::type_complexity)]
            pub fn parts(self) -> (&'a Conv2dParams, (usize, usize), &'a [f32], &'a [f32], $out_ty) {
                (self.p, self.out_hw, self.$a, self.$b, self.$out)
            }
        }
    };
}

conv_call! {
    /// A forward call: `output = conv(input, weight)`. Every algorithm's forward takes one.
    Forward { input, weight, output: &'a mut [f32] }
}

conv_call! {
    /// An input-gradient call: `grad_input` from `grad_out` and `weight`.
    BackwardData { grad_out, weight, grad_input: &'a mut [f32] }
}

conv_call! {
    /// A weight-gradient call: `grads` = (grad weight, grad bias when wanted) from `input` and
    /// `grad_out`.
    BackwardWeight { input, grad_out, grads: (&'a mut [f32], Option<&'a mut [f32]>) }
}

impl Forward<'_> {
    /// The same call, borrowed again (to try one algorithm and fall back to another).
    pub fn reborrow(&mut self) -> Forward<'_> {
        Forward {
            output: &mut *self.output,
            ..*self
        }
    }
}

/// output = conv(input, weight) + bias.
pub fn conv2d_forward(
    p: &Conv2dParams,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    conv2d_forward_choice(p, input, weight, bias, output, algo.into())
}

/// [`conv2d_forward`] on one [`Choice`] (for tests of im2col's alternative paths).
#[doc(hidden)]
pub fn conv2d_forward_choice(
    p: &Conv2dParams,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
    asked: Choice,
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_bias(p, bias)?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    let mut f = Forward::new(p, out_hw, input, weight, output);
    let run = |c: Choice| {
        let f = f.reborrow();
        match c.algo {
            ConvAlgo::Direct | ConvAlgo::Auto => direct::forward(f, bias),
            ConvAlgo::Im2col => im2col::forward_with(f, &Epilogue::bias(bias), c.alt),
            ConvAlgo::Fft => fft::forward(f, bias),
            ConvAlgo::Winograd => winograd::forward(f, &Epilogue::bias(bias)),
        }
    };
    tune::run(p, TunedPass::Forward, asked, run).map(|_| ())
}

/// The buffer checks of a fused forward; the output size.
/// Checks a fused forward's buffers (the input unless it is None: a caller that checks its own
/// input pieces) and gives the output size.
fn check_fused(
    p: &Conv2dParams,
    input: Option<&[f32]>,
    weight: &[f32],
    epilogue: &Epilogue<'_>,
    output: &[f32],
) -> Result<(usize, usize)> {
    let out_hw = p.validate()?;
    if let Some(x) = input {
        check_len("input", x.len(), p.input_len())?;
    }
    check_len("weight", weight.len(), p.weight_len())?;
    let out_len = p.output_len(out_hw);
    epilogue.validate(p.out_channels, out_len)?;
    check_len("output", output.len(), out_len)?;
    Ok(out_hw)
}

/// output = epilogue(conv(input, weight)): per output channel `oc`,
/// `act(acc * scale[oc] + shift[oc] + residual)` (see [`Epilogue`]). For inference: a bias, a
/// folded batch norm, a residual add and a ReLU in the conv's own pass over the output.
/// `residual` must not share memory with `output` (the sum is written before it is read).
pub fn conv2d_forward_fused(
    p: &Conv2dParams,
    input: &[f32],
    weight: &[f32],
    epilogue: &Epilogue<'_>,
    output: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    let out_hw = check_fused(p, Some(input), weight, epilogue, output)?;
    let plane = out_hw.0 * out_hw.1;
    let mut f = Forward::new(p, out_hw, input, weight, output);
    let run = |c: Choice| match c.algo {
        ConvAlgo::Im2col => im2col::forward_with(f.reborrow(), epilogue, c.alt),
        ConvAlgo::Winograd => winograd::forward(f.reborrow(), epilogue),
        // Direct and FFT apply the epilogue in a pass of their own.
        ConvAlgo::Direct | ConvAlgo::Auto => {
            direct::forward(f.reborrow(), None);
            epilogue.apply_all(f.output, p.out_channels, plane);
        }
        ConvAlgo::Fft => {
            fft::forward(f.reborrow(), None);
            epilogue.apply_all(f.output, p.out_channels, plane);
        }
    };
    tune::run(p, TunedPass::Forward, algo.into(), run).map(|_| ())
}

/// A forward convolution's weights prepared once for the algorithm `auto` (or the one asked
/// for) picks: packed for the GEMM (im2col), or transformed and packed (Winograd). A model
/// whose weights do not change between forwards (inference, a compiled plan's runs) prepares
/// each conv once and skips that work, a full pass over the weights, on every call, as ONNX
/// Runtime does when it loads a model. Direct and FFT convolutions have nothing to prepare.
pub struct PreparedForward {
    params: Conv2dParams,
    algo: ConvAlgo,
    /// The algorithm (and im2col path) these weights are for: `algo`, or what `Auto` chose.
    resolved: Choice,
    weights: PreparedKind,
}

enum PreparedKind {
    Gemm(Vec<crate::gemm::PackedA>),
    Winograd(Vec<crate::gemm::PackedA>),
    /// im2col's forward for few output channels ([`indirect`]): 16-channel weight panels.
    Indirect(Vec<f32>),
    Nothing,
}

/// What im2col's forward prepares for `p`: the indirect path's panels where it runs, else the
/// GEMM's packed weights (the same choice `im2col::forward_with` makes).
fn prepare_im2col(p: &Conv2dParams, weight: &[f32], alt: bool) -> PreparedKind {
    if im2col::forward_indirect(p, alt) {
        PreparedKind::Indirect(indirect::pack_weights(p, weight))
    } else {
        PreparedKind::Gemm(im2col::pack_forward_weights(p, weight))
    }
}

/// The weights `resolved` (a concrete algorithm) prepares.
fn prepare_kind(p: &Conv2dParams, weight: &[f32], resolved: Choice) -> PreparedKind {
    match resolved.algo {
        ConvAlgo::Im2col => prepare_im2col(p, weight, resolved.alt),
        ConvAlgo::Winograd => match winograd::prepare(p, weight) {
            Some(a) => PreparedKind::Winograd(a),
            None => prepare_im2col(p, weight, false),
        },
        ConvAlgo::Direct | ConvAlgo::Fft | ConvAlgo::Auto => PreparedKind::Nothing,
    }
}

impl PreparedForward {
    /// Floats held (0 when the algorithm prepares nothing).
    pub fn floats(&self) -> usize {
        match &self.weights {
            PreparedKind::Gemm(a) | PreparedKind::Winograd(a) => {
                a.iter().map(|a| a.capacity()).sum()
            }
            PreparedKind::Indirect(w) => w.len(),
            PreparedKind::Nothing => 0,
        }
    }

    /// Whether these were prepared for a call of shape `p` and algorithm `algo`.
    pub fn fits(&self, p: &Conv2dParams, algo: ConvAlgo) -> bool {
        self.params == *p && self.algo == algo
    }

    /// The algorithm (and im2col path) the prepared forwards run.
    pub fn choice(&self) -> Choice {
        self.resolved
    }
}

/// Prepares `weight` (the OIHW weights of shape `p`) for forwards with `algo`. `Auto` takes the
/// tuned choice for prepared forwards when there is one ([`tune`]), else the rules'
/// ([`ConvAlgo::resolve_prepared`]).
pub fn prepare_forward(
    p: &Conv2dParams,
    weight: &[f32],
    algo: ConvAlgo,
) -> Result<PreparedForward> {
    p.validate()?;
    check_len("weight", weight.len(), p.weight_len())?;
    let resolved = match algo {
        ConvAlgo::Auto => tune::lookup(p, TunedPass::ForwardPrepared),
        other => other.resolve_prepared(p).into(),
    };
    scratch::fallible("conv2d", || {
        Ok(PreparedForward {
            params: *p,
            algo,
            resolved,
            weights: prepare_kind(p, weight, resolved),
        })
    })
}

/// [`prepare_forward`], tuning `Auto`'s choice first when tuning is on and this shape's
/// prepared forward was not tuned yet: each candidate is prepared and timed on `input`, writing
/// `output` (whose contents are left undefined: the caller's forward overwrites them).
pub fn prepare_forward_tuned(
    p: &Conv2dParams,
    weight: &[f32],
    algo: ConvAlgo,
    input: &[f32],
    output: &mut [f32],
) -> Result<PreparedForward> {
    if algo != ConvAlgo::Auto || !tune::needs_tuning(p, TunedPass::ForwardPrepared) {
        return prepare_forward(p, weight, algo);
    }
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_len("output", output.len(), p.output_len(out_hw))?;
    // One candidate's weights at a time, prepared in its warm-up run (which is not timed), so
    // tuning holds at most one extra copy of the weights.
    let mut current: Option<(Choice, PreparedKind)> = None;
    let identity = Epilogue::bias(None);
    let run = |a: Choice| {
        if current.as_ref().is_none_or(|(c, _)| *c != a) {
            current = None;
            current = Some((a, prepare_kind(p, weight, a)));
        }
        let kind = &current.as_ref().expect("just prepared").1;
        let f = Forward::new(p, out_hw, input, weight, &mut *output);
        match (kind, a.algo) {
            (PreparedKind::Winograd(w), _) => winograd::forward_prepared(f, w, &identity),
            (PreparedKind::Gemm(w), _) => im2col::forward_packed(f, w, &identity),
            (PreparedKind::Indirect(w), _) => indirect::forward(f, w, &identity),
            (PreparedKind::Nothing, ConvAlgo::Fft) => fft::forward(f, None),
            (PreparedKind::Nothing, _) => direct::forward(f, None),
        }
    };
    let resolved = tune::run(p, TunedPass::ForwardPrepared, algo.into(), run)?;
    let weights = match current {
        Some((c, kind)) if c == resolved => kind,
        _ => scratch::fallible("conv2d", || Ok(prepare_kind(p, weight, resolved)))?,
    };
    Ok(PreparedForward {
        params: *p,
        algo,
        resolved,
        weights,
    })
}

/// Fails unless `prepared` was made for a call of shape `p` and algorithm `algo`; whether it
/// holds weights (direct and FFT convolutions prepare nothing and run as without).
fn holds_weights(prepared: &PreparedForward, p: &Conv2dParams, algo: ConvAlgo) -> Result<bool> {
    if !prepared.fits(p, algo) {
        bail!("conv2d: prepared weights are for another shape or algorithm");
    }
    Ok(!matches!(prepared.weights, PreparedKind::Nothing))
}

/// [`conv2d_forward`] with the weights prepared by [`prepare_forward`] (see
/// [`conv2d_forward_fused_prepared`]); bit for bit the same results.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_prepared(
    p: &Conv2dParams,
    input: &[f32],
    weight: &[f32],
    prepared: &PreparedForward,
    bias: Option<&[f32]>,
    output: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    if !holds_weights(prepared, p, algo)? {
        // Direct summation adds the bias inside its sums, unlike the fused epilogue.
        return conv2d_forward(p, input, weight, bias, output, prepared.resolved.algo);
    }
    check_bias(p, bias)?;
    let epilogue = Epilogue::bias(bias);
    conv2d_forward_fused_prepared(p, input, weight, prepared, &epilogue, output, algo)
}

/// [`conv2d_forward_fused`] with the weights prepared by [`prepare_forward`] from `weight`
/// for this shape and `algo` (an Error otherwise); the results are bit for bit those of
/// [`conv2d_forward_fused`] with the algorithm the weights were prepared for.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_fused_prepared(
    p: &Conv2dParams,
    input: &[f32],
    weight: &[f32],
    prepared: &PreparedForward,
    epilogue: &Epilogue<'_>,
    output: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    if !holds_weights(prepared, p, algo)? {
        return conv2d_forward_fused(p, input, weight, epilogue, output, prepared.resolved.algo);
    }
    let out_hw = check_fused(p, Some(input), weight, epilogue, output)?;
    let f = Forward::new(p, out_hw, input, weight, output);
    scratch::fallible("conv2d", || {
        match &prepared.weights {
            PreparedKind::Winograd(a) => winograd::forward_prepared(f, a, epilogue),
            PreparedKind::Gemm(a) => im2col::forward_packed(f, a, epilogue),
            PreparedKind::Indirect(w) => indirect::forward(f, w, epilogue),
            PreparedKind::Nothing => unreachable!("handled above"),
        }
        Ok(())
    })
}

/// grad_input = d(loss)/d(input) given grad_out = d(loss)/d(output). Overwrites `grad_input`.
pub fn conv2d_backward_data(
    p: &Conv2dParams,
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    conv2d_backward_data_choice(p, grad_out, weight, grad_input, algo.into())
}

/// [`conv2d_backward_data`] on one [`Choice`] (for tests of im2col's alternative paths).
#[doc(hidden)]
pub fn conv2d_backward_data_choice(
    p: &Conv2dParams,
    grad_out: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
    asked: Choice,
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("weight", weight.len(), p.weight_len())?;
    check_len("gradInput", grad_input.len(), p.input_len())?;
    let run = |c: Choice| {
        let b = BackwardData::new(p, out_hw, grad_out, weight, &mut *grad_input);
        match c.algo {
            ConvAlgo::Direct | ConvAlgo::Auto => direct::backward_data(b),
            ConvAlgo::Im2col => im2col::backward_data_with(b, c.alt),
            ConvAlgo::Fft => fft::backward_data(b),
            ConvAlgo::Winograd => winograd::backward_data(b),
        }
    };
    tune::run(p, TunedPass::BackwardData, asked, run).map(|_| ())
}

/// grad_weight (and grad_bias when given) of conv2d. Overwrites both.
pub fn conv2d_backward_weight(
    p: &Conv2dParams,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
    algo: ConvAlgo,
) -> Result<()> {
    conv2d_backward_weight_choice(p, input, grad_out, grad_weight, grad_bias, algo.into())
}

/// [`conv2d_backward_weight`] on one [`Choice`] (for tests of im2col's alternative paths).
#[doc(hidden)]
pub fn conv2d_backward_weight_choice(
    p: &Conv2dParams,
    input: &[f32],
    grad_out: &[f32],
    grad_weight: &mut [f32],
    grad_bias: Option<&mut [f32]>,
    asked: Choice,
) -> Result<()> {
    let out_hw = p.validate()?;
    check_len("input", input.len(), p.input_len())?;
    check_len("gradOutput", grad_out.len(), p.output_len(out_hw))?;
    check_len("gradWeight", grad_weight.len(), p.weight_len())?;
    if let Some(gb) = &grad_bias {
        check_len("gradBias", gb.len(), p.out_channels)?;
    }
    let mut grad_bias = grad_bias;
    let run = |c: Choice| {
        let grads = (&mut *grad_weight, grad_bias.as_deref_mut());
        let b = BackwardWeight::new(p, out_hw, input, grad_out, grads);
        match c.algo {
            ConvAlgo::Direct | ConvAlgo::Auto => direct::backward_weight(b),
            ConvAlgo::Im2col => im2col::backward_weight_with(b, c.alt),
            ConvAlgo::Fft => fft::backward_weight(b),
            ConvAlgo::Winograd => winograd::backward_weight(b),
        }
    };
    tune::run(p, TunedPass::BackwardWeight, asked, run).map(|_| ())
}

/// The input gradient of a stride-1 conv as a forward conv: `grad_input = conv(grad_out, w')`
/// with the weights rotated 180 degrees and in/out channels swapped per group
/// ([`rotate_for_data`]), padded by `dilation * (k - 1) - pad` per side. `None` when the stride
/// is not 1 or a pad exceeds `dilation * (k - 1)` (the gradient would need negative padding).
pub(crate) fn data_as_forward(p: &Conv2dParams, (oh, ow): (usize, usize)) -> Option<Conv2dParams> {
    if p.stride_h != 1 || p.stride_w != 1 {
        return None;
    }
    let (reach_h, reach_w) = (
        p.dilation_h * (p.kernel_h - 1),
        p.dilation_w * (p.kernel_w - 1),
    );
    let q = Conv2dParams {
        in_channels: p.out_channels,
        in_h: oh,
        in_w: ow,
        out_channels: p.in_channels,
        pad_top: reach_h.checked_sub(p.pad_top)?,
        pad_bottom: reach_h.checked_sub(p.pad_bottom)?,
        pad_left: reach_w.checked_sub(p.pad_left)?,
        pad_right: reach_w.checked_sub(p.pad_right)?,
        ..*p
    };
    (q.validate() == Ok((p.in_h, p.in_w))).then_some(q)
}

/// The weights of [`data_as_forward`]'s conv, `(C_in, C_out / groups, kH, kW)`:
/// `w'[gi * cig + i][o] = rot180(w[gi * cog + o][i])`.
pub(crate) fn rotate_for_data(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let (cig, cog) = (p.in_per_group(), p.out_per_group());
    let taps = p.kernel_h * p.kernel_w;
    let mut rotated = scratch::zeroed::<f32>(weight.len());
    rotated
        .par_chunks_mut(cog * taps)
        .enumerate()
        .for_each(|(ic, dst)| {
            let (gi, i) = (ic / cig, ic % cig);
            for (o, d) in dst.chunks_exact_mut(taps).enumerate() {
                let s = &weight[((gi * cog + o) * cig + i) * taps..][..taps];
                for (k, dv) in d.iter_mut().enumerate() {
                    *dv = s[taps - 1 - k];
                }
            }
        });
    rotated
}

/// First and one-past-last output position `o` along an axis whose input position
/// `o * stride + off - pad` is inside `0..in_len` (`off` is the tap's offset, kernel index times
/// dilation): the taps that read real input rather than padding.
#[inline]
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    off: usize,
    pad: usize,
) -> (usize, usize) {
    // ox*stride + off >= pad  ->  ox >= ceil((pad - off) / stride)
    let lo = if pad > off {
        (pad - off).div_ceil(stride)
    } else {
        0
    };
    // ox*stride + off - pad < in_len  ->  ox < ceil((in_len + pad - off) / stride)
    let hi = if in_len + pad > off {
        (in_len + pad - off).div_ceil(stride)
    } else {
        0
    };
    (lo.min(out_len), hi.min(out_len).max(lo.min(out_len)))
}
