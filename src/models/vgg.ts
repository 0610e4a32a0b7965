// VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
// Recognition"), configurations A/B/D/E (VGG-11/13/16/19) with and without batch norm, as
// torchvision 0.14 builds them (torchvision/models/vgg.py): same module tree and state-dict keys
// (`features.0.weight`, `features.1.running_mean` with BN, `classifier.6.bias`), same
// initialisation, same eval-mode forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { flatten } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

/** Conv widths per stage, 'M' = 2x2 max pool (torchvision's cfgs). */
export const vggConfigs = {
  A: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  B: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  D: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  E: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
} as const satisfies Record<string, readonly (number | 'M')[]>;

export type VggConfig = keyof typeof vggConfigs;

/**
 * The `features` stack: 3x3 convs (padding 1) [+ BatchNorm2d] + ReLU, and 2x2 max pools, numbered
 * '0', '1', ... exactly as torchvision's make_layers.
 */
export function makeVggLayers(cfg: readonly (number | 'M')[], batchNorm = false): Sequential {
  const layers = new Sequential();
  let inChannels = 3;
  for (const v of cfg) {
    if (v === 'M') {
      layers.append(new MaxPool2d(2, { stride: 2 }));
      continue;
    }
    layers.append(new Conv2d(inChannels, v, 3, { padding: 1 }));
    if (batchNorm) layers.append(new BatchNorm2d(v));
    layers.append(new ReLU());
    inChannels = v;
  }
  return layers;
}

export interface VggOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** torchvision's init: convs kaiming_normal_(fan_out, relu), linears normal(0, 0.01), biases 0 (default true). */
  initWeights?: boolean;
  /** Dropout probability in the classifier (default 0.5). */
  dropout?: number;
}

/**
 * VGG. Input [N, 3, H, W] with H, W >= 32 (five 2x2 pools; 224x224 for ImageNet) -> logits
 * [N, numClasses]. The adaptive pool brings any feature map to 7x7, so the classifier always takes
 * 512*7*7 features. Children: features, avgpool, classifier.
 */
export class VGG extends Module {
  readonly features: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly classifier: Sequential;

  constructor(features: Sequential, opts: VggOptions = {}) {
    super();
    const numClasses = opts.numClasses ?? 1000;
    const p = opts.dropout ?? 0.5;
    this.features = this.addModule('features', features);
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(7));
    this.classifier = this.addModule(
      'classifier',
      new Sequential(
        new Linear(512 * 7 * 7, 4096),
        new ReLU(),
        new Dropout(p),
        new Linear(4096, 4096),
        new ReLU(),
        new Dropout(p),
        new Linear(4096, numClasses),
      ),
    );
    if (opts.initWeights ?? true) {
      for (const [, m] of this.namedModules()) {
        if (m instanceof Conv2d) {
          init.kaimingNormal_(m.weight, { mode: 'fan_out', nonlinearity: 'relu' });
          if (m.bias) init.constant_(m.bias, 0);
        } else if (m instanceof BatchNorm2d) {
          if (m.weight) init.constant_(m.weight, 1);
          if (m.bias) init.constant_(m.bias, 0);
        } else if (m instanceof Linear) {
          init.normal_(m.weight, 0, 0.01);
          if (m.bias) init.constant_(m.bias, 0);
        }
      }
    }
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'VGG', x, 3, 'features.0');
    return this.classifier.call(flatten(this.avgpool.call(this.features.call(x)), 1));
  }
}

const vgg =
  (cfg: VggConfig, bn: boolean) =>
  (opts: VggOptions = {}): VGG =>
    new VGG(makeVggLayers(vggConfigs[cfg], bn), opts);

/** VGG-11 (config A), 132,863,336 parameters at 1000 classes. */
export const vgg11 = vgg('A', false);
/** VGG-11 with batch norm, 132,868,840 parameters. */
export const vgg11Bn = vgg('A', true);
/** VGG-13 (config B), 133,047,848 parameters. */
export const vgg13 = vgg('B', false);
/** VGG-13 with batch norm, 133,053,736 parameters. */
export const vgg13Bn = vgg('B', true);
/** VGG-16 (config D), 138,357,544 parameters. */
export const vgg16 = vgg('D', false);
/** VGG-16 with batch norm, 138,365,992 parameters. */
export const vgg16Bn = vgg('D', true);
/** VGG-19 (config E), 143,667,240 parameters. */
export const vgg19 = vgg('E', false);
/** VGG-19 with batch norm, 143,678,248 parameters. */
export const vgg19Bn = vgg('E', true);
