// MaxPool2d layer, as torch.nn.MaxPool2d.
import { named, type Pair, type PoolGeometry, poolGeometry } from '../ops/geometry.js';
import { maxPool2dWith, type Pool2dOptions } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/**
 * Max over sliding windows. Input [N, C, H, W] -> [N, C, H_out, W_out] with
 * H_out = floor_or_ceil((H + 2*padding - dilation*(k-1) - 1) / stride) + 1.
 * Options: stride (default kernelSize), padding (0), dilation (1), ceilMode (false).
 */
export class MaxPool2d extends Module {
  /** kernel, stride, padding, dilation and ceilMode, normalised (and checked) when built. */
  readonly geometry: PoolGeometry;

  constructor(
    readonly kernelSize: Pair,
    readonly opts: Omit<Pool2dOptions, 'countIncludePad' | 'divisorOverride'> = {},
  ) {
    super();
    this.geometry = named('MaxPool2d', () => poolGeometry(kernelSize, opts));
  }

  forward(x: Tensor): Tensor {
    return maxPool2dWith(x, this.geometry);
  }
}
