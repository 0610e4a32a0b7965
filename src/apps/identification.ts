// Identification and verification, as face recognition does it: a CNN maps an image to an
// L2-normalised embedding, trained with metric-learning losses (triplet with batch-hard mining,
// ArcFace's additive angular margin), and two images are "the same identity" when their
// embeddings are close. The identities are two-digit numbers "00" to "99", each written with
// different handwriting every time; some identities are held out of training entirely, and
// verification is measured on those, so the embedding must generalise to people it never saw.
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { Flatten } from '../nn/flatten.js';
import { Linear } from '../nn/linear.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { xavierUniform_ } from '../nn/init.js';
import { clip, pow, relu } from '../ops/activation.js';
import { add, mean, mul, scale } from '../ops/elementwise.js';
import { crossEntropy } from '../ops/loss.js';
import { div, gather, matmul, sub, sumTo } from '../ops/nd.js';
import { transpose } from '../ops/elementwise.js';
import { permutation } from '../data/dataset.js';
import { Rng } from '../random.js';
import { Tensor } from '../tensor.js';
import {
  addNoise,
  canvasBatch,
  checkSample,
  checkSetOptions,
  mnistDigits,
  paste,
  resampleDigit,
  toBytes,
} from './canvas.js';
import type { TaskSet } from './train.js';

/**
 * x / max(||x||_2, eps) along dim 1 of [N, D], as torch.nn.functional.normalize(x, dim=1):
 * every row on the unit sphere, so distances between embeddings are cosines in disguise.
 */
export function l2Normalize(x: Tensor, eps = 1e-12): Tensor {
  if (x.ndim !== 2) throw new Error(`l2Normalize: expected [N, D], got [${x.shape.join(', ')}]`);
  const norm = pow(sumTo(mul(x, x), [x.shape[0], 1]), 0.5);
  return div(x, clip(norm, eps));
}

/** The L2-normalisation layer: [N, D] -> [N, D] with unit rows. */
export class L2Normalize extends Module {
  forward(x: Tensor): Tensor {
    return l2Normalize(x);
  }
}

export interface IdentityBatch {
  images: Tensor;
  /** Identity of each image (0-99: the number written). */
  labels: Int32Array;
}

export interface IdentitySetOptions {
  /** Images per identity. */
  perIdentity: number;
  /** The identities (numbers 0-99) to draw. */
  identities: readonly number[];
  /** Digits from MNIST's training split (default true) or test split. */
  train?: boolean;
  seed?: number;
  /** Canvas side (default 32). */
  size?: number;
  /** Gaussian pixel noise (default 0.05). */
  noise?: number;
  dir?: string;
}

/** Images of identities: canvases (bytes) and the identity of each. */
export class IdentitySet implements TaskSet<IdentityBatch> {
  constructor(
    readonly size: number,
    readonly pixels: Uint8Array,
    readonly labels: Uint8Array,
  ) {}

  get length(): number {
    return this.labels.length;
  }

  batch(indices: ArrayLike<number>): IdentityBatch {
    const labels = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkSample('IdentitySet.batch', i, this.length);
      labels[k] = this.labels[i];
    }
    return { images: canvasBatch(this.pixels, this.size, indices), labels };
  }

  /**
   * Batches of `p` identities x `k` images each (the P-K sampling batch-hard triplet mining
   * needs: every anchor has positives and negatives in its batch), covering the set about once.
   */
  pkBatches(p: number, k: number, rng: Rng): Int32Array[] {
    const byId = new Map<number, number[]>();
    for (let i = 0; i < this.length; i++) {
      const list = byId.get(this.labels[i]) ?? [];
      list.push(i);
      byId.set(this.labels[i], list);
    }
    const ids = [...byId.keys()];
    if (ids.length < p) throw new Error(`pkBatches: ${p} identities per batch, but the set has ${ids.length}`);
    const batches: Int32Array[] = [];
    const count = Math.max(1, Math.floor(this.length / (p * k)));
    for (let b = 0; b < count; b++) {
      const order = permutation(ids.length, rng);
      const batch = new Int32Array(p * k);
      for (let q = 0; q < p; q++) {
        const list = byId.get(ids[order[q]]) as number[];
        for (let j = 0; j < k; j++) batch[q * k + j] = list[rng.int(list.length)];
      }
      batches.push(batch);
    }
    return batches;
  }
}

