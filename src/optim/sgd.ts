// SGD: stochastic gradient descent with optional momentum (heavy-ball or Nesterov), dampening
// and L2 weight decay, exactly as torch.optim.SGD (PyTorch 1.13). Note torch's momentum form,
// which differs from Caffe's and from Sutskever et al.: v = momentum * v + (1 - dampening) * g,
// p = p - lr * v (the first step sets v = g), so lr scales the velocity, not the gradient.
import { GROUP_DEFAULTS, Optimizer } from './optimizer.js';
import type { GroupOptions, ParamGroup, ParamState, Params } from './optimizer.js';
import { native } from '../native.js';
import { describe } from '../describe.js';

export interface SGDOptions extends GroupOptions {
  /** Momentum factor. Default 0 (none). */
  momentum: number;
  /** Dampening of the gradient added to the velocity. Default 0. */
  dampening: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). Default false. */
  nesterov: boolean;
  /** Ascend instead of descend. Default false. */
  maximize: boolean;
}

const SGD_DEFAULTS: SGDOptions = {
  ...GROUP_DEFAULTS,
  lr: NaN,
  momentum: 0,
  dampening: 0,
  nesterov: false,
  maximize: false,
};

/**
 * torch.optim.SGD. `lr` is required; weightDecay (L2, added to the gradient) defaults to 0.
 *
 *     const opt = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
 */
export class SGD extends Optimizer<SGDOptions> {
  protected readonly bufferNames = ['momentumBuffer'] as const;

  constructor(params: Params<SGDOptions>, options: Partial<SGDOptions> & { lr: number }) {
    if (typeof options?.lr !== 'number')
      throw new Error(`SGD: lr is required (a non-negative number), got ${describe(options?.lr)}`);
    super('SGD', params, SGD_DEFAULTS, options);
  }

  protected checkOptions(o: SGDOptions, where: string): void {
    if (!(o.momentum >= 0)) throw new Error(`${where}: momentum: expected a non-negative number, got ${o.momentum}`);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new Error(
        `${where}: nesterov: needs momentum > 0 and dampening 0, ` +
          `got momentum ${o.momentum} and dampening ${o.dampening}`,
      );
    }
  }

  /**
   * Multiplies every momentum buffer by `factor`. The Caffe solver calls it when its rate
   * changes, so torch's velocity (rate applied after) carries Caffe's (rate inside): see
   * src/io/caffe/solver.ts.
   */
  scaleMomentum(factor: number): void {
    for (const st of this.state.values()) {
      const b = st.buffers.momentumBuffer;
      if (b) for (let i = 0; i < b.length; i++) b[i] *= factor;
    }
  }

  protected update(
    p: Float32Array,
    g: Float32Array,
    state: ParamState,
    group: ParamGroup<SGDOptions>,
    lr: number,
    weightDecay: number,
  ): void {
    const { momentum, dampening, nesterov, maximize } = group;
    state.step++;
    const firstStep = momentum !== 0 && !state.buffers.momentumBuffer;
    const buf = momentum !== 0 ? this.buffer(state, 'momentumBuffer', p.length) : null;
    // The loop runs natively (crates/kernels/src/optim.rs) with the rounding of float32.ts.
    // torch starts the velocity at the first gradient itself (no dampening on that step).
    native.sgdStep(p, g, buf, { lr, weightDecay, momentum, dampening, nesterov, maximize, firstStep });
  }
}
