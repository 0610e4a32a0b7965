// The native SGD update (native.sgdStep, crates/kernels/src/optim.rs) against the TypeScript loop
// it replaced, bit for bit: that loop rounds where torch's float32 kernels round (float32.ts) and
// matched the torch goldens of optim.test.ts; plus the binding's errors on bad input.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { SGD } from '../src/optim/index.js';
import { addScaled, mulScalar } from '../src/optim/float32.js';
import { Tensor } from '../src/tensor.js';
import { det } from './helpers.js';

interface Opts {
  lr: number;
  weightDecay: number;
  momentum: number;
  dampening: number;
  nesterov: boolean;
  maximize: boolean;
}

/** The former SGD.update loop, for one step. */
function jsStep(p: Float32Array, g: Float32Array, buf: Float32Array | null, first: boolean, o: Opts): void {
  const keep = 1 - o.dampening;
  for (let i = 0; i < p.length; i++) {
    let d = o.maximize ? -g[i] : g[i];
    if (o.weightDecay !== 0) d = addScaled(d, o.weightDecay, p[i]);
    if (buf) {
      buf[i] = first ? d : addScaled(mulScalar(buf[i], o.momentum), keep, d);
      d = o.nesterov ? addScaled(d, o.momentum, buf[i]) : buf[i];
    }
    p[i] = addScaled(p[i], -o.lr, d);
  }
}

const base: Opts = { lr: 0.013, weightDecay: 0, momentum: 0, dampening: 0, nesterov: false, maximize: false };
const CASES: [string, Opts][] = [
  ['plain', base],
  ['weight decay', { ...base, weightDecay: 5e-4 }],
  ['momentum', { ...base, momentum: 0.9 }],
  ['momentum + dampening + decay', { ...base, momentum: 0.8, dampening: 0.3, weightDecay: 1e-2 }],
  ['nesterov', { ...base, momentum: 0.9, nesterov: true, weightDecay: 1e-4 }],
  ['maximize', { ...base, momentum: 0.5, maximize: true }],
];

describe('native SGD step equals the TypeScript rounding bit for bit', () => {
  // 70001 elements: several parallel chunks and a ragged tail; 3 elements: a single short chunk.
  for (const n of [3, 70001]) {
    for (const [name, o] of CASES) {
      it(`${name}, ${n} elements, 4 steps`, () => {
        const p = new Tensor(det([n], 1).data.slice(), [n]).requiresGrad_();
        const opt = new SGD([p], o);
        const want = det([n], 1).data.slice();
        const wantBuf = o.momentum !== 0 ? new Float32Array(n) : null;
        for (let s = 0; s < 4; s++) {
          const g = det([n], 10 + s).data;
          p.grad = new Tensor(g.slice(), [n]);
          opt.step();
          jsStep(want, g, wantBuf, s === 0, o);
          expect(Buffer.from(p.data.buffer).equals(Buffer.from(want.buffer))).toBe(true);
        }
        if (wantBuf) {
          const saved = opt.stateDict().state['0'].momentumBuffer as number[];
          expect(Float32Array.from(saved)).toEqual(wantBuf);
        }
      });
    }
  }
});

describe('sgdStep bad input', () => {
  const args = {
    lr: 0.1,
    weightDecay: 0,
    momentum: 0.9,
    dampening: 0,
    nesterov: false,
    maximize: false,
    firstStep: false,
  };
  const f = (n: number) => new Float32Array(n);
  it('wrong lengths', () => {
    expect(() => native.sgdStep(f(4), f(3), f(4), args)).toThrow('grad: expected 4 elements, got 3');
    expect(() => native.sgdStep(f(4), f(4), f(5), args)).toThrow('momentumBuffer: expected 4 elements, got 5');
  });
  it('buffer presence must match momentum', () => {
    expect(() => native.sgdStep(f(4), f(4), null, args)).toThrow(
      'momentumBuffer: expected 4 elements (momentum > 0), got none',
    );
    expect(() => native.sgdStep(f(4), f(4), f(4), { ...args, momentum: 0 })).toThrow(
      'momentumBuffer: expected none (momentum is 0), got a buffer',
    );
  });
  it('bad hyper-parameters', () => {
    expect(() => native.sgdStep(f(4), f(4), f(4), { ...args, lr: -1 })).toThrow(
      'lr: expected a non-negative number, got -1',
    );
    expect(() => native.sgdStep(f(4), f(4), f(4), { ...args, momentum: NaN })).toThrow(
      /momentum: expected a non-negative number/,
    );
    expect(() => native.sgdStep(f(4), f(4), f(4), { ...args, nesterov: true, dampening: 0.5 })).toThrow(
      /nesterov: needs momentum > 0 and dampening 0/,
    );
  });
  it('aliased buffers', () => {
    const p = f(8);
    expect(() => native.sgdStep(p, p, f(8), args)).toThrow('param: must not share memory with grad');
    expect(() => native.sgdStep(p.subarray(0, 4), f(4), p.subarray(2, 6), args)).toThrow(
      'momentumBuffer: must not share memory with param',
    );
  });
});
