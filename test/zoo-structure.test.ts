// Model zoo structure: parameter counts, state-dict keys and shapes against torchvision 0.14
// (test/fixtures/gen_zoo_keys.py), initialisations, stochastic depth and input errors. Nothing here
// runs a kernel other than conv2d, so it runs before the other kernels are merged; the numeric
// forward checks are in zoo.test.ts.
import { describe, expect, it } from 'vitest';
import { BatchNorm2d, Conv2d, type Linear, MaxPool2d, Module, Rng, Tensor, fromArray } from '../src/index.js';
import {
  AlexNet,
  type BasicBlock,
  type Bottleneck,
  DenseNet,
  GoogLeNet,
  LeNet5,
  ResNet,
  type VGG,
  alexnet,
  densenet121,
  densenet161,
  densenet169,
  densenet201,
  mobilenetV2,
  inceptionV3,
  efficientnetB0,
  shufflenetV2X0_5,
  shufflenetV2X1_0,
  mobilenetV3Large,
  mobilenetV3Small,
  squeezenet1_0,
  squeezenet1_1,
  googlenet,
  lenet5,
  linearSurvivalProb,
  resnet101,
  resnet152,
  resnet18,
  resnet34,
  resnet50,
  stochasticDepth,
  vgg11,
  vgg11Bn,
  vgg16,
  vgg16Bn,
  vgg19,
} from '../src/models/index.js';
import { loadFixture, thrown } from './helpers.js';

interface KeysFixture {
  keys: Record<string, [string, number[]][]>;
  numParameters: Record<string, number>;
}
const fixture = loadFixture<KeysFixture>('zoo_keys.json');

function keysAndShapes(entries: Iterable<[string, Tensor]>): [string, number[]][] {
  return [...entries].map(([k, t]) => [k, [...t.shape]]);
}

const BUFFER = /\.(running_mean|running_var|num_batches_tracked)$/;

/** Compares with a torchvision state_dict() listing: same keys, shapes and order. */
function expectTorchKeys(model: Module, theirs: [string, number[]][]): void {
  const ours = keysAndShapes(model.stateDict());
  expect(ours).toEqual(theirs);
  expect(keysAndShapes(model.namedParameters())).toEqual(theirs.filter(([k]) => !BUFFER.test(k)));
  expect(keysAndShapes(model.namedBuffers())).toEqual(theirs.filter(([k]) => BUFFER.test(k)));
  expect(ours.length).toBe(theirs.length);
}

function stats(values: ArrayLike<number>): { mean: number; std: number; min: number; max: number } {
  let s = 0;
  let s2 = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    s += v;
    s2 += v * v;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  const mean = s / values.length;
  return { mean, std: Math.sqrt(s2 / values.length - mean * mean), min, max };
}

const allEqual = (t: Tensor | null, v: number) => t?.data.every((x) => x === v) ?? false;

const rgb = (c: number, h: number, w = h) => new Tensor(new Float32Array(c * h * w), [1, c, h, w]);

