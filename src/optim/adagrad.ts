// Adagrad: per-coordinate learning rates shrinking with the sum of squared gradients seen
// (Duchi et al.), exactly as torch.optim.Adagrad (PyTorch 1.13), dense gradients only.
import { GROUP_DEFAULTS, Optimizer } from './optimizer.js';
import type { GroupOptions, ParamGroup, ParamState, Params } from './optimizer.js';
import { native } from '../native.js';

export interface AdagradOptions extends GroupOptions {
  /** The effective lr is lr / (1 + (step - 1) * lrDecay). Default 0. */
  lrDecay: number;
  /**
   * Starting value of the sum of squared gradients. Default 0. Unlike torch, which reads it only
   * from the constructor, a group may set its own.
   */
  initialAccumulatorValue: number;
  /** Added to the denominator for stability. Default 1e-10. */
  eps: number;
  /** Ascend instead of descend. Default false. */
  maximize: boolean;
}

const ADAGRAD_DEFAULTS: AdagradOptions = {
  ...GROUP_DEFAULTS,
  lr: 1e-2,
  lrDecay: 0,
  initialAccumulatorValue: 0,
  eps: 1e-10,
  maximize: false,
};

/** torch.optim.Adagrad. Defaults: lr 1e-2, lrDecay 0, weightDecay 0, initialAccumulatorValue 0, eps 1e-10. */
export class Adagrad extends Optimizer<AdagradOptions> {
  protected readonly bufferNames = ['sum'] as const;

  constructor(params: Params<AdagradOptions>, options: Partial<AdagradOptions> = {}) {
    super('Adagrad', params, ADAGRAD_DEFAULTS, options);
  }

  protected checkOptions(o: AdagradOptions, where: string): void {
    for (const k of ['lrDecay', 'initialAccumulatorValue', 'eps'] as const) {
      if (!(o[k] >= 0)) throw new Error(`${where}: ${k}: expected a non-negative number, got ${o[k]}`);
    }
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<AdagradOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    const { lrDecay, eps, maximize } = group;
    // torch fills the accumulator when the optimizer is built; filling it on first use is the same.
    const sum = this.buffer(state, 'sum', p.length, group.initialAccumulatorValue);
    const step = ++state.step;
    // The loop runs natively (crates/kernels/src/optim.rs) with the rounding of float32.ts.
    native.adagradStep(p, g, sum, { lr, weightDecay, lrDecay, eps, maximize, step });
  }
}
