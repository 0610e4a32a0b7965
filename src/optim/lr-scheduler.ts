// Learning-rate schedules: objects that set each parameter group's `lr` between optimizer steps,
// matching torch.optim.lr_scheduler (PyTorch 1.13) value for value. As in torch, constructing a
// scheduler applies the epoch-0 rate, then each step() (after optimizer.step()) advances one
// epoch, or one batch for OneCycleLR; the chainable schedules use torch's recursive formulas
// (new lr from the group's current lr), so interleaving them with manual lr changes behaves as in
// torch and resuming from a checkpoint (optimizer + scheduler state dicts) continues exactly.
import { Optimizer, type GroupOptions } from './optimizer.js';
import { describe } from '../describe.js';

// Any optimizer: schedulers only touch lr (and OneCycleLR momentum / betas[0]).
type AnyOptimizer = Optimizer<GroupOptions>;

/** A scheduler's state as plain JSON. */
export interface LRSchedulerStateDict {
  scheduler: string;
  /** Steps taken since construction (torch's last_epoch): 0 right after construction. */
  lastEpoch: number;
  baseLrs: number[];
  lastLr: number[];
}

function checkOptimizer(name: string, optimizer: unknown): asserts optimizer is AnyOptimizer {
  if (!(optimizer instanceof Optimizer))
    throw new Error(`${name}: optimizer: expected an Optimizer, got ${describe(optimizer)}`);
}

/** A test a number must pass, and the words an error uses for what was expected. */
interface NumberRule {
  ok: (x: number) => boolean;
  expected: string;
}

function checkNumber(v: unknown, what: string, { ok, expected }: NumberRule): number {
  if (typeof v !== 'number' || !ok(v)) throw new Error(`${what}: expected ${expected}, got ${describe(v)}`);
  return v;
}

const positiveInt: NumberRule = { ok: (x) => Number.isSafeInteger(x) && x > 0, expected: 'a positive integer' };
const nonNegativeInt: NumberRule = {
  ok: (x) => Number.isSafeInteger(x) && x >= 0,
  expected: 'a non-negative integer',
};
const nonNegative: NumberRule = { ok: (x) => x >= 0, expected: 'a non-negative number' };
const positive: NumberRule = { ok: (x) => x > 0, expected: 'a positive number' };
const fraction: NumberRule = { ok: (x) => x >= 0 && x <= 1, expected: 'a number in [0, 1]' };

/** One value per parameter group, from a scalar or a list of the right length. */
function perGroup(v: number | readonly number[], groups: number, what: string, rule: NumberRule): number[] {
  if (Array.isArray(v)) {
    if (v.length !== groups)
      throw new Error(`${what}: expected ${groups} values (one per parameter group), got ${v.length}`);
    return v.map((x, i) => checkNumber(x, `${what}[${i}]`, rule));
  }
  return new Array<number>(groups).fill(checkNumber(v, what, rule));
}

function checkNumberArray(v: unknown, length: number, what: string): number[] {
  if (!Array.isArray(v) || v.length !== length || v.some((x) => typeof x !== 'number')) {
    throw new Error(`${what}: expected ${length} numbers (one per parameter group), got ${describe(v)}`);
  }
  return [...v] as number[];
}

/** Python's %, whose result takes the sign of the divisor. */
function pmod(a: number, b: number): number {
  return ((a % b) + b) % b;
}

/** Base of the epoch-indexed schedules. */
export abstract class LRScheduler {
  readonly optimizer: AnyOptimizer;
  /** Steps taken since construction (torch's last_epoch): 0 right after construction. */
  lastEpoch = -1;
  /** Each group's lr when the scheduler was made (torch's base_lrs / initial_lr). */
  baseLrs: number[];
  protected lastLr: number[];
  protected readonly name: string;

  protected constructor(name: string, optimizer: AnyOptimizer) {
    checkOptimizer(name, optimizer);
    this.name = name;
    this.optimizer = optimizer;
    this.baseLrs = optimizer.paramGroups.map((g) => g.lr);
    this.lastLr = [...this.baseLrs];
  }

  /** The learning rates of epoch `epoch` (one more than lastEpoch), from the groups' current lrs. */
  protected abstract computeLr(epoch: number): number[];

