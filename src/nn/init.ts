// Weight initialisers with PyTorch's formulas (torch.nn.init), drawing from ferroconv's seedable
// generator. Each fills the tensor in place and returns it.
import { globalRng, type Rng } from '../random.js';
import { type Tensor, writableData } from '../tensor.js';

export type Nonlinearity = 'linear' | 'conv2d' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu';

/** fan_in and fan_out of a weight shaped [out, in, ...kernel]. */
export function fans(t: Tensor): { fanIn: number; fanOut: number } {
  if (t.ndim < 2) throw new Error(`fans: need at least 2 dimensions, got [${t.shape.join(', ')}]`);
  const receptive = t.shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: t.shape[1] * receptive, fanOut: t.shape[0] * receptive };
}

export function calculateGain(nonlinearity: Nonlinearity, param = 0.01): number {
  switch (nonlinearity) {
    case 'linear':
    case 'conv2d':
    case 'sigmoid':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leaky_relu':
      return Math.sqrt(2 / (1 + param * param));
  }
}

export function uniform_(t: Tensor, low = 0, high = 1, rng: Rng = globalRng): Tensor {
  const d = writableData(t);
  for (let i = 0; i < t.size; i++) d[i] = low + (high - low) * rng.next();
  return t;
}

export function normal_(t: Tensor, mean = 0, std = 1, rng: Rng = globalRng): Tensor {
  const d = writableData(t);
  for (let i = 0; i < t.size; i++) d[i] = mean + std * rng.normal();
  return t;
}

export function constant_(t: Tensor, value: number): Tensor {
  writableData(t).fill(value);
  return t;
}

export const zeros_ = (t: Tensor): Tensor => constant_(t, 0);
export const ones_ = (t: Tensor): Tensor => constant_(t, 1);

export interface KaimingOptions {
  /** Negative slope for leaky_relu (PyTorch's `a`, default 0). */
  a?: number;
  mode?: 'fan_in' | 'fan_out';
  nonlinearity?: Nonlinearity;
  rng?: Rng;
}

function kaimingStd(t: Tensor, o: KaimingOptions): number {
  const { fanIn, fanOut } = fans(t);
  const fan = (o.mode ?? 'fan_in') === 'fan_in' ? fanIn : fanOut;
  return calculateGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan);
}

export function kaimingUniform_(t: Tensor, o: KaimingOptions = {}): Tensor {
  const bound = Math.sqrt(3) * kaimingStd(t, o);
  return uniform_(t, -bound, bound, o.rng);
}

export function kaimingNormal_(t: Tensor, o: KaimingOptions = {}): Tensor {
  return normal_(t, 0, kaimingStd(t, o), o.rng);
}

export function xavierUniform_(t: Tensor, gain = 1, rng: Rng = globalRng): Tensor {
  const { fanIn, fanOut } = fans(t);
  const a = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -a, a, rng);
}

export function xavierNormal_(t: Tensor, gain = 1, rng: Rng = globalRng): Tensor {
  const { fanIn, fanOut } = fans(t);
  return normal_(t, 0, gain * Math.sqrt(2 / (fanIn + fanOut)), rng);
}

/** Normal truncated to [a, b] (resampling), as torch.nn.init.trunc_normal_. */
export function truncNormal_(t: Tensor, mean = 0, std = 1, a = -2, b = 2, rng: Rng = globalRng): Tensor {
  const d = writableData(t);
  for (let i = 0; i < t.size; i++) {
    let v: number;
    do v = mean + std * rng.normal();
    while (v < a || v > b);
    d[i] = v;
  }
  return t;
}

/**
 * PyTorch's default for Conv*d and Linear: kaiming_uniform_(w, a=sqrt(5)) and a bias uniform in
 * +-1/sqrt(fan_in).
 */
export function defaultLayerInit(weight: Tensor, bias: Tensor | null, rng: Rng = globalRng): void {
  kaimingUniform_(weight, { a: Math.sqrt(5), rng });
  if (bias) {
    const { fanIn } = fans(weight);
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform_(bias, -bound, bound, rng);
  }
}
