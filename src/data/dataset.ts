// Datasets: indexable collections of (image, label) samples that a DataLoader batches. In-memory
// sets answer synchronously (and may batch in one go); sets that decode files (ImageFolder) answer
// with a Promise, because decoding runs in libuv's pool or in worker threads.
import type { Rng } from '../random.js';
import { Tensor } from '../tensor.js';

/** One sample: an image [C, H, W] float32 and an integer class label. */
export interface Sample {
  image: Tensor;
  label: number;
}

/** A batch: images [N, C, H, W] float32 and their labels. */
export interface Batch {
  images: Tensor;
  labels: Int32Array;
}

/**
 * How a worker thread rebuilds a dataset (structured-cloneable, no functions). Built-in datasets
 * produce their own; a custom dataset can name a module that exports a factory:
 * `{ kind: 'module', url: import.meta.url, exportName: 'makeMyDataset', args: {...} }` makes the
 * worker run `(await import(url))[exportName](args)`, which must return a dataset.
 */
export type WorkerSource =
  | { kind: 'tensor'; images: SharedArrayBuffer; shape: number[]; labels: SharedArrayBuffer }
  | {
      kind: 'mnist';
      pixels: SharedArrayBuffer;
      labels: SharedArrayBuffer;
      shape: number[];
      mean: number[] | null;
      std: number[] | null;
      classes: string[];
    }
  | { kind: 'imageFolder'; root: string; options: unknown }
  | { kind: 'subset'; base: WorkerSource; indices: number[] }
  | { kind: 'module'; url: string; exportName: string; args?: unknown };

interface DatasetBase {
  /** Number of samples. */
  readonly length: number;
  /** Class names, index = label, when the dataset knows them. */
  readonly classes?: readonly string[];
  /** A recipe for rebuilding this dataset inside a worker thread (needed for numWorkers > 0). */
  workerSource?(): WorkerSource;
}

/**
 * A dataset whose samples are at hand (in memory or cheap to compute).
 * `get(i, rng)` returns sample i; `rng` (when given) drives any random augmentation the dataset
 * itself applies, so the DataLoader can make it depend only on (seed, epoch, i).
 * `getBatch(indices)`, when present, is a fast path that builds a whole batch at once.
 */
export interface Dataset extends DatasetBase {
  get(index: number, rng?: Rng): Sample;
  getBatch?(indices: ArrayLike<number>): Batch;
}

/** A dataset that has to decode its samples (files): `getAsync(i, rng)` resolves to sample i. */
export interface AsyncDataset extends DatasetBase {
  getAsync(index: number, rng?: Rng): Promise<Sample>;
}

export type AnyDataset = Dataset | AsyncDataset;

export function isAsyncDataset(d: AnyDataset): d is AsyncDataset {
  return typeof (d as AsyncDataset).getAsync === 'function';
}

/** Sample `index` of either kind of dataset. */
export function getSample(d: AnyDataset, index: number, rng?: Rng): Sample | Promise<Sample> {
  return isAsyncDataset(d) ? d.getAsync(index, rng) : d.get(index, rng);
}

/** Throws unless `index` is an integer in [0, length). */
export function checkIndex(what: string, index: number, length: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= length) {
    throw new Error(`${what}: index must be an integer in [0, ${length}), got ${index}`);
  }
}

/**
 * The batch of samples `indices` of an in-memory dataset of `length` samples of `sampleShape`:
 * `fill(i, out, offset)` writes sample i's values at `out[offset]`, `label(i)` gives its class.
 * `what` names the caller in index errors.
 */
export function gatherBatch(
  what: string,
  length: number,
  sampleShape: number[],
  indices: ArrayLike<number>,
  fill: (i: number, out: Float32Array, offset: number) => void,
  label: (i: number) => number,
): Batch {
  const s = sampleShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(indices.length * s);
  const labels = new Int32Array(indices.length);
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    checkIndex(what, i, length);
    fill(i, out, k * s);
    labels[k] = label(i);
  }
  return { images: new Tensor(out, [indices.length, ...sampleShape]), labels };
}

/** A copy of a typed array's bytes in a new SharedArrayBuffer (for worker threads). */
export function toShared<T extends Float32Array | Int32Array | Uint8Array>(a: T): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(a.byteLength);
  new Uint8Array(sab).set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return sab;
}

/**
 * Samples held as tensors: images [N, C, H, W] and N integer labels (like torch's TensorDataset).
 * `get` returns copies, so transforms and callers cannot alter the stored data.
 */
export class TensorDataset implements Dataset {
  readonly images: Tensor;
  readonly labels: Int32Array;
  private readonly sampleShape: number[];
  private readonly sampleSize: number;
  private shared: WorkerSource | null = null;

