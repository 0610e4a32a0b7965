// The native optimizer updates (native.sgdStep, adamStep, ..., crates/kernels/src/optim.rs)
// against the TypeScript loops they replaced, bit for bit: those loops round where torch's float32
// kernels round (float32.ts) and matched the torch goldens of optim.test.ts; plus the binding's
// errors on bad input.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import { Adadelta, Adagrad, Adam, AdamW, RMSprop, SGD, type Optimizer } from '../src/optim/index.js';
import { addScalar, addScaled, addcdiv, addcmul, divScalar, f32, mulScalar, sqrt } from '../src/optim/float32.js';
import { Tensor } from '../src/tensor.js';
import { det } from './helpers.js';
import { awkward, expectSame, onBothSimdPaths } from './native-reference.js';

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

// ---- The adaptive optimizers: awkward values, ragged lengths, several steps, both SIMD paths ----

// Lengths: a single element, short lengths not a multiple of 8 or 16, and several parallel chunks.
const LENGTHS = [1, 7, 13, 33, 70001];
const STEPS = 4;

/**
 * Runs `make()`'s optimizer for STEPS steps over one awkward parameter and checks it, and its
 * state, against `reference` (the former TypeScript loop) after every step, on both SIMD paths.
 */
function checkAgainstReference(
  make: (p: Tensor) => Optimizer<any>,
  reference: (p: Float32Array, g: Float32Array, state: { step: number; buffers: Record<string, Float32Array> }) => void,
): void {
  onBothSimdPaths((simd) => {
    for (const n of LENGTHS) {
      const p = new Tensor(awkward(n, 1), [n]).requiresGrad_();
      const opt = make(p);
      const want = awkward(n, 1);
      const state = { step: 0, buffers: {} as Record<string, Float32Array> };
      for (let s = 0; s < STEPS; s++) {
        // Step 2 has gradients a million times larger (squares overflow to Infinity).
        const g = awkward(n, 10 + s, s === 2 ? 1e6 : 1);
        p.grad = new Tensor(g.slice(), [n]);
        opt.step();
        reference(want, g, state);
        expectSame(p.data, want, `${simd}, n ${n}, step ${s + 1}: param`);
        const saved = opt.stateDict().state['0'];
        for (const [name, buf] of Object.entries(state.buffers)) {
          expectSame(Float32Array.from(saved[name] as number[]), buf, `${simd}, n ${n}, step ${s + 1}: ${name}`);
        }
        expect(Object.keys(saved).sort()).toEqual(['step', ...Object.keys(state.buffers)].sort());
      }
    }
  });
}

function stateBuffer(
  state: { buffers: Record<string, Float32Array> },
  name: string,
  n: number,
  fill = 0,
): Float32Array {
  state.buffers[name] ??= new Float32Array(n).fill(fill);
  return state.buffers[name];
}

interface AdamRef {
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
  amsgrad: boolean;
  maximize: boolean;
}

/** The former adamUpdate of src/optim/adam.ts (Adam; decoupled = AdamW). */
function adamReference(o: AdamRef, decoupled: boolean) {
  return (p: Float32Array, g: Float32Array, state: { step: number; buffers: Record<string, Float32Array> }): void => {
    const { lr, weightDecay, eps, amsgrad, maximize } = o;
    const [beta1, beta2] = o.betas;
    const expAvg = stateBuffer(state, 'expAvg', p.length);
    const expAvgSq = stateBuffer(state, 'expAvgSq', p.length);
    const maxSq = amsgrad ? stateBuffer(state, 'maxExpAvgSq', p.length) : null;
    const step = ++state.step;
    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2 = 1 - beta2 ** step;
    const negStepSize = -(lr / biasCorrection1);
    const biasCorrection2Sqrt = Math.sqrt(biasCorrection2);
    const keep = 1 - lr * weightDecay;
    for (let i = 0; i < p.length; i++) {
      let grad = maximize ? -g[i] : g[i];
      if (decoupled) p[i] = mulScalar(p[i], keep);
      else if (weightDecay !== 0) grad = addScaled(grad, weightDecay, p[i]);
      expAvg[i] = addScaled(mulScalar(expAvg[i], beta1), 1 - beta1, grad);
      expAvgSq[i] = addcmul(mulScalar(expAvgSq[i], beta2), 1 - beta2, grad, grad);
      let second = expAvgSq[i];
      if (maxSq) {
        if (second > maxSq[i] || Number.isNaN(second)) maxSq[i] = second;
        second = maxSq[i];
      }
      const denom = addScalar(divScalar(sqrt(second), biasCorrection2Sqrt), eps);
      p[i] = addcdiv(p[i], negStepSize, expAvg[i], denom);
    }
  };
}

