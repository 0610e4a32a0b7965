// Seeing inside a model: summary() against torchinfo 1.8's numbers for the zoo
// (test/fixtures/summary.json, made by test/fixtures/gen_summary.py), receptive fields against
// the hand-derived values of the classic networks.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { summary } from '../src/insight/summary.js';
import {
  alexnet,
  densenet121,
  googlenet,
  inceptionV3,
  mobilenetV2,
  resnet18,
  resnet50,
  squeezenet1_1,
  vgg16,
  vgg16Bn,
} from '../src/models/index.js';
import { Conv2d, isInferenceFusionEnabled, Linear, Module, ReLU, Sequential, type Tensor } from '../src/index.js';

interface TorchinfoLayer {
  name: string;
  class_name: string;
  depth: number;
  output_size: number[];
  macs: number;
  is_leaf: boolean;
}
interface TorchinfoModel {
  input_size: number[];
  total_params: number;
  trainable_params: number;
  total_mult_adds: number;
  layers?: TorchinfoLayer[];
}
const golden = JSON.parse(readFileSync(new URL('./fixtures/summary.json', import.meta.url), 'utf8')) as {
  models: Record<string, TorchinfoModel>;
};

const zoo: [string, () => Module, number][] = [
  ['alexnet', () => alexnet(), 224],
  ['vgg16', () => vgg16(), 224],
  ['vgg16_bn', () => vgg16Bn(), 224],
  ['googlenet', () => googlenet({ auxLogits: false }), 224],
  ['resnet18', () => resnet18(), 224],
  ['resnet50', () => resnet50(), 224],
  ['densenet121', () => densenet121(), 224],
  ['squeezenet1_1', () => squeezenet1_1(), 224],
  ['mobilenet_v2', () => mobilenetV2(), 224],
  ['inception_v3', () => inceptionV3({ auxLogits: false }), 299],
];

