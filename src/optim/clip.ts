// Gradient clipping, applied between backward() and optimizer.step(): rescale all gradients
// together when their joint norm is too large (torch.nn.utils.clip_grad_norm_), or clamp each
// gradient element (clip_grad_value_). Both change the gradients in place.
import { Tensor } from '../tensor.js';
import { f32 } from './float32.js';

function gradsOf(params: Tensor | Iterable<Tensor>, what: string): Float32Array[] {
  const list = params instanceof Tensor ? [params] : [...params];
  return list
    .map((p, i) => {
      if (!(p instanceof Tensor)) throw new Error(`${what}: params[${i}]: expected a Tensor, got ${typeof p}`);
      return p.grad?.data ?? null;
    })
    .filter((g): g is Float32Array => g !== null);
}

/** The p-norm of `values` (p = Infinity: largest |x|; -Infinity: smallest; 0: count of non-zeros). */
function pNorm(values: ArrayLike<number>, p: number): number {
  let acc = p === -Infinity ? Infinity : 0;
  for (let i = 0; i < values.length; i++) {
    const a = Math.abs(values[i]);
    if (p === Infinity) acc = a > acc || Number.isNaN(a) ? a : acc;
    else if (p === -Infinity) acc = a < acc || Number.isNaN(a) ? a : acc;
    else if (p === 0) acc += a !== 0 ? 1 : 0;
    else if (p === 1) acc += a;
    else if (p === 2) acc += a * a;
    else acc += a ** p;
  }
  if (p === 2) return Math.sqrt(acc);
  if (p === 1 || p === 0 || !Number.isFinite(p)) return acc;
  return acc ** (1 / p);
}

/**
 * Scales the gradients of `params` (those with a grad) by maxNorm / (totalNorm + 1e-6) when that
 * is below 1, where totalNorm is the normType-norm of all gradients as one vector: the norm of
 * the per-tensor norms, each rounded to float32 as in torch. normType may be any p > 0,
 * Infinity (largest |g|), 0 or -Infinity. Returns totalNorm (0 when no parameter has a grad).
 * With errorIfNonfinite, a NaN or infinite total norm throws instead of scaling.
 */
export function clipGradNorm(
  params: Tensor | Iterable<Tensor>,
  maxNorm: number,
  normType = 2,
  opts: { errorIfNonfinite?: boolean } = {},
): number {
  if (typeof maxNorm !== 'number' || !(maxNorm >= 0))
    throw new Error(`clipGradNorm: maxNorm: expected a non-negative number, got ${maxNorm}`);
  if (typeof normType !== 'number' || !(normType >= 0 || normType === -Infinity)) {
    throw new Error(`clipGradNorm: normType: expected a number >= 0, Infinity or -Infinity, got ${normType}`);
  }
  const grads = gradsOf(params, 'clipGradNorm');
  if (grads.length === 0) return 0;
  const perTensor = grads.map((g) => f32(pNorm(g, normType)));
  const total = f32(pNorm(perTensor, normType));
  if (opts.errorIfNonfinite && !Number.isFinite(total)) {
    throw new Error(
      `clipGradNorm: the total norm of order ${normType} of the gradients is ${total}, so they cannot be clipped`,
    );
  }
  // torch: clamp(max_norm / (total + 1e-6), max=1) on float32 tensors, where scalar / tensor is
  // computed as tensor.reciprocal() * scalar.
  const coef = Math.min(f32(f32(1 / f32(total + f32(1e-6))) * f32(maxNorm)), 1);
  if (!(coef === 1)) for (const g of grads) for (let i = 0; i < g.length; i++) g[i] = g[i] * coef;
  return total;
}

/** Clamps every gradient element of `params` to [-clipValue, clipValue] (clip_grad_value_). */
export function clipGradValue(params: Tensor | Iterable<Tensor>, clipValue: number): void {
  if (typeof clipValue !== 'number' || !(clipValue >= 0))
    throw new Error(`clipGradValue: clipValue: expected a non-negative number, got ${clipValue}`);
  const hi = f32(clipValue);
  for (const g of gradsOf(params, 'clipGradValue')) {
    for (let i = 0; i < g.length; i++) {
      const v = g[i];
      if (v > hi) g[i] = hi;
      else if (v < -hi) g[i] = -hi;
    }
  }
}
