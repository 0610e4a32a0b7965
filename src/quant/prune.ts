// Unstructured magnitude pruning, as torch.nn.utils.prune's l1_unstructured / global_unstructured
// and TensorFlow Model Optimization's polynomial-decay schedule do it: the weights of smallest
// magnitude (over the whole model, or per layer) are set to zero and a mask keeps them there
// through fine-tuning. The mask is applied again after every optimizer step (a fit() callback),
// so a pruned weight stays exactly zero whatever its gradient or momentum; a gradual schedule
// raises the sparsity from epoch to epoch, pruning more of the surviving weights each time.
import type { Module } from '../nn/module.js';
import { Conv2d } from '../nn/conv2d.js';
import { Linear } from '../nn/linear.js';
import { type Tensor, writableData } from '../tensor.js';
import type { Callback, Logs } from '../train/callbacks.js';

export interface PruneOptions {
  /** Fraction of the prunable weights to zero, in [0, 1) (the final one for a schedule). */
  amount: number;
  /** Rank weights over all prunable layers together ('global', default) or within each layer. */
  scope?: 'global' | 'layer';
  /**
   * Reach `amount` gradually over fine-tuning: sparsity s(e) = amount * (1 - (1 - e / epochs)^3)
   * after epoch e (TF-MOT's polynomial decay with power 3), instead of all at once.
   */
  schedule?: { epochs: number };
  /** Which layers' weights to prune (default: every Conv2d and Linear weight). */
  include?: (name: string, module: Module) => boolean;
}

export interface PruneReport {
  /** Zeros over the prunable weights, and over all parameters. */
  sparsity: number;
  modelSparsity: number;
  parameters: number;
  nonzero: number;
  layers: { name: string; weights: number; zeros: number }[];
}

/** The masks of a pruned model, and what keeps them applied. */
export class Pruning {
  /** 1 where a weight is kept, 0 where it is pruned, per pruned tensor. */
  readonly masks = new Map<string, Uint8Array>();
  private target: number;

  constructor(
    readonly model: Module,
    private readonly weights: [string, Tensor][],
    private readonly opts: Required<Pick<PruneOptions, 'amount' | 'scope'>> & PruneOptions,
  ) {
    for (const [name, t] of weights) this.masks.set(name, new Uint8Array(t.size).fill(1));
    this.target = opts.schedule ? 0 : opts.amount;
    this.update(this.target);
  }

  /** The sparsity the masks hold now. */
  get sparsity(): number {
    return this.target;
  }

  /** Prunes to `amount` (never un-pruning): the smallest surviving weights go first. */
  update(amount: number): void {
    if (!(amount >= 0 && amount < 1)) throw new Error(`prune: amount must be in [0, 1), got ${amount}`);
    this.target = amount;
    const groups = this.opts.scope === 'layer' ? this.weights.map((w) => [w]) : [this.weights];
    for (const group of groups) {
      const total = group.reduce((n, [, t]) => n + t.size, 0);
      const zeros = Math.floor(amount * total);
      // Magnitudes with pruned weights first (they stay pruned), then the kept ones by size.
      const mags = new Float64Array(total);
      let at = 0;
      for (const [name, t] of group) {
        const m = this.masks.get(name) as Uint8Array;
        for (let i = 0; i < t.size; i++) mags[at++] = m[i] ? Math.abs(t.data[i]) : -1;
      }
      const order = Array.from(mags.keys()).sort((a, b) => mags[a] - mags[b] || a - b);
      const cut = new Uint8Array(total);
      for (let k = 0; k < zeros; k++) cut[order[k]] = 1;
      at = 0;
      for (const [name, t] of group) {
        const m = this.masks.get(name) as Uint8Array;
        for (let i = 0; i < t.size; i++) if (cut[at++]) m[i] = 0;
      }
    }
    this.apply();
  }

