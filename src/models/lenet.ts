// LeNet-5 (LeCun et al. 1998) in its common modern form for 28x28 MNIST digits. torchvision has
// no LeNet, so there is no reference module tree; it follows the same naming scheme as AlexNet/VGG
// (`features.N`, `classifier.N`). Departures from the 1998 paper, as in most current code: ReLU
// instead of scaled tanh, max instead of trainable average ("subsampling") pooling, full C3
// connectivity instead of the paper's partial table, a plain linear output instead of RBF units,
// and padding 2 on the first conv so a 28x28 image plays the role of the paper's 32x32 input.
import { Conv2d } from '../nn/conv2d.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

export interface LeNet5Options {
  /** Output classes (default 10). */
  numClasses?: number;
  /** Input channels (default 1, grayscale). */
  inChannels?: number;
}

/**
 * LeNet-5. Input [N, inChannels, 28, 28] -> logits [N, numClasses].
 *
 *   features:   0 conv 5x5 (in->6, padding 2) -> [N, 6, 28, 28], 1 ReLU, 2 max pool 2 -> 14x14,
 *               3 conv 5x5 (6->16) -> [N, 16, 10, 10], 4 ReLU, 5 max pool 2 -> [N, 16, 5, 5]
 *   classifier: 0 linear 400->120, 1 ReLU, 2 linear 120->84, 3 ReLU, 4 linear 84->numClasses
 *
 * 61,706 parameters at 10 classes, PyTorch's default layer initialisation.
 */
export class LeNet5 extends Module {
  readonly features: Sequential;
  readonly classifier: Sequential;
  readonly inChannels: number;

  constructor(opts: LeNet5Options = {}) {
    super();
    const numClasses = opts.numClasses ?? 10;
    this.inChannels = opts.inChannels ?? 1;
    this.features = this.addModule(
      'features',
      new Sequential(
        new Conv2d(this.inChannels, 6, 5, { padding: 2 }),
        new ReLU(),
        new MaxPool2d(2),
        new Conv2d(6, 16, 5),
        new ReLU(),
        new MaxPool2d(2),
      ),
    );
    this.classifier = this.addModule(
      'classifier',
      new Sequential(
        new Linear(16 * 5 * 5, 120),
        new ReLU(),
        new Linear(120, 84),
        new ReLU(),
        new Linear(84, numClasses),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'LeNet5', x, this.inChannels, 'features.0');
    // The classifier is fixed to 16x5x5 features; 28..31 pixels all pool down to 5.
    const ok = (s: number) => Math.floor((Math.floor(s / 2) - 4) / 2) === 5;
    if (!ok(x.shape[2]) || !ok(x.shape[3])) {
      throw new Error(`LeNet5: expected a 28x28 input [N, ${this.inChannels}, 28, 28], got [${x.shape.join(', ')}]`);
    }
    return this.classifier.call(flatten(this.features.call(x), 1));
  }
}

/** LeNet-5 for MNIST-sized input (see LeNet5). */
export const lenet5 = (opts: LeNet5Options = {}): LeNet5 => new LeNet5(opts);
