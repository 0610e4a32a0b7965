// BatchNorm2d and LocalResponseNorm against PyTorch goldens (test/fixtures/gen_norm.py):
// training forward with in-place running statistics, saved mean / invstd, inference forward,
// training backward; LRN output, saved scale and backward. Plus boundary errors.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { det, expectClose, loadFixture, type FixtureTensor, useKernels } from './helpers.js';

interface BnCase {
  name: string;
  inputShape: number[];
  momentum: number;
  eps: number;
  inputScale: number;
  seeds: [number, number];
  affine: boolean;
  weight?: FixtureTensor;
  bias?: FixtureTensor;
  runningMeanIn: FixtureTensor;
  runningVarIn: FixtureTensor;
  output: FixtureTensor;
  saveMean: FixtureTensor;
  saveInvstd: FixtureTensor;
  runningMean: FixtureTensor;
  runningVar: FixtureTensor;
  outputEval: FixtureTensor;
  gradInput: FixtureTensor;
  gradWeight?: FixtureTensor;
  gradBias?: FixtureTensor;
}

interface LrnCase {
  name: string;
  inputShape: number[];
  size: number;
  alpha: number;
  beta: number;
  k: number;
  inputScale: number;
  seeds: [number, number];
  output: FixtureTensor;
  scale: FixtureTensor;
  gradInput: FixtureTensor;
}

const fixture = loadFixture<{ batchNorm: BnCase[]; lrn: LrnCase[] }>('norm.json');
const f32 = (t: FixtureTensor) => Float32Array.from(t.data);

const configs = [
  { simd: 'auto', threads: 2 },
  { simd: 'scalar', threads: 2 },
  { simd: 'auto', threads: 1 },
] as const;

describe.each(configs)('normalisation vs PyTorch (simd $simd, $threads threads)', ({ simd, threads }) => {
  useKernels({ simd, threads });

  it.each(fixture.batchNorm.map((c) => [c.name, c] as const))('batch norm: %s', (_name, c) => {
    const C = c.inputShape[1];
    const args = { inputShape: c.inputShape, momentum: c.momentum, eps: c.eps };
    const x = det(c.inputShape, c.seeds[0], c.inputScale).data;
    const w = c.weight ? f32(c.weight) : null;
    const b = c.bias ? f32(c.bias) : null;
    const rm = f32(c.runningMeanIn);
    const rv = f32(c.runningVarIn);
    const y = new Float32Array(x.length).fill(Number.NaN);
    const mean = new Float32Array(C);
    const invstd = new Float32Array(C);
    native.batchNorm2dForwardTrain(x, w, b, rm, rv, y, mean, invstd, args);
    expectClose(y, c.output.data, 1e-4, 1e-5, 'output');
    expectClose(mean, c.saveMean.data, 1e-4, 1e-6, 'saveMean');
    expectClose(invstd, c.saveInvstd.data, 1e-4, 1e-5, 'saveInvstd');
    expectClose(rm, c.runningMean.data, 1e-4, 1e-6, 'runningMean updated in place');
    expectClose(rv, c.runningVar.data, 1e-4, 1e-6, 'runningVar updated in place (unbiased)');

    const yEval = new Float32Array(x.length).fill(Number.NaN);
    native.batchNorm2dForwardEval(x, w, b, f32(c.runningMeanIn), f32(c.runningVarIn), yEval, args);
    expectClose(yEval, c.outputEval.data, 1e-4, 1e-5, 'eval output');

    const gy = det(c.inputShape, c.seeds[1]).data;
    const gx = new Float32Array(x.length).fill(Number.NaN);
    const gw = c.affine ? new Float32Array(C).fill(Number.NaN) : null;
    const gb = c.affine ? new Float32Array(C).fill(Number.NaN) : null;
    native.batchNorm2dBackward(x, gy, w, mean, invstd, gx, gw, gb, args, 'batch');
    expectClose(gx, c.gradInput.data, 1e-4, 1e-5, 'gradInput');
    if (gw && gb && c.gradWeight && c.gradBias) {
      expectClose(gw, c.gradWeight.data, 1e-4, 1e-5, 'gradWeight');
      expectClose(gb, c.gradBias.data, 1e-4, 1e-5, 'gradBias');
    }
  });

  it.each(fixture.lrn.map((c) => [c.name, c] as const))('local response norm: %s', (_name, c) => {
    const args = { inputShape: c.inputShape, size: c.size, alpha: c.alpha, beta: c.beta, k: c.k };
    const x = det(c.inputShape, c.seeds[0], c.inputScale).data;
    const y = new Float32Array(x.length).fill(Number.NaN);
    const scale = new Float32Array(x.length).fill(Number.NaN);
    native.lrnForward(x, y, scale, args);
    expectClose(y, c.output.data, 1e-4, 1e-5, 'output');
    expectClose(scale, c.scale.data, 1e-4, 1e-5, 'scale');
    const gy = det(c.inputShape, c.seeds[1]).data;
    const gx = new Float32Array(x.length).fill(Number.NaN);
    native.lrnBackward(x, y, scale, gy, gx, args);
    expectClose(gx, c.gradInput.data, 1e-4, 1e-5, 'gradInput');
  });
});

