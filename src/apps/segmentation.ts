// Semantic segmentation: several digits per canvas, a class for every pixel (0 background, 1 + d
// for digit d), a fully convolutional network (strided convs down, dilated convs to widen the
// view without shrinking the map, as DeepLab, transposed convs back up with a skip, as FCN),
// per-pixel cross-entropy plus soft Dice, and the usual metrics (mIoU, pixel accuracy).
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { ConvTranspose2d } from '../nn/conv-transpose2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { add, mean, mul, reshape, scale } from '../ops/elementwise.js';
import { crossEntropy, softmaxAlong } from '../ops/loss.js';
import { div, sub, sumTo } from '../ops/nd.js';
import { Tensor } from '../tensor.js';
import {
  addClutter,
  addNoise,
  canvasBatch,
  checkSample,
  checkScale,
  checkSetOptions,
  digitPool,
  inkBox,
  mnistDigits,
  paste,
  resampleDigit,
  toBytes,
} from './canvas.js';
import type { TaskSet } from './train.js';

export interface SegmentationBatch {
  /** Canvases [N, 1, S, S] in [0, 1]. */
  images: Tensor;
  /** The class of every pixel, [N, S, S] flattened (0 background, 1 + d for digit d). */
  masks: Int32Array;
}

export interface SegmentationSetOptions {
  count: number;
  /** Canvas side (default 64). */
  size?: number;
  train?: boolean;
  seed?: number;
  /** Fewest and most digits per canvas (default [2, 3]). */
  perCanvas?: [number, number];
  /** Digit side in pixels (default [20, 30] on 64). */
  scale?: [number, number];
  /** Fragments of other digits, labelled background (default 0). */
  clutter?: number;
  /** Gaussian pixel noise (default 0.03). */
  noise?: number;
  /** A pixel belongs to its digit where the digit's ink exceeds this (default 0.3). */
  threshold?: number;
  /** Only these digit classes (default all ten). */
  digits?: readonly number[];
  dir?: string;
}

/** Names of the classes of a digit segmentation set: 'background', then '0' to '9'. */
export const SEGMENTATION_CLASSES = ['background', ...Array.from({ length: 10 }, (_, d) => String(d))];

export class SegmentationSet implements TaskSet<SegmentationBatch> {
  readonly numClasses = 11;
  constructor(
    readonly size: number,
    readonly pixels: Uint8Array,
    readonly masks: Uint8Array,
  ) {}

  get length(): number {
    return this.pixels.length / (this.size * this.size);
  }

  batch(indices: ArrayLike<number>): SegmentationBatch {
    const plane = this.size * this.size;
    const masks = new Int32Array(indices.length * plane);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkSample('SegmentationSet.batch', i, this.length);
      for (let j = 0; j < plane; j++) masks[k * plane + j] = this.masks[i * plane + j];
    }
    return { images: canvasBatch(this.pixels, this.size, indices), masks };
  }
}

/**
 * Generates a segmentation set: 2-3 digits per canvas (by default) at random sides and places,
 * each placed where its ink box does not touch an earlier digit's (up to 50 tries, then it is
 * left out), Gaussian noise on top. The mask labels a pixel 1 + d where digit d's ink exceeds
 * `threshold`, and 0 elsewhere.
 */
