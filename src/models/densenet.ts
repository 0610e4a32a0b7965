// DenseNet-BC (Huang et al. 2016, "Densely Connected Convolutional Networks") as torchvision 0.14
// builds it (torchvision/models/densenet.py): the same module tree and state-dict keys
// (`features.denseblock1.denselayer1.norm1.running_mean`, `features.transition1.conv.weight`,
// `classifier.bias`, ...), the same initialisation and the same eval-mode forward. Each dense layer
// sees the concatenation of all earlier feature maps of its block.
import { AvgPool2d } from '../nn/avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { convBnRelu, tryCatBnRelu } from '../nn/fuse.js';
import * as init from '../nn/init.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { relu } from '../ops/activation.js';
import { cat, dropout, flatten } from '../ops/elementwise.js';
import { adaptiveAvgPool2d } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

/**
 * BN-ReLU-1x1 conv (to bnSize*growthRate) then BN-ReLU-3x3 conv (to growthRate), on the channel
 * concatenation of its inputs: forward(...features [N, C_i, H, W]) -> [N, growthRate, H, W].
 * Children: norm1, relu1, conv1, norm2, relu2, conv2.
 */
export class DenseLayer extends Module {
  readonly norm1: BatchNorm2d;
  readonly relu1: ReLU;
  readonly conv1: Conv2d;
  readonly norm2: BatchNorm2d;
  readonly relu2: ReLU;
  readonly conv2: Conv2d;

  constructor(
    numInputFeatures: number,
    growthRate: number,
    bnSize: number,
    readonly dropRate = 0,
  ) {
    super();
    this.norm1 = this.addModule('norm1', new BatchNorm2d(numInputFeatures));
    this.relu1 = this.addModule('relu1', new ReLU());
    this.conv1 = this.addModule('conv1', new Conv2d(numInputFeatures, bnSize * growthRate, 1, { bias: false }));
    this.norm2 = this.addModule('norm2', new BatchNorm2d(bnSize * growthRate));
    this.relu2 = this.addModule('relu2', new ReLU());
    this.conv2 = this.addModule('conv2', new Conv2d(bnSize * growthRate, growthRate, 3, { padding: 1, bias: false }));
  }

  forward(...features: Tensor[]): Tensor {
    // In inference the concat, norm1 and relu1 are one pass over the features.
    const pre =
      tryCatBnRelu(features, this.norm1, this.relu1) ??
      this.relu1.call(this.norm1.call(features.length === 1 ? features[0] : cat(features, 1)));
    // conv1 -> norm2 -> relu2 is one fused conv in inference.
    const act = convBnRelu(this.conv1, this.norm2, this.relu2, pre);
    const out = this.conv2.call(act);
    return this.dropRate > 0 ? dropout(out, this.dropRate, this.training) : out;
  }
}

/**
 * numLayers dense layers; layer i sees the input plus the i earlier layers' outputs.
 * [N, C, H, W] -> [N, C + numLayers*growthRate, H, W]. Children: denselayer1..denselayerN.
 */
export class DenseBlock extends Module {
  private readonly layers: DenseLayer[] = [];

  constructor(numLayers: number, numInputFeatures: number, bnSize: number, growthRate: number, dropRate = 0) {
    super();
    for (let i = 0; i < numLayers; i++) {
      const layer = new DenseLayer(numInputFeatures + i * growthRate, growthRate, bnSize, dropRate);
      this.layers.push(this.addModule(`denselayer${i + 1}`, layer));
    }
  }

  forward(x: Tensor): Tensor {
    const features = [x];
    for (const layer of this.layers) features.push(layer.call(...features));
    return cat(features, 1);
  }
}

/**
 * Between dense blocks: BN, ReLU, 1x1 conv (channel compression), 2x2 average pool.
 * [N, in, H, W] -> [N, out, H/2, W/2]. Children: norm, relu, conv, pool.
 */
export class Transition extends Sequential {
  constructor(numInputFeatures: number, numOutputFeatures: number) {
    super(
      ['norm', new BatchNorm2d(numInputFeatures)],
      ['relu', new ReLU()],
      ['conv', new Conv2d(numInputFeatures, numOutputFeatures, 1, { bias: false })],
      ['pool', new AvgPool2d(2, { stride: 2 })],
    );
  }
}

