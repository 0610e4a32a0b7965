// Learning-rate schedules against torch.optim.lr_scheduler (test/fixtures/gen_optim.py): every
// group's lr (and OneCycleLR's momentum / beta1) after construction and after each of 30 steps;
// state-dict round trips mid-schedule; errors.
import { describe, expect, it } from 'vitest';
import { Tensor } from '../src/tensor.js';
import {
  Adagrad,
  Adam,
  CosineAnnealingLR,
  ExponentialLR,
  MultiStepLR,
  OneCycleLR,
  PolynomialLR,
  ReduceLROnPlateau,
  SGD,
  StepLR,
  WarmupCosineLR,
  type LRSchedulerStateDict,
  type Optimizer,
  type OptimizerStateDict,
  type ReduceLROnPlateauStateDict,
} from '../src/optim/index.js';
import * as optim from '../src/optim/index.js';
import { expectClose, loadFixture } from './helpers.js';

interface Case {
  name: string;
  scheduler: string;
  options: Record<string, unknown>;
  optimizer: 'SGD' | 'Adam';
  groupLrs: number[];
  lrs: number[][];
  momentum?: number[][];
  metrics?: number[];
}

const fx = loadFixture<{ steps: number; cases: Case[] }>('lr_scheduler.json');

// Schedules are double-precision arithmetic in both torch and here, with the same formulas in
// the same order, so they agree to the last bit or two (libm cos/pow may differ by an ulp).
// WarmupCosineLR is a closed form compared with torch's recursive SequentialLR: ~1e-15.
const RTOL = 1e-12;
const ATOL = 1e-15;

type Scheduler = {
  step(metric?: number): void;
  getLastLr(): number[];
  stateDict(): unknown;
  loadStateDict(sd: never): void;
};

/**
 * The scheduler the case names, looked up among ferroconv.optim's exports (an LRScheduler
 * subclass, or ReduceLROnPlateau), and made with the case's options.
 */
function makeScheduler(c: Case, opt: SGD | Adam): Scheduler {
  const cls = (optim as Record<string, unknown>)[c.scheduler];
  const isScheduler =
    cls === optim.ReduceLROnPlateau || (typeof cls === 'function' && cls.prototype instanceof optim.LRScheduler);
  if (!isScheduler) throw new Error(`ferroconv.optim exports no scheduler named '${c.scheduler}'`);
  // biome-ignore lint/suspicious/noExplicitAny: every scheduler class, fed options from the JSON fixture
  return new (cls as new (opt: Optimizer<any>, options: any) => Scheduler)(opt, c.options);
}

function makeOptimizer(c: Case): SGD | Adam {
  const groups = c.groupLrs.map((lr) => ({ params: [new Tensor(new Float32Array(1), [1]).requiresGrad_()], lr }));
  return c.optimizer === 'SGD'
    ? new SGD(groups, { lr: c.groupLrs[0], momentum: 0.9 })
    : new Adam(groups, { lr: c.groupLrs[0] });
}

function momentumOf(opt: SGD | Adam): number[] {
  return opt instanceof Adam ? opt.paramGroups.map((g) => g.betas[0]) : opt.paramGroups.map((g) => g.momentum);
}

function check(c: Case, opt: SGD | Adam, sched: Scheduler, e: number): void {
  expectClose(
    opt.paramGroups.map((g) => g.lr),
    c.lrs[e],
    RTOL,
    ATOL,
    `${c.name}: lr at step ${e}`,
  );
  expectClose(sched.getLastLr(), c.lrs[e], RTOL, ATOL, `${c.name}: getLastLr at step ${e}`);
  if (c.momentum) expectClose(momentumOf(opt), c.momentum[e], RTOL, ATOL, `${c.name}: momentum at step ${e}`);
}

function stepOnce(c: Case, sched: Scheduler, e: number): void {
  if (c.metrics) sched.step(c.metrics[e - 1]);
  else sched.step();
}

describe('schedulers match torch.optim.lr_scheduler', () => {
  for (const c of fx.cases) {
    it(`${c.scheduler}: ${c.name}`, () => {
      const opt = makeOptimizer(c);
      const sched = makeScheduler(c, opt);
      check(c, opt, sched, 0);
      for (let e = 1; e <= fx.steps; e++) {
        opt.step();
        stepOnce(c, sched, e);
        check(c, opt, sched, e);
      }
    });
  }
});