export function segmentationSet(opts: SegmentationSetOptions): SegmentationSet {
  const size = opts.size ?? 64;
  const rng = checkSetOptions('segmentationSet', opts.count, size, 32, opts.seed ?? 0);
  const [dmin, dmax] = opts.perCanvas ?? [2, 3];
  const [lo, hi] = opts.scale ?? [Math.round((20 * size) / 64), Math.round((30 * size) / 64)];
  if (!(Number.isInteger(dmin) && Number.isInteger(dmax) && dmin >= 1 && dmin <= dmax && dmax <= 8)) {
    throw new Error(`segmentationSet: perCanvas must be two integers 1 <= min <= max <= 8, got [${dmin}, ${dmax}]`);
  }
  checkScale('segmentationSet', lo, hi, size);
  const src = mnistDigits(opts.train ?? true, opts.dir);
  const pool = digitPool('segmentationSet', src, opts.digits);
  const plane = size * size;
  const pixels = new Uint8Array(opts.count * plane);
  const masks = new Uint8Array(opts.count * plane);
  const canvas = new Float32Array(plane);
  for (let i = 0; i < opts.count; i++) {
    canvas.fill(0);
    addClutter(canvas, size, src, rng, opts.clutter ?? 0);
    const mask = masks.subarray(i * plane, (i + 1) * plane);
    const placed: number[][] = [];
    const n = dmin + rng.int(dmax - dmin + 1);
    for (let k = 0; k < n; k++) {
      const digit = pool[rng.int(pool.length)];
      const side = lo + rng.int(hi - lo + 1);
      const patch = resampleDigit(src, digit, side, side);
      const ink = inkBox(patch, side, side, opts.threshold ?? 0.3);
      if (!ink) continue;
      for (let attempt = 0; attempt < 50; attempt++) {
        const left = rng.int(size - side + 1);
        const top = rng.int(size - side + 1);
        const box = [left + ink[0] - 1, top + ink[1] - 1, left + ink[2] + 1, top + ink[3] + 1];
        if (placed.some((b) => box[0] < b[2] && b[0] < box[2] && box[1] < b[3] && b[1] < box[3])) continue;
        placed.push(box);
        paste(canvas, size, patch, side, side, left, top, {
          data: mask,
          value: 1 + src.labels[digit],
          threshold: opts.threshold ?? 0.3,
        });
        break;
      }
    }
    addNoise(canvas, rng, opts.noise ?? 0.03);
    toBytes(canvas, pixels, i * plane);
  }
  return new SegmentationSet(size, pixels, masks);
}

/**
 * Soft Dice loss over classes (Milletari et al. 2016): 1 - mean_c (2 sum(p_c t_c) + eps) /
 * (sum(p_c) + sum(t_c) + eps), with p the softmax of logits [N, C, H, W] over C and t the one-hot
 * targets [N, H, W]; sums run over the batch and the pixels. It weighs every class equally
 * however few its pixels, which per-pixel cross-entropy does not; `eps` (default 1) keeps a class
 * absent from both prediction and batch near a perfect score.
 */
export function diceLoss(logits: Tensor, targets: ArrayLike<number>, eps = 1): Tensor {
  if (logits.ndim !== 4) throw new Error(`diceLoss: expected logits [N, C, H, W], got [${logits.shape.join(', ')}]`);
  const [n, c, h, w] = logits.shape;
  const plane = h * w;
  if (targets.length !== n * plane) throw new Error(`diceLoss: expected ${n * plane} targets, got ${targets.length}`);
  const onehot = new Float32Array(logits.size);
  for (let b = 0; b < n; b++) {
    for (let j = 0; j < plane; j++) {
      const t = targets[b * plane + j];
      if (!Number.isInteger(t) || t < 0 || t >= c) throw new Error(`diceLoss: target ${t} is not a class in [0, ${c})`);
      onehot[(b * c + t) * plane + j] = 1;
    }
  }
  const p = softmaxAlong(logits, 1);
  const t = new Tensor(onehot, logits.shape);
  const perClass = [1, c, 1, 1];
  const e = new Tensor(new Float32Array([eps]), [1]);
  const inter = sumTo(mul(p, t), perClass);
  const denom = add(add(sumTo(p, perClass), sumTo(t, perClass)), e);
  const dice = div(add(scale(inter, 2), e), denom);
  return reshape(sub(new Tensor(new Float32Array([1]), [1]), mean(dice)), []);
}

/** Per-pixel cross-entropy plus `diceWeight` times the Dice loss, with both parts. */
export function segmentationLoss(
  logits: Tensor,
  batch: { masks: Int32Array },
  diceWeight = 0.5,
): { loss: Tensor; parts: Record<string, Tensor> } {
  const ce = crossEntropy(logits, batch.masks);
  const dice = diceLoss(logits, batch.masks);
  return { loss: add(ce, scale(dice, diceWeight)), parts: { ce, dice } };
}

export interface SegmentationMetrics {
  /** Fraction of pixels with the right class. */
  pixelAccuracy: number;
  /** Mean over classes of IoU = TP / (TP + FP + FN), over the classes present in either. */
  meanIoU: number;
  /** IoU of each class (NaN for a class in neither prediction nor truth). */
  iou: number[];
}

/** The class of every pixel of logits [N, C, H, W]: [N, H, W] flattened. */
export function pixelArgmax(logits: Tensor): Uint8Array {
  const [n, c, h, w] = logits.shape;
  const plane = h * w;
  const out = new Uint8Array(n * plane);
  const d = logits.data;
  for (let b = 0; b < n; b++) {
    for (let j = 0; j < plane; j++) {
      let best = 0;
      let bestV = d[b * c * plane + j];
      for (let k = 1; k < c; k++) {
        const v = d[(b * c + k) * plane + j];
        if (v > bestV) {
          bestV = v;
          best = k;
        }
      }
      out[b * plane + j] = best;
    }
  }
  return out;
}

