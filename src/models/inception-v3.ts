// Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), GoogLeNet's
// successor, as torchvision 0.14 builds it (torchvision/models/inception.py): factorised 7x7
// and 3x3 convolutions (1x7 then 7x1), grid-size reduction blocks, an auxiliary classifier, 299x299
// inputs. Same module tree and state-dict keys (`Mixed_6b.branch7x7_2.conv.weight`,
// `AuxLogits.fc.bias`), same initialisation and forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { cat, flatten } from '../ops/elementwise.js';
import { adaptiveAvgPool2d, avgPool2d, maxPool2d } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { BasicConv2d, transformImagenetInput } from './googlenet.js';
import { checkModelInput } from './model-input.js';

const pool3 = (x: Tensor) => avgPool2d(x, 3, { stride: 1, padding: 1 });

/** 1x1, 1x1 -> 5x5, 1x1 -> 3x3 -> 3x3 and pool -> 1x1 branches (Mixed_5b-d). */
export class InceptionA extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch5x5_1: BasicConv2d;
  readonly branch5x5_2: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;
  readonly branch_pool: BasicConv2d;

  constructor(inChannels: number, poolFeatures: number) {
    super();
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 64, 1));
    this.branch5x5_1 = this.addModule('branch5x5_1', new BasicConv2d(inChannels, 48, 1));
    this.branch5x5_2 = this.addModule('branch5x5_2', new BasicConv2d(48, 64, 5, { padding: 2 }));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 64, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(64, 96, 3, { padding: 1 }));
    this.branch3x3dbl_3 = this.addModule('branch3x3dbl_3', new BasicConv2d(96, 96, 3, { padding: 1 }));
    this.branch_pool = this.addModule('branch_pool', new BasicConv2d(inChannels, poolFeatures, 1));
  }

  forward(x: Tensor): Tensor {
    const b5 = this.branch5x5_2.call(this.branch5x5_1.call(x));
    const b3 = this.branch3x3dbl_3.call(this.branch3x3dbl_2.call(this.branch3x3dbl_1.call(x)));
    return cat([this.branch1x1.call(x), b5, b3, this.branch_pool.call(pool3(x))], 1);
  }
}

/** Grid reduction 35 -> 17 (Mixed_6a): strided 3x3, 1x1 -> 3x3 -> strided 3x3, max pool. */
export class InceptionB extends Module {
  readonly branch3x3: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3: BasicConv2d;

  constructor(inChannels: number) {
    super();
    this.branch3x3 = this.addModule('branch3x3', new BasicConv2d(inChannels, 384, 3, { stride: 2 }));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 64, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(64, 96, 3, { padding: 1 }));
    this.branch3x3dbl_3 = this.addModule('branch3x3dbl_3', new BasicConv2d(96, 96, 3, { stride: 2 }));
  }

  forward(x: Tensor): Tensor {
    const b3 = this.branch3x3dbl_3.call(this.branch3x3dbl_2.call(this.branch3x3dbl_1.call(x)));
    return cat([this.branch3x3.call(x), b3, maxPool2d(x, 3, { stride: 2 })], 1);
  }
}

