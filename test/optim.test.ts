// Optimizers and gradient clipping against PyTorch 1.13 (test/fixtures/gen_optim.py): the same
// parameters and per-step gradients, compared after every step; state-dict round trips; errors.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../src/tensor.js';
import {
  Adadelta,
  Adagrad,
  Adam,
  AdamW,
  type Optimizer,
  RMSprop,
  SGD,
  clipGradNorm,
  clipGradValue,
  type OptimizerStateDict,
} from '../src/optim/index.js';
import { expectClose, loadFixture } from './helpers.js';

interface Case {
  name: string;
  optimizer: keyof typeof OPTIMIZERS;
  options: Record<string, unknown>;
  groups: { params: number[]; options: Record<string, unknown> }[];
  skip: [number, number][];
  steps: number[][][];
}

interface ClipCase {
  kind: 'norm' | 'value';
  normType?: number | 'inf';
  maxNorm?: number;
  clipValue?: number;
  total?: number;
  grads: number[][];
}

interface Fixture {
  steps: number;
  params: { shape: number[]; data: number[] }[];
  cases: Case[];
  clip: { shapes: number[][]; grads: number[][]; cases: ClipCase[] };
}

const fx = loadFixture<Fixture>('optim.json');

// biome-ignore lint/suspicious/noExplicitAny: one table for every optimizer, fed options from the JSON fixture
const OPTIMIZERS: Record<string, new (params: any, options: any) => Optimizer<any>> = {
  SGD,
  Adam,
  AdamW,
  RMSprop,
  Adagrad,
  Adadelta,
};

// Each step is compared with torch at rtol 1e-5 / atol 1e-6: the emulation rounds where torch's
// kernels round, so most elements agree exactly and the rest by an ulp or two (double rounding
// in the fused multiply-add emulation, libm differences in sin for the gradients).
const RTOL = 1e-5;
const ATOL = 1e-6;

function makeParams(): Tensor[] {
  return fx.params.map((t) => new Tensor(Float32Array.from(t.data), t.shape).requiresGrad_());
}

/** gen_optim.py's grad(j, i, s), rounded to float32. */
function gradFor(j: number, p: Tensor, s: number): Tensor {
  const g = new Float32Array(p.size);
  for (let i = 0; i < g.length; i++) g[i] = Math.sin(0.61 * (i + 1) * (j + 1.5) + 1.37 * s);
  return new Tensor(g, p.shape);
}

function build(c: Case, params: Tensor[]): Optimizer {
  const Ctor = OPTIMIZERS[c.optimizer];
  const plain = c.groups.length === 1 && Object.keys(c.groups[0].options).length === 0;
  // A single default group goes in as a flat tensor list, to cover both constructor forms.
  const arg = plain ? params : c.groups.map((g) => ({ params: g.params.map((j) => params[j]), ...g.options }));
  return new Ctor(arg, c.options);
}

/** Sets step s's gradients; skipped ones alternate between grad = null and requiresGrad = false. */
function setGrads(c: Case, params: Tensor[], s: number): void {
  params.forEach((p, j) => {
    const skipped = c.skip.some(([ss, jj]) => ss === s && jj === j);
    p.requiresGrad = !(skipped && (s + j) % 2 === 1);
    p.grad = skipped && p.requiresGrad ? null : gradFor(j, p, s);
  });
}

function compareStep(c: Case, params: Tensor[], s: number): void {
  params.forEach((p, j) => {
    expectClose(p.data, c.steps[s - 1][j], RTOL, ATOL, `${c.name}: step ${s}, param ${j}`);
  });
}

describe('optimizers match torch.optim', () => {
  for (const c of fx.cases) {
    it(c.name, () => {
      const params = makeParams();
      const opt = build(c, params);
      for (let s = 1; s <= fx.steps; s++) {
        setGrads(c, params, s);
        opt.step();
        compareStep(c, params, s);
      }
    });
  }

  it('agree with torch bit for bit on most elements', () => {
    let equal = 0;
    let total = 0;
    for (const c of fx.cases) {
      const params = makeParams();
      const opt = build(c, params);
      for (let s = 1; s <= fx.steps; s++) {
        setGrads(c, params, s);
        opt.step();
        params.forEach((p, j) => {
          p.data.forEach((v, i) => {
            total++;
            if (v === Math.fround(c.steps[s - 1][j][i])) equal++;
          });
        });
      }
    }
    // Measured: all 1375 of them on torch 1.13 (AVX2 build); allow for goldens regenerated elsewhere.
    expect(equal / total).toBeGreaterThan(0.99);
  });
});