const ADAM_BASE: AdamRef = {
  lr: 1e-3,
  weightDecay: 0,
  betas: [0.9, 0.999],
  eps: 1e-8,
  amsgrad: false,
  maximize: false,
};
const ADAM_CASES: [string, AdamRef][] = [
  ['defaults', ADAM_BASE],
  ['amsgrad', { ...ADAM_BASE, amsgrad: true }],
  ['weight decay + amsgrad', { ...ADAM_BASE, weightDecay: 1e-2, amsgrad: true }],
  ['maximize + weight decay', { ...ADAM_BASE, maximize: true, weightDecay: 0.3, lr: 0.05 }],
  ['beta1 0, tiny eps, large lr', { ...ADAM_BASE, betas: [0, 0.5], eps: 1e-30, lr: 7.5 }],
  ['eps 0, amsgrad, maximize', { ...ADAM_BASE, eps: 0, amsgrad: true, maximize: true, betas: [0.5, 0.25] }],
];

describe('native Adam and AdamW steps equal the TypeScript rounding bit for bit', () => {
  for (const [name, o] of ADAM_CASES) {
    it(`Adam, ${name}`, () => {
      checkAgainstReference((p) => new Adam([p], o), adamReference(o, false));
    });
    it(`AdamW, ${name}`, () => {
      const w = { ...o, weightDecay: o.weightDecay || 1e-2 };
      checkAgainstReference((p) => new AdamW([p], w), adamReference(w, true));
    });
  }
  it('AdamW without weight decay', () => {
    const o = { ...ADAM_BASE, weightDecay: 0 };
    checkAgainstReference((p) => new AdamW([p], o), adamReference(o, true));
  });
});

describe('adamStep bad input', () => {
  const args = {
    lr: 0.1,
    weightDecay: 0,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    amsgrad: false,
    maximize: false,
    decoupled: false,
    biasCorrection1: 0.1,
    biasCorrection2: 0.001,
  };
  const f = (n: number) => new Float32Array(n);
  it('wrong lengths and buffers', () => {
    expect(() => native.adamStep(f(4), f(3), f(4), f(4), null, args)).toThrow('grad: expected 4 elements, got 3');
    expect(() => native.adamStep(f(4), f(4), f(4), f(5), null, args)).toThrow('expAvgSq: expected 4 elements, got 5');
    expect(() => native.adamStep(f(4), f(4), f(4), f(4), null, { ...args, amsgrad: true })).toThrow(
      'maxExpAvgSq: expected 4 elements (amsgrad), got none',
    );
    expect(() => native.adamStep(f(4), f(4), f(4), f(4), f(4), args)).toThrow(
      'maxExpAvgSq: expected none (amsgrad is off), got a buffer',
    );
  });
  it('bad hyper-parameters', () => {
    expect(() => native.adamStep(f(4), f(4), f(4), f(4), null, { ...args, lr: NaN })).toThrow(
      'lr: expected a non-negative number, got NaN',
    );
    expect(() => native.adamStep(f(4), f(4), f(4), f(4), null, { ...args, beta2: 1 })).toThrow(
      'betas[1]: expected a number in [0, 1), got 1',
    );
    expect(() => native.adamStep(f(4), f(4), f(4), f(4), null, { ...args, biasCorrection1: 0 })).toThrow(
      'biasCorrection1: expected a number in (0, 1], got 0',
    );
  });
  it('aliased buffers', () => {
    const b = f(8);
    expect(() => native.adamStep(b, b, f(8), f(8), null, args)).toThrow('param: must not share memory with grad');
    expect(() => native.adamStep(f(4), f(4), b.subarray(0, 4), b.subarray(3, 7), null, args)).toThrow(
      'expAvgSq: must not share memory with expAvg',
    );
  });
});

type RefState = { step: number; buffers: Record<string, Float32Array> };

interface RmspropRef {
  lr: number;
  weightDecay: number;
  alpha: number;
  eps: number;
  momentum: number;
  centered: boolean;
  maximize: boolean;
}

