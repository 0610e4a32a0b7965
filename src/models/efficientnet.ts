// EfficientNet-B0 (Tan and Le 2019) as torchvision 0.14 builds it
// (torchvision/models/efficientnet.py): MBConv blocks (1x1 expand, depthwise, squeeze-and-
// excitation with SiLU and a sigmoid gate, 1x1 projection) with stochastic depth on the
// residual, SiLU activations. Same module tree and state-dict keys
// (`features.1.0.block.1.fc1.weight`, `classifier.1.bias`), same initialisation and forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { SiLU } from '../nn/mobile-activations.js';
import { Module } from '../nn/module.js';
import { Sequential } from '../nn/sequential.js';
import { Sigmoid } from '../nn/sigmoid.js';
import { add, flatten } from '../ops/elementwise.js';
import { globalRng, type Rng } from '../random.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';
import { convNormActivation, initMobileWeights, makeDivisible } from './mobile-blocks.js';
import { SqueezeExcitation } from './mobilenet-v3.js';
import { stochasticDepth } from './stochastic-depth.js';

/** One MBConv block's settings (channels already scaled by the width multiplier). */
export interface MBConvConfig {
  expandRatio: number;
  kernel: number;
  stride: number;
  input: number;
  out: number;
}

/** [expand ->] depthwise -> SE -> project, plus stochasticDepth(.) + x when shapes allow. */
export class MBConv extends Module {
  readonly block: Sequential;
  readonly useResConnect: boolean;
  /** Probability that the block's branch is dropped in training (torchvision's StochasticDepth, 'row'). */
  readonly stochasticDepthProb: number;
  private readonly rng: Rng;

  constructor(c: MBConvConfig, stochasticDepthProb: number, rng: Rng = globalRng) {
    super();
    this.useResConnect = c.stride === 1 && c.input === c.out;
    this.stochasticDepthProb = stochasticDepthProb;
    this.rng = rng;
    const act = () => new SiLU();
    const expanded = makeDivisible(c.input * c.expandRatio, 8);
    const layers: Module[] = [];
    if (expanded !== c.input) layers.push(convNormActivation(c.input, expanded, { kernelSize: 1, activation: act }));
    layers.push(
      convNormActivation(expanded, expanded, {
        kernelSize: c.kernel,
        stride: c.stride,
        groups: expanded,
        activation: act,
      }),
      new SqueezeExcitation(expanded, Math.max(1, Math.floor(c.input / 4)), new SiLU(), new Sigmoid()),
      convNormActivation(expanded, c.out, { kernelSize: 1, activation: null }),
    );
    this.block = this.addModule('block', new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.block.call(x);
    if (!this.useResConnect) return y;
    return add(stochasticDepth(y, 1 - this.stochasticDepthProb, this.training, this.rng), x);
  }
}

export interface EfficientNetOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Dropout probability before the classifier (default 0.2 for B0). */
  dropout?: number;
  /** Stochastic depth of the last block; earlier blocks get proportionally less (default 0.2). */
  stochasticDepthProb?: number;
}

/** [expand ratio, kernel, stride, in, out, layers] per stage of B0 (width and depth 1). */
const B0 = [
  [1, 3, 1, 32, 16, 1],
  [6, 3, 2, 16, 24, 2],
  [6, 5, 2, 24, 40, 2],
  [6, 3, 2, 40, 80, 3],
  [6, 5, 1, 80, 112, 3],
  [6, 5, 2, 112, 192, 4],
  [6, 3, 1, 192, 320, 1],
];

/**
 * EfficientNet-B0. Input [N, 3, H, W] (224x224 for ImageNet) -> logits [N, numClasses].
 * Children: features, avgpool, classifier. 5,288,548 parameters at 1000 classes.
 */
export class EfficientNet extends Module {
  readonly features: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly classifier: Sequential;

  constructor(opts: EfficientNetOptions = {}) {
    super();
    const sd = opts.stochasticDepthProb ?? 0.2;
    const total = B0.reduce((s, r) => s + r[5], 0);
    const act = () => new SiLU();
    const layers: Module[] = [convNormActivation(3, B0[0][3], { stride: 2, activation: act })];
    let id = 0;
    for (const [expandRatio, kernel, stride, input, out, n] of B0) {
      const stage: Module[] = [];
      for (let i = 0; i < n; i++) {
        const c = { expandRatio, kernel, stride: i === 0 ? stride : 1, input: i === 0 ? input : out, out };
        stage.push(new MBConv(c, (sd * id) / total));
        id++;
      }
      layers.push(new Sequential(...stage));
    }
    const lastIn = B0[B0.length - 1][4];
    layers.push(convNormActivation(lastIn, 4 * lastIn, { kernelSize: 1, activation: act }));
    this.features = this.addModule('features', new Sequential(...layers));
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.classifier = this.addModule(
      'classifier',
      new Sequential(new Dropout(opts.dropout ?? 0.2), new Linear(4 * lastIn, opts.numClasses ?? 1000)),
    );
    // EfficientNet's linears: uniform(-1/sqrt(out), 1/sqrt(out)).
    initMobileWeights(this, (w) => init.uniform_(w, -1 / Math.sqrt(w.shape[0]), 1 / Math.sqrt(w.shape[0])));
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'EfficientNet', x, 3, 'features.0.0');
    return this.classifier.call(flatten(this.avgpool.call(this.features.call(x)), 1));
  }
}

/** EfficientNet-B0 as torchvision.models.efficientnet_b0 (no pretrained weights). */
export const efficientnetB0 = (opts: EfficientNetOptions = {}): EfficientNet => new EfficientNet(opts);
