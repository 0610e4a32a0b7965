// Convolution as an image kernel, where CNNs start: the classic hand-made kernels (identity, edge
// detection, sharpen, box and Gaussian blur, unsharp masking, an on-centre/off-surround
// difference of Gaussians) applied to images by ferroconv's own conv2d, one channel at a time
// (a depthwise convolution: groups = channels). Note that conv2d, like every CNN layer, computes
// a cross-correlation; the kernels here are symmetric, so it is also their convolution.
import { describe } from '../describe.js';
import { conv2d } from '../ops/conv.js';
import { reshape } from '../ops/elementwise.js';
import { pad, type PadMode } from '../ops/nd.js';
import { fromArray, Tensor } from '../tensor.js';

/** A kernel as rows of weights (odd height and width, so the output stays centred). */
export type KernelRows = readonly (readonly number[])[];

const scaled = (rows: number[][], s: number): number[][] => rows.map((r) => r.map((v) => v * s));

/** The named kernels of `filter` (the usual image-processing set, normalised as usually given). */
export const KERNELS = {
  identity: [
    [0, 0, 0],
    [0, 1, 0],
    [0, 0, 0],
  ],
  /** Ridge/edge detection, three strengths (diagonal, 4-neighbour Laplacian, 8-neighbour). */
  edge1: [
    [1, 0, -1],
    [0, 0, 0],
    [-1, 0, 1],
  ],
  edge2: [
    [0, -1, 0],
    [-1, 4, -1],
    [0, -1, 0],
  ],
  edge3: [
    [-1, -1, -1],
    [-1, 8, -1],
    [-1, -1, -1],
  ],
  'sobel-x': [
    [-1, 0, 1],
    [-2, 0, 2],
    [-1, 0, 1],
  ],
  'sobel-y': [
    [-1, -2, -1],
    [0, 0, 0],
    [1, 2, 1],
  ],
  sharpen: [
    [0, -1, 0],
    [-1, 5, -1],
    [0, -1, 0],
  ],
  'box-blur': scaled(
    [
      [1, 1, 1],
      [1, 1, 1],
      [1, 1, 1],
    ],
    1 / 9,
  ),
  'gaussian-blur': scaled(
    [
      [1, 2, 1],
      [2, 4, 2],
      [1, 2, 1],
    ],
    1 / 16,
  ),
  'gaussian-blur-5': scaled(
    [
      [1, 4, 6, 4, 1],
      [4, 16, 24, 16, 4],
      [6, 24, 36, 24, 6],
      [4, 16, 24, 16, 4],
      [1, 4, 6, 4, 1],
    ],
    1 / 256,
  ),
  /** Unsharp masking: the image plus (image - its 5x5 Gaussian blur). */
  unsharp: scaled(
    [
      [1, 4, 6, 4, 1],
      [4, 16, 24, 16, 4],
      [6, 24, -476, 24, 6],
      [4, 16, 24, 16, 4],
      [1, 4, 6, 4, 1],
    ],
    -1 / 256,
  ),
  /** On-centre/off-surround, as a retinal ganglion cell: see differenceOfGaussians. */
  dog: differenceOfGaussians(),
} satisfies Record<string, KernelRows>;

export type KernelName = keyof typeof KERNELS;

/** The names `filter` accepts. */
export const kernelNames = (): KernelName[] => Object.keys(KERNELS) as KernelName[];

/**
 * A size x size difference of Gaussians, centre(sigmaCentre) - surround(sigmaSurround), each
 * normalised to sum 1: positive in the middle, negative around it, summing to 0 (a flat region
 * gives 0, a bright spot on a dark ground a strong response), the receptive field of an
 * on-centre retinal cell.
 */
export function differenceOfGaussians(size = 9, sigmaCentre = 1, sigmaSurround = 2): number[][] {
  if (!Number.isInteger(size) || size < 3 || size % 2 === 0) {
    throw new Error(`differenceOfGaussians: size must be an odd integer >= 3, got ${describe(size)}`);
  }
  if (!(sigmaCentre > 0 && sigmaSurround > sigmaCentre)) {
    throw new Error(
      `differenceOfGaussians: expected 0 < sigmaCentre < sigmaSurround, got ${describe(sigmaCentre)}, ` +
        describe(sigmaSurround),
    );
  }
  const gauss = (sigma: number) => {
    const r = (size - 1) / 2;
    const g: number[][] = [];
    let sum = 0;
    for (let y = -r; y <= r; y++) {
      const row: number[] = [];
      for (let x = -r; x <= r; x++) {
        const v = Math.exp(-(x * x + y * y) / (2 * sigma * sigma));
        row.push(v);
        sum += v;
      }
      g.push(row);
    }
    return g.map((row) => row.map((v) => v / sum));
  };
  const c = gauss(sigmaCentre);
  const s = gauss(sigmaSurround);
  return c.map((row, y) => row.map((v, x) => v - s[y][x]));
}

