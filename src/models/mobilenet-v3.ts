// MobileNetV3 large and small (Howard et al. 2019) as torchvision 0.14 builds them
// (torchvision/models/mobilenetv3.py): inverted residual blocks with optional
// squeeze-and-excitation, ReLU or hard-swish per block, batch norm with eps 0.001 and momentum
// 0.01. Same module tree and state-dict keys (`features.1.block.1.fc1.weight`,
// `classifier.3.bias`), same initialisation and forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { Hardsigmoid, Hardswish } from '../nn/mobile-activations.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { add, flatten, mul } from '../ops/elementwise.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';
import { convNormActivation, initMobileWeights, makeDivisible } from './mobile-blocks.js';

/**
 * Squeeze-and-excitation (Hu et al. 2018), torchvision.ops.SqueezeExcitation: x times a
 * per-channel gate from the globally pooled map through two 1x1 convs. Children: avgpool, fc1,
 * fc2, activation, scale_activation.
 */
export class SqueezeExcitation extends Module {
  readonly avgpool: AdaptiveAvgPool2d;
  readonly fc1: Conv2d;
  readonly fc2: Conv2d;
  readonly activation: Module;
  readonly scaleActivation: Module;

  constructor(inputChannels: number, squeezeChannels: number, activation: Module, scaleActivation: Module) {
    super();
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.fc1 = this.addModule('fc1', new Conv2d(inputChannels, squeezeChannels, 1));
    this.fc2 = this.addModule('fc2', new Conv2d(squeezeChannels, inputChannels, 1));
    this.activation = this.addModule('activation', activation);
    this.scaleActivation = this.addModule('scale_activation', scaleActivation);
  }

  forward(x: Tensor): Tensor {
    const s = this.fc2.call(this.activation.call(this.fc1.call(this.avgpool.call(x))));
    return mul(x, this.scaleActivation.call(s));
  }
}

/** One block's settings, as torchvision's InvertedResidualConfig (before width scaling). */
export interface V3BlockConfig {
  input: number;
  kernel: number;
  expanded: number;
  out: number;
  se: boolean;
  /** Hard-swish ('HS') or ReLU ('RE'). */
  activation: 'HS' | 'RE';
  stride: number;
  dilation: number;
}

/** MobileNetV3's block: [1x1 expand ->] depthwise -> [SE ->] 1x1 project, plus x when shapes allow. */
export class V3InvertedResidual extends Module {
  readonly block: Sequential;
  readonly useResConnect: boolean;

  constructor(c: V3BlockConfig) {
    super();
    if (c.stride !== 1 && c.stride !== 2) throw new Error(`InvertedResidual: stride should be 1 or 2, got ${c.stride}`);
    this.useResConnect = c.stride === 1 && c.input === c.out;
    const act = () => (c.activation === 'HS' ? new Hardswish() : new ReLU());
    const norm = { eps: 0.001, momentum: 0.01 };
    const layers: Module[] = [];
    if (c.expanded !== c.input) {
      layers.push(convNormActivation(c.input, c.expanded, { kernelSize: 1, activation: act, ...norm }));
    }
    layers.push(
      convNormActivation(c.expanded, c.expanded, {
        kernelSize: c.kernel,
        stride: c.dilation > 1 ? 1 : c.stride,
        dilation: c.dilation,
        groups: c.expanded,
        activation: act,
        ...norm,
      }),
    );
    if (c.se) {
      const squeeze = makeDivisible(Math.floor(c.expanded / 4), 8);
      layers.push(new SqueezeExcitation(c.expanded, squeeze, new ReLU(), new Hardsigmoid()));
    }
    layers.push(convNormActivation(c.expanded, c.out, { kernelSize: 1, activation: null, ...norm }));
    this.block = this.addModule('block', new Sequential(...layers));
  }

  forward(x: Tensor): Tensor {
    const y = this.block.call(x);
    return this.useResConnect ? add(y, x) : y;
  }
}

export interface MobileNetV3Options {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Channel multiplier (default 1). */
  widthMult?: number;
  /** Halve the last stage's channels (torchvision's reduced_tail, default false). */
  reducedTail?: boolean;
  /** Dilate the last stage instead of striding it (default false). */
  dilated?: boolean;
  /** Dropout probability in the classifier (default 0.2). */
  dropout?: number;
}

type Row = [number, number, number, number, boolean, 'HS' | 'RE', number, number];

