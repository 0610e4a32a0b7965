// Pose estimation as keypoint heatmap regression (Xiao, Wu and Wei 2018, "Simple Baselines"):
// articulated stick figures with K = 11 joints, a ResNet-style backbone with a transposed-conv
// head that outputs one heatmap per joint, MSE against Gaussian targets, sub-pixel argmax
// decoding and the PCK metric.
import { BatchNorm2d } from '../nn/batch-norm.js';
import { Conv2d } from '../nn/conv2d.js';
import { ConvTranspose2d } from '../nn/conv-transpose2d.js';
import { Module } from '../nn/module.js';
import { ReLU } from '../nn/relu.js';
import { Sequential } from '../nn/sequential.js';
import { BasicBlock } from '../models/resnet.js';
import type { Rng } from '../random.js';
import { Tensor } from '../tensor.js';
import { addNoise, canvasBatch, checkSample, checkSetOptions, toBytes } from './canvas.js';
import type { TaskSet } from './train.js';

/** The joints of a figure, in heatmap order. */
export const POSE_JOINTS = [
  'head',
  'neck',
  'pelvis',
  'left elbow',
  'left hand',
  'right elbow',
  'right hand',
  'left knee',
  'left foot',
  'right knee',
  'right foot',
] as const;

/** The limbs, as pairs of joint indices (for drawing skeletons). */
export const POSE_LIMBS: readonly [number, number][] = [
  [0, 1],
  [1, 2],
  [1, 3],
  [3, 4],
  [1, 5],
  [5, 6],
  [2, 7],
  [7, 8],
  [2, 9],
  [9, 10],
];

/** Left limbs are drawn dimmer than right ones, so left and right can be told apart. */
const LIMB_INTENSITY = [1, 1, 0.55, 0.55, 1, 1, 0.55, 0.55, 1, 1];

export interface PoseBatch {
  images: Tensor;
  /** Gaussian target heatmaps [N, K, S/stride, S/stride]. */
  heatmaps: Tensor;
  /** Joint coordinates [N, K, 2] (x, y) in canvas pixels (pixel centres at integers). */
  joints: Float32Array;
}

export interface PoseSetOptions {
  count: number;
  /** Canvas side (default 64). */
  size?: number;
  seed?: number;
  /** Canvas pixels per heatmap pixel (default 2). */
  stride?: number;
  /** Standard deviation of the target Gaussians in heatmap pixels (default 1). */
  sigma?: number;
  /** Random line segments as clutter (default 3). */
  clutter?: number;
  /** Gaussian pixel noise (default 0.05). */
  noise?: number;
}

/**
 * Draws a segment with a soft edge (coverage falls from 1 to 0 over one pixel beyond `width`/2)
 * by its distance to each pixel centre, keeping the brighter value. Written here rather than
 * rendered by an image library so the generator stays synchronous and bit-identical everywhere.
 */
function drawSegment(
  canvas: Float32Array,
  size: number,
  a: [number, number],
  b: [number, number],
  width: number,
  value: number,
): void {
  const r = width / 2 + 1;
  const [x0, x1] = [
    Math.max(0, Math.floor(Math.min(a[0], b[0]) - r)),
    Math.min(size - 1, Math.ceil(Math.max(a[0], b[0]) + r)),
  ];
  const [y0, y1] = [
    Math.max(0, Math.floor(Math.min(a[1], b[1]) - r)),
    Math.min(size - 1, Math.ceil(Math.max(a[1], b[1]) + r)),
  ];
  const dx = b[0] - a[0];
  const dy = b[1] - a[1];
  const len2 = dx * dx + dy * dy;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const t = len2 > 0 ? Math.min(1, Math.max(0, ((x - a[0]) * dx + (y - a[1]) * dy) / len2)) : 0;
      const d = Math.hypot(x - (a[0] + t * dx), y - (a[1] + t * dy));
      const cover = Math.min(1, Math.max(0, width / 2 + 0.5 - d));
      const v = cover * value;
      if (v > canvas[y * size + x]) canvas[y * size + x] = v;
    }
  }
}