/** Factorised 7x7 branches (1x7, 7x1) at 17x17 (Mixed_6b-e). */
export class InceptionC extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch7x7_1: BasicConv2d;
  readonly branch7x7_2: BasicConv2d;
  readonly branch7x7_3: BasicConv2d;
  readonly branch7x7dbl_1: BasicConv2d;
  readonly branch7x7dbl_2: BasicConv2d;
  readonly branch7x7dbl_3: BasicConv2d;
  readonly branch7x7dbl_4: BasicConv2d;
  readonly branch7x7dbl_5: BasicConv2d;
  readonly branch_pool: BasicConv2d;

  constructor(inChannels: number, channels7x7: number) {
    super();
    const c7 = channels7x7;
    const row = { padding: [0, 3] as [number, number] };
    const col = { padding: [3, 0] as [number, number] };
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 192, 1));
    this.branch7x7_1 = this.addModule('branch7x7_1', new BasicConv2d(inChannels, c7, 1));
    this.branch7x7_2 = this.addModule('branch7x7_2', new BasicConv2d(c7, c7, [1, 7], row));
    this.branch7x7_3 = this.addModule('branch7x7_3', new BasicConv2d(c7, 192, [7, 1], col));
    this.branch7x7dbl_1 = this.addModule('branch7x7dbl_1', new BasicConv2d(inChannels, c7, 1));
    this.branch7x7dbl_2 = this.addModule('branch7x7dbl_2', new BasicConv2d(c7, c7, [7, 1], col));
    this.branch7x7dbl_3 = this.addModule('branch7x7dbl_3', new BasicConv2d(c7, c7, [1, 7], row));
    this.branch7x7dbl_4 = this.addModule('branch7x7dbl_4', new BasicConv2d(c7, c7, [7, 1], col));
    this.branch7x7dbl_5 = this.addModule('branch7x7dbl_5', new BasicConv2d(c7, 192, [1, 7], row));
    this.branch_pool = this.addModule('branch_pool', new BasicConv2d(inChannels, 192, 1));
  }

  forward(x: Tensor): Tensor {
    const b7 = this.branch7x7_3.call(this.branch7x7_2.call(this.branch7x7_1.call(x)));
    let d = this.branch7x7dbl_1.call(x);
    for (const m of [this.branch7x7dbl_2, this.branch7x7dbl_3, this.branch7x7dbl_4, this.branch7x7dbl_5]) d = m.call(d);
    return cat([this.branch1x1.call(x), b7, d, this.branch_pool.call(pool3(x))], 1);
  }
}

/** Grid reduction 17 -> 8 (Mixed_7a). */
export class InceptionD extends Module {
  readonly branch3x3_1: BasicConv2d;
  readonly branch3x3_2: BasicConv2d;
  readonly branch7x7x3_1: BasicConv2d;
  readonly branch7x7x3_2: BasicConv2d;
  readonly branch7x7x3_3: BasicConv2d;
  readonly branch7x7x3_4: BasicConv2d;

  constructor(inChannels: number) {
    super();
    this.branch3x3_1 = this.addModule('branch3x3_1', new BasicConv2d(inChannels, 192, 1));
    this.branch3x3_2 = this.addModule('branch3x3_2', new BasicConv2d(192, 320, 3, { stride: 2 }));
    this.branch7x7x3_1 = this.addModule('branch7x7x3_1', new BasicConv2d(inChannels, 192, 1));
    this.branch7x7x3_2 = this.addModule('branch7x7x3_2', new BasicConv2d(192, 192, [1, 7], { padding: [0, 3] }));
    this.branch7x7x3_3 = this.addModule('branch7x7x3_3', new BasicConv2d(192, 192, [7, 1], { padding: [3, 0] }));
    this.branch7x7x3_4 = this.addModule('branch7x7x3_4', new BasicConv2d(192, 192, 3, { stride: 2 }));
  }

  forward(x: Tensor): Tensor {
    const b3 = this.branch3x3_2.call(this.branch3x3_1.call(x));
    let b7 = this.branch7x7x3_1.call(x);
    for (const m of [this.branch7x7x3_2, this.branch7x7x3_3, this.branch7x7x3_4]) b7 = m.call(b7);
    return cat([b3, b7, maxPool2d(x, 3, { stride: 2 })], 1);
  }
}

/** Expanded filter banks (1x3 and 3x1 side by side) at 8x8 (Mixed_7b, 7c). */
export class InceptionE extends Module {
  readonly branch1x1: BasicConv2d;
  readonly branch3x3_1: BasicConv2d;
  readonly branch3x3_2a: BasicConv2d;
  readonly branch3x3_2b: BasicConv2d;
  readonly branch3x3dbl_1: BasicConv2d;
  readonly branch3x3dbl_2: BasicConv2d;
  readonly branch3x3dbl_3a: BasicConv2d;
  readonly branch3x3dbl_3b: BasicConv2d;
  readonly branch_pool: BasicConv2d;

