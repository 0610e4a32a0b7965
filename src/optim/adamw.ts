// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter): the weights shrink by
// lr * weightDecay each step instead of the decay entering the gradient moments. Exactly
// torch.optim.AdamW (PyTorch 1.13), whose default weightDecay is 1e-2.
import type { Params } from './optimizer.js';
import { ADAM_DEFAULTS, AdamBase, type AdamOptions } from './adam.js';

/** Same options as Adam; weightDecay is the decoupled decay coefficient. */
export type AdamWOptions = AdamOptions;

const ADAMW_DEFAULTS: AdamWOptions = { ...ADAM_DEFAULTS, weightDecay: 1e-2 };

/** torch.optim.AdamW. Defaults: lr 1e-3, betas [0.9, 0.999], eps 1e-8, weightDecay 1e-2, amsgrad false. */
export class AdamW extends AdamBase {
  constructor(params: Params<AdamWOptions>, options: Partial<AdamWOptions> = {}) {
    super('AdamW', true, params, ADAMW_DEFAULTS, options);
  }
}