export interface FilterOptions {
  /**
   * How the border is extended so the output keeps the input's size: 'edge' repeats the border
   * pixels (default: a blur does not darken the edges), 'reflect' mirrors, 'constant' pads zeros.
   */
  border?: Exclude<PadMode, 'wrap'>;
}

function kernelRows(kernel: KernelName | KernelRows | Tensor): KernelRows {
  if (typeof kernel === 'string') {
    const rows = (KERNELS as Record<string, KernelRows>)[kernel];
    if (!rows) {
      throw new Error(`filter: unknown kernel ${describe(kernel)} (expected one of ${kernelNames().join(', ')})`);
    }
    return rows;
  }
  if (kernel instanceof Tensor) {
    if (kernel.ndim !== 2) throw new Error(`filter: a kernel tensor must be 2-D, got [${kernel.shape.join(', ')}]`);
    const [h, w] = kernel.shape;
    return Array.from({ length: h }, (_, y) => Array.from(kernel.data.subarray(y * w, (y + 1) * w)));
  }
  if (!Array.isArray(kernel) || kernel.length === 0 || !kernel.every((r) => Array.isArray(r))) {
    throw new Error(`filter: expected a kernel name, rows of numbers or a 2-D tensor, got ${describe(kernel)}`);
  }
  const w = kernel[0].length;
  if (w === 0 || kernel.some((r) => r.length !== w || !r.every((v) => typeof v === 'number' && Number.isFinite(v)))) {
    throw new Error('filter: kernel rows must be non-empty, of equal length, and hold finite numbers');
  }
  return kernel;
}

/**
 * `image` convolved with `kernel` (a name from KERNELS, rows of numbers, or a 2-D tensor), each
 * channel on its own, through ferroconv's conv2d. The output has the input's shape ([N, C, H, W],
 * [C, H, W] or [H, W]); values are not clamped (an edge detector gives negative ones). Odd kernel
 * sizes keep the output centred on the input.
 */
export function filter(image: Tensor, kernel: KernelName | KernelRows | Tensor, opts: FilterOptions = {}): Tensor {
  if (!(image instanceof Tensor) || image.ndim < 2 || image.ndim > 4) {
    throw new Error(
      `filter: expected an image tensor [N, C, H, W], [C, H, W] or [H, W], got ${
        image instanceof Tensor ? `[${image.shape.join(', ')}]` : describe(image)
      }`,
    );
  }
  const rows = kernelRows(kernel);
  const kh = rows.length;
  const kw = rows[0].length;
  if (kh % 2 === 0 || kw % 2 === 0) throw new Error(`filter: kernel sizes must be odd, got ${kh}x${kw}`);
  const border = opts.border ?? 'edge';
  if (!['edge', 'reflect', 'constant'].includes(border)) {
    throw new Error(`filter: border must be 'edge', 'reflect' or 'constant', got ${describe(border)}`);
  }
  const shape4 = image.ndim === 4 ? image.shape : image.ndim === 3 ? [1, ...image.shape] : [1, 1, ...image.shape];
  const [n, c, h, w] = shape4;
  if (border === 'reflect' && (h <= (kh - 1) / 2 || w <= (kw - 1) / 2)) {
    throw new Error(`filter: a ${h}x${w} image is too small to reflect for a ${kh}x${kw} kernel`);
  }
  const x = reshape(image, shape4);
  const ph = (kh - 1) / 2;
  const pw = (kw - 1) / 2;
  const padded = pad(x, [0, 0, ph, pw], [0, 0, ph, pw], border);
  const weights = fromArray(Array.from({ length: c }, () => rows.flat()).flat(), [c, 1, kh, kw]);
  const y = conv2d(padded, weights, null, { groups: c });
  return reshape(y, image.shape.length === 4 ? [n, c, h, w] : image.shape);
}

/** The kernel's weights sum to about 0 (an edge or difference detector): its output is signed. */
export function isZeroSum(kernel: KernelName | KernelRows | Tensor): boolean {
  return (
    Math.abs(
      kernelRows(kernel)
        .flat()
        .reduce((a, b) => a + b, 0),
    ) < 1e-6
  );
}

/**
 * For display: a filtered image mapped into [0, 1] as image tools show it. A signed output (from
 * a zero-sum kernel) around mid-grey (0.5 + v), any other as is (the writer clamps).
 */
export function forDisplay(filtered: Tensor, signed: boolean): Tensor {
  if (!signed) return filtered;
  return new Tensor(
    Float32Array.from(filtered.data, (v) => 0.5 + v),
    filtered.shape,
  );
}