/**
 * Draws `perIdentity` images of each identity n in `identities` (0-99): the two digits of n
 * (tens, units; "07" for 7) side by side on a `size` canvas, each a randomly chosen MNIST
 * sample of that digit (so every image is in other handwriting), resampled to a random height
 * of 0.45-0.6 of the side, jittered in position, with noise.
 */
export function identitySet(opts: IdentitySetOptions): IdentitySet {
  const size = opts.size ?? 32;
  const per = opts.perIdentity;
  const ids = opts.identities;
  if (!Array.isArray(ids) || ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0 || n > 99)) {
    throw new Error('identitySet: identities must be a non-empty list of integers 0-99');
  }
  const rng = checkSetOptions('identitySet', per * ids.length, size, 24, opts.seed ?? 0);
  const src = mnistDigits(opts.train ?? true, opts.dir);
  const byDigit: number[][] = Array.from({ length: 10 }, () => []);
  for (let i = 0; i < src.count; i++) byDigit[src.labels[i]].push(i);
  const count = per * ids.length;
  const plane = size * size;
  const pixels = new Uint8Array(count * plane);
  const labels = new Uint8Array(count);
  const canvas = new Float32Array(plane);
  let at = 0;
  for (const id of ids) {
    for (let r = 0; r < per; r++) {
      canvas.fill(0);
      const side = Math.round(size * (0.45 + 0.15 * rng.next()));
      const half = size / 2;
      for (const [slot, digit] of [
        [0, Math.floor(id / 10)],
        [1, id % 10],
      ]) {
        const pool = byDigit[digit];
        const patch = resampleDigit(src, pool[rng.int(pool.length)], side, side);
        const left = Math.round(slot * half + (half - side) / 2 + (rng.next() - 0.5) * 4);
        const top = Math.round((size - side) / 2 + (rng.next() - 0.5) * 6);
        paste(canvas, size, patch, side, side, left, top);
      }
      addNoise(canvas, rng, opts.noise ?? 0.05);
      toBytes(canvas, pixels, at * plane);
      labels[at++] = id;
    }
  }
  return new IdentitySet(size, pixels, labels);
}

/**
 * Splits the 100 identities into `unseen` held out of training (chosen by `seed`) and the rest.
 */
export function splitIdentities(unseen: number, seed = 0): { train: number[]; unseen: number[] } {
  if (!Number.isInteger(unseen) || unseen < 1 || unseen > 99) {
    throw new Error(`splitIdentities: unseen must be an integer in [1, 99], got ${unseen}`);
  }
  const order = Array.from(permutation(100, new Rng(seed)));
  return { train: order.slice(unseen).sort((a, b) => a - b), unseen: order.slice(0, unseen).sort((a, b) => a - b) };
}

/**
 * An embedding CNN: three blocks of two conv-BN-ReLU (24, 48, 64 channels), each halving the map, a linear
 * layer to `dim` and L2 normalisation. forward(x [N, 1, S, S]) -> [N, dim] unit rows.
 */
export class EmbeddingNet extends Module {
  readonly features: Sequential;
  readonly embedding: Sequential;

  constructor(opts: { dim?: number; size?: number; inChannels?: number } = {}) {
    super();
    const { dim = 64, size = 32, inChannels = 1 } = opts;
    if (size % 8 !== 0) throw new Error(`EmbeddingNet: size must be a multiple of 8, got ${size}`);
    const block = (cin: number, cout: number) => [
      new Conv2d(cin, cout, 3, { padding: 1, bias: false }),
      new BatchNorm2d(cout),
      new ReLU(),
      new Conv2d(cout, cout, 3, { padding: 1, bias: false }),
      new BatchNorm2d(cout),
      new ReLU(),
      new MaxPool2d(2),
    ];
    this.features = this.addModule(
      'features',
      new Sequential(...block(inChannels, 24), ...block(24, 48), ...block(48, 64)),
    );
    this.embedding = this.addModule(
      'embedding',
      new Sequential(new Flatten(), new Linear(64 * (size / 8) ** 2, dim), new L2Normalize()),
    );
  }

  forward(x: Tensor): Tensor {
    return this.embedding.call(this.features.call(x));
  }
}

/** Squared Euclidean distances between the rows of two embedding arrays, as numbers. */
function distanceMatrix(e: Float32Array, n: number, d: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) {
        const v = e[i * d + k] - e[j * d + k];
        s += v * v;
      }
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return out;
}

