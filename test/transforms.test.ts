// Transforms and the image functions behind them: exact values on tiny tensors, torchvision
// goldens (test/fixtures/gen_transforms.py), seeded randomness and argument errors.
// Imports only src/data and src/tensor (not src/index.ts), so it runs without the native addon.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { functional as F, toTensor, transforms as T } from '../src/data/index.js';
import { Rng } from '../src/random.js';
import { Tensor } from '../src/tensor.js';

interface FT {
  shape: number[];
  data: number[];
}
// biome-ignore lint/suspicious/noExplicitAny: an untyped fixture of many shapes, read field by field below
const golden: any = JSON.parse(readFileSync(new URL('./fixtures/transforms.json', import.meta.url), 'utf8'));

/** golden.det(shape, seed) mapped to [0, 1] as gen_transforms.py's img() (float32 steps). */
function img(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // biome-ignore lint/suspicious/noApproximativeNumericConstant: golden.py's det() uses 0.7071, not Math.SQRT1_2
    const v = Math.fround(Math.sin(i * 0.7071 + seed * 1.618) * 0.9 + Math.cos(i * 0.1234 + seed) * 0.1);
    out[i] = Math.fround(Math.fround(v + 1) / 2);
  }
  return new Tensor(out, shape);
}

function t(values: number[], shape: number[]): Tensor {
  return new Tensor(Float32Array.from(values), shape);
}

/** |a - b| <= atol + rtol |b| everywhere, and equal shapes. */
function expectTensor(actual: Tensor, expected: FT, rtol = 1e-5, atol = 1e-6): void {
  expect(actual.shape).toEqual(expected.shape);
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.data[i];
    const b = Math.fround(expected.data[i]); // the fixture holds float32 values to 9 digits
    if (!(Math.abs(a - b) <= atol + rtol * Math.abs(b))) {
      throw new Error(`element ${i}: got ${a}, expected ${b} (shape [${expected.shape.join(', ')}])`);
    }
  }
}

const arr = (x: Tensor): number[] => Array.from(x.data);

