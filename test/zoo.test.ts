// Model zoo forward parity with torchvision 0.14: each family's model, filled through stateDict()
// with the deterministic formula of test/fixtures/gen_zoo_logits.py, gives torchvision's logits in
// eval mode. Also: smaller inputs, too-small inputs (errors naming the layer), stochastic depth in
// eval and training, GoogLeNet's auxiliary heads, and backward through whole models. Needs the
// linear/pool/batch-norm/activation/elementwise kernels.
import { describe, expect, it } from 'vitest';
import { type Module, Rng, Tensor, noGrad, sum } from '../src/index.js';
import {
  type GoogLeNet,
  ResNet,
  alexnet,
  densenet121,
  mobilenetV2,
  inceptionV3,
  efficientnetB0,
  shufflenetV2X1_0,
  mobilenetV3Large,
  mobilenetV3Small,
  squeezenet1_0,
  squeezenet1_1,
  googlenet,
  lenet5,
  resnet18,
  resnet50,
  vgg11Bn,
} from '../src/models/index.js';
import { det, expectClose, loadFixture, type FixtureTensor } from './helpers.js';
import { fillByFormula, fillModel } from './zoo-formula.js';

interface Case {
  name: string;
  factory: string;
  options: Record<string, unknown>;
  inputShape: number[];
  seed: number;
  float32Error: number;
  logits: FixtureTensor;
}
interface Sample {
  name: string;
  shape: number[];
  first: number[];
  sum: number;
}
const fixture = loadFixture<{ formulaSamples: Sample[]; cases: Case[] }>('zoo_logits.json');

// initWeights: false where there is one: the formula overwrites every value anyway.
const factories: Record<string, (o: Record<string, unknown>) => Module> = {
  lenet5: (o) => lenet5(o),
  alexnet: (o) => alexnet(o),
  vgg11Bn: (o) => vgg11Bn({ ...o, initWeights: false }),
  googlenet: (o) => googlenet({ ...o, initWeights: false }),
  resnet18: (o) => resnet18(o),
  resnet50: (o) => resnet50(o),
  densenet121: (o) => densenet121(o),
  squeezenet1_0: (o) => squeezenet1_0(o),
  squeezenet1_1: (o) => squeezenet1_1(o),
  mobilenetV2: (o) => mobilenetV2(o),
  mobilenetV3Large: (o) => mobilenetV3Large(o),
  mobilenetV3Small: (o) => mobilenetV3Small(o),
  efficientnetB0: (o) => efficientnetB0(o),
  shufflenetV2X1_0: (o) => shufflenetV2X1_0(o),
  inceptionV3: (o) => inceptionV3({ ...o, initWeights: false }),
};

const zeros = (shape: number[]) => new Tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
const infer = (m: Module, x: Tensor) => noGrad(() => m.forward(x));
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/**
 * rtol 1e-4 as for every float32 path, plus atol 2e-5 * max|logit|: a logit is a sum of terms as
 * large as the largest logits, and float32 rounding error scales with those terms, not with the
 * result (a logit near zero has cancelled). The generator measures torch's own float32 logits
 * against float64 at ~1e-6 * max|logit| (`float32Error` in the fixture); 2e-5 leaves room for a
 * different summation order and conv algorithm (Winograd/FFT) while a wrong layer (eps, padding,
 * pooling mode) moves logits by far more.
 */
function expectLogits(actual: Tensor, c: Case): void {
  expect(actual.shape).toEqual(c.logits.shape);
  const atol = 2e-5 * maxAbs(c.logits.data);
  expectClose(actual.data, c.logits.data, 1e-4, atol, `${c.name} (torch float32 vs float64: ${c.float32Error})`);
}

/** Runs `fn` and returns the message of the Error it throws. */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('weight formula', () => {
  it.each(fixture.formulaSamples.map((s) => [s.name, s] as const))('%s matches the generator', (_n, s) => {
    const t = zeros(s.shape);
    fillByFormula(s.name, t);
    expect(Array.from(t.data.subarray(0, s.first.length))).toEqual(s.first.map(Math.fround));
    let total = 0;
    for (const v of t.data) total += v;
    expect(total).toBeCloseTo(s.sum, 9);
  });
});

