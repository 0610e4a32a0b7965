// GRU layer, as torch.nn.GRU (one layer, one direction).
import { narrow, reshape, transpose, cat } from '../ops/elementwise.js';
import { linear } from '../ops/linear.js';
import { gruCell } from '../ops/recurrent.js';
import { globalRng } from '../random.js';
import { type Tensor, zeros } from '../tensor.js';
import { uniform_ } from './init.js';
import { Module } from './module.js';

/**
 * Gated recurrent unit (Cho et al. 2014), torch.nn.GRU's equations and parameter names:
 * `weight_ih_l0` [3H, I], `weight_hh_l0` [3H, H], `bias_ih_l0`, `bias_hh_l0` [3H] (gate order
 * r, z, n), all initialised uniform(-1/sqrt(H), 1/sqrt(H)).
 *
 * # Shapes
 * - input: [T, N, I], or [N, T, I] with `batchFirst`
 * - h0 (optional, default zeros): [N, H]
 * - output: every step's state, [T, N, H] (or [N, T, H]); `forwardWithState` also gives the last.
 *
 * The input projection of all steps is one matrix product; each step then costs one [N, H] x
 * [H, 3H] product and the fused gate kernel (gruCell).
 */
export class GRU extends Module {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
  readonly batchFirst: boolean;

  constructor(
    readonly inputSize: number,
    readonly hiddenSize: number,
    opts: { bias?: boolean; batchFirst?: boolean } = {},
  ) {
    super();
    for (const [name, v] of [
      ['inputSize', inputSize],
      ['hiddenSize', hiddenSize],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`GRU: ${name} must be a positive integer, got ${v}`);
    }
    this.batchFirst = opts.batchFirst ?? false;
    const k = 1 / Math.sqrt(hiddenSize);
    const param = (name: string, shape: number[]) =>
      this.addParameter(name, uniform_(zeros(shape), -k, k, globalRng)) as Tensor;
    this.weightIh = param('weight_ih_l0', [3 * hiddenSize, inputSize]);
    this.weightHh = param('weight_hh_l0', [3 * hiddenSize, hiddenSize]);
    const bias = opts.bias ?? true;
    this.biasIh = bias ? param('bias_ih_l0', [3 * hiddenSize]) : this.addParameter('bias_ih_l0', null);
    this.biasHh = bias ? param('bias_hh_l0', [3 * hiddenSize]) : this.addParameter('bias_hh_l0', null);
  }

  /** One step: input [N, I] and state [N, H] -> the next state [N, H]. */
  step(x: Tensor, h: Tensor): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.inputSize) {
      throw new Error(`GRU: expected a step input [N, ${this.inputSize}], got [${x.shape.join(', ')}]`);
    }
    this.checkState(h, x.shape[0]);
    return gruCell(linear(x, this.weightIh, this.biasIh), linear(h, this.weightHh, this.biasHh), h);
  }

  private checkState(h: Tensor, n: number): void {
    if (h.ndim !== 2 || h.shape[0] !== n || h.shape[1] !== this.hiddenSize) {
      throw new Error(`GRU: expected a state [${n}, ${this.hiddenSize}], got [${h.shape.join(', ')}]`);
    }
  }

  /** Every step's state and the last one. */
  forwardWithState(input: Tensor, h0?: Tensor): { output: Tensor; h: Tensor } {
    if (input.ndim !== 3 || input.shape[2] !== this.inputSize) {
      const layout = this.batchFirst ? '[N, T, I]' : '[T, N, I]';
      throw new Error(`GRU: expected input ${layout} with I = ${this.inputSize}, got [${input.shape.join(', ')}]`);
    }
    const x = this.batchFirst ? transpose(input, [1, 0, 2]) : input;
    const [steps, n] = x.shape;
    if (steps < 1) throw new Error('GRU: the sequence is empty');
    let h = h0 ?? zeros([n, this.hiddenSize]);
    this.checkState(h, n);
    const gi = linear(reshape(x, [steps * n, this.inputSize]), this.weightIh, this.biasIh);
    const outs: Tensor[] = [];
    for (let t = 0; t < steps; t++) {
      const gh = linear(h, this.weightHh, this.biasHh);
      h = gruCell(narrow(gi, 0, t * n, n), gh, h);
      outs.push(reshape(h, [1, n, this.hiddenSize]));
    }
    const output = cat(outs, 0);
    return { output: this.batchFirst ? transpose(output, [1, 0, 2]) : output, h };
  }

  forward(input: Tensor, h0?: Tensor): Tensor {
    return this.forwardWithState(input, h0).output;
  }
}
