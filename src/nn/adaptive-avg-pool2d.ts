// AdaptiveAvgPool2d layer, as torch.nn.AdaptiveAvgPool2d.
import type { Pair } from '../ops/conv.js';
import { adaptiveAvgPool2d } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** Averages [N, C, H, W] into a fixed [N, C, oh, ow] whatever H and W are (1 = global pooling). */
export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: Pair) {
    super();
  }

  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }
}
