// Tensor: an NCHW-style shape plus a Float32Array that JavaScript owns. The kernels read and
// write these arrays in place through N-API (no copies), and the garbage collector frees them:
// there is nothing to dispose.
import { constants as bufferConstants } from 'node:buffer';
import { type Rng, globalRng } from './random.js';
import { runBackward } from './autograd.js';
import { native } from './native.js';

export type Shape = readonly number[];

/** Most elements of one tensor; larger shapes get an Error naming the op rather than an attempt. */
const MAX_ELEMENTS = 2 ** 31 - 1;

export function shapeSize(shape: Shape, what = 'shape'): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`${what}: expected non-negative integer dimensions, got [${shape.join(', ')}]`);
    }
    n *= d;
  }
  if (n > MAX_ELEMENTS)
    throw new Error(`${what}: [${shape.join(', ')}] has too many elements (${n}; at most ${MAX_ELEMENTS})`);
  return n;
}

/**
 * A recorded operation: how to turn the gradient of its output into gradients of its inputs.
 * Created by the ops in src/ops; see src/autograd.ts.
 */
export interface GradFn {
  readonly name: string;
  readonly inputs: readonly (Tensor | null)[];
  /** Gradients for each input (null where an input needs none), given d(loss)/d(output). */
  backward(gradOutput: Float32Array): (Float32Array | null)[];
}

export class Tensor {
  readonly shape: number[];
  readonly data: Float32Array;
  /** Leaf tensors with requiresGrad collect gradients in `grad` when backward() runs. */
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The op that produced this tensor, while the graph is alive (null for leaves). */
  gradFn: GradFn | null = null;
  /**
   * True once a backward() without retainGraph has run through this (non-leaf) tensor and freed
   * its gradFn: backward from or through it again throws instead of silently doing nothing.
   */
  graphFreed = false;

  constructor(data: Float32Array, shape: Shape) {
    const n = shapeSize(shape);
    if (!(data instanceof Float32Array)) throw new Error('Tensor: data must be a Float32Array');
    if (data.length !== n) {
      throw new Error(`Tensor: shape [${shape.join(', ')}] needs ${n} elements, got ${data.length}`);
    }
    this.shape = [...shape];
    this.data = data;
  }

  /** Marks a leaf as trainable (returns this, for chaining). */
  requiresGrad_(flag = true): this {
    if (this.gradFn || this.graphFreed)
      throw new Error('requiresGrad_: only leaf tensors can change requiresGrad (detach() gives a leaf)');
    this.requiresGrad = flag;
    return this;
  }

  /** The same data, cut from the graph. */
  detach(): Tensor {
    return new Tensor(this.data, this.shape);
  }

  /** Back-propagates from this tensor (a scalar unless `grad` is given) through the graph. */
  backward(grad?: Tensor, opts: { retainGraph?: boolean } = {}): void {
    runBackward(this, grad, opts.retainGraph ?? false);
  }

  get size(): number {
    return this.data.length;
  }

  get ndim(): number {
    return this.shape.length;
  }

  /** The same data under a new shape; one dimension may be -1 (inferred). Shares the buffer. */
  reshape(shape: Shape): Tensor {
    const dims = [...shape];
    const infer = dims.indexOf(-1);
    if (infer >= 0) {
      if (dims.lastIndexOf(-1) !== infer) throw new Error('reshape: only one dimension can be -1');
      const rest = dims.reduce((a, d, i) => (i === infer ? a : a * d), 1);
      if (rest === 0 || this.size % rest !== 0) {
        throw new Error(`reshape: cannot infer -1 in [${dims.join(', ')}] for ${this.size} elements`);
      }
      dims[infer] = this.size / rest;
    }
    if (shapeSize(dims, 'reshape') !== this.size) {
      throw new Error(`reshape: [${dims.join(', ')}] does not hold ${this.size} elements ([${this.shape.join(', ')}])`);
    }
    return new Tensor(this.data, dims);
  }

