// Adam: adaptive moment estimation (Kingma & Ba), with optional AMSGrad and L2 weight decay
// added to the gradient, exactly as torch.optim.Adam (PyTorch 1.13). The update is shared with
// AdamW, which decays the weights directly instead (see adamw.ts).
import { GROUP_DEFAULTS, Optimizer } from './optimizer.js';
import type { GroupOptions, ParamGroup, ParamState, Params } from './optimizer.js';
import { native } from '../native.js';

export interface AdamOptions extends GroupOptions {
  /** Decay rates of the running averages of the gradient and of its square. Default [0.9, 0.999]. */
  betas: [number, number];
  /** Added to the denominator for stability. Default 1e-8. */
  eps: number;
  /** AMSGrad: normalise by the largest second moment seen so far. Default false. */
  amsgrad: boolean;
  /** Ascend instead of descend. Default false. */
  maximize: boolean;
}

export const ADAM_DEFAULTS: AdamOptions = {
  ...GROUP_DEFAULTS,
  lr: 1e-3,
  betas: [0.9, 0.999],
  eps: 1e-8,
  amsgrad: false,
  maximize: false,
};

/**
 * What Adam and AdamW share: their options and checks, their buffers and the update, following
 * torch's _single_tensor_adam/_adamw. `decoupled` false adds weightDecay * p to the gradient
 * (Adam), true multiplies p by 1 - lr * weightDecay (AdamW). As in torch, neither class is a
 * subclass of the other.
 */
export abstract class AdamBase extends Optimizer<AdamOptions> {
  protected readonly bufferNames = ['expAvg', 'expAvgSq', 'maxExpAvgSq'] as const;
  private readonly decoupled: boolean;

  protected constructor(
    name: string,
    decoupled: boolean,
    params: Params<AdamOptions>,
    builtIn: AdamOptions,
    options: Partial<AdamOptions>,
  ) {
    super(name, params, builtIn, options);
    this.decoupled = decoupled;
  }

  protected checkOptions(o: AdamOptions, where: string): void {
    o.betas.forEach((b, i) => {
      if (!(b >= 0 && b < 1)) throw new Error(`${where}: betas[${i}]: expected a number in [0, 1), got ${b}`);
    });
    if (!(o.eps >= 0)) throw new Error(`${where}: eps: expected a non-negative number, got ${o.eps}`);
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<AdamOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    const [beta1, beta2] = group.betas;
    const { eps, amsgrad, maximize } = group;
    const expAvg = this.buffer(state, 'expAvg', p.length);
    const expAvgSq = this.buffer(state, 'expAvgSq', p.length);
    const maxSq = amsgrad ? this.buffer(state, 'maxExpAvgSq', p.length) : null;
    const step = ++state.step;
    // The loop runs natively (crates/kernels/src/optim.rs) with the rounding of float32.ts. The
    // bias corrections are Python floats (double) in torch; JavaScript's ** defines them here.
    const biasCorrection1 = 1 - beta1 ** step;
    const biasCorrection2 = 1 - beta2 ** step;
    native.adamStep(p, g, expAvg, expAvgSq, maxSq, {
      lr,
      weightDecay,
      beta1,
      beta2,
      eps,
      amsgrad,
      maximize,
      decoupled: this.decoupled,
      biasCorrection1,
      biasCorrection2,
    });
  }
}

/**
 * torch.optim.Adam. Defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 0 (L2 added to
 * the gradient; for decoupled decay use AdamW), amsgrad false.
 */
export class Adam extends AdamBase {
  constructor(params: Params<AdamOptions>, options: Partial<AdamOptions> = {}) {
    super('Adam', false, params, ADAM_DEFAULTS, options);
  }
}