  constructor(images: Tensor, labels: ArrayLike<number>) {
    if (images.ndim !== 4) {
      throw new Error(`TensorDataset: images must be [N, C, H, W], got [${images.shape.join(', ')}]`);
    }
    const n = images.shape[0];
    if (labels.length !== n) {
      throw new Error(`TensorDataset: expected ${n} labels (one per image), got ${labels.length}`);
    }
    const lab = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const v = labels[i];
      if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) {
        throw new Error(`TensorDataset: labels[${i}] must be a non-negative integer, got ${v}`);
      }
      lab[i] = v;
    }
    this.images = images;
    this.labels = lab;
    this.sampleShape = images.shape.slice(1);
    this.sampleSize = this.sampleShape.reduce((a, b) => a * b, 1);
  }

  get length(): number {
    return this.labels.length;
  }

  get(index: number): Sample {
    checkIndex('TensorDataset.get', index, this.length);
    const s = this.sampleSize;
    return {
      image: new Tensor(this.images.data.slice(index * s, (index + 1) * s), this.sampleShape),
      label: this.labels[index],
    };
  }

  getBatch(indices: ArrayLike<number>): Batch {
    const s = this.sampleSize;
    const fill = (i: number, out: Float32Array, at: number) =>
      out.set(this.images.data.subarray(i * s, (i + 1) * s), at);
    return gatherBatch('TensorDataset.getBatch', this.length, this.sampleShape, indices, fill, (i) => this.labels[i]);
  }

  /** Copies the data into shared memory once, so every worker reads it without its own copy. */
  workerSource(): WorkerSource {
    this.shared ??= {
      kind: 'tensor',
      images: toShared(this.images.data),
      shape: [...this.images.shape],
      labels: toShared(this.labels),
    };
    return this.shared;
  }
}

/** The samples of `dataset` at `indices`, in that order (like torch.utils.data.Subset). */
export class Subset<D extends AnyDataset = AnyDataset> implements Dataset, AsyncDataset {
  readonly indices: Int32Array;

  constructor(
    readonly dataset: D,
    indices: ArrayLike<number>,
  ) {
    const n = dataset.length;
    this.indices = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      if (!Number.isInteger(i) || i < 0 || i >= n) {
        throw new Error(`Subset: indices[${k}] must be an integer in [0, ${n}), got ${i}`);
      }
      this.indices[k] = i;
    }
    // A Subset offers exactly the entry points its base has (the loader picks its path from
    // which methods exist), so the ones the base lacks are shadowed with undefined.
    if (isAsyncDataset(dataset)) {
      Object.defineProperty(this, 'get', { value: undefined });
      Object.defineProperty(this, 'getBatch', { value: undefined });
    } else if (!dataset.getBatch) {
      Object.defineProperty(this, 'getBatch', { value: undefined });
    }
    if (!isAsyncDataset(dataset)) Object.defineProperty(this, 'getAsync', { value: undefined });
    if (!dataset.workerSource) Object.defineProperty(this, 'workerSource', { value: undefined });
  }

  get length(): number {
    return this.indices.length;
  }

  get classes(): readonly string[] | undefined {
    return this.dataset.classes;
  }

  get(index: number, rng?: Rng): Sample {
    checkIndex('Subset.get', index, this.length);
    return (this.dataset as Dataset).get(this.indices[index], rng);
  }

  getBatch(indices: ArrayLike<number>): Batch {
    const mapped = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      checkIndex('Subset.getBatch', indices[k], this.length);
      mapped[k] = this.indices[indices[k]];
    }
    return (this.dataset as Dataset).getBatch!(mapped);
  }

  getAsync(index: number, rng?: Rng): Promise<Sample> {
    try {
      checkIndex('Subset.getAsync', index, this.length);
    } catch (e) {
      return Promise.reject(e);
    }
    return (this.dataset as AsyncDataset).getAsync(this.indices[index], rng);
  }

  workerSource(): WorkerSource {
    return { kind: 'subset', base: this.dataset.workerSource!(), indices: Array.from(this.indices) };
  }
}

/**
 * Splits `dataset` into non-overlapping random subsets of the given lengths (which must add up to
 * its length), like torch.utils.data.random_split; the split depends only on `rng`.
 */
export function randomSplit<D extends AnyDataset>(dataset: D, lengths: number[], rng: Rng): Subset<D>[] {
  const total = lengths.reduce((a, b) => a + b, 0);
  if (lengths.some((l) => !Number.isInteger(l) || l < 0) || total !== dataset.length) {
    throw new Error(
      `randomSplit: lengths must be non-negative integers adding up to ${dataset.length}, got [${lengths.join(', ')}]`,
    );
  }
  const perm = permutation(dataset.length, rng);
  const out: Subset<D>[] = [];
  let start = 0;
  for (const l of lengths) {
    out.push(new Subset(dataset, perm.subarray(start, start + l)));
    start += l;
  }
  return out;
}

/** A uniformly random permutation of 0..n-1 (Fisher-Yates). */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