// Extra checks per case, run on the same filled model (each is built once).
const extras: Record<string, (m: Module, c: Case) => void> = {
  lenet5: (m) => {
    expect(errorOf(() => m.forward(zeros([1, 1, 20, 20])))).toBe(
      'LeNet5: expected a 28x28 input [N, 1, 28, 28], got [1, 1, 20, 20]',
    );
  },
  alexnet: (m) => {
    expect(errorOf(() => infer(m, zeros([1, 3, 32, 32])))).toMatch(
      /^AlexNet: layer 'features\.12' \(MaxPool2d\) failed on \[1, 256, 1, 1\] \(model input \[1, 3, 32, 32\]\): input: 1x1 is too small for a 3x3 window \(stride 2x2/,
    );
  },
  vgg11_bn: (m) => {
    expect(errorOf(() => infer(m, zeros([1, 3, 16, 16])))).toMatch(
      /^VGG: layer 'features\.28' \(MaxPool2d\) failed on \[1, 512, 1, 1\] \(model input \[1, 3, 16, 16\]\): input: 1x1 is too small for a 2x2 window/,
    );
  },
  googlenet: (m) => {
    expect(infer(m, det([1, 3, 15, 15], 1)).shape).toEqual([1, 10]); // torchvision's minimum size
    expect(errorOf(() => infer(m, zeros([1, 3, 8, 8])))).toMatch(
      /^GoogLeNet: layer 'maxpool3' \(MaxPool2d\) failed on \[1, 480, 1, 1\] \(model input \[1, 3, 8, 8\]\): input: 1x1 is too small/,
    );
  },
  googlenet_transform_aux: (m, c) => {
    const g = m as GoogLeNet;
    // In eval the auxiliary heads are not run.
    const out = noGrad(() => g.forwardAux(det(c.inputShape, c.seed)));
    expect(out.aux1).toBeNull();
    expect(out.aux2).toBeNull();
    // In training they are, and the loss reaches their parameters.
    g.train();
    const t = g.forwardAux(det([2, 3, 64, 64], 9));
    expect(t.aux1!.shape).toEqual([2, 10]);
    expect(t.aux2!.shape).toEqual([2, 10]);
    sum(t.aux1!).backward();
    expect(g.aux1!.fc2.weight.grad).not.toBeNull();
    expect(g.conv1.conv.weight.grad).not.toBeNull();
    g.eval();
  },
  resnet18: (m, c) => {
    // Any size works thanks to the adaptive pool.
    expect(infer(m, det([2, 3, 32, 32], 2)).shape).toEqual([2, 10]);
    expect(infer(m, det([1, 3, 7, 5], 2)).shape).toEqual([1, 10]);
    // Stochastic depth: eval mode is the plain network (same weights, same logits).
    const sd = resnet18({ numClasses: 10, stochasticDepth: { survivalProb: 0.5, rng: new Rng(7) } });
    sd.loadStateDict(m.stateDict());
    sd.eval();
    expectLogits(infer(sd, det(c.inputShape, c.seed)), c);
    // Training: backward reaches every parameter, and a seeded run repeats exactly.
    const run = () => {
      const net = resnet18({ numClasses: 10, stochasticDepth: { survivalProb: 0.5, rng: new Rng(7) } });
      net.loadStateDict(m.stateDict());
      net.train();
      const y = net.forward(det([4, 3, 32, 32], 3));
      sum(y).backward();
      return { y, net };
    };
    const a = run();
    const b = run();
    expect(Array.from(a.y.data)).toEqual(Array.from(b.y.data));
    const missing = a.net
      .namedParameters()
      .filter(([, p]) => !p.grad)
      .map(([n]) => n);
    expect(missing).toEqual([]);
    // With p_L = 0.5 some of the 4 x 8 (sample, block) draws drop a branch, so the output differs
    // from the same training step without stochastic depth.
    const plain = resnet18({ numClasses: 10 });
    plain.loadStateDict(m.stateDict());
    plain.train();
    const yPlain = noGrad(() => plain.forward(det([4, 3, 32, 32], 3)));
    expect(maxAbs(yPlain.data.map((v, i) => v - a.y.data[i]))).toBeGreaterThan(1e-3);
  },
  resnet50: (m) => {
    expect(infer(m, det([1, 3, 1, 1], 2)).shape).toEqual([1, 10]);
    expect(m).toBeInstanceOf(ResNet);
  },
  densenet121: (m) => {
    expect(infer(m, det([1, 3, 32, 32], 2)).shape).toEqual([1, 10]);
    expect(errorOf(() => infer(m, zeros([1, 3, 16, 16])))).toMatch(
      /^DenseNet: layer 'features\.transition3\.pool' \(AvgPool2d\) failed on \[1, 512, 1, 1\] \(model input \[1, 3, 16, 16\]\): input: 1x1 is too small for a 2x2 window/,
    );
  },
};

describe('logits equal torchvision 0.14 (eval, formula-filled weights)', () => {
  it.each(fixture.cases.map((c) => [c.name, c] as const))(
    '%s',
    (_n, c) => {
      const model = factories[c.factory](c.options);
      fillModel(model);
      model.eval();
      expectLogits(infer(model, det(c.inputShape, c.seed)), c);
      extras[c.name]?.(model, c);
    },
    300_000,
  );
});