describe('optimizer state dict', () => {
  for (const c of fx.cases) {
    it(`round trip after step 2 continues exactly: ${c.name}`, () => {
      const paramsA = makeParams();
      const a = build(c, paramsA);
      for (let s = 1; s <= 2; s++) {
        setGrads(c, paramsA, s);
        a.step();
      }
      const saved = JSON.parse(JSON.stringify(a.stateDict())) as OptimizerStateDict;
      // A fresh optimizer on fresh parameters holding the checkpointed values.
      const paramsB = makeParams();
      paramsB.forEach((p, j) => {
        p.data.set(paramsA[j].data);
      });
      const b = build(c, paramsB);
      b.loadStateDict(saved);
      for (let s = 3; s <= fx.steps; s++) {
        setGrads(c, paramsA, s);
        setGrads(c, paramsB, s);
        a.step();
        b.step();
        paramsB.forEach((p, j) => {
          expect(Array.from(p.data)).toEqual(Array.from(paramsA[j].data));
        });
        compareStep(c, paramsB, s);
      }
      expect(b.stateDict()).toEqual(a.stateDict());
    });
  }

  it('is plain JSON: buffers as number arrays keyed by parameter index, group options', () => {
    const [w, b] = [new Tensor(new Float32Array([1, 2]), [2]), new Tensor(new Float32Array([3]), [1])];
    w.requiresGrad_();
    b.requiresGrad_();
    const opt = new SGD(
      [
        { params: [w], lrMult: 2 },
        { params: [b], momentum: 0.5 },
      ],
      { lr: 0.1, momentum: 0.9 },
    );
    w.grad = new Tensor(new Float32Array([0.5, -0.25]), [2]);
    opt.step();
    const sd = opt.stateDict();
    expect(sd).toEqual({
      optimizer: 'SGD',
      state: { 0: { step: 1, momentumBuffer: [0.5, -0.25] } },
      paramGroups: [
        {
          params: [0],
          lr: 0.1,
          weightDecay: 0,
          lrMult: 2,
          decayMult: 1,
          momentum: 0.9,
          dampening: 0,
          nesterov: false,
          maximize: false,
        },
        {
          params: [1],
          lr: 0.1,
          weightDecay: 0,
          lrMult: 1,
          decayMult: 1,
          momentum: 0.5,
          dampening: 0,
          nesterov: false,
          maximize: false,
        },
      ],
    });
    // Copies, not views of the live buffers.
    (sd.state[0].momentumBuffer as number[])[0] = 99;
    expect(opt.stateDict().state[0].momentumBuffer).toEqual([0.5, -0.25]);
    expect(Array.from(w.data)).toEqual([Math.fround(1 - 0.2 * 0.5), Math.fround(2 + 0.2 * 0.25)]);
  });

  it('restores group options such as lr', () => {
    const a = new Adam([new Tensor(new Float32Array(2), [2])], { lr: 0.1 });
    const sd = a.stateDict();
    sd.paramGroups[0].lr = 0.5;
    sd.paramGroups[0].betas = [0.7, 0.8];
    a.loadStateDict(sd);
    expect(a.paramGroups[0].lr).toBe(0.5);
    expect(a.paramGroups[0].betas).toEqual([0.7, 0.8]);
  });
});

