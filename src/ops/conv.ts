// Differentiable 2-D convolution and transposed convolution over NCHW tensors. The math runs in
// crates/kernels; these functions check ranks, allocate outputs and record the backward.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';
import { convArgs, convGeometry, type ConvGeometry, named, pair, type Pair, type Padding } from './geometry.js';

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
   * Algorithm: 'auto' picks per shape (default 'auto'). 'winograd' is F(4x4, 3x3): 3x3 kernels at
   * stride 1 and dilation 1 (other shapes, and the weight gradient, run im2col); about 1e-5 of the
   * largest output less accurate than the others.
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
