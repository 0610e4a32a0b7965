// Data augmentation and preprocessing, named and behaving like torchvision.transforms, composable
// with compose([...]). A transform maps an image tensor [C, H, W] to a new one; its randomness
// comes from the Rng it is handed, which the DataLoader derives from (seed, epoch, sample index),
// so augmentations repeat exactly and do not depend on which worker ran them. Each transform also
// carries a plain-data `spec`, from which a worker thread rebuilds it (functions cannot be sent).
import { type Rng, globalRng } from '../random.js';
import type { Tensor } from '../tensor.js';
import * as F from './functional.js';
import { type Interpolation, type PaddingMode, type Size, pairSize, roundHalfEven } from './functional.js';

/** A serialisable description of a built-in transform: its factory's name and arguments. */
export interface TransformSpec {
  name: string;
  args: unknown[];
}

/**
 * Image [C, H, W] -> image; `rng` (default the global generator) drives any randomness. A
 * transform never alters its input, but may return it unchanged (e.g. a flip not taken).
 */
export interface Transform {
  (x: Tensor, rng?: Rng): Tensor;
  /** Present on ferroconv's transforms; needed to run a transform in a DataLoader worker. */
  readonly spec?: TransformSpec;
}

function make(name: string, args: unknown[], fn: (x: Tensor, rng: Rng) => Tensor): Transform {
  const t = (x: Tensor, rng: Rng = globalRng): Tensor => fn(x, rng);
  Object.defineProperty(t, 'spec', { value: { name, args }, enumerable: true });
  return t as Transform;
}

/** Uniform in [a, b), from rng (torch.empty(1).uniform_(a, b)). */
function uniform(rng: Rng, a: number, b: number): number {
  return a + (b - a) * rng.next();
}

/** Applies `transforms` in order (torchvision Compose). */
export function compose(transforms: Transform[]): Transform {
  if (!Array.isArray(transforms) || transforms.some((t) => typeof t !== 'function')) {
    throw new Error('compose: expected an array of transforms (functions)');
  }
  const list = [...transforms];
  const t = (x: Tensor, rng: Rng = globalRng): Tensor => list.reduce((acc, f) => f(acc, rng), x);
  // Serialisable only if every part is.
  if (list.every((f) => f.spec))
    Object.defineProperty(t, 'spec', { value: { name: 'compose', args: [list.map((f) => f.spec)] }, enumerable: true });
  return t as Transform;
}

/**
 * Resizes to `size` (torchvision Resize): a number sets the shorter side (aspect kept), [h, w] is
 * exact. Bilinear without antialiasing (see functional.resize), or 'nearest'.
 */
export function resize(size: Size, opts: { interpolation?: Interpolation } = {}): Transform {
  const interpolation = opts.interpolation ?? 'bilinear';
  F.resizeOutputSize(1, 1, size);
  if (interpolation !== 'bilinear' && interpolation !== 'nearest') {
    throw new Error(`resize: interpolation must be 'bilinear' or 'nearest', got ${JSON.stringify(interpolation)}`);
  }
  return make('resize', [size, { interpolation }], (x) => F.resize(x, size, interpolation));
}

/** The central crop of `size` (number = square), padding with zeros if the image is smaller. */
export function centerCrop(size: Size): Transform {
  pairSize('centerCrop: size', size);
  return make('centerCrop', [size], (x) => F.centerCrop(x, size));
}

export interface PadOptions {
  /** Value for 'constant' padding (default 0). */
  fill?: number;
  /** 'constant' (default), 'edge', 'reflect' or 'symmetric'. */
  mode?: PaddingMode;
}

/** Pads the borders (torchvision Pad): p, [left/right, top/bottom] or [left, top, right, bottom]. */
export function pad(padding: number | number[], opts: PadOptions = {}): Transform {
  F.paddingLTRB('pad: padding', padding);
  const { fill = 0, mode = 'constant' } = opts;
  return make('pad', [padding, { fill, mode }], (x) => F.pad(x, padding, fill, mode));
}

export interface RandomCropOptions extends PadOptions {
  /** Output size: a number for a square, or [h, w]. */
  size: Size;
  /** Padding applied first (as pad()); default none. */
  padding?: number | number[];
  /** Pad images smaller than `size` up to it (torchvision pads both sides by the shortfall). Default false. */
  padIfNeeded?: boolean;
}

/**
 * A crop of `size` at a uniformly random position (torchvision RandomCrop), after optional
 * padding, e.g. randomCrop({ size: 32, padding: 4 }) for CIFAR. Images smaller than the crop are
 * an error unless padIfNeeded.
 */