  /** A copy with its own buffer. */
  clone(): Tensor {
    return new Tensor(this.data.slice(), this.shape);
  }

  /** Nested JavaScript arrays (a plain number for a 0-d tensor). */
  toArray(): unknown {
    if (this.shape.length === 0) return this.data[0];
    const build = (dim: number, offset: number): unknown[] => {
      const n = this.shape[dim];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) {
        out.push(dim === this.shape.length - 1 ? this.data[offset + i] : build(dim + 1, offset + i * stride));
      }
      return out;
    };
    return build(0, 0);
  }

  /** Index of the largest value along the last dimension: shape [...rest]. */
  argmax(): Int32Array {
    if (this.shape.length === 0) throw new Error('argmax: tensor has no dimensions');
    const last = this.shape[this.shape.length - 1];
    if (last === 0) throw new Error('argmax: last dimension is empty');
    const rows = this.size / last;
    const out = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      let bestVal = -Infinity;
      for (let j = 0; j < last; j++) {
        const v = this.data[r * last + j];
        if (v > bestVal) {
          bestVal = v;
          best = j;
        }
      }
      out[r] = best;
    }
    return out;
  }

  /** Sum of all elements, accumulated in double precision in index order (natively). */
  sum(): number {
    return native.sum(this.data);
  }

  mean(): number {
    if (this.size === 0) throw new Error('mean: tensor is empty');
    return this.sum() / this.size;
  }
}

// Allocating op outputs, one rule everywhere:
// - an output the kernel (or a JavaScript loop) writes completely before anything reads it:
//   `uninitialized(n, op)`;
// - anything read before it is written, accumulated into, left partly untouched, or whose zero
//   start is the meaning (optimizer state, dropped samples): `allocate(n, op)`.
// Both name the op when the engine cannot give the memory. Nothing in src/ops, src/nn,
// src/models, src/optim or src/train allocates tensors with `new Float32Array` directly
// (test/alloc-rule.test.ts checks it).

/** Below this many elements zero-filling is cheap and V8's own allocation is faster. */
const UNINIT_MIN = 1 << 14;
/** Largest Buffer this Node can make; larger outputs go through a zero-filled typed array. */
const BUFFER_MAX_BYTES = bufferConstants.MAX_LENGTH;

/** Arrays a compiled plan run is reading now (array -> number of runs). See writableData. */
const pinned = new WeakMap<Float32Array, number>();

/** Marks `arrays` as read by a compiled plan run until the matching unpin. */
export function pin(arrays: Iterable<Float32Array>): void {
  for (const a of arrays) pinned.set(a, (pinned.get(a) ?? 0) + 1);
}

/**
 * Sets of arrays pinned as one (an inference session's whole state: DenseNet-121's 606 arrays),
 * each with its number of runs: pinning the set is one step where pin() took a WeakMap update
 * per array, 0.05 ms of every batch-1 predict.
 */
const pinnedSets = new Map<ReadonlySet<Float32Array>, number>();

/** Marks every array of `set` as read by a compiled plan run until the matching unpinSet. */
export function pinSet(set: ReadonlySet<Float32Array>): void {
  pinnedSets.set(set, (pinnedSets.get(set) ?? 0) + 1);
}

export function unpinSet(set: ReadonlySet<Float32Array>): void {
  const n = (pinnedSets.get(set) ?? 1) - 1;
  if (n > 0) pinnedSets.set(set, n);
  else pinnedSets.delete(set);
}

/** Whether a run (a predict, a training step) is holding `a`. */
export function isPinned(a: Float32Array): boolean {
  if (pinned.has(a)) return true;
  for (const set of pinnedSets.keys()) if (set.has(a)) return true;
  return false;
}

export function unpin(arrays: Iterable<Float32Array>): void {
  for (const a of arrays) {
    const n = (pinned.get(a) ?? 1) - 1;
    if (n > 0) pinned.set(a, n);
    else pinned.delete(a);
  }
}

