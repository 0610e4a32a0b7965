// Autograd over composite graphs: gradients against finite differences, accumulation, no-grad,
// and a graph that is released after backward.
import { describe, expect, it } from 'vitest';
import { conv2d, noGrad, reshape, scale, sum, Tensor, randn, Rng, mean, mul, isGradEnabled } from '../src/index.js';
import { numericGrad } from './helpers.js';

function expectGradClose(analytic: Float32Array, numeric: Float64Array, tol = 2e-2): void {
  const scaleRef = Math.max(...Array.from(numeric, Math.abs), 1e-3);
  for (let i = 0; i < analytic.length; i++) {
    expect(Math.abs(analytic[i] - numeric[i]) / scaleRef, `element ${i}: ${analytic[i]} vs ${numeric[i]}`).toBeLessThan(
      tol,
    );
  }
}

describe('autograd', () => {
  it('conv -> reshape -> weighted sum: gradients of input, weight and bias match finite differences', () => {
    const rng = new Rng(1);
    const x = randn([2, 3, 5, 4], { rng }).requiresGrad_();
    const w = randn([4, 3, 3, 3], { rng, std: 0.3 }).requiresGrad_();
    const b = randn([4], { rng }).requiresGrad_();
    const probe = randn([2 * 4 * 3 * 2], { rng });
    const f = () => {
      const y = conv2d(x, w, b, { stride: [1, 2], padding: [0, 1] });
      const flat = reshape(y, [-1]);
      return noGrad(() => mul(flat, probe).sum());
    };
    const y = conv2d(x, w, b, { stride: [1, 2], padding: [0, 1] });
    const flat = reshape(y, [-1]);
    // loss = sum(flat * probe): the multiply by a constant, recorded through scale-free ops
    const loss = sum(new ProbeMul(flat, probe).out);
    loss.backward();
    expectGradClose(x.grad!.data, numericGrad(f, x));
    expectGradClose(w.grad!.data, numericGrad(f, w));
    expectGradClose(b.grad!.data, numericGrad(f, b));
  });

  it('a tensor used twice gets the sum of both gradients, and grads accumulate across backward calls', () => {
    const x = new Tensor(Float32Array.from([1, 2, 3]), [3]).requiresGrad_();
    const y = sum(scale(x, 2));
    const z = sum(scale(x, 3));
    const total = sum(new Tensor(new Float32Array(0), [0]));
    expect(total.requiresGrad).toBe(false);
    // d/dx (2x + 3x) = 5 via two paths into one root
    const both = addScalars(y, z);
    both.backward();
    expect(Array.from(x.grad!.data)).toEqual([5, 5, 5]);
    sum(scale(x, 1)).backward();
    expect(Array.from(x.grad!.data)).toEqual([6, 6, 6]);
  });

  it('noGrad records nothing and restores the mode even on throw', () => {
    const x = randn([4]).requiresGrad_();
    const y = noGrad(() => scale(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.gradFn).toBeNull();
    expect(() =>
      noGrad(() => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(isGradEnabled()).toBe(true);
    expect(() => y.backward()).toThrow(/does not require grad/);
  });

  it('the graph is released after backward (no growth from step to step)', () => {
    const x = randn([8]).requiresGrad_();
    const mid = scale(x, 3);
    const loss = mean(mid);
    loss.backward();
    expect(loss.gradFn).toBeNull();
    expect(mid.gradFn).toBeNull();
    const kept = mean(scale(x, 3));
    kept.backward(undefined, { retainGraph: true });
    expect(kept.gradFn).not.toBeNull();
  });

  it('a second backward through a freed graph throws (as torch does) and changes no gradient', () => {
    const x = new Tensor(Float32Array.from([1, 2, 3, 4]), [4]).requiresGrad_();
    const mid = scale(x, 3);
    const loss = mean(mid);
    loss.backward();
    expect(Array.from(x.grad!.data)).toEqual([0.75, 0.75, 0.75, 0.75]);
    expect(loss.requiresGrad).toBe(true);
    expect(loss.gradFn).toBeNull();
    const freed = /^backward: trying to backward through the graph a second time.*retainGraph: true/;
    expect(() => loss.backward()).toThrow(freed);
    // a new graph on top of an intermediate of the freed one
    expect(() => mean(scale(mid, 2)).backward()).toThrow(freed);
    // ... even when another path of the new graph reaches x directly: nothing is accumulated
    expect(() => sum(addScalars(mean(mid), sum(scale(x, 1)))).backward()).toThrow(freed);
    expect(Array.from(x.grad!.data)).toEqual([0.75, 0.75, 0.75, 0.75]);
    expect(() => mid.requiresGrad_(false)).toThrow(/only leaf tensors/);
    // detach() starts a new graph from the freed tensor's values
    const fresh = mid.detach().requiresGrad_();
    mean(fresh).backward();
    expect(Array.from(fresh.grad!.data)).toEqual([0.25, 0.25, 0.25, 0.25]);
  });

  it('retainGraph keeps the graph for another backward; the last one without it frees it', () => {
    const x = new Tensor(Float32Array.from([1, 2]), [2]).requiresGrad_();
    const loss = sum(scale(x, 2));
    loss.backward(undefined, { retainGraph: true });
    loss.backward(undefined, { retainGraph: true });
    loss.backward();
    expect(Array.from(x.grad!.data)).toEqual([6, 6]);
    expect(() => loss.backward()).toThrow(/graph a second time/);
  });

  it('backward from a leaf is legal, any number of times: its grad is the seed', () => {
    const x = new Tensor(Float32Array.from([5]), []).requiresGrad_();
    x.backward();
    x.backward();
    expect(Array.from(x.grad!.data)).toEqual([2]);
    const v = new Tensor(Float32Array.from([1, 2]), [2]).requiresGrad_();
    v.backward(new Tensor(Float32Array.from([3, 4]), [2]));
    expect(Array.from(v.grad!.data)).toEqual([3, 4]);
  });

  it('backward of a non-scalar needs an explicit gradient of the right size', () => {
    const x = randn([3]).requiresGrad_();
    const y = scale(x, 2);
    expect(() => y.backward()).toThrow(/implicit gradient needs a scalar/);
    expect(() => y.backward(new Tensor(new Float32Array(2), [2]))).toThrow(/grad has 2 elements, tensor has 3/);
    y.backward(new Tensor(Float32Array.from([1, 2, 3]), [3]));
    expect(Array.from(x.grad!.data)).toEqual([2, 4, 6]);
  });
});

/** sum(a) + sum(b) as a recorded op, to give one root two paths. */
function addScalars(a: Tensor, b: Tensor): Tensor {
  const out = new Tensor(Float32Array.from([a.data[0] + b.data[0]]), []);
  out.requiresGrad = true;
  out.gradFn = { name: 'addScalars', inputs: [a, b], backward: (g) => [g.slice(), g.slice()] };
  return out;
}

/** Elementwise multiply by a constant tensor, recorded by hand (keeps this test on TS-only ops). */
class ProbeMul {
  readonly out: Tensor;
  constructor(x: Tensor, probe: Tensor) {
    this.out = new Tensor(
      x.data.map((v, i) => v * probe.data[i]),
      x.shape,
    );
    this.out.requiresGrad = true;
    this.out.gradFn = { name: 'probeMul', inputs: [x], backward: (g) => [g.map((v, i) => v * probe.data[i])] };
  }
}
