import { describe, expect, it } from 'vitest';
import { Rng, Tensor, add, fromArray, full, manualSeed, mul, ones, rand, randn, scale, zeros } from '../src/index.js';

describe('Tensor', () => {
  it('creates filled tensors with the right shape', () => {
    expect(Array.from(zeros([2, 3]).data)).toEqual([0, 0, 0, 0, 0, 0]);
    expect(Array.from(ones([4]).data)).toEqual([1, 1, 1, 1]);
    expect(Array.from(full([2], 2.5).data)).toEqual([2.5, 2.5]);
    expect(zeros([2, 0, 3]).size).toBe(0);
  });

  it('fromArray infers nested shapes and rejects ragged or non-numeric input', () => {
    const t = fromArray([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.toArray()).toEqual([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(fromArray([1, 2, 3, 4], [2, 2]).toArray()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect(() => fromArray([[1, 2], [3]])).toThrow(/needs 4 elements, got 3/);
    expect(() => fromArray([['a']] as unknown as number[][])).toThrow(/expected numbers/);
    expect(() => fromArray([1, 2, 3], [2, 2])).toThrow(/needs 4 elements, got 3/);
  });

  it('reshape shares data, infers -1 and rejects wrong sizes', () => {
    const t = fromArray([1, 2, 3, 4, 5, 6], [6]);
    const r = t.reshape([2, -1]);
    expect(r.shape).toEqual([2, 3]);
    r.data[0] = 42;
    expect(t.data[0]).toBe(42);
    const c = t.clone();
    c.data[0] = 7;
    expect(t.data[0]).toBe(42);
    expect(() => t.reshape([4, -1])).toThrow(/cannot infer -1/);
    expect(() => t.reshape([5])).toThrow(/does not hold 6 elements/);
    expect(() => t.reshape([-1, -1])).toThrow(/only one dimension/);
    expect(() => new Tensor(new Float32Array(3), [-1, 3])).toThrow(/non-negative integer/);
  });

  it('elementwise ops, reductions and argmax', () => {
    const a = fromArray([
      [1, 5, 3],
      [7, 2, 9],
    ]);
    const b = fromArray([
      [1, 1, 1],
      [2, 2, 2],
    ]);
    // Arithmetic is the differentiable ops' (src/ops); Tensor has no methods of its own for it.
    expect(add(a, b).toArray()).toEqual([
      [2, 6, 4],
      [9, 4, 11],
    ]);
    expect(mul(a, b).toArray()).toEqual([
      [1, 5, 3],
      [14, 4, 18],
    ]);
    expect(scale(a, 2).toArray()).toEqual([
      [2, 10, 6],
      [14, 4, 18],
    ]);
    expect('add' in a || 'sub' in a || 'mul' in a || 'div' in a).toBe(false);
    expect(a.sum()).toBe(27);
    expect(a.mean()).toBe(4.5);
    expect(Array.from(a.argmax())).toEqual([1, 2]);
  });

  it('random tensors repeat for a seed and have the right moments', () => {
    const x1 = randn([10000], { rng: new Rng(7) });
    const x2 = randn([10000], { rng: new Rng(7) });
    expect(Array.from(x1.data)).toEqual(Array.from(x2.data));
    expect(Math.abs(x1.mean())).toBeLessThan(0.05);
    const variance = mul(x1, x1).mean() - x1.mean() ** 2;
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
    const u = rand([10000], { low: -2, high: 2, rng: new Rng(8) });
    expect(Math.min(...u.data)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u.data)).toBeLessThan(2);
    expect(Math.abs(u.mean())).toBeLessThan(0.05);
    manualSeed(3);
    const g1 = randn([5]);
    manualSeed(3);
    expect(Array.from(randn([5]).data)).toEqual(Array.from(g1.data));
    expect(Array.from(randn([5], { rng: new Rng(9) }).data)).not.toEqual(Array.from(x1.data.slice(0, 5)));
  });
});
