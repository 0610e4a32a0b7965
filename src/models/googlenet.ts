// GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions") as
// torchvision 0.14 builds it (torchvision/models/googlenet.py): conv + batch norm blocks, the
// 3x3-instead-of-5x5 branch3 that torchvision's ported weights use (pytorch/vision#906), optional
// auxiliary classifiers, and the same module tree, state-dict keys (`inception3a.branch2.1.bn.
// running_var`, `aux1.fc2.weight`, ...), initialisation and eval-mode forward.
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d, type Conv2dLayerOptions } from '../nn/conv2d.js';
import { Dropout } from '../nn/dropout.js';
import { convBnRelu } from '../nn/fuse.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { Sequential } from '../nn/sequential.js';
import { relu } from '../ops/activation.js';
import type { Pair } from '../ops/conv.js';
import { add, cat, flatten, mul } from '../ops/elementwise.js';
import { adaptiveAvgPool2d } from '../ops/pool.js';
import { Tensor } from '../tensor.js';
import { IMAGENET_MEAN, IMAGENET_STD } from './classify.js';
import { checkModelInput } from './model-input.js';

/**
 * ImageNet-normalised input mapped to the scaling of the weights torchvision ported from the
 * original GoogLeNet and Inception v3 ((x * std + mean - 0.5) / 0.5 per channel): their
 * `transform_input`.
 */
export function transformImagenetInput(x: Tensor): Tensor {
  const scale = new Tensor(
    Float32Array.from(IMAGENET_STD, (s) => s / 0.5),
    [1, 3, 1, 1],
  );
  const shift = new Tensor(
    Float32Array.from(IMAGENET_MEAN, (m) => (m - 0.5) / 0.5),
    [1, 3, 1, 1],
  );
  return add(mul(x, scale), shift);
}

/**
 * Conv (no bias) + BatchNorm2d (eps 0.001) + ReLU. [N, in, H, W] -> [N, out, H', W'].
 * Children: conv, bn.
 */
export class BasicConv2d extends Module {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d;

  constructor(
    inChannels: number,
    outChannels: number,
    kernelSize: Pair,
    opts: Pick<Conv2dLayerOptions, 'stride' | 'padding'> = {},
  ) {
    super();
    this.conv = this.addModule('conv', new Conv2d(inChannels, outChannels, kernelSize, { ...opts, bias: false }));
    this.bn = this.addModule('bn', new BatchNorm2d(outChannels, { eps: 0.001 }));
  }

  forward(x: Tensor): Tensor {
    return convBnRelu(this.conv, this.bn, true, x);
  }
}

/**
 * Inception module: four parallel branches concatenated on channels. [N, in, H, W] ->
 * [N, ch1x1 + ch3x3 + ch5x5 + poolProj, H, W]. Children: branch1 (1x1), branch2 (1x1 -> 3x3),
 * branch3 (1x1 -> 3x3, torchvision's stand-in for 5x5), branch4 (3x3 max pool -> 1x1).
 */
export class Inception extends Module {
  readonly branch1: BasicConv2d;
  readonly branch2: Sequential;
  readonly branch3: Sequential;
  readonly branch4: Sequential;

