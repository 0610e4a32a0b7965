// SqueezeNet 1.0 and 1.1 (Iandola et al. 2016) as torchvision 0.14 builds them
// (torchvision/models/squeezenet.py): Fire modules (a 1x1 squeeze, then 1x1 and 3x3 expands
// concatenated), a 1x1 conv classifier averaged over the map. Same module tree and state-dict
// keys (`features.3.squeeze.weight`, `classifier.1.bias`), same initialisation and forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { cat, flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

/** squeeze (1x1) -> ReLU -> [expand1x1 -> ReLU, expand3x3 -> ReLU] concatenated on channels. */
export class Fire extends Module {
  readonly squeeze: Conv2d;
  readonly squeezeActivation: ReLU;
  readonly expand1x1: Conv2d;
  readonly expand1x1Activation: ReLU;
  readonly expand3x3: Conv2d;
  readonly expand3x3Activation: ReLU;

  constructor(inplanes: number, squeezePlanes: number, expand1x1Planes: number, expand3x3Planes: number) {
    super();
    this.squeeze = this.addModule('squeeze', new Conv2d(inplanes, squeezePlanes, 1));
    this.squeezeActivation = this.addModule('squeeze_activation', new ReLU());
    this.expand1x1 = this.addModule('expand1x1', new Conv2d(squeezePlanes, expand1x1Planes, 1));
    this.expand1x1Activation = this.addModule('expand1x1_activation', new ReLU());
    this.expand3x3 = this.addModule('expand3x3', new Conv2d(squeezePlanes, expand3x3Planes, 3, { padding: 1 }));
    this.expand3x3Activation = this.addModule('expand3x3_activation', new ReLU());
  }

  forward(x: Tensor): Tensor {
    const s = this.squeezeActivation.call(this.squeeze.call(x));
    return cat(
      [this.expand1x1Activation.call(this.expand1x1.call(s)), this.expand3x3Activation.call(this.expand3x3.call(s))],
      1,
    );
  }
}

export interface SqueezeNetOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Dropout probability before the classifier (default 0.5). */
  dropout?: number;
}

/**
 * SqueezeNet. Input [N, 3, H, W] (224x224 for ImageNet) -> logits [N, numClasses].
 * Children: features, classifier. Version '1_0': 1,248,424 parameters at 1000 classes; '1_1'
 * (2.4x less computation, same accuracy): 1,235,496.
 */
export class SqueezeNet extends Module {
  readonly features: Sequential;
  readonly classifier: Sequential;

  constructor(
    readonly version: '1_0' | '1_1' = '1_0',
    opts: SqueezeNetOptions = {},
  ) {
    super();
    const numClasses = opts.numClasses ?? 1000;
    const pool = () => new MaxPool2d(3, { stride: 2, ceilMode: true });
    this.features = this.addModule(
      'features',
      version === '1_0'
        ? new Sequential(
            new Conv2d(3, 96, 7, { stride: 2 }),
            new ReLU(),
            pool(),
            new Fire(96, 16, 64, 64),
            new Fire(128, 16, 64, 64),
            new Fire(128, 32, 128, 128),
            pool(),
            new Fire(256, 32, 128, 128),
            new Fire(256, 48, 192, 192),
            new Fire(384, 48, 192, 192),
            new Fire(384, 64, 256, 256),
            pool(),
            new Fire(512, 64, 256, 256),
          )
        : new Sequential(
            new Conv2d(3, 64, 3, { stride: 2 }),
            new ReLU(),
            pool(),
            new Fire(64, 16, 64, 64),
            new Fire(128, 16, 64, 64),
            pool(),
            new Fire(128, 32, 128, 128),
            new Fire(256, 32, 128, 128),
            pool(),
            new Fire(256, 48, 192, 192),
            new Fire(384, 48, 192, 192),
            new Fire(384, 64, 256, 256),
            new Fire(512, 64, 256, 256),
          ),
    );
    const finalConv = new Conv2d(512, numClasses, 1);
    this.classifier = this.addModule(
      'classifier',
      new Sequential(new Dropout(opts.dropout ?? 0.5), finalConv, new ReLU(), new AdaptiveAvgPool2d(1)),
    );
    // torchvision: the final conv normal(0, 0.01), every other conv kaiming_uniform_, zero biases.
    for (const [, m] of this.namedModules()) {
      if (!(m instanceof Conv2d)) continue;
      if (m === finalConv) init.normal_(m.weight, 0, 0.01);
      else init.kaimingUniform_(m.weight);
      if (m.bias) init.constant_(m.bias, 0);
    }
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'SqueezeNet', x, 3, 'features.0');
    return flatten(this.classifier.call(this.features.call(x)), 1);
  }
}

/** SqueezeNet 1.0 as torchvision.models.squeezenet1_0 (no pretrained weights). */
export const squeezenet1_0 = (opts: SqueezeNetOptions = {}): SqueezeNet => new SqueezeNet('1_0', opts);
/** SqueezeNet 1.1 as torchvision.models.squeezenet1_1 (no pretrained weights). */
export const squeezenet1_1 = (opts: SqueezeNetOptions = {}): SqueezeNet => new SqueezeNet('1_1', opts);
