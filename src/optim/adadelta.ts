// Adadelta: scales each step by the ratio of running RMS of past updates to running RMS of
// gradients (Zeiler), exactly as torch.optim.Adadelta (PyTorch 1.13), whose lr (default 1)
// multiplies the resulting delta.
import { GROUP_DEFAULTS, Optimizer } from './optimizer.js';
import type { GroupOptions, ParamGroup, ParamState, Params } from './optimizer.js';
import { native } from '../native.js';

export interface AdadeltaOptions extends GroupOptions {
  /** Decay rate of the running averages. Default 0.9. */
  rho: number;
  /** Added inside the square roots for stability. Default 1e-6. */
  eps: number;
  /** Ascend instead of descend. Default false. */
  maximize: boolean;
}

const ADADELTA_DEFAULTS: AdadeltaOptions = { ...GROUP_DEFAULTS, lr: 1, rho: 0.9, eps: 1e-6, maximize: false };

/** torch.optim.Adadelta. Defaults: lr 1, rho 0.9, eps 1e-6, weightDecay 0. */
export class Adadelta extends Optimizer<AdadeltaOptions> {
  protected readonly bufferNames = ['squareAvg', 'accDelta'] as const;

  constructor(params: Params<AdadeltaOptions>, options: Partial<AdadeltaOptions> = {}) {
    super('Adadelta', params, ADADELTA_DEFAULTS, options);
  }

  protected checkOptions(o: AdadeltaOptions, where: string): void {
    if (!(o.rho >= 0 && o.rho <= 1)) throw new Error(`${where}: rho: expected a number in [0, 1], got ${o.rho}`);
    if (!(o.eps >= 0)) throw new Error(`${where}: eps: expected a non-negative number, got ${o.eps}`);
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<AdadeltaOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    const { rho, eps, maximize } = group;
    state.step++;
    const squareAvg = this.buffer(state, 'squareAvg', p.length);
    const accDelta = this.buffer(state, 'accDelta', p.length);
    // The loop runs natively (crates/kernels/src/optim.rs) with the rounding of float32.ts.
    native.adadeltaStep(p, g, squareAvg, accDelta, { lr, weightDecay, rho, eps, maximize });
  }
}
