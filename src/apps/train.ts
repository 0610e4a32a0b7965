// The training loop of the application tasks, whose targets are not class labels (boxes, masks,
// heatmaps, identities, words): shuffled mini-batches from a task set, a loss the task defines
// on the model's output and the batch, backward, an optimizer step, and a yield to the event
// loop between batches. fit() remains the loop for classification (plans, checkpoints, logs).
import type { Module } from '../nn/module.js';
import { permutation } from '../data/dataset.js';
import { Rng } from '../random.js';
import { Tensor } from '../tensor.js';
import type { OptimizerLike, SchedulerLike } from '../train/fit.js';
import { yieldToEventLoop } from '../train/fit.js';

/** A synthetic (or any) task set: `length` samples, batched by index. */
export interface TaskSet<B extends { images: Tensor }> {
  readonly length: number;
  batch(indices: ArrayLike<number>): B;
}

/** A task loss: the total to minimise, and optionally its parts (logged as numbers). */
export type TaskLoss<B> = (output: Tensor, batch: B) => Tensor | { loss: Tensor; parts: Record<string, Tensor> };

export interface TrainTaskOptions<B> {
  optimizer: OptimizerLike;
  loss: TaskLoss<B>;
  epochs: number;
  batchSize: number;
  /** Seeds the per-epoch shuffles (default 0). */
  seed?: number;
  /** Stepped once per epoch. */
  scheduler?: SchedulerLike;
  /** Called after every epoch with the mean loss (and parts) over its batches. */
  onEpochEnd?: (epoch: number, logs: Record<string, number>) => void | Promise<void>;
  /**
   * The epoch's batches as lists of indices (a batch sampler, e.g. IdentitySet.pkBatches);
   * default: a fresh shuffle cut into batchSize pieces, the last partial one dropped.
   */
  batches?: (epoch: number, rng: Rng) => ArrayLike<number>[];
  /** Replaces the model's forward (e.g. a decoder fed with the batch): output from the batch. */
  forward?: (model: Module, batch: B) => Tensor;
}

/** A shuffle of [0, n) cut into batches of `size` (the last partial one dropped unless it is the only one). */
function shuffled(n: number, size: number, rng: Rng): Int32Array[] {
  const order = permutation(n, rng);
  const out: Int32Array[] = [];
  for (let at = 0; at + size <= n; at += size) out.push(order.subarray(at, at + size));
  if (out.length === 0) out.push(order);
  return out;
}

export interface EpochLog {
  epoch: number;
  seconds: number;
  [name: string]: number;
}

/**
 * Trains `model` on `set` for `epochs` epochs and returns one log per epoch (mean loss and
 * parts, seconds). The model is in training mode during the run and left in eval mode.
 */
export async function trainTask<B extends { images: Tensor }>(
  model: Module,
  set: TaskSet<B>,
  opts: TrainTaskOptions<B>,
): Promise<EpochLog[]> {
  const { epochs, batchSize } = opts;
  if (!Number.isSafeInteger(epochs) || epochs < 0) throw new Error(`trainTask: epochs must be >= 0, got ${epochs}`);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new Error(`trainTask: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (set.length < 1) throw new Error('trainTask: the set is empty');
  const rng = new Rng(opts.seed ?? 0);
  const logs: EpochLog[] = [];
  model.train();
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      const t0 = performance.now();
      const totals: Record<string, number> = {};
      let batches = 0;
      for (const indices of opts.batches ? opts.batches(epoch, rng) : shuffled(set.length, batchSize, rng)) {
        const batch = set.batch(indices);
        opts.optimizer.zeroGrad();
        const output = opts.forward ? opts.forward(model, batch) : model.call(batch.images);
        const result = opts.loss(output, batch);
        const total = result instanceof Tensor ? result : result.loss;
        const value = total.data[0];
        if (!Number.isFinite(value)) throw new Error(`trainTask: the loss is ${value} at epoch ${epoch + 1}`);
        total.backward();
        opts.optimizer.step();
        totals.loss = (totals.loss ?? 0) + value;
        if (!(result instanceof Tensor)) {
          for (const [k, v] of Object.entries(result.parts)) totals[k] = (totals[k] ?? 0) + v.data[0];
        }
        batches++;
        await yieldToEventLoop();
      }
      opts.scheduler?.step();
      const log: EpochLog = { epoch: epoch + 1, seconds: (performance.now() - t0) / 1000 };
      for (const [k, v] of Object.entries(totals)) log[k] = v / batches;
      logs.push(log);
      await opts.onEpochEnd?.(epoch + 1, log);
    }
  } finally {
    model.eval();
  }
  return logs;
}