describe('optimizer errors', () => {
  const t = (n = 2): Tensor => new Tensor(new Float32Array(n), [n]).requiresGrad_();

  it('rejects bad constructor arguments naming the problem', () => {
    expect(() => new Adam([])).toThrow(/empty parameter list/);
    expect(() => new Adam([1 as unknown as Tensor])).toThrow(/params.*expected a Tensor|expected \{ params/);
    expect(() => new Adam([{ params: [t(), 3 as unknown as Tensor] }])).toThrow(
      /paramGroups\[0\]\.params\[1\]: expected a Tensor/,
    );
    const p = t();
    expect(() => new Adam([{ params: [p] }, { params: [p] }])).toThrow(
      /paramGroups\[1\]\.params\[0\]: this tensor is already in a parameter group/,
    );
    expect(() => new SGD([t()], { lr: 0.1, momentun: 0.9 } as never)).toThrow(/unknown option 'momentun'/);
    expect(() => new SGD([{ params: [t()], beta: 1 } as never], { lr: 0.1 })).toThrow(
      /paramGroups\[0\]: unknown option 'beta'/,
    );
    expect(() => new SGD([t()], {} as never)).toThrow(/SGD: lr is required/);
    expect(() => new SGD([t()], { lr: -1 })).toThrow(/SGD: lr: expected a non-negative number, got -1/);
    expect(() => new SGD([t()], { lr: 0.1, nesterov: true })).toThrow(/nesterov: needs momentum > 0 and dampening 0/);
    expect(() => new SGD([{ params: [t()], momentum: -0.5 }], { lr: 0.1 })).toThrow(
      /paramGroups\[0\]: momentum: expected a non-negative number, got -0.5/,
    );
    expect(() => new Adam([t()], { betas: [1, 0.9] })).toThrow(/betas\[0\]: expected a number in \[0, 1\), got 1/);
    expect(() => new Adam([t()], { betas: [0.9] as never })).toThrow(/betas: expected a pair of numbers, got \[0.9\]/);
    expect(() => new Adam([{ params: [t()], amsgrad: 1 as never }])).toThrow(/amsgrad: expected a boolean, got 1/);
    expect(() => new AdamW([t()], { weightDecay: -0.1 })).toThrow(/AdamW: weightDecay: expected a non-negative number/);
    expect(() => new RMSprop([t()], { alpha: -1 })).toThrow(/RMSprop: alpha/);
    expect(() => new Adagrad([t()], { lrDecay: -1 })).toThrow(/Adagrad: lrDecay/);
    expect(() => new Adadelta([t()], { rho: 1.5 })).toThrow(/Adadelta: rho: expected a number in \[0, 1\], got 1.5/);
    expect(() => new SGD([{ params: [t()], lrMult: -1 }], { lr: 0.1 })).toThrow(
      /lrMult: expected a non-negative number/,
    );
  });

  it('step rejects a mis-shaped gradient before changing anything', () => {
    const a = t(2);
    const b = t(3);
    const opt = new SGD([a, b], { lr: 1 });
    a.grad = new Tensor(new Float32Array([1, 1]), [2]);
    b.grad = new Tensor(new Float32Array([1, 1]), [2]);
    expect(() => opt.step()).toThrow(/paramGroups\[0\]\.params\[1\]: grad has shape \[2\], expected \[3\]/);
    expect(Array.from(a.data)).toEqual([0, 0]);
  });

  it('skips parameters without a gradient or not requiring one; zeroGrad clears', () => {
    const a = t(1);
    const b = t(1);
    const c = t(1);
    const opt = new SGD([a, b, c], { lr: 1 });
    a.grad = new Tensor(new Float32Array([1]), [1]);
    b.grad = null;
    c.grad = new Tensor(new Float32Array([1]), [1]);
    c.requiresGrad = false;
    expect(opt.step(() => 42)).toBe(42);
    expect([a.data[0], b.data[0], c.data[0]]).toEqual([-1, 0, 0]);
    opt.zeroGrad();
    expect([a.grad, b.grad, c.grad]).toEqual([null, null, null]);
  });

  it('addParamGroup adds a group with defaults filled in', () => {
    const opt = new Adam([t()], { lr: 0.01 });
    const extra = t();
    opt.addParamGroup({ params: [extra], lr: 0.1 });
    expect(opt.paramGroups[1]).toMatchObject({ lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, lrMult: 1 });
    expect(() => opt.addParamGroup({ params: [extra] })).toThrow(/already in a parameter group/);
  });

  it('loadStateDict validates everything and changes nothing on error', () => {
    const [a, b] = [t(2), t(3)];
    const opt = new Adam([{ params: [a] }, { params: [b], lr: 0.5 }], { lr: 0.1 });
    a.grad = new Tensor(new Float32Array([1, 2]), [2]);
    b.grad = new Tensor(new Float32Array([1, 2, 3]), [3]);
    opt.step();
    const good = opt.stateDict();
    const before = JSON.stringify(good);
    const bad = (edit: (sd: OptimizerStateDict) => void): OptimizerStateDict => {
      const sd = JSON.parse(before) as OptimizerStateDict;
      edit(sd);
      return sd;
    };
    const cases: [OptimizerStateDict, RegExp][] = [
      [bad((sd) => sd.paramGroups.pop()), /expected 2 parameter groups, got 1/],
      [bad((sd) => sd.paramGroups[1].params.push(7)), /paramGroups\[1\]: expected 1 parameters, got 2/],
      [
        bad((sd) => {
          (sd.state[1].expAvg as number[]).pop();
        }),
        /state\[1\]\.expAvg: expected 3 values \(parameter shape \[3\]\), got 2 values/,
      ],
      [
        bad((sd) => {
          sd.state[0].momentumBuffer = [1, 2];
        }),
        /state\[0\]: unknown buffer 'momentumBuffer' for Adam/,
      ],
      [
        bad((sd) => {
          sd.state[5] = { step: 1 };
        }),
        /state\[5\]: no parameter has index 5/,
      ],
      [
        bad((sd) => {
          sd.state[0].step = -1;
        }),
        /state\[0\]\.step: expected a non-negative integer, got -1/,
      ],
      [
        bad((sd) => {
          sd.optimizer = 'SGD';
        }),
        /the state dict is for "SGD", this optimizer is Adam/,
      ],
      [
        bad((sd) => {
          delete (sd.paramGroups[0] as Record<string, unknown>).eps;
        }),
        /paramGroups\[0\]: option 'eps' is missing/,
      ],
      [
        bad((sd) => {
          sd.paramGroups[0].momentum = 0.9;
        }),
        /paramGroups\[0\]: unknown option 'momentum' for Adam/,
      ],
      [
        bad((sd) => {
          sd.paramGroups[0].lr = -3;
        }),
        /paramGroups\[0\]: lr: expected a non-negative number, got -3/,
      ],
      [
        bad((sd) => {
          sd.paramGroups[1].params = [0];
        }),
        /paramGroups\[1\]\.params\[0\]: index 0 appears twice/,
      ],
      [{} as OptimizerStateDict, /expected \{ optimizer, state, paramGroups \}/],
    ];
    for (const [sd, message] of cases) {
      // A modified lr in the same dict must not leak in when validation fails later.
      const last = sd.paramGroups?.[sd.paramGroups.length - 1];
      if (last) last.lr = 123;
      expect(() => opt.loadStateDict(sd)).toThrow(message);
      expect(JSON.stringify(opt.stateDict())).toBe(before);
    }
  });
});

describe('gradient clipping matches torch.nn.utils', () => {
  const { shapes, grads, cases } = fx.clip;
  const withGrads = (): Tensor[] => {
    const ps = shapes.map((s, j) => {
      const p = new Tensor(new Float32Array(grads[j].length), s).requiresGrad_();
      p.grad = new Tensor(Float32Array.from(grads[j]), s);
      return p;
    });
    // A parameter without a gradient is ignored.
    return [...ps, new Tensor(new Float32Array(2), [2]).requiresGrad_()];
  };

  for (const c of cases) {
    it(
      c.kind === 'norm' ? `clipGradNorm normType ${c.normType} maxNorm ${c.maxNorm}` : `clipGradValue ${c.clipValue}`,
      () => {
        const params = withGrads();
        if (c.kind === 'norm') {
          const total = clipGradNorm(params, c.maxNorm!, c.normType === 'inf' ? Infinity : c.normType);
          expectClose([total], [c.total!], 1e-6, 0, 'total norm');
        } else {
          clipGradValue(params, c.clipValue!);
        }
        c.grads.forEach((g, j) => {
          expectClose(params[j].grad!.data, g, 1e-6, 1e-7, `grad ${j}`);
        });
      },
    );
  }

  it('returns 0 without gradients, accepts a single tensor, rejects bad arguments', () => {
    expect(clipGradNorm([new Tensor(new Float32Array(2), [2])], 1)).toBe(0);
    const p = new Tensor(new Float32Array(1), [1]);
    p.grad = new Tensor(new Float32Array([4]), [1]);
    expect(clipGradNorm(p, 2)).toBe(4);
    expect(p.grad.data[0]).toBeCloseTo(2, 5);
    expect(() => clipGradNorm([p], -1)).toThrow(/maxNorm: expected a non-negative number, got -1/);
    expect(() => clipGradNorm([p], 1, -2)).toThrow(/normType: expected a number >= 0, Infinity or -Infinity, got -2/);
    expect(() => clipGradValue([p], NaN)).toThrow(/clipValue: expected a non-negative number, got NaN/);
    expect(() => clipGradNorm([p, {} as Tensor], 1)).toThrow(/params\[1\]: expected a Tensor/);
    p.grad = new Tensor(new Float32Array([NaN]), [1]);
    expect(() => clipGradNorm([p], 1, 2, { errorIfNonfinite: true })).toThrow(
      /total norm of order 2 of the gradients is NaN/,
    );
    expect(Number.isNaN(clipGradNorm([p], 1))).toBe(true);
  });
});