/** Pixel accuracy and IoUs from predicted and true classes (same length), as a confusion matrix would. */
export function segmentationMetrics(
  pred: ArrayLike<number>,
  truth: ArrayLike<number>,
  numClasses: number,
): SegmentationMetrics {
  if (pred.length !== truth.length) {
    throw new Error(`segmentationMetrics: ${pred.length} predictions but ${truth.length} true classes`);
  }
  const tp = new Float64Array(numClasses);
  const fp = new Float64Array(numClasses);
  const fn = new Float64Array(numClasses);
  let right = 0;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i];
    const t = truth[i];
    if (p === t) {
      tp[p]++;
      right++;
    } else {
      fp[p]++;
      fn[t]++;
    }
  }
  const iou = Array.from(tp, (v, k) => (v + fp[k] + fn[k] > 0 ? v / (v + fp[k] + fn[k]) : Number.NaN));
  const present = iou.filter((v) => !Number.isNaN(v));
  return {
    pixelAccuracy: right / Math.max(1, pred.length),
    meanIoU: present.reduce((a, b) => a + b, 0) / Math.max(1, present.length),
    iou,
  };
}

/** Predicts the whole set (off the event loop) and scores it. */
export async function evaluateSegmentation(
  model: Module,
  set: SegmentationSet,
  batchSize = 64,
): Promise<SegmentationMetrics & { pred: Uint8Array }> {
  const all = Array.from({ length: set.length }, (_, i) => i);
  const logits = await model.predict(set.batch(all).images, { batchSize });
  const pred = pixelArgmax(logits);
  return { ...segmentationMetrics(pred, set.masks, set.numClasses), pred };
}

const convBnRelu = (cin: number, cout: number, o: { stride?: number; dilation?: number } = {}): Module[] => [
  new Conv2d(cin, cout, 3, { stride: o.stride ?? 1, padding: o.dilation ?? 1, dilation: o.dilation ?? 1, bias: false }),
  new BatchNorm2d(cout),
  new ReLU(),
];

const upBnRelu = (cin: number, cout: number): Module[] => [
  new ConvTranspose2d(cin, cout, 4, { stride: 2, padding: 1, bias: false }),
  new BatchNorm2d(cout),
  new ReLU(),
];

/**
 * A small fully convolutional segmenter, [N, inChannels, S, S] -> logits [N, numClasses, S, S]
 * (S a multiple of 4): two strided convs down to S/4, dilated 3x3 convs (rates 2 and 4, a
 * 23-pixel view at S/4 without further downsampling, as DeepLab), then two stride-2 transposed
 * convs back to S, the first added to the S/2 features (an FCN skip), and a 1x1 classifier.
 */
export class SegmentationNet extends Module {
  readonly stem: Sequential;
  readonly down: Sequential;
  readonly context: Sequential;
  readonly up1: Sequential;
  readonly up2: Sequential;
  readonly classifier: Conv2d;

  constructor(opts: { numClasses?: number; inChannels?: number; width?: number } = {}) {
    super();
    const { numClasses = 11, inChannels = 1, width = 32 } = opts;
    this.stem = this.addModule(
      'stem',
      new Sequential(...convBnRelu(inChannels, width / 2), ...convBnRelu(width / 2, width, { stride: 2 })),
    );
    this.down = this.addModule('down', new Sequential(...convBnRelu(width, 2 * width, { stride: 2 })));
    this.context = this.addModule(
      'context',
      new Sequential(
        ...convBnRelu(2 * width, 2 * width, { dilation: 2 }),
        ...convBnRelu(2 * width, 2 * width, { dilation: 4 }),
      ),
    );
    this.up1 = this.addModule('up1', new Sequential(...upBnRelu(2 * width, width)));
    this.up2 = this.addModule('up2', new Sequential(...upBnRelu(width, width / 2)));
    this.classifier = this.addModule('classifier', new Conv2d(width / 2, numClasses, 1));
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 4 || x.shape[2] % 4 !== 0 || x.shape[3] % 4 !== 0) {
      throw new Error(
        `SegmentationNet: expected [N, C, H, W] with H and W multiples of 4, got [${x.shape.join(', ')}]`,
      );
    }
    const half = this.stem.call(x);
    const quarter = this.context.call(this.down.call(half));
    return this.classifier.call(this.up2.call(add(this.up1.call(quarter), half)));
  }
}