// Each model is built once (the big ones allocate and initialise 60-145M floats) and checked for
// everything it is used for (count, keys, initialisation, input errors) before it is dropped.
type Case = [name: string, build: () => Module, count: number, keyed: string | null, extra?: (m: Module) => void];
const cases: Case[] = [
  [
    'lenet5',
    () => lenet5(),
    61_706,
    null,
    (m) => {
      expect(() => m.forward(rgb(3, 28))).toThrow(/LeNet5: .*'features\.0' takes 1 channel\).*got \[1, 3, 28, 28\]/);
      expect(() => m.forward(rgb(1, 32))).toThrow('LeNet5: expected a 28x28 input [N, 1, 28, 28], got [1, 1, 32, 32]');
    },
  ],
  [
    'alexnet',
    () => alexnet(),
    61_100_840,
    'alexnet',
    (m) => {
      expect(m).toBeInstanceOf(AlexNet);
      expect(() => m.forward(rgb(1, 64))).toThrow(/AlexNet: .*'features\.0' takes 3 channels/);
    },
  ],
  [
    'vgg11',
    () => vgg11(),
    132_863_336,
    'vgg11',
    (m) => {
      // torchvision's VGG init: normal(0, 0.01) linears with zero bias; kaiming fan_out convs, zero bias.
      const vgg = m as VGG;
      const fc = vgg.classifier.at(6) as Linear;
      expect(stats(fc.weight.data).std).toBeCloseTo(0.01, 3);
      expect(allEqual(fc.bias, 0)).toBe(true);
      const conv = vgg.features.at(0) as Conv2d;
      expect(allEqual(conv.bias, 0)).toBe(true);
      expect(stats(conv.weight.data).std).toBeCloseTo(Math.sqrt(2 / (64 * 9)), 2);
      expect(() => m.forward(new Tensor(new Float32Array(3), [3]))).toThrow(
        /VGG: expected input \[N, 3, H, W\].*got \[3\]/,
      );
    },
  ],
  [
    'vgg11_bn',
    () => vgg11Bn({ initWeights: false }),
    132_868_840,
    'vgg11_bn',
    (m) => {
      // initWeights: false keeps PyTorch's layer defaults (uniform biases).
      expect(allEqual(((m as VGG).classifier.at(6) as Linear).bias, 0)).toBe(false);
    },
  ],
  ['vgg16', () => vgg16({ initWeights: false }), 138_357_544, null],
  ['vgg16_bn', () => vgg16Bn({ initWeights: false }), 138_365_992, null],
  ['vgg19', () => vgg19({ initWeights: false }), 143_667_240, null],
  [
    'googlenet',
    () => googlenet(),
    6_624_904,
    'googlenet',
    (m) => {
      expect(m).toBeInstanceOf(GoogLeNet);
      expect(() => m.forward(rgb(1, 32))).toThrow(/GoogLeNet: .*'conv1' takes 3 channels/);
    },
  ],
  [
    'googlenet_aux',
    () => googlenet({ auxLogits: true }),
    13_004_888,
    'googlenet_aux',
    (m) => {
      // trunc_normal_(0, 0.01, -2, 2) conv and linear weights, BN 1/0 with eps 0.001.
      const g = m as GoogLeNet;
      const s = stats((g.inception4e.branch2.at(1).getSubmodule('conv') as Conv2d).weight.data);
      expect(s.std).toBeCloseTo(0.01, 3);
      expect(s.max).toBeLessThanOrEqual(2);
      expect(stats(g.aux1!.fc1.weight.data).std).toBeCloseTo(0.01, 3);
      expect(allEqual(g.conv1.bn.weight, 1) && allEqual(g.conv1.bn.bias, 0)).toBe(true);
      expect(g.conv1.bn.eps).toBe(0.001);
    },
  ],
  [
    'resnet18',
    () => resnet18(),
    11_689_512,
    'resnet18',
    (m) => {
      expect(() => m.forward(rgb(1, 32))).toThrow(
        "ResNet: expected input [N, 3, H, W] (layer 'conv1' takes 3 channels), got [1, 1, 32, 32]",
      );
      expect((m as ResNet).layer2.at(1)).toMatchObject({ survivalProb: 1 });
    },
  ],
  ['resnet34', () => resnet34(), 21_797_672, null],
  // Stochastic depth and zeroInitResidual change neither the count nor the keys.
  [
    'resnet50',
    () => resnet50({ zeroInitResidual: true, stochasticDepth: { survivalProb: 0.8 } }),
    25_557_032,
    'resnet50',
    (m) => {
      const r = m as ResNet;
      // kaiming_normal_(fan_out, relu) convs; BN 1/0 except the zeroed last BN of each residual branch.
      const s = stats((r.layer3.at(0) as Bottleneck).conv2.weight.data); // [256, 256, 3, 3]
      expect(Math.abs(s.mean)).toBeLessThan(1e-3);
      expect(s.std).toBeCloseTo(Math.sqrt(2 / (256 * 9)), 3);
      for (const [name, mod] of m.namedModules()) {
        if (!(mod instanceof BatchNorm2d)) continue;
        expect(allEqual(mod.bias, 0)).toBe(true);
        expect(allEqual(mod.weight, /\.bn3$/.test(name) ? 0 : 1)).toBe(true);
      }
      expect((r.layer4.at(2) as Bottleneck).survivalProb).toBeCloseTo(0.8, 12);
      expect((r.layer1.at(0) as Bottleneck).survivalProb).toBeCloseTo(1 - 0.2 / 16, 12);
    },
  ],
  ['resnet101', () => resnet101(), 44_549_160, null],
  ['resnet152', () => resnet152(), 60_192_808, null],
  ['resnext50_32x4d', () => new ResNet('bottleneck', [3, 4, 6, 3], { groups: 32, widthPerGroup: 4 }), 25_028_904, null],
  [
    'densenet121',
    () => densenet121(),
    7_978_856,
    'densenet121',
    (m) => {
      const d = m as DenseNet;
      // kaiming_normal_ (fan_in) convs, zero classifier bias, default classifier weight.
      const conv = d.features.getSubmodule('denseblock3.denselayer5.conv1') as Conv2d; // [128, 384, 1, 1]
      expect(stats(conv.weight.data).std).toBeCloseTo(Math.sqrt(2 / 384), 3);
      expect(allEqual(d.classifier.bias, 0)).toBe(true);
      expect(allEqual(d.classifier.weight, 0)).toBe(false);
      expect(() => m.forward(rgb(4, 32))).toThrow(
        /DenseNet: .*'features\.conv0' takes 3 channels.*got \[1, 4, 32, 32\]/,
      );
    },
  ],
  ['densenet161', () => densenet161(), 28_681_000, null],
  ['densenet169', () => densenet169(), 14_149_480, null],
  ['densenet201', () => densenet201(), 20_013_928, null],
  ['squeezenet1_0', () => squeezenet1_0(), 1_248_424, null],
  [
    'squeezenet1_1',
    () => squeezenet1_1(),
    1_235_496,
    'squeezenet1_1',
    (m) => {
      // torchvision: the final conv normal(0, 0.01), other convs kaiming_uniform_, zero biases.
      const final = m.getSubmodule('classifier.1') as Conv2d;
      expect(stats(final.weight.data).std).toBeCloseTo(0.01, 3);
      expect(allEqual(final.bias, 0)).toBe(true);
      const first = m.getSubmodule('features.0') as Conv2d; // [64, 3, 3, 3]: bound sqrt(6 / 27)
      expect(stats(first.weight.data).max).toBeLessThanOrEqual(Math.sqrt(6 / 27));
      expect(stats(first.weight.data).std).toBeCloseTo(Math.sqrt(2 / 27), 1);
      expect(() => m.forward(rgb(1, 64))).toThrow(/SqueezeNet: .*'features\.0' takes 3 channels/);
    },
  ],
  [
    'mobilenet_v2',
    () => mobilenetV2(),
    3_504_872,
    'mobilenet_v2',
    (m) => {
      // kaiming_normal_ fan_out convs: the 1x1 projection of block 17 is [320, 960, 1, 1].
      const proj = m.getSubmodule('features.17.conv.2') as Conv2d;
      expect(stats(proj.weight.data).std).toBeCloseTo(Math.sqrt(2 / 320), 2);
      const fc = m.getSubmodule('classifier.1') as Linear;
      expect(stats(fc.weight.data).std).toBeCloseTo(0.01, 3);
      expect(allEqual(fc.bias, 0)).toBe(true);
      expect(() => m.forward(rgb(4, 32))).toThrow(/MobileNetV2: .*'features\.0\.0' takes 3 channels/);
    },
  ],
  ['mobilenet_v3_large', () => mobilenetV3Large(), 5_483_032, null],
  [
    'mobilenet_v3_small',
    () => mobilenetV3Small(),
    2_542_856,
    'mobilenet_v3_small',
    (m) => {
      // Batch norm as torchvision's MobileNetV3: eps 0.001, momentum 0.01.
      const bn = m.getSubmodule('features.0.1') as BatchNorm2d;
      expect([bn.eps, bn.momentum]).toEqual([0.001, 0.01]);
      expect(() => m.forward(rgb(1, 32))).toThrow(/MobileNetV3: .*'features\.0\.0' takes 3 channels/);
    },
  ],
  [
    'efficientnet_b0',
    () => efficientnetB0(),
    5_288_548,
    'efficientnet_b0',
    (m) => {
      // Stochastic depth grows linearly with the block index: 0.2 * 15 / 16 for the last block.
      const last = m.getSubmodule('features.7.0') as unknown as { stochasticDepthProb: number };
      expect(last.stochasticDepthProb).toBeCloseTo((0.2 * 15) / 16, 12);
      // The classifier: uniform(-1/sqrt(1000), 1/sqrt(1000)), zero bias.
      const fc = m.getSubmodule('classifier.1') as Linear;
      expect(stats(fc.weight.data).max).toBeLessThanOrEqual(1 / Math.sqrt(1000));
      expect(allEqual(fc.bias, 0)).toBe(true);
    },
  ],
  ['shufflenet_v2_x0_5', () => shufflenetV2X0_5(), 1_366_792, null],
  [
    'shufflenet_v2_x1_0',
    () => shufflenetV2X1_0(),
    2_278_604,
    'shufflenet_v2_x1_0',
    (m) => {
      expect(() => m.forward(rgb(1, 32))).toThrow(/ShuffleNetV2: .*'conv1\.0' takes 3 channels/);
    },
  ],
  [
    'inception_v3',
    () => inceptionV3(),
    27_161_264,
    'inception_v3',
    (m) => {
      // Truncated normal: std 0.1, the auxiliary 5x5 conv 0.01, its linear 0.001.
      const conv = m.getSubmodule('Mixed_6b.branch1x1.conv') as Conv2d;
      expect(stats(conv.weight.data).std).toBeCloseTo(0.1, 2);
      expect(stats((m.getSubmodule('AuxLogits.conv1.conv') as Conv2d).weight.data).std).toBeCloseTo(0.01, 3);
      expect(stats((m.getSubmodule('AuxLogits.fc') as Linear).weight.data).std).toBeCloseTo(0.001, 4);
      expect(() => m.forward(rgb(1, 96))).toThrow(/Inception3: .*'Conv2d_1a_3x3' takes 3 channels/);
    },
  ],
  ['inception_v3_noaux', () => inceptionV3({ auxLogits: false, initWeights: false }), 23_834_568, null],
];