  /** Advances one epoch (one batch for OneCycleLR) and sets every group's lr. */
  step(): void {
    const groups = this.optimizer.paramGroups;
    if (groups.length !== this.baseLrs.length) {
      throw new Error(
        `${this.name}.step: the optimizer has ${groups.length} parameter groups, ` +
          `the scheduler was made for ${this.baseLrs.length}`,
      );
    }
    const epoch = this.lastEpoch + 1;
    const lrs = this.computeLr(epoch);
    this.lastEpoch = epoch;
    groups.forEach((g, i) => {
      g.lr = lrs[i];
    });
    this.lastLr = groups.map((g) => g.lr);
  }

  /** The lr of each group as last set by this scheduler. */
  getLastLr(): number[] {
    return [...this.lastLr];
  }

  protected get groups(): GroupOptions[] {
    return this.optimizer.paramGroups;
  }

  stateDict(): LRSchedulerStateDict {
    return { scheduler: this.name, lastEpoch: this.lastEpoch, baseLrs: [...this.baseLrs], lastLr: [...this.lastLr] };
  }

  /**
   * Restores the position in the schedule (restore the optimizer's state dict too: the groups'
   * lrs live there). Checks everything first; on an Error nothing has changed.
   */
  loadStateDict(stateDict: LRSchedulerStateDict): void {
    const { lastEpoch, baseLrs, lastLr } = this.checkStateDict(stateDict);
    this.lastEpoch = lastEpoch;
    this.baseLrs = baseLrs;
    this.lastLr = lastLr;
  }

  /** Checks `stateDict` exactly as loadStateDict would, without changing anything. */
  validateStateDict(stateDict: LRSchedulerStateDict): void {
    this.checkStateDict(stateDict);
  }

  private checkStateDict(stateDict: LRSchedulerStateDict): { lastEpoch: number; baseLrs: number[]; lastLr: number[] } {
    const where = `${this.name}.loadStateDict`;
    if (typeof stateDict !== 'object' || stateDict === null)
      throw new Error(`${where}: expected an object, got ${describe(stateDict)}`);
    if (stateDict.scheduler !== undefined && stateDict.scheduler !== this.name) {
      throw new Error(
        `${where}: the state dict is for ${describe(stateDict.scheduler)}, this scheduler is ${this.name}`,
      );
    }
    const lastEpoch = checkNumber(stateDict.lastEpoch, `${where}: lastEpoch`, {
      ok: (x) => Number.isSafeInteger(x) && x >= -1,
      expected: 'an integer >= -1',
    });
    const n = this.optimizer.paramGroups.length;
    const baseLrs = checkNumberArray(stateDict.baseLrs, n, `${where}: baseLrs`);
    const lastLr = checkNumberArray(stateDict.lastLr, n, `${where}: lastLr`);
    return { lastEpoch, baseLrs, lastLr };
  }
}

export interface StepLROptions {
  /** Epochs between decays. */
  stepSize: number;
  /** Multiplier applied every stepSize epochs. Default 0.1. */
  gamma?: number;
}

/** torch StepLR: lr = baseLr * gamma^floor(epoch / stepSize). */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: AnyOptimizer, options: StepLROptions) {
    super('StepLR', optimizer);
    this.stepSize = checkNumber(options?.stepSize, 'StepLR: stepSize', positiveInt);
    this.gamma = checkNumber(options.gamma ?? 0.1, 'StepLR: gamma', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    if (epoch === 0 || epoch % this.stepSize !== 0) return this.groups.map((g) => g.lr);
    return this.groups.map((g) => g.lr * this.gamma);
  }
}

export interface MultiStepLROptions {
  /** Epochs at which lr is multiplied by gamma (a repeated milestone applies gamma again). */
  milestones: number[];
  /** Default 0.1. */
  gamma?: number;
}

/** torch MultiStepLR: lr = baseLr * gamma^(number of milestones <= epoch). */
export class MultiStepLR extends LRScheduler {
  readonly milestones: number[];
  readonly gamma: number;

