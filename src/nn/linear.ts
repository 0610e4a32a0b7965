// Linear layer, as torch.nn.Linear.
import { linear } from '../ops/linear.js';
import { type Tensor, zeros } from '../tensor.js';
import { defaultLayerInit } from './init.js';
import { Module } from './module.js';

/**
 * Fully connected layer. Input [N, inFeatures] -> output [N, outFeatures].
 * Parameters: `weight` [outFeatures, inFeatures], `bias` [outFeatures] (unless bias: false).
 * Initialised as PyTorch does (Kaiming uniform, a = sqrt(5)).
 */
export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    opts: { bias?: boolean } = {},
  ) {
    super();
    this.weight = this.addParameter('weight', zeros([outFeatures, inFeatures]))!;
    this.bias = this.addParameter('bias', opts.bias === false ? null : zeros([outFeatures]));
    defaultLayerInit(this.weight, this.bias);
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 2 || x.shape[1] !== this.inFeatures) {
      throw new Error(`Linear: expected input [N, ${this.inFeatures}], got [${x.shape.join(', ')}]`);
    }
    return linear(x, this.weight, this.bias);
  }
}