/**
 * Triplet loss with batch-hard mining (Hermans, Beyer and Leibe 2017): for every anchor, its
 * farthest positive (same label) and nearest negative in the batch, and
 * mean(relu(d(a, p) - d(a, n) + margin)) with Euclidean d = sqrt(squared + eps). The choice of
 * p and n is made on the values (it has no gradient); the distances to them are differentiable.
 * Anchors with no positive or no negative in the batch are left out.
 */
export function batchHardTripletLoss(embeddings: Tensor, labels: ArrayLike<number>, margin = 0.2, eps = 1e-12): Tensor {
  if (embeddings.ndim !== 2) {
    throw new Error(`batchHardTripletLoss: expected embeddings [N, D], got [${embeddings.shape.join(', ')}]`);
  }
  const [n, d] = embeddings.shape;
  if (labels.length !== n) throw new Error(`batchHardTripletLoss: ${n} embeddings but ${labels.length} labels`);
  const dist = distanceMatrix(embeddings.data, n, d);
  const anchors: number[] = [];
  const positives: number[] = [];
  const negatives: number[] = [];
  for (let i = 0; i < n; i++) {
    let p = -1;
    let q = -1;
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      if (labels[j] === labels[i]) {
        if (p < 0 || dist[i * n + j] > dist[i * n + p]) p = j;
      } else if (q < 0 || dist[i * n + j] < dist[i * n + q]) q = j;
    }
    if (p >= 0 && q >= 0) {
      anchors.push(i);
      positives.push(p);
      negatives.push(q);
    }
  }
  if (anchors.length === 0) {
    throw new Error('batchHardTripletLoss: no anchor has both a positive and a negative in the batch');
  }
  const a = gather(embeddings, 0, anchors);
  const euclid = (b: Tensor) => {
    const diff = sub(a, b);
    const sq = sumTo(mul(diff, diff), [anchors.length, 1]);
    return pow(add(sq, new Tensor(new Float32Array([eps]), [1])), 0.5);
  };
  const dap = euclid(gather(embeddings, 0, positives));
  const dan = euclid(gather(embeddings, 0, negatives));
  return mean(relu(add(sub(dap, dan), new Tensor(new Float32Array([margin]), [1]))));
}

/**
 * ArcFace's additive angular margin head (Deng et al. 2019): cos(theta_j) between the normalised
 * embedding and each identity's normalised weight; the true identity's logit becomes
 * s * cos(theta + m), the others s * cos(theta). As insightface's ArcMarginProduct (easy_margin
 * false): where theta + m would pass pi, cos(theta) - m sin(m) is used instead so the logit keeps
 * falling. forward(embeddings, labels) returns the logits [N, classes] for cross-entropy; the
 * weight is `weight` [classes, D].
 */
export class ArcFaceHead extends Module {
  readonly weight: Tensor;
  readonly cosM: number;
  readonly sinM: number;
  readonly th: number;
  readonly mm: number;

  constructor(
    readonly inFeatures: number,
    readonly numClasses: number,
    readonly s = 16,
    readonly m = 0.3,
  ) {
    super();
    const w = new Tensor(new Float32Array(numClasses * inFeatures), [numClasses, inFeatures]);
    xavierUniform_(w);
    this.weight = this.addParameter('weight', w) as Tensor;
    this.cosM = Math.cos(m);
    this.sinM = Math.sin(m);
    this.th = Math.cos(Math.PI - m);
    this.mm = Math.sin(Math.PI - m) * m;
  }

  /** cos(theta) [N, classes] between the normalised embeddings and normalised weights. */
  cosine(embeddings: Tensor): Tensor {
    return matmul(l2Normalize(embeddings), transpose(l2Normalize(this.weight), [1, 0]));
  }

  forward(embeddings: Tensor, labels?: Tensor): Tensor {
    if (!labels) return scale(this.cosine(embeddings), this.s);
    return this.logits(embeddings, labels.data);
  }

