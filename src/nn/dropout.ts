// Dropout layer, as torch.nn.Dropout.
import { dropout } from '../ops/elementwise.js';
import { globalRng, type Rng } from '../random.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** In training, zeroes elements with probability p (default 0.5) and scales the rest by 1/(1-p). */
export class Dropout extends Module {
  constructor(
    readonly p = 0.5,
    readonly rng: Rng = globalRng,
  ) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`Dropout: p must be in [0, 1), got ${p}`);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, this.rng);
  }
}