  constructor(optimizer: AnyOptimizer, options: MultiStepLROptions) {
    super('MultiStepLR', optimizer);
    if (!Array.isArray(options?.milestones))
      throw new Error(`MultiStepLR: milestones: expected an array of epochs, got ${describe(options?.milestones)}`);
    this.milestones = options.milestones.map((m, i) => checkNumber(m, `MultiStepLR: milestones[${i}]`, nonNegativeInt));
    this.gamma = checkNumber(options.gamma ?? 0.1, 'MultiStepLR: gamma', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    const hits = this.milestones.filter((m) => m === epoch).length;
    if (hits === 0) return this.groups.map((g) => g.lr);
    return this.groups.map((g) => g.lr * this.gamma ** hits);
  }
}

export interface ExponentialLROptions {
  /** Multiplier applied every epoch. */
  gamma: number;
}

/** torch ExponentialLR: lr = baseLr * gamma^epoch. */
export class ExponentialLR extends LRScheduler {
  readonly gamma: number;

  constructor(optimizer: AnyOptimizer, options: ExponentialLROptions) {
    super('ExponentialLR', optimizer);
    this.gamma = checkNumber(options?.gamma, 'ExponentialLR: gamma', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    if (epoch === 0) return this.groups.map((g) => g.lr);
    return this.groups.map((g) => g.lr * this.gamma);
  }
}

export interface PolynomialLROptions {
  /** Epochs (or iterations) until lr reaches 0. Default 5. */
  totalIters?: number;
  /** Default 1 (linear decay). */
  power?: number;
}

/**
 * torch PolynomialLR, which is also Caffe's "poly" policy:
 * lr = baseLr * (1 - min(epoch, totalIters) / totalIters)^power (Caffe: totalIters = max_iter,
 * stepping once per iteration).
 */
export class PolynomialLR extends LRScheduler {
  readonly totalIters: number;
  readonly power: number;

  constructor(optimizer: AnyOptimizer, options: PolynomialLROptions = {}) {
    super('PolynomialLR', optimizer);
    this.totalIters = checkNumber(options.totalIters ?? 5, 'PolynomialLR: totalIters', positiveInt);
    this.power = checkNumber(options.power ?? 1, 'PolynomialLR: power', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    if (epoch === 0 || epoch > this.totalIters) return this.groups.map((g) => g.lr);
    const t = this.totalIters;
    const factor = ((1.0 - epoch / t) / (1.0 - (epoch - 1) / t)) ** this.power;
    return this.groups.map((g) => g.lr * factor);
  }
}

export interface CosineAnnealingLROptions {
  /** Half-period in epochs: lr goes from baseLr to etaMin over tMax epochs (then back up). */
  tMax: number;
  /** Default 0. */
  etaMin?: number;
}

/**
 * torch CosineAnnealingLR: lr = etaMin + (baseLr - etaMin) * (1 + cos(pi * epoch / tMax)) / 2,
 * computed with torch's recursive form (so the values agree with torch's to the last bits).
 * Past tMax the cosine continues, rising again, as in torch.
 */
export class CosineAnnealingLR extends LRScheduler {
  readonly tMax: number;
  readonly etaMin: number;

