// BatchNorm2d layer, as torch.nn.BatchNorm2d.
import { allreduceSync, currentWorld } from '../distributed/index.js';
import { batchNorm2d, syncBatchNorm2d } from '../ops/norm.js';
import { type Tensor, full, ones, zeros } from '../tensor.js';
import { Module } from './module.js';

export interface BatchNormLayerOptions {
  /** default 1e-5 */
  eps?: number;
  /** Weight of each new batch in the running statistics (default 0.1). */
  momentum?: number;
  /** Learn `weight` and `bias` (default true). */
  affine?: boolean;
  /** Keep running_mean / running_var for inference (default true). */
  trackRunningStats?: boolean;
}

/**
 * Batch normalisation over the channels of [N, C, H, W] (output has the same shape).
 * Parameters `weight` [C] (ones), `bias` [C] (zeros); buffers `running_mean` [C],
 * `running_var` [C], `num_batches_tracked` [] as in PyTorch.
 */
export class BatchNorm2d extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;
  readonly numBatchesTracked: Tensor | null;
  readonly eps: number;
  readonly momentum: number;
  /**
   * In training, normalise over the batches of every rank of a distributed run together
   * (torch's SyncBatchNorm; see convertSyncBatchNorm). No effect in eval mode or alone.
   */
  sync = false;

  constructor(
    readonly numFeatures: number,
    opts: BatchNormLayerOptions = {},
  ) {
    super();
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum ?? 0.1;
    const affine = opts.affine ?? true;
    const track = opts.trackRunningStats ?? true;
    this.weight = this.addParameter('weight', affine ? ones([numFeatures]) : null);
    this.bias = this.addParameter('bias', affine ? zeros([numFeatures]) : null);
    this.runningMean = this.addBuffer('running_mean', track ? zeros([numFeatures]) : null);
    this.runningVar = this.addBuffer('running_var', track ? full([numFeatures], 1) : null);
    this.numBatchesTracked = this.addBuffer('num_batches_tracked', track ? zeros([]) : null);
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[1] !== this.numFeatures) {
      throw new Error(`BatchNorm2d: expected input [N, ${this.numFeatures}, H, W], got [${x.shape.join(', ')}]`);
    }
    const useBatchStats = this.training || !this.runningMean;
    if (this.training && this.numBatchesTracked) this.numBatchesTracked.data[0] += 1;
    if (this.sync && this.training && (currentWorld()?.size ?? 1) > 1) {
      const opts = { momentum: this.momentum, eps: this.eps };
      return syncBatchNorm2d(x, this.runningMean, this.runningVar, this.weight, this.bias, opts, (a) =>
        allreduceSync(a, 'sum', 'synchronized batch norm'),
      );
    }
    return batchNorm2d(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: useBatchStats,
      momentum: this.training ? this.momentum : 0,
      eps: this.eps,
    });
  }
}

/**
 * Makes every BatchNorm2d in `model` synchronized (as torch's
 * SyncBatchNorm.convert_sync_batchnorm): in a distributed run its training statistics are those
 * of all the ranks' batches together, at the cost of two small blocking all-reduces per layer in
 * the forward pass and one in the backward, and of compiled steps (a synchronized step runs
 * eagerly). Use it when each rank's batch is too small for good statistics. Returns how many
 * layers it changed.
 */
export function convertSyncBatchNorm(model: Module, sync = true): number {
  let changed = 0;
  for (const [, m] of model.namedModules()) {
    if (m instanceof BatchNorm2d && m.sync !== sync) {
      m.sync = sync;
      changed++;
    }
  }
  return changed;
}