  /** The margin logits for `labels` (class indices). */
  logits(embeddings: Tensor, labels: ArrayLike<number>): Tensor {
    const cos = this.cosine(embeddings);
    const [n, c] = cos.shape;
    if (labels.length !== n) throw new Error(`ArcFaceHead: ${n} embeddings but ${labels.length} labels`);
    const sin = pow(clip(sub(new Tensor(new Float32Array([1]), [1]), mul(cos, cos)), 0, 1), 0.5);
    const phi = sub(scale(cos, this.cosM), scale(sin, this.sinM));
    // Where the margin applies (the true class, and theta + m < pi), phi; the true class past it,
    // cos - mm; elsewhere cos. The masks are constants chosen on the values, as torch.where.
    const usePhi = new Float32Array(n * c);
    const useCos = new Float32Array(n * c).fill(1);
    const shift = new Float32Array(n * c);
    for (let i = 0; i < n; i++) {
      const t = labels[i];
      if (!Number.isInteger(t) || t < 0 || t >= c) throw new Error(`ArcFaceHead: label ${t} is not in [0, ${c})`);
      const at = i * c + t;
      if (cos.data[at] > this.th) {
        usePhi[at] = 1;
        useCos[at] = 0;
      } else shift[at] = -this.mm;
    }
    const mixed = add(
      add(mul(phi, new Tensor(usePhi, [n, c])), mul(cos, new Tensor(useCos, [n, c]))),
      new Tensor(shift, [n, c]),
    );
    return scale(mixed, this.s);
  }

  /** Cross-entropy of the margin logits. */
  loss(embeddings: Tensor, labels: ArrayLike<number>): Tensor {
    return crossEntropy(this.logits(embeddings, labels), Int32Array.from(labels));
  }
}

/** Embeddings of `images` [N, C, H, W] (predict, off the event loop). */
export function embed(model: Module, images: Tensor, batchSize = 256): Promise<Tensor> {
  return model.predict(images, { batchSize });
}

/** Cosine similarity of two unit embeddings (rows `i` of `a` and `j` of `b`). */
function cosineAt(a: Float32Array, i: number, b: Float32Array, j: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += a[i * d + k] * b[j * d + k];
  return s;
}

/**
 * Is each image of `a` the same identity as the image at the same index of `b`? Embeds both and
 * compares the cosine similarity with `threshold` (from verificationMetrics on known pairs).
 */
export async function verify(
  model: Module,
  a: Tensor,
  b: Tensor,
  threshold: number,
): Promise<{ similarity: number[]; same: boolean[] }> {
  if (a.shape[0] !== b.shape[0]) throw new Error(`verify: ${a.shape[0]} images against ${b.shape[0]}`);
  const [ea, eb] = [await embed(model, a), await embed(model, b)];
  const d = ea.shape[1];
  const similarity = Array.from({ length: a.shape[0] }, (_, i) => cosineAt(ea.data, i, eb.data, i, d));
  return { similarity, same: similarity.map((s) => s >= threshold) };
}

export interface VerificationMetrics {
  /** Accuracy on same/different pairs, the threshold chosen on the other half of the pairs (2-fold). */
  accuracy: number;
  /** Area under the ROC curve of the similarity score. */
  auc: number;
  /** Equal error rate: where false accepts equal false rejects. */
  eer: number;
  /** The threshold that is best over all pairs (for verify()). */
  threshold: number;
  /** Each image's nearest other image has its identity. */
  top1Retrieval: number;
  pairs: number;
}

function bestThreshold(scores: number[], same: boolean[]): number {
  const order = scores.map((_, i) => i).sort((x, y) => scores[x] - scores[y]);
  // Threshold between consecutive sorted scores: accept >= t.
  // A threshold below every score accepts every pair: the positives are right.
  let right = same.filter((s) => s).length;
  let best = right;
  let bestT = scores[order[0]] - 1e-6;
  for (let k = 0; k < order.length; k++) {
    right += same[order[k]] ? -1 : 1;
    if (right > best) {
      best = right;
      bestT = k + 1 < order.length ? (scores[order[k]] + scores[order[k + 1]]) / 2 : scores[order[k]] + 1e-6;
    }
  }
  return bestT;
}

function accuracyAt(scores: number[], same: boolean[], t: number): number {
  let right = 0;
  for (let i = 0; i < scores.length; i++) right += scores[i] >= t === same[i] ? 1 : 0;
  return right / scores.length;
}