  constructor(optimizer: AnyOptimizer, options: CosineAnnealingLROptions) {
    super('CosineAnnealingLR', optimizer);
    this.tMax = checkNumber(options?.tMax, 'CosineAnnealingLR: tMax', positiveInt);
    this.etaMin = checkNumber(options.etaMin ?? 0, 'CosineAnnealingLR: etaMin', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    const { tMax, etaMin } = this;
    if (epoch === 0) return this.groups.map((g) => g.lr);
    if (pmod(epoch - 1 - tMax, 2 * tMax) === 0) {
      // Leaving the trough: the ratio form would divide by zero.
      return this.groups.map((g, i) => g.lr + ((this.baseLrs[i] - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2);
    }
    return this.groups.map(
      (g) =>
        ((1 + Math.cos((Math.PI * epoch) / tMax)) / (1 + Math.cos((Math.PI * (epoch - 1)) / tMax))) * (g.lr - etaMin) +
        etaMin,
    );
  }
}

export interface WarmupCosineLROptions {
  /** Steps of linear warm-up (0: none). */
  warmupSteps: number;
  /** Step at which the cosine reaches etaMin; must exceed warmupSteps. */
  totalSteps: number;
  /** Fraction of baseLr at step 0. Default 1 / (warmupSteps + 1), so the ramp is baseLr * (e + 1) / (N + 1). */
  startFactor?: number;
  /** Default 0. */
  etaMin?: number;
}

/**
 * Linear warm-up, then cosine annealing. With N = warmupSteps, T = totalSteps,
 * s = startFactor and e = lastEpoch:
 *
 *     e <  N:       lr = baseLr * (s + (1 - s) * e / N)
 *     N <= e <= T:  lr = etaMin + (baseLr - etaMin) * (1 + cos(pi * (e - N) / (T - N))) / 2
 *     e >  T:       lr = etaMin
 *
 * Up to e = T this equals torch's SequentialLR([LinearLR(startFactor: s, totalIters: N),
 * CosineAnnealingLR(tMax: T - N, etaMin)], milestones: [N]) (to ~1e-15: torch evaluates the
 * same curve recursively); past T torch's cosine rises again while this one stays at etaMin.
 * Closed form: it reads baseLrs, not the groups' current lr. Step it per epoch or per batch.
 */
export class WarmupCosineLR extends LRScheduler {
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly startFactor: number;
  readonly etaMin: number;

  constructor(optimizer: AnyOptimizer, options: WarmupCosineLROptions) {
    super('WarmupCosineLR', optimizer);
    this.warmupSteps = checkNumber(options?.warmupSteps, 'WarmupCosineLR: warmupSteps', nonNegativeInt);
    this.totalSteps = checkNumber(options.totalSteps, 'WarmupCosineLR: totalSteps', {
      ok: (x) => Number.isInteger(x) && x > this.warmupSteps,
      expected: `an integer > warmupSteps (${this.warmupSteps})`,
    });
    this.startFactor = checkNumber(
      options.startFactor ?? 1 / (this.warmupSteps + 1),
      'WarmupCosineLR: startFactor',
      fraction,
    );
    this.etaMin = checkNumber(options.etaMin ?? 0, 'WarmupCosineLR: etaMin', nonNegative);
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    const { warmupSteps: n, totalSteps: t, startFactor: s, etaMin } = this;
    return this.baseLrs.map((base) => {
      if (epoch < n) return base * (s + ((1 - s) * epoch) / n);
      if (epoch > t) return etaMin;
      return etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * (epoch - n)) / (t - n)))) / 2;
    });
  }
}

export interface OneCycleLROptions {
  /** Peak lr, for all groups or one per group. */
  maxLr: number | number[];
  /** Length of the cycle in batches; or give epochs and stepsPerEpoch. */
  totalSteps?: number;
  epochs?: number;
  stepsPerEpoch?: number;
  /** Fraction of the cycle spent raising lr. Default 0.3. */
  pctStart?: number;
  /** Default 'cos'. */
  annealStrategy?: 'cos' | 'linear';
  /** Cycle momentum (SGD/RMSprop) or beta1 (Adam/AdamW) inversely to lr. Default true. */
  cycleMomentum?: boolean;
  /** Momentum at peak lr. Default 0.85. */
  baseMomentum?: number | number[];
  /** Momentum at the start and end. Default 0.95. */
  maxMomentum?: number | number[];
  /** Starting lr = maxLr / divFactor. Default 25. */
  divFactor?: number;
  /** Final lr = starting lr / finalDivFactor. Default 1e4. */
  finalDivFactor?: number;
  /** Three phases (up, back down to the starting lr, then to the final lr) instead of two. Default false. */
  threePhase?: boolean;
}

interface Phase {
  endStep: number;
  startLr: 'initial' | 'max' | 'min';
  endLr: 'initial' | 'max' | 'min';
  startMomentum: 'max' | 'base';
  endMomentum: 'max' | 'base';
}

/**
 * torch OneCycleLR (the 1cycle policy, Smith & Topin): step() after every batch. lr rises from
 * maxLr / divFactor to maxLr over pctStart of the cycle, then anneals to
 * maxLr / divFactor / finalDivFactor, while momentum (or Adam's beta1) moves the opposite way
 * between maxMomentum and baseMomentum. Stepping past totalSteps throws.
 */
export class OneCycleLR extends LRScheduler {
  readonly totalSteps: number;
  readonly cycleMomentum: boolean;
  private readonly useBeta1: boolean;
  private readonly phases: Phase[];
  private readonly anneal: (start: number, end: number, pct: number) => number;
  private readonly lrs: Record<Phase['startLr'], number[]>;
  private readonly momenta: Record<Phase['startMomentum'], number[]>;

