// torchvision's segmentation models (fcn_resnet50, deeplabv3_resnet50): state-dict keys, shapes
// and order, parameter counts, and the `out` and `aux` logits of models filled with the weight
// formula, against test/fixtures/gen_zoo_segmentation.py.
import { describe, expect, it } from 'vitest';
import { models, noGrad, type Module, type Tensor } from '../src/index.js';
import { det, expectClose, loadFixture, thrown, type FixtureTensor } from './helpers.js';
import { fillModel } from './zoo-formula.js';

interface Case {
  name: string;
  factory: 'fcnResnet50' | 'deeplabv3Resnet50';
  options: { numClasses: number; auxLoss: boolean };
  inputShape: number[];
  seed: number;
  float32Error: number;
  out: FixtureTensor;
  aux: FixtureTensor;
}
const fx = loadFixture<{
  cases: Case[];
  keys: Record<string, [string, number[]][]>;
  numParameters: Record<string, number>;
}>('zoo_segmentation.json');

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const count = (m: Module) => m.parameters().reduce((a, p) => a + p.size, 0);

describe('segmentation zoo vs torchvision', () => {
  it.each(Object.keys(fx.keys).map((k) => [k] as const))('%s: keys, shapes, order and parameter count', (tag) => {
    const [factory, aux] = [
      tag.startsWith('fcn') ? models.fcnResnet50 : models.deeplabv3Resnet50,
      tag.endsWith('_aux'),
    ];
    const m = factory({ auxLoss: aux });
    expect([...m.stateDict()].map(([k, t]) => [k, [...t.shape]])).toEqual(fx.keys[tag]);
    expect(count(m)).toBe(fx.numParameters[tag]);
  });

  it.each(fx.cases.map((c) => [c.name, c] as const))('%s: out and aux logits', (_n, c) => {
    const m = models[c.factory](c.options);
    fillModel(m);
    m.eval();
    const x = det(c.inputShape, c.seed);
    const y = noGrad(() => (m as models.SegmentationModel).forwardWithAux(x));
    for (const [key, want] of [
      ['out', c.out],
      ['aux', c.aux],
    ] as const) {
      const got = y[key] as Tensor;
      expect(got.shape).toEqual(want.shape);
      // As the classification zoo (test/zoo.test.ts): rtol 1e-4 plus 2e-5 * max|logit|.
      expectClose(
        got.data,
        want.data,
        1e-4,
        2e-5 * maxAbs(want.data),
        `${c.name} ${key} (torch f32 vs f64: ${c.float32Error})`,
      );
    }
    // forward is the `out` head, and predict gives it too.
    expectClose(noGrad(() => m.forward(x)).data, y.out.data, 0, 0, 'forward');
    expect(thrown(() => m.forward(det([1, 1, 16, 16], 1))).message).toMatch(/expected an image batch \[N, 3, H, W\]/);
  });
});
