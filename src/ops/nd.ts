// N-D tensor ops with NumPy's semantics, for the general graphs ONNX files hold: padding in four
// modes, broadcasting sub/div (and add/mul where both sides broadcast), the sum back to a
// broadcast operand's shape, gather along an axis and batched matmul. All differentiable; each
// is one call into the addon, so compiled plans replay them.
import { record } from '../autograd.js';
import { native } from '../native.js';
import { allocate, Tensor, uninitialized } from '../tensor.js';

export type PadMode = 'constant' | 'edge' | 'reflect' | 'wrap';

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * x padded by `begins[d]` before and `ends[d]` after each axis d (negative values crop), as
 * numpy.pad / ONNX Pad: 'constant' fills with `value`, 'edge' repeats the border, 'reflect'
 * mirrors without repeating it, 'wrap' wraps around (torch's replicate, reflect, circular).
 */
export function pad(
  x: Tensor,
  begins: readonly number[],
  ends: readonly number[],
  mode: PadMode = 'constant',
  value = 0,
): Tensor {
  const shape = native.paddedShape(mode, x.shape, [...begins], [...ends]);
  const out = uninitialized(numel(shape), 'pad');
  native.padForward(mode, x.data, x.shape, [...begins], [...ends], value, out);
  return record('pad', new Tensor(out, shape), [x], (g) => {
    const gx = uninitialized(x.size, 'pad');
    native.padBackward(mode, g, x.shape, [...begins], [...ends], gx);
    return [gx];
  });
}

/** The shape two shapes broadcast to by NumPy's rules, or an Error naming the clash. */
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  return native.broadcastShape([...a], [...b]);
}

/**
 * x (of a shape broadcast from `shape`) summed back to `shape`: a broadcast operand's gradient,
 * and the sum over chosen axes kept as size 1 (x [N, C, H, W] to [1, C, 1, 1] sums per channel).
 * Differentiable: the gradient is the output's, broadcast back to x's shape.
 */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  const out = uninitialized(numel(shape), 'sumTo');
  native.sumTo(x.data, x.shape, [...shape], out);
  return record('sumTo', new Tensor(out, [...shape]), [x], (g) => {
    const zero = allocate(x.size, 'sumTo');
    const gx = uninitialized(x.size, 'sumTo');
    native.binaryNd('add', zero, [...x.shape], g, [...shape], gx);
    return [gx];
  });
}

function sumToArray(g: Float32Array, from: readonly number[], to: readonly number[]): Float32Array {
  if (from.length === to.length && from.every((d, i) => d === to[i])) return g;
  const out = uninitialized(numel(to), 'sumTo');
  native.sumTo(g, [...from], [...to], out);
  return out;
}

type NdOp = 'add' | 'sub' | 'mul' | 'div';

function ndRaw(op: NdOp, a: Float32Array, as: readonly number[], b: Float32Array, bs: readonly number[]) {
  const shape = broadcastShape(as, bs);
  const out = uninitialized(numel(shape), op);
  native.binaryNd(op, a, [...as], b, [...bs], out);
  return { out, shape };
}

/**
 * a op b with both operands broadcast by NumPy's rules (any pattern, either side), as ONNX's
 * Add/Sub/Mul/Div. Gradients are summed back to each operand's shape.
 */
export function binaryNd(op: NdOp, a: Tensor, b: Tensor): Tensor {
  const { out, shape } = ndRaw(op, a.data, a.shape, b.data, b.shape);
  const y = new Tensor(out, shape);
  return record(op, y, [a, b], (g) => {
    let ga: Float32Array | null = null;
    let gb: Float32Array | null = null;
    if (a.requiresGrad) {
      // d/da: 1 (add, sub), b (mul), 1/b (div).
      const d = op === 'mul' || op === 'div' ? ndRaw(op, g, shape, b.data, b.shape).out : g;
      ga = sumToArray(d, shape, a.shape);
    }
    if (b.requiresGrad) {
      // d/db: 1 (add), -1 (sub), a (mul), -y/b (div).
      let d: Float32Array;
      if (op === 'add') d = g;
      else if (op === 'mul') d = ndRaw('mul', g, shape, a.data, a.shape).out;
      else {
        const num = op === 'sub' ? g : ndRaw('mul', g, shape, y.data, shape).out;
        const q = op === 'sub' ? num : ndRaw('div', num, shape, b.data, b.shape).out;
        d = uninitialized(q.length, op);
        native.scale(q, -1, d);
      }
      gb = sumToArray(d, shape, b.shape);
    }
    return [ga, gb];
  });
}

/** a - b, NumPy broadcasting. */
export const sub = (a: Tensor, b: Tensor): Tensor => binaryNd('sub', a, b);
/** a / b, NumPy broadcasting. */
export const div = (a: Tensor, b: Tensor): Tensor => binaryNd('div', a, b);