  constructor(inChannels: number) {
    super();
    const row = { padding: [0, 1] as [number, number] };
    const col = { padding: [1, 0] as [number, number] };
    this.branch1x1 = this.addModule('branch1x1', new BasicConv2d(inChannels, 320, 1));
    this.branch3x3_1 = this.addModule('branch3x3_1', new BasicConv2d(inChannels, 384, 1));
    this.branch3x3_2a = this.addModule('branch3x3_2a', new BasicConv2d(384, 384, [1, 3], row));
    this.branch3x3_2b = this.addModule('branch3x3_2b', new BasicConv2d(384, 384, [3, 1], col));
    this.branch3x3dbl_1 = this.addModule('branch3x3dbl_1', new BasicConv2d(inChannels, 448, 1));
    this.branch3x3dbl_2 = this.addModule('branch3x3dbl_2', new BasicConv2d(448, 384, 3, { padding: 1 }));
    this.branch3x3dbl_3a = this.addModule('branch3x3dbl_3a', new BasicConv2d(384, 384, [1, 3], row));
    this.branch3x3dbl_3b = this.addModule('branch3x3dbl_3b', new BasicConv2d(384, 384, [3, 1], col));
    this.branch_pool = this.addModule('branch_pool', new BasicConv2d(inChannels, 192, 1));
  }

  forward(x: Tensor): Tensor {
    const b3 = this.branch3x3_1.call(x);
    const b3cat = cat([this.branch3x3_2a.call(b3), this.branch3x3_2b.call(b3)], 1);
    const d = this.branch3x3dbl_2.call(this.branch3x3dbl_1.call(x));
    const dcat = cat([this.branch3x3dbl_3a.call(d), this.branch3x3dbl_3b.call(d)], 1);
    return cat([this.branch1x1.call(x), b3cat, dcat, this.branch_pool.call(pool3(x))], 1);
  }
}

/** The auxiliary classifier on Mixed_6e: 5x5/3 average pool, 1x1 and 5x5 convs, linear. */
export class InceptionV3Aux extends Module {
  readonly conv0: BasicConv2d;
  readonly conv1: BasicConv2d;
  readonly fc: Linear;

  constructor(inChannels: number, numClasses: number) {
    super();
    this.conv0 = this.addModule('conv0', new BasicConv2d(inChannels, 128, 1));
    this.conv1 = this.addModule('conv1', new BasicConv2d(128, 768, 5));
    this.fc = this.addModule('fc', new Linear(768, numClasses));
  }

  forward(x: Tensor): Tensor {
    const y = this.conv1.call(this.conv0.call(avgPool2d(x, 5, { stride: 3 })));
    return this.fc.call(flatten(adaptiveAvgPool2d(y, 1), 1));
  }
}

export interface InceptionV3Options {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Build the auxiliary classifier (default true, as torchvision's inception_v3). */
  auxLogits?: boolean;
  /** Map ImageNet-normalised input to the [-1, 1] scaling the ported weights expect (default false). */
  transformInput?: boolean;
  /** Truncated-normal initialisation as torchvision's (default true). */
  initWeights?: boolean;
  /** Dropout probability before the classifier (default 0.5). */
  dropout?: number;
}

export interface InceptionV3Outputs {
  logits: Tensor;
  /** The auxiliary classifier's logits, while training with auxLogits; else null. */
  aux: Tensor | null;
}

/**
 * Inception v3. Input [N, 3, H, W] with H, W >= 75 (299x299 for ImageNet) -> logits
 * [N, numClasses] (forwardAux also returns the auxiliary logits while training). 27,161,264
 * parameters with the auxiliary classifier at 1000 classes (23,834,568 without).
 */
export class Inception3 extends Module {
  readonly auxLogits: boolean;
  readonly transformInput: boolean;
  readonly Conv2d_1a_3x3: BasicConv2d;
  readonly Conv2d_2a_3x3: BasicConv2d;
  readonly Conv2d_2b_3x3: BasicConv2d;
  readonly maxpool1: MaxPool2d;
  readonly Conv2d_3b_1x1: BasicConv2d;
  readonly Conv2d_4a_3x3: BasicConv2d;
  readonly maxpool2: MaxPool2d;
  readonly mixed: Module[];
  readonly AuxLogits: InceptionV3Aux | null;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly dropout: Dropout;
  readonly fc: Linear;