describe('batch norm argument errors', () => {
  const args = (over: Partial<{ inputShape: number[]; momentum: number; eps: number }> = {}) => ({
    inputShape: [2, 3, 2, 2],
    momentum: 0.1,
    eps: 1e-5,
    ...over,
  });
  const x = new Float32Array(24).map((_, i) => Math.sin(i));
  const c3 = () => new Float32Array(3);
  const y = new Float32Array(24);

  it.each([
    [
      'wrong input length',
      () => native.batchNorm2dForwardTrain(new Float32Array(23), null, null, null, null, y, c3(), c3(), args()),
      'input: expected 24 elements, got 23',
    ],
    [
      'wrong weight length',
      () => native.batchNorm2dForwardTrain(x, new Float32Array(4), null, null, null, y, c3(), c3(), args()),
      'weight: expected 3 elements, got 4',
    ],
    [
      'wrong runningVar length',
      () => native.batchNorm2dForwardTrain(x, null, null, c3(), new Float32Array(2), y, c3(), c3(), args()),
      'runningVar: expected 3 elements, got 2',
    ],
    [
      'wrong saveInvstd length',
      () => native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), new Float32Array(1), args()),
      'saveInvstd: expected 3 elements, got 1',
    ],
    [
      'zero eps',
      () => native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), c3(), args({ eps: 0 })),
      'eps: expected a positive finite number, got 0',
    ],
    [
      'negative eps',
      () => native.batchNorm2dForwardEval(x, null, null, c3(), c3(), y, args({ eps: -1e-5 })),
      'eps: expected a positive finite number, got -0.00001',
    ],
    [
      'NaN eps',
      () => native.batchNorm2dForwardEval(x, null, null, c3(), c3(), y, args({ eps: Number.NaN })),
      'eps: expected a positive finite number, got NaN',
    ],
    [
      'momentum above 1',
      () => native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), c3(), args({ momentum: 1.5 })),
      'momentum: expected a number in [0, 1], got 1.5',
    ],
    [
      'negative momentum',
      () => native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), c3(), args({ momentum: -0.1 })),
      'momentum: expected a number in [0, 1], got -0.1',
    ],
    [
      'NaN momentum',
      () => native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), c3(), args({ momentum: Number.NaN })),
      'momentum: expected a number in [0, 1], got NaN',
    ],
    [
      'fractional shape',
      () =>
        native.batchNorm2dForwardTrain(x, null, null, null, null, y, c3(), c3(), args({ inputShape: [2, 3, 2.5, 2] })),
      'inputShape[2]: expected a non-negative integer, got 2.5',
    ],
    [
      'zero channels',
      () => native.batchNorm2dForwardEval(x, null, null, c3(), c3(), y, args({ inputShape: [2, 0, 2, 2] })),
      'channels: expected a positive size, got 0',
    ],
    [
      'one value per channel',
      () =>
        native.batchNorm2dForwardTrain(
          new Float32Array(3),
          null,
          null,
          null,
          null,
          new Float32Array(3),
          c3(),
          c3(),
          args({ inputShape: [1, 3, 1, 1] }),
        ),
      'input: training batch norm needs more than 1 value per channel, got shape [1, 3, 1, 1]',
    ],
    [
      'backward wrong gradOutput',
      () => native.batchNorm2dBackward(x, new Float32Array(20), null, c3(), c3(), y, null, null, args(), 'batch'),
      'gradOutput: expected 24 elements, got 20',
    ],
    [
      'backward wrong gradBias',
      () => native.batchNorm2dBackward(x, x.slice(), null, c3(), c3(), y, null, new Float32Array(5), args(), 'batch'),
      'gradBias: expected 3 elements, got 5',
    ],
    [
      'output aliasing input',
      () => native.batchNorm2dForwardEval(x, null, null, c3(), c3(), x, args()),
      'output: must not share memory with input',
    ],
    [
      'running stats aliasing each other',
      () => {
        const both = new Float32Array(3);
        native.batchNorm2dForwardTrain(x, null, null, both, both, y, c3(), c3(), args());
      },
      'runningMean: must not share memory with runningVar',
    ],
    [
      'saveMean aliasing weight',
      () => {
        const w = new Float32Array(3).fill(1);
        native.batchNorm2dForwardTrain(x, w, null, null, null, y, w, c3(), args());
      },
      'saveMean: must not share memory with weight',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });

  it('running statistics are optional and updated in place when given', () => {
    const mean = c3();
    const invstd = c3();
    native.batchNorm2dForwardTrain(x, null, null, null, null, y, mean, invstd, args());
    const rm = new Float32Array([1, 1, 1]);
    const rv = new Float32Array([1, 1, 1]);
    native.batchNorm2dForwardTrain(x, null, null, rm, rv, y, c3(), c3(), args({ momentum: 0 }));
    expect(Array.from(rm)).toEqual([1, 1, 1]);
    native.batchNorm2dForwardTrain(x, null, null, rm, rv, y, c3(), c3(), args({ momentum: 1 }));
    expectClose(rm, mean, 1e-6, 1e-7, 'momentum 1 takes the batch mean');
  });
});

