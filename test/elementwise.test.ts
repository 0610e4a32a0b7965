// Broadcast add/mul (forward and the reduced backward) against a NumPy-rule reference written
// here, channel concat/split, dropout statistics and determinism, and the binding's errors.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { det, expectClose, numericGrad, useKernels, withKernels } from './helpers.js';

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/** Index into b of a's flat element i under NumPy's rules (b right-aligned, size-1 dims repeat). */
function bIndex(aShape: number[], bShape: number[], i: number): number {
  const off = aShape.length - bShape.length;
  const idx = new Array<number>(aShape.length);
  for (let d = aShape.length - 1; d >= 0; d--) {
    idx[d] = i % aShape[d];
    i = Math.floor(i / aShape[d]);
  }
  let j = 0;
  for (let d = 0; d < bShape.length; d++) j = j * bShape[d] + (bShape[d] === 1 ? 0 : idx[d + off]);
  return j;
}

const BROADCAST: [string, number[], number[]][] = [
  ['same shape', [2, 3, 4, 5], [2, 3, 4, 5]],
  ['channel bias [1,C,1,1]', [2, 3, 4, 5], [1, 3, 1, 1]],
  ['per-sample channel scale [N,C,1,1] (squeeze-excitation)', [2, 3, 4, 5], [2, 3, 1, 1]],
  ['[C,1,1] on NCHW', [2, 7, 3, 3], [7, 1, 1]],
  ['linear bias [C] on [N,C]', [5, 10], [10]],
  ['scalar [1]', [2, 3, 4, 5], [1]],
  ['scalar []', [3, 4], []],
  ['batch 1, spatial 1', [1, 13, 1, 1], [1, 13, 1, 1]],
  ['per-sample [N,1,1,1]', [3, 2, 4, 4], [3, 1, 1, 1]],
  ['large, splits across threads', [2, 11, 60, 60], [1, 11, 1, 1]],
];

describe.each(['auto', 'scalar'] as const)('broadcastBinary (simd %s)', (simd) => {
  useKernels({ simd });
  it.each(BROADCAST)('%s', (_name, aShape, bShape) => {
    const a = det(aShape, 1).data;
    const b = det(bShape, 2).data;
    const g = det(aShape, 3).data;
    for (const op of ['add', 'mul'] as const) {
      const out = new Float32Array(a.length);
      native.broadcastBinary(op, a, aShape, b, bShape, out);
      const want = new Float32Array(a.length);
      const wantGa = new Float32Array(a.length);
      const wantGb = new Float64Array(b.length);
      for (let i = 0; i < a.length; i++) {
        const j = bIndex(aShape, bShape, i);
        want[i] = op === 'add' ? a[i] + b[j] : a[i] * b[j];
        wantGa[i] = op === 'add' ? g[i] : g[i] * b[j];
        wantGb[j] += op === 'add' ? g[i] : g[i] * a[i];
      }
      expectClose(out, want, 1e-6, 0, `${op} forward`);
      const ga = new Float32Array(a.length);
      const gb = new Float32Array(b.length);
      native.broadcastBinaryBackward(op, a, aShape, b, bShape, g, ga, gb);
      expectClose(ga, wantGa, 1e-6, 0, `${op} gradA`);
      // gradB sums up to 3600 products in float32 (in a different order than the f64 reference).
      expectClose(gb, wantGb, 1e-5, 1e-5, `${op} gradB`);
      // Either gradient alone gives the same numbers.
      const gbOnly = new Float32Array(b.length);
      native.broadcastBinaryBackward(op, a, aShape, b, bShape, g, null, gbOnly);
      expect(sameBits(gbOnly, gb)).toBe(true);
      const gaOnly = new Float32Array(a.length);
      native.broadcastBinaryBackward(op, a, aShape, b, bShape, g, gaOnly, null);
      expect(sameBits(gaOnly, ga)).toBe(true);
    }
  });
});

describe('broadcastBinaryBackward by finite differences (mul)', () => {
  it.each([
    [
      [2, 3, 2, 2],
      [1, 3, 1, 1],
    ],
    [
      [2, 3, 2, 2],
      [2, 3, 1, 1],
    ],
    [[4, 6], [6]],
  ])('%j with %j', (aShape, bShape) => {
    const a = det(aShape, 4).data;
    const b = det(bShape, 5).data;
    const w = det(aShape, 6).data;
    const loss = (av: Float32Array, bv: Float32Array) => {
      const out = new Float32Array(av.length);
      native.broadcastBinary('mul', av, aShape, bv, bShape, out);
      return out.reduce((s, v, i) => s + v * w[i], 0);
    };
    const ga = new Float32Array(a.length);
    const gb = new Float32Array(b.length);
    native.broadcastBinaryBackward('mul', a, aShape, b, bShape, w, ga, gb);
    const fdA = numericGrad(() => loss(a, b), a);
    const fdB = numericGrad(() => loss(a, b), b);
    expectClose(ga, fdA, 1e-3, 1e-3, 'gradA vs finite differences');
    expectClose(gb, fdB, 1e-3, 1e-3, 'gradB vs finite differences');
  });
});