/** The block settings and last channel count of 'large' or 'small', as _mobilenet_v3_conf. */
function v3Config(arch: 'large' | 'small', o: MobileNetV3Options): { blocks: V3BlockConfig[]; lastChannel: number } {
  const rd = o.reducedTail ? 2 : 1;
  const dil = o.dilated ? 2 : 1;
  const width = o.widthMult ?? 1;
  const adjust = (c: number) => makeDivisible(c * width, 8);
  const rows: Row[] =
    arch === 'large'
      ? [
          [16, 3, 16, 16, false, 'RE', 1, 1],
          [16, 3, 64, 24, false, 'RE', 2, 1],
          [24, 3, 72, 24, false, 'RE', 1, 1],
          [24, 5, 72, 40, true, 'RE', 2, 1],
          [40, 5, 120, 40, true, 'RE', 1, 1],
          [40, 5, 120, 40, true, 'RE', 1, 1],
          [40, 3, 240, 80, false, 'HS', 2, 1],
          [80, 3, 200, 80, false, 'HS', 1, 1],
          [80, 3, 184, 80, false, 'HS', 1, 1],
          [80, 3, 184, 80, false, 'HS', 1, 1],
          [80, 3, 480, 112, true, 'HS', 1, 1],
          [112, 3, 672, 112, true, 'HS', 1, 1],
          [112, 5, 672, 160 / rd, true, 'HS', 2, dil],
          [160 / rd, 5, 960 / rd, 160 / rd, true, 'HS', 1, dil],
          [160 / rd, 5, 960 / rd, 160 / rd, true, 'HS', 1, dil],
        ]
      : [
          [16, 3, 16, 16, true, 'RE', 2, 1],
          [16, 3, 72, 24, false, 'RE', 2, 1],
          [24, 3, 88, 24, false, 'RE', 1, 1],
          [24, 5, 96, 40, true, 'HS', 2, 1],
          [40, 5, 240, 40, true, 'HS', 1, 1],
          [40, 5, 240, 40, true, 'HS', 1, 1],
          [40, 5, 120, 48, true, 'HS', 1, 1],
          [48, 5, 144, 48, true, 'HS', 1, 1],
          [48, 5, 288, 96 / rd, true, 'HS', 2, dil],
          [96 / rd, 5, 576 / rd, 96 / rd, true, 'HS', 1, dil],
          [96 / rd, 5, 576 / rd, 96 / rd, true, 'HS', 1, dil],
        ];
  const blocks = rows.map(([input, kernel, expanded, out, se, activation, stride, dilation]) => ({
    input: adjust(input),
    kernel,
    expanded: adjust(expanded),
    out: adjust(out),
    se,
    activation,
    stride,
    dilation,
  }));
  return { blocks, lastChannel: adjust((arch === 'large' ? 1280 : 1024) / rd) };
}

/**
 * MobileNetV3. Input [N, 3, H, W] (224x224 for ImageNet) -> logits [N, numClasses].
 * Children: features, avgpool, classifier. 5,483,032 parameters ('large') or 2,542,856
 * ('small') at 1000 classes.
 */
export class MobileNetV3 extends Module {
  readonly features: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly classifier: Sequential;

  constructor(
    readonly arch: 'large' | 'small',
    opts: MobileNetV3Options = {},
  ) {
    super();
    const { blocks, lastChannel } = v3Config(arch, opts);
    const norm = { eps: 0.001, momentum: 0.01 };
    const first = blocks[0].input;
    const lastIn = blocks[blocks.length - 1].out;
    const layers: Module[] = [
      convNormActivation(3, first, { stride: 2, activation: () => new Hardswish(), ...norm }),
      ...blocks.map((c) => new V3InvertedResidual(c)),
      convNormActivation(lastIn, 6 * lastIn, { kernelSize: 1, activation: () => new Hardswish(), ...norm }),
    ];
    this.features = this.addModule('features', new Sequential(...layers));
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.classifier = this.addModule(
      'classifier',
      new Sequential(
        new Linear(6 * lastIn, lastChannel),
        new Hardswish(),
        new Dropout(opts.dropout ?? 0.2),
        new Linear(lastChannel, opts.numClasses ?? 1000),
      ),
    );
    initMobileWeights(this, (w) => init.normal_(w, 0, 0.01));
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'MobileNetV3', x, 3, 'features.0.0');
    return this.classifier.call(flatten(this.avgpool.call(this.features.call(x)), 1));
  }
}

/** MobileNetV3 large as torchvision.models.mobilenet_v3_large (no pretrained weights). */
export const mobilenetV3Large = (opts: MobileNetV3Options = {}): MobileNetV3 => new MobileNetV3('large', opts);
/** MobileNetV3 small as torchvision.models.mobilenet_v3_small (no pretrained weights). */
export const mobilenetV3Small = (opts: MobileNetV3Options = {}): MobileNetV3 => new MobileNetV3('small', opts);