  constructor(optimizer: AnyOptimizer, options: OneCycleLROptions) {
    super('OneCycleLR', optimizer);
    const o = options ?? ({} as OneCycleLROptions);
    if (o.totalSteps !== undefined) {
      this.totalSteps = checkNumber(o.totalSteps, 'OneCycleLR: totalSteps', positiveInt);
    } else if (o.epochs !== undefined || o.stepsPerEpoch !== undefined) {
      const epochs = checkNumber(o.epochs, 'OneCycleLR: epochs', positiveInt);
      const per = checkNumber(o.stepsPerEpoch, 'OneCycleLR: stepsPerEpoch', positiveInt);
      this.totalSteps = epochs * per;
    } else {
      throw new Error('OneCycleLR: give totalSteps, or epochs and stepsPerEpoch');
    }
    const pct = checkNumber(o.pctStart ?? 0.3, 'OneCycleLR: pctStart', fraction);
    const total = this.totalSteps;
    this.phases = o.threePhase
      ? [
          { endStep: pct * total - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
          { endStep: 2 * pct * total - 2, startLr: 'max', endLr: 'initial', startMomentum: 'base', endMomentum: 'max' },
          { endStep: total - 1, startLr: 'initial', endLr: 'min', startMomentum: 'max', endMomentum: 'max' },
        ]
      : [
          { endStep: pct * total - 1, startLr: 'initial', endLr: 'max', startMomentum: 'max', endMomentum: 'base' },
          { endStep: total - 1, startLr: 'max', endLr: 'min', startMomentum: 'base', endMomentum: 'max' },
        ];
    const strategy = o.annealStrategy ?? 'cos';
    if (strategy === 'cos') {
      this.anneal = (start, end, p) => end + ((start - end) / 2.0) * (Math.cos(Math.PI * p) + 1);
    } else if (strategy === 'linear') {
      this.anneal = (start, end, p) => (end - start) * p + start;
    } else {
      throw new Error(`OneCycleLR: annealStrategy: expected 'cos' or 'linear', got ${describe(strategy)}`);
    }
    const n = optimizer.paramGroups.length;
    const maxLrs = perGroup(o.maxLr, n, 'OneCycleLR: maxLr', nonNegative);
    const divFactor = checkNumber(o.divFactor ?? 25, 'OneCycleLR: divFactor', positive);
    const finalDivFactor = checkNumber(o.finalDivFactor ?? 1e4, 'OneCycleLR: finalDivFactor', positive);
    const initial = maxLrs.map((m) => m / divFactor);
    this.lrs = { initial, max: maxLrs, min: initial.map((x) => x / finalDivFactor) };
    this.baseLrs = [...initial];
    this.cycleMomentum = o.cycleMomentum ?? true;
    const defaults = optimizer.defaults as Record<string, unknown>;
    this.useBeta1 = 'betas' in defaults;
    if (this.cycleMomentum && !this.useBeta1 && !('momentum' in defaults)) {
      throw new Error(
        'OneCycleLR: cycleMomentum needs an optimizer with momentum or betas (SGD, RMSprop, Adam, AdamW); ' +
          'pass cycleMomentum: false',
      );
    }
    this.momenta = {
      max: perGroup(o.maxMomentum ?? 0.95, n, 'OneCycleLR: maxMomentum', nonNegative),
      base: perGroup(o.baseMomentum ?? 0.85, n, 'OneCycleLR: baseMomentum', nonNegative),
    };
    this.step();
  }

  protected computeLr(epoch: number): number[] {
    if (epoch > this.totalSteps) {
      throw new Error(`OneCycleLR.step: tried to step ${epoch + 1} times; the cycle has totalSteps ${this.totalSteps}`);
    }
    return this.groups.map((_, i) => this.at(epoch, (k) => this.lrs[k as Phase['startLr']][i], 'lr'));
  }

  step(): void {
    super.step();
    if (!this.cycleMomentum) return;
    this.optimizer.paramGroups.forEach((g, i) => {
      const m = this.at(this.lastEpoch, (k) => this.momenta[k as Phase['startMomentum']][i], 'momentum');
      const group = g as unknown as Record<string, unknown>;
      if (this.useBeta1) group.betas = [m, (group.betas as number[])[1]];
      else group.momentum = m;
    });
  }

  /** torch's phase walk: the value of `kind` at step `stepNum`, reading one group's values through `value`. */
  private at(stepNum: number, value: (k: string) => number, kind: 'lr' | 'momentum'): number {
    let start = 0;
    for (let pi = 0; pi < this.phases.length; pi++) {
      const phase = this.phases[pi];
      if (stepNum <= phase.endStep || pi === this.phases.length - 1) {
        const pct = (stepNum - start) / (phase.endStep - start);
        const [from, to] = kind === 'lr' ? [phase.startLr, phase.endLr] : [phase.startMomentum, phase.endMomentum];
        return this.anneal(value(from), value(to), pct);
      }
      start = phase.endStep;
    }
    throw new Error('unreachable');
  }
}

export interface ReduceLROnPlateauOptions {
  /** 'min': reduce when the metric stops falling; 'max': when it stops rising. Default 'min'. */
  mode?: 'min' | 'max';
  /** new lr = lr * factor (must be < 1). Default 0.1. */
  factor?: number;
  /** Epochs without improvement tolerated before reducing. Default 10. */
  patience?: number;
  /** Minimum change counted as improvement. Default 1e-4. */
  threshold?: number;
  /** 'rel': relative to the best (best * (1 -/+ threshold)); 'abs': best -/+ threshold. Default 'rel'. */
  thresholdMode?: 'rel' | 'abs';
  /** Epochs to wait after a reduction before counting bad epochs again. Default 0. */
  cooldown?: number;
  /** Lower bound on lr, for all groups or one per group. Default 0. */
  minLr?: number | number[];
  /** Reductions smaller than this are skipped. Default 1e-8. */
  eps?: number;
}

export interface ReduceLROnPlateauStateDict {
  scheduler: 'ReduceLROnPlateau';
  lastEpoch: number;
  /** Best metric so far; infinities as strings (JSON has none). */
  best: number | 'Infinity' | '-Infinity';
  numBadEpochs: number;
  cooldownCounter: number;
  lastLr: number[];
}

/** torch ReduceLROnPlateau: step(metric) once per epoch, e.g. with the validation loss. */
export class ReduceLROnPlateau {
  readonly optimizer: AnyOptimizer;
  readonly mode: 'min' | 'max';
  readonly factor: number;
  readonly patience: number;
  readonly threshold: number;
  readonly thresholdMode: 'rel' | 'abs';
  readonly cooldown: number;
  readonly minLrs: number[];
  readonly eps: number;
  lastEpoch = 0;
  best: number;
  numBadEpochs = 0;
  cooldownCounter = 0;
  private lastLr: number[];

