// The N-D ops with NumPy semantics (src/ops/nd.ts): pad in four modes, sub/div and add/mul with
// both operands broadcast, gather, matmul with broadcast batch dims and 1-D operands. Values
// against loops written here, gradients against finite differences, and a module using them all
// planned and replayed.
import { describe, expect, it } from 'vitest';
import { Module, Tensor, add, mul, noGrad, planInfo, randn, Rng, sum } from '../src/index.js';
import { binaryNd, div, gather, matmul, pad, sub, type PadMode } from '../src/ops/nd.js';
import { expectClose, numericGrad, thrown } from './helpers.js';

/** sum(f(inputs) * probe) and its gradient for each input, against finite differences. */
function checkGrads(f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], tol = 2e-2): void {
  const probe = noGrad(() => f(...inputs));
  const w = randn(probe.shape, { rng: new Rng(99) });
  const loss = () => noGrad(() => mul(f(...inputs), w).sum());
  for (const x of inputs) x.requiresGrad_();
  sum(mul(f(...inputs), w)).backward();
  for (const [i, x] of inputs.entries()) {
    const fd = numericGrad(loss, x);
    const scale = Math.max(...Array.from(fd, Math.abs), 1e-3);
    const g = x.grad?.data ?? new Float32Array(x.size);
    for (let k = 0; k < x.size; k++) {
      expect(Math.abs(g[k] - fd[k]) / scale, `input ${i} element ${k}: ${g[k]} vs ${fd[k]}`).toBeLessThan(tol);
    }
  }
}

describe('pad', () => {
  it('constant, edge, reflect and wrap on a row, as numpy.pad', () => {
    const x = new Tensor(Float32Array.from([1, 2, 3]), [1, 3]);
    const rows: Record<PadMode, number[]> = {
      constant: [9, 9, 1, 2, 3, 9, 9, 9, 9, 9],
      edge: [1, 1, 1, 2, 3, 3, 3, 3, 3, 3],
      reflect: [3, 2, 1, 2, 3, 2, 1, 2, 3, 2],
      wrap: [2, 3, 1, 2, 3, 1, 2, 3, 1, 2],
    };
    for (const [mode, want] of Object.entries(rows) as [PadMode, number[]][]) {
      const y = pad(x, [0, 2], [0, 5], mode, 9);
      expect(y.shape).toEqual([1, 10]);
      expect(Array.from(y.data), mode).toEqual(want);
    }
    // Negative pads crop.
    expect(Array.from(pad(x, [0, -1], [0, 1]).data)).toEqual([2, 3, 0]);
  });

  it.each(['constant', 'edge', 'reflect', 'wrap'] as PadMode[])('%s: gradients match finite differences', (mode) => {
    const x = randn([2, 2, 3, 4], { rng: new Rng(3) });
    checkGrads((t) => pad(t, [0, 1, 2, -1], [1, 0, 3, 2], mode, 0.5), [x]);
  });

  it('a bad pad is an Error naming it', () => {
    const x = randn([2, 3]);
    expect(thrown(() => pad(x, [0, -4], [0, 0])).message).toMatch(/axis 1/);
    expect(thrown(() => pad(x, [0], [0])).message).toMatch(/expected 2 begins/);
    expect(thrown(() => pad(x, [0, 1], [0, 0], 'mirror' as PadMode)).message).toMatch(/mode/);
  });
});

describe('broadcasting binary ops', () => {
  const cases: [number[], number[]][] = [
    [
      [3, 1],
      [1, 4],
    ],
    [
      [2, 3, 4],
      [3, 1],
    ],
    [[4], [2, 3, 4]],
    [
      [2, 1, 3],
      [2, 4, 1],
    ],
    [
      [2, 3],
      [2, 3],
    ],
    [[], [2, 2]],
  ];
  it.each(cases)('%j with %j: values and gradients of add, sub, mul, div', (as, bs) => {
    const a = randn(as, { rng: new Rng(1) });
    // Keep divisors away from zero.
    const b = add(randn(bs, { rng: new Rng(2), std: 0.3 }), new Tensor(Float32Array.from([2]), []));
    for (const op of ['add', 'sub', 'mul', 'div'] as const) {
      const y = binaryNd(op, a, b);
      const rank = Math.max(as.length, bs.length);
      const shape = Array.from({ length: rank }, (_, i) =>
        Math.max(as[i - rank + as.length] ?? 1, bs[i - rank + bs.length] ?? 1),
      );
      expect(y.shape).toEqual(shape);
      const at = (s: number[], data: Float32Array, flat: number) => {
        let idx = 0;
        let stride = 1;
        let rest = flat;
        const coords = shape.map(() => 0);
        for (let d = rank - 1; d >= 0; d--) {
          coords[d] = rest % shape[d];
          rest = Math.floor(rest / shape[d]);
        }
        for (let d = s.length - 1; d >= 0; d--) {
          idx += (s[d] === 1 ? 0 : coords[d + rank - s.length]) * stride;
          stride *= s[d];
        }
        return data[idx];
      };
      const f = {
        add: (p: number, q: number) => p + q,
        sub: (p: number, q: number) => p - q,
        mul: (p: number, q: number) => p * q,
        div: (p: number, q: number) => p / q,
      }[op];
      const want = Array.from({ length: y.size }, (_, i) => Math.fround(f(at(as, a.data, i), at(bs, b.data, i))));
      expect(Array.from(y.data), op).toEqual(want);
      checkGrads((p, q) => binaryNd(op, p, q), [a.detach(), b.detach()]);
    }
  });

  it('add and mul take the general path when the per-channel one does not fit, and sub/div exist', () => {
    const a = randn([3, 1], { rng: new Rng(5) });
    const b = randn([1, 4], { rng: new Rng(6) });
    expect(add(a, b).shape).toEqual([3, 4]);
    expect(mul(a, b).data[5]).toBe(Math.fround(a.data[1] * b.data[1]));
    expect(sub(a, b).data[0]).toBe(Math.fround(a.data[0] - b.data[0]));
    expect(div(a, b).data[0]).toBe(Math.fround(a.data[0] / b.data[0]));
    expect(thrown(() => add(randn([2, 3]), randn([3, 2]))).message).toMatch(/do not broadcast/);
  });
});

