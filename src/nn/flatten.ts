// Flatten layer, as torch.nn.Flatten.
import { flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** [N, C, H, W] -> [N, C*H*W] (dimensions from startDim on are merged; default 1). */
export class Flatten extends Module {
  constructor(readonly startDim = 1) {
    super();
  }

  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim);
  }
}
