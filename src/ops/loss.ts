// Differentiable softmax and losses. Softmax and the fused softmax + cross-entropy run in
// crates/kernels/src/softmax.rs; the simple regression losses are short loops over the batch.
import { record } from '../autograd.js';
import { native } from '../native.js';
import { allocate, Tensor, uninitialized } from '../tensor.js';
import { describe } from '../describe.js';
import { reshape, transpose } from './elementwise.js';

export type Reduction = 'mean' | 'sum' | 'none';

function rowsCols(x: Tensor, what: string): [number, number] {
  if (x.ndim < 1) throw new Error(`${what}: expected at least 1 dimension`);
  const cols = x.shape[x.ndim - 1];
  return [cols === 0 ? 0 : x.size / cols, cols];
}

function softmaxImpl(x: Tensor, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  const [rows, cols] = rowsCols(x, op);
  const out = uninitialized(x.size, op);
  native.softmaxForward(x.data, out, rows, cols, log);
  return record(op, new Tensor(out, x.shape), [x], (g) => {
    const gx = uninitialized(x.size, op);
    native.softmaxBackward(out, g, gx, rows, cols, log);
    return [gx];
  });
}

/** Softmax over the last dimension. */
export const softmax = (x: Tensor): Tensor => softmaxImpl(x, false);
/** Log-softmax over the last dimension. */
export const logSoftmax = (x: Tensor): Tensor => softmaxImpl(x, true);

/** (Log-)softmax over any axis: the axis moved last, normalised, moved back. */
export function softmaxAlong(x: Tensor, axis: number, log = false): Tensor {
  const a = axis < 0 ? axis + x.ndim : axis;
  if (!Number.isInteger(a) || a < 0 || a >= x.ndim)
    throw new Error(`softmax: axis ${axis} is out of range for ${x.ndim}-D`);
  const f = log ? logSoftmax : softmax;
  if (a === x.ndim - 1) return f(x);
  const perm = x.shape.map((_, i) => i).filter((i) => i !== a);
  perm.push(a);
  const back = perm.map((_, i) => perm.indexOf(i));
  return transpose(f(transpose(x, perm)), back);
}

export interface CrossEntropyOptions {
  /** Mix of the one-hot target with the uniform distribution (default 0). */
  labelSmoothing?: number;
  /** Per-class weights [C]. */
  weight?: Tensor | null;
  /** Targets equal to this are skipped (default -100). */
  ignoreIndex?: number;
  reduction?: Reduction;
}

/**
 * Checks class indices for `op` (crossEntropy, nllLoss, topkCorrect, ...) and returns them as an
 * Int32Array: `n` of them, each an integer in [0, classes) or equal to `ignoreIndex`. Nothing is
 * rounded or wrapped: 1.9, NaN or 2^32 + 1 throw, naming the index and the value.
 */
export function checkClassIndices(
  op: string,
  targets: ArrayLike<number>,
  n: number,
  classes: number,
  ignoreIndex: number | null = -100,
): Int32Array {
  if (ignoreIndex !== null && !Number.isSafeInteger(ignoreIndex)) {
    throw new Error(`${op}: ignoreIndex: expected an integer, got ${describe(ignoreIndex)}`);
  }
  if (targets === null || typeof targets !== 'object' || typeof targets.length !== 'number') {
    throw new Error(
      `${op}: targets: expected an Int32Array or an array of class indices, ` +
        `got ${targets === null ? 'null' : typeof targets}`,
    );
  }
  if (targets.length !== n) throw new Error(`${op}: targets: expected ${n} class indices, got ${targets.length}`);
  const out = targets instanceof Int32Array ? targets : new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = targets[i];
    const ok = typeof v === 'number' && Number.isInteger(v) && ((v >= 0 && v < classes) || v === ignoreIndex);
    if (!ok) throw new Error(`${op}: targets[${i}] = ${describe(v)} is not a class index in [0, ${classes})`);
    out[i] = v;
  }
  return out;
}