  constructor(
    inChannels: number,
    ch1x1: number,
    ch3x3red: number,
    ch3x3: number,
    ch5x5red: number,
    ch5x5: number,
    poolProj: number,
  ) {
    super();
    this.branch1 = this.addModule('branch1', new BasicConv2d(inChannels, ch1x1, 1));
    this.branch2 = this.addModule(
      'branch2',
      new Sequential(new BasicConv2d(inChannels, ch3x3red, 1), new BasicConv2d(ch3x3red, ch3x3, 3, { padding: 1 })),
    );
    this.branch3 = this.addModule(
      'branch3',
      new Sequential(new BasicConv2d(inChannels, ch5x5red, 1), new BasicConv2d(ch5x5red, ch5x5, 3, { padding: 1 })),
    );
    this.branch4 = this.addModule(
      'branch4',
      new Sequential(
        new MaxPool2d(3, { stride: 1, padding: 1, ceilMode: true }),
        new BasicConv2d(inChannels, poolProj, 1),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    return cat([this.branch1.call(x), this.branch2.call(x), this.branch3.call(x), this.branch4.call(x)], 1);
  }
}

/**
 * Auxiliary classifier on an intermediate feature map: adaptive avg pool to 4x4, 1x1 conv to 128,
 * fc 2048->1024, ReLU, dropout, fc 1024->numClasses. [N, in, H, W] -> [N, numClasses].
 * Children: conv, fc1, fc2, dropout.
 */
export class InceptionAux extends Module {
  readonly conv: BasicConv2d;
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly dropout: Dropout;

  constructor(inChannels: number, numClasses: number, dropout = 0.7) {
    super();
    this.conv = this.addModule('conv', new BasicConv2d(inChannels, 128, 1));
    this.fc1 = this.addModule('fc1', new Linear(2048, 1024));
    this.fc2 = this.addModule('fc2', new Linear(1024, numClasses));
    this.dropout = this.addModule('dropout', new Dropout(dropout));
  }

  forward(x: Tensor): Tensor {
    let y = flatten(this.conv.call(adaptiveAvgPool2d(x, 4)), 1);
    y = this.dropout.call(relu(this.fc1.call(y)));
    return this.fc2.call(y);
  }
}

export interface GoogLeNetOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /**
   * Build the two auxiliary classifiers aux1/aux2 (default false, so the parameters are the
   * 6,624,904 of torchvision's pretrained model; note torchvision's GoogLeNet class defaults to
   * true when no weights are given).
   */
  auxLogits?: boolean;
  /**
   * Map ImageNet-normalised input to the [-1, 1] scaling the ported weights expect, per channel
   * x * std/0.5 + (mean - 0.5)/0.5 (default false).
   */
  transformInput?: boolean;
  /** torchvision's init: trunc_normal_(0, 0.01, -2, 2) conv/linear weights, BN 1/0 (default true). */
  initWeights?: boolean;
  /** Dropout before fc (default 0.2). */
  dropout?: number;
  /** Dropout in the auxiliary classifiers (default 0.7). */
  dropoutAux?: number;
}

/** Logits plus the auxiliary heads' logits (null unless training with auxLogits). */
export interface GoogLeNetOutputs {
  logits: Tensor;
  aux2: Tensor | null;
  aux1: Tensor | null;
}

/**
 * GoogLeNet. Input [N, 3, H, W] with H, W >= 15 (224x224 for ImageNet) -> logits [N, numClasses]
 * (forwardAux also returns the auxiliary logits while training). Children: conv1, maxpool1, conv2,
 * conv3, maxpool2, inception3a, inception3b, maxpool3, inception4a..4e, maxpool4, inception5a,
 * inception5b, aux1?, aux2?, avgpool, dropout, fc.
 */
export class GoogLeNet extends Module {
  readonly auxLogits: boolean;
  readonly transformInput: boolean;
  readonly conv1: BasicConv2d;
  readonly maxpool1: MaxPool2d;
  readonly conv2: BasicConv2d;
  readonly conv3: BasicConv2d;
  readonly maxpool2: MaxPool2d;
  readonly inception3a: Inception;
  readonly inception3b: Inception;
  readonly maxpool3: MaxPool2d;
  readonly inception4a: Inception;
  readonly inception4b: Inception;
  readonly inception4c: Inception;
  readonly inception4d: Inception;
  readonly inception4e: Inception;
  readonly maxpool4: MaxPool2d;
  readonly inception5a: Inception;
  readonly inception5b: Inception;
  readonly aux1: InceptionAux | null;
  readonly aux2: InceptionAux | null;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly dropout: Dropout;
  readonly fc: Linear;