describe('parameter counts and state-dict keys equal torchvision 0.14', () => {
  it.each(cases)(
    '%s',
    (name, build, count, keyed, extra) => {
      const model = build();
      expect(model.numParameters()).toBe(count);
      if (name in fixture.numParameters) expect(count).toBe(fixture.numParameters[name]);
      if (keyed) expectTorchKeys(model, fixture.keys[keyed]);
      extra?.(model);
    },
    180_000,
  );

  it('lenet5 has the documented layers', () => {
    const m = lenet5({ numClasses: 7 });
    expect(keysAndShapes(m.stateDict())).toEqual([
      ['features.0.weight', [6, 1, 5, 5]],
      ['features.0.bias', [6]],
      ['features.3.weight', [16, 6, 5, 5]],
      ['features.3.bias', [16]],
      ['classifier.0.weight', [120, 400]],
      ['classifier.0.bias', [120]],
      ['classifier.2.weight', [84, 120]],
      ['classifier.2.bias', [84]],
      ['classifier.4.weight', [7, 84]],
      ['classifier.4.bias', [7]],
    ]);
    expect(lenet5({ inChannels: 3 }).getSubmodule('features.0')).toMatchObject({ inChannels: 3 });
  });

  it('numClasses sets the last layers; a state dict loads back', () => {
    const a = resnet18({ numClasses: 4 });
    expect(a.fc.weight.shape).toEqual([4, 512]);
    const b = resnet18({ numClasses: 4 });
    b.loadStateDict(a.stateDict());
    const sa = a.stateDict();
    for (const [k, t] of b.stateDict()) {
      const src = sa.get(k)!.data;
      expect(t.data.every((v, i) => v === src[i])).toBe(true);
    }
    const g = new GoogLeNet({ numClasses: 3, auxLogits: true, initWeights: false });
    expect([g.fc.weight.shape, g.aux1!.fc2.weight.shape, g.aux2!.fc2.weight.shape]).toEqual([
      [3, 1024],
      [3, 1024],
      [3, 1024],
    ]);
    // 64 stem channels + 32, halved by the transition, + 32.
    expect(new DenseNet({ blockConfig: [1, 1], numClasses: 5 }).classifier.weight.shape).toEqual([5, 48 + 32]);
    expect(new AlexNet({ numClasses: 3 }).classifier.at(6)).toMatchObject({ outFeatures: 3 });
  }, 60_000);
});