/**
 * Cross-entropy between logits [N, C] and class indices [N], as torch.nn.functional.cross_entropy.
 * Returns a scalar (mean/sum) or [N] (none). Per-position classes as torch's K-dimensional case:
 * logits [N, C, d1, ...] (e.g. a segmentation's [N, C, H, W]) and targets [N, d1, ...] flattened
 * row-major; 'none' then returns [N, d1, ...], and 'mean' averages over every position.
 */
export function crossEntropy(
  logits: Tensor,
  targets: Int32Array | readonly number[],
  opts: CrossEntropyOptions = {},
): Tensor {
  if (logits.ndim > 2) {
    // Channels last, one row per position: the same kernel, the same weighting and ignoreIndex.
    const perm = [0, ...logits.shape.slice(2).map((_, i) => i + 2), 1];
    const c = logits.shape[1];
    const rows = reshape(transpose(logits, perm), [-1, c]);
    const loss = crossEntropy(rows, targets, opts);
    return (opts.reduction ?? 'mean') === 'none' ? reshape(loss, [logits.shape[0], ...logits.shape.slice(2)]) : loss;
  }
  if (logits.ndim !== 2)
    throw new Error(`crossEntropy: logits: expected shape [N, C], got [${logits.shape.join(', ')}]`);
  const [batch, classes] = logits.shape;
  const t = checkClassIndices('crossEntropy', targets, batch, classes, opts.ignoreIndex ?? -100);
  const weight = opts.weight ?? null;
  if (weight && weight.size !== classes)
    throw new Error(`crossEntropy: weight: expected ${classes} class weights, got ${weight.size}`);
  const reduction = opts.reduction ?? 'mean';
  const args = {
    batch,
    classes,
    labelSmoothing: opts.labelSmoothing ?? 0,
    ignoreIndex: opts.ignoreIndex ?? -100,
    reduction,
  };
  const probs = uninitialized(logits.size, 'crossEntropy');
  const losses = uninitialized(batch, 'crossEntropy');
  // The reduced loss is written into an array by the binding (not only returned) so that a
  // traced training step (src/plan) has it as the plan's output.
  const total = reduction === 'none' ? null : uninitialized(1, 'crossEntropy');
  native.crossEntropyForward(logits.data, t, weight?.data ?? null, probs, losses, args, total);
  const y = total ? new Tensor(total, []) : new Tensor(losses, [batch]);
  return record('crossEntropy', y, [logits], (g) => {
    const gx = uninitialized(logits.size, 'crossEntropy');
    native.crossEntropyBackward(probs, t, weight?.data ?? null, g, gx, args);
    return [gx];
  });
}

function reduce(
  name: string,
  x: Tensor,
  per: Float32Array,
  dPer: (i: number) => number,
  reduction: Reduction,
  shape: number[],
): Tensor {
  const n = per.length;
  let y: Tensor;
  if (reduction === 'none') y = new Tensor(per, shape);
  else {
    let s = 0;
    for (let i = 0; i < n; i++) s += per[i];
    y = new Tensor(new Float32Array([reduction === 'mean' ? s / Math.max(n, 1) : s]), []);
  }
  return record(name, y, [x], (g) => {
    const gx = uninitialized(n, name);
    for (let i = 0; i < n; i++) {
      const up = reduction === 'none' ? g[i] : reduction === 'mean' ? g[0] / n : g[0];
      gx[i] = up * dPer(i);
    }
    return [gx];
  });
}

function sameShape(name: string, a: Tensor, b: Tensor): void {
  if (a.size !== b.size || a.shape.join() !== b.shape.join()) {
    throw new Error(
      `${name}: input [${a.shape.join(', ')}] and target [${b.shape.join(', ')}] must have the same shape`,
    );
  }
}

