// Image operations behind the transforms, with torchvision.transforms.functional's semantics on
// float tensors: images are [C, H, W] (or a batch [N, C, H, W]) float32, colours in [0, 1]
// before normalisation. Each returns a new tensor and never alters its input. Plain loops: these
// run per sample in the loader (or its workers), where they are cheap next to a training step.
import { Tensor } from '../tensor.js';

export type Size = number | readonly number[];
export type PaddingMode = 'constant' | 'edge' | 'reflect' | 'symmetric';
export type Interpolation = 'bilinear' | 'nearest';

interface Dims {
  /** Images in the tensor (1 for [C, H, W]). */
  n: number;
  c: number;
  h: number;
  w: number;
  /** Shape without the last two dimensions. */
  lead: number[];
}

function dims(x: Tensor, what: string): Dims {
  if (!(x instanceof Tensor) || (x.ndim !== 3 && x.ndim !== 4)) {
    const got = x instanceof Tensor ? `[${x.shape.join(', ')}]` : typeof x;
    throw new Error(`${what}: expected an image tensor [C, H, W] or [N, C, H, W], got ${got}`);
  }
  const s = x.shape;
  return x.ndim === 3
    ? { n: 1, c: s[0], h: s[1], w: s[2], lead: [s[0]] }
    : { n: s[0], c: s[1], h: s[2], w: s[3], lead: [s[0], s[1]] };
}

