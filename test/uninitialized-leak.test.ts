// Uninitialised output buffers (src/tensor.ts: uninitialized) must never reach a result: every
// one is fully written before it is read. The allocator is churned with NaN-filled buffers of the
// sizes the ops use, so a freed-then-reused block hands its NaNs to the next uninitialized()
// of that size; a forward + backward of a small ResNet-style block and several losses must then
// give finite results, bit-identical to a run before the churn.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  adaptiveAvgPool2d,
  add,
  avgPool2d,
  batchNorm2d,
  binaryCrossEntropyWithLogits,
  conv2d,
  convTranspose2d,
  crossEntropy,
  flatten,
  linear,
  localResponseNorm,
  logSoftmax,
  maxPool2d,
  mseLoss,
  nllLoss,
  ones,
  relu,
  type Tensor,
  zeros,
} from '../src/index.js';
import { stochasticDepth } from '../src/models/stochastic-depth.js';
import { Rng } from '../src/random.js';
import { uninitialized } from '../src/tensor.js';
import { det } from './helpers.js';

/** A full garbage collection, so dropped ArrayBuffers give their memory back to the allocator. */
function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** Sizes (in floats) of the buffers the run below asks for, and a few around them. */
const SIZES = [1 << 14, 3 << 13, 1 << 15, 3 << 14, 1 << 16, 3 << 15, 1 << 17, 1 << 18];

/** Allocates, NaN-fills (all bits set) and drops many buffers, then collects them. */
function churn(): void {
  let keep: Buffer[] = [];
  for (let round = 0; round < 6; round++) {
    for (const n of SIZES) keep.push(Buffer.allocUnsafeSlow(n * 4).fill(0xff));
  }
  expect(keep.length).toBe(6 * SIZES.length);
  keep = [];
  collectGarbage();
}

const leaf = (shape: number[], seed: number, scale = 0.2) => det(shape, seed, scale).requiresGrad_();

/** One training step's forward and backward, from fixed inputs: every value and gradient. */
function run(): Map<string, Float32Array> {
  const x = leaf([4, 8, 32, 32], 1, 1);
  const params: Record<string, Tensor> = {
    w1: leaf([16, 8, 3, 3], 2),
    b1: leaf([16], 3),
    g1: leaf([16], 4),
    be1: leaf([16], 5),
    w2: leaf([16, 16, 3, 3], 6),
    g2: leaf([16], 7),
    be2: leaf([16], 8),
    wsc: leaf([16, 8, 1, 1], 9),
    wt: leaf([16, 8, 2, 2], 10),
    bt: leaf([8], 11),
    wl: leaf([10, 256], 12, 0.05),
    bl: leaf([10], 13),
    wl2: leaf([8, 4096], 14, 0.02),
  };
  const p = params;
  // Running mean and variance of the two batch norms (updated in place by the training pass).
  const stats = [zeros([16]), ones([16]), zeros([16]), ones([16])];
  const train = { training: true };

  // Residual block: relu(bn(conv(relu(bn(conv(x))))) dropped per sample + 1x1 shortcut).
  let h = conv2d(x, p.w1, p.b1, { padding: 1 });
  h = relu(batchNorm2d(h, stats[0], stats[1], p.g1, p.be1, train));
  h = batchNorm2d(conv2d(h, p.w2, null, { padding: 1 }), stats[2], stats[3], p.g2, p.be2, train);
  h = stochasticDepth(h, 0.5, true, new Rng(7));
  let y = relu(add(h, conv2d(x, p.wsc)));
  y = localResponseNorm(y, 3);
  const pooled = add(maxPool2d(y, 2), avgPool2d(y, 2));
  const feat = flatten(adaptiveAvgPool2d(pooled, [4, 4]));
  const logits = linear(feat, p.wl, p.bl);
  const logits2 = linear(flatten(pooled), p.wl2, null);
  const up = convTranspose2d(pooled, p.wt, p.bt, { stride: 2 });

  const targets = [3, 1, 4, 1];
  const bceTarget = det([4, 4096], 15, 0.5);
  bceTarget.data.forEach((v, i) => {
    bceTarget.data[i] = v > 0 ? 1 : 0;
  });
  const losses = [
    crossEntropy(logits, targets, { labelSmoothing: 0.1 }),
    nllLoss(logSoftmax(logits2), [0, -100, 7, 2]),
    binaryCrossEntropyWithLogits(flatten(pooled), bceTarget),
    mseLoss(up, det([4, 8, 32, 32], 16)),
  ];
  const loss = losses.reduce((a, b) => add(a, b));
  loss.backward();

  const out = new Map<string, Float32Array>([
    ['loss', loss.data],
    ['logits', logits.data],
    ['logits2', logits2.data],
    ['up', up.data],
    ['x.grad', x.grad!.data],
  ]);
  for (const [name, t] of Object.entries(params)) out.set(`${name}.grad`, t.grad!.data);
  for (const [i, s] of stats.entries()) out.set(`stats${i}`, s.data);
  return out;
}

describe('uninitialised buffers', () => {
  it('churning the allocator does make uninitialized() return NaN-filled memory (Linux)', () => {
    if (process.platform !== 'linux') return;
    // Whether freed memory comes back at once depends on the collector and on what else the
    // process allocates meanwhile (other suites share the worker): a few rounds, not one.
    let dirty = 0;
    for (let round = 0; round < 5 && dirty === 0; round++) {
      churn();
      dirty = SIZES.map((n) => uninitialized(n)).filter((a) => a.some(Number.isNaN)).length;
    }
    expect(dirty, 'the churn no longer poisons reused memory: this suite has lost its teeth').toBeGreaterThan(0);
  });

  it('never leak into outputs or gradients', () => {
    const before = run();
    for (const [name, a] of before) {
      expect(
        a.every((v) => Number.isFinite(v)),
        `${name} is not finite before the churn`,
      ).toBe(true);
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      churn();
      const after = run();
      for (const [name, a] of after) {
        const bad = a.findIndex((v) => !Number.isFinite(v));
        expect(bad, `${name}[${bad}] = ${a[bad]} after churn ${attempt + 1}`).toBe(-1);
        expect(bytes(a).equals(bytes(before.get(name)!)), `${name} differs after churn ${attempt + 1}`).toBe(true);
      }
    }
  });
});

function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}
