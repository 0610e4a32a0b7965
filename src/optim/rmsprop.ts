// RMSprop: divides the gradient by a running root-mean-square of recent gradients (Hinton's
// lecture 6), optionally centred (Graves) and with momentum, exactly as torch.optim.RMSprop
// (PyTorch 1.13): the square root is taken before eps is added.
import { GROUP_DEFAULTS, Optimizer } from './optimizer.js';
import type { GroupOptions, ParamGroup, ParamState, Params } from './optimizer.js';
import { native } from '../native.js';

export interface RMSpropOptions extends GroupOptions {
  /** Smoothing constant of the running averages. Default 0.99. */
  alpha: number;
  /** Added to the root-mean-square for stability. Default 1e-8. */
  eps: number;
  /** Momentum factor. Default 0. */
  momentum: number;
  /** Normalise by an estimate of the gradient's variance instead of its raw second moment. Default false. */
  centered: boolean;
  /** Ascend instead of descend. Default false. */
  maximize: boolean;
}

const RMSPROP_DEFAULTS: RMSpropOptions = {
  ...GROUP_DEFAULTS,
  lr: 1e-2,
  alpha: 0.99,
  eps: 1e-8,
  momentum: 0,
  centered: false,
  maximize: false,
};

/** torch.optim.RMSprop. Defaults: lr 1e-2, alpha 0.99, eps 1e-8, weightDecay 0, momentum 0, centered false. */
export class RMSprop extends Optimizer<RMSpropOptions> {
  protected readonly bufferNames = ['squareAvg', 'gradAvg', 'momentumBuffer'] as const;

  constructor(params: Params<RMSpropOptions>, options: Partial<RMSpropOptions> = {}) {
    super('RMSprop', params, RMSPROP_DEFAULTS, options);
  }

  protected checkOptions(o: RMSpropOptions, where: string): void {
    for (const k of ['alpha', 'eps', 'momentum'] as const) {
      if (!(o[k] >= 0)) throw new Error(`${where}: ${k}: expected a non-negative number, got ${o[k]}`);
    }
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<RMSpropOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    const { alpha, eps, momentum, centered, maximize } = group;
    state.step++;
    const squareAvg = this.buffer(state, 'squareAvg', p.length);
    const gradAvg = centered ? this.buffer(state, 'gradAvg', p.length) : null;
    const buf = momentum > 0 ? this.buffer(state, 'momentumBuffer', p.length) : null;
    // The loop runs natively (crates/kernels/src/optim.rs) with the rounding of float32.ts.
    native.rmspropStep(p, g, squareAvg, gradAvg, buf, { lr, weightDecay, alpha, eps, momentum, centered, maximize });
  }
}
