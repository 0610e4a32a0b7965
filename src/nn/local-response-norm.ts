// LocalResponseNorm layer, as torch.nn.LocalResponseNorm (AlexNet, original GoogLeNet).
import { localResponseNorm } from '../ops/norm.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/**
 * Normalises each activation by its neighbours across `size` channels:
 * y = x / (k + alpha/size * sum(x^2))^beta. Shape unchanged. Defaults alpha 1e-4, beta 0.75, k 1.
 */
export class LocalResponseNorm extends Module {
  constructor(
    readonly size: number,
    readonly opts: { alpha?: number; beta?: number; k?: number } = {},
  ) {
    super();
  }

  forward(x: Tensor): Tensor {
    return localResponseNorm(x, this.size, this.opts);
  }
}
