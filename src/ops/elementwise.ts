// Differentiable tensor plumbing: broadcast add/mul, channel concat, reshape/flatten, dropout and
// full reductions.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { globalRng, type Rng } from '../random.js';
import { binaryNd } from './nd.js';
import { Tensor, uninitialized } from '../tensor.js';

/**
 * Whether the addon's per-channel broadcast covers b onto a: b no larger in rank, each dim 1 or
 * a's, and the dims where b varies adjacent (Broadcast::plan's rule in the kernels).
 */
function channelBroadcast(a: readonly number[], b: readonly number[]): boolean {
  if (b.length > a.length) return false;
  const off = a.length - b.length;
  let first = -1;
  let last = -1;
  for (let i = 0; i < a.length; i++) {
    const bd = i >= off ? b[i - off] : 1;
    if (bd !== a[i] && bd !== 1) return false;
    if (bd === a[i] && a[i] !== 1) {
      if (first < 0) first = i;
      last = i;
    }
  }
  for (let i = first + 1; i < last; i++) if (a[i] > 1 && (i < off || b[i - off] === 1)) return false;
  return true;
}

function binary(op: 'add' | 'mul', a: Tensor, b: Tensor): Tensor {
  if (!channelBroadcast(a.shape, b.shape)) return binaryNd(op, a, b);
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
 * a + b with NumPy broadcasting. The per-channel patterns of CNNs (b of a's shape, [1, C, 1, 1] or
 * [N, C, 1, 1] on NCHW, [C] on [N, C], a scalar) take a fast path; any other pattern, either
 * side broadcast, the general one.
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

/** The sizes before, at and after `dim` of a shape: [outer, size, inner]. */
function around(shape: readonly number[], dim: number): [number, number, number] {
  const outer = shape.slice(0, dim).reduce((a, b) => a * b, 1);
  const inner = shape.slice(dim + 1).reduce((a, b) => a * b, 1);
  return [outer, shape[dim], inner];
}

/** `dim` normalised to [0, rank), or an Error naming `op`. */
function axis(op: string, dim: number, rank: number): number {
  if (!Number.isInteger(dim) || dim < -rank || dim >= rank) {
    throw new Error(`${op}: dim ${dim} is out of range for a ${rank}-D tensor`);
  }
  return dim < 0 ? dim + rank : dim;
}

/**
 * Concatenates tensors along `dim` (default 1, channels), as torch.cat; every other dimension
 * must match. The kernel treats each tensor as [outer, size, inner] around `dim`.
 */
export function cat(tensors: Tensor[], dim = 1): Tensor {
  if (tensors.length === 0) throw new Error('cat: expected at least one tensor');
  const first = tensors[0].shape;
  const d = axis('cat', dim, first.length);
  for (const [i, t] of tensors.entries()) {
    const same = t.ndim === first.length && t.shape.every((s, k) => k === d || s === first[k]);
    if (!same) {
      const want = first.map((s, k) => (k === d ? '*' : s)).join(', ');
      throw new Error(`cat: tensor ${i} has shape [${t.shape.join(', ')}], expected [${want}]`);
    }
  }
  const [outer, , inner] = around(first, d);
  const channels = tensors.map((t) => t.shape[d]);
  const total = channels.reduce((a, b) => a + b, 0);
  const out = uninitialized(outer * total * inner, 'cat');
  native.concatChannels(
    tensors.map((t) => t.data),
    channels,
    outer,
    inner,
    out,
  );
  const shape = [...first];
  shape[d] = total;
  const y = new Tensor(out, shape);
  return record('cat', y, tensors, (g) => {
    const parts = tensors.map((t) => uninitialized(t.size, 'cat'));
    native.splitChannels(g, parts, channels, outer, inner);
    return parts;
  });
}

/** Splits `x` along `dim` into parts of the given sizes (which must sum to its size), as torch.split. */
export function split(x: Tensor, sizes: readonly number[], dim = 1): Tensor[] {
  const d = axis('split', dim, x.ndim);
  const [outer, size, inner] = around(x.shape, d);
  if (!sizes.every((s) => Number.isInteger(s) && s >= 0) || sizes.reduce((a, b) => a + b, 0) !== size) {
    throw new Error(
      `split: sizes [${sizes.join(', ')}] do not add up to ${size} (dim ${d} of [${x.shape.join(', ')}])`,
    );
  }
  const parts = sizes.map((s) => uninitialized(outer * s * inner, 'split'));
  native.splitChannels(x.data, parts, [...sizes], outer, inner);
  const outs = parts.map((p, k) => {
    const shape = [...x.shape];
    shape[d] = sizes[k];
    return new Tensor(p, shape);
  });
  // Each part's backward puts its gradient back in place with zeros around it.
  return outs.map((y, k) =>
    record('split', y, [x], (g) => {
      const pieces = sizes.map((s, j) => {
        if (j === k) return g;
        const z = uninitialized(outer * s * inner, 'split');
        native.fill(z, 0);
        return z;
      });
      const gx = uninitialized(x.size, 'split');
      native.concatChannels(pieces, [...sizes], outer, inner, gx);
      return [gx];
    }),
  );
}

/** The `length` entries of `x` from `start` along `dim`, as torch.narrow (a copy, not a view). */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = axis('narrow', dim, x.ndim);
  const size = x.shape[d];
  if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > size) {
    throw new Error(`narrow: [${start}, ${start + length}) is outside dim ${d} of size ${size}`);
  }
  const sizes = [start, length, size - start - length];
  return split(x, sizes, d)[1];
}

/** x with its dimensions permuted: result dim i is x's dim perm[i], as torch.permute. */
export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.ndim) {
    throw new Error(`transpose: perm [${perm.join(', ')}] has ${perm.length} axes, x has ${x.ndim}`);
  }
  const p = perm.map((a) => axis('transpose', a, x.ndim));
  const out = uninitialized(x.size, 'transpose');
  native.transpose(x.data, x.shape, p, out);
  const y = new Tensor(
    out,
    p.map((a) => x.shape[a]),
  );
  const inverse = p.map((_, i) => p.indexOf(i));
  return record('transpose', y, [x], (g) => {
    const gx = uninitialized(x.size, 'transpose');
    native.transpose(g, y.shape, inverse, gx);
    return [gx];
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
  return dropoutWithMask(x, p, training, rng)[0];
}

/**
 * dropout that also returns its mask (0 where dropped, 1/(1-p) where kept), or null when nothing
 * is dropped (eval mode, or p = 0), e.g. for ONNX Dropout's mask output.
 */
export function dropoutWithMask(
  x: Tensor,
  p = 0.5,
  training = true,
  rng: Rng = globalRng,
): [Tensor, Float32Array | null] {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return [x, null];
  const out = uninitialized(x.size, 'dropout');
  const mask = uninitialized(x.size, 'dropout');
  native.dropoutForward(x.data, out, mask, p, rng.nextU32());
  const y = record('dropout', new Tensor(out, x.shape), [x], (g) => {
    const gx = uninitialized(g.length, 'dropout');
    native.dropoutBackward(g, mask, gx);
    return [gx];
  });
  return [y, mask];
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
