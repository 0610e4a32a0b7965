// AvgPool2d layer, as torch.nn.AvgPool2d.
import { named, type Pair, type PoolGeometry, poolGeometry } from '../ops/geometry.js';
import { avgPool2dWith, type Pool2dOptions } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/**
 * Mean over sliding windows. Input [N, C, H, W] -> [N, C, H_out, W_out].
 * Options: stride (default kernelSize), padding (0), ceilMode (false), countIncludePad (true),
 * divisorOverride (none).
 */
export class AvgPool2d extends Module {
  /** kernel, stride, padding and ceilMode, normalised (and checked) when built. */
  readonly geometry: PoolGeometry;

  constructor(
    readonly kernelSize: Pair,
    readonly opts: Omit<Pool2dOptions, 'dilation'> = {},
  ) {
    super();
    this.geometry = named('AvgPool2d', () => poolGeometry(kernelSize, opts));
  }

  forward(x: Tensor): Tensor {
    return avgPool2dWith(x, this.geometry, this.opts);
  }
}
