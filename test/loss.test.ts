// softmax / log_softmax and cross-entropy (label smoothing, class weights, ignore_index,
// reductions) forward and backward against PyTorch goldens (test/fixtures/gen_loss.py), on both
// SIMD paths, plus the binding's argument errors.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { det, expectClose, loadFixture, type FixtureTensor, pick, useKernels, withKernels } from './helpers.js';

type CrossEntropyArgs = Parameters<typeof native.crossEntropyForward>[5];

interface Pass {
  output: FixtureTensor;
  gradInput: FixtureTensor;
}

interface SoftmaxCase {
  name: string;
  rows: number;
  cols: number;
  scale: number;
  seeds: [number, number];
  plain: Pass;
  log: Pass;
}

interface CeCase {
  name: string;
  batch: number;
  classes: number;
  labelSmoothing: number;
  ignoreIndex: number;
  reduction: 'mean' | 'sum' | 'none';
  logitScale: number;
  seeds: [number, number];
  targets: number[];
  classWeights: FixtureTensor | null;
  gradOutput: FixtureTensor;
  loss: number;
  losses: FixtureTensor;
  probs: FixtureTensor;
  gradLogits: FixtureTensor;
}

const fixture = loadFixture<{ softmax: SoftmaxCase[]; crossEntropy: CeCase[] }>('loss.json');

describe.each(['auto', 'scalar'] as const)('softmax vs PyTorch (simd %s)', (simd) => {
  useKernels({ simd });
  it.each(fixture.softmax.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const x = det([c.rows, c.cols], c.seeds[0], c.scale).data;
    const g = det([c.rows, c.cols], c.seeds[1]).data;
    for (const log of [false, true]) {
      const want = log ? c.log : c.plain;
      const what = `${c.name} ${log ? 'log_softmax' : 'softmax'}`;
      const y = new Float32Array(x.length);
      native.softmaxForward(x, y, c.rows, c.cols, log);
      expectClose(y, want.output.data, 1e-4, 1e-5, `${what} forward`);
      const gi = new Float32Array(x.length);
      native.softmaxBackward(y, g, gi, c.rows, c.cols, log);
      expectClose(gi, want.gradInput.data, 1e-4, 1e-5, `${what} backward`);
    }
  });
});

function ceArgs(c: CeCase): CrossEntropyArgs {
  return pick(c, ['batch', 'classes', 'labelSmoothing', 'ignoreIndex', 'reduction']);
}

describe.each(['auto', 'scalar'] as const)('cross-entropy vs PyTorch (simd %s)', (simd) => {
  useKernels({ simd });
  it.each(fixture.crossEntropy.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const logits = det([c.batch, c.classes], c.seeds[0], c.logitScale).data;
    const targets = Int32Array.from(c.targets);
    const weights = c.classWeights ? Float32Array.from(c.classWeights.data) : null;
    const probs = new Float32Array(logits.length);
    const losses = new Float32Array(c.batch);
    const loss = native.crossEntropyForward(logits, targets, weights, probs, losses, ceArgs(c));
    expectClose([loss], [c.loss], 1e-4, 1e-5, `${c.name} loss`);
    expectClose(losses, c.losses.data, 1e-4, 1e-5, `${c.name} per-sample losses`);
    expectClose(probs, c.probs.data, 1e-4, 1e-5, `${c.name} probs`);
    const grad = new Float32Array(logits.length);
    native.crossEntropyBackward(probs, targets, weights, Float32Array.from(c.gradOutput.data), grad, ceArgs(c));
    expectClose(grad, c.gradLogits.data, 1e-4, 1e-5, `${c.name} grad logits`);
  });
});

describe('cross-entropy defaults and edge cases', () => {
  it('defaults are reduction mean, ignoreIndex -100, no smoothing', () => {
    const c = fixture.crossEntropy.find((k) => k.name === 'plain mean')!;
    const logits = det([c.batch, c.classes], c.seeds[0], c.logitScale).data;
    const probs = new Float32Array(logits.length);
    const losses = new Float32Array(c.batch);
    const loss = native.crossEntropyForward(logits, Int32Array.from(c.targets), null, probs, losses, {
      batch: c.batch,
      classes: c.classes,
    });
    expectClose([loss], [c.loss], 1e-4, 1e-5, 'default args');
    const t = Int32Array.from(c.targets);
    t[0] = -100;
    const l2 = native.crossEntropyForward(logits, t, null, probs, losses, { batch: c.batch, classes: c.classes });
    expect(losses[0]).toBe(0);
    expect(l2).not.toBeCloseTo(loss);
  });

  it('all targets ignored: mean is NaN as in PyTorch, gradient is zero', () => {
    const logits = det([2, 3], 1).data;
    const probs = new Float32Array(6);
    const losses = new Float32Array(2);
    const args = { batch: 2, classes: 3 };
    const t = Int32Array.from([-100, -100]);
    expect(native.crossEntropyForward(logits, t, null, probs, losses, args)).toBeNaN();
    const grad = new Float32Array(6).fill(1);
    native.crossEntropyBackward(probs, t, null, Float32Array.of(1), grad, args);
    expect(Array.from(grad)).toEqual([0, 0, 0, 0, 0, 0]);
  });

  it('1 and 2 threads agree exactly on a batch big enough to split', () => {
    const [batch, classes] = [3000, 37];
    const logits = det([batch, classes], 5, 4).data;
    const targets = Int32Array.from({ length: batch }, (_, i) => (i * 7) % classes);
    const weights = det([classes], 6).data.map((v) => Math.abs(v) + 0.1);
    const args: CrossEntropyArgs = { batch, classes, labelSmoothing: 0.1 };
    const run = (threads: number) =>
      withKernels({ threads }, () => {
        const probs = new Float32Array(logits.length);
        const losses = new Float32Array(batch);
        const loss = native.crossEntropyForward(logits, targets, weights, probs, losses, args);
        const grad = new Float32Array(logits.length);
        native.crossEntropyBackward(probs, targets, weights, Float32Array.of(1), grad, args);
        return { loss, probs: Array.from(probs), grad: Array.from(grad) };
      });
    const one = run(1);
    const two = run(2);
    expect(two.loss).toBe(one.loss);
    expect(two.probs).toEqual(one.probs);
    expect(two.grad).toEqual(one.grad);
  });
});

