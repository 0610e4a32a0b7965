// Differentiable 2-D convolution and transposed convolution over NCHW tensors. The math runs in
// crates/kernels; these functions check ranks, allocate outputs and record the backward.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';
import { add, narrow, reshape, transpose } from './elementwise.js';
import { convArgs, convGeometry, type ConvGeometry, named, pair, type Pair, type Padding } from './geometry.js';
import { pad } from './nd.js';

export type { Pair } from './geometry.js';
export type ConvAlgo = 'auto' | 'direct' | 'im2col' | 'fft' | 'winograd';

export interface Conv2dOptions {
  /** Step between windows (default 1). */
  stride?: Pair;
  /** Zero padding: one number for all sides, [h, w], or [top, bottom, left, right] (default 0). */
  padding?: Padding;
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
  /** Channel groups; in and out channels must both divide by it (default 1). */
  groups?: number;
  /**
   * Algorithm: 'auto' picks per shape (default 'auto'). 'winograd' is F(4x4, 3x3), or F(2x2, 3x3)
   * on 7x7-sized maps at batch 1-3 (fewer than 16 tiles of 4x4): 3x3 kernels at stride 1 and
   * dilation 1 (other shapes, and the weight gradient, run im2col); F(4x4) is about 1e-5 of the
   * largest output less accurate than the others, F(2x2) under 1e-6.
   */
  algo?: ConvAlgo;
}

