// Conv2d layer, as torch.nn.Conv2d.
import { conv2dWith, type ConvAlgo } from '../ops/conv.js';
import { convGeometry, type ConvGeometry, named, pair, type Pair, type Padding } from '../ops/geometry.js';
import { type Tensor, zeros } from '../tensor.js';
import { defaultLayerInit } from './init.js';
import { Module } from './module.js';

export interface Conv2dLayerOptions {
  /** Window step (default 1). */
  stride?: Pair;
  /** Zero padding per side: a number, [h, w], [top, bottom, left, right] (default 0). */
  padding?: Padding;
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
  /** Channel groups (default 1; groups = inChannels is depthwise). */
  groups?: number;
  /** Learn a per-channel bias (default true). */
  bias?: boolean;
  /** Convolution algorithm (default 'auto'). */
  algo?: ConvAlgo;
}

/**
 * 2-D convolution. Input [N, inChannels, H, W] -> output [N, outChannels, H_out, W_out] with
 * H_out = floor((H + padTop + padBottom - dilation*(k-1) - 1) / stride) + 1.
 * Parameters: `weight` [outChannels, inChannels/groups, kH, kW], `bias` [outChannels].
 * Initialised as PyTorch does (Kaiming uniform, a = sqrt(5)). Options are checked when the layer
 * is built: `new Conv2d(3, 8, 3, { padding: -1 })` throws there, not at the first forward.
 */
export class Conv2d extends Module {
  readonly weight: Tensor;
  bias: Tensor | null;
  /** stride, padding (four sides), dilation and groups, normalised from `opts`. */
  readonly geometry: ConvGeometry;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    kernelSize: Pair,
    readonly opts: Conv2dLayerOptions = {},
  ) {
    super();
    this.geometry = named('Conv2d', () => convGeometry(opts));
    const { groups } = this.geometry;
    for (const [name, v] of [
      ['inChannels', inChannels],
      ['outChannels', outChannels],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`Conv2d: ${name} must be a positive integer, got ${v}`);
    }
    if (inChannels % groups || outChannels % groups) {
      throw new Error(
        `Conv2d: groups (${groups}) must divide inChannels (${inChannels}) and outChannels (${outChannels})`,
      );
    }
    const [kh, kw] = pair('Conv2d: kernelSize', kernelSize, 1);
    this.weight = this.addParameter('weight', zeros([outChannels, inChannels / groups, kh, kw]))!;
    this.bias = this.addParameter('bias', opts.bias === false ? null : zeros([outChannels]));
    defaultLayerInit(this.weight, this.bias);
  }

  /**
   * Gives the layer a bias [outChannels] (or removes it with null), registered as its parameter
   * 'bias'; fuseConvBn gives a bias-free conv the folded batch norm's shift this way.
   */
  setBias(bias: Tensor | null): void {
    if (bias && (bias.ndim !== 1 || bias.shape[0] !== this.outChannels)) {
      throw new Error(`Conv2d: bias: expected shape [${this.outChannels}], got [${bias.shape.join(', ')}]`);
    }
    this.bias = this.addParameter('bias', bias);
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.inChannels) {
      throw new Error(`Conv2d: expected input [N, ${this.inChannels}, H, W], got [${x.shape.join(', ')}]`);
    }
    return conv2dWith(x, this.weight, this.bias, this.geometry, this.opts.algo);
  }
}
