// sum / mean / scale, dropout backward and gradient accumulation into leaves run natively
// (crates/kernels/src/{reduce,elementwise}.rs): each against the TypeScript loop it replaced,
// kept here as a reference copy, bit for bit, on awkward values and ragged lengths.
import { describe, expect, it } from 'vitest';
import { record } from '../src/autograd.js';
import { native } from '../src/native.js';
import { dropout, mean, scale, sum } from '../src/ops/index.js';
import { Tensor, ones } from '../src/tensor.js';
import { awkward, expectSame, onBothSimdPaths } from './native-reference.js';

// Empty, single, not multiples of 8 or 16, and several parallel chunks.
const LENGTHS = [0, 1, 7, 13, 33, 70001];

/** The former Tensor.sum(). */
function sumReference(data: Float32Array): number {
  let s = 0;
  for (let i = 0; i < data.length; i++) s += data[i];
  return s;
}

/** The former scale op loop (forward and backward alike). */
function scaleReference(data: Float32Array, s: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < out.length; i++) out[i] = data[i] * s;
  return out;
}

const FACTORS = [0.1, -3, 1 / 3, Math.PI, NaN, Infinity, -0, 1e-300, 1e300, 2 ** -140];

describe('sum and mean equal the former double loop', () => {
  it('Tensor.sum, sum() and mean() on awkward and finite values', () => {
    for (const n of LENGTHS) {
      // Awkward values give NaN almost always; finite ones (the specials cut out) test the rounding.
      for (const data of [awkward(n, 3), awkward(n, 4, 1e30).map((v) => (Number.isFinite(v) ? v : 1e-40))]) {
        const t = new Tensor(data, [n]);
        expect(Object.is(t.sum(), sumReference(data)), `n ${n}`).toBe(true);
        expectSame(sum(t).data, [Math.fround(sumReference(data))], `sum, n ${n}`);
        if (n > 0) {
          expectSame(mean(t).data, [Math.fround(sumReference(data) / n)], `mean, n ${n}`);
          expect(Object.is(t.mean(), sumReference(data) / n)).toBe(true);
        }
      }
    }
    // Signed zeros: the sum starts at +0, as the loop did.
    expect(Object.is(new Tensor(new Float32Array([-0, -0]), [2]).sum(), 0)).toBe(true);
  });

  it('sum and mean backward fill the gradient', () => {
    const x = new Tensor(awkward(13, 1), [13]).requiresGrad_();
    sum(x).backward(new Tensor(new Float32Array([0.3]), []));
    expectSame(x.grad!.data, new Float32Array(13).fill(0.3), 'sum grad');
    x.grad = null;
    mean(x).backward(new Tensor(new Float32Array([0.3]), []));
    expectSame(x.grad!.data, new Float32Array(13).fill(Math.fround(0.3) / 13), 'mean grad');
  });
});

describe('scale equals the former loop', () => {
  it('forward and backward, every factor, both SIMD paths', () => {
    onBothSimdPaths((simd) => {
      for (const n of LENGTHS) {
        for (const s of FACTORS) {
          const x = new Tensor(awkward(n, 5), [n]).requiresGrad_();
          const y = scale(x, s);
          expectSame(y.data, scaleReference(x.data, s), `${simd}, n ${n}, factor ${s}: forward`);
          const g = awkward(n, 6, 7.5);
          y.backward(new Tensor(g, [n]));
          expectSame(x.grad!.data, scaleReference(g, s), `${simd}, n ${n}, factor ${s}: backward`);
        }
      }
    });
  });

  it('bad input', () => {
    expect(() => native.scale(new Float32Array(4), 2, new Float32Array(3))).toThrow(
      'output: expected 4 elements, got 3',
    );
    const b = new Float32Array(8);
    expect(() => native.scale(b.subarray(0, 4), 2, b.subarray(2, 6))).toThrow(
      'output: must not share memory with input',
    );
  });
});

describe('dropout backward equals the former loop', () => {
  it('g * mask, both SIMD paths', () => {
    onBothSimdPaths((simd) => {
      for (const n of LENGTHS.slice(1)) {
        for (const p of [0.1, 0.5, 0.9]) {
          // On ones the output is the mask itself.
          const x = ones([n]).requiresGrad_();
          const y = dropout(x, p);
          const mask = y.data.slice();
          const g = awkward(n, 8);
          y.backward(new Tensor(g, [n]));
          const want = new Float32Array(n);
          for (let i = 0; i < n; i++) want[i] = g[i] * mask[i];
          expectSame(x.grad!.data, want, `${simd}, n ${n}, p ${p}`);
        }
      }
    });
  });

  it('bad input', () => {
    const f = (n: number) => new Float32Array(n);
    expect(() => native.dropoutBackward(f(4), f(3), f(4))).toThrow('mask: expected 4 elements, got 3');
    const b = f(8);
    expect(() => native.dropoutBackward(b.subarray(0, 4), f(4), b.subarray(3, 7))).toThrow(
      'gradInput: must not share memory with gradOutput',
    );
  });
});

describe('gradient accumulation into leaves equals the former loop', () => {
  it('acc[j] += g[j] across backward calls, both SIMD paths', () => {
    onBothSimdPaths((simd) => {
      for (const n of LENGTHS) {
        const x = new Tensor(awkward(n, 1), [n]).requiresGrad_();
        const want = new Float32Array(n);
        for (let k = 0; k < 4; k++) {
          const g = awkward(n, 20 + k, k === 2 ? 1e38 : 1);
          scale(x, 1).backward(new Tensor(g, [n]));
          // The former loop: a copy the first time, then acc[j] += g[j].
          if (k === 0) want.set(g);
          else for (let j = 0; j < n; j++) want[j] += g[j];
          expectSame(x.grad!.data, want, `${simd}, n ${n}, backward ${k + 1}`);
        }
      }
    });
  });

  it('a gradient that is the .grad buffer itself is added as a copy', () => {
    const x = new Tensor(new Float32Array([1, 2, 3]), [3]).requiresGrad_();
    x.grad = new Tensor(new Float32Array([0.5, -1, 4]), [3]);
    const y = record('passGrad', new Tensor(new Float32Array(3), [3]), [x], () => [x.grad!.data]);
    y.backward(new Tensor(new Float32Array(3), [3]));
    expectSame(x.grad.data, [1, -2, 8], 'doubled');
  });

  it('a .grad of the wrong size is an error, not NaNs', () => {
    const x = new Tensor(new Float32Array(3), [3]).requiresGrad_();
    x.grad = new Tensor(new Float32Array(2), [2]);
    expect(() => scale(x, 1).backward(new Tensor(new Float32Array(3), [3]))).toThrow(
      'backward: the .grad of a leaf of shape [3] has 2 elements, expected 3',
    );
  });

  it('bad input', () => {
    const b = new Float32Array(8);
    expect(() => native.accumulateGrad(b.subarray(0, 4), b.subarray(4))).not.toThrow();
    expect(() => native.accumulateGrad(b.subarray(0, 4), b.subarray(1, 5))).toThrow(
      'accumulator: must not share memory with grad',
    );
    expect(() => native.accumulateGrad(b.subarray(0, 4), new Float32Array(5))).toThrow(
      'grad: expected 4 elements, got 5',
    );
  });
});
