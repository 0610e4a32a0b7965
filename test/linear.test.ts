// Linear layer (forward and backward) against PyTorch goldens (test/fixtures/gen_linear.py),
// the raw sgemm entry against a naive loop, and the errors both give for bad arguments.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { type BackwardFixtureCase, det, expectClose, loadFixture, type FixtureTensor, withKernels } from './helpers.js';

interface Case extends BackwardFixtureCase {
  batch: number;
  inFeatures: number;
  outFeatures: number;
  output: FixtureTensor;
}

const { cases } = loadFixture<{ cases: Case[] }>('linear.json');

describe.each(['auto', 'scalar'] as const)('linear vs PyTorch (simd %s)', (simd) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    withKernels({ simd }, () => {
      const args = { batch: c.batch, inFeatures: c.inFeatures, outFeatures: c.outFeatures };
      const x = det([c.batch, c.inFeatures], c.seeds[0]).data;
      const w = det([c.outFeatures, c.inFeatures], c.seeds[1], c.weightScale).data;
      const b = c.bias ? det([c.outFeatures], c.seeds[2]).data : null;
      const gy = det([c.batch, c.outFeatures], c.seeds[3]).data;
      const y = new Float32Array(c.batch * c.outFeatures).fill(NaN);
      native.linearForward(x, w, b, y, args);
      expectClose(y, c.output.data, 1e-4, 1e-5, `${c.name} output`);
      const gx = new Float32Array(x.length).fill(NaN);
      const gw = new Float32Array(w.length).fill(NaN);
      const gb = new Float32Array(c.outFeatures).fill(NaN);
      native.linearBackward(x, w, gy, gx, gw, gb, args);
      expectClose(gx, c.gradInput.data, 1e-4, 1e-5, `${c.name} gradInput`);
      expectClose(gw, c.gradWeight.data, 1e-4, 1e-5, `${c.name} gradWeight`);
      if (c.gradBias) expectClose(gb, c.gradBias.data, 1e-4, 1e-5, `${c.name} gradBias`);
      // Gradients not asked for are skipped; the others are unchanged by that.
      const gw2 = new Float32Array(w.length);
      native.linearBackward(x, w, gy, null, gw2, null, args);
      expect(Array.from(gw2)).toEqual(Array.from(gw));
    });
  });
});

/** C = alpha * op(A) * op(B) + beta * C, in doubles, tight row-major layouts. */
function naiveSgemm(
  ta: boolean,
  tb: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  b: Float32Array,
  beta: number,
  c: Float32Array,
): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) {
        const av = ta ? a[p * m + i] : a[i * k + p];
        const bv = tb ? b[j * k + p] : b[p * n + j];
        s += av * bv;
      }
      out[i * n + j] = alpha * s + (beta === 0 ? 0 : beta * c[i * n + j]);
    }
  }
  return out;
}

describe('sgemm vs a naive loop', () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [7, 13, 5],
    [1, 40, 17],
    [33, 1, 9],
    [67, 129, 33],
    [20, 300, 260],
  ];
  for (const [m, n, k] of shapes) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        it(`${m}x${n}x${k} transA=${ta} transB=${tb}`, () => {
          const a = det([m * k], 1).data;
          const b = det([k * n], 2).data;
          for (const [alpha, beta] of [
            [1, 0],
            [0.5, 1],
            [-2, 0.25],
          ]) {
            const c = det([m * n], 3).data;
            const want = naiveSgemm(ta, tb, m, n, k, alpha, a, b, beta, c);
            native.sgemm(ta, tb, m, n, k, alpha, a, b, beta, c);
            // Sums of up to 300 float32 products: rtol 1e-4 with atol 1e-4 covers their rounding.
            expectClose(c, want, 1e-4, 1e-4, `alpha ${alpha} beta ${beta}`);
          }
        });
      }
    }
  }

  it('beta = 0 ignores NaN already in c', () => {
    const c = new Float32Array(6).fill(NaN);
    native.sgemm(
      false,
      false,
      2,
      3,
      2,
      1,
      Float32Array.from([1, 2, 3, 4]),
      Float32Array.from([1, 0, 1, 0, 1, 1]),
      0,
      c,
    );
    expect(Array.from(c)).toEqual([1, 2, 3, 3, 4, 7]);
  });
});

