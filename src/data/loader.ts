// DataLoader: turns a dataset into an async stream of shuffled, augmented batches, building the
// next batches while the current one trains (on the main thread between awaits, or in worker
// threads with numWorkers > 0). Everything random derives from one seed: epoch e's order from
// (seed, e), sample i's augmentation from (seed, e, i). So the whole run is fixed by the seed,
// and getState()/setState() resume a run mid-epoch with exactly the batches it would have seen.
import { globalRng } from '../random.js';
import { loadBatch } from './collate.js';
import { type AnyDataset, type Batch, permutation } from './dataset.js';
import { checkSeed, shuffleRng } from './seeding.js';
import type { Transform } from './transforms.js';
import { WorkerPool } from './worker-pool.js';
import { describe } from '../describe.js';

export interface DataLoaderOptions {
  /** Samples per batch (default 1). */
  batchSize?: number;
  /** A new random order every epoch (default false: dataset order). */
  shuffle?: boolean;
  /** Skip the last batch when it would be smaller than batchSize (default false). */
  dropLast?: boolean;
  /** Seed of every random choice (order, augmentation); default: drawn from the global generator (see manualSeed). */
  seed?: number;
  /** Applied to each sample (after the dataset's own transform). */
  transform?: Transform;
  /**
   * Worker threads that build batches (default 0: on the main thread). Workers need a dataset
   * with workerSource() (all of ferroconv's have one) and transforms made by ferroconv's
   * transforms module; they start when an iteration starts and exit when it ends or is left.
   */
  numWorkers?: number;
  /** Batches requested ahead of the one being consumed (default 2, or 2 per worker). */
  prefetch?: number;
  /**
   * This process's part of every epoch in data-parallel training (as torch's
   * DistributedSampler): rank r of `size` takes every size-th sample of the epoch's order,
   * starting at r, so the ranks never overlap and together cover the epoch. The seed must be
   * the same on every rank (fit checks it). With `even` (default true) the order is first
   * padded with its own beginning to a multiple of `size`, so every rank has as many batches
   * (training steps in lockstep need it); `even: false` (for evaluation) leaves the last ranks
   * one sample short instead, so nothing is counted twice. `initDistributed()` returns a world
   * to pass here.
   */
  shard?: { rank: number; size: number; even?: boolean };
}

/** The part of the data a DataLoader's process takes (DataLoaderOptions.shard). */
export interface Shard {
  readonly rank: number;
  readonly size: number;
  readonly even: boolean;
}

/** What a checkpoint needs to resume a DataLoader where it stopped. */
export interface DataLoaderState {
  seed: number;
  /** The epoch being (or next to be) iterated. */
  epoch: number;
  /** Batches of that epoch already handed out. */
  position: number;
  /** Checked on setState: a different batch size or dataset length would give other batches. */
  batchSize: number;
  numSamples: number;
  shuffle: boolean;
  /** The number of ranks the data was sharded over (absent: 1). */
  shards?: number;
}

function count(what: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min)
    throw new Error(`DataLoader: ${what} must be an integer >= ${min}, got ${describe(v)}`);
  return v;
}

/**
 * Batches of `dataset` as `{ images: [N, C, H, W], labels: Int32Array }`:
 *
 *   const loader = new DataLoader(mnist({ train: true }), { batchSize: 64, shuffle: true, seed: 1 });
 *   for (let e = 0; e < 10; e++) for await (const { images, labels } of loader) { ... }
 *
 * Each complete pass is one epoch and advances `epoch`; the next pass has a new order. A pass
 * left early (break) is resumed by the next one from where it stopped; setEpoch(e) restarts at
 * the beginning of epoch e. `length` is the number of batches per epoch.
 */
export class DataLoader<D extends AnyDataset = AnyDataset> implements AsyncIterable<Batch> {
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly numWorkers: number;
  readonly prefetch: number;
  readonly transform: Transform | null;
  /** This process's part of the data (null: all of it). */
  readonly shard: Shard | null;
  private seedValue: number;
  private epochValue = 0;
  private positionValue = 0;
  private iterating = false;
  private pool: WorkerPool | null = null;