/** One random figure's joints (x, y) inside a `size` canvas. */
function randomFigure(rng: Rng, size: number): [number, number][] {
  const u = (lo: number, hi: number) => lo + (hi - lo) * rng.next();
  const s = size * u(0.11, 0.16); // torso length
  const lean = u(-0.5, 0.5); // radians from vertical
  const dir = (angle: number): [number, number] => [Math.sin(angle), -Math.cos(angle)];
  const j: [number, number][] = new Array(11);
  const pelvis: [number, number] = [0, 0];
  const up = dir(lean);
  const neck: [number, number] = [pelvis[0] + up[0] * s, pelvis[1] + up[1] * s];
  const headDir = dir(lean + u(-0.4, 0.4));
  j[0] = [neck[0] + headDir[0] * s * 0.45, neck[1] + headDir[1] * s * 0.45];
  j[1] = neck;
  j[2] = pelvis;
  const limb = (from: [number, number], angle: number, len: number): [number, number] => {
    const d = dir(angle);
    return [from[0] + d[0] * len, from[1] + d[1] * len];
  };
  // Arms hang from the neck, legs from the pelvis; angles measured from "up", mirrored sides.
  const upper = s * 0.6;
  const lower = s * 0.55;
  const lElbowA = lean - u(0.6, 2.6);
  j[3] = limb(neck, lElbowA, upper);
  j[4] = limb(j[3], lElbowA + u(-1.2, 1.2), lower);
  const rElbowA = lean + u(0.6, 2.6);
  j[5] = limb(neck, rElbowA, upper);
  j[6] = limb(j[5], rElbowA + u(-1.2, 1.2), lower);
  const thigh = s * 0.7;
  const shin = s * 0.65;
  const lKneeA = lean + Math.PI + u(0.05, 0.7);
  j[7] = limb(pelvis, lKneeA, thigh);
  j[8] = limb(j[7], lKneeA + u(-0.9, 0.3), shin);
  const rKneeA = lean + Math.PI - u(0.05, 0.7);
  j[9] = limb(pelvis, rKneeA, thigh);
  j[10] = limb(j[9], rKneeA + u(-0.3, 0.9), shin);
  // Place the figure at random wholly inside the canvas (with a 3-pixel margin).
  const xs = j.map((p) => p[0]);
  const ys = j.map((p) => p[1]);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const ox = u(3 - minX, size - 4 - maxX);
  const oy = u(3 - minY, size - 4 - maxY);
  return j.map(([x, y]) => [x + ox, y + oy]);
}

/** Gaussian heatmaps [K, H, W] centred on `joints` (canvas pixels) at `stride`. */
function gaussianHeatmaps(
  joints: [number, number][],
  hw: number,
  stride: number,
  sigma: number,
  out: Float32Array,
  at: number,
) {
  const plane = hw * hw;
  for (let k = 0; k < joints.length; k++) {
    // Canvas pixel centre x maps to heatmap coordinate (x + 0.5) / stride - 0.5.
    const cx = (joints[k][0] + 0.5) / stride - 0.5;
    const cy = (joints[k][1] + 0.5) / stride - 0.5;
    for (let y = 0; y < hw; y++) {
      for (let x = 0; x < hw; x++) {
        out[at + k * plane + y * hw + x] = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma));
      }
    }
  }
}

/** A pose set: canvases, joints and the options the heatmaps are drawn with. */
export class PoseSet implements TaskSet<PoseBatch> {
  readonly numJoints = POSE_JOINTS.length;
  constructor(
    readonly size: number,
    readonly stride: number,
    readonly sigma: number,
    readonly pixels: Uint8Array,
    readonly joints: Float32Array,
  ) {}

  get length(): number {
    return this.pixels.length / (this.size * this.size);
  }

  /** Heatmap side: size / stride. */
  get heatmapSize(): number {
    return this.size / this.stride;
  }