describe('stochastic depth', () => {
  const m18 = resnet18({ stochasticDepth: { survivalProb: 0.5 } });

  it('survival probability decays linearly from 1 (input) to survivalProb (last block)', () => {
    expect(linearSurvivalProb(8, 8, 0.5)).toBe(0.5);
    expect(linearSurvivalProb(0, 8, 0.5)).toBe(1);
    expect(linearSurvivalProb(4, 8, 0.5)).toBe(0.75);
    const probs = [m18.layer1, m18.layer2, m18.layer3, m18.layer4].flatMap((l) =>
      [0, 1].map((i) => (l.at(i) as BasicBlock).survivalProb),
    );
    expect(probs).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((l) => 1 - (l / 8) * 0.5));
  });

  it('adds no parameters or buffers', () => {
    expectTorchKeys(m18, fixture.keys.resnet18);
  });

  it('rejects survival probabilities outside (0, 1]', () => {
    expect(() => resnet18({ stochasticDepth: { survivalProb: 0 } })).toThrow(/survivalProb must be in \(0, 1\], got 0/);
    expect(() => resnet18({ stochasticDepth: { survivalProb: 1.5 } })).toThrow(/got 1.5/);
    expect(() => stochasticDepth(fromArray([1]), -1, true, new Rng(1))).toThrow(
      /survivalProb must be in \(0, 1\], got -1/,
    );
  });

  it('is the identity in eval and per sample keep-and-rescale or drop in training', () => {
    const x = new Tensor(
      Float32Array.from({ length: 64 * 6 }, (_, i) => 1 + (i % 7)),
      [64, 2, 3],
    );
    expect(stochasticDepth(x, 0.7, false, new Rng(1))).toBe(x);
    expect(stochasticDepth(x, 1, true, new Rng(1))).toBe(x);
    const y = stochasticDepth(x, 0.25, true, new Rng(3));
    let kept = 0;
    for (let n = 0; n < 64; n++) {
      const row = Array.from(y.data.subarray(n * 6, n * 6 + 6));
      const src = Array.from(x.data.subarray(n * 6, n * 6 + 6));
      if (row.every((v) => v === 0)) continue;
      kept++;
      row.forEach((v, j) => {
        expect(v).toBeCloseTo(src[j] / 0.25, 5);
      });
    }
    expect(kept).toBeGreaterThan(5);
    expect(kept).toBeLessThan(30);
    // Over many draws the keep rate is the survival probability.
    const rng = new Rng(11);
    let total = 0;
    const big = new Tensor(new Float32Array(4000).fill(1), [4000, 1]);
    for (let r = 0; r < 5; r++) total += stochasticDepth(big, 0.6, true, rng).data.filter((v) => v !== 0).length;
    expect(total / 20000).toBeCloseTo(0.6, 1);
  });

  it('back-propagates through the kept samples only', () => {
    const x = new Tensor(
      Float32Array.from({ length: 40 }, (_, i) => i),
      [20, 2],
    ).requiresGrad_();
    const y = stochasticDepth(x, 0.5, true, new Rng(5));
    y.backward(new Tensor(new Float32Array(40).fill(1), [20, 2]));
    for (let n = 0; n < 20; n++) {
      const dropped = y.data[2 * n] === 0 && y.data[2 * n + 1] === 0;
      expect(x.grad!.data[2 * n]).toBe(dropped ? 0 : 2);
    }
  });
});

