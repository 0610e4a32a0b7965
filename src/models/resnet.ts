// ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition") as torchvision 0.14
// builds it (torchvision/models/resnet.py): the same module tree, so parameter and buffer names
// (`layer1.0.bn1.running_mean`, `layer2.0.downsample.0.weight`, ...) and shapes equal
// torchvision's state_dict(), the same initialisation, and the same eval-mode forward. Bottleneck
// is the "v1.5" variant (stride on the 3x3 conv). Optional stochastic depth on the residual
// branches (see stochastic-depth.ts) adds no parameters.
import * as init from '../nn/init.js';
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { convBnRelu, tryFusedConv } from '../nn/fuse.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { add, flatten } from '../ops/elementwise.js';
import { globalRng, type Rng } from '../random.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';
import { linearSurvivalProb, stochasticDepth } from './stochastic-depth.js';

/** 3x3 convolution, padding = dilation, no bias (torchvision's conv3x3). */
function conv3x3(inPlanes: number, outPlanes: number, stride = 1, groups = 1, dilation = 1): Conv2d {
  return new Conv2d(inPlanes, outPlanes, 3, { stride, padding: dilation, groups, dilation, bias: false });
}

/** 1x1 convolution, no bias (torchvision's conv1x1). */
function conv1x1(inPlanes: number, outPlanes: number, stride = 1): Conv2d {
  return new Conv2d(inPlanes, outPlanes, 1, { stride, bias: false });
}

/** What a residual block needs besides its channel counts. */
export interface ResidualBlockOptions {
  /** Stride of the block's strided conv (default 1). */
  stride?: number;
  /** Projection of the shortcut when shape changes (torchvision's `downsample`), else null. */
  downsample?: Sequential | null;
  /** Grouped-conv groups (default 1; BasicBlock supports only 1). */
  groups?: number;
  /** Width per group (default 64; BasicBlock supports only 64). */
  baseWidth?: number;
  /** Dilation of the 3x3 conv (default 1; BasicBlock supports only 1). */
  dilation?: number;
  /** Probability that the residual branch is kept in training (default 1: never dropped). */
  survivalProb?: number;
  /** Generator for the stochastic-depth draws (default: the global one). */
  rng?: Rng;
}

/** Shared shortcut + stochastic depth + ReLU tail of both block kinds. */
abstract class ResidualBlock extends Module {
  readonly survivalProb: number;
  protected readonly rng: Rng;

  constructor(o: ResidualBlockOptions) {
    super();
    this.survivalProb = o.survivalProb ?? 1;
    if (!(this.survivalProb > 0 && this.survivalProb <= 1)) {
      throw new Error(`survivalProb must be in (0, 1], got ${this.survivalProb}`);
    }
    this.rng = o.rng ?? globalRng;
  }

  /**
   * relu(stochasticDepth(bn(conv(branchIn))) + shortcut(x)): the block's last conv. In inference
   * it runs as one fused conv (batch norm folded in, residual add and ReLU in its epilogue).
   */
  protected finish(
    conv: Conv2d,
    bn: BatchNorm2d,
    branchIn: Tensor,
    x: Tensor,
    downsample: Sequential | null,
    relu: ReLU,
  ): Tensor {
    const identity = downsample ? downsample.call(x) : x;
    if (!this.training) {
      const fused = tryFusedConv(conv, bn, branchIn, { relu, residual: identity });
      if (fused) return fused;
    }
    const branch = bn.call(conv.call(branchIn));
    const kept = stochasticDepth(branch, this.survivalProb, this.training, this.rng);
    return relu.call(add(kept, identity));
  }
}

/**
 * Two 3x3 convs with a shortcut (ResNet-18/34). Input [N, inplanes, H, W] ->
 * [N, planes, H/stride, W/stride]. Children: conv1, bn1, relu, conv2, bn2, downsample?.
 */
export class BasicBlock extends ResidualBlock {
  static readonly expansion = 1;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly downsample: Sequential | null;

  constructor(inplanes: number, planes: number, o: ResidualBlockOptions = {}) {
    super(o);
    if ((o.groups ?? 1) !== 1 || (o.baseWidth ?? 64) !== 64) {
      throw new Error(
        `BasicBlock only supports groups=1 and baseWidth=64, got groups=${o.groups} baseWidth=${o.baseWidth}`,
      );
    }
    if ((o.dilation ?? 1) > 1) throw new Error(`BasicBlock does not support dilation > 1, got ${o.dilation}`);
    this.conv1 = this.addModule('conv1', conv3x3(inplanes, planes, o.stride ?? 1));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(planes));
    this.relu = this.addModule('relu', new ReLU());
    this.conv2 = this.addModule('conv2', conv3x3(planes, planes));
    this.bn2 = this.addModule('bn2', new BatchNorm2d(planes));
    this.downsample = o.downsample ? this.addModule('downsample', o.downsample) : null;
  }

  forward(x: Tensor): Tensor {
    const out = convBnRelu(this.conv1, this.bn1, this.relu, x);
    return this.finish(this.conv2, this.bn2, out, x, this.downsample, this.relu);
  }
}

