// Differentiable tensor plumbing: broadcast add/mul, channel concat, reshape/flatten, dropout and
// full reductions.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { globalRng, type Rng } from '../random.js';
import { Tensor, uninitialized } from '../tensor.js';

function binary(op: 'add' | 'mul', a: Tensor, b: Tensor): Tensor {
  const out = uninitialized(a.size, op);
  native.broadcastBinary(op, a.data, a.shape, b.data, b.shape, out);
  const y = new Tensor(out, a.shape);
  const sameShape = a.size === b.size && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
  return record(op, y, [a, b], (g) => {
    // d(a + b)/da = d(a + b)/db = 1: hand the gradient through (autograd never writes into it).
    if (op === 'add' && sameShape) return [a.requiresGrad ? g : null, b.requiresGrad ? g : null];
    const ga = a.requiresGrad ? uninitialized(a.size, op) : null;
    const gb = b.requiresGrad ? uninitialized(b.size, op) : null;
    native.broadcastBinaryBackward(op, a.data, a.shape, b.data, b.shape, g, ga, gb);
    return [ga, gb];
  });
}

/**
 * a + b, where b has a's shape or broadcasts over it (NumPy rules: [1, C, 1, 1] or [N, C, 1, 1] per
 * channel of NCHW; [C] matches the last dim, e.g. a bias of [N, C]).
 */
export const add = (a: Tensor, b: Tensor): Tensor => binary('add', a, b);
/** a * b, with the same broadcasting as add. */
export const mul = (a: Tensor, b: Tensor): Tensor => binary('mul', a, b);

/** a * s for a number s (each product rounded once to float32). */
export function scale(a: Tensor, s: number): Tensor {
  const out = uninitialized(a.size, 'scale');
  native.scale(a.data, s, out);
  return record('scale', new Tensor(out, a.shape), [a], (g) => {
    const ga = uninitialized(g.length, 'scale');
    native.scale(g, s, ga);
    return [ga];
  });
}

/** Concatenates NCHW tensors along dim 1 (channels); N, H, W must match. */
export function cat(tensors: Tensor[], dim = 1): Tensor {
  if (dim !== 1) throw new Error(`cat: only dim 1 (channels) is supported, got ${dim}`);
  if (tensors.length === 0) throw new Error('cat: expected at least one tensor');
  const [n, , h, w] = tensors[0].shape;
  for (const [i, t] of tensors.entries()) {
    if (t.ndim !== 4 || t.shape[0] !== n || t.shape[2] !== h || t.shape[3] !== w) {
      throw new Error(`cat: tensor ${i} has shape [${t.shape.join(', ')}], expected [${n}, *, ${h}, ${w}]`);
    }
  }
  const channels = tensors.map((t) => t.shape[1]);
  const total = channels.reduce((a, b) => a + b, 0);
  const out = uninitialized(n * total * h * w, 'cat');
  native.concatChannels(
    tensors.map((t) => t.data),
    channels,
    n,
    h * w,
    out,
  );
  const y = new Tensor(out, [n, total, h, w]);
  return record('cat', y, tensors, (g) => {
    const parts = tensors.map((t) => uninitialized(t.size, 'cat'));
    native.splitChannels(g, parts, channels, n, h * w);
    return parts;
  });
}

/**
 * relu?(cat(tensors, 1) * scale[c] + shift[c]) per output channel c, in one pass: a concat plus a
 * folded eval-mode batch norm (DenseNet's pre-activation in inference). scale and shift are
 * [sum of channels]. Records no gradient, so it throws when one would be needed.
 */
export function catAffine(tensors: Tensor[], scale: Tensor, shift: Tensor, relu = false): Tensor {
  if (tensors.length === 0) throw new Error('catAffine: expected at least one tensor');
  if (needsGrad(...tensors, scale, shift))
    throw new Error('catAffine: records no gradient; use cat and batchNorm2d when training');
  const [n, , h, w] = tensors[0].shape;
  for (const [i, t] of tensors.entries()) {
    if (t.ndim !== 4 || t.shape[0] !== n || t.shape[2] !== h || t.shape[3] !== w) {
      throw new Error(`catAffine: tensor ${i} has shape [${t.shape.join(', ')}], expected [${n}, *, ${h}, ${w}]`);
    }
  }
  const channels = tensors.map((t) => t.shape[1]);
  const total = channels.reduce((a, b) => a + b, 0);
  const out = uninitialized(n * total * h * w, 'catAffine');
  native.concatChannelsAffine(
    tensors.map((t) => t.data),
    channels,
    n,
    h * w,
    scale.data,
    shift.data,
    relu,
    out,
  );
  return new Tensor(out, [n, total, h, w]);
}

/** The same data under a new shape (-1 allowed once); the gradient flows through unchanged. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const view = x.reshape(shape);
  const y = new Tensor(view.data, view.shape);
  return record('reshape', y, [x], (g) => [g]);
}

/** [N, ...] -> [N, prod(...)], as torch.flatten(x, 1). */
export function flatten(x: Tensor, startDim = 1): Tensor {
  const keep = x.shape.slice(0, startDim);
  return reshape(x, [...keep, -1]);
}

/** Zeroes each element with probability p and scales the rest by 1/(1-p); identity when not training. */
export function dropout(x: Tensor, p = 0.5, training = true, rng: Rng = globalRng): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  const out = uninitialized(x.size, 'dropout');
  const mask = uninitialized(x.size, 'dropout');
  native.dropoutForward(x.data, out, mask, p, rng.nextU32());
  return record('dropout', new Tensor(out, x.shape), [x], (g) => {
    const gx = uninitialized(g.length, 'dropout');
    native.dropoutBackward(g, mask, gx);
    return [gx];
  });
}

/** Sum of all elements as a 1-element tensor (added in double precision, in index order). */
export function sum(x: Tensor): Tensor {
  const y = new Tensor(new Float32Array([x.sum()]), []);
  return record('sum', y, [x], (g) => [uninitialized(x.size, 'sum').fill(g[0])]);
}

/** Mean of all elements as a 1-element tensor. */
export function mean(x: Tensor): Tensor {
  if (x.size === 0) throw new Error('mean: tensor is empty');
  const y = new Tensor(new Float32Array([x.sum() / x.size]), []);
  return record('mean', y, [x], (g) => [uninitialized(x.size, 'mean').fill(g[0] / x.size)]);
}

/**
 * Throws `${what} is not finite: ...` when `x` holds a NaN or an infinity; in a compiled
 * training step (src/plan) the step stops there, before the backward and the optimizer update.
 */
export function assertFinite(x: Tensor, what: string): void {
  native.assertFinite(x.data, what);
}

/**
 * Scales the arrays in place by maxNorm / (norm + 1e-6) when their joint L2 norm exceeds
 * `maxNorm` (squares summed in double, in order); returns the norm. fit()'s `clipGradNorm`.
 */
export function clipGradNormInPlace(grads: Float32Array[], maxNorm: number): number {
  return native.clipGradNorm(grads, maxNorm);
}