/** The former RMSprop.update loop of src/optim/rmsprop.ts. */
function rmspropReference(o: RmspropRef) {
  return (p: Float32Array, g: Float32Array, state: RefState): void => {
    const { lr, weightDecay, alpha, eps, momentum, centered, maximize } = o;
    state.step++;
    const squareAvg = stateBuffer(state, 'squareAvg', p.length);
    const gradAvg = centered ? stateBuffer(state, 'gradAvg', p.length) : null;
    const buf = momentum > 0 ? stateBuffer(state, 'momentumBuffer', p.length) : null;
    const negLr = -lr;
    for (let i = 0; i < p.length; i++) {
      let grad = maximize ? -g[i] : g[i];
      if (weightDecay !== 0) grad = addScaled(grad, weightDecay, p[i]);
      squareAvg[i] = addcmul(mulScalar(squareAvg[i], alpha), 1 - alpha, grad, grad);
      let avg: number;
      if (gradAvg) {
        gradAvg[i] = addScaled(mulScalar(gradAvg[i], alpha), 1 - alpha, grad);
        avg = sqrt(addcmul(squareAvg[i], -1, gradAvg[i], gradAvg[i]));
      } else {
        avg = sqrt(squareAvg[i]);
      }
      avg = addScalar(avg, eps);
      if (buf) {
        buf[i] = addcdiv(mulScalar(buf[i], momentum), 1, grad, avg);
        p[i] = addScaled(p[i], negLr, buf[i]);
      } else {
        p[i] = addcdiv(p[i], negLr, grad, avg);
      }
    }
  };
}

interface AdagradRef {
  lr: number;
  weightDecay: number;
  lrDecay: number;
  initialAccumulatorValue: number;
  eps: number;
  maximize: boolean;
}

/** The former Adagrad.update loop of src/optim/adagrad.ts. */
function adagradReference(o: AdagradRef) {
  return (p: Float32Array, g: Float32Array, state: RefState): void => {
    const { lr, weightDecay, lrDecay, eps, maximize } = o;
    const sum = stateBuffer(state, 'sum', p.length, o.initialAccumulatorValue);
    const step = ++state.step;
    const negClr = -(lr / (1 + (step - 1) * lrDecay));
    for (let i = 0; i < p.length; i++) {
      let grad = maximize ? -g[i] : g[i];
      if (weightDecay !== 0) grad = addScaled(grad, weightDecay, p[i]);
      sum[i] = addcmul(sum[i], 1, grad, grad);
      const std = addScalar(sqrt(sum[i]), eps);
      p[i] = addcdiv(p[i], negClr, grad, std);
    }
  };
}

interface AdadeltaRef {
  lr: number;
  weightDecay: number;
  rho: number;
  eps: number;
  maximize: boolean;
}

/** The former Adadelta.update loop of src/optim/adadelta.ts. */
function adadeltaReference(o: AdadeltaRef) {
  return (p: Float32Array, g: Float32Array, state: RefState): void => {
    const { lr, weightDecay, rho, eps, maximize } = o;
    state.step++;
    const squareAvg = stateBuffer(state, 'squareAvg', p.length);
    const accDelta = stateBuffer(state, 'accDelta', p.length);
    const negLr = -lr;
    for (let i = 0; i < p.length; i++) {
      let grad = maximize ? -g[i] : g[i];
      if (weightDecay !== 0) grad = addScaled(grad, weightDecay, p[i]);
      squareAvg[i] = addcmul(mulScalar(squareAvg[i], rho), 1 - rho, grad, grad);
      const std = sqrt(addScalar(squareAvg[i], eps));
      const delta = f32(f32(sqrt(addScalar(accDelta[i], eps)) / std) * grad);
      accDelta[i] = addcmul(mulScalar(accDelta[i], rho), 1 - rho, delta, delta);
      p[i] = addScaled(p[i], negLr, delta);
    }
  };
}

const RMSPROP_BASE: RmspropRef = {
  lr: 1e-2,
  weightDecay: 0,
  alpha: 0.99,
  eps: 1e-8,
  momentum: 0,
  centered: false,
  maximize: false,
};
const RMSPROP_CASES: [string, RmspropRef][] = [
  ['defaults', RMSPROP_BASE],
  ['centered', { ...RMSPROP_BASE, centered: true }],
  ['momentum + weight decay', { ...RMSPROP_BASE, momentum: 0.9, weightDecay: 1e-2 }],
  ['centered + momentum + maximize', { ...RMSPROP_BASE, centered: true, momentum: 0.5, maximize: true, alpha: 0.5 }],
  ['alpha above 1, eps 0', { ...RMSPROP_BASE, alpha: 1.5, eps: 0, lr: 3 }],
];

