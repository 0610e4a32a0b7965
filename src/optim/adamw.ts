// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter): the weights shrink by
// lr * weightDecay each step instead of the decay entering the gradient moments. Exactly
// torch.optim.AdamW (PyTorch 1.13), whose default weightDecay is 1e-2.
import { Optimizer, type ParamGroup, type ParamState, type Params } from './optimizer.js';
import { ADAM_BUFFERS, ADAM_DEFAULTS, adamUpdate, checkAdamOptions, type AdamOptions } from './adam.js';

/** Same options as Adam; weightDecay is the decoupled decay coefficient. */
export type AdamWOptions = AdamOptions;

const ADAMW_DEFAULTS: AdamWOptions = { ...ADAM_DEFAULTS, weightDecay: 1e-2 };

/** torch.optim.AdamW. Defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 1e-2, amsgrad false. */
export class AdamW extends Optimizer<AdamWOptions> {
  protected readonly bufferNames = ADAM_BUFFERS;

  constructor(params: Params<AdamWOptions>, options: Partial<AdamWOptions> = {}) {
    super('AdamW', params, ADAMW_DEFAULTS, options);
  }

  protected checkOptions(o: AdamWOptions, where: string): void {
    checkAdamOptions(o, where);
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<AdamWOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    adamUpdate(p, g, state, group, lr, weightDecay, true, (name) => this.buffer(state, name, p.length));
  }
}
