// Embedding layer, as torch.nn.Embedding.
import { gather } from '../ops/nd.js';
import { globalRng } from '../random.js';
import { type Tensor, zeros } from '../tensor.js';
import { normal_ } from './init.js';
import { Module } from './module.js';

/**
 * A lookup table of `numEmbeddings` vectors of size `embeddingDim` (`weight`, initialised
 * N(0, 1) as torch). forward(indices) takes a tensor of integer indices of any shape [...] and
 * returns [..., embeddingDim]; the gradient of a row is the sum over its occurrences.
 */
export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
  ) {
    super();
    for (const [name, v] of [
      ['numEmbeddings', numEmbeddings],
      ['embeddingDim', embeddingDim],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 1) throw new Error(`Embedding: ${name} must be a positive integer, got ${v}`);
    }
    this.weight = this.addParameter('weight', normal_(zeros([numEmbeddings, embeddingDim]), 0, 1, globalRng)) as Tensor;
  }

  forward(indices: Tensor): Tensor {
    const idx = Array.from(indices.data);
    for (const [i, v] of idx.entries()) {
      if (!Number.isInteger(v) || v < 0 || v >= this.numEmbeddings) {
        throw new Error(`Embedding: index ${i} is ${v}, expected an integer in [0, ${this.numEmbeddings})`);
      }
    }
    return gather(this.weight, 0, idx, [...indices.shape]);
  }
}
