// AvgPool2d layer, as torch.nn.AvgPool2d.
import type { Pair } from '../ops/conv.js';
import { avgPool2d, type Pool2dOptions } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/**
 * Mean over sliding windows. Input [N, C, H, W] -> [N, C, H_out, W_out].
 * Options: stride (default kernelSize), padding (0), ceilMode (false), countIncludePad (true),
 * divisorOverride (none).
 */
export class AvgPool2d extends Module {
  constructor(readonly kernelSize: Pair, readonly opts: Omit<Pool2dOptions, 'dilation'> = {}) {
    super();
  }

  forward(x: Tensor): Tensor {
    return avgPool2d(x, this.kernelSize, this.opts);
  }
}