  constructor(
    readonly dataset: D,
    opts: DataLoaderOptions = {},
  ) {
    if (!dataset || !Number.isInteger(dataset.length) || dataset.length < 0) {
      throw new Error('DataLoader: dataset must have an integer length and get() or getAsync()');
    }
    const g = dataset as { get?: unknown; getAsync?: unknown };
    if (typeof g.get !== 'function' && typeof g.getAsync !== 'function') {
      throw new Error('DataLoader: dataset must have a get(i) or getAsync(i) method');
    }
    this.batchSize = count('batchSize', opts.batchSize ?? 1, 1);
    this.shuffle = opts.shuffle ?? false;
    this.dropLast = opts.dropLast ?? false;
    this.numWorkers = count('numWorkers', opts.numWorkers ?? 0, 0);
    this.prefetch = count('prefetch', opts.prefetch ?? Math.max(2, 2 * this.numWorkers), 1);
    if (opts.transform !== undefined && typeof opts.transform !== 'function') {
      throw new Error('DataLoader: transform must be a function (a transform)');
    }
    this.transform = opts.transform ?? null;
    this.shard = checkShard(opts.shard);
    if (opts.seed !== undefined) checkSeed('DataLoader: seed', opts.seed);
    this.seedValue = opts.seed ?? globalRng.nextU32();
    if (this.numWorkers > 0) {
      if (typeof dataset.workerSource !== 'function') {
        throw new Error(
          'DataLoader: numWorkers > 0 needs a dataset with workerSource() (see WorkerSource), this one has none',
        );
      }
      if (this.transform && !this.transform.spec) {
        throw new Error(
          'DataLoader: numWorkers > 0 needs transforms made by ferroconv (compose, randomCrop, ...): ' +
            'a custom function cannot be sent to a worker thread',
        );
      }
    }
  }

  get seed(): number {
    return this.seedValue;
  }

  /** The epoch being iterated (or next to be). */
  get epoch(): number {
    return this.epochValue;
  }

  /** Batches of the current epoch already handed out. */
  get position(): number {
    return this.positionValue;
  }

  /** Samples per epoch (this rank's, when sharded). */
  get numSamples(): number {
    const n = this.dataset.length;
    if (!this.shard) return n;
    const { rank, size, even } = this.shard;
    return even ? Math.ceil(n / size) : rank < n ? Math.floor((n - rank - 1) / size) + 1 : 0;
  }