  batch(indices: ArrayLike<number>): PoseBatch {
    const k = this.numJoints;
    const hw = this.heatmapSize;
    const heat = new Float32Array(indices.length * k * hw * hw);
    const joints = new Float32Array(indices.length * k * 2);
    for (let b = 0; b < indices.length; b++) {
      const i = indices[b];
      checkSample('PoseSet.batch', i, this.length);
      const pts = Array.from({ length: k }, (_, j): [number, number] => [
        this.joints[(i * k + j) * 2],
        this.joints[(i * k + j) * 2 + 1],
      ]);
      joints.set(this.joints.subarray(i * k * 2, (i + 1) * k * 2), b * k * 2);
      gaussianHeatmaps(pts, hw, this.stride, this.sigma, heat, b * k * hw * hw);
    }
    return {
      images: canvasBatch(this.pixels, this.size, indices),
      heatmaps: new Tensor(heat, [indices.length, k, hw, hw]),
      joints,
    };
  }
}

/**
 * Generates stick figures: random torso size, lean, head tilt and limb angles (arms and legs
 * bend within human-like ranges), drawn as 2-pixel strokes (left limbs dimmer) with a head disc,
 * among `clutter` random segments and noise. Joints are in canvas pixels.
 */
export function poseSet(opts: PoseSetOptions): PoseSet {
  const size = opts.size ?? 64;
  const stride = opts.stride ?? 2;
  const rng = checkSetOptions('poseSet', opts.count, size, 32, opts.seed ?? 0);
  if (!Number.isInteger(stride) || stride < 1 || size % stride !== 0) {
    throw new Error(`poseSet: stride must be a positive integer dividing size ${size}, got ${stride}`);
  }
  const plane = size * size;
  const pixels = new Uint8Array(opts.count * plane);
  const joints = new Float32Array(opts.count * POSE_JOINTS.length * 2);
  const canvas = new Float32Array(plane);
  for (let i = 0; i < opts.count; i++) {
    canvas.fill(0);
    for (let c = 0; c < (opts.clutter ?? 3); c++) {
      const a: [number, number] = [rng.next() * size, rng.next() * size];
      const len = 4 + rng.next() * 8;
      const ang = rng.next() * 2 * Math.PI;
      drawSegment(
        canvas,
        size,
        a,
        [a[0] + Math.cos(ang) * len, a[1] + Math.sin(ang) * len],
        1.5,
        0.3 + 0.4 * rng.next(),
      );
    }
    const fig = randomFigure(rng, size);
    POSE_LIMBS.forEach(([p, q], l) => {
      drawSegment(canvas, size, fig[p], fig[q], 2, LIMB_INTENSITY[l]);
    });
    drawSegment(canvas, size, fig[0], fig[0], 5, 1);
    addNoise(canvas, rng, opts.noise ?? 0.05);
    toBytes(canvas, pixels, i * plane);
    for (const [k, [x, y]] of fig.entries()) joints.set([x, y], (i * POSE_JOINTS.length + k) * 2);
  }
  return new PoseSet(size, stride, opts.sigma ?? 1, pixels, joints);
}

/**
 * The joints (x, y) in canvas pixels from heatmaps [N, K, H, W]: the argmax of each map moved a
 * quarter pixel towards the higher neighbour on each axis (Simple Baselines' sub-pixel step),
 * mapped back through `stride`. Returns [N, K, 2] flattened, and each joint's peak value.
 */
export function decodeHeatmaps(heatmaps: Tensor, stride: number): { joints: Float32Array; scores: Float32Array } {
  if (heatmaps.ndim !== 4) throw new Error(`decodeHeatmaps: expected [N, K, H, W], got [${heatmaps.shape.join(', ')}]`);
  const [n, k, h, w] = heatmaps.shape;
  const d = heatmaps.data;
  const joints = new Float32Array(n * k * 2);
  const scores = new Float32Array(n * k);
  for (let m = 0; m < n * k; m++) {
    const base = m * h * w;
    let best = 0;
    for (let j = 1; j < h * w; j++) if (d[base + j] > d[base + best]) best = j;
    const x = best % w;
    const y = Math.floor(best / w);
    const at = (yy: number, xx: number) => d[base + yy * w + xx];
    let fx = x;
    let fy = y;
    if (x > 0 && x < w - 1) fx += 0.25 * Math.sign(at(y, x + 1) - at(y, x - 1));
    if (y > 0 && y < h - 1) fy += 0.25 * Math.sign(at(y + 1, x) - at(y - 1, x));
    joints[m * 2] = (fx + 0.5) * stride - 0.5;
    joints[m * 2 + 1] = (fy + 0.5) * stride - 0.5;
    scores[m] = d[base + best];
  }
  return { joints, scores };
}

