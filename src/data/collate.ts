// Building one batch: fetch the samples, augment each with its own generator, stack them into
// [N, C, H, W]. The DataLoader runs this on the main thread or inside its worker threads; both
// give identical batches because every random draw comes from sampleRng(seed, epoch, index).
import { Tensor } from '../tensor.js';
import { type AnyDataset, type Batch, type Sample, isAsyncDataset } from './dataset.js';
import { sampleRng } from './seeding.js';
import type { Transform } from './transforms.js';

export interface CollateOptions {
  seed: number;
  epoch: number;
  /** Applied to every sample after the dataset's own processing. */
  transform?: Transform | null;
}

/** The batch of `dataset` samples at `indices` (in that order). */
export async function loadBatch(dataset: AnyDataset, indices: ArrayLike<number>, opts: CollateOptions): Promise<Batch> {
  const { seed, epoch, transform = null } = opts;
  if (!isAsyncDataset(dataset) && dataset.getBatch && !transform) return dataset.getBatch(indices);
  const rngs = Array.from(indices, (i) => sampleRng(seed, epoch, i));
  let samples: Sample[];
  if (isAsyncDataset(dataset)) {
    // All decodes start at once: sharp spreads them over libuv's thread pool.
    samples = await Promise.all(Array.from(indices, (i, k) => dataset.getAsync(i, rngs[k])));
  } else {
    samples = Array.from(indices, (i, k) => dataset.get(i, rngs[k]));
  }
  if (transform) {
    samples = samples.map((s, k) => ({ image: transform(s.image, rngs[k]), label: s.label }));
  }
  return stack(samples, indices);
}

/** Stacks samples of one shape into a batch; errors name the offending dataset index. */
export function stack(samples: Sample[], indices: ArrayLike<number>): Batch {
  if (samples.length === 0) return { images: new Tensor(new Float32Array(0), [0]), labels: new Int32Array(0) };
  const first = samples[0].image;
  const labels = new Int32Array(samples.length);
  for (let k = 0; k < samples.length; k++) {
    const { image, label } = samples[k] ?? ({} as Sample);
    if (!(image instanceof Tensor)) throw new Error(`DataLoader: sample ${indices[k]} has no image Tensor`);
    if (image.shape.length !== first.shape.length || image.shape.some((d, j) => d !== first.shape[j])) {
      throw new Error(
        `DataLoader: sample ${indices[k]} has shape [${image.shape.join(', ')}] ` +
          `but sample ${indices[0]} has [${first.shape.join(', ')}]; ` +
          'resize or crop to one size (e.g. transforms.resize + transforms.centerCrop) so samples can be batched',
      );
    }
    if (!Number.isInteger(label) || label < -(2 ** 31) || label > 2 ** 31 - 1) {
      throw new Error(`DataLoader: sample ${indices[k]} has label ${label}, expected a 32-bit integer`);
    }
    labels[k] = label;
  }
  const size = first.size;
  const out = new Float32Array(samples.length * size);
  for (let k = 0; k < samples.length; k++) out.set(samples[k].image.data, k * size);
  return { images: new Tensor(out, [samples.length, ...first.shape]), labels };
}
