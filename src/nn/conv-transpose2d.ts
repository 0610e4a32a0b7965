// ConvTranspose2d layer, as torch.nn.ConvTranspose2d.
import { convTranspose2d } from '../ops/conv.js';
import { pair, type Pair } from '../ops/geometry.js';
import { type Tensor, zeros } from '../tensor.js';
import { defaultLayerInit } from './init.js';
import { Module } from './module.js';

export interface ConvTranspose2dLayerOptions {
  stride?: Pair;
  padding?: Pair;
  outputPadding?: Pair;
  dilation?: Pair;
  groups?: number;
  /** default true */
  bias?: boolean;
}

/**
 * Transposed 2-D convolution. Input [N, inChannels, H, W] -> [N, outChannels, H_out, W_out] with
 * H_out = (H - 1)*stride - 2*padding + dilation*(k - 1) + outputPadding + 1.
 * Parameters: `weight` [inChannels, outChannels/groups, kH, kW], `bias` [outChannels].
 */
export class ConvTranspose2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: Pair,
    readonly opts: ConvTranspose2dLayerOptions = {},
  ) {
    super();
    // Checked here so a bad option fails when the layer is built, not at its first forward.
    pair('ConvTranspose2d: stride', opts.stride, 1);
    pair('ConvTranspose2d: padding', opts.padding, 0, 0);
    pair('ConvTranspose2d: outputPadding', opts.outputPadding, 0, 0);
    pair('ConvTranspose2d: dilation', opts.dilation, 1);
    const groups = opts.groups ?? 1;
    if (!Number.isInteger(groups) || groups < 1 || inChannels % groups || outChannels % groups) {
      throw new Error(
        `ConvTranspose2d: groups (${groups}) must divide inChannels (${inChannels}) and outChannels (${outChannels})`,
      );
    }
    const [kh, kw] = pair('ConvTranspose2d: kernelSize', kernelSize, 1);
    this.weight = this.addParameter('weight', zeros([inChannels, outChannels / groups, kh, kw]))!;
    this.bias = this.addParameter('bias', opts.bias === false ? null : zeros([outChannels]));
    defaultLayerInit(this.weight, this.bias);
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.inChannels) {
      throw new Error(`ConvTranspose2d: expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    }
    return convTranspose2d(x, this.weight, this.bias, this.opts);
  }
}