/**
 * 1x1 -> 3x3 (strided) -> 1x1 with a shortcut (ResNet-50/101/152). Input [N, inplanes, H, W] ->
 * [N, 4*planes, H/stride, W/stride]. Children: conv1, bn1, conv2, bn2, conv3, bn3, relu, downsample?.
 */
export class Bottleneck extends ResidualBlock {
  static readonly expansion = 4;
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly conv2: Conv2d;
  readonly bn2: BatchNorm2d;
  readonly conv3: Conv2d;
  readonly bn3: BatchNorm2d;
  readonly relu: ReLU;
  readonly downsample: Sequential | null;

  constructor(inplanes: number, planes: number, o: ResidualBlockOptions = {}) {
    super(o);
    const groups = o.groups ?? 1;
    const width = Math.floor(planes * ((o.baseWidth ?? 64) / 64)) * groups;
    this.conv1 = this.addModule('conv1', conv1x1(inplanes, width));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(width));
    this.conv2 = this.addModule('conv2', conv3x3(width, width, o.stride ?? 1, groups, o.dilation ?? 1));
    this.bn2 = this.addModule('bn2', new BatchNorm2d(width));
    this.conv3 = this.addModule('conv3', conv1x1(width, planes * Bottleneck.expansion));
    this.bn3 = this.addModule('bn3', new BatchNorm2d(planes * Bottleneck.expansion));
    this.relu = this.addModule('relu', new ReLU());
    this.downsample = o.downsample ? this.addModule('downsample', o.downsample) : null;
  }

  forward(x: Tensor): Tensor {
    let out = convBnRelu(this.conv1, this.bn1, this.relu, x);
    out = convBnRelu(this.conv2, this.bn2, this.relu, out);
    return this.finish(this.conv3, this.bn3, out, x, this.downsample, this.relu);
  }
}

export type BlockKind = 'basic' | 'bottleneck';

export interface ResNetOptions {
  /** Output classes (default 1000). */
  numClasses?: number;
  /** Zero the last BN weight of every residual branch so each block starts as identity (default false). */
  zeroInitResidual?: boolean;
  /** Groups of the 3x3 convs in Bottleneck blocks (default 1; 32 gives ResNeXt-50 32x4d). */
  groups?: number;
  /** Channels per group in Bottleneck blocks (default 64; 128 gives Wide ResNet-50-2). */
  widthPerGroup?: number;
  /** Replace the stride-2 of layer2/3/4 with dilation (default [false, false, false]). */
  replaceStrideWithDilation?: readonly [boolean, boolean, boolean];
  /**
   * Stochastic depth: block l of L keeps its residual branch with probability
   * p_l = 1 - (l/L)(1 - survivalProb) in training (survivors scaled by 1/p_l; torchvision's 'row'
   * mode, per sample); eval mode is the plain network. Default: off.
   */
  stochasticDepth?: { survivalProb: number; rng?: Rng };
}

/**
 * ResNet. Input [N, 3, H, W] (224x224 for ImageNet; any H, W >= 1 works thanks to the adaptive
 * pool, e.g. 32x32) -> logits [N, numClasses]. Children: conv1, bn1, relu, maxpool, layer1..4,
 * avgpool, fc. Convs are initialised kaiming_normal_(fan_out, relu), BN weight 1 / bias 0, fc
 * with PyTorch's Linear default, as torchvision.
 */
export class ResNet extends Module {
  readonly conv1: Conv2d;
  readonly bn1: BatchNorm2d;
  readonly relu: ReLU;
  readonly maxpool: MaxPool2d;
  readonly layer1: Sequential;
  readonly layer2: Sequential;
  readonly layer3: Sequential;
  readonly layer4: Sequential;
  readonly avgpool: AdaptiveAvgPool2d;
  readonly fc: Linear;
  readonly block: BlockKind;

  private inplanes = 64;
  private dilation = 1;
  private readonly groups: number;
  private readonly baseWidth: number;
  private blockIndex = 0;
  private readonly totalBlocks: number;
  private readonly sd: { survivalProb: number; rng?: Rng } | undefined;