export interface DenseNetOptions {
  /** Channels each dense layer adds, k in the paper (default 32). */
  growthRate?: number;
  /** Dense layers per block (default [6, 12, 24, 16], DenseNet-121). */
  blockConfig?: readonly number[];
  /** Channels of the stem conv (default 64). */
  numInitFeatures?: number;
  /** Bottleneck width factor: 1x1 convs output bnSize*growthRate channels (default 4). */
  bnSize?: number;
  /** Dropout after each dense layer (default 0). */
  dropRate?: number;
  /** Output classes (default 1000). */
  numClasses?: number;
}

/**
 * DenseNet. Input [N, 3, H, W] with H, W >= 29 (three 2x2 average pools after the stem; 224x224 for
 * ImageNet, 32x32 works) -> logits [N, numClasses]. Children: features (conv0, norm0, relu0,
 * pool0, denseblock1, transition1, ..., denseblockK, norm5), classifier. Convs are initialised
 * kaiming_normal_ (fan_in), BN weight 1 / bias 0, classifier bias 0, as torchvision.
 */
export class DenseNet extends Module {
  readonly features: Sequential;
  readonly classifier: Linear;

  constructor(opts: DenseNetOptions = {}) {
    super();
    const growthRate = opts.growthRate ?? 32;
    const blockConfig = opts.blockConfig ?? [6, 12, 24, 16];
    const numInitFeatures = opts.numInitFeatures ?? 64;
    const bnSize = opts.bnSize ?? 4;
    const dropRate = opts.dropRate ?? 0;
    if (!(dropRate >= 0 && dropRate < 1)) throw new Error(`dropRate must be in [0, 1), got ${dropRate}`);
    if (blockConfig.length === 0 || !blockConfig.every((n) => Number.isInteger(n) && n >= 1)) {
      throw new Error(`blockConfig: expected positive integers, got ${JSON.stringify(blockConfig)}`);
    }
    this.features = this.addModule(
      'features',
      new Sequential(
        ['conv0', new Conv2d(3, numInitFeatures, 7, { stride: 2, padding: 3, bias: false })],
        ['norm0', new BatchNorm2d(numInitFeatures)],
        ['relu0', new ReLU()],
        ['pool0', new MaxPool2d(3, { stride: 2, padding: 1 })],
      ),
    );
    let numFeatures = numInitFeatures;
    blockConfig.forEach((numLayers, i) => {
      this.features.append([
        `denseblock${i + 1}`,
        new DenseBlock(numLayers, numFeatures, bnSize, growthRate, dropRate),
      ]);
      numFeatures += numLayers * growthRate;
      if (i !== blockConfig.length - 1) {
        this.features.append([`transition${i + 1}`, new Transition(numFeatures, Math.floor(numFeatures / 2))]);
        numFeatures = Math.floor(numFeatures / 2);
      }
    });
    this.features.append(['norm5', new BatchNorm2d(numFeatures)]);
    this.classifier = this.addModule('classifier', new Linear(numFeatures, opts.numClasses ?? 1000));

    for (const [, m] of this.namedModules()) {
      if (m instanceof Conv2d) init.kaimingNormal_(m.weight);
      else if (m instanceof BatchNorm2d) {
        if (m.weight) init.constant_(m.weight, 1);
        if (m.bias) init.constant_(m.bias, 0);
      } else if (m instanceof Linear && m.bias) init.constant_(m.bias, 0);
    }
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'DenseNet', x, 3, 'features.conv0');
    const features = relu(this.features.call(x));
    return this.classifier.call(flatten(adaptiveAvgPool2d(features, 1), 1));
  }
}

/** Options of the DenseNet factories (the architecture itself is fixed by the name). */
export type DenseNetFactoryOptions = Pick<DenseNetOptions, 'numClasses' | 'dropRate'>;

const densenet =
  (growthRate: number, blockConfig: readonly number[], numInitFeatures: number) =>
  (opts: DenseNetFactoryOptions = {}): DenseNet =>
    new DenseNet({ ...opts, growthRate, blockConfig, numInitFeatures });

/** DenseNet-121: k 32, blocks [6, 12, 24, 16], 7,978,856 parameters at 1000 classes. */
export const densenet121 = densenet(32, [6, 12, 24, 16], 64);
/** DenseNet-161: k 48, blocks [6, 12, 36, 24], 96 stem channels, 28,681,000 parameters. */
export const densenet161 = densenet(48, [6, 12, 36, 24], 96);
/** DenseNet-169: k 32, blocks [6, 12, 32, 32], 14,149,480 parameters. */
export const densenet169 = densenet(32, [6, 12, 32, 32], 64);
/** DenseNet-201: k 32, blocks [6, 12, 48, 32], 20,013,928 parameters. */
export const densenet201 = densenet(32, [6, 12, 48, 32], 64);
