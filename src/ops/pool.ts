// Differentiable pooling over NCHW tensors (max, average, adaptive average).
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized, uninitializedInt32 } from '../tensor.js';
import { expectRank } from './conv.js';
import { named, pair, type Pair, type PoolGeometry, poolGeometry } from './geometry.js';

export interface Pool2dOptions {
  /** Window step (default: the kernel size, as PyTorch). */
  stride?: Pair;
  /** Implicit padding on each side, [h, w] (default 0; at most half the kernel). */
  padding?: Pair;
  /** Spacing between window taps, max pool only (default 1). */
  dilation?: Pair;
  /** Round the output size up instead of down (default false). */
  ceilMode?: boolean;
  /** Average pool: count padded zeros in the divisor (default true). */
  countIncludePad?: boolean;
  /** Average pool: fixed divisor instead of the window size. */
  divisorOverride?: number;
}

function poolArgs(x: Tensor, g: PoolGeometry, o: Pool2dOptions) {
  return { inputShape: x.shape, ...g, countIncludePad: o.countIncludePad ?? true, divisorOverride: o.divisorOverride };
}

/** maxPool2d(x [N, C, H, W], kernelSize) -> [N, C, H_out, W_out], as torch's max_pool2d. */
export function maxPool2d(x: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): Tensor {
  return maxPool2dWith(
    x,
    named('maxPool2d', () => poolGeometry(kernelSize, opts)),
  );
}

/** maxPool2d with options already normalised (a MaxPool2d layer checks its own when built). */
export function maxPool2dWith(x: Tensor, geometry: PoolGeometry): Tensor {
  expectRank('maxPool2d', 'input', x, 4);
  const args = poolArgs(x, geometry, {});
  const [oh, ow] = native.pool2dOutputSize(args);
  const n = x.shape[0] * x.shape[1] * oh * ow;
  const out = uninitialized(n, 'maxPool2d');
  const y = new Tensor(out, [x.shape[0], x.shape[1], oh, ow]);
  // The argmax indices are only for the backward: inference skips their write traffic.
  if (!needsGrad(x)) {
    native.maxPool2dForwardNoIndices(x.data, out, args);
    return y;
  }
  const indices = uninitializedInt32(n, 'maxPool2d');
  native.maxPool2dForward(x.data, out, indices, args);
  return record('maxPool2d', y, [x], (g) => {
    const gx = uninitialized(x.size, 'maxPool2d');
    native.maxPool2dBackward(g, indices, gx, args);
    return [gx];
  });
}

/** avgPool2d(x [N, C, H, W], kernelSize) -> [N, C, H_out, W_out], as torch's avg_pool2d. */
export function avgPool2d(x: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): Tensor {
  return avgPool2dWith(
    x,
    named('avgPool2d', () => poolGeometry(kernelSize, opts)),
    opts,
  );
}

/** avgPool2d with the window already normalised (an AvgPool2d layer checks it when built). */
export function avgPool2dWith(
  x: Tensor,
  geometry: PoolGeometry,
  opts: Pick<Pool2dOptions, 'countIncludePad' | 'divisorOverride'> = {},
): Tensor {
  expectRank('avgPool2d', 'input', x, 4);
  const args = poolArgs(x, geometry, opts);
  const [oh, ow] = native.pool2dOutputSize(args);
  const out = uninitialized(x.shape[0] * x.shape[1] * oh * ow, 'avgPool2d');
  native.avgPool2dForward(x.data, out, args);
  const y = new Tensor(out, [x.shape[0], x.shape[1], oh, ow]);
  return record('avgPool2d', y, [x], (g) => {
    const gx = uninitialized(x.size, 'avgPool2d');
    native.avgPool2dBackward(g, gx, args);
    return [gx];
  });
}

/** adaptiveAvgPool2d(x [N, C, H, W], [oh, ow]) -> [N, C, oh, ow], as torch's adaptive_avg_pool2d. */
export function adaptiveAvgPool2d(x: Tensor, outputSize: Pair): Tensor {
  expectRank('adaptiveAvgPool2d', 'input', x, 4);
  const args = { inputShape: x.shape, outputSize: pair('adaptiveAvgPool2d: outputSize', outputSize, 1) };
  const [oh, ow] = args.outputSize;
  const out = uninitialized(x.shape[0] * x.shape[1] * oh * ow, 'adaptiveAvgPool2d');
  native.adaptiveAvgPool2dForward(x.data, out, args);
  const y = new Tensor(out, [x.shape[0], x.shape[1], oh, ow]);
  return record('adaptiveAvgPool2d', y, [x], (g) => {
    const gx = uninitialized(x.size, 'adaptiveAvgPool2d');
    native.adaptiveAvgPool2dBackward(g, gx, args);
    return [gx];
  });
}