describe('concatChannels / splitChannels', () => {
  it.each([
    ['two inputs', [3, 5], 2, 16],
    ['batch 1, spatial 1', [1], 1, 1],
    ['zero-channel input, channels not a multiple of 8', [7, 0, 2, 9], 3, 1],
    ['DenseNet-like, splits across threads', [64, 32, 32, 96], 2, 28 * 28],
  ] as [string, number[], number, number][])('%s', (_name, channels, batch, plane) => {
    const inputs = channels.map((c, k) => det([batch, c, plane], 10 + k).data);
    const total = channels.reduce((a, b) => a + b, 0);
    const want = new Float32Array(batch * total * plane);
    let o = 0;
    for (let n = 0; n < batch; n++) {
      for (let k = 0; k < channels.length; k++) {
        const part = channels[k] * plane;
        want.set(inputs[k].subarray(n * part, (n + 1) * part), o);
        o += part;
      }
    }
    const out = new Float32Array(want.length).fill(NaN);
    native.concatChannels(inputs, channels, batch, plane, out);
    expect(sameBits(out, want)).toBe(true);
    const parts = inputs.map((x) => new Float32Array(x.length).fill(NaN));
    native.splitChannels(out, parts, channels, batch, plane);
    parts.forEach((p, k) => {
      expect(sameBits(p, inputs[k])).toBe(true);
    });
  });
});

describe('dropoutForward', () => {
  const n = 200_000;
  const x = det([n], 1).data;

  it.each([0.1, 0.5, 0.8])('p = %f: drop rate, mask values and mean, output = input * mask', (p) => {
    const out = new Float32Array(n);
    const mask = new Float32Array(n);
    native.dropoutForward(x, out, mask, p, 1234);
    const scale = Math.fround(1 / (1 - p));
    let dropped = 0;
    let kept = 0;
    let sum = 0;
    let wrongOutput = -1;
    for (let i = 0; i < n; i++) {
      if (mask[i] === 0) dropped++;
      else if (mask[i] === scale) kept++;
      sum += mask[i];
      if (out[i] !== Math.fround(x[i] * mask[i]) && wrongOutput < 0) wrongOutput = i;
    }
    expect(dropped + kept, 'every mask value is 0 or 1/(1-p)').toBe(n);
    expect(wrongOutput, 'first element where output != input * mask').toBe(-1);
    const sd = Math.sqrt(n * p * (1 - p));
    expect(Math.abs(dropped - n * p)).toBeLessThan(5 * sd);
    expect(Math.abs(sum / n - 1)).toBeLessThan(5 * Math.sqrt(p / (1 - p) / n));
  });

  it('the same seed gives the same mask on 1 and 2 threads and on both SIMD paths; other seeds differ', () => {
    const run = (threads: number, simd: 'auto' | 'scalar', seed: number) =>
      withKernels({ threads, simd }, () => {
        const out = new Float32Array(n);
        const mask = new Float32Array(n);
        native.dropoutForward(x, out, mask, 0.3, seed);
        return mask;
      });
    const first = run(1, 'auto', 7);
    expect(sameBits(run(2, 'auto', 7), first)).toBe(true);
    expect(sameBits(run(2, 'scalar', 7), first)).toBe(true);
    expect(sameBits(run(1, 'scalar', 7), first)).toBe(true);
    const other = run(2, 'auto', 8);
    let agree = 0;
    for (let i = 0; i < n; i++) if ((other[i] === 0) === (first[i] === 0)) agree++;
    // Independent masks at p = 0.3 agree on 0.3^2 + 0.7^2 = 58% of elements.
    expect(Math.abs(agree / n - 0.58)).toBeLessThan(0.01);
  });

  it('p = 0 is the identity with a mask of ones', () => {
    const out = new Float32Array(1000);
    const mask = new Float32Array(1000);
    native.dropoutForward(x.subarray(0, 1000), out, mask, 0, 3);
    expect(sameBits(out, x.subarray(0, 1000))).toBe(true);
    expect(mask.every((v) => v === 1)).toBe(true);
  });
});