/**
 * PCK@alpha: the fraction of joints predicted within alpha x the figure's size (the longer side
 * of the box around its true joints) of the truth. `pred` and `truth` are [N, K, 2] flattened.
 */
export function pck(pred: ArrayLike<number>, truth: ArrayLike<number>, numJoints: number, alpha = 0.1): number {
  if (pred.length !== truth.length || truth.length % (numJoints * 2) !== 0) {
    throw new Error(`pck: ${pred.length} predicted and ${truth.length} true coordinates for ${numJoints} joints`);
  }
  const n = truth.length / (numJoints * 2);
  let hit = 0;
  for (let i = 0; i < n; i++) {
    let [minX, maxX, minY, maxY] = [Infinity, -Infinity, Infinity, -Infinity];
    for (let k = 0; k < numJoints; k++) {
      const [x, y] = [truth[(i * numJoints + k) * 2], truth[(i * numJoints + k) * 2 + 1]];
      [minX, maxX, minY, maxY] = [Math.min(minX, x), Math.max(maxX, x), Math.min(minY, y), Math.max(maxY, y)];
    }
    const limit = alpha * Math.max(maxX - minX, maxY - minY);
    for (let k = 0; k < numJoints; k++) {
      const at = (i * numJoints + k) * 2;
      if (Math.hypot(pred[at] - truth[at], pred[at + 1] - truth[at + 1]) <= limit) hit++;
    }
  }
  return hit / (n * numJoints);
}

/**
 * The "simple baseline" pose network, small: a ResNet stem and three BasicBlock stages (32, 64,
 * 128 channels; the input shrinks 8x), then two stride-2 transposed convs (BN, ReLU) back up to
 * 1/2 of the input and a 1x1 conv to one heatmap per joint.
 * forward(x [N, 1, S, S]) -> heatmaps [N, numJoints, S/2, S/2].
 */
export class PoseNet extends Module {
  readonly backbone: Sequential;
  readonly deconv: Sequential;
  readonly finalLayer: Conv2d;

  constructor(opts: { numJoints?: number; inChannels?: number } = {}) {
    super();
    const { numJoints = POSE_JOINTS.length, inChannels = 1 } = opts;
    const down = (cin: number, cout: number) =>
      new Sequential(new Conv2d(cin, cout, 1, { stride: 2, bias: false }), new BatchNorm2d(cout));
    this.backbone = this.addModule(
      'backbone',
      new Sequential(
        new Conv2d(inChannels, 32, 3, { stride: 2, padding: 1, bias: false }),
        new BatchNorm2d(32),
        new ReLU(),
        new BasicBlock(32, 32),
        new BasicBlock(32, 64, { stride: 2, downsample: down(32, 64) }),
        new BasicBlock(64, 128, { stride: 2, downsample: down(64, 128) }),
      ),
    );
    const up = (cin: number, cout: number) => [
      new ConvTranspose2d(cin, cout, 4, { stride: 2, padding: 1, bias: false }),
      new BatchNorm2d(cout),
      new ReLU(),
    ];
    this.deconv = this.addModule('deconv', new Sequential(...up(128, 64), ...up(64, 64)));
    this.finalLayer = this.addModule('final_layer', new Conv2d(64, numJoints, 1));
  }

  forward(x: Tensor): Tensor {
    return this.finalLayer.call(this.deconv.call(this.backbone.call(x)));
  }
}

/** Predicts the whole set (off the event loop), decodes the joints and scores PCK@0.1. */
export async function evaluatePose(
  model: Module,
  set: PoseSet,
  batchSize = 128,
): Promise<{ pck: number; pck05: number; joints: Float32Array }> {
  const all = Array.from({ length: set.length }, (_, i) => i);
  const heat = await model.predict(set.batch(all).images, { batchSize });
  const { joints } = decodeHeatmaps(heat, set.stride);
  return {
    pck: pck(joints, set.joints, set.numJoints, 0.1),
    pck05: pck(joints, set.joints, set.numJoints, 0.05),
    joints,
  };
}
