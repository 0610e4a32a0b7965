// Resizing feature maps, as torch.nn.functional.interpolate on [N, C, H, W]: bilinear (with or
// without align_corners) and nearest. Both are linear maps along each axis, so the resize is two
// matrix products with small interpolation matrices, y = A_h x A_w^T, through the batched matmul:
// exact torch semantics (each output is the same two-tap blend, W first then H, as torch's
// upsample_bilinear2d) and differentiable for free. The matrices are made in JavaScript, which a
// compiled plan cannot replay: a model that resizes predicts eagerly (a resize kernel would fix
// that).
import { allocate, Tensor, uninitialized } from '../tensor.js';
import { matmul } from './nd.js';

export type InterpolateMode = 'bilinear' | 'nearest';

export interface InterpolateOptions {
  /** Default 'bilinear'. */
  mode?: InterpolateMode;
  /** Bilinear only: map the corner pixels' centres onto each other (default false, as torch). */
  alignCorners?: boolean;
}

/** The [outSize, inSize] matrix that resamples one axis as torch does. */
export function interpolationMatrix(
  inSize: number,
  outSize: number,
  mode: InterpolateMode,
  alignCorners: boolean,
): Float32Array {
  const m = allocate(outSize * inSize, 'interpolate'); // zeros but two taps per row
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    if (mode === 'nearest') {
      m[o * inSize + Math.min(Math.floor(o * Math.fround(scale)), inSize - 1)] = 1;
      continue;
    }
    let src: number;
    if (alignCorners) src = outSize > 1 ? (o * (inSize - 1)) / (outSize - 1) : 0;
    else src = Math.max(0, Math.fround(scale) * (o + 0.5) - 0.5);
    src = Math.fround(src);
    const i0 = Math.min(Math.floor(src), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    const l1 = Math.fround(src - i0);
    const l0 = Math.fround(1 - l1);
    m[o * inSize + i0] += l0;
    m[o * inSize + i1] += l1;
  }
  return m;
}

/**
 * x [N, C, H, W] resized to `size` ([outH, outW]) as F.interpolate(x, size, mode, align_corners).
 */
export function interpolate(x: Tensor, size: readonly [number, number], opts: InterpolateOptions = {}): Tensor {
  if (x.ndim !== 4) throw new Error(`interpolate: expected [N, C, H, W], got [${x.shape.join(', ')}]`);
  const mode = opts.mode ?? 'bilinear';
  if (mode !== 'bilinear' && mode !== 'nearest') {
    throw new Error(`interpolate: mode must be 'bilinear' or 'nearest', got ${JSON.stringify(mode)}`);
  }
  const [outH, outW] = size;
  for (const v of [outH, outW]) {
    if (!Number.isSafeInteger(v) || v < 1)
      throw new Error(`interpolate: size must be positive integers, got [${size}]`);
  }
  const [, , h, w] = x.shape;
  if (h === 0 || w === 0) throw new Error(`interpolate: cannot resize an empty map [${x.shape.join(', ')}]`);
  const alignCorners = mode === 'bilinear' && (opts.alignCorners ?? false);
  let y = x;
  if (outW !== w || mode === 'nearest') {
    const aw = interpolationMatrix(w, outW, mode, alignCorners);
    const awT = uninitialized(w * outW, 'interpolate');
    for (let o = 0; o < outW; o++) for (let i = 0; i < w; i++) awT[i * outW + o] = aw[o * w + i];
    y = matmul(y, new Tensor(awT, [w, outW]));
  }
  if (outH !== h || mode === 'nearest') {
    y = matmul(new Tensor(interpolationMatrix(h, outH, mode, alignCorners), [outH, h]), y);
  }
  return y;
}