/**
 * `t.data`, ready to be written in place. While a compiled plan run (predict off the JavaScript
 * thread) is reading the array, it is first replaced by a copy, which the write then changes:
 * the run goes on seeing the values it started with, and the tensor gets the new ones. Every
 * in-place write to parameters and buffers in ferroconv goes through here (optimizer steps,
 * batch-norm running statistics, loadStateDict, the init functions).
 */
export function writableData(t: Tensor): Float32Array {
  if (isPinned(t.data)) {
    (t as { data: Float32Array }).data = t.data.slice();
    persistentHook?.(t.data);
  }
  contentChanged(t.data);
  return t.data;
}

/** Tokens naming the current contents of arrays (see contentToken). */
const tokens = new WeakMap<Float32Array, number>();
let nextToken = 1;

/**
 * A number that names `a`'s current contents: the same number until ferroconv writes the array
 * (writableData, or a training plan writing its updated arrays), never reused for other
 * contents. Inference plans pass the tokens of the weights with each run and reuse the weights
 * they prepared (packed for the GEMM) while the tokens stay the same.
 */
export function contentToken(a: Float32Array): number {
  let t = tokens.get(a);
  if (t === undefined) {
    t = nextToken++;
    tokens.set(a, t);
  }
  return t;
}

/** Bumped by every contentChanged: tokens read while it stays the same are still current. */
let changes = 0;

/** Marks `a`'s contents as changed: its next contentToken is a new number. */
export function contentChanged(a: Float32Array): void {
  tokens.delete(a);
  changes++;
}

/**
 * A number that stays the same while no array's contents change (no contentChanged call):
 * contentToken of any array read at one value of it is still that array's token.
 */
export function contentGeneration(): number {
  return changes;
}

/** While a training step is traced (src/plan/trace.ts): told of each array made to outlive it. */
let persistentHook: ((a: Float32Array) => void) | null = null;

/** Runs `fn` with `hook` told of every array writableData() or persistent() makes. */
export function withPersistentHook<T>(hook: (a: Float32Array) => void, fn: () => T): T {
  const prev = persistentHook;
  persistentHook = hook;
  try {
    return fn();
  } finally {
    persistentHook = prev;
  }
}

/**
 * An array of `n` elements set to `fill` that outlives the call making it (an optimizer's moment
 * buffer): always really allocated, even inside a dry trace, and reported to a traced training
 * step as state.
 */
export function persistent(n: number, op: string, fill = 0): Float32Array {
  const prev = carve;
  carve = null;
  try {
    const a = allocate(n, op);
    if (fill !== 0) a.fill(fill);
    persistentHook?.(a);
    return a;
  } finally {
    carve = prev;
  }
}

/**
 * A Float32Array of `n` elements with unspecified contents, for outputs that a kernel overwrites
 * entirely (every kernel's outputs are). `new Float32Array` zero-fills: a pass over memory that
 * is written again at once, which for the ~1 GB of activations and gradients a ResNet-18 batch-16
 * training step allocates costs a few hundred ms on the JavaScript thread. Never hand one to
 * code that reads before it writes.
 */
/** While a dry trace runs: where uninitialized() and allocate() take their arrays from. */
let carve: ((n: number) => Float32Array) | null = null;

/**
 * Runs `fn` with every tensor allocation served by `c` (src/plan/trace.ts: a dry trace, whose
 * outputs no kernel ever writes, carves them out of a few large, never-touched buffers instead
 * of asking the allocator for each, which made V8 collect garbage dozens of times per trace).
 */
export function withCarvedAllocation<T>(c: (n: number) => Float32Array, fn: () => T): T {
  const prev = carve;
  carve = c;
  try {
    return fn();
  } finally {
    carve = prev;
  }
}