const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, FERROCONV_NUM_THREADS: '2' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('summary', () => {
  it('pins ResNet-50: 25,557,032 parameters and 4.09 G mult-adds at [1, 3, 224, 224]', () => {
    const s = summary(resnet50(), [1, 3, 224, 224]);
    expect(s.totalParams).toBe(25_557_032);
    expect((s.totalMacs / 1e9).toFixed(2)).toBe('4.09');
    expect(String(s)).toMatch(/Total mult-adds \(G\): 4\.09/);
  });

  it.each(zoo)(
    '%s: parameters and mult-adds equal torchinfo, leaf by leaf where the fixture lists them',
    (name, build, size) => {
      const ref = golden.models[name];
      const model = build();
      const s = summary(model, [1, 3, size, size]);
      expect(s.totalParams).toBe(ref.total_params);
      expect(s.trainableParams).toBe(ref.trainable_params);
      expect(s.totalMacs).toBe(ref.total_mult_adds);
      if (!ref.layers) return;
      // torchinfo lists every module call, in call order; ours too. Leaves carry the numbers
      // (its container MACs are not summed, and are computed differently).
      const theirs = ref.layers.filter((l) => l.is_leaf);
      const ours = s.rows.filter((r) => r.leaf);
      const key = (path: string, type: string) => `${path}:${type}`;
      const byKey = new Map<string, typeof ours>();
      for (const r of ours) byKey.set(key(r.path, r.type), [...(byKey.get(key(r.path, r.type)) ?? []), r]);
      for (const l of theirs) {
        const mine = byKey.get(key(l.name, l.class_name))?.shift();
        expect(mine, `${name}: layer ${l.name} (${l.class_name})`).toBeDefined();
        expect(mine!.outputShape).toEqual(l.output_size);
        expect(mine!.macs).toBe(l.macs);
      }
    },
    120_000,
  );

  it('gives the receptive fields of the classic networks (size/jump, start at the first unit)', () => {
    const field = (m: Module, path: string, size = 224) => {
      const row = summary(m, [1, 3, size, size]).rows.find((r) => r.path === path)!;
      return row.receptiveField![0];
    };
    // AlexNet's pool5: 11 (conv1, /4) +2*4 (pool) +4*8 (conv2) +2*8 (pool) +3*2*16 (conv3-5)
    // +2*16 (pool) = 195 pixels, 32 apart.
    expect(field(alexnet(), 'features.12')).toMatchObject({ size: 195, jump: 32 });
    // VGG-16's pool5: 212.
    expect(field(vgg16(), 'features.30')).toMatchObject({ size: 212, jump: 32 });
    // torchvision's ResNet-50 (stride in the 3x3 conv, "v1.5"): 7 +2*2 (maxpool) +3*2*4 (layer1)
    // +2*4 +3*2*8 (layer2) +2*8 +5*2*16 (layer3) +2*16 +2*2*32 (layer4) = 427; the residual
    // paths see less, so the union is the main path's.
    const r50 = field(resnet50(), 'layer4');
    expect(r50).toEqual({ size: 427, jump: 32, start: 0.5 });
    // Unequal axes and padding: a 3x5 kernel, stride [2, 1], padding [1, 0], then a 2x2 pool.
    const m = new Sequential(new Conv2d(1, 2, [3, 5], { stride: [2, 1], padding: [1, 0] }), new ReLU());
    const rf = summary(m, [1, 1, 9, 9]).rows.find((r) => r.path === '0')!.receptiveField!;
    expect(rf[0]).toEqual({ size: 3, jump: 2, start: 0.5 });
    expect(rf[1]).toEqual({ size: 5, jump: 1, start: 2.5 });
  });

  it('counts frozen and shared parameters once, reports memory, and changes nothing', () => {
    const shared = new Linear(4, 4);
    class Twice extends Module {
      readonly fc = this.addModule('fc', shared);
      readonly head = this.addModule('head', new Linear(4, 2));
      forward(x: Tensor): Tensor {
        return this.head.call(this.fc.call(this.fc.call(x)));
      }
    }
    const m = new Twice();
    m.freeze('head.');
    m.train();
    const before = m.fc.weight.data.slice();
    const s = summary(m, [3, 4]);
    expect(s.totalParams).toBe(20 + 10);
    expect(s.trainableParams).toBe(20);
    expect(s.frozenParams).toBe(10);
    expect(s.rows.map((r) => r.path)).toEqual(['', 'fc', 'fc', 'head']);
    expect(s.totalMacs).toBe(3 * 20 * 2 + 3 * 10); // the shared layer runs twice
    expect(s.bytes).toEqual({ input: 48, activations: (12 + 12 + 6) * 4, params: 120 });
    expect(m.training).toBe(true);
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(m.fc.weight.data).toEqual(before);
    expect(m.fc.weight.grad).toBeNull();
    expect(() => summary(m, [3, 0])).toThrow(/summary: expected an input shape of positive integers/);
    expect(() => summary(m, [3, 5])).toThrow(/Linear/);
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(m.training).toBe(true);
  });
});

describe('ferroconv summary', () => {
  it('prints the table and the JSON, and refuses a bad input shape in one line', () => {
    const t = cli('summary', '--model', 'resnet50', '--depth', '1');
    expect(t.code, t.err).toBe(0);
    expect(t.out).toMatch(/layer4 \(Sequential\) +\[1, 2048, 7, 7\] +14,964,736 .* 427\/32\/0\.5/);
    expect(t.out).toContain('Total params: 25,557,032');
    expect(t.out).not.toContain('conv1 (Conv2d)  '.repeat(2));
    const j = cli('summary', '--model', 'mnist-net', '--input', '2,1,28,28', '--json');
    expect(j.code, j.err).toBe(0);
    const s = JSON.parse(j.out);
    expect(s.inputShapes).toEqual([[2, 1, 28, 28]]);
    expect(s.totalParams).toBe(s.rows[0].params);
    const bad = cli('summary', '--model', 'resnet18', '--input', '1,3,x');
    expect(bad.code).toBe(2);
    expect(bad.err).toBe("ferroconv: --input: expected positive integers such as 1,3,224,224, got '1,3,x'\n");
    const help = cli('summary', '--help');
    expect(help.out).toContain('ferroconv summary --model NAME');
  }, 120_000);
});