const ADAGRAD_BASE: AdagradRef = {
  lr: 1e-2,
  weightDecay: 0,
  lrDecay: 0,
  initialAccumulatorValue: 0,
  eps: 1e-10,
  maximize: false,
};
const ADAGRAD_CASES: [string, AdagradRef][] = [
  ['defaults', ADAGRAD_BASE],
  ['lr decay + weight decay', { ...ADAGRAD_BASE, lrDecay: 0.3, weightDecay: 1e-2 }],
  ['initial accumulator + maximize', { ...ADAGRAD_BASE, initialAccumulatorValue: 0.1, maximize: true, lr: 0.7 }],
  ['eps 0', { ...ADAGRAD_BASE, eps: 0, lrDecay: 1e-3 }],
];

const ADADELTA_BASE: AdadeltaRef = { lr: 1, weightDecay: 0, rho: 0.9, eps: 1e-6, maximize: false };
const ADADELTA_CASES: [string, AdadeltaRef][] = [
  ['defaults', ADADELTA_BASE],
  ['weight decay + maximize', { ...ADADELTA_BASE, weightDecay: 1e-2, maximize: true }],
  ['rho 0, eps 0, lr 0.3', { ...ADADELTA_BASE, rho: 0, eps: 0, lr: 0.3 }],
  ['rho 1', { ...ADADELTA_BASE, rho: 1, eps: 1e-30 }],
];

describe('native RMSprop, Adagrad and Adadelta steps equal the TypeScript rounding bit for bit', () => {
  for (const [name, o] of RMSPROP_CASES) {
    it(`RMSprop, ${name}`, () => checkAgainstReference((p) => new RMSprop([p], o), rmspropReference(o)));
  }
  for (const [name, o] of ADAGRAD_CASES) {
    it(`Adagrad, ${name}`, () => checkAgainstReference((p) => new Adagrad([p], o), adagradReference(o)));
  }
  for (const [name, o] of ADADELTA_CASES) {
    it(`Adadelta, ${name}`, () => checkAgainstReference((p) => new Adadelta([p], o), adadeltaReference(o)));
  }
});

describe('rmspropStep, adagradStep, adadeltaStep bad input', () => {
  const f = (n: number) => new Float32Array(n);
  const rms = { lr: 0.1, weightDecay: 0, alpha: 0.99, eps: 1e-8, momentum: 0, centered: false, maximize: false };
  const ada = { lr: 0.1, weightDecay: 0, lrDecay: 0, eps: 1e-10, maximize: false, step: 1 };
  const delta = { lr: 1, weightDecay: 0, rho: 0.9, eps: 1e-6, maximize: false };
  it('wrong lengths and buffers', () => {
    expect(() => native.rmspropStep(f(4), f(4), f(3), null, null, rms)).toThrow(
      'squareAvg: expected 4 elements, got 3',
    );
    expect(() => native.rmspropStep(f(4), f(4), f(4), null, null, { ...rms, centered: true })).toThrow(
      'gradAvg: expected 4 elements (centered), got none',
    );
    expect(() => native.rmspropStep(f(4), f(4), f(4), null, f(4), rms)).toThrow(
      'momentumBuffer: expected none (not momentum > 0), got a buffer',
    );
    expect(() => native.adagradStep(f(4), f(4), f(5), ada)).toThrow('sum: expected 4 elements, got 5');
    expect(() => native.adadeltaStep(f(4), f(4), f(4), f(2), delta)).toThrow('accDelta: expected 4 elements, got 2');
  });
  it('bad hyper-parameters', () => {
    expect(() => native.rmspropStep(f(4), f(4), f(4), null, null, { ...rms, alpha: -1 })).toThrow(
      'alpha: expected a non-negative number, got -1',
    );
    expect(() => native.adagradStep(f(4), f(4), f(4), { ...ada, step: 0 })).toThrow(
      'step: expected an integer in 1..2^53, got 0',
    );
    expect(() => native.adagradStep(f(4), f(4), f(4), { ...ada, step: 1.5 })).toThrow(
      'step: expected a non-negative integer, got 1.5',
    );
    expect(() => native.adadeltaStep(f(4), f(4), f(4), f(4), { ...delta, rho: 1.5 })).toThrow(
      'rho: expected a number in [0, 1], got 1.5',
    );
  });
  it('aliased buffers', () => {
    const b = f(8);
    expect(() =>
      native.rmspropStep(f(4), f(4), b.subarray(0, 4), null, b.subarray(2, 6), { ...rms, momentum: 0.9 }),
    ).toThrow('momentumBuffer: must not share memory with squareAvg');
    expect(() => native.adagradStep(f(4), b.subarray(0, 4), b.subarray(4), ada)).not.toThrow();
    expect(() => native.adadeltaStep(b.subarray(0, 4), f(4), f(4), b.subarray(1, 5), delta)).toThrow(
      'accDelta: must not share memory with param',
    );
  });
});
