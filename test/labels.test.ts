// Class-index targets are checked, never coerced: crossEntropy, nllLoss and the top-k metric
// reject fractional, non-finite, non-numeric and out-of-range labels (other than ignoreIndex),
// naming the op, the index and the value, where Int32Array.from used to round or wrap them.
import { describe, expect, it } from 'vitest';
import { Tensor, crossEntropy, logSoftmax, nllLoss, topkCorrect } from '../src/index.js';

const logits = () => new Tensor(Float32Array.from([0.1, 0.5, -0.2, 1.0, 0.3, 0.2]), [2, 3]);

describe('class-index targets', () => {
  const bad: [string, ArrayLike<number>, string][] = [
    ['fraction', [1.9, 1.9], 'targets[0] = 1.9 is not a class index in [0, 3)'],
    ['NaN', [0, NaN], 'targets[1] = NaN is not a class index in [0, 3)'],
    ['Infinity', [Infinity, 0], 'targets[0] = Infinity is not a class index in [0, 3)'],
    ['2^32 + 1', [2 ** 32 + 1, 0], 'targets[0] = 4294967297 is not a class index in [0, 3)'],
    ['negative', [0, -1], 'targets[1] = -1 is not a class index in [0, 3)'],
    ['= classes', [3, 0], 'targets[0] = 3 is not a class index in [0, 3)'],
    ['string', ['1', 0] as unknown as number[], 'targets[0] = "1" is not a class index in [0, 3)'],
    ['Int32Array out of range', Int32Array.from([0, 12]), 'targets[1] = 12 is not a class index in [0, 3)'],
  ];

  it.each(bad)('crossEntropy rejects %s', (_name, targets, msg) => {
    expect(() => crossEntropy(logits(), targets as number[])).toThrow(`crossEntropy: ${msg}`);
  });

  it.each(bad)('nllLoss rejects %s', (_name, targets, msg) => {
    expect(() => nllLoss(logSoftmax(logits()), targets as number[])).toThrow(`nllLoss: ${msg}`);
  });

  it.each(bad)('topkCorrect rejects %s', (_name, targets, msg) => {
    expect(() => topkCorrect(logits(), targets as Int32Array, 1)).toThrow(`topkCorrect: ${msg}`);
  });

  it('names the index in a larger Int32Array, as the issue asks', () => {
    const x = new Tensor(new Float32Array(40), [4, 10]);
    expect(() => crossEntropy(x, Int32Array.from([1, 2, 3, 12]))).toThrow(
      'crossEntropy: targets[3] = 12 is not a class index in [0, 10)',
    );
  });

  it('still accepts class indices and ignoreIndex, from arrays and Int32Arrays alike', () => {
    const a = crossEntropy(logits(), [1, 0]).data[0];
    expect(crossEntropy(logits(), Int32Array.from([1, 0])).data[0]).toBe(a);
    expect(crossEntropy(logits(), [1, -100]).data[0]).toBe(
      crossEntropy(new Tensor(logits().data.slice(0, 3), [1, 3]), [1]).data[0],
    );
    expect(Number.isFinite(crossEntropy(logits(), [1, 7], { ignoreIndex: 7 }).data[0])).toBe(true);
    expect(Number.isFinite(nllLoss(logSoftmax(logits()), [2, -100]).data[0])).toBe(true);
    expect(topkCorrect(logits(), Int32Array.from([1, -100]), 1)).toBe(1);
    expect(topkCorrect(logits(), Int32Array.from([1, 0]), 1)).toBe(2);
    expect(() => crossEntropy(logits(), [0, 1], { ignoreIndex: 0.5 })).toThrow(
      'crossEntropy: ignoreIndex: expected an integer, got 0.5',
    );
    expect(() => crossEntropy(logits(), [0])).toThrow('crossEntropy: targets: expected 2 class indices, got 1');
  });
});
