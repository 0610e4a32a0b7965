// LeakyReLU layer, as torch.nn.LeakyReLU.
import { leakyRelu } from '../ops/activation.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** x for x > 0, negativeSlope * x otherwise (default slope 0.01), any shape. */
export class LeakyReLU extends Module {
  constructor(readonly negativeSlope = 0.01) {
    super();
  }

  forward(x: Tensor): Tensor {
    return leakyRelu(x, this.negativeSlope);
  }
}