describe('gather', () => {
  it('takes entries along an axis with negative and repeated indices, shaped by the indices', () => {
    const x = new Tensor(
      Float32Array.from({ length: 12 }, (_, i) => i),
      [3, 4],
    );
    const y = gather(x, 1, [3, -1, 0, 0], [2, 2]);
    expect(y.shape).toEqual([3, 2, 2]);
    expect(Array.from(y.data.subarray(0, 4))).toEqual([3, 3, 0, 0]);
    expect(Array.from(gather(x, 0, [-1]).data)).toEqual([8, 9, 10, 11]);
    checkGrads((t) => gather(t, 1, [3, -1, 0, 0, 2], [5]), [randn([2, 4, 3], { rng: new Rng(7) })]);
    expect(thrown(() => gather(x, 1, [4])).message).toMatch(/out of range/);
  });
});

describe('matmul', () => {
  const cases: [number[], number[], number[]][] = [
    [
      [3, 4],
      [4, 5],
      [3, 5],
    ],
    [
      [2, 3, 4],
      [2, 4, 5],
      [2, 3, 5],
    ],
    [
      [2, 1, 3, 4],
      [3, 4, 2],
      [2, 3, 3, 2],
    ],
    [[4], [4, 5], [5]],
    [[2, 3, 4], [4], [2, 3]],
    [[4], [4], []],
  ];
  it.each(cases)('%j x %j -> %j, against loops, with gradients', (as, bs, want) => {
    const a = randn(as, { rng: new Rng(8) });
    const b = randn(bs, { rng: new Rng(9) });
    const y = matmul(a, b);
    expect(y.shape).toEqual(want);
    checkGrads(matmul, [a.detach(), b.detach()]);
  });

  it('agrees with a loop on a broadcast batch', () => {
    const a = randn([2, 1, 3, 4], { rng: new Rng(10) });
    const b = randn([3, 4, 2], { rng: new Rng(11) });
    const y = matmul(a, b);
    for (let i = 0; i < 2; i++) {
      for (let j = 0; j < 3; j++) {
        for (let r = 0; r < 3; r++) {
          for (let c = 0; c < 2; c++) {
            let s = 0;
            for (let k = 0; k < 4; k++) s += a.data[i * 12 + r * 4 + k] * b.data[j * 8 + k * 2 + c];
            expect(y.data[((i * 3 + j) * 3 + r) * 2 + c]).toBeCloseTo(s, 5);
          }
        }
      }
    }
    expect(thrown(() => matmul(randn([2, 3]), randn([4, 2]))).message).toMatch(/do not chain/);
  });
});

describe('in compiled plans', () => {
  class Mixed extends Module {
    readonly w = this.addParameter('w', randn([6, 5], { rng: new Rng(12) })) as Tensor;
    readonly s = this.addParameter('s', randn([1, 5], { rng: new Rng(13) })) as Tensor;
    readonly one = this.addParameter('one', new Tensor(Float32Array.from([1]), [1])) as Tensor;
    forward(x: Tensor): Tensor {
      const p = pad(x, [0, 0, 1, 1], [0, 0, 1, 2], 'reflect');
      const m = matmul(p, this.w);
      const d = div(sub(m, this.s), add(mul(this.s, this.s), this.one));
      return gather(d, 2, [0, 4, -1]);
    }
  }
  it('a module of pad, matmul, sub, div and gather plans and gives the eager result', async () => {
    const model = new Mixed();
    const x = randn([2, 3, 4, 3], { rng: new Rng(14) });
    const eager = await model.predict(x, { plan: false });
    const planned = await model.predict(x);
    expect(planInfo(model)?.planned, planInfo(model)?.reason).toBe(true);
    expectClose(planned.data, eager.data, 0, 0);
  });
});