  /** Batches per epoch (this rank's, when sharded). */
  get length(): number {
    const n = this.numSamples;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Worker threads currently running (0 unless an iteration with numWorkers > 0 is under way). */
  get activeWorkers(): number {
    return this.pool?.size ?? 0;
  }

  /** Makes the next iteration start at the beginning of epoch `epoch`. */
  setEpoch(epoch: number): void {
    this.checkIdle('setEpoch');
    this.epochValue = count('setEpoch: epoch', epoch, 0);
    this.positionValue = 0;
  }

  getState(): DataLoaderState {
    let { epochValue: epoch, positionValue: position } = this;
    // A pass left right after its last batch has nothing left: the state points at the next epoch.
    if (position >= this.length && position > 0) {
      epoch += 1;
      position = 0;
    }
    return {
      seed: this.seedValue,
      epoch,
      position,
      batchSize: this.batchSize,
      numSamples: this.dataset.length,
      shuffle: this.shuffle,
      ...(this.shard ? { shards: this.shard.size } : {}),
    };
  }

  /** Restores getState() (e.g. from a checkpoint): the next iteration continues from there. */
  setState(state: DataLoaderState): void {
    this.validateState(state);
    this.seedValue = state.seed;
    this.epochValue = state.epoch;
    this.positionValue = state.position;
  }

  /** Checks `state` exactly as setState would, without changing anything. */
  validateState(state: DataLoaderState): void {
    this.checkIdle('setState');
    if (!state || typeof state !== 'object')
      throw new Error('DataLoader.setState: expected a state object from getState()');
    checkSeed('DataLoader.setState: seed', state.seed);
    count('setState: epoch', state.epoch, 0);
    if (state.batchSize !== this.batchSize) {
      throw new Error(
        `DataLoader.setState: state is for batchSize ${describe(state.batchSize)}, this loader has ${this.batchSize}`,
      );
    }
    if (state.numSamples !== this.dataset.length) {
      throw new Error(
        `DataLoader.setState: state is for a dataset of ${describe(state.numSamples)} samples, ` +
          `this one has ${this.dataset.length}`,
      );
    }
    if (state.shuffle !== undefined && state.shuffle !== this.shuffle) {
      throw new Error(
        `DataLoader.setState: state has shuffle ${describe(state.shuffle)}, this loader has ${this.shuffle}`,
      );
    }
    const shards = state.shards ?? 1;
    if (!Number.isSafeInteger(shards) || shards < 1)
      throw new Error(`DataLoader.setState: shards must be a positive integer, got ${describe(state.shards)}`);
    // At an epoch's start any number of ranks may take over; mid-epoch the batches already
    // seen were another sharding's.
    if (state.position > 0 && shards !== (this.shard?.size ?? 1)) {
      throw new Error(
        `DataLoader.setState: state is ${state.position} batches into an epoch sharded over ${shards} ` +
          `rank(s); this loader is sharded over ${this.shard?.size ?? 1} (a different number of ranks ` +
          'can resume at the start of an epoch)',
      );
    }
    if (!Number.isInteger(state.position) || state.position < 0 || state.position > this.length) {
      throw new Error(
        `DataLoader.setState: position must be an integer in [0, ${this.length}], got ${describe(state.position)}`,
      );
    }
  }

  /** The dataset indices of every sample of epoch `epoch` (this rank's), in the order they are batched. */
  order(epoch: number): Int32Array {
    const n = this.dataset.length;
    let p: Int32Array;
    if (this.shuffle) p = permutation(n, shuffleRng(this.seedValue, epoch));
    else {
      p = new Int32Array(n);
      for (let i = 0; i < n; i++) p[i] = i;
    }
    if (!this.shard || n === 0) return p;
    // Every size-th of the order from `rank`, the order padded with its own start when even.
    const { rank, size } = this.shard;
    const mine = new Int32Array(this.numSamples);
    for (let k = 0; k < mine.length; k++) mine[k] = p[(rank + k * size) % n];
    return mine;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch, void, undefined> {
    this.checkIdle('iterate');
    this.iterating = true;
    const inflight: Promise<Batch>[] = [];
    try {
      if (this.positionValue >= this.length && this.positionValue > 0) {
        this.epochValue += 1;
        this.positionValue = 0;
      }
      const epoch = this.epochValue;
      const nBatches = this.length;
      const order = this.order(epoch);
      const slice = (b: number): Int32Array =>
        order.slice(b * this.batchSize, Math.min((b + 1) * this.batchSize, order.length));
      if (this.numWorkers > 0 && this.positionValue < nBatches) {
        this.pool = new WorkerPool(this.numWorkers, {
          source: this.dataset.workerSource!(),
          transform: this.transform?.spec ?? null,
          seed: this.seedValue,
        });
      }
      const pool = this.pool;
      const seed = this.seedValue;
      const transform = this.transform;
      const request = (b: number): Promise<Batch> =>
        pool
          ? pool.run(epoch, slice(b))
          : // Yield to the event loop first, so the consumer runs before this batch is built.
            new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
              loadBatch(this.dataset, slice(b), { seed, epoch, transform }),
            );
      let next = this.positionValue;
      const fill = (): void => {
        while (inflight.length < this.prefetch && next < nBatches) {
          const p = request(next++);
          // Batches still in flight when the consumer leaves are dropped; their errors too.
          p.catch(() => undefined);
          inflight.push(p);
        }
      };
      for (let b = this.positionValue; b < nBatches; b++) {
        fill();
        const batch = await inflight.shift()!;
        fill();
        this.positionValue = b + 1;
        yield batch;
      }
      this.epochValue += 1;
      this.positionValue = 0;
    } finally {
      this.iterating = false;
      const pool = this.pool;
      this.pool = null;
      if (pool) await pool.close();
    }
  }

  private checkIdle(what: string): void {
    if (this.iterating) throw new Error(`DataLoader: cannot ${what} while an iteration is in progress`);
  }
}

function checkShard(shard: DataLoaderOptions['shard']): Shard | null {
  if (shard === undefined || shard === null) return null;
  if (typeof shard !== 'object')
    throw new Error(`DataLoader: shard must be { rank, size } (e.g. initDistributed()), got ${describe(shard)}`);
  const size = count('shard.size', shard.size, 1);
  if (!Number.isSafeInteger(shard.rank) || shard.rank < 0 || shard.rank >= size)
    throw new Error(`DataLoader: shard.rank must be an integer in [0, ${size}), got ${describe(shard.rank)}`);
  if (shard.even !== undefined && typeof shard.even !== 'boolean')
    throw new Error(`DataLoader: shard.even must be a boolean, got ${describe(shard.even)}`);
  return Object.freeze({ rank: shard.rank, size, even: shard.even ?? true });
}