describe('linear and sgemm errors', () => {
  const args = { batch: 2, inFeatures: 3, outFeatures: 4 };
  const x = new Float32Array(6);
  const w = new Float32Array(12);
  const y = new Float32Array(8);

  it.each([
    [
      'short input',
      () => native.linearForward(new Float32Array(5), w, null, y, args),
      'input: expected 6 elements, got 5',
    ],
    [
      'wrong weight',
      () => native.linearForward(x, new Float32Array(13), null, y, args),
      'weight: expected 12 elements, got 13',
    ],
    ['wrong bias', () => native.linearForward(x, w, new Float32Array(3), y, args), 'bias: expected 4 elements, got 3'],
    [
      'wrong output',
      () => native.linearForward(x, w, null, new Float32Array(7), args),
      'output: expected 8 elements, got 7',
    ],
    [
      'zero batch',
      () => native.linearForward(x, w, null, y, { ...args, batch: 0 }),
      'batch: expected a positive size, got 0',
    ],
    [
      'negative features',
      () => native.linearForward(x, w, null, y, { ...args, inFeatures: -3 }),
      'inFeatures: expected a non-negative integer, got -3',
    ],
    [
      'fractional features',
      () => native.linearForward(x, w, null, y, { ...args, outFeatures: 4.5 }),
      'outFeatures: expected a non-negative integer, got 4.5',
    ],
    [
      'absurd sizes',
      () => native.linearForward(x, w, null, y, { batch: 2 ** 40, inFeatures: 2 ** 40, outFeatures: 1 }),
      'too many elements',
    ],
    [
      'output aliasing input',
      () => native.linearForward(x, w, null, x, { batch: 2, inFeatures: 3, outFeatures: 3 }),
      'output: must not share memory with input',
    ],
    [
      'wrong gradOutput',
      () => native.linearBackward(x, w, new Float32Array(9), null, null, null, args),
      'gradOutput: expected 8 elements, got 9',
    ],
    [
      'wrong gradInput',
      () => native.linearBackward(x, w, y, new Float32Array(5), null, null, args),
      'gradInput: expected 6 elements, got 5',
    ],
    [
      'wrong gradWeight',
      () => native.linearBackward(x, w, y, null, new Float32Array(11), null, args),
      'gradWeight: expected 12 elements, got 11',
    ],
    [
      'wrong gradBias',
      () => native.linearBackward(x, w, y, null, null, new Float32Array(5), args),
      'gradBias: expected 4 elements, got 5',
    ],
    [
      'gradients sharing memory',
      () => {
        const buf = new Float32Array(20);
        native.linearBackward(x, w, y, buf.subarray(0, 6), buf.subarray(4, 16), null, args);
      },
      'gradInput: must not share memory with gradWeight',
    ],
    [
      'gradWeight aliasing weight',
      () => native.linearBackward(x, w, y, null, w, null, args),
      'gradWeight: must not share memory with weight',
    ],
    [
      'sgemm short a',
      () => native.sgemm(false, false, 2, 2, 3, 1, new Float32Array(5), new Float32Array(6), 0, new Float32Array(4)),
      'a: expected 6 elements, got 5',
    ],
    [
      'sgemm short b',
      () => native.sgemm(false, true, 2, 2, 3, 1, new Float32Array(6), new Float32Array(7), 0, new Float32Array(4)),
      'b: expected 6 elements, got 7',
    ],
    [
      'sgemm wrong c',
      () => native.sgemm(true, false, 2, 2, 3, 1, new Float32Array(6), new Float32Array(6), 0, new Float32Array(3)),
      'c: expected 4 elements, got 3',
    ],
    [
      'sgemm negative size',
      () => native.sgemm(false, false, -1, 2, 3, 1, x, x, 0, y),
      'm: expected a non-negative integer, got -1',
    ],
    [
      'sgemm c aliasing a',
      () => native.sgemm(false, false, 2, 2, 2, 1, x.subarray(0, 4), w.subarray(0, 4), 0, x.subarray(2, 6)),
      'c: must not share memory with a',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});