/** ROC AUC (the probability a random positive pair scores above a random negative, ties half). */
export function rocAuc(scores: readonly number[], same: readonly boolean[]): number {
  const order = scores.map((_, i) => i).sort((x, y) => scores[x] - scores[y]);
  let rankSum = 0;
  let positives = 0;
  for (let k = 0; k < order.length; ) {
    let e = k;
    while (e + 1 < order.length && scores[order[e + 1]] === scores[order[k]]) e++;
    const rank = (k + e) / 2 + 1;
    for (let j = k; j <= e; j++) {
      if (same[order[j]]) {
        rankSum += rank;
        positives++;
      }
    }
    k = e + 1;
  }
  const negatives = order.length - positives;
  if (positives === 0 || negatives === 0) throw new Error('rocAuc: needs both positive and negative pairs');
  return (rankSum - (positives * (positives + 1)) / 2) / (positives * negatives);
}

/** Equal error rate: the false-accept rate where it meets the false-reject rate (interpolated). */
export function equalErrorRate(scores: readonly number[], same: readonly boolean[]): number {
  const pos = scores.filter((_, i) => same[i]);
  const neg = scores.filter((_, i) => !same[i]);
  if (pos.length === 0 || neg.length === 0) throw new Error('equalErrorRate: needs both positive and negative pairs');
  const candidates = [...new Set(scores)].sort((a, b) => a - b);
  let best = { gap: Number.POSITIVE_INFINITY, eer: 1 };
  for (const t of candidates) {
    const far = neg.filter((s) => s >= t).length / neg.length;
    const frr = pos.filter((s) => s < t).length / pos.length;
    const gap = Math.abs(far - frr);
    if (gap < best.gap) best = { gap, eer: (far + frr) / 2 };
  }
  return best.eer;
}

/**
 * Verification and retrieval on a set of identities: `pairs` same-identity and `pairs`
 * different-identity pairs drawn by `seed`, scored by cosine similarity of the embeddings.
 */
export async function verificationMetrics(
  model: Module,
  set: IdentitySet,
  opts: { pairs?: number; seed?: number } = {},
): Promise<VerificationMetrics> {
  const all = Array.from({ length: set.length }, (_, i) => i);
  const e = await embed(model, set.batch(all).images);
  const d = e.shape[1];
  const rng = new Rng(opts.seed ?? 0);
  const pairs = opts.pairs ?? 1000;
  const byId = new Map<number, number[]>();
  for (let i = 0; i < set.length; i++) byId.set(set.labels[i], [...(byId.get(set.labels[i]) ?? []), i]);
  const ids = [...byId.keys()];
  if (ids.length < 2) throw new Error('verificationMetrics: needs at least two identities');
  const scores: number[] = [];
  const same: boolean[] = [];
  for (let k = 0; k < 2 * pairs; k++) {
    const positive = k % 2 === 0;
    const id = ids[rng.int(ids.length)];
    const list = byId.get(id) as number[];
    const i = list[rng.int(list.length)];
    let j: number;
    if (positive) {
      if (list.length < 2) throw new Error(`verificationMetrics: identity ${id} has one image`);
      do j = list[rng.int(list.length)];
      while (j === i);
    } else {
      let other = id;
      while (other === id) other = ids[rng.int(ids.length)];
      const l2 = byId.get(other) as number[];
      j = l2[rng.int(l2.length)];
    }
    scores.push(cosineAt(e.data, i, e.data, j, d));
    same.push(positive);
  }
  // 2-fold: a threshold picked on one half is scored on the other, so accuracy is not fitted.
  const half = scores.length / 2;
  const [s1, s2] = [scores.slice(0, half), scores.slice(half)];
  const [y1, y2] = [same.slice(0, half), same.slice(half)];
  const accuracy = (accuracyAt(s2, y2, bestThreshold(s1, y1)) + accuracyAt(s1, y1, bestThreshold(s2, y2))) / 2;
  let top1 = 0;
  for (let i = 0; i < set.length; i++) {
    let best = -1;
    let bestS = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < set.length; j++) {
      if (j === i) continue;
      const s = cosineAt(e.data, i, e.data, j, d);
      if (s > bestS) {
        bestS = s;
        best = j;
      }
    }
    top1 += set.labels[best] === set.labels[i] ? 1 : 0;
  }
  return {
    accuracy,
    auc: rocAuc(scores, same),
    eer: equalErrorRate(scores, same),
    threshold: bestThreshold(scores, same),
    top1Retrieval: top1 / set.length,
    pairs: scores.length,
  };
}
