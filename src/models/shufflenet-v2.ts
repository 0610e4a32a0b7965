// ShuffleNetV2 (Ma et al. 2018) as torchvision 0.14 builds it (torchvision/models/shufflenetv2.py):
// blocks that split the channels in two (or, when downsampling, run two branches), transform one
// half with a 1x1 -> 3x3 depthwise -> 1x1 branch, concatenate and shuffle the channels. Same
// module tree and state-dict keys (`stage2.0.branch1.0.weight`, `conv5.1.running_var`,
// `fc.weight`), PyTorch's default initialisation, same forward.
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { cat, flatten, reshape, split, transpose } from '../ops/elementwise.js';
import { adaptiveAvgPool2d } from '../ops/pool.js';
import type { Tensor } from '../tensor.js';
import { checkModelInput } from './model-input.js';

/**
 * [N, C, H, W] with its channels regrouped as [groups, C/groups] -> [C/groups, groups], as
 * torchvision's channel_shuffle.
 */
export function channelShuffle(x: Tensor, groups: number): Tensor {
  const [n, c, h, w] = x.shape;
  const grouped = reshape(x, [n, groups, c / groups, h, w]);
  return reshape(transpose(grouped, [0, 2, 1, 3, 4]), [n, c, h, w]);
}

const depthwise = (channels: number, stride: number) =>
  new Conv2d(channels, channels, 3, { stride, padding: 1, groups: channels, bias: false });
const pointwise = (inC: number, outC: number) => new Conv2d(inC, outC, 1, { bias: false });

/** ShuffleNetV2's unit: branch1 (downsampling only) and branch2, concatenated and shuffled. */
export class ShuffleUnit extends Module {
  readonly branch1: Sequential;
  readonly branch2: Sequential;

  constructor(
    inp: number,
    oup: number,
    readonly stride: number,
  ) {
    super();
    if (stride < 1 || stride > 3) throw new Error(`ShuffleUnit: stride should be 1 to 3, got ${stride}`);
    const bf = Math.floor(oup / 2);
    if (stride === 1 && inp !== bf * 2) {
      throw new Error(`ShuffleUnit: at stride 1 inp (${inp}) must be twice oup / 2 (${bf})`);
    }
    this.branch1 = this.addModule(
      'branch1',
      stride > 1
        ? new Sequential(
            depthwise(inp, stride),
            new BatchNorm2d(inp),
            pointwise(inp, bf),
            new BatchNorm2d(bf),
            new ReLU(),
          )
        : new Sequential(),
    );
    this.branch2 = this.addModule(
      'branch2',
      new Sequential(
        pointwise(stride > 1 ? inp : bf, bf),
        new BatchNorm2d(bf),
        new ReLU(),
        depthwise(bf, stride),
        new BatchNorm2d(bf),
        pointwise(bf, bf),
        new BatchNorm2d(bf),
        new ReLU(),
      ),
    );
  }

  forward(x: Tensor): Tensor {
    let out: Tensor;
    if (this.stride === 1) {
      const half = x.shape[1] / 2;
      const [x1, x2] = split(x, [half, half], 1);
      out = cat([x1, this.branch2.call(x2)], 1);
    } else {
      out = cat([this.branch1.call(x), this.branch2.call(x)], 1);
    }
    return channelShuffle(out, 2);
  }
}

export interface ShuffleNetV2Options {
  /** Output classes (default 1000). */
  numClasses?: number;
}

/**
 * ShuffleNetV2. Input [N, 3, H, W] (224x224 for ImageNet) -> logits [N, numClasses].
 * Children: conv1, maxpool, stage2, stage3, stage4, conv5, fc. x1.0: 2,278,604 parameters at
 * 1000 classes.
 */
export class ShuffleNetV2 extends Module {
  readonly conv1: Sequential;
  readonly maxpool: MaxPool2d;
  readonly stage2: Sequential;
  readonly stage3: Sequential;
  readonly stage4: Sequential;
  readonly conv5: Sequential;
  readonly fc: Linear;

  constructor(stagesRepeats: readonly number[], stagesOutChannels: readonly number[], opts: ShuffleNetV2Options = {}) {
    super();
    if (stagesRepeats.length !== 3) throw new Error('ShuffleNetV2: expected stagesRepeats as a list of 3 integers');
    if (stagesOutChannels.length !== 5)
      throw new Error('ShuffleNetV2: expected stagesOutChannels as a list of 5 integers');
    let input = stagesOutChannels[0];
    this.conv1 = this.addModule(
      'conv1',
      new Sequential(
        new Conv2d(3, input, 3, { stride: 2, padding: 1, bias: false }),
        new BatchNorm2d(input),
        new ReLU(),
      ),
    );
    this.maxpool = this.addModule('maxpool', new MaxPool2d(3, { stride: 2, padding: 1 }));
    const stages: Sequential[] = [];
    for (let s = 0; s < 3; s++) {
      const out = stagesOutChannels[s + 1];
      const units = [new ShuffleUnit(input, out, 2)];
      for (let i = 1; i < stagesRepeats[s]; i++) units.push(new ShuffleUnit(out, out, 1));
      stages.push(this.addModule(`stage${s + 2}`, new Sequential(...units)));
      input = out;
    }
    [this.stage2, this.stage3, this.stage4] = stages;
    const last = stagesOutChannels[4];
    this.conv5 = this.addModule(
      'conv5',
      new Sequential(new Conv2d(input, last, 1, { bias: false }), new BatchNorm2d(last), new ReLU()),
    );
    this.fc = this.addModule('fc', new Linear(last, opts.numClasses ?? 1000));
  }

  forward(x: Tensor): Tensor {
    checkModelInput(this, 'ShuffleNetV2', x, 3, 'conv1.0');
    let y = this.maxpool.call(this.conv1.call(x));
    y = this.conv5.call(this.stage4.call(this.stage3.call(this.stage2.call(y))));
    return this.fc.call(flatten(adaptiveAvgPool2d(y, 1), 1));
  }
}

/** ShuffleNetV2 x1.0 as torchvision.models.shufflenet_v2_x1_0 (no pretrained weights). */
export const shufflenetV2X1_0 = (opts: ShuffleNetV2Options = {}): ShuffleNetV2 =>
  new ShuffleNetV2([4, 8, 4], [24, 116, 232, 464, 1024], opts);
/** ShuffleNetV2 x0.5 as torchvision.models.shufflenet_v2_x0_5. */
export const shufflenetV2X0_5 = (opts: ShuffleNetV2Options = {}): ShuffleNetV2 =>
  new ShuffleNetV2([4, 8, 4], [24, 48, 96, 192, 1024], opts);