export function randomCrop(opts: RandomCropOptions): Transform {
  const [th, tw] = pairSize('randomCrop: size', opts?.size);
  const { padding = null, padIfNeeded = false, fill = 0, mode = 'constant' } = opts;
  if (padding !== null) F.paddingLTRB('randomCrop: padding', padding);
  return make('randomCrop', [{ size: opts.size, padding, padIfNeeded, fill, mode }], (x, rng) => {
    let img = padding !== null ? F.pad(x, padding, fill, mode) : x;
    let [h, w] = img.shape.slice(-2);
    if (padIfNeeded && w < tw) img = F.pad(img, [tw - w, 0], fill, mode);
    [h, w] = img.shape.slice(-2);
    if (padIfNeeded && h < th) img = F.pad(img, [0, th - h], fill, mode);
    [h, w] = img.shape.slice(-2);
    if (h < th || w < tw) {
      throw new Error(`randomCrop: crop size [${th}, ${tw}] is larger than the (padded) image [${h}, ${w}]`);
    }
    if (h === th && w === tw) return img;
    const i = rng.int(h - th + 1);
    const j = rng.int(w - tw + 1);
    return F.crop(img, i, j, th, tw);
  });
}

export interface RandomResizedCropOptions {
  /** Range of the crop's area as a fraction of the image's (default [0.08, 1]). */
  scale?: [number, number];
  /** Range of the crop's aspect ratio width/height, sampled log-uniformly (default [3/4, 4/3]). */
  ratio?: [number, number];
  interpolation?: Interpolation;
}

/**
 * A random crop of random area and aspect ratio, resized to `size` (torchvision
 * RandomResizedCrop, the standard ImageNet training augmentation). Ten tries at a crop that fits,
 * then a central crop clamped to the ratio range, exactly as torchvision.
 */
export function randomResizedCrop(size: Size, opts: RandomResizedCropOptions = {}): Transform {
  const out = pairSize('randomResizedCrop: size', size);
  const scale = opts.scale ?? [0.08, 1];
  const ratio = opts.ratio ?? [3 / 4, 4 / 3];
  const interpolation = opts.interpolation ?? 'bilinear';
  const okRange = (r: unknown, positive: boolean): boolean =>
    Array.isArray(r) &&
    r.length === 2 &&
    r.every((v) => typeof v === 'number' && Number.isFinite(v) && (positive ? v > 0 : v >= 0)) &&
    r[0] <= r[1];
  if (!okRange(scale, false))
    throw new Error(`randomResizedCrop: scale must be [min, max] with 0 <= min <= max, got ${JSON.stringify(scale)}`);
  if (!okRange(ratio, true))
    throw new Error(`randomResizedCrop: ratio must be [min, max] with 0 < min <= max, got ${JSON.stringify(ratio)}`);
  return make('randomResizedCrop', [size, { scale, ratio, interpolation }], (x, rng) => {
    const [h, w] = x.shape.slice(-2);
    const [top, left, ch, cw] = randomResizedCropParams(h, w, scale, ratio, rng);
    return F.resizedCrop(x, top, left, ch, cw, out, interpolation);
  });
}

/** torchvision's RandomResizedCrop.get_params: [top, left, height, width] of the crop. */
export function randomResizedCropParams(
  height: number,
  width: number,
  scale: readonly number[],
  ratio: readonly number[],
  rng: Rng,
): [number, number, number, number] {
  const area = height * width;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * uniform(rng, scale[0], scale[1]);
    const aspect = Math.exp(uniform(rng, logLo, logHi));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return [rng.int(height - h + 1), rng.int(width - w + 1), h, w];
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < ratio[0]) {
    w = width;
    h = roundHalfEven(w / ratio[0]);
  } else if (inRatio > ratio[1]) {
    h = height;
    w = roundHalfEven(h * ratio[1]);
  } else {
    w = width;
    h = height;
  }
  return [Math.floor((height - h) / 2), Math.floor((width - w) / 2), h, w];
}

function probability(what: string, p: number): number {
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new Error(`${what}: p must be in [0, 1], got ${p}`);
  return p;
}

/** Mirrors left-right with probability p (default 0.5). */
export function randomHorizontalFlip(p = 0.5): Transform {
  probability('randomHorizontalFlip', p);
  return make('randomHorizontalFlip', [p], (x, rng) => (rng.next() < p ? F.hflip(x) : x));
}

/** Mirrors top-bottom with probability p (default 0.5). */
export function randomVerticalFlip(p = 0.5): Transform {
  probability('randomVerticalFlip', p);
  return make('randomVerticalFlip', [p], (x, rng) => (rng.next() < p ? F.vflip(x) : x));
}

/**
 * (x - mean[c]) / std[c] per channel (torchvision Normalize), e.g. ImageNet's
 * [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225].
 */
export function normalize(mean: number | number[], std: number | number[]): Transform {
  const m = typeof mean === 'number' ? [mean] : [...mean];
  const s = typeof std === 'number' ? [std] : [...std];
  if (m.length === 0 || s.length === 0 || [...m, ...s].some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    throw new Error(`normalize: mean and std must be finite numbers, got [${m.join(', ')}] and [${s.join(', ')}]`);
  }
  if (s.some((v) => v === 0)) throw new Error(`normalize: std must not be zero, got [${s.join(', ')}]`);
  return make('normalize', [m, s], (x) => F.normalize(x, m, s));
}

