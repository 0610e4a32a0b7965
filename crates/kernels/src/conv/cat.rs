//! A 1x1 conv whose input is a channel concatenation that is never made: DenseNet's
//! `conv1(relu(norm1(cat(features))))` in inference, where every dense layer and transition
//! otherwise writes the concatenation of all earlier features, batch-normed and rectified
//! (`elementwise::concat_channels_affine`), only for the conv to read it back once. Here the
//! GEMM packs its B panels straight from the pieces, mapping each value on the way in
//! (`gemm::Rows`): it sums exactly the values the concatenation would have held, in the same
//! order, so the results are bit for bit those of
//! [`concat_channels_affine`](crate::elementwise::concat_channels_affine) followed by the conv.
//! That is where each item's blocks run as a GEMM of their own ([`reads_pieces`]); elsewhere
//! (the pointwise indirect tiles, items batched into one GEMM block, other algorithms) the
//! concatenation is made first. The indirect tiles were tried reading the pieces too, each task
//! mapping its block of taps into a buffer of its own: DenseNet's 14x14 layers at batch 1 ran
//! 17% slower than making the concatenation once, as tasks split over output channels mapped
//! the same values again.
use super::{check_fused, holds_weights, im2col, indirect, Conv2dParams, ConvAlgo, Epilogue};
use super::{Forward, PreparedForward, PreparedKind};
use crate::error::check_len;
pub use crate::gemm::RowAffine;
use crate::{bail, elementwise, scratch, Result};

/// A conv's input as pieces of whole channels, each `batch * channels[k] * plane` floats (NCHW),
/// concatenated along the channels and mapped per channel `c` of the whole by `affine`.
pub struct CatInput<'a> {
    pub pieces: &'a [&'a [f32]],
    pub channels: &'a [usize],
    pub affine: RowAffine<'a>,
}

impl CatInput<'_> {
    /// Fails unless the pieces make the input of `p` and the affine map has a value per channel.
    fn check(&self, p: &Conv2dParams) -> Result<()> {
        if self.pieces.len() != self.channels.len() || self.pieces.is_empty() {
            bail!(
                "conv2d: expected one channel count per input piece (at least one piece), got {} \
                 pieces and {} counts",
                self.pieces.len(),
                self.channels.len()
            );
        }
        let total: usize = self.channels.iter().sum();
        check_len("input channels", total, p.in_channels)?;
        let plane = p.in_h * p.in_w;
        for (k, (x, &c)) in self.pieces.iter().zip(self.channels).enumerate() {
            check_len(&format!("input piece {k}"), x.len(), p.batch * c * plane)?;
        }
        check_len("input scale", self.affine.scale.len(), total)?;
        check_len("input shift", self.affine.shift.len(), total)?;
        Ok(())
    }

    /// The input planes of item `n`, channel by channel of the whole.
    pub(crate) fn planes(&self, n: usize, plane: usize) -> Vec<&[f32]> {
        let mut out = Vec::with_capacity(self.channels.iter().sum());
        for (x, &c) in self.pieces.iter().zip(self.channels) {
            out.extend(x[n * c * plane..][..c * plane].chunks_exact(plane.max(1)));
        }
        out
    }

    /// The concatenation, mapped, written into `out` (the conv's whole input).
    fn make(&self, batch: usize, plane: usize, out: &mut [f32]) -> Result<()> {
        let a = self.affine;
        elementwise::concat_channels_affine(
            self.pieces,
            self.channels,
            batch,
            plane,
            a.scale,
            a.shift,
            a.relu,
            out,
        )
    }
}

/// Whether a conv of shape `p` with the weights its rules prepare reads its input in pieces: a
/// 1x1 conv (stride 1, unpadded, one group) on the GEMM, each item's blocks on their own.
pub fn reads_pieces(p: &Conv2dParams) -> bool {
    let Ok(out_hw) = p.validate() else {
        return false;
    };
    !indirect::applies(p) && im2col::reads_planes(p, out_hw)
}

/// `output = epilogue(conv(relu?(cat(pieces) * scale + shift), weight))` for a 1x1 conv, with
/// the weights prepared by `prepare_forward` (see the module's doc): bit for bit the
/// concatenation, then [`super::conv2d_forward_fused_prepared`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_cat_prepared(
    p: &Conv2dParams,
    input: &CatInput<'_>,
    weight: &[f32],
    prepared: &PreparedForward,
    epilogue: &Epilogue<'_>,
    output: &mut [f32],
    algo: ConvAlgo,
) -> Result<()> {
    let out_hw = check_fused(p, None, weight, epilogue, output)?;
    input.check(p)?;
    if holds_weights(prepared, p, algo)? && im2col::reads_planes(p, out_hw) {
        if let PreparedKind::Gemm(a) = &prepared.weights {
            let f = Forward::new(p, out_hw, &[], weight, output);
            return scratch::fallible("conv2d", || {
                im2col::forward_packed_from(f, a, epilogue, Some(input));
                Ok(())
            });
        }
    }
    scratch::fallible("conv2d", || {
        let mut x = scratch::zeroed(p.input_len());
        input.make(p.batch, p.in_h * p.in_w, &mut x)?;
        super::conv2d_forward_fused_prepared(p, &x, weight, prepared, epilogue, output, algo)
    })
}