  constructor(opts: InceptionV3Options = {}) {
    super();
    const numClasses = opts.numClasses ?? 1000;
    this.auxLogits = opts.auxLogits ?? true;
    this.transformInput = opts.transformInput ?? false;
    this.Conv2d_1a_3x3 = this.addModule('Conv2d_1a_3x3', new BasicConv2d(3, 32, 3, { stride: 2 }));
    this.Conv2d_2a_3x3 = this.addModule('Conv2d_2a_3x3', new BasicConv2d(32, 32, 3));
    this.Conv2d_2b_3x3 = this.addModule('Conv2d_2b_3x3', new BasicConv2d(32, 64, 3, { padding: 1 }));
    this.maxpool1 = this.addModule('maxpool1', new MaxPool2d(3, { stride: 2 }));
    this.Conv2d_3b_1x1 = this.addModule('Conv2d_3b_1x1', new BasicConv2d(64, 80, 1));
    this.Conv2d_4a_3x3 = this.addModule('Conv2d_4a_3x3', new BasicConv2d(80, 192, 3));
    this.maxpool2 = this.addModule('maxpool2', new MaxPool2d(3, { stride: 2 }));
    const blocks: [string, Module][] = [
      ['Mixed_5b', new InceptionA(192, 32)],
      ['Mixed_5c', new InceptionA(256, 64)],
      ['Mixed_5d', new InceptionA(288, 64)],
      ['Mixed_6a', new InceptionB(288)],
      ['Mixed_6b', new InceptionC(768, 128)],
      ['Mixed_6c', new InceptionC(768, 160)],
      ['Mixed_6d', new InceptionC(768, 160)],
      ['Mixed_6e', new InceptionC(768, 192)],
    ];
    this.mixed = blocks.map(([name, m]) => this.addModule(name, m));
    this.AuxLogits = this.auxLogits ? this.addModule('AuxLogits', new InceptionV3Aux(768, numClasses)) : null;
    for (const [name, m] of [
      ['Mixed_7a', new InceptionD(768)],
      ['Mixed_7b', new InceptionE(1280)],
      ['Mixed_7c', new InceptionE(2048)],
    ] as const) {
      this.mixed.push(this.addModule(name, m));
    }
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.dropout = this.addModule('dropout', new Dropout(opts.dropout ?? 0.5));
    this.fc = this.addModule('fc', new Linear(2048, numClasses));
    if (opts.initWeights ?? true) {
      // torchvision: truncated normal (bounds +-2) with std 0.1, 0.01 for the auxiliary
      // classifier's 5x5 conv and 0.001 for its linear; batch norm 1/0.
      for (const [, m] of this.namedModules()) {
        if (m instanceof Conv2d || m instanceof Linear) {
          const std = m === this.AuxLogits?.conv1.conv ? 0.01 : m === this.AuxLogits?.fc ? 0.001 : 0.1;
          init.truncNormal_(m.weight, 0, std, -2, 2);
        } else if (m instanceof BatchNorm2d) {
          if (m.weight) init.constant_(m.weight, 1);
          if (m.bias) init.constant_(m.bias, 0);
        }
      }
    }
  }

  /** Logits and, while training with auxLogits, the auxiliary classifier's logits. */
  forwardAux(x: Tensor): InceptionV3Outputs {
    checkModelInput(this, 'Inception3', x, 3, 'Conv2d_1a_3x3');
    if (this.transformInput) x = transformImagenetInput(x);
    let y = this.Conv2d_2b_3x3.call(this.Conv2d_2a_3x3.call(this.Conv2d_1a_3x3.call(x)));
    y = this.maxpool2.call(this.Conv2d_4a_3x3.call(this.Conv2d_3b_1x1.call(this.maxpool1.call(y))));
    let aux: Tensor | null = null;
    for (const m of this.mixed) {
      y = m.call(y);
      if (m === this.mixed[7] && this.AuxLogits && this.training) aux = this.AuxLogits.call(y);
    }
    y = this.dropout.call(flatten(this.avgpool.call(y), 1));
    return { logits: this.fc.call(y), aux };
  }

  /** [N, 3, H, W] -> logits [N, numClasses] (the main head only). */
  forward(x: Tensor): Tensor {
    return this.forwardAux(x).logits;
  }
}

/** Inception v3 as torchvision.models.inception_v3 (no pretrained weights). */
export const inceptionV3 = (opts: InceptionV3Options = {}): Inception3 => new Inception3(opts);