describe('scheduler state dict', () => {
  for (const c of fx.cases) {
    it(`resumes mid-schedule: ${c.scheduler}: ${c.name}`, () => {
      const optA = makeOptimizer(c);
      const a = makeScheduler(c, optA);
      for (let e = 1; e <= 12; e++) stepOnce(c, a, e);
      const saved = JSON.parse(JSON.stringify({ opt: optA.stateDict(), sched: a.stateDict() })) as {
        opt: OptimizerStateDict;
        sched: never;
      };
      const optB = makeOptimizer(c);
      const b = makeScheduler(c, optB);
      optB.loadStateDict(saved.opt);
      b.loadStateDict(saved.sched);
      check(c, optB, b, 12);
      for (let e = 13; e <= fx.steps; e++) {
        stepOnce(c, a, e);
        stepOnce(c, b, e);
        expect(b.getLastLr()).toEqual(a.getLastLr());
        check(c, optB, b, e);
      }
      expect(b.stateDict()).toEqual(a.stateDict());
    });
  }

  it('ReduceLROnPlateau keeps an infinite best as a string in JSON', () => {
    const opt = new SGD([new Tensor(new Float32Array(1), [1])], { lr: 0.1 });
    const s = new ReduceLROnPlateau(opt);
    expect(s.stateDict().best).toBe('Infinity');
    const max = new ReduceLROnPlateau(opt, { mode: 'max' });
    expect(max.stateDict().best).toBe('-Infinity');
    s.step(0.5);
    const sd = JSON.parse(JSON.stringify(s.stateDict())) as ReduceLROnPlateauStateDict;
    expect(sd).toEqual({
      scheduler: 'ReduceLROnPlateau',
      lastEpoch: 1,
      best: 0.5,
      numBadEpochs: 0,
      cooldownCounter: 0,
      lastLr: [0.1],
    });
    const fresh = new ReduceLROnPlateau(opt);
    fresh.loadStateDict(sd);
    expect(fresh.best).toBe(0.5);
  });
});

describe('WarmupCosineLR', () => {
  it('follows the documented formula and stays at etaMin past totalSteps', () => {
    const opt = new SGD([new Tensor(new Float32Array(1), [1])], { lr: 1 });
    const s = new WarmupCosineLR(opt, { warmupSteps: 3, totalSteps: 7, etaMin: 0.1 });
    const lrs = [s.getLastLr()[0]];
    for (let e = 1; e <= 9; e++) {
      s.step();
      lrs.push(s.getLastLr()[0]);
    }
    const cos = (e: number): number => 0.1 + (0.9 * (1 + Math.cos((Math.PI * (e - 3)) / 4))) / 2;
    expectClose(lrs, [0.25, 0.5, 0.75, 1, cos(4), cos(5), cos(6), 0.1, 0.1, 0.1], 1e-14, 1e-15, 'warmup cosine');
  });

  it('with no warm-up is plain cosine annealing', () => {
    const opt = new SGD([new Tensor(new Float32Array(1), [1])], { lr: 0.2 });
    const s = new WarmupCosineLR(opt, { warmupSteps: 0, totalSteps: 4 });
    const lrs = [s.getLastLr()[0]];
    for (let e = 1; e <= 4; e++) {
      s.step();
      lrs.push(s.getLastLr()[0]);
    }
    expectClose(
      lrs,
      [0.2, (0.2 * (1 + Math.SQRT1_2)) / 2, 0.1, (0.2 * (1 - Math.SQRT1_2)) / 2, 0],
      1e-14,
      1e-16,
      'cosine',
    );
  });
});

