// AlexNet (Krizhevsky et al. 2012; the single-GPU "one weird trick" variant, arXiv:1404.5997) as
// torchvision 0.14 builds it (torchvision/models/alexnet.py): same module tree and state-dict keys
// (`features.0.weight` ... `classifier.6.bias`), PyTorch's default layer initialisation, same
// eval-mode forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

export interface AlexNetOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Dropout probability in the classifier (default 0.5). */
  dropout?: number;
}

/**
 * AlexNet. Input [N, 3, H, W] with H, W >= 63 (224x224 for ImageNet) -> logits [N, numClasses].
 * The adaptive pool brings the feature map to 6x6, so the classifier always takes 256*6*6
 * features. Children: features, avgpool, classifier. 61,100,840 parameters at 1000 classes.
 */
export class AlexNet extends Module {
  readonly features: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly classifier: Sequential;

  constructor(opts: AlexNetOptions = {}) {
    super();
    const numClasses = opts.numClasses ?? 1000;
    const p = opts.dropout ?? 0.5;
    this.features = this.addModule(
      'features',
      new Sequential(
        new Conv2d(3, 64, 11, { stride: 4, padding: 2 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
        new Conv2d(64, 192, 5, { padding: 2 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
        new Conv2d(192, 384, 3, { padding: 1 }),
        new ReLU(),
        new Conv2d(384, 256, 3, { padding: 1 }),
        new ReLU(),
        new Conv2d(256, 256, 3, { padding: 1 }),
        new ReLU(),
        new MaxPool2d(3, { stride: 2 }),
      ),
    );
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(6));
    this.classifier = this.addModule(
      'classifier',
      new Sequential(
        new Dropout(p),
        new Linear(256 * 6 * 6, 4096),
        new ReLU(),
        new Dropout(p),
        new Linear(4096, 4096),
        new ReLU(),
        new Linear(4096, numClasses),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'AlexNet', x, 3, 'features.0');
    return this.classifier.call(flatten(this.avgpool.call(this.features.call(x)), 1));
  }
}

/** AlexNet as torchvision.models.alexnet (no pretrained weights). */
export const alexnet = (opts: AlexNetOptions = {}): AlexNet => new AlexNet(opts);
