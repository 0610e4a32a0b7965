// Activations (relu, leaky_relu, sigmoid, tanh) forward and backward against PyTorch goldens
// (test/fixtures/gen_activation.py), on both SIMD paths, plus the binding's argument errors.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { det, expectClose, loadFixture, type FixtureTensor, useKernels, withKernels } from './helpers.js';

interface Case {
  name: string;
  kind: string;
  negativeSlope: number | null;
  shape: number[];
  scale: number;
  seeds: [number, number];
  output: FixtureTensor;
  gradInput: FixtureTensor;
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

const { cases } = loadFixture<{ cases: Case[] }>('activation.json');

describe.each(['auto', 'scalar'] as const)('activations vs PyTorch (simd %s)', (simd) => {
  useKernels({ simd });
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const x = det(c.shape, c.seeds[0], c.scale).data;
    const g = det(c.shape, c.seeds[1]).data;
    const slope = c.negativeSlope ?? undefined;
    const y = new Float32Array(x.length);
    native.activationForward(c.kind, x, y, slope);
    expectClose(y, c.output.data, 1e-4, 1e-5, `${c.name} forward`);
    const gi = new Float32Array(x.length);
    native.activationBackward(c.kind, x, y, g, gi, slope);
    expectClose(gi, c.gradInput.data, 1e-4, 1e-5, `${c.name} backward`);
    // The buffer a kind's backward does not read may be left out (empty).
    const empty = new Float32Array(0);
    const gi2 = new Float32Array(x.length);
    if (c.kind === 'relu' || c.kind === 'leaky_relu') {
      native.activationBackward(c.kind, x, empty, g, gi2, slope);
    } else {
      native.activationBackward(c.kind, empty, y, g, gi2, slope);
    }
    expect(gi2).toEqual(gi);
  });
});

describe('reluInplace', () => {
  it('matches the out-of-place relu, and its result serves as the backward input', () => {
    const x = det([3, 5, 9, 11], 7, 2).data;
    const y = new Float32Array(x.length);
    native.activationForward('relu', x, y);
    const data = x.slice();
    native.reluInplace(data);
    expect(data).toEqual(y);
    const g = det([3, 5, 9, 11], 8).data;
    const fromInput = new Float32Array(x.length);
    const fromRelu = new Float32Array(x.length);
    native.activationBackward('relu', x, new Float32Array(0), g, fromInput);
    native.activationBackward('relu', data, new Float32Array(0), g, fromRelu);
    expect(fromRelu).toEqual(fromInput);
  });

  it('works on a view into a larger buffer without touching the rest', () => {
    const backing = Float32Array.from([-1, -2, -3, 4, -5, 6, -7, -8]);
    native.reluInplace(backing.subarray(2, 6));
    expect(Array.from(backing)).toEqual([-1, -2, 0, 4, 0, 6, -7, -8]);
  });
});

describe('threads', () => {
  it('1 and 2 threads give identical results on a tensor big enough to split', () => {
    const x = det([4, 16, 64, 64], 3, 8).data;
    const g = det([4, 16, 64, 64], 4).data;
    const run = (threads: number) =>
      withKernels({ threads }, () => {
        const out: Float32Array[] = [];
        for (const kind of ['relu', 'leaky_relu', 'sigmoid', 'tanh']) {
          const y = new Float32Array(x.length);
          native.activationForward(kind, x, y, 0.1);
          const gi = new Float32Array(x.length);
          native.activationBackward(kind, x, y, g, gi, 0.1);
          out.push(y, gi);
        }
        return out;
      });
    const one = run(1);
    const two = run(2);
    // Byte comparison: toEqual on 262k-element typed arrays takes vitest tens of seconds.
    for (let i = 0; i < one.length; i++) expect(sameBits(two[i], one[i])).toBe(true);
  });
});

describe('errors', () => {
  const x = new Float32Array(4);
  const y = new Float32Array(4);
  const g = new Float32Array(4);
  const gi = new Float32Array(4);
  it.each([
    [
      'unknown kind',
      () => native.activationForward('gelu', x, y),
      "kind: expected one of 'relu', 'leaky_relu', 'sigmoid', 'tanh', 'clip', 'hardsigmoid', 'hardswish', 'silu', 'pow', got 'gelu'",
    ],
    [
      'wrong output length',
      () => native.activationForward('relu', x, new Float32Array(3)),
      'output: expected 4 elements, got 3',
    ],
    ['NaN slope', () => native.activationForward('leaky_relu', x, y, NaN), 'alpha: expected a finite number, got NaN'],
    [
      'infinite slope',
      () => native.activationForward('leaky_relu', x, y, Infinity),
      'alpha: expected a finite number, got inf',
    ],
    ['output aliasing input', () => native.activationForward('relu', x, x), 'output: must not share memory with input'],
    [
      'partial overlap',
      () => {
        const buf = new Float32Array(6);
        native.activationForward('tanh', buf.subarray(0, 4), buf.subarray(2, 6));
      },
      'output: must not share memory with input',
    ],
    ['backward unknown kind', () => native.activationBackward('swish', x, y, g, gi), 'kind: expected one of'],
    [
      'backward wrong gradInput',
      () => native.activationBackward('relu', x, y, g, new Float32Array(5)),
      'gradInput: expected 4 elements, got 5',
    ],
    [
      'backward wrong input',
      () => native.activationBackward('relu', new Float32Array(2), y, g, gi),
      'input: expected 4 elements, got 2',
    ],
    [
      'backward wrong unused buffer',
      () => native.activationBackward('sigmoid', new Float32Array(2), y, g, gi),
      'input: expected 4 elements (or 0: sigmoid backward does not read it), got 2',
    ],
    [
      'gradInput aliasing gradOutput',
      () => native.activationBackward('relu', x, y, g, g),
      'gradInput: must not share memory with gradOutput',
    ],
    [
      'gradInput aliasing output',
      () => native.activationBackward('tanh', x, y, g, y),
      'gradInput: must not share memory with output',
    ],
    ['not a typed array', () => native.activationForward('relu', [1, 2] as unknown as Float32Array, y), 'TypedArray'],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});

describe('pow', () => {
  it('is x^e with gradient e * x^(e-1), through autograd', async () => {
    const { Tensor, pow, sum } = await import('../src/index.js');
    const x = new Tensor(Float32Array.of(0.5, 1, 2, 3.5), [4]).requiresGrad_();
    const y = pow(x, -1.5);
    expectClose(
      y.data,
      Array.from(x.data, (v) => v ** -1.5),
      1e-6,
    );
    sum(y).backward();
    expectClose(
      x.grad!.data,
      Array.from(x.data, (v) => -1.5 * v ** -2.5),
      1e-6,
    );
    expect(() => native.activationForward('pow', Float32Array.of(1), new Float32Array(1))).toThrow(
      'pow: alpha (the exponent) is required',
    );
  });
});
