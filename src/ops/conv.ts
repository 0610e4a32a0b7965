// Functional 2-D convolution over NCHW tensors; the math runs in crates/kernels.
import { native } from '../native.js';
import { Tensor } from '../tensor.js';

export type Pair = number | readonly [number, number];

export interface Conv2dOptions {
  /** Step between windows (default 1). */
  stride?: Pair;
  /** Zero padding: one number for all sides, [h, w], or [top, bottom, left, right] (default 0). */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  /** Spacing between kernel taps (default 1). */
  dilation?: Pair;
  /** Channel groups; in and out channels must both divide by it (default 1). */
  groups?: number;
  /** Algorithm: 'auto' picks per shape (default 'auto'). */
  algo?: 'auto' | 'direct' | 'im2col' | 'fft';
}

export function pair(name: string, v: Pair | undefined, dflt: number): [number, number] {
  if (v === undefined) return [dflt, dflt];
  if (typeof v === 'number') return [v, v];
  if (!Array.isArray(v) || v.length !== 2) throw new Error(`${name}: expected a number or [h, w], got ${JSON.stringify(v)}`);
  return [v[0], v[1]];
}

export function padding4(v: Conv2dOptions['padding']): [number, number, number, number] {
  if (v === undefined) return [0, 0, 0, 0];
  if (typeof v === 'number') return [v, v, v, v];
  if (Array.isArray(v) && v.length === 2) return [v[0], v[0], v[1], v[1]];
  if (Array.isArray(v) && v.length === 4) return [v[0], v[1], v[2], v[3]];
  throw new Error(`padding: expected a number, [h, w] or [top, bottom, left, right], got ${JSON.stringify(v)}`);
}

function expect4d(name: string, t: Tensor): void {
  if (!(t instanceof Tensor)) throw new Error(`${name}: expected a Tensor`);
  if (t.ndim !== 4) throw new Error(`${name}: expected a 4-D tensor, got shape [${t.shape.join(', ')}]`);
}

/**
 * conv2d(input [N, C_in, H, W], weight [C_out, C_in/groups, kH, kW], bias [C_out]?)
 * -> [N, C_out, H_out, W_out], as torch.nn.functional.conv2d.
 */
export function conv2d(input: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  expect4d('input', input);
  expect4d('weight', weight);
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`bias: expected shape [${weight.shape[0]}], got [${bias.shape.join(', ')}]`);
  }
  const args = {
    inputShape: input.shape,
    weightShape: weight.shape,
    stride: pair('stride', opts.stride, 1),
    padding: padding4(opts.padding),
    dilation: pair('dilation', opts.dilation, 1),
    groups: opts.groups ?? 1,
    algo: opts.algo ?? 'auto',
  };
  const [oh, ow] = native.conv2dOutputSize(args);
  const out = new Float32Array(input.shape[0] * weight.shape[0] * oh * ow);
  native.conv2dForward(input.data, weight.data, bias ? bias.data : null, out, args);
  return new Tensor(out, [input.shape[0], weight.shape[0], oh, ow]);
}