describe('local response norm argument errors', () => {
  const args = (
    over: Partial<{ inputShape: number[]; size: number; alpha: number; beta: number; k: number }> = {},
  ) => ({
    inputShape: [1, 4, 2, 2],
    size: 3,
    alpha: 1e-4,
    beta: 0.75,
    k: 1,
    ...over,
  });
  const x = new Float32Array(16);
  const y = new Float32Array(16);
  const s = new Float32Array(16);

  it.each([
    [
      'wrong scale length',
      () => native.lrnForward(x, y, new Float32Array(15), args()),
      'scale: expected 16 elements, got 15',
    ],
    ['zero size', () => native.lrnForward(x, y, s, args({ size: 0 })), 'size: expected a positive size, got 0'],
    [
      'fractional size',
      () => native.lrnForward(x, y, s, args({ size: 2.5 })),
      'size: expected a non-negative integer, got 2.5',
    ],
    [
      'negative size',
      () => native.lrnForward(x, y, s, args({ size: -5 })),
      'size: expected a non-negative integer, got -5',
    ],
    [
      'infinite alpha',
      () => native.lrnForward(x, y, s, args({ alpha: Number.POSITIVE_INFINITY })),
      'alpha: expected a finite number, got inf',
    ],
    [
      'NaN beta',
      () => native.lrnForward(x, y, s, args({ beta: Number.NaN })),
      'beta: expected a finite number, got NaN',
    ],
    ['scale aliasing output', () => native.lrnForward(x, y, y, args()), 'output: must not share memory with scale'],
    [
      'backward wrong gradInput',
      () => native.lrnBackward(x, y, s, x, new Float32Array(3), args()),
      'gradInput: expected 16 elements, got 3',
    ],
    [
      'backward gradInput aliasing gradOutput',
      () => native.lrnBackward(x, y, s, s.subarray(0), s, args()),
      'gradInput: must not share memory with scale',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});