  constructor(optimizer: AnyOptimizer, options: ReduceLROnPlateauOptions = {}) {
    const name = 'ReduceLROnPlateau';
    checkOptimizer(name, optimizer);
    this.optimizer = optimizer;
    this.mode = options.mode ?? 'min';
    if (this.mode !== 'min' && this.mode !== 'max')
      throw new Error(`${name}: mode: expected 'min' or 'max', got ${describe(this.mode)}`);
    this.thresholdMode = options.thresholdMode ?? 'rel';
    if (this.thresholdMode !== 'rel' && this.thresholdMode !== 'abs') {
      throw new Error(`${name}: thresholdMode: expected 'rel' or 'abs', got ${describe(this.thresholdMode)}`);
    }
    this.factor = checkNumber(options.factor ?? 0.1, `${name}: factor`, {
      ok: (x) => x >= 0 && x < 1,
      expected: 'a number in [0, 1)',
    });
    this.patience = checkNumber(options.patience ?? 10, `${name}: patience`, nonNegativeInt);
    this.threshold = checkNumber(options.threshold ?? 1e-4, `${name}: threshold`, nonNegative);
    this.cooldown = checkNumber(options.cooldown ?? 0, `${name}: cooldown`, nonNegativeInt);
    this.minLrs = perGroup(options.minLr ?? 0, optimizer.paramGroups.length, `${name}: minLr`, nonNegative);
    this.eps = checkNumber(options.eps ?? 1e-8, `${name}: eps`, nonNegative);
    this.best = this.modeWorse;
    this.lastLr = optimizer.paramGroups.map((g) => g.lr);
  }

  private get modeWorse(): number {
    return this.mode === 'min' ? Infinity : -Infinity;
  }