/** Throws `op: name: ...` unless `t` is a Tensor of `rank` dimensions. */
export function expectRank(op: string, name: string, t: Tensor, rank: number): void {
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name}: expected a Tensor`);
  if (t.ndim !== rank) {
    throw new Error(`${op}: ${name}: expected a ${rank}-D tensor, got shape [${t.shape.join(', ')}]`);
  }
}

/**
 * conv2d(input [N, C_in, H, W], weight [C_out, C_in/groups, kH, kW], bias [C_out]?)
 * -> [N, C_out, H_out, W_out], as torch.nn.functional.conv2d.
 */
export function conv2d(input: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  return conv2dWith(
    input,
    weight,
    bias,
    named('conv2d', () => convGeometry(opts)),
    opts.algo,
  );
}

/** conv2d with options already normalised (a Conv2d layer checks its own once, when built). */
export function conv2dWith(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  geometry: ConvGeometry,
  algo: ConvAlgo = 'auto',
): Tensor {
  expectRank('conv2d', 'input', input, 4);
  expectRank('conv2d', 'weight', weight, 4);
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`conv2d: bias: expected shape [${weight.shape[0]}], got [${bias.shape.join(', ')}]`);
  }
  const args = convArgs(input.shape, weight.shape, geometry, algo);
  const [oh, ow] = native.conv2dOutputSize(args);
  const out = uninitialized(input.shape[0] * weight.shape[0] * oh * ow, 'conv2d');
  native.conv2dForward(input.data, weight.data, bias ? bias.data : null, out, args);
  const y = new Tensor(out, [input.shape[0], weight.shape[0], oh, ow]);
  return record('conv2d', y, [input, weight, bias], (g) => {
    let gx: Float32Array | null = null;
    let gw: Float32Array | null = null;
    let gb: Float32Array | null = null;
    if (input.requiresGrad) {
      gx = uninitialized(input.size, 'conv2d');
      native.conv2dBackwardData(g, weight.data, gx, args);
    }
    if (weight.requiresGrad || bias?.requiresGrad) {
      gw = uninitialized(weight.size, 'conv2d');
      gb = bias ? uninitialized(bias.size, 'conv2d') : null;
      native.conv2dBackwardWeight(input.data, g, gw, gb, args);
    }
    return [gx, gw, gb];
  });
}

/**
 * The algorithms conv2d runs for this input shape, weight shape and geometry, per pass:
 * [forward, backward data, backward weight] ('auto' resolved as the kernels resolve it).
 */
export function conv2dAlgorithms(
  inputShape: number[],
  weightShape: number[],
  geometry: ConvGeometry,
  algo: ConvAlgo = 'auto',
): [string, string, string] {
  const a = native.conv2dAlgorithms(convArgs(inputShape, weightShape, geometry, algo));
  return [a[0], a[1], a[2]];
}

/** Per-element work fused into an inference conv (see conv2dFused). */
export interface ConvEpilogue {
  /** Per-output-channel multiplier [C_out], e.g. a folded batch norm's weight / sqrt(var + eps). */
  scale?: Tensor | null;
  /** Per-output-channel addend [C_out]: the bias, or a folded batch norm's shift. */
  shift?: Tensor | null;
  /** Added after scale and shift: a tensor of the output's shape (a residual shortcut). */
  residual?: Tensor | null;
  /** Apply ReLU last (default false). */
  relu?: boolean;
}

/**
 * Inference conv2d with a fused epilogue: per output channel oc,
 * relu?(conv2d(input, weight)[:, oc] * scale[oc] + shift[oc] + residual[:, oc]), computed in the
 * conv's own pass over its output (no intermediate tensors). input [N, C_in, H, W], weight
 * [C_out, C_in/groups, kH, kW] -> [N, C_out, H_out, W_out]. It records no backward, so it throws
 * when a gradient would be needed (use conv2d and the separate ops for training).
 */
export function conv2dFused(
  input: Tensor,
  weight: Tensor,
  epilogue: ConvEpilogue = {},
  opts: Conv2dOptions = {},
): Tensor {
  expectRank('conv2dFused', 'input', input, 4);
  expectRank('conv2dFused', 'weight', weight, 4);
  const { scale = null, shift = null, residual = null, relu = false } = epilogue;
  if (needsGrad(input, weight, scale, shift, residual)) {
    throw new Error('conv2dFused: records no gradient; call it under noGrad() or on tensors that do not require grad');
  }
  const oc = weight.shape[0];
  for (const [name, t] of [
    ['scale', scale],
    ['shift', shift],
  ] as const) {
    if (t !== null && (t.ndim !== 1 || t.shape[0] !== oc)) {
      throw new Error(`conv2dFused: ${name}: expected shape [${oc}], got [${t.shape.join(', ')}]`);
    }
  }
  const args = convArgs(
    input.shape,
    weight.shape,
    named('conv2dFused', () => convGeometry(opts)),
    opts.algo,
  );
  const [oh, ow] = native.conv2dOutputSize(args);
  const shape = [input.shape[0], oc, oh, ow];
  if (residual !== null && residual.shape.join() !== shape.join()) {
    throw new Error(`conv2dFused: residual: expected shape [${shape.join(', ')}], got [${residual.shape.join(', ')}]`);
  }
  const out = uninitialized(input.shape[0] * oc * oh * ow, 'conv2dFused');
  native.conv2dForwardFused(
    input.data,
    weight.data,
    scale?.data ?? null,
    shift?.data ?? null,
    residual?.data ?? null,
    relu,
    out,
    args,
  );
  return new Tensor(out, shape);
}

export interface ConvTranspose2dOptions {
  stride?: Pair;
  /** Implicit zero padding removed from each side of the output, [h, w] (default 0). */
  padding?: Pair;
  /** Extra rows/columns added to one side of the output to disambiguate its size (default 0). */
  outputPadding?: Pair;
  dilation?: Pair;
  groups?: number;
}

/**
 * convTranspose2d(input [N, C_in, H, W], weight [C_in, C_out/groups, kH, kW], bias [C_out]?)
 * -> [N, C_out, H_out, W_out], as torch.nn.functional.conv_transpose2d.
 */
export function convTranspose2d(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null = null,
  opts: ConvTranspose2dOptions = {},
): Tensor {
  expectRank('convTranspose2d', 'input', input, 4);
  expectRank('convTranspose2d', 'weight', weight, 4);
  const groups = opts.groups ?? 1;
  const outChannels = weight.shape[1] * groups;
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== outChannels)) {
    throw new Error(`convTranspose2d: bias: expected shape [${outChannels}], got [${bias.shape.join(', ')}]`);
  }
  const args = {
    inputShape: input.shape,
    weightShape: weight.shape,
    stride: pair('convTranspose2d: stride', opts.stride, 1),
    padding: pair('convTranspose2d: padding', opts.padding, 0, 0),
    outputPadding: pair('convTranspose2d: outputPadding', opts.outputPadding, 0, 0),
    dilation: pair('convTranspose2d: dilation', opts.dilation, 1),
    groups,
  };
  const [oh, ow] = native.convTranspose2dOutputSize(args);
  const out = uninitialized(input.shape[0] * outChannels * oh * ow, 'convTranspose2d');
  native.convTranspose2dForward(input.data, weight.data, bias ? bias.data : null, out, args);
  const y = new Tensor(out, [input.shape[0], outChannels, oh, ow]);
  return record('convTranspose2d', y, [input, weight, bias], (g) => {
    let gx: Float32Array | null = null;
    let gw: Float32Array | null = null;
    let gb: Float32Array | null = null;
    if (input.requiresGrad) {
      gx = uninitialized(input.size, 'convTranspose2d');
      native.convTranspose2dBackwardData(g, weight.data, gx, args);
    }
    if (weight.requiresGrad || bias?.requiresGrad) {
      gw = uninitialized(weight.size, 'convTranspose2d');
      gb = bias ? uninitialized(bias.size, 'convTranspose2d') : null;
      native.convTranspose2dBackwardWeight(input.data, g, gw, gb, args);
    }
    return [gx, gw, gb];
  });
}

/** convTransposeNd options: per spatial axis, as ONNX's ConvTranspose. */
export interface ConvTransposeNdOptions {
  stride?: readonly number[];
  /** Output cropped before each spatial axis (default 0). */
  padsBegin?: readonly number[];
  /** Output cropped after each spatial axis (default: padsBegin). */
  padsEnd?: readonly number[];
  /** Extra outputs after each spatial axis (default 0). */
  outputPadding?: readonly number[];
  dilation?: readonly number[];
  groups?: number;
}

/**
 * Transposed convolution over 1, 2 or 3 spatial axes (input [N, C_in, ...], weight
 * [C_in, C_out/groups, ...k], bias [C_out]?) with ONNX's options, padding allowed to differ per
 * side. Symmetric 2-D padding runs convTranspose2d directly and 1-D runs it with a height of 1.
 * Otherwise the full output (no padding) is computed and then cropped and extended by `pad`; a
 * 3-D one is built from 2-D ones, one per depth tap, each placed at its depth offset and summed.
 */
export function convTransposeNd(
  input: Tensor,
  weight: Tensor,
  bias: Tensor | null = null,
  o: ConvTransposeNdOptions = {},
): Tensor {
  const r = weight.ndim - 2;
  if (r < 1 || r > 3 || input.ndim !== r + 2) {
    throw new Error(
      `convTransposeNd: expected an input and weight of equal rank 3 to 5, got [${input.shape}] and [${weight.shape}]`,
    );
  }
  const per = (v: readonly number[] | undefined, dflt: number, name: string) => {
    const out = v ?? weight.shape.slice(2).map(() => dflt);
    if (out.length !== r) throw new Error(`convTransposeNd: ${name} needs ${r} values, got ${out.length}`);
    return out;
  };
  const stride = per(o.stride, 1, 'stride');
  const dilation = per(o.dilation, 1, 'dilation');
  const pb = per(o.padsBegin, 0, 'padsBegin');
  const pe = per(o.padsEnd, 0, 'padsEnd').map((p, i) => (o.padsEnd ? p : pb[i]));
  const op = per(o.outputPadding, 0, 'outputPadding');
  const groups = o.groups ?? 1;
  if (r === 1) {
    const [n, c, len] = input.shape;
    const y = convTransposeNd(
      reshape(input, [n, c, 1, len]),
      reshape(weight, [...weight.shape.slice(0, 2), 1, weight.shape[2]]),
      bias,
      {
        stride: [1, stride[0]],
        padsBegin: [0, pb[0]],
        padsEnd: [0, pe[0]],
        outputPadding: [0, op[0]],
        dilation: [1, dilation[0]],
        groups,
      },
    );
    return reshape(y, [n, y.shape[1], y.shape[3]]);
  }
  // torch's convTranspose2d: symmetric padding and output padding below the stride or dilation.
  const opOk = op.every((p, i) => p < Math.max(stride[i], dilation[i]));
  if (r === 2 && opOk && pb.every((p, i) => p === pe[i] && p >= 0)) {
    return convTranspose2d(input, weight, bias, {
      stride: [stride[0], stride[1]],
      padding: [pb[0], pb[1]],
      outputPadding: [op[0], op[1]],
      dilation: [dilation[0], dilation[1]],
      groups,
    });
  }
  let full: Tensor;
  if (r === 2) {
    full = convTranspose2d(input, weight, null, {
      stride: [stride[0], stride[1]],
      dilation: [dilation[0], dilation[1]],
      groups,
    });
  } else {
    const [n, ci, d, h, w] = input.shape;
    const [, cog, kd, kh, kw] = weight.shape;
    const [sd, dd] = [stride[0], dilation[0]];
    const slices = reshape(transpose(input, [0, 2, 1, 3, 4]), [n * d, ci, h, w]);
    const depth = (d - 1) * sd + (kd - 1) * dd + 1;
    let acc: Tensor | null = null;
    let plane: number[] = [];
    for (let k = 0; k < kd; k++) {
      const wk = reshape(narrow(weight, 2, k, 1), [ci, cog, kh, kw]);
      const z = convTranspose2d(slices, wk, null, {
        stride: [stride[1], stride[2]],
        dilation: [dilation[1], dilation[2]],
        groups,
      });
      plane = z.shape.slice(1);
      const rest = plane.reduce((a, b) => a * b, 1);
      // Input depth i lands at output depth i * sd + k * dd: spread by the stride, then shifted.
      let t = reshape(z, [n, d, 1, rest]);
      if (sd > 1) t = pad(t, [0, 0, 0, 0], [0, 0, sd - 1, 0]);
      t = pad(reshape(t, [n, d * sd, rest]), [0, k * dd, 0], [0, depth - k * dd - d * sd, 0]);
      acc = acc ? add(acc, t) : t;
    }
    if (!acc) throw new Error('convTransposeNd: the kernel has no depth');
    full = transpose(reshape(acc, [n, depth, ...plane]), [0, 2, 1, 3, 4]);
  }
  const y = pad(full, [0, 0, ...pb.map((p) => -p)], [0, 0, ...pe.map((p, i) => op[i] - p)]);
  return bias ? add(y, reshape(bias, [1, bias.size, ...pb.map(() => 1)])) : y;
}
