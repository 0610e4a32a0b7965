// Pooling against PyTorch goldens (test/fixtures/gen_pool.py): max pool outputs, indices and
// gradients; average pool with count_include_pad / divisor_override / ceil_mode; adaptive
// average pool (AlexNet 6x6, VGG 7x7, smaller-than-output, global). Plus boundary errors, and
// the op-level max pool: no indices when no gradient is needed, gradients when one is.
import { describe, expect, it } from 'vitest';
import { noGrad } from '../src/autograd.js';
import { native } from '../src/native.js';
import { maxPool2d } from '../src/ops/pool.js';
import { det, expectClose, loadFixture, type FixtureTensor, pick, useKernels } from './helpers.js';

type Pool2dArgs = Parameters<typeof native.maxPool2dForward>[3];

interface PoolCase {
  name: string;
  inputShape: number[];
  kernel: number[];
  stride: number[];
  padding: number[];
  dilation: number[];
  ceilMode: boolean;
  countIncludePad?: boolean;
  divisorOverride?: number | null;
  seeds: [number, number];
  output: FixtureTensor;
  indices?: number[];
  gradInput: FixtureTensor;
}

interface AdaptiveCase {
  name: string;
  inputShape: number[];
  outputSize: number[];
  seeds: [number, number];
  output: FixtureTensor;
  gradInput: FixtureTensor;
}

const fixture = loadFixture<{ max: PoolCase[]; avg: PoolCase[]; adaptive: AdaptiveCase[] }>('pool.json');

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

function poolArgs(c: PoolCase): Pool2dArgs {
  return {
    ...pick(c, ['inputShape', 'kernel', 'stride', 'padding', 'dilation', 'ceilMode', 'countIncludePad']),
    divisorOverride: c.divisorOverride ?? undefined,
  };
}

type Case = PoolCase | AdaptiveCase;

/** Runs `forward` on input `x` into a NaN-filled output, which must match the golden output. */
function checkOutput(c: Case, x: Float32Array, forward: (x: Float32Array, y: Float32Array) => void): void {
  const y = new Float32Array(numel(c.output.shape)).fill(Number.NaN);
  forward(x, y);
  expectClose(y, c.output.data, 1e-4, 1e-5, `${c.name} output`);
}

/** Runs `backward` from det(output shape, seeds[1]) into a NaN-filled gradient of input `x`,
 * which must match the golden gradInput. */
function checkGradInput(c: Case, x: Float32Array, backward: (gy: Float32Array, gx: Float32Array) => void): void {
  const gy = det(c.output.shape, c.seeds[1]).data;
  const gx = new Float32Array(x.length).fill(Number.NaN);
  backward(gy, gx);
  expectClose(gx, c.gradInput.data, 1e-4, 1e-5, `${c.name} gradInput`);
}

// Each configuration runs every case: both SIMD paths, and 1 vs 2 threads.
const configs = [
  { simd: 'auto', threads: 2 },
  { simd: 'scalar', threads: 2 },
  { simd: 'auto', threads: 1 },
] as const;

describe.each(configs)('pooling vs PyTorch (simd $simd, $threads threads)', ({ simd, threads }) => {
  useKernels({ simd, threads });

  it.each(fixture.max.map((c) => [c.name, c] as const))('max pool: %s', (_name, c) => {
    const args = poolArgs(c);
    expect(native.pool2dOutputSize(args)).toEqual(c.output.shape.slice(2));
    const x = det(c.inputShape, c.seeds[0]).data;
    const y = new Float32Array(c.output.data.length);
    const ind = new Int32Array(y.length);
    native.maxPool2dForward(x, y, ind, args);
    // The max of a window is one of its inputs: exact.
    expect(Array.from(y)).toEqual(Array.from(Float32Array.from(c.output.data)));
    expect(Array.from(ind)).toEqual(c.indices);
    const y2 = new Float32Array(y.length).fill(Number.NaN);
    native.maxPool2dForwardNoIndices(x, y2, args);
    expect(Array.from(y2)).toEqual(Array.from(y));
    checkGradInput(c, x, (gy, gx) => native.maxPool2dBackward(gy, ind, gx, args));
  });

  it.each(fixture.avg.map((c) => [c.name, c] as const))('avg pool: %s', (_name, c) => {
    const args = poolArgs(c);
    expect(native.pool2dOutputSize(args)).toEqual(c.output.shape.slice(2));
    const x = det(c.inputShape, c.seeds[0]).data;
    checkOutput(c, x, (x, y) => native.avgPool2dForward(x, y, args));
    checkGradInput(c, x, (gy, gx) => native.avgPool2dBackward(gy, gx, args));
  });

  it.each(fixture.adaptive.map((c) => [c.name, c] as const))('adaptive avg pool: %s', (_name, c) => {
    const args = { inputShape: c.inputShape, outputSize: c.outputSize };
    const x = det(c.inputShape, c.seeds[0]).data;
    checkOutput(c, x, (x, y) => native.adaptiveAvgPool2dForward(x, y, args));
    checkGradInput(c, x, (gy, gx) => native.adaptiveAvgPool2dBackward(gy, gx, args));
  });
});