/**
 * x's entries at `indices` along `dim` (negative indices count from the end), as numpy.take
 * and ONNX Gather: the result's shape is x.shape[:dim] + indicesShape + x.shape[dim+1:].
 */
export function gather(
  x: Tensor,
  dim: number,
  indices: readonly number[],
  indicesShape: readonly number[] = [indices.length],
): Tensor {
  if (dim < -x.ndim || dim >= x.ndim || !Number.isInteger(dim)) {
    throw new Error(`gather: dim ${dim} is out of range for a ${x.ndim}-D tensor`);
  }
  const d = dim < 0 ? dim + x.ndim : dim;
  if (numel(indicesShape) !== indices.length) {
    throw new Error(`gather: ${indices.length} indices do not fill shape [${indicesShape.join(', ')}]`);
  }
  const dims = [numel(x.shape.slice(0, d)), x.shape[d], numel(x.shape.slice(d + 1))];
  const shape = [...x.shape.slice(0, d), ...indicesShape, ...x.shape.slice(d + 1)];
  const out = uninitialized(numel(shape), 'gather');
  native.gatherForward(x.data, dims, [...indices], out);
  return record('gather', new Tensor(out, shape), [x], (g) => {
    const gx = uninitialized(x.size, 'gather');
    native.gatherBackward(g, dims, [...indices], gx);
    return [gx];
  });
}

/** For each batch entry of the broadcast batch shape, the flat batch index of each operand. */
function batchPairs(batch: number[], as: number[], bs: number[]): [number, number, number][] {
  const strides = (s: number[]) => {
    const st = s.map(() => 0);
    let acc = 1;
    for (let i = s.length - 1; i >= 0; i--) {
      st[i] = s[i] === 1 ? 0 : acc;
      acc *= s[i];
    }
    return st;
  };
  const pad = (s: number[]) => [...batch.map(() => 1).slice(s.length), ...s];
  const [sa, sb] = [strides(pad(as)), strides(pad(bs))];
  const out: [number, number, number][] = [];
  const n = numel(batch);
  for (let i = 0; i < n; i++) {
    let rest = i;
    let ia = 0;
    let ib = 0;
    for (let d = batch.length - 1; d >= 0; d--) {
      const c = rest % batch[d];
      rest = Math.floor(rest / batch[d]);
      ia += c * sa[d];
      ib += c * sb[d];
    }
    out.push([ia, ib, i]);
  }
  return out;
}

/**
 * The matrix product with NumPy's rules (numpy.matmul, ONNX MatMul, torch.matmul): a 1-D
 * operand is a vector (a row on the left, a column on the right, its axis dropped from the
 * result), and the batch dims before the last two broadcast.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.ndim === 0 || b.ndim === 0) throw new Error('matmul: operands must have at least one dim');
  const as = a.ndim === 1 ? [1, a.shape[0]] : a.shape;
  const bs = b.ndim === 1 ? [b.shape[0], 1] : b.shape;
  const [m, k] = as.slice(-2);
  const [k2, n] = bs.slice(-2);
  if (k !== k2)
    throw new Error(`matmul: [${a.shape.join(', ')}] and [${b.shape.join(', ')}] do not chain (${k} vs ${k2})`);
  const aBatch = as.slice(0, -2);
  const bBatch = bs.slice(0, -2);
  const batch = broadcastShape(aBatch, bBatch);
  const pairs = batchPairs(batch, aBatch, bBatch);
  const out = uninitialized(numel(batch) * m * n, 'matmul');
  native.matmulBatched(a.data, b.data, out, [m, n, k], false, false, pairs.flat());
  const shape = [...batch, ...(a.ndim === 1 ? [] : [m]), ...(b.ndim === 1 ? [] : [n])];
  return record('matmul', new Tensor(out, shape), [a, b], (g) => {
    // dA[ia] += dY[i] B[ib]^T; dB[ib] += A[ia]^T dY[i] (broadcast operands add up).
    let ga: Float32Array | null = null;
    let gb: Float32Array | null = null;
    if (a.requiresGrad) {
      ga = uninitialized(a.size, 'matmul');
      const entries = pairs.flatMap(([ia, ib, i]) => [i, ib, ia]);
      native.matmulBatched(g, b.data, ga, [m, k, n], false, true, entries);
    }
    if (b.requiresGrad) {
      gb = uninitialized(b.size, 'matmul');
      const entries = pairs.flatMap(([ia, ib, i]) => [ia, i, ib]);
      native.matmulBatched(a.data, g, gb, [k, n, m], true, false, entries);
    }
    return [ga, gb];
  });
}