  constructor(block: BlockKind, layers: readonly [number, number, number, number], opts: ResNetOptions = {}) {
    super();
    this.block = block;
    const numClasses = opts.numClasses ?? 1000;
    this.groups = opts.groups ?? 1;
    this.baseWidth = opts.widthPerGroup ?? 64;
    const dilate = opts.replaceStrideWithDilation ?? [false, false, false];
    if (dilate.length !== 3) {
      throw new Error(`replaceStrideWithDilation: expected 3 booleans, got ${JSON.stringify(dilate)}`);
    }
    if (layers.length !== 4 || !layers.every((n) => Number.isInteger(n) && n >= 1)) {
      throw new Error(`layers: expected 4 positive integers, got ${JSON.stringify(layers)}`);
    }
    this.sd = opts.stochasticDepth;
    if (this.sd && !(this.sd.survivalProb > 0 && this.sd.survivalProb <= 1)) {
      throw new Error(`stochasticDepth.survivalProb must be in (0, 1], got ${this.sd.survivalProb}`);
    }
    this.totalBlocks = layers.reduce((a, b) => a + b, 0);
    const expansion = block === 'basic' ? BasicBlock.expansion : Bottleneck.expansion;

    this.conv1 = this.addModule('conv1', new Conv2d(3, this.inplanes, 7, { stride: 2, padding: 3, bias: false }));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(this.inplanes));
    this.relu = this.addModule('relu', new ReLU());
    this.maxpool = this.addModule('maxpool', new MaxPool2d(3, { stride: 2, padding: 1 }));
    this.layer1 = this.addModule('layer1', this.makeLayer(64, layers[0]));
    this.layer2 = this.addModule('layer2', this.makeLayer(128, layers[1], 2, dilate[0]));
    this.layer3 = this.addModule('layer3', this.makeLayer(256, layers[2], 2, dilate[1]));
    this.layer4 = this.addModule('layer4', this.makeLayer(512, layers[3], 2, dilate[2]));
    this.avgpool = this.addModule('avgpool', new AdaptiveAvgPool2d(1));
    this.fc = this.addModule('fc', new Linear(512 * expansion, numClasses));

    for (const [, m] of this.namedModules()) {
      if (m instanceof Conv2d) init.kaimingNormal_(m.weight, { mode: 'fan_out', nonlinearity: 'relu' });
      else if (m instanceof BatchNorm2d) {
        if (m.weight) init.constant_(m.weight, 1);
        if (m.bias) init.constant_(m.bias, 0);
      }
    }
    if (opts.zeroInitResidual) {
      for (const [, m] of this.namedModules()) {
        if (m instanceof Bottleneck && m.bn3.weight) init.constant_(m.bn3.weight, 0);
        else if (m instanceof BasicBlock && m.bn2.weight) init.constant_(m.bn2.weight, 0);
      }
    }
  }

  private newBlock(inplanes: number, planes: number, o: ResidualBlockOptions): Module {
    this.blockIndex++;
    const withSd: ResidualBlockOptions = this.sd
      ? {
          ...o,
          survivalProb: linearSurvivalProb(this.blockIndex, this.totalBlocks, this.sd.survivalProb),
          rng: this.sd.rng,
        }
      : o;
    return this.block === 'basic' ? new BasicBlock(inplanes, planes, withSd) : new Bottleneck(inplanes, planes, withSd);
  }

  private makeLayer(planes: number, blocks: number, stride = 1, dilate = false): Sequential {
    const expansion = this.block === 'basic' ? BasicBlock.expansion : Bottleneck.expansion;
    let downsample: Sequential | null = null;
    const previousDilation = this.dilation;
    if (dilate) {
      this.dilation *= stride;
      stride = 1;
    }
    if (stride !== 1 || this.inplanes !== planes * expansion) {
      downsample = new Sequential(
        conv1x1(this.inplanes, planes * expansion, stride),
        new BatchNorm2d(planes * expansion),
      );
    }
    const common = { groups: this.groups, baseWidth: this.baseWidth };
    const layer = new Sequential(
      this.newBlock(this.inplanes, planes, { ...common, stride, downsample, dilation: previousDilation }),
    );
    this.inplanes = planes * expansion;
    for (let i = 1; i < blocks; i++)
      layer.append(this.newBlock(this.inplanes, planes, { ...common, dilation: this.dilation }));
    return layer;
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'ResNet', x, 3, 'conv1');
    const stem = convBnRelu(this.conv1, this.bn1, this.relu, x);
    let y = this.maxpool.call(stem);
    y = this.layer4.call(this.layer3.call(this.layer2.call(this.layer1.call(y))));
    return this.fc.call(flatten(this.avgpool.call(y), 1));
  }
}

/** Options shared by the ResNet factories. */
export type ResNetFactoryOptions = Omit<ResNetOptions, 'groups' | 'widthPerGroup'>;

/** ResNet-18: BasicBlock x [2, 2, 2, 2], 11,689,512 parameters at 1000 classes. */
export const resnet18 = (opts: ResNetFactoryOptions = {}): ResNet => new ResNet('basic', [2, 2, 2, 2], opts);
/** ResNet-34: BasicBlock x [3, 4, 6, 3], 21,797,672 parameters. */
export const resnet34 = (opts: ResNetFactoryOptions = {}): ResNet => new ResNet('basic', [3, 4, 6, 3], opts);
/** ResNet-50: Bottleneck x [3, 4, 6, 3], 25,557,032 parameters. */
export const resnet50 = (opts: ResNetFactoryOptions = {}): ResNet => new ResNet('bottleneck', [3, 4, 6, 3], opts);
/** ResNet-101: Bottleneck x [3, 4, 23, 3], 44,549,160 parameters. */
export const resnet101 = (opts: ResNetFactoryOptions = {}): ResNet => new ResNet('bottleneck', [3, 4, 23, 3], opts);
/** ResNet-152: Bottleneck x [3, 8, 36, 3], 60,192,808 parameters. */
export const resnet152 = (opts: ResNetFactoryOptions = {}): ResNet => new ResNet('bottleneck', [3, 8, 36, 3], opts);
