// Differentiable pooling over NCHW tensors (max, average, adaptive average).
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized, uninitializedInt32 } from '../tensor.js';
import { expectRank } from './conv.js';
import { reshape } from './elementwise.js';
import { named, pair, type Pair, type PoolGeometry, poolGeometry } from './geometry.js';
import { binaryNd, pad } from './nd.js';

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

/** maxPoolNd / avgPoolNd options: per spatial axis, as ONNX's MaxPool and AveragePool. */
export interface PoolNdOptions {
  /** Window step per axis (default: the kernel). */
  stride?: readonly number[];
  /** Padding before each spatial axis (default 0). */
  padsBegin?: readonly number[];
  /** Padding after each spatial axis (default: padsBegin). */
  padsEnd?: readonly number[];
  /** Spacing between window taps (max pool only; default 1). */
  dilation?: readonly number[];
  ceilMode?: boolean;
  /** Average pool: count padded zeros in the divisor (default false, ONNX's default). */
  countIncludePad?: boolean;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/**
 * Windows with no padding over the 2 or 3 spatial axes of x: 'max', 'avg' (clipped windows
 * divided by what they cover) or 'sum'. A 3-D window is separable: the (H, W) window over every
 * depth slice, then the depth window over the results, each a 2-D pool.
 */
function windows(
  kind: 'max' | 'avg' | 'sum',
  x: Tensor,
  kernel: readonly number[],
  stride: readonly number[],
  dilation: readonly number[],
  ceilMode: boolean,
): Tensor {
  const pool2d = (t: Tensor, k: Pair, s: Pair, d: Pair) =>
    kind === 'max'
      ? maxPool2d(t, k, { stride: s, dilation: d, ceilMode })
      : avgPool2d(t, k, { stride: s, ceilMode, divisorOverride: kind === 'sum' ? 1 : undefined });
  if (kernel.length === 2) {
    return pool2d(x, [kernel[0], kernel[1]], [stride[0], stride[1]], [dilation[0], dilation[1]]);
  }
  const [n, c, d, h, w] = x.shape;
  const hw = pool2d(
    reshape(x, [n, c * d, h, w]),
    [kernel[1], kernel[2]],
    [stride[1], stride[2]],
    [dilation[1], dilation[2]],
  );
  const [oh, ow] = hw.shape.slice(2);
  const depth = pool2d(reshape(hw, [n * c, 1, d, oh * ow]), [kernel[0], 1], [stride[0], 1], [dilation[0], 1]);
  return reshape(depth, [n, c, depth.shape[2], oh, ow]);
}

/**
 * Max or average pooling over 1, 2 or 3 spatial axes (x is [N, C, ...spatial]) with ONNX's
 * options: any padding per side (asymmetric, or more than half the window), dilation (max),
 * ceil mode, count_include_pad. Symmetric 2-D padding of at most half the window runs the 2-D
 * kernels directly; 1-D runs them with a height of 1; other padding is made explicit (-inf for
 * max, zeros for average) and the windows run unpadded, with average's divisor counted over the
 * real elements when count_include_pad is off.
 */
export function poolNd(kind: 'max' | 'avg', x: Tensor, kernel: readonly number[], o: PoolNdOptions = {}): Tensor {
  const r = kernel.length;
  const op = kind === 'max' ? 'maxPoolNd' : 'avgPoolNd';
  if (r < 1 || r > 3 || x.ndim !== r + 2) {
    throw new Error(`${op}: a ${r}-D window needs a ${r + 2}-D input, got [${x.shape.join(', ')}]`);
  }
  const per = (v: readonly number[] | undefined, dflt: readonly number[], name: string) => {
    const out = v ?? dflt;
    if (out.length !== r) throw new Error(`${op}: ${name} needs ${r} values, got ${out.length}`);
    return out;
  };
  const zeros = kernel.map(() => 0);
  const stride = per(o.stride, kernel, 'stride');
  const dilation = per(
    o.dilation,
    kernel.map(() => 1),
    'dilation',
  );
  const pb = per(o.padsBegin, zeros, 'padsBegin');
  const pe = per(o.padsEnd, pb, 'padsEnd');
  const ceilMode = o.ceilMode ?? false;
  const cip = o.countIncludePad ?? false;
  if (kind === 'avg' && dilation.some((d) => d !== 1)) throw new Error(`${op}: average pooling has no dilation`);
  if (r === 1) {
    const [n, c, len] = x.shape;
    const y = poolNd(kind, reshape(x, [n, c, 1, len]), [1, kernel[0]], {
      stride: [1, stride[0]],
      padsBegin: [0, pb[0]],
      padsEnd: [0, pe[0]],
      dilation: [1, dilation[0]],
      ceilMode,
      countIncludePad: cip,
    });
    return reshape(y, [n, c, y.shape[3]]);
  }
  if (r === 2 && pb.every((p, i) => p === pe[i] && p <= Math.floor(kernel[i] / 2))) {
    const k: Pair = [kernel[0], kernel[1]];
    const common = { stride: [stride[0], stride[1]] as Pair, padding: [pb[0], pb[1]] as Pair, ceilMode };
    return kind === 'max'
      ? maxPool2d(x, k, { ...common, dilation: [dilation[0], dilation[1]] })
      : avgPool2d(x, k, { ...common, countIncludePad: cip });
  }
  const padded = pb.some((p) => p !== 0) || pe.some((p) => p !== 0);
  const spatialPad = (t: Tensor, value: number) =>
    padded ? pad(t, [0, 0, ...pb], [0, 0, ...pe], 'constant', value) : t;
  if (kind === 'max') return windows('max', spatialPad(x, -Infinity), kernel, stride, dilation, ceilMode);
  if (!padded || cip) return windows('avg', spatialPad(x, 0), kernel, stride, dilation, ceilMode);
  // Window sums over the zero-padded input, divided by the real elements each window covers
  // (the same sums over ones).
  const sums = windows('sum', spatialPad(x, 0), kernel, stride, dilation, ceilMode);
  const spatial = x.shape.slice(2);
  const ones = uninitialized(numel(spatial), op);
  native.fill(ones, 1);
  const counts = windows(
    'sum',
    spatialPad(new Tensor(ones, [1, 1, ...spatial]), 0),
    kernel,
    stride,
    dilation,
    ceilMode,
  );
  return binaryNd('div', sums, counts);
}

/**
 * maxPool2d that also returns each output's argmax as a flat index into its own [H, W] plane (as
 * torch's return_indices), e.g. for ONNX MaxPool's Indices output.
 */
export function maxPool2dWithIndices(x: Tensor, kernelSize: Pair, opts: Pool2dOptions = {}): [Tensor, Int32Array] {
  expectRank('maxPool2d', 'input', x, 4);
  const args = poolArgs(
    x,
    named('maxPool2d', () => poolGeometry(kernelSize, opts)),
    {},
  );
  const [oh, ow] = native.pool2dOutputSize(args);
  const n = x.shape[0] * x.shape[1] * oh * ow;
  const out = uninitialized(n, 'maxPool2d');
  const indices = uninitializedInt32(n, 'maxPool2d');
  native.maxPool2dForward(x.data, out, indices, args);
  const y = record('maxPool2d', new Tensor(out, [x.shape[0], x.shape[1], oh, ow]), [x], (g) => {
    const gx = uninitialized(x.size, 'maxPool2d');
    native.maxPool2dBackward(g, indices, gx, args);
    return [gx];
  });
  return [y, indices];
}
