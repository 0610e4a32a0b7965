// Sigmoid and Tanh layers, as torch.nn.Sigmoid / torch.nn.Tanh.
import { sigmoid, tanh } from '../ops/activation.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** 1 / (1 + e^-x), any shape. */
export class Sigmoid extends Module {
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

/** tanh(x), any shape. */
export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}