describe('geometric ops (exact values)', () => {
  const x = t([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);

  it('hflip and vflip mirror every channel', () => {
    expect(arr(F.hflip(x))).toEqual([3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
    expect(arr(F.vflip(x))).toEqual([4, 5, 6, 1, 2, 3, 10, 11, 12, 7, 8, 9]);
    expect(F.hflip(x).shape).toEqual([2, 2, 3]);
    expect(arr(x)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // input untouched
  });

  it('crop takes a window and fills outside the image with zeros', () => {
    expect(arr(F.crop(x, 0, 1, 2, 2))).toEqual([2, 3, 5, 6, 8, 9, 11, 12]);
    const c = F.crop(x, -1, 2, 2, 3);
    expect(c.shape).toEqual([2, 2, 3]);
    expect(arr(c)).toEqual([0, 0, 0, 3, 0, 0, 0, 0, 0, 9, 0, 0]);
  });

  it('pad in the four modes', () => {
    const r = t([1, 2, 3], [1, 1, 3]);
    expect(arr(F.pad(r, [2, 0, 2, 0], 7))).toEqual([7, 7, 1, 2, 3, 7, 7]);
    expect(arr(F.pad(r, [2, 0, 2, 0], 0, 'edge'))).toEqual([1, 1, 1, 2, 3, 3, 3]);
    expect(arr(F.pad(r, [2, 0, 2, 0], 0, 'reflect'))).toEqual([3, 2, 1, 2, 3, 2, 1]);
    expect(arr(F.pad(r, [2, 0, 2, 0], 0, 'symmetric'))).toEqual([2, 1, 1, 2, 3, 3, 2]);
    // Two-number form: [left/right, top/bottom].
    const p = F.pad(t([5], [1, 1, 1]), [1, 2]);
    expect(p.shape).toEqual([1, 5, 3]);
    expect(p.sum()).toBe(5);
    expect(p.data[2 * 3 + 1]).toBe(5);
  });

  it('batched [N, C, H, W] input works the same as per image', () => {
    const b = t([...arr(x), ...arr(x).map((v) => -v)], [2, 2, 2, 3]);
    const f = F.hflip(b);
    expect(f.shape).toEqual([2, 2, 2, 3]);
    expect(arr(f).slice(0, 12)).toEqual(arr(F.hflip(x)));
  });

  it('normalize subtracts and divides per channel, as torch in float32', () => {
    const y = F.normalize(t([0, 0.5, 1, 0.25], [2, 1, 2]), [0.5, 0.25], [0.5, 0.25]);
    expect(arr(y)).toEqual([-1, 0, 3, 0]);
    const m = F.normalize(t([1, 1], [2, 1, 1]), 0.5, 2);
    expect(arr(m)).toEqual([0.25, 0.25]);
  });

  it('toTensor turns interleaved HWC bytes into CHW floats in [0, 1]', () => {
    const raw = Uint8Array.from([255, 0, 51, 0, 255, 102]); // 2 pixels RGB
    const y = toTensor(raw, { width: 2, height: 1, channels: 3 });
    expect(y.shape).toEqual([3, 1, 2]);
    expect(arr(y)).toEqual([1, 0, 0, 1, 0.2, 0.4].map(Math.fround));
    expect(() => toTensor(raw, { width: 2, height: 2, channels: 3 })).toThrow(/2x2x3 needs 12 bytes, got 6/);
  });

  it('rejects what is not an image and bad arguments', () => {
    expect(() => F.hflip(t([1, 2], [2]))).toThrow(/expected an image tensor \[C, H, W\] or \[N, C, H, W\], got \[2\]/);
    expect(() => F.crop(x, 0, 0, 0, 2)).toThrow(/crop: height: expected a positive integer, got 0/);
    expect(() => F.pad(x, [1, 2, 3])).toThrow(/pad: padding: expected a non-negative integer/);
    expect(() => F.pad(x, 1, 0, 'wrap' as never)).toThrow(/mode must be 'constant', 'edge', 'reflect' or 'symmetric'/);
    expect(() => F.normalize(x, [0.5, 0.5, 0.5], 1)).toThrow(/mean: expected 1 or 2 values/);
    expect(() => F.normalize(x, 0, 0)).toThrow(/std must not be zero/);
    expect(() => F.resize(x, [0, 3])).toThrow(/size\[0\]: expected a positive integer, got 0/);
    expect(() => F.adjustHue(img([3, 2, 2], 1), 0.7)).toThrow(/factor must be in \[-0.5, 0.5\], got 0.7/);
    expect(() => F.adjustBrightness(img([2, 2, 2], 1), 1)).toThrow(/expected 1 or 3 channels, got 2/);
  });
});

describe('torchvision goldens', () => {
  it('resize 2x2 -> 4x4 is torchvision bilinear with antialias=False', () => {
    const c = golden.resize_2x2_to_4x4;
    const y = F.resize(new Tensor(Float32Array.from(c.input.data), c.input.shape), c.size);
    expectTensor(y, c.output);
    // The same numbers, written out: interior taps at 1/4 and 3/4, edges clamped.
    expect(arr(y)).toEqual([1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4]);
  });

  for (const c of golden.resize) {
    it(`resize ${c.name} [${c.shape}] -> ${JSON.stringify(c.size)} (${c.mode})`, () => {
      expectTensor(F.resize(img(c.shape, c.seed), c.size, c.mode), c.output);
      expectTensor(T.resize(c.size, { interpolation: c.mode })(img(c.shape, c.seed)), c.output);
    });
  }

  for (const c of golden.center_crop) {
    it(`centerCrop [${c.shape}] -> [${c.size}]`, () => {
      expectTensor(F.centerCrop(img(c.shape, c.seed), c.size), c.output, 0, 0);
    });
  }

  for (const c of golden.pad) {
    it(`pad ${c.mode}`, () => {
      expectTensor(F.pad(img(c.shape, c.seed), c.padding, c.fill, c.mode), c.output, 0, 0);
    });
  }

  it('resizedCrop', () => {
    const c = golden.resized_crop;
    const [top, left, h, w] = c.box;
    expectTensor(F.resizedCrop(img(c.shape, c.seed), top, left, h, w, c.size), c.output);
  });

  it('colour adjustments, grayscale and normalize', () => {
    const c = golden.color;
    const x = img(c.shape, c.seed);
    expectTensor(F.adjustBrightness(x, 1.3), c['brightness_1.3']);
    expectTensor(F.adjustContrast(x, 0.6), c['contrast_0.6']);
    expectTensor(F.adjustContrast(x, 1.7), c['contrast_1.7']);
    expectTensor(F.adjustSaturation(x, 0.3), c['saturation_0.3']);
    expectTensor(F.adjustSaturation(x, 1.8), c['saturation_1.8']);
    expectTensor(F.adjustHue(x, 0.2), c['hue_0.2']);
    expectTensor(F.adjustHue(x, -0.45), c['hue_-0.45']);
    expectTensor(F.rgbToGrayscale(x), c.grayscale);
    expectTensor(T.normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(x), c.normalize);
    const g = golden.contrast_gray;
    expectTensor(F.adjustContrast(img(g.shape, g.seed), 0.5), g.output);
  });
});

describe('random transforms', () => {
  const x = img([3, 6, 8], 21);

  it('randomHorizontalFlip: p = 1 always flips, p = 0 never, p = 0.5 depends only on the rng', () => {
    expect(arr(T.randomHorizontalFlip(1)(x, new Rng(1)))).toEqual(arr(F.hflip(x)));
    expect(arr(T.randomHorizontalFlip(0)(x, new Rng(1)))).toEqual(arr(x));
    let flips = 0;
    for (let s = 0; s < 200; s++) {
      const a = T.randomHorizontalFlip()(x, new Rng(s));
      const b = T.randomHorizontalFlip()(x, new Rng(s));
      expect(arr(a)).toEqual(arr(b));
      if (a.data[0] !== x.data[0]) flips++;
    }
    expect(flips).toBeGreaterThan(70);
    expect(flips).toBeLessThan(130);
  });

  it('randomCrop with padding picks a window of the zero-padded image', () => {
    const small = t([1, 2, 3, 4], [1, 2, 2]);
    const crop = T.randomCrop({ size: 2, padding: 1 });
    const padded = F.pad(small, 1);
    const seen = new Set<string>();
    for (let s = 0; s < 100; s++) {
      const y = crop(small, new Rng(s));
      expect(y.shape).toEqual([1, 2, 2]);
      // It must be one of the 9 windows of the 4x4 padded image.
      const windows = [];
      for (let i = 0; i <= 2; i++) for (let j = 0; j <= 2; j++) windows.push(arr(F.crop(padded, i, j, 2, 2)).join(','));
      expect(windows).toContain(arr(y).join(','));
      seen.add(arr(y).join(','));
    }
    expect(seen.size).toBe(9);
  });

  it('randomCrop: padIfNeeded, too-large crops and the identity case', () => {
    const small = t([1, 2, 3, 4], [1, 2, 2]);
    expect(() => T.randomCrop({ size: 3 })(small, new Rng(0))).toThrow(
      /crop size \[3, 3\] is larger than the \(padded\) image \[2, 2\]/,
    );
    const y = T.randomCrop({ size: [3, 4], padIfNeeded: true })(small, new Rng(0));
    expect(y.shape).toEqual([1, 3, 4]);
    expect(arr(T.randomCrop({ size: 2 })(small, new Rng(5)))).toEqual([1, 2, 3, 4]);
  });

  it('randomResizedCrop keeps to the scale and ratio ranges and falls back to a centre crop', () => {
    for (let s = 0; s < 200; s++) {
      const [top, left, h, w] = T.randomResizedCropParams(60, 80, [0.08, 1], [3 / 4, 4 / 3], new Rng(s));
      expect(top).toBeGreaterThanOrEqual(0);
      expect(left).toBeGreaterThanOrEqual(0);
      expect(top + h).toBeLessThanOrEqual(60);
      expect(left + w).toBeLessThanOrEqual(80);
      // Rounding of the sides loosens the ranges slightly.
      expect((h * w) / 4800).toBeGreaterThan(0.07);
      expect(w / h).toBeGreaterThan(0.7);
      expect(w / h).toBeLessThan(1.4);
    }
    // No crop of twice the image's area fits: torchvision's fallback is the central crop at the
    // nearest allowed ratio (80/60 = 1.33 > 1.2 -> width = round(60 * 1.2) = 72).
    expect(T.randomResizedCropParams(60, 80, [2, 3], [1, 1.2], new Rng(1))).toEqual([0, 4, 60, 72]);
    const y = T.randomResizedCrop([5, 7])(x, new Rng(3));
    expect(y.shape).toEqual([3, 5, 7]);
  });

  it('colorJitter: repeatable per rng, identity when all ranges are empty, stays in [0, 1]', () => {
    const j = T.colorJitter({ brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1 });
    const a = j(x, new Rng(7));
    expect(arr(j(x, new Rng(7)))).toEqual(arr(a));
    expect(arr(j(x, new Rng(8)))).not.toEqual(arr(a));
    expect(Math.min(...a.data)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a.data)).toBeLessThanOrEqual(1);
    expect(arr(T.colorJitter()(x, new Rng(7)))).toEqual(arr(x));
    // Brightness alone with a fixed range [f, f] is adjustBrightness(f).
    expect(arr(T.colorJitter({ brightness: [1.2, 1.2] })(x, new Rng(0)))).toEqual(arr(F.adjustBrightness(x, 1.2)));
    expect(() => T.colorJitter({ hue: 0.6 })).toThrow(
      /hue range \[-0.6, 0.6\] must be ordered and within \[-0.5, 0.5\]/,
    );
    expect(() => T.colorJitter({ brightness: -1 })).toThrow(/brightness must be a non-negative number, got -1/);
  });

  it('compose applies in order with one rng stream, and specs rebuild identical transforms', () => {
    const pipeline = T.compose([
      T.randomResizedCrop(4, { scale: [0.3, 1] }),
      T.randomHorizontalFlip(),
      T.colorJitter({ brightness: 0.2, contrast: 0.2, saturation: 0.2, hue: 0.05 }),
      T.normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
    ]);
    const y = pipeline(x, new Rng(11));
    expect(y.shape).toEqual([3, 4, 4]);
    expect(pipeline.spec?.name).toBe('compose');
    const rebuilt = T.transformFromSpec(JSON.parse(JSON.stringify(pipeline.spec)));
    expect(arr(rebuilt(x, new Rng(11)))).toEqual(arr(y));
    const flipThenCrop = T.compose([T.randomHorizontalFlip(1), T.centerCrop([6, 2])]);
    expect(arr(flipThenCrop(x))).toEqual(arr(F.centerCrop(F.hflip(x), [6, 2])));
    // A custom function composes fine but makes the whole pipeline unserialisable.
    expect(T.compose([T.randomHorizontalFlip(), (im: Tensor) => im]).spec).toBeUndefined();
    expect(() => T.transformFromSpec({ name: 'warp', args: [] })).toThrow(/unknown transform 'warp'/);
  });

  it('rejects bad transform arguments when built', () => {
    expect(() => T.randomHorizontalFlip(2)).toThrow(/p must be in \[0, 1\], got 2/);
    expect(() => T.randomCrop({ size: -3 })).toThrow(/randomCrop: size: expected a positive integer, got -3/);
    expect(() => T.randomResizedCrop(4, { scale: [0.5, 0.1] })).toThrow(
      /scale must be \[min, max\] with 0 <= min <= max/,
    );
    expect(() => T.normalize([0.5], [0])).toThrow(/std must not be zero/);
    expect(() => T.resize(8, { interpolation: 'bicubic' as never })).toThrow(
      /interpolation must be 'bilinear' or 'nearest'/,
    );
    expect(() => T.compose([1 as never])).toThrow(/expected an array of transforms/);
  });
});