  /** Records this epoch's metric; reduces every group's lr after more than `patience` bad epochs. */
  step(metric: number): void {
    if (typeof metric !== 'number')
      throw new Error(`ReduceLROnPlateau.step: metric: expected a number, got ${describe(metric)}`);
    this.lastEpoch += 1;
    if (this.isBetter(metric, this.best)) {
      this.best = metric;
      this.numBadEpochs = 0;
    } else {
      this.numBadEpochs += 1;
    }
    if (this.cooldownCounter > 0) {
      this.cooldownCounter -= 1;
      this.numBadEpochs = 0;
    }
    if (this.numBadEpochs > this.patience) {
      this.optimizer.paramGroups.forEach((g, i) => {
        const newLr = Math.max(g.lr * this.factor, this.minLrs[i]);
        if (g.lr - newLr > this.eps) g.lr = newLr;
      });
      this.cooldownCounter = this.cooldown;
      this.numBadEpochs = 0;
    }
    this.lastLr = this.optimizer.paramGroups.map((g) => g.lr);
  }

  private isBetter(a: number, best: number): boolean {
    if (this.mode === 'min')
      return this.thresholdMode === 'rel' ? a < best * (1 - this.threshold) : a < best - this.threshold;
    return this.thresholdMode === 'rel' ? a > best * (this.threshold + 1) : a > best + this.threshold;
  }

  getLastLr(): number[] {
    return [...this.lastLr];
  }

  stateDict(): ReduceLROnPlateauStateDict {
    const best = Number.isFinite(this.best) ? this.best : (String(this.best) as 'Infinity' | '-Infinity');
    return {
      scheduler: 'ReduceLROnPlateau',
      lastEpoch: this.lastEpoch,
      best,
      numBadEpochs: this.numBadEpochs,
      cooldownCounter: this.cooldownCounter,
      lastLr: [...this.lastLr],
    };
  }

  /** Restores the counters and best metric (the groups' lrs come from the optimizer's state dict). */
  loadStateDict(stateDict: ReduceLROnPlateauStateDict): void {
    const { lastEpoch, best, numBadEpochs, cooldownCounter, lastLr } = this.checkStateDict(stateDict);
    this.lastEpoch = lastEpoch;
    this.best = best;
    this.numBadEpochs = numBadEpochs;
    this.cooldownCounter = cooldownCounter;
    this.lastLr = lastLr;
  }

  /** Checks `stateDict` exactly as loadStateDict would, without changing anything. */
  validateStateDict(stateDict: ReduceLROnPlateauStateDict): void {
    this.checkStateDict(stateDict);
  }

  private checkStateDict(stateDict: ReduceLROnPlateauStateDict): {
    lastEpoch: number;
    best: number;
    numBadEpochs: number;
    cooldownCounter: number;
    lastLr: number[];
  } {
    const where = 'ReduceLROnPlateau.loadStateDict';
    if (typeof stateDict !== 'object' || stateDict === null)
      throw new Error(`${where}: expected an object, got ${describe(stateDict)}`);
    if (stateDict.scheduler !== undefined && stateDict.scheduler !== 'ReduceLROnPlateau') {
      throw new Error(
        `${where}: the state dict is for ${describe(stateDict.scheduler)}, this scheduler is ReduceLROnPlateau`,
      );
    }
    const lastEpoch = checkNumber(stateDict.lastEpoch, `${where}: lastEpoch`, nonNegativeInt);
    const rawBest: unknown = stateDict.best;
    const best =
      rawBest === 'Infinity'
        ? Infinity
        : rawBest === '-Infinity'
          ? -Infinity
          : checkNumber(rawBest, `${where}: best`, {
              ok: Number.isFinite,
              expected: "a finite number, 'Infinity' or '-Infinity'",
            });
    const numBad = checkNumber(stateDict.numBadEpochs, `${where}: numBadEpochs`, nonNegativeInt);
    const cooldown = checkNumber(stateDict.cooldownCounter, `${where}: cooldownCounter`, nonNegativeInt);
    const lastLr = checkNumberArray(stateDict.lastLr, this.optimizer.paramGroups.length, `${where}: lastLr`);
    return { lastEpoch, best, numBadEpochs: numBad, cooldownCounter: cooldown, lastLr };
  }
}
