// ReLU layer, as torch.nn.ReLU.
import { relu } from '../ops/activation.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** max(x, 0), any shape. */
export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}