  constructor(opts: GoogLeNetOptions = {}) {
    super();
    const numClasses = opts.numClasses ?? 1000;
    this.auxLogits = opts.auxLogits ?? false;
    this.transformInput = opts.transformInput ?? false;
    const pool = (k: number) => new MaxPool2d(k, { stride: 2, ceilMode: true });

    this.conv1 = this.addModule('conv1', new BasicConv2d(3, 64, 7, { stride: 2, padding: 3 }));
    this.maxpool1 = this.addModule('maxpool1', pool(3));
    this.conv2 = this.addModule('conv2', new BasicConv2d(64, 64, 1));
    this.conv3 = this.addModule('conv3', new BasicConv2d(64, 192, 3, { padding: 1 }));
    this.maxpool2 = this.addModule('maxpool2', pool(3));
    this.inception3a = this.addModule('inception3a', new Inception(192, 64, 96, 128, 16, 32, 32));
    this.inception3b = this.addModule('inception3b', new Inception(256, 128, 128, 192, 32, 96, 64));
    this.maxpool3 = this.addModule('maxpool3', pool(3));
    this.inception4a = this.addModule('inception4a', new Inception(480, 192, 96, 208, 16, 48, 64));
    this.inception4b = this.addModule('inception4b', new Inception(512, 160, 112, 224, 24, 64, 64));
    this.inception4c = this.addModule('inception4c', new Inception(512, 128, 128, 256, 24, 64, 64));
    this.inception4d = this.addModule('inception4d', new Inception(512, 112, 144, 288, 32, 64, 64));
    this.inception4e = this.addModule('inception4e', new Inception(528, 256, 160, 320, 32, 128, 128));
    this.maxpool4 = this.addModule('maxpool4', pool(2));
    this.inception5a = this.addModule('inception5a', new Inception(832, 256, 160, 320, 32, 128, 128));
    this.inception5b = this.addModule('inception5b', new Inception(832, 384, 192, 384, 48, 128, 128));
    const dropoutAux = opts.dropoutAux ?? 0.7;
    this.aux1 = this.auxLogits ? this.addModule('aux1', new InceptionAux(512, numClasses, dropoutAux)) : null;
    this.aux2 = this.auxLogits ? this.addModule('aux2', new InceptionAux(528, numClasses, dropoutAux)) : null;
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.dropout = this.addModule('dropout', new Dropout(opts.dropout ?? 0.2));
    this.fc = this.addModule('fc', new Linear(1024, numClasses));

    if (opts.initWeights ?? true) {
      for (const [, m] of this.namedModules()) {
        if (m instanceof Conv2d || m instanceof Linear) init.truncNormal_(m.weight, 0, 0.01, -2, 2);
        else if (m instanceof BatchNorm2d) {
          if (m.weight) init.constant_(m.weight, 1);
          if (m.bias) init.constant_(m.bias, 0);
        }
      }
    }
  }

  /** Logits and, while training with auxLogits, the auxiliary classifiers' logits. */
  forwardAux(x: Tensor): GoogLeNetOutputs {
    checkModelInput(this, 'GoogLeNet', x, 3, 'conv1');
    if (this.transformInput) x = transformImagenetInput(x);
    let y = this.maxpool1.call(this.conv1.call(x));
    y = this.maxpool2.call(this.conv3.call(this.conv2.call(y)));
    y = this.maxpool3.call(this.inception3b.call(this.inception3a.call(y)));
    y = this.inception4a.call(y);
    const aux1 = this.aux1 && this.training ? this.aux1.call(y) : null;
    y = this.inception4d.call(this.inception4c.call(this.inception4b.call(y)));
    const aux2 = this.aux2 && this.training ? this.aux2.call(y) : null;
    y = this.maxpool4.call(this.inception4e.call(y));
    y = this.inception5b.call(this.inception5a.call(y));
    y = this.dropout.call(flatten(this.avgpool.call(y), 1));
    return { logits: this.fc.call(y), aux2, aux1 };
  }

  /** [N, 3, H, W] -> logits [N, numClasses] (the main head only). */
  forward(x: Tensor): Tensor {
    return this.forwardAux(x).logits;
  }
}

/** GoogLeNet as torchvision.models.googlenet, without auxiliary heads unless asked (see GoogLeNetOptions). */
export const googlenet = (opts: GoogLeNetOptions = {}): GoogLeNet => new GoogLeNet(opts);
