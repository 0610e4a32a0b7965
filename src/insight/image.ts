// Images in and out for the look-inside tools: a file decoded to a [1, 3, H, W] tensor in [0, 1]
// (sharp, as ImageFolder decodes), a tensor written as PNG, a heat-map colour scale, and a grid
// of labelled tiles (apps/draw.ts). sharp is loaded on first use.
import { drawGrid, loadSharp, type Tile } from '../apps/draw.js';
import { decodeImage } from '../data/image-folder.js';
import { describe } from '../describe.js';
import { Tensor } from '../tensor.js';

/** An image file as [1, 3, H, W] in [0, 1]; `size` resizes (shorter side, or exact [h, w]). */
export async function readImage(path: string, size: number | [number, number] | null = null): Promise<Tensor> {
  const t = await decodeImage(path, size);
  return new Tensor(t.data, [1, ...t.shape]);
}

/** The planes of an image tensor [1, C, H, W], [C, H, W] or [H, W] (C = 1 or 3). */
export function imagePlanes(
  t: Tensor,
  who: string,
): { data: Float32Array; channels: 1 | 3; height: number; width: number } {
  if (!(t instanceof Tensor) || t.ndim < 2 || t.ndim > 4 || (t.ndim === 4 && t.shape[0] !== 1)) {
    throw new Error(
      `${who}: expected an image [1, C, H, W], [C, H, W] or [H, W], got ${
        t instanceof Tensor ? `[${t.shape.join(', ')}]` : describe(t)
      }`,
    );
  }
  const [c, h, w] = t.ndim === 2 ? [1, ...t.shape] : t.shape.slice(-3);
  if (c !== 1 && c !== 3) throw new Error(`${who}: expected 1 or 3 channels, got ${c}`);
  return { data: t.data, channels: c as 1 | 3, height: h, width: w };
}

/** Writes an image tensor (values clamped to [0, 1]) as a PNG file. */
export async function writeImage(path: string, image: Tensor): Promise<void> {
  const { data, channels, height, width } = imagePlanes(image, 'writeImage');
  const plane = height * width;
  const bytes = Buffer.alloc(plane * channels);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < channels; c++) {
      const v = data[c * plane + i];
      bytes[i * channels + c] = Math.round(Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * 255);
    }
  }
  await loadSharp()(bytes, { raw: { width, height, channels } }).png().toFile(path);
}

/** A heat colour (black-red-yellow-white, as the 'hot' colour map) for v in [0, 1]. */
export function heatColor(v: number): [number, number, number] {
  const t = Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * 3;
  return [Math.min(1, t), Math.min(1, Math.max(0, t - 1)), Math.min(1, Math.max(0, t - 2))];
}

/** Values rescaled to [0, 1] by their minimum and maximum (all 0 when they are all equal). */
export function normalize(v: ArrayLike<number>): Float32Array {
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) continue;
    lo = Math.min(lo, v[i]);
    hi = Math.max(hi, v[i]);
  }
  const out = new Float32Array(v.length);
  if (!(hi > lo)) return out;
  for (let i = 0; i < v.length; i++) out[i] = Number.isFinite(v[i]) ? (v[i] - lo) / (hi - lo) : 0;
  return out;
}

/** A tile for drawGrid from an image tensor, with a caption. */
export function imageTile(image: Tensor, caption?: string): Tile {
  const { data, channels, height, width } = imagePlanes(image, 'imageTile');
  return { image: data, width, height, channels, overlay: caption ? { caption } : undefined };
}

export { drawGrid, type Tile };