describe('scheduler errors', () => {
  const sgd = (groups = 1): SGD =>
    new SGD(
      Array.from({ length: groups }, () => ({ params: [new Tensor(new Float32Array(1), [1])] })),
      { lr: 0.1, momentum: 0.9 },
    );

  it('reject bad options naming them', () => {
    expect(() => new StepLR({} as never, { stepSize: 1 })).toThrow(/StepLR: optimizer: expected an Optimizer/);
    expect(() => new StepLR(sgd(), { stepSize: 0 })).toThrow(/StepLR: stepSize: expected a positive integer, got 0/);
    expect(() => new StepLR(sgd(), { stepSize: 2, gamma: -1 })).toThrow(
      /StepLR: gamma: expected a non-negative number, got -1/,
    );
    expect(() => new MultiStepLR(sgd(), { milestones: [2, 1.5] })).toThrow(
      /milestones\[1\]: expected a non-negative integer, got 1.5/,
    );
    expect(() => new ExponentialLR(sgd(), {} as never)).toThrow(
      /ExponentialLR: gamma: expected a non-negative number, got undefined/,
    );
    expect(() => new PolynomialLR(sgd(), { totalIters: -5 })).toThrow(
      /PolynomialLR: totalIters: expected a positive integer/,
    );
    expect(() => new CosineAnnealingLR(sgd(), { tMax: 0 })).toThrow(
      /CosineAnnealingLR: tMax: expected a positive integer/,
    );
    expect(() => new WarmupCosineLR(sgd(), { warmupSteps: 5, totalSteps: 5 })).toThrow(
      /totalSteps: expected an integer > warmupSteps \(5\), got 5/,
    );
    expect(() => new WarmupCosineLR(sgd(), { warmupSteps: 2, totalSteps: 5, startFactor: 2 })).toThrow(
      /startFactor: expected a number in \[0, 1\], got 2/,
    );
    expect(() => new OneCycleLR(sgd(), { maxLr: 0.1 })).toThrow(
      /OneCycleLR: give totalSteps, or epochs and stepsPerEpoch/,
    );
    expect(() => new OneCycleLR(sgd(), { maxLr: 0.1, epochs: 2 })).toThrow(
      /OneCycleLR: stepsPerEpoch: expected a positive integer, got undefined/,
    );
    expect(() => new OneCycleLR(sgd(2), { maxLr: [0.1], totalSteps: 5 })).toThrow(
      /OneCycleLR: maxLr: expected 2 values \(one per parameter group\), got 1/,
    );
    expect(() => new OneCycleLR(sgd(), { maxLr: 0.1, totalSteps: 5, annealStrategy: 'exp' as never })).toThrow(
      /annealStrategy: expected 'cos' or 'linear', got "exp"/,
    );
    expect(() => new OneCycleLR(sgd(), { maxLr: 0.1, totalSteps: 5, pctStart: 1.5 })).toThrow(
      /pctStart: expected a number in \[0, 1\], got 1.5/,
    );
    const adagrad = new Adagrad([new Tensor(new Float32Array(1), [1])]);
    expect(() => new OneCycleLR(adagrad, { maxLr: 0.1, totalSteps: 5 })).toThrow(
      /cycleMomentum needs an optimizer with momentum or betas/,
    );
    expect(() => new OneCycleLR(adagrad, { maxLr: 0.1, totalSteps: 5, cycleMomentum: false })).not.toThrow();
    expect(() => new ReduceLROnPlateau(sgd(), { factor: 1 })).toThrow(
      /ReduceLROnPlateau: factor: expected a number in \[0, 1\), got 1/,
    );
    expect(() => new ReduceLROnPlateau(sgd(), { mode: 'up' as never })).toThrow(
      /mode: expected 'min' or 'max', got "up"/,
    );
    expect(() => new ReduceLROnPlateau(sgd(), { thresholdMode: 'x' as never })).toThrow(
      /thresholdMode: expected 'rel' or 'abs'/,
    );
    expect(() => new ReduceLROnPlateau(sgd(2), { minLr: [0.1, 0.2, 0.3] })).toThrow(
      /minLr: expected 2 values \(one per parameter group\), got 3/,
    );
    expect(() => new ReduceLROnPlateau(sgd()).step('1' as never)).toThrow(/metric: expected a number, got "1"/);
  });

  it('OneCycleLR refuses to step past totalSteps and stays where it was', () => {
    const opt = sgd();
    const s = new OneCycleLR(opt, { maxLr: 0.1, totalSteps: 3 });
    for (let i = 0; i < 3; i++) s.step();
    const lr = opt.paramGroups[0].lr;
    expect(() => s.step()).toThrow(/tried to step 5 times; the cycle has totalSteps 3/);
    expect(s.lastEpoch).toBe(3);
    expect(opt.paramGroups[0].lr).toBe(lr);
  });

  it('notices parameter groups added after construction', () => {
    const opt = sgd();
    const s = new StepLR(opt, { stepSize: 2 });
    opt.addParamGroup({ params: [new Tensor(new Float32Array(1), [1])] });
    expect(() => s.step()).toThrow(/StepLR\.step: the optimizer has 2 parameter groups, the scheduler was made for 1/);
  });

  it('loadStateDict validates and changes nothing on error', () => {
    const s = new CosineAnnealingLR(sgd(2), { tMax: 5 });
    s.step();
    const before = JSON.stringify(s.stateDict());
    const bad = (edit: Record<string, unknown>): LRSchedulerStateDict => ({
      ...(JSON.parse(before) as LRSchedulerStateDict),
      ...edit,
    });
    expect(() => s.loadStateDict(bad({ scheduler: 'StepLR' }))).toThrow(
      /the state dict is for "StepLR", this scheduler is CosineAnnealingLR/,
    );
    expect(() => s.loadStateDict(bad({ baseLrs: [0.1] }))).toThrow(
      /baseLrs: expected 2 numbers \(one per parameter group\), got \[0.1\]/,
    );
    expect(() => s.loadStateDict(bad({ lastEpoch: 1.5, baseLrs: [1, 1] }))).toThrow(
      /lastEpoch: expected an integer >= -1, got 1.5/,
    );
    expect(() => s.loadStateDict(bad({ lastLr: [1, 1], baseLrs: 'x' }))).toThrow(/baseLrs: expected 2 numbers/);
    expect(JSON.stringify(s.stateDict())).toBe(before);
    const p = new ReduceLROnPlateau(sgd());
    expect(() => p.loadStateDict({ ...p.stateDict(), best: 'big' as never })).toThrow(
      /best: expected a finite number, 'Infinity' or '-Infinity', got "big"/,
    );
    expect(() => p.loadStateDict({ ...p.stateDict(), lastLr: [1, 2] })).toThrow(/lastLr: expected 1 numbers/);
  });
});
