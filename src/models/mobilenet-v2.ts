// MobileNetV2 (Sandler et al. 2018) as torchvision 0.14 builds it
// (torchvision/models/mobilenetv2.py): inverted residual blocks (1x1 expand, 3x3 depthwise,
// 1x1 linear projection, a skip when the shape allows), ReLU6 activations. Same module tree and
// state-dict keys (`features.1.conv.0.0.weight`, `features.2.conv.3.running_var`,
// `classifier.1.weight`), same initialisation and forward.
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { Module } from '../nn/module.js';
import { Sequential } from '../nn/sequential.js';
import { adaptiveAvgPool2d } from '../ops/pool.js';
import { add, flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';
import { convNormActivation, initMobileWeights, makeDivisible } from './mobile-blocks.js';

/** MobileNetV2's block: [1x1 expand ->] 3x3 depthwise -> 1x1 project -> BN, plus x when shapes allow. */
export class InvertedResidual extends Module {
  readonly conv: Sequential;
  readonly useResConnect: boolean;

  constructor(inp: number, oup: number, stride: number, expandRatio: number) {
    super();
    if (stride !== 1 && stride !== 2) throw new Error(`InvertedResidual: stride should be 1 or 2, got ${stride}`);
    const hidden = Math.round(inp * expandRatio);
    this.useResConnect = stride === 1 && inp === oup;
    const layers: Module[] = [];
    if (expandRatio !== 1) layers.push(convNormActivation(inp, hidden, { kernelSize: 1 }));
    layers.push(
      convNormActivation(hidden, hidden, { stride, groups: hidden }),
      new Conv2d(hidden, oup, 1, { bias: false }),
      new BatchNorm2d(oup),
    );
    this.conv = this.addModule('conv', new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.conv.call(x);
    return this.useResConnect ? add(x, y) : y;
  }
}

export interface MobileNetV2Options {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Channel multiplier (default 1). */
  widthMult?: number;
  /** Channels are rounded to multiples of this (default 8). */
  roundNearest?: number;
  /** Dropout probability before the classifier (default 0.2). */
  dropout?: number;
}

/** [expansion t, channels c, repeats n, first stride s] per stage, as in the paper's Table 2. */
const SETTINGS = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/**
 * MobileNetV2. Input [N, 3, H, W] (224x224 for ImageNet) -> logits [N, numClasses].
 * Children: features, classifier. 3,504,872 parameters at 1000 classes.
 */
export class MobileNetV2 extends Module {
  readonly features: Sequential;
  readonly classifier: Sequential;
  readonly lastChannel: number;

  constructor(opts: MobileNetV2Options = {}) {
    super();
    const width = opts.widthMult ?? 1;
    const round = opts.roundNearest ?? 8;
    let input = makeDivisible(32 * width, round);
    this.lastChannel = makeDivisible(1280 * Math.max(1, width), round);
    const layers: Module[] = [convNormActivation(3, input, { stride: 2 })];
    for (const [t, c, n, s] of SETTINGS) {
      const out = makeDivisible(c * width, round);
      for (let i = 0; i < n; i++) {
        layers.push(new InvertedResidual(input, out, i === 0 ? s : 1, t));
        input = out;
      }
    }
    layers.push(convNormActivation(input, this.lastChannel, { kernelSize: 1 }));
    this.features = this.addModule('features', new Sequential(...layers));
    this.classifier = this.addModule(
      'classifier',
      new Sequential(new Dropout(opts.dropout ?? 0.2), new Linear(this.lastChannel, opts.numClasses ?? 1000)),
    );
    initMobileWeights(this, (w) => init.normal_(w, 0, 0.01));
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'MobileNetV2', x, 3, 'features.0.0');
    return this.classifier.call(flatten(adaptiveAvgPool2d(this.features.call(x), 1), 1));
  }
}

/** MobileNetV2 as torchvision.models.mobilenet_v2 (no pretrained weights). */
export const mobilenetV2 = (opts: MobileNetV2Options = {}): MobileNetV2 => new MobileNetV2(opts);