function posInt(what: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${what}: expected a positive integer, got ${v}`);
  return v;
}

function int(what: string, v: number): number {
  if (!Number.isInteger(v)) throw new Error(`${what}: expected an integer, got ${v}`);
  return v;
}

/** A crop size: a number means a square; [h, w] is taken as is. */
export function pairSize(what: string, size: Size): [number, number] {
  if (typeof size === 'number') return [posInt(what, size), posInt(what, size)];
  if (Array.isArray(size) && size.length === 1) return [posInt(what, size[0]), posInt(what, size[0])];
  if (Array.isArray(size) && size.length === 2) return [posInt(`${what}[0]`, size[0]), posInt(`${what}[1]`, size[1])];
  throw new Error(`${what}: expected a positive integer or [height, width], got ${JSON.stringify(size)}`);
}

/** Python's round(): halves go to the even neighbour (torchvision's crop arithmetic uses it). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The region [top, top + height) x [left, left + width) of every channel, as torchvision's
 * F.crop: parts outside the image are zero. Output [..., height, width].
 */
export function crop(x: Tensor, top: number, left: number, height: number, width: number): Tensor {
  const { n, c, h, w, lead } = dims(x, 'crop');
  int('crop: top', top);
  int('crop: left', left);
  posInt('crop: height', height);
  posInt('crop: width', width);
  const planes = n * c;
  const out = new Float32Array(planes * height * width);
  const src = x.data;
  const x0 = Math.max(0, -left);
  const x1 = Math.min(width, w - left);
  for (let p = 0; p < planes; p++) {
    for (let i = 0; i < height; i++) {
      const sy = top + i;
      if (sy < 0 || sy >= h || x1 <= x0) continue;
      const from = p * h * w + sy * w + left;
      out.set(src.subarray(from + x0, from + x1), p * height * width + i * width + x0);
    }
  }
  return new Tensor(out, [...lead, height, width]);
}

/** Mirror left-right. */
export function hflip(x: Tensor): Tensor {
  const { n, c, h, w } = dims(x, 'hflip');
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let r = 0; r < n * c * h; r++) {
    const o = r * w;
    for (let j = 0; j < w; j++) out[o + j] = src[o + w - 1 - j];
  }
  return new Tensor(out, x.shape);
}

/** Mirror top-bottom. */
export function vflip(x: Tensor): Tensor {
  const { n, c, h, w } = dims(x, 'vflip');
  const out = new Float32Array(x.size);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < h; i++) {
      const from = (p * h + h - 1 - i) * w;
      out.set(x.data.subarray(from, from + w), (p * h + i) * w);
    }
  }
  return new Tensor(out, x.shape);
}

/** [left, top, right, bottom] from torchvision's padding forms: p, [left/right, top/bottom], [l, t, r, b]. */
export function paddingLTRB(what: string, padding: number | readonly number[]): [number, number, number, number] {
  const p = typeof padding === 'number' ? [padding] : padding;
  if (!Array.isArray(p) || ![1, 2, 4].includes(p.length) || p.some((v) => !Number.isInteger(v) || v < 0)) {
    throw new Error(
      `${what}: expected a non-negative integer, ` +
        `[left/right, top/bottom] or [left, top, right, bottom], got ${JSON.stringify(padding)}`,
    );
  }
  if (p.length === 1) return [p[0], p[0], p[0], p[0]];
  if (p.length === 2) return [p[0], p[1], p[0], p[1]];
  return [p[0], p[1], p[2], p[3]];
}

function sourceIndex(i: number, n: number, mode: PaddingMode): number {
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case 'edge':
      return i < 0 ? 0 : n - 1;
    case 'reflect': {
      // Mirror about the edge pixels (which are not repeated): period 2(n - 1).
      if (n === 1) return 0;
      const period = 2 * (n - 1);
      const k = ((i % period) + period) % period;
      return k < n ? k : period - k;
    }
    case 'symmetric': {
      // Mirror about the image border (edge pixels repeated): period 2n.
      const period = 2 * n;
      const k = ((i % period) + period) % period;
      return k < n ? k : period - 1 - k;
    }
    default:
      return -1;
  }
}

/**
 * Pads the last two dimensions (torchvision F.pad). `padding`: p, [left/right, top/bottom] or
 * [left, top, right, bottom]. `mode`: 'constant' (with `fill`, default 0), 'edge', 'reflect'
 * (mirror without repeating the edge) or 'symmetric' (mirror repeating it); the mirrored modes
 * keep mirroring when the padding exceeds the image.
 */
export function pad(x: Tensor, padding: number | readonly number[], fill = 0, mode: PaddingMode = 'constant'): Tensor {
  const { n, c, h, w, lead } = dims(x, 'pad');
  const [l, t, r, b] = paddingLTRB('pad: padding', padding);
  if (!['constant', 'edge', 'reflect', 'symmetric'].includes(mode)) {
    throw new Error(`pad: mode must be 'constant', 'edge', 'reflect' or 'symmetric', got ${JSON.stringify(mode)}`);
  }
  if (typeof fill !== 'number' || !Number.isFinite(fill))
    throw new Error(`pad: fill must be a finite number, got ${fill}`);
  const oh = h + t + b;
  const ow = w + l + r;
  const out = new Float32Array(n * c * oh * ow);
  const rows = Array.from({ length: oh }, (_, i) => sourceIndex(i - t, h, mode));
  const cols = Array.from({ length: ow }, (_, j) => sourceIndex(j - l, w, mode));
  const src = x.data;
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < oh; i++) {
      const sy = rows[i];
      const o = (p * oh + i) * ow;
      if (sy < 0) {
        out.fill(fill, o, o + ow);
        continue;
      }
      const s = (p * h + sy) * w;
      // Borders through the column map, the image part of the row as one copy.
      for (let j = 0; j < l; j++) out[o + j] = cols[j] < 0 ? fill : src[s + cols[j]];
      out.set(src.subarray(s, s + w), o + l);
      for (let j = l + w; j < ow; j++) out[o + j] = cols[j] < 0 ? fill : src[s + cols[j]];
    }
  }
  return new Tensor(out, [...lead, oh, ow]);
}

/**
 * The output size of torchvision's Resize: a number (or [n]) sets the shorter side to n and the
 * longer to floor(n * long / short), keeping the aspect ratio; [h, w] is exact.
 */
export function resizeOutputSize(h: number, w: number, size: Size): [number, number] {
  if (typeof size === 'number' || (Array.isArray(size) && size.length === 1)) {
    const s = posInt('resize: size', typeof size === 'number' ? size : size[0]);
    if (w <= h) return [Math.max(1, Math.floor((s * h) / w)), s];
    return [s, Math.max(1, Math.floor((s * w) / h))];
  }
  return pairSize('resize: size', size);
}

interface Taps {
  i0: Int32Array;
  i1: Int32Array;
  w1: Float32Array;
}

// PyTorch's linear interpolation taps (align_corners=False, no antialias): the source coordinate
// of output pixel d is scale * (d + 0.5) - 0.5 clamped at 0, in float32 as torch computes it.
function linearTaps(inSize: number, outSize: number): Taps {
  const scale = Math.fround(inSize / outSize);
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w1 = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    let src = Math.fround(Math.fround(scale * (d + 0.5)) - 0.5);
    if (src < 0) src = 0;
    const f = Math.floor(src);
    i0[d] = Math.min(f, inSize - 1);
    i1[d] = Math.min(f + 1, inSize - 1);
    w1[d] = Math.min(Math.max(Math.fround(src - f), 0), 1);
  }
  return { i0, i1, w1 };
}

// PyTorch's 'nearest' (floor(d * scale), the legacy mode torchvision uses).
function nearestTaps(inSize: number, outSize: number): Int32Array {
  const scale = Math.fround(inSize / outSize);
  const idx = new Int32Array(outSize);
  for (let d = 0; d < outSize; d++) idx[d] = Math.min(Math.floor(Math.fround(d * scale)), inSize - 1);
  return idx;
}

/**
 * Resizes the last two dimensions to `size` (see resizeOutputSize), like torchvision's
 * F.resize(..., antialias=False), i.e. F.interpolate(mode='bilinear', align_corners=False).
 * Without antialiasing, large downscales skip pixels: shrink big images when decoding instead
 * (ImageFolder's `size` option resizes with sharp).
 */
export function resize(x: Tensor, size: Size, interpolation: Interpolation = 'bilinear'): Tensor {
  const { n, c, h, w, lead } = dims(x, 'resize');
  if (h === 0 || w === 0) throw new Error(`resize: cannot resize an empty image [${x.shape.join(', ')}]`);
  const [oh, ow] = resizeOutputSize(h, w, size);
  const out = new Float32Array(n * c * oh * ow);
  const src = x.data;
  if (interpolation === 'nearest') {
    const ry = nearestTaps(h, oh);
    const rx = nearestTaps(w, ow);
    for (let p = 0; p < n * c; p++) {
      for (let i = 0; i < oh; i++) {
        const s = (p * h + ry[i]) * w;
        const o = (p * oh + i) * ow;
        for (let j = 0; j < ow; j++) out[o + j] = src[s + rx[j]];
      }
    }
  } else if (interpolation === 'bilinear') {
    const ty = linearTaps(h, oh);
    const tx = linearTaps(w, ow);
    for (let p = 0; p < n * c; p++) {
      const base = p * h * w;
      for (let i = 0; i < oh; i++) {
        const r0 = base + ty.i0[i] * w;
        const r1 = base + ty.i1[i] * w;
        const b = ty.w1[i];
        const a = 1 - b;
        const o = (p * oh + i) * ow;
        for (let j = 0; j < ow; j++) {
          const x0 = tx.i0[j];
          const x1 = tx.i1[j];
          const d = tx.w1[j];
          const e = 1 - d;
          out[o + j] = a * (e * src[r0 + x0] + d * src[r0 + x1]) + b * (e * src[r1 + x0] + d * src[r1 + x1]);
        }
      }
    }
  } else {
    throw new Error(`resize: interpolation must be 'bilinear' or 'nearest', got ${JSON.stringify(interpolation)}`);
  }
  return new Tensor(out, [...lead, oh, ow]);
}

/** crop() then resize() to `size` (torchvision F.resized_crop). */
export function resizedCrop(
  x: Tensor,
  top: number,
  left: number,
  height: number,
  width: number,
  size: Size,
  interpolation: Interpolation = 'bilinear',
): Tensor {
  return resize(crop(x, top, left, height, width), pairSize('resizedCrop: size', size), interpolation);
}

/**
 * The central height x width region (torchvision F.center_crop): offsets round((H - h) / 2) with
 * Python's rounding; a crop larger than the image pads it with zeros first.
 */
export function centerCrop(x: Tensor, size: Size): Tensor {
  let { h, w } = dims(x, 'centerCrop');
  const [ch, cw] = pairSize('centerCrop: size', size);
  let img = x;
  if (cw > w || ch > h) {
    const l = cw > w ? Math.floor((cw - w) / 2) : 0;
    const t = ch > h ? Math.floor((ch - h) / 2) : 0;
    const r = cw > w ? Math.floor((cw - w + 1) / 2) : 0;
    const b = ch > h ? Math.floor((ch - h + 1) / 2) : 0;
    img = pad(x, [l, t, r, b]);
    ({ h, w } = dims(img, 'centerCrop'));
    if (cw === w && ch === h) return img;
  }
  return crop(img, roundHalfEven((h - ch) / 2), roundHalfEven((w - cw) / 2), ch, cw);
}

function channelValues(what: string, v: number | readonly number[], c: number): number[] {
  const arr = typeof v === 'number' ? [v] : [...v];
  if (arr.length !== 1 && arr.length !== c) {
    throw new Error(`${what}: expected 1 or ${c} values (one per channel), got ${arr.length}`);
  }
  if (arr.some((a) => typeof a !== 'number' || !Number.isFinite(a)))
    throw new Error(`${what}: expected finite numbers, got [${arr.join(', ')}]`);
  return arr.length === 1 ? new Array<number>(c).fill(arr[0]) : arr;
}

/** (x - mean[c]) / std[c] per channel (torchvision F.normalize); one value applies to all channels. */
export function normalize(x: Tensor, mean: number | readonly number[], std: number | readonly number[]): Tensor {
  const { n, c, h, w } = dims(x, 'normalize');
  const m = channelValues('normalize: mean', mean, c).map(Math.fround);
  const s = channelValues('normalize: std', std, c).map(Math.fround);
  if (s.some((v) => v === 0)) throw new Error(`normalize: std must not be zero, got [${s.join(', ')}]`);
  const out = new Float32Array(x.size);
  const src = x.data;
  const plane = h * w;
  for (let k = 0; k < n * c; k++) {
    const mk = m[k % c];
    const sk = s[k % c];
    for (let j = k * plane, end = (k + 1) * plane; j < end; j++) out[j] = Math.fround(src[j] - mk) / sk;
  }
  return new Tensor(out, x.shape);
}

/** Luma 0.2989 R + 0.587 G + 0.114 B of [3, H, W] images -> [1, H, W] (or numOutputChannels copies). */
export function rgbToGrayscale(x: Tensor, numOutputChannels: 1 | 3 = 1): Tensor {
  const { n, c, h, w, lead } = dims(x, 'rgbToGrayscale');
  if (c !== 3) throw new Error(`rgbToGrayscale: expected 3 channels, got ${c}`);
  const plane = h * w;
  const out = new Float32Array(n * numOutputChannels * plane);
  const src = x.data;
  for (let k = 0; k < n; k++) {
    const s = k * 3 * plane;
    const o = k * numOutputChannels * plane;
    for (let j = 0; j < plane; j++) {
      const g = 0.2989 * src[s + j] + 0.587 * src[s + plane + j] + 0.114 * src[s + 2 * plane + j];
      for (let q = 0; q < numOutputChannels; q++) out[o + q * plane + j] = g;
    }
  }
  const shape = lead.length === 2 ? [lead[0], numOutputChannels, h, w] : [numOutputChannels, h, w];
  return new Tensor(out, shape);
}

function checkFactor(what: string, f: number): void {
  if (typeof f !== 'number' || !(f >= 0) || !Number.isFinite(f))
    throw new Error(`${what}: expected a finite non-negative factor, got ${f}`);
}

function checkColour(what: string, c: number): void {
  if (c !== 1 && c !== 3) throw new Error(`${what}: expected 1 or 3 channels, got ${c}`);
}

const clamp01 = (v: number): number => (v < 0 ? 0 : Math.min(v, 1));

/** Multiplies by `factor` and clamps to [0, 1] (0 gives black, 1 the original). */
export function adjustBrightness(x: Tensor, factor: number): Tensor {
  checkFactor('adjustBrightness', factor);
  checkColour('adjustBrightness', dims(x, 'adjustBrightness').c);
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let i = 0; i < out.length; i++) out[i] = clamp01(factor * src[i]);
  return new Tensor(out, x.shape);
}

/**
 * Blends each image with the mean of its grayscale version: factor * x + (1 - factor) * mean,
 * clamped to [0, 1] (0 gives a flat grey image, 1 the original).
 */
export function adjustContrast(x: Tensor, factor: number): Tensor {
  checkFactor('adjustContrast', factor);
  const { n, c, h, w } = dims(x, 'adjustContrast');
  checkColour('adjustContrast', c);
  const size = c * h * w;
  const gray = c === 3 ? rgbToGrayscale(x).data : x.data;
  const plane = h * w;
  const out = new Float32Array(x.size);
  const src = x.data;
  for (let k = 0; k < n; k++) {
    let sum = 0;
    for (let j = k * plane, end = (k + 1) * plane; j < end; j++) sum += Math.fround(gray[j]);
    const mean = Math.fround(sum / plane);
    const offset = (1 - factor) * mean;
    for (let j = k * size, end = (k + 1) * size; j < end; j++) out[j] = clamp01(factor * src[j] + offset);
  }
  return new Tensor(out, x.shape);
}

/**
 * Blends each pixel with its grayscale value (0 gives grayscale, 1 the original); 1-channel images
 * are returned as they are.
 */
export function adjustSaturation(x: Tensor, factor: number): Tensor {
  checkFactor('adjustSaturation', factor);
  const { n, c, h, w } = dims(x, 'adjustSaturation');
  checkColour('adjustSaturation', c);
  if (c === 1) return x.clone();
  const gray = rgbToGrayscale(x).data;
  const plane = h * w;
  const out = new Float32Array(x.size);
  const src = x.data;
  const keep = 1 - factor;
  for (let k = 0; k < n; k++) {
    for (let ch = 0; ch < 3; ch++) {
      const o = (k * 3 + ch) * plane;
      const g = k * plane;
      for (let j = 0; j < plane; j++) out[o + j] = clamp01(factor * src[o + j] + keep * gray[g + j]);
    }
  }
  return new Tensor(out, x.shape);
}

/**
 * Rotates the hue by `factor` turns (in [-0.5, 0.5]) through HSV, as torchvision's adjust_hue on
 * float images; 1-channel images are returned as they are.
 */
export function adjustHue(x: Tensor, factor: number): Tensor {
  if (typeof factor !== 'number' || !(factor >= -0.5 && factor <= 0.5)) {
    throw new Error(`adjustHue: factor must be in [-0.5, 0.5], got ${factor}`);
  }
  const { n, c, h, w } = dims(x, 'adjustHue');
  checkColour('adjustHue', c);
  if (c === 1) return x.clone();
  const plane = h * w;
  const src = x.data;
  const out = new Float32Array(x.size);
  for (let k = 0; k < n; k++) {
    const o = k * 3 * plane;
    for (let j = 0; j < plane; j++) {
      const r = src[o + j];
      const g = src[o + plane + j];
      const b = src[o + 2 * plane + j];
      // RGB -> HSV, following torchvision's _rgb2hsv (itself Pillow's).
      const maxc = Math.max(r, g, b);
      const minc = Math.min(r, g, b);
      const cr = maxc - minc;
      const eq = maxc === minc;
      const s = cr / (eq ? 1 : maxc);
      const div = eq ? 1 : cr;
      const rc = (maxc - r) / div;
      const gc = (maxc - g) / div;
      const bc = (maxc - b) / div;
      let hue: number;
      if (maxc === r) hue = bc - gc;
      else if (maxc === g) hue = 2 + rc - bc;
      else hue = 4 + gc - rc;
      hue = (hue / 6 + 1) % 1;
      hue = (((hue + factor) % 1) + 1) % 1;
      // HSV -> RGB (torchvision's _hsv2rgb).
      const v = maxc;
      const i6 = Math.floor(hue * 6);
      const f = hue * 6 - i6;
      const p = clamp01(v * (1 - s));
      const q = clamp01(v * (1 - s * f));
      const t = clamp01(v * (1 - s * (1 - f)));
      let rr: number, gg: number, bb: number;
      switch (((i6 % 6) + 6) % 6) {
        case 0:
          rr = v;
          gg = t;
          bb = p;
          break;
        case 1:
          rr = q;
          gg = v;
          bb = p;
          break;
        case 2:
          rr = p;
          gg = v;
          bb = t;
          break;
        case 3:
          rr = p;
          gg = q;
          bb = v;
          break;
        case 4:
          rr = t;
          gg = p;
          bb = v;
          break;
        default:
          rr = v;
          gg = p;
          bb = q;
          break;
      }
      out[o + j] = rr;
      out[o + plane + j] = gg;
      out[o + 2 * plane + j] = bb;
    }
  }
  return new Tensor(out, x.shape);
}

/** Layout of raw interleaved pixels, as sharp's `.raw().toBuffer({ resolveWithObject: true })` reports it. */
export interface RawImageInfo {
  width: number;
  height: number;
  channels: number;
}

/**
 * Interleaved 8-bit pixels (H, W, C), e.g. sharp's raw RGB output, to a float32 [C, H, W] tensor
 * in [0, 1] (torchvision's ToTensor).
 */
export function toTensor(raw: Uint8Array, info: RawImageInfo): Tensor {
  const { width, height, channels } = info ?? ({} as RawImageInfo);
  posInt('toTensor: width', width);
  posInt('toTensor: height', height);
  posInt('toTensor: channels', channels);
  if (!(raw instanceof Uint8Array)) throw new Error('toTensor: raw must be a Uint8Array or Buffer');
  const plane = width * height;
  if (raw.length !== plane * channels) {
    throw new Error(`toTensor: ${width}x${height}x${channels} needs ${plane * channels} bytes, got ${raw.length}`);
  }
  const out = new Float32Array(plane * channels);
  for (let ch = 0; ch < channels; ch++) {
    const o = ch * plane;
    for (let j = 0; j < plane; j++) out[o + j] = raw[j * channels + ch] / 255;
  }
  return new Tensor(out, [channels, height, width]);
}