describe('errors', () => {
  const a = new Float32Array(6);
  const b = new Float32Array(3);
  const out = new Float32Array(6);
  const x = new Float32Array(4);
  it.each([
    [
      'unknown op',
      () => native.broadcastBinary('sub', a, [2, 3], b, [3], out),
      "op: expected one of 'add', 'mul', got 'sub'",
    ],
    [
      'shapes that do not broadcast',
      () => native.broadcastBinary('add', a, [2, 3], new Float32Array(2), [2], out),
      'bShape: [2] does not broadcast to aShape [2, 3] (dim 1 of a: b has 2, a has 3)',
    ],
    [
      '[C] is not a channel bias for NCHW (NumPy aligns from the right)',
      () => native.broadcastBinary('add', new Float32Array(24), [1, 3, 2, 4], b, [3], new Float32Array(24)),
      'bShape: [3] does not broadcast to aShape [1, 3, 2, 4]',
    ],
    [
      'unsupported pattern',
      () =>
        native.broadcastBinary(
          'mul',
          new Float32Array(24),
          [2, 3, 2, 2],
          new Float32Array(8),
          [2, 1, 2, 2],
          new Float32Array(24),
        ),
      'is not supported: the dims where b is not 1 must be adjacent',
    ],
    [
      'b with more dims',
      () => native.broadcastBinary('add', b, [3], b.slice(), [1, 3], new Float32Array(3)),
      'bShape: [1, 3] has more dims than aShape [3]',
    ],
    [
      'bad shape entry',
      () => native.broadcastBinary('add', a, [2, -3], b, [3], out),
      'aShape[1]: expected a non-negative integer, got -3',
    ],
    [
      'NaN shape entry',
      () => native.broadcastBinary('add', a, [2, 3], b, [NaN], out),
      'bShape[0]: expected a non-negative integer, got NaN',
    ],
    [
      'wrong a length',
      () => native.broadcastBinary('add', new Float32Array(5), [2, 3], b, [3], out),
      'a: expected 6 elements, got 5',
    ],
    [
      'wrong output length',
      () => native.broadcastBinary('add', a, [2, 3], b, [3], new Float32Array(7)),
      'output: expected 6 elements, got 7',
    ],
    [
      'output aliasing a',
      () => native.broadcastBinary('add', a, [2, 3], b, [3], a),
      'output: must not share memory with a',
    ],
    [
      'backward wrong gradB length',
      () => native.broadcastBinaryBackward('mul', a, [2, 3], b, [3], out, null, new Float32Array(6)),
      'gradB: expected 3 elements, got 6',
    ],
    [
      'backward gradA aliasing gradOutput',
      () => native.broadcastBinaryBackward('mul', a, [2, 3], b, [3], out, out, null),
      'gradA: must not share memory with gradOutput',
    ],
    [
      'backward gradB aliasing gradA',
      () => {
        const buf = new Float32Array(8);
        native.broadcastBinaryBackward('mul', a, [2, 3], b, [3], out, buf.subarray(0, 6), buf.subarray(5, 8));
      },
      'gradB: must not share memory with gradA',
    ],
    [
      'dropout p = 1',
      () => native.dropoutForward(x, new Float32Array(4), new Float32Array(4), 1, 0),
      'p: expected a probability in [0, 1), got 1',
    ],
    [
      'dropout negative p',
      () => native.dropoutForward(x, new Float32Array(4), new Float32Array(4), -0.5, 0),
      'p: expected a probability in [0, 1), got -0.5',
    ],
    [
      'dropout NaN p',
      () => native.dropoutForward(x, new Float32Array(4), new Float32Array(4), NaN, 0),
      'p: expected a probability in [0, 1), got NaN',
    ],
    [
      'dropout bad seed',
      () => native.dropoutForward(x, new Float32Array(4), new Float32Array(4), 0.5, -1),
      'seed: expected a non-negative integer, got -1',
    ],
    [
      'dropout wrong mask length',
      () => native.dropoutForward(x, new Float32Array(4), new Float32Array(3), 0.5, 0),
      'mask: expected 4 elements, got 3',
    ],
    [
      'dropout mask aliasing output',
      () => {
        const o = new Float32Array(4);
        native.dropoutForward(x, o, o, 0.5, 0);
      },
      'mask: must not share memory with output',
    ],
    [
      'concat channel count mismatch',
      () => native.concatChannels([a, b], [3], 1, 2, new Float32Array(9)),
      'channels: expected 2 numbers (one per input), got 1',
    ],
    [
      'concat wrong input length',
      () => native.concatChannels([a, b], [3, 2], 1, 2, new Float32Array(10)),
      'inputs[1]: expected 4 elements, got 3',
    ],
    [
      'concat wrong output length',
      () => native.concatChannels([a, x], [3, 2], 1, 2, new Float32Array(9)),
      'output: expected 10 elements, got 9',
    ],
    [
      'concat zero plane',
      () => native.concatChannels([a], [3], 1, 0, a.slice()),
      'plane: expected a positive size, got 0',
    ],
    [
      'concat bad channel entry',
      () => native.concatChannels([a], [1.5], 1, 2, a.slice()),
      'channels[0]: expected a non-negative integer, got 1.5',
    ],
    [
      'concat output aliasing an input',
      () => {
        const buf = new Float32Array(16);
        native.concatChannels([a, buf.subarray(2, 6)], [3, 2], 1, 2, buf.subarray(4, 14));
      },
      'output: must not share memory with inputs[1]',
    ],
    [
      'split wrong output length',
      () => native.splitChannels(new Float32Array(10), [a, b], [3, 2], 1, 2),
      'outputs[1]: expected 4 elements, got 3',
    ],
    [
      'split output aliasing input',
      () => {
        const inp = new Float32Array(10);
        native.splitChannels(inp, [inp.subarray(0, 6), new Float32Array(4)], [3, 2], 1, 2);
      },
      'outputs[0]: must not share memory with input',
    ],
    [
      'split outputs aliasing each other',
      () => {
        const buf = new Float32Array(8);
        native.splitChannels(new Float32Array(10), [buf.subarray(0, 6), buf.subarray(4, 8)], [3, 2], 1, 2);
      },
      'outputs[1]: must not share memory with outputs[0]',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});