  /** Zeroes every pruned weight (after an optimizer step, a load, a manual write). */
  apply(): void {
    for (const [name, t] of this.weights) {
      const m = this.masks.get(name) as Uint8Array;
      let dirty = false;
      for (let i = 0; i < m.length; i++) if (!m[i] && t.data[i] !== 0) dirty = true;
      if (!dirty) continue;
      const d = writableData(t);
      for (let i = 0; i < m.length; i++) if (!m[i]) d[i] = 0;
    }
    // No plan to invalidate: plans read the weights at each run, and writableData marks them new.
  }

  /**
   * A fit() callback: re-applies the masks after every batch, and on a schedule raises the
   * sparsity at the end of each epoch. Pass it in `callbacks`.
   */
  callback(): Callback {
    const schedule = this.opts.schedule;
    let epochs = 0;
    return {
      onTrainBegin: () => {
        if (schedule && this.target === 0) this.update(this.scheduled(0));
      },
      onBatchEnd: () => this.apply(),
      onEpochEnd: (_epoch: number, _logs: Logs) => {
        epochs++;
        if (schedule) this.update(this.scheduled(epochs));
      },
    };
  }

  /** TF-MOT's polynomial decay from 0 to `amount` over the schedule's epochs. */
  private scheduled(epoch: number): number {
    const n = this.opts.schedule?.epochs ?? 1;
    const t = Math.min(1, (epoch + 1) / n);
    return this.opts.amount * (1 - (1 - t) ** 3);
  }

  report(): PruneReport {
    return pruneReport(this.model, this.weights);
  }
}

/** Sparsity and parameter counts of `model` (pruned weights are the zeros among `weights`). */
export function pruneReport(model: Module, weights?: [string, Tensor][]): PruneReport {
  const ws = weights ?? prunable(model, () => true);
  const layers = ws.map(([name, t]) => ({
    name,
    weights: t.size,
    zeros: t.data.reduce((n, v) => n + (v === 0 ? 1 : 0), 0),
  }));
  const total = layers.reduce((n, l) => n + l.weights, 0);
  const zeros = layers.reduce((n, l) => n + l.zeros, 0);
  let parameters = 0;
  let nonzero = 0;
  for (const t of model.parameters()) {
    parameters += t.size;
    for (const v of t.data) if (v !== 0) nonzero++;
  }
  return { sparsity: total ? zeros / total : 0, modelSparsity: 1 - nonzero / parameters, parameters, nonzero, layers };
}

function prunable(model: Module, include: (name: string, m: Module) => boolean): [string, Tensor][] {
  const out: [string, Tensor][] = [];
  for (const [name, m] of model.namedModules()) {
    if ((m instanceof Conv2d || m instanceof Linear) && include(name, m))
      out.push([name ? `${name}.weight` : 'weight', m.weight]);
  }
  return out;
}

/**
 * Prunes `model`'s conv and linear weights by magnitude to `amount` sparsity, in place (at once,
 * or gradually with `schedule`), and returns the masks with a fit() callback that keeps them.
 */
export function prune(model: Module, opts: PruneOptions): Pruning {
  const { amount, scope = 'global' } = opts;
  if (!(typeof amount === 'number' && amount >= 0 && amount < 1)) {
    throw new Error(`prune: amount must be a number in [0, 1), got ${amount}`);
  }
  if (scope !== 'global' && scope !== 'layer')
    throw new Error(`prune: scope must be 'global' or 'layer', got ${scope}`);
  if (opts.schedule && !(Number.isInteger(opts.schedule.epochs) && opts.schedule.epochs > 0)) {
    throw new Error(`prune: schedule.epochs must be a positive integer, got ${opts.schedule.epochs}`);
  }
  const weights = prunable(model, opts.include ?? (() => true));
  if (weights.length === 0) throw new Error('prune: the model has no Conv2d or Linear weights to prune');
  return new Pruning(model, weights, { ...opts, amount, scope });
}