export function uninitialized(n: number, op = 'tensor'): Float32Array {
  if (carve && n <= MAX_ELEMENTS) return carve(n);
  // allocate() refuses sizes past a tensor's limit with the op's name; Node 22+ would otherwise
  // hand out such a Buffer (its MAX_LENGTH is 2^53 - 1) and fail later with a vaguer message.
  if (n < UNINIT_MIN || n > MAX_ELEMENTS || n * 4 > BUFFER_MAX_BYTES) return allocate(n, op);
  try {
    const bytes = Buffer.allocUnsafeSlow(n * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  } catch (e) {
    throw allocationError(n, op, e);
  }
}

/** uninitialized() for int32 data (max-pool indices): the same memory, seen as integers. */
export function uninitializedInt32(n: number, op = 'tensor'): Int32Array {
  const f = uninitialized(n, op);
  return new Int32Array(f.buffer, f.byteOffset, f.length);
}

/**
 * A zero-filled Float32Array of `n` elements for `op`'s output. When the engine cannot give one
 * (too many elements for a typed array, or no memory), the Error names the op and the size
 * instead of a bare RangeError.
 */
export function allocate(n: number, op = 'tensor'): Float32Array {
  if (n > MAX_ELEMENTS) throw allocationError(n, op, new RangeError(`a tensor holds at most ${MAX_ELEMENTS} elements`));
  if (carve) return carve(n);
  try {
    return new Float32Array(n);
  } catch (e) {
    throw allocationError(n, op, e);
  }
}

function allocationError(n: number, op: string, cause: unknown): Error {
  const gib = (n * 4) / 2 ** 30;
  const size = gib >= 0.1 ? `${gib.toFixed(1)} GiB` : `${((n * 4) / 2 ** 20).toFixed(1)} MiB`;
  const why = cause instanceof Error ? cause.message : String(cause);
  return new Error(`${op}: cannot allocate an output of ${n} float32 elements (${size}): ${why}`, { cause });
}

export function zeros(shape: Shape): Tensor {
  return new Tensor(allocate(shapeSize(shape, 'zeros'), 'zeros'), shape);
}

export function full(shape: Shape, value: number): Tensor {
  return new Tensor(allocate(shapeSize(shape, 'full'), 'full').fill(value), shape);
}

export function ones(shape: Shape): Tensor {
  return full(shape, 1);
}

/** Uniform in [low, high), from `rng` (default: the global generator, see manualSeed). */
export function rand(shape: Shape, opts: { low?: number; high?: number; rng?: Rng } = {}): Tensor {
  const { low = 0, high = 1, rng = globalRng } = opts;
  const t = zeros(shape);
  for (let i = 0; i < t.size; i++) t.data[i] = low + (high - low) * rng.next();
  return t;
}

/** Normal with the given mean and std (default standard normal). */
export function randn(shape: Shape, opts: { mean?: number; std?: number; rng?: Rng } = {}): Tensor {
  const { mean = 0, std = 1, rng = globalRng } = opts;
  const t = zeros(shape);
  for (let i = 0; i < t.size; i++) t.data[i] = mean + std * rng.normal();
  return t;
}

/** A tensor from nested arrays (shape inferred) or a flat array plus an explicit shape. */
export function fromArray(values: ArrayLike<number> | unknown[], shape?: Shape): Tensor {
  if (shape) {
    const flat = Float32Array.from(values as ArrayLike<number>);
    return new Tensor(flat, shape);
  }
  const inferred: number[] = [];
  let probe: unknown = values;
  while (Array.isArray(probe)) {
    inferred.push(probe.length);
    probe = probe[0];
  }
  const flat = (values as unknown[]).flat(Infinity) as unknown[];
  for (const v of flat) {
    if (typeof v !== 'number') throw new Error(`fromArray: expected numbers, got ${typeof v}`);
  }
  const t = new Tensor(Float32Array.from(flat as number[]), inferred);
  return t;
}
