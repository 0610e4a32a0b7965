// The activations of the mobile networks, as torch.nn.ReLU6, Hardsigmoid, Hardswish and SiLU.
import { hardSigmoid, hardSwish, relu6, silu } from '../ops/activation.js';
import type { Tensor } from '../tensor.js';
import { Module } from './module.js';

/** min(max(x, 0), 6), any shape (MobileNetV2). */
export class ReLU6 extends Module {
  forward(x: Tensor): Tensor {
    return relu6(x);
  }
}

/** relu6(x + 3) / 6, any shape (MobileNetV3's squeeze-and-excitation gate). */
export class Hardsigmoid extends Module {
  forward(x: Tensor): Tensor {
    return hardSigmoid(x);
  }
}

/** x * relu6(x + 3) / 6, any shape (MobileNetV3). */
export class Hardswish extends Module {
  forward(x: Tensor): Tensor {
    return hardSwish(x);
  }
}

/** x * sigmoid(x), any shape (EfficientNet; torch.nn.SiLU). */
export class SiLU extends Module {
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}
