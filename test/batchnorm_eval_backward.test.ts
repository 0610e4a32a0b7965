// Eval-mode batch-norm backward runs natively (batchnorm::batch_norm2d_backward with BnStats::Running): against
// the TypeScript loop it replaced, kept here as a reference copy, bit for bit.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { batchNorm2d } from '../src/ops/index.js';
import { Tensor } from '../src/tensor.js';
import { awkward, expectSame, onBothSimdPaths } from './native-reference.js';

/** The former eval backward of src/ops/norm.ts. */
function reference(
  x: Tensor,
  g: Float32Array,
  runningMean: Float32Array,
  runningVar: Float32Array,
  weight: Float32Array | null,
  eps: number,
) {
  const c = x.shape[1];
  const plane = x.shape[2] * x.shape[3];
  const gx = new Float32Array(x.size);
  const gw = new Float32Array(c);
  const gb = new Float32Array(c);
  for (let n = 0; n < x.shape[0]; n++) {
    for (let ch = 0; ch < c; ch++) {
      const invstd = 1 / Math.sqrt(runningVar[ch] + eps);
      const scale = invstd * (weight ? weight[ch] : 1);
      const mean = runningMean[ch];
      const base = (n * c + ch) * plane;
      let sw = 0;
      let sb = 0;
      for (let i = base; i < base + plane; i++) {
        gx[i] = g[i] * scale;
        sw += g[i] * (x.data[i] - mean) * invstd;
        sb += g[i];
      }
      gw[ch] += sw;
      gb[ch] += sb;
    }
  }
  return { gx, gw, gb };
}

// Planes of 1, 35, 99 and 9100 elements (the last over several parallel tasks).
const SHAPES = [
  [3, 2, 1, 1],
  [2, 3, 5, 7],
  [1, 1, 33, 3],
  [2, 4, 130, 70],
];

describe('eval batch-norm backward equals the former loop', () => {
  for (const shape of SHAPES) {
    for (const withWeight of [true, false]) {
      it(`[${shape.join(', ')}], ${withWeight ? 'weight and bias' : 'no affine'}`, () => {
        onBothSimdPaths((simd) => {
          const size = shape.reduce((a, b) => a * b, 1);
          const c = shape[1];
          for (const [finite, eps] of [
            [true, 1e-5],
            [false, 1e-3],
            [true, 1e-30],
          ] as const) {
            const clean = (v: Float32Array) => (finite ? v.map((e) => (Number.isFinite(e) ? e : 0.25)) : v);
            const x = new Tensor(clean(awkward(size, 1, 50)), shape).requiresGrad_();
            const rm = new Tensor(clean(awkward(c, 2)), [c]);
            // Variances: non-negative, with zero, denormal and huge ones.
            const rv = new Tensor(
              awkward(c, 3, 4).map((v) => (Number.isNaN(v) ? 2 : Math.abs(v))),
              [c],
            );
            const w = withWeight ? new Tensor(clean(awkward(c, 4, 3)), [c]).requiresGrad_() : null;
            const b = withWeight ? new Tensor(clean(awkward(c, 5)), [c]).requiresGrad_() : null;
            const g = clean(awkward(size, 6, 1e3));
            batchNorm2d(x, rm, rv, w, b, { training: false, eps }).backward(new Tensor(g, shape));
            const want = reference(x, g, rm.data, rv.data, w?.data ?? null, eps);
            const what = `${simd}, eps ${eps}${finite ? '' : ', non-finite'}`;
            expectSame(x.grad!.data, want.gx, `${what}: gradInput`);
            if (w && b) {
              expectSame(w.grad!.data, want.gw, `${what}: gradWeight`);
              expectSame(b.grad!.data, want.gb, `${what}: gradBias`);
            }
          }
        });
      });
    }
  }

  it('bad input', () => {
    const f = (n: number) => new Float32Array(n);
    const args = { inputShape: [1, 2, 2, 2], momentum: 0.1, eps: 1e-5 };
    expect(() => native.batchNorm2dBackward(f(8), f(8), null, f(2), f(3), f(8), null, null, args, 'running')).toThrow(
      'runningVar: expected 2 elements, got 3',
    );
    expect(() => native.batchNorm2dBackward(f(8), f(7), null, f(2), f(2), f(8), null, null, args, 'running')).toThrow(
      'gradOutput: expected 8 elements, got 7',
    );
    const x = f(8);
    expect(() => native.batchNorm2dBackward(x, f(8), null, f(2), f(2), x, null, null, args, 'running')).toThrow(
      /gradInput.*input/,
    );
    // The statistics kind is checked by name too; a typo must not pick one silently.
    expect(() =>
      native.batchNorm2dBackward(f(8), f(8), null, f(2), f(2), f(8), null, null, args, 'eval' as 'batch'),
    ).toThrow("batchNorm2dBackward: stats: expected 'batch' or 'running', got 'eval'");
  });
});