export interface ColorJitterOptions {
  /** Brightness factor drawn from [max(0, 1 - b), 1 + b], or from [min, max]. Default 0 (off). */
  brightness?: number | [number, number];
  /** Contrast factor, like brightness. */
  contrast?: number | [number, number];
  /** Saturation factor, like brightness. */
  saturation?: number | [number, number];
  /** Hue shift drawn from [-h, h] (h <= 0.5), or from [min, max] within [-0.5, 0.5]. Default 0. */
  hue?: number | [number, number];
}

function jitterRange(
  what: string,
  v: number | [number, number] | undefined,
  center: number,
  bound: [number, number],
  clipFirst: boolean,
): [number, number] | null {
  if (v === undefined || v === 0) return null;
  let r: [number, number];
  if (typeof v === 'number') {
    if (!(v >= 0) || !Number.isFinite(v))
      throw new Error(`colorJitter: ${what} must be a non-negative number, got ${v}`);
    r = [center - v, center + v];
    if (clipFirst) r[0] = Math.max(r[0], 0);
  } else if (Array.isArray(v) && v.length === 2 && v.every((a) => typeof a === 'number' && Number.isFinite(a))) {
    r = [v[0], v[1]];
  } else {
    throw new Error(`colorJitter: ${what} must be a number or [min, max], got ${JSON.stringify(v)}`);
  }
  if (!(bound[0] <= r[0] && r[0] <= r[1] && r[1] <= bound[1])) {
    throw new Error(`colorJitter: ${what} range [${r.join(', ')}] must be ordered and within [${bound.join(', ')}]`);
  }
  return r[0] === center && r[1] === center ? null : r;
}

/**
 * Random brightness, contrast, saturation and hue changes, applied in a random order
 * (torchvision ColorJitter). For images in [0, 1]: place it before normalize().
 */
export function colorJitter(opts: ColorJitterOptions = {}): Transform {
  const b = jitterRange('brightness', opts.brightness, 1, [0, Infinity], true);
  const c = jitterRange('contrast', opts.contrast, 1, [0, Infinity], true);
  const s = jitterRange('saturation', opts.saturation, 1, [0, Infinity], true);
  const h = jitterRange('hue', opts.hue, 0, [-0.5, 0.5], false);
  const spec = {
    brightness: opts.brightness ?? 0,
    contrast: opts.contrast ?? 0,
    saturation: opts.saturation ?? 0,
    hue: opts.hue ?? 0,
  };
  return make('colorJitter', [spec], (x, rng) => {
    const order = [0, 1, 2, 3];
    for (let i = 3; i > 0; i--) {
      const j = rng.int(i + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
    // Factors are drawn in a fixed order (as torchvision's get_params), then applied in `order`.
    const fb = b && uniform(rng, b[0], b[1]);
    const fc = c && uniform(rng, c[0], c[1]);
    const fs = s && uniform(rng, s[0], s[1]);
    const fh = h && uniform(rng, h[0], h[1]);
    let img = x;
    for (const k of order) {
      if (k === 0 && fb !== null) img = F.adjustBrightness(img, fb);
      else if (k === 1 && fc !== null) img = F.adjustContrast(img, fc);
      else if (k === 2 && fs !== null) img = F.adjustSaturation(img, fs);
      else if (k === 3 && fh !== null) img = F.adjustHue(img, fh);
    }
    return img;
  });
}

/** Converts 3-channel images to grayscale with `numOutputChannels` (1 or 3) channels (torchvision Grayscale). */
export function grayscale(numOutputChannels: 1 | 3 = 1): Transform {
  if (numOutputChannels !== 1 && numOutputChannels !== 3)
    throw new Error(`grayscale: numOutputChannels must be 1 or 3, got ${numOutputChannels}`);
  return make('grayscale', [numOutputChannels], (x) => F.rgbToGrayscale(x, numOutputChannels));
}

const FACTORIES: Record<string, (...args: never[]) => Transform> = {
  resize,
  centerCrop,
  pad,
  randomCrop,
  randomResizedCrop,
  randomHorizontalFlip,
  randomVerticalFlip,
  normalize,
  colorJitter,
  grayscale,
};

/** Rebuilds a transform from its `spec` (what DataLoader workers do). */
export function transformFromSpec(spec: TransformSpec): Transform {
  if (!spec || typeof spec.name !== 'string' || !Array.isArray(spec.args)) {
    throw new Error(`transformFromSpec: expected { name, args }, got ${JSON.stringify(spec)}`);
  }
  if (spec.name === 'compose') return compose((spec.args[0] as TransformSpec[]).map(transformFromSpec));
  const factory = FACTORIES[spec.name];
  if (!factory) throw new Error(`transformFromSpec: unknown transform '${spec.name}'`);
  return (factory as (...args: unknown[]) => Transform)(...spec.args);
}