describe('pooling argument errors', () => {
  const base: Pool2dArgs = {
    inputShape: [1, 2, 4, 4],
    kernel: [2, 2],
    stride: [2, 2],
    padding: [0, 0],
    dilation: [1, 1],
    ceilMode: false,
  };
  const args = (over: Partial<Pool2dArgs> = {}): Pool2dArgs => ({ ...base, ...over });
  const x = new Float32Array(32);
  const y = new Float32Array(8);
  const ind = new Int32Array(8);

  it.each([
    [
      'wrong input length',
      () => native.maxPool2dForward(new Float32Array(31), y, ind, args()),
      'input: expected 32 elements, got 31',
    ],
    [
      'wrong output length',
      () => native.maxPool2dForward(x, new Float32Array(9), ind, args()),
      'output: expected 8 elements, got 9',
    ],
    [
      'wrong indices length',
      () => native.maxPool2dForward(x, y, new Int32Array(7), args()),
      'indices: expected 8 elements, got 7',
    ],
    [
      'indices as a Float32Array',
      () => native.maxPool2dForward(x, y, new Float32Array(8) as unknown as Int32Array, args()),
      'Int32Array',
    ],
    [
      'negative size',
      () => native.maxPool2dForward(x, y, ind, args({ kernel: [-2, 2] })),
      'kernel[0]: expected a non-negative integer, got -2',
    ],
    [
      'NaN stride',
      () => native.avgPool2dForward(x, y, args({ stride: [2, Number.NaN] })),
      'stride[1]: expected a non-negative integer, got NaN',
    ],
    [
      'fractional padding',
      () => native.avgPool2dForward(x, y, args({ padding: [0.5, 0] })),
      'padding[0]: expected a non-negative integer, got 0.5',
    ],
    [
      'zero stride',
      () => native.maxPool2dForward(x, y, ind, args({ stride: [0, 2] })),
      'stride: expected a positive size, got 0',
    ],
    [
      'zero kernel',
      () => native.pool2dOutputSize(args({ kernel: [2, 0] })),
      'kernel width: expected a positive size, got 0',
    ],
    [
      'short shape',
      () => native.pool2dOutputSize(args({ inputShape: [2, 4, 4] })),
      'inputShape: expected 4 numbers, got 3',
    ],
    ['short kernel', () => native.pool2dOutputSize(args({ kernel: [2] })), 'kernel: expected 2 numbers, got 1'],
    [
      'padding over half the kernel',
      () => native.pool2dOutputSize(args({ kernel: [3, 3], padding: [2, 1] })),
      'padding: expected at most half the kernel size (1x1 for a 3x3 kernel), got 2x1',
    ],
    [
      'window larger than the input',
      () => native.pool2dOutputSize(args({ kernel: [5, 5] })),
      'input: 4x4 is too small for a 5x5 window (stride 2x2, padding 0x0, dilation 1x1): output would be 0x0',
    ],
    [
      'zero divisor',
      () => native.avgPool2dForward(x, y, args({ divisorOverride: 0 })),
      'divisorOverride: expected a positive integer, got 0',
    ],
    [
      'negative divisor',
      () => native.avgPool2dForward(x, y, args({ divisorOverride: -3 })),
      'divisorOverride: expected a non-negative integer, got -3',
    ],
    [
      'dilated average pool',
      () => native.avgPool2dForward(x, y, args({ dilation: [2, 1] })),
      'dilation: average pooling has no dilation, expected 1x1, got 2x1',
    ],
    [
      'output aliasing input',
      () => native.avgPool2dForward(x, x.subarray(0, 8), args()),
      'output: must not share memory with input',
    ],
    [
      'no-indices wrong output length',
      () => native.maxPool2dForwardNoIndices(x, new Float32Array(7), args()),
      'output: expected 8 elements, got 7',
    ],
    [
      'no-indices wrong input length',
      () => native.maxPool2dForwardNoIndices(new Float32Array(33), y, args()),
      'input: expected 32 elements, got 33',
    ],
    [
      'no-indices output aliasing input',
      () => native.maxPool2dForwardNoIndices(x, x.subarray(8, 16), args()),
      'output: must not share memory with input',
    ],
    [
      'no-indices zero stride',
      () => native.maxPool2dForwardNoIndices(x, y, args({ stride: [2, 0] })),
      'stride: expected a positive size, got 0',
    ],
    [
      'indices aliasing output',
      () => native.maxPool2dForward(x, y, new Int32Array(y.buffer), args()),
      'output: must not share memory with indices',
    ],
    [
      'gradInput aliasing gradOutput',
      () => native.avgPool2dBackward(x.subarray(0, 8), x, args()),
      'gradInput: must not share memory with gradOutput',
    ],
    [
      'absurd sizes',
      () => native.pool2dOutputSize(args({ inputShape: [2 ** 40, 2 ** 40, 4, 4] })),
      'too many elements',
    ],
    [
      'adaptive zero output',
      () => native.adaptiveAvgPool2dForward(x, y, { inputShape: [1, 2, 4, 4], outputSize: [0, 2] }),
      'output height: expected a positive size, got 0',
    ],
    [
      'adaptive wrong output length',
      () => native.adaptiveAvgPool2dForward(x, y, { inputShape: [1, 2, 4, 4], outputSize: [3, 3] }),
      'output: expected 18 elements, got 8',
    ],
    [
      'adaptive short outputSize',
      () => native.adaptiveAvgPool2dBackward(y, x, { inputShape: [1, 2, 4, 4], outputSize: [2] }),
      'outputSize: expected 2 numbers, got 1',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });

  it('a max-pool index outside its plane is an Error, not a crash', () => {
    const bad = new Int32Array(8);
    bad[5] = 16;
    expect(() => native.maxPool2dBackward(y, bad, x, args())).toThrow(
      'indices: element 5 is 16, expected -1 or an index into the 4x4 input plane (0..15)',
    );
    bad[5] = -7;
    expect(() => native.maxPool2dBackward(y, bad, x, args())).toThrow('indices: element 5 is -7');
  });

  it('countIncludePad defaults to true, as torch', () => {
    const a = args({ inputShape: [1, 1, 2, 2], kernel: [3, 3], stride: [1, 1], padding: [1, 1] });
    const ones = new Float32Array(4).fill(1);
    const withDefault = new Float32Array(4);
    native.avgPool2dForward(ones, withDefault, a);
    expect(Array.from(withDefault)).toEqual([4 / 9, 4 / 9, 4 / 9, 4 / 9].map(Math.fround));
    const excluded = new Float32Array(4);
    native.avgPool2dForward(ones, excluded, { ...a, countIncludePad: false });
    expect(Array.from(excluded)).toEqual([1, 1, 1, 1]);
  });
});

describe('maxPool2d op: indices only when a gradient will need them', () => {
  // Wide enough rows for the 8-wide AVX2 groups, a ragged tail, ceil mode and padding.
  const cases: [number[], number, { stride: number; padding: number; ceilMode: boolean }][] = [
    [[2, 3, 17, 37], 3, { stride: 2, padding: 1, ceilMode: false }],
    [[1, 5, 9, 20], 3, { stride: 2, padding: 0, ceilMode: true }],
    [[1, 1, 1, 1], 1, { stride: 1, padding: 0, ceilMode: false }],
  ];

  it.each(cases)(
    'shape %j kernel %d: the no-indices forward equals the recorded one, and gradients flow',
    (shape, kernel, opts) => {
      const x = det(shape, 4);
      const inference = noGrad(() => maxPool2d(x, kernel, opts));
      expect(inference.requiresGrad).toBe(false);
      const untracked = maxPool2d(x, kernel, opts); // x does not require grad: no indices either
      expect(untracked.gradFn).toBeFalsy();

      const xg = det(shape, 4).requiresGrad_();
      const y = maxPool2d(xg, kernel, opts);
      expect(y.gradFn?.name).toBe('maxPool2d');
      expect(Array.from(inference.data)).toEqual(Array.from(y.data));
      expect(Array.from(untracked.data)).toEqual(Array.from(y.data));

      // Seeded with w, the gradient is w routed to each window's argmax.
      const w = det(y.shape, 9);
      const args = {
        inputShape: shape,
        kernel: [kernel, kernel],
        stride: [opts.stride, opts.stride],
        padding: [opts.padding, opts.padding],
        dilation: [1, 1],
        ceilMode: opts.ceilMode,
      };
      const ind = new Int32Array(y.size);
      native.maxPool2dForward(xg.data, new Float32Array(y.size), ind, args);
      const want = new Float32Array(xg.size);
      native.maxPool2dBackward(w.data, ind, want, args);
      y.backward(w);
      expect(xg.grad).toBeTruthy();
      expectClose(xg.grad!.data, want, 1e-6, 0, 'gradient');
    },
  );
});