describe('input errors name the layer', () => {
  it('a window larger than its input is reported with the layer name and the model input', () => {
    // A user's own Module: its children run through call(), which names them.
    class Tiny extends Module {
      readonly conv = this.addModule('conv', new Conv2d(2, 3, 3));
      readonly pool = this.addModule('pool', new MaxPool2d(3, { stride: 2, ceilMode: true }));
      forward(x: Tensor): Tensor {
        return this.pool.call(this.conv.call(x));
      }
    }
    const m = new Tiny();
    // 4x4 -> conv 3x3 -> 2x2 -> ceil-mode 3x3 pool still gives 1x1 (as PyTorch).
    expect(() => m.call(rgb(2, 3))).toThrow(
      "Tiny: layer 'pool' (MaxPool2d) failed on [1, 3, 1, 1] (model input [1, 2, 3, 3]): input: 1x1 is too small for a 3x3 window (stride 2x2, padding 0x0, dilation 1x1): output would be 0x0",
    );
    expect(() => m.call(rgb(2, 2))).toThrow(
      "Tiny: layer 'conv' (Conv2d) failed on [1, 2, 2, 2] (model input [1, 2, 2, 2]): kernel: dilated kernel 3x3 is larger than the padded input 2x2",
    );
    // Entered through its forward, the model's input is not seen; the layer is named the same.
    expect(thrown(() => m.forward(rgb(2, 3))).message).toBe(
      "Tiny: layer 'pool' (MaxPool2d) failed on [1, 3, 1, 1]: input: 1x1 is too small for a 3x3 window (stride 2x2, padding 0x0, dilation 1x1): output would be 0x0",
    );
    // Errors from inside a layer keep their message, prefixed with the layer and its input.
    const err = thrown(() => m.call(rgb(5, 8)));
    expect(err.message).toMatch(
      /^Tiny: layer 'conv' \(Conv2d\) failed on \[1, 5, 8, 8\] \(model input \[1, 5, 8, 8\]\): Conv2d: expected input \[N, 2, H, W\]/,
    );
    expect((err.cause as Error).message).toMatch(/^Conv2d: expected input/);
  });

  it('bad architecture arguments are rejected', () => {
    expect(lenet5()).toBeInstanceOf(LeNet5);
    expect(() => new DenseNet({ blockConfig: [] })).toThrow(/blockConfig: expected positive integers/);
    expect(() => new DenseNet({ blockConfig: [1], dropRate: 1 })).toThrow(/dropRate must be in \[0, 1\), got 1/);
    expect(() => new ResNet('basic', [2, 2, 2] as never)).toThrow(/layers: expected 4 positive integers/);
    expect(() => new ResNet('basic', [1, 1, 1, 1], { groups: 2 })).toThrow(/BasicBlock only supports groups=1/);
  });
});