/** Negative log-likelihood of log-probabilities [N, C] at class indices [N]. */
export function nllLoss(
  logProbs: Tensor,
  targets: Int32Array | readonly number[],
  opts: { weight?: Tensor | null; ignoreIndex?: number; reduction?: Reduction } = {},
): Tensor {
  if (logProbs.ndim !== 2) throw new Error(`nllLoss: input: expected shape [N, C], got [${logProbs.shape.join(', ')}]`);
  const [batch, classes] = logProbs.shape;
  const ignore = opts.ignoreIndex ?? -100;
  const t = checkClassIndices('nllLoss', targets, batch, classes, ignore);
  if (opts.weight && opts.weight.size !== classes)
    throw new Error(`nllLoss: weight: expected ${classes} class weights, got ${opts.weight.size}`);
  const reduction = opts.reduction ?? 'mean';
  const w = (c: number) => (opts.weight ? opts.weight.data[c] : 1);
  // Ignored samples keep their zero loss (and zero gradient below).
  const per = allocate(batch, 'nllLoss');
  let denom = 0;
  for (let i = 0; i < batch; i++) {
    const c = t[i];
    if (c === ignore) continue;
    per[i] = -w(c) * logProbs.data[i * classes + c];
    denom += w(c);
  }
  let y: Tensor;
  if (reduction === 'none') y = new Tensor(per, [batch]);
  else {
    const s = per.reduce((a, b) => a + b, 0);
    y = new Tensor(new Float32Array([reduction === 'mean' ? s / denom : s]), []);
  }
  return record('nllLoss', y, [logProbs], (g) => {
    const gx = allocate(logProbs.size, 'nllLoss');
    for (let i = 0; i < batch; i++) {
      const c = t[i];
      if (c === ignore) continue;
      const up = reduction === 'none' ? g[i] : reduction === 'mean' ? g[0] / denom : g[0];
      gx[i * classes + c] = -w(c) * up;
    }
    return [gx];
  });
}

/** Mean squared error. */
export function mseLoss(input: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  sameShape('mseLoss', input, target);
  const d = input.data.map((v, i) => v - target.data[i]);
  return reduce(
    'mseLoss',
    input,
    d.map((v) => v * v),
    (i) => 2 * d[i],
    reduction,
    input.shape,
  );
}

/** Mean absolute error. */
export function l1Loss(input: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  sameShape('l1Loss', input, target);
  const d = input.data.map((v, i) => v - target.data[i]);
  return reduce('l1Loss', input, d.map(Math.abs), (i) => Math.sign(d[i]), reduction, input.shape);
}

/** Huber-style smooth L1 with threshold beta (default 1), as torch.nn.functional.smooth_l1_loss. */
export function smoothL1Loss(input: Tensor, target: Tensor, beta = 1, reduction: Reduction = 'mean'): Tensor {
  sameShape('smoothL1Loss', input, target);
  const d = input.data.map((v, i) => v - target.data[i]);
  const per = d.map((v) => (Math.abs(v) < beta ? (0.5 * v * v) / beta : Math.abs(v) - 0.5 * beta));
  return reduce(
    'smoothL1Loss',
    input,
    per,
    (i) => (Math.abs(d[i]) < beta ? d[i] / beta : Math.sign(d[i])),
    reduction,
    input.shape,
  );
}

/** Binary cross-entropy on logits (numerically stable), as torch's binary_cross_entropy_with_logits. */
export function binaryCrossEntropyWithLogits(
  input: Tensor,
  target: Tensor,
  opts: { posWeight?: Tensor | null; reduction?: Reduction } = {},
): Tensor {
  sameShape('binaryCrossEntropyWithLogits', input, target);
  const lastDim = input.shape[input.ndim - 1] ?? 1;
  const pw = (i: number) => (opts.posWeight ? opts.posWeight.data[i % lastDim] : 1);
  const per = uninitialized(input.size, 'binaryCrossEntropyWithLogits');
  const grad = uninitialized(input.size, 'binaryCrossEntropyWithLogits');
  for (let i = 0; i < per.length; i++) {
    const x = input.data[i];
    const y = target.data[i];
    const p = pw(i);
    // log(1 + e^-x) computed without overflow
    const softplusNeg = Math.max(-x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
    const lw = 1 + (p - 1) * y;
    per[i] = (1 - y) * x + lw * softplusNeg;
    const sig = 1 / (1 + Math.exp(-x));
    grad[i] = 1 - y - lw * (1 - sig);
  }
  return reduce('binaryCrossEntropyWithLogits', input, per, (i) => grad[i], opts.reduction ?? 'mean', input.shape);
}