describe('errors', () => {
  const x = new Float32Array(6);
  const y = new Float32Array(6);
  const args = (over: Partial<CrossEntropyArgs> = {}): CrossEntropyArgs => ({ batch: 2, classes: 3, ...over });
  const t = Int32Array.from([0, 2]);
  const fwd = (over: Partial<CrossEntropyArgs> = {}, targets = t, w: Float32Array | null = null) =>
    native.crossEntropyForward(x, targets, w, new Float32Array(6), new Float32Array(2), args(over));
  it.each([
    [
      'softmax wrong input length',
      () => native.softmaxForward(new Float32Array(5), y, 2, 3, false),
      'input: expected 6 elements, got 5',
    ],
    ['softmax zero cols', () => native.softmaxForward(x, y, 2, 0, true), 'cols: expected a positive size, got 0'],
    [
      'softmax NaN rows',
      () => native.softmaxForward(x, y, NaN, 3, true),
      'rows: expected a non-negative integer, got NaN',
    ],
    ['softmax aliasing', () => native.softmaxForward(x, x, 2, 3, false), 'output: must not share memory with input'],
    [
      'softmax backward aliasing',
      () => native.softmaxBackward(x, y, y, 2, 3, false),
      'gradInput: must not share memory with gradOutput',
    ],
    [
      'softmax backward wrong length',
      () => native.softmaxBackward(x, y, new Float32Array(7), 2, 3, true),
      'gradInput: expected 6 elements, got 7',
    ],
    [
      'target out of range',
      () => fwd({}, Int32Array.from([0, 3])),
      'targets[1]: expected a class index in [0, 3) or ignoreIndex (-100), got 3',
    ],
    [
      'negative target',
      () => fwd({}, Int32Array.from([-1, 0])),
      'targets[0]: expected a class index in [0, 3) or ignoreIndex (-100), got -1',
    ],
    ['wrong targets length', () => fwd({}, Int32Array.from([0])), 'targets: expected 2 elements, got 1'],
    ['wrong class weights length', () => fwd({}, t, new Float32Array(2)), 'classWeights: expected 3 elements, got 2'],
    [
      'unknown reduction',
      () => fwd({ reduction: 'avg' }),
      "reduction: expected one of 'mean', 'sum', 'none', got 'avg'",
    ],
    [
      'label smoothing above 1',
      () => fwd({ labelSmoothing: 1.5 }),
      'labelSmoothing: expected a number in [0, 1], got 1.5',
    ],
    ['NaN label smoothing', () => fwd({ labelSmoothing: NaN }), 'labelSmoothing: expected a number in [0, 1], got NaN'],
    ['fractional ignoreIndex', () => fwd({ ignoreIndex: 0.5 }), 'ignoreIndex: expected an integer, got 0.5'],
    ['NaN batch', () => fwd({ batch: NaN }), 'batch: expected a non-negative integer, got NaN'],
    ['zero classes', () => fwd({ classes: 0 }), 'classes: expected a positive size, got 0'],
    [
      'probs aliasing logits',
      () => native.crossEntropyForward(x, t, null, x, new Float32Array(2), args()),
      'probs: must not share memory with logits',
    ],
    [
      'losses aliasing probs',
      () => {
        const buf = new Float32Array(8);
        native.crossEntropyForward(x, t, null, buf.subarray(0, 6), buf.subarray(5, 7), args());
      },
      'losses: must not share memory with probs',
    ],
    [
      'probs sharing memory with targets',
      () => {
        const buf = new ArrayBuffer(64);
        native.crossEntropyForward(
          x,
          new Int32Array(buf, 0, 2),
          null,
          new Float32Array(buf, 0, 6),
          new Float32Array(2),
          args(),
        );
      },
      'probs: must not share memory with targets',
    ],
    [
      'backward gradOutput length (mean)',
      () => native.crossEntropyBackward(y, t, null, new Float32Array(2), new Float32Array(6), args()),
      'gradOutput: expected 1 elements, got 2',
    ],
    [
      'backward gradOutput length (none)',
      () =>
        native.crossEntropyBackward(y, t, null, new Float32Array(1), new Float32Array(6), args({ reduction: 'none' })),
      'gradOutput: expected 2 elements, got 1',
    ],
    [
      'backward target out of range',
      () =>
        native.crossEntropyBackward(y, Int32Array.from([5, 0]), null, new Float32Array(1), new Float32Array(6), args()),
      'targets[0]: expected a class index',
    ],
    [
      'backward aliasing',
      () => native.crossEntropyBackward(y, t, null, new Float32Array(1), y, args()),
      'gradLogits: must not share memory with probs',
    ],
    [
      'targets not an Int32Array',
      () =>
        native.crossEntropyForward(
          x,
          [0, 1] as unknown as Int32Array,
          null,
          new Float32Array(6),
          new Float32Array(2),
          args(),
        ),
      'TypedArray',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});
