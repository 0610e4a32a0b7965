// Tracing a forward into a compiled plan. The forward runs once with a recording stand-in for the
// addon (native.ts withNative): every call into the binding is written down with its arguments,
// and every typed array it touches is named by where its memory comes from,
//   - the input batch,
//   - a state array (a parameter's or buffer's data, passed again to every run, so a plan always
//     sees the model's current weights),
//   - a temp: an array some earlier recorded call wrote (the plan lays these out in its arena).
// An array from anywhere else was made by JavaScript inside the forward, which a plan cannot
// replay: the trace fails and the caller runs the model eagerly. So does a call with no plan step
// (a training-only entry, say) and an output that is not a Tensor.
//
// A dry trace records without computing: the forward's JavaScript runs (shapes, allocation,
// fusion decisions) but no kernel does, so tracing costs a little JavaScript, not a forward. It
// is only valid for forwards that never read tensor values in JavaScript to decide what to do;
// the zoo's and Sequential's do not, and a model that does can opt out (`predict(x, { plan:
// false })`).
import { type Native, addon, withNative } from '../native.js';
import { type Tensor, withCarvedAllocation } from '../tensor.js';

/** The entries a plan can replay, with the positions of the arguments each writes. */
const WRITES: Record<string, readonly number[]> = {
  conv2dForward: [3],
  conv2dForwardFused: [6],
  maxPool2dForwardNoIndices: [1],
  avgPool2dForward: [1],
  adaptiveAvgPool2dForward: [1],
  linearForward: [3],
  activationForward: [2],
  reluInplace: [0],
  softmaxForward: [1],
  batchNorm2dForwardEval: [5],
  batchNormFold: [6, 7],
  concatChannels: [4],
  concatChannelsAffine: [7],
  lrnForward: [1, 2],
  broadcastBinary: [5],
  scale: [2],
};

/** Entries that only compute sizes or report settings: they run as they are during a trace. */
const PURE = new Set(['conv2dOutputSize', 'convTranspose2dOutputSize', 'pool2dOutputSize', 'nativeInfo']);

interface Operand {
  src: 'input' | 'state' | 'temp';
  id: number;
  offset: number;
  len: number;
}

interface Region {
  buffer: ArrayBufferLike;
  byteOffset: number;
  length: number;
}

/** A traced forward: the plan's JSON, the state tensors it reads (in plan order), the output. */
export interface Trace {
  spec: string;
  state: Tensor[];
  outputShape: number[];
  outputLen: number;
}

/** Why a forward cannot be planned; the caller runs it eagerly. */
export class Untraceable extends Error {}

/**
 * Allocation for a dry trace: each array a disjoint range of a chunk (64 MiB, doubling up to
 * 1 GiB; larger arrays get their own), so arrays stay told apart by range, as the tracer needs,
 * while the allocator is asked a few times per trace instead of once per op. Nothing writes the
 * chunks, so their pages are never touched.
 */
function carver(): (n: number) => Float32Array {
  let size = 1 << 24;
  let chunk = new Float32Array(0);
  let used = 0;
  return (n) => {
    if (n > 1 << 28) return new Float32Array(n);
    if (used + n > chunk.length) {
      while (size < n) size *= 2;
      chunk = new Float32Array(size);
      size = Math.min(size * 2, 1 << 28);
      used = 0;
    }
    const a = chunk.subarray(used, used + n);
    used += Math.ceil(n / 16) * 16;
    return a;
  };
}

function contains(r: Region, a: Float32Array): boolean {
  return (
    r.buffer === a.buffer && a.byteOffset >= r.byteOffset && a.byteOffset + a.length * 4 <= r.byteOffset + r.length * 4
  );
}

/**
 * Runs `forward` under the recorder and returns the plan it makes. `input` is the batch the
 * forward reads; `state` the model's parameters and buffers. Throws Untraceable (with the
 * reason) when the forward cannot be replayed.
 */
export function trace(forward: () => unknown, input: Float32Array, state: Tensor[], dry: boolean): Trace {
  const temps: Region[] = [];
  const usedState: Tensor[] = [];
  const stateIndex = new Map<Tensor, number>();
  const steps: { op: string; args: unknown[] }[] = [];
  let failure: string | null = null;

  const fail = (why: string): never => {
    failure ??= why;
    throw new Untraceable(why);
  };

  // Most arrays a call sees are the very objects an earlier call wrote or a parameter's data:
  // found by identity first, by range (views) only when that fails.
  const tempOf = new Map<Float32Array, number>();
  let stateOf: Map<Float32Array, Tensor> | null = null;
  let stateBuffers: Set<ArrayBufferLike> | null = null;
  const stateOperand = (t: Tensor, a: Float32Array): Operand => {
    let id = stateIndex.get(t);
    if (id === undefined) {
      id = usedState.length;
      usedState.push(t);
      stateIndex.set(t, id);
    }
    return { src: 'state', id, offset: (a.byteOffset - t.data.byteOffset) / 4, len: a.length };
  };

  /** Where an array the call reads lives. */
  const locate = (a: Float32Array, op: string): Operand => {
    const known = tempOf.get(a);
    if (known !== undefined) return { src: 'temp', id: known, offset: 0, len: a.length };
    // Built at the first lookup, inside the forward, where the state tensors hold the arrays
    // the forward reads.
    stateOf ??= new Map(state.map((t) => [t.data, t]));
    const owner = stateOf.get(a);
    if (owner && owner.data === a) return stateOperand(owner, a);
    for (let t = temps.length - 1; t >= 0; t--) {
      if (contains(temps[t], a)) {
        return { src: 'temp', id: t, offset: (a.byteOffset - temps[t].byteOffset) / 4, len: a.length };
      }
    }
    if (contains(input, a))
      return { src: 'input', id: 0, offset: (a.byteOffset - input.byteOffset) / 4, len: a.length };
    for (const t of state) {
      if (contains(t.data, a)) return stateOperand(t, a);
    }
    return fail(
      `${op} reads an array made in JavaScript ` +
        "(neither the input, a parameter or buffer, nor an earlier kernel's output)",
    );
  };

  /** An array the call writes: part of an earlier temp, or a new one. */
  const written = (a: Float32Array, op: string): Operand => {
    const known = tempOf.get(a);
    if (known !== undefined) return { src: 'temp', id: known, offset: 0, len: a.length };
    for (let t = temps.length - 1; t >= 0; t--) {
      if (contains(temps[t], a)) {
        return { src: 'temp', id: t, offset: (a.byteOffset - temps[t].byteOffset) / 4, len: a.length };
      }
    }
    stateBuffers ??= new Set(state.map((t) => t.data.buffer));
    if (a.buffer === input.buffer || stateBuffers.has(a.buffer)) {
      fail(`${op} writes into the input or the model's parameters`);
    }
    temps.push({ buffer: a.buffer, byteOffset: a.byteOffset, length: a.length });
    tempOf.set(a, temps.length - 1);
    return { src: 'temp', id: temps.length - 1, offset: 0, len: a.length };
  };

  const record = (op: string, args: unknown[]): void => {
    const writes = WRITES[op];
    // Reads first: a call that reads and writes parts of one temp must see the earlier writer.
    const json = args.map((v, i) => {
      if (writes.includes(i)) return null;
      if (v instanceof Float32Array) return { operand: locate(v, op) };
      if (Array.isArray(v) && v.some((x) => x instanceof Float32Array)) {
        return v.map((x) =>
          x instanceof Float32Array ? { operand: locate(x, op) } : fail(`${op}: a list mixing arrays and values`),
        );
      }
      if (ArrayBuffer.isView(v)) return fail(`${op}: a ${v.constructor.name} argument`);
      return v === undefined ? null : v;
    });
    for (const i of writes) {
      const v = args[i];
      if (!(v instanceof Float32Array)) fail(`${op}: argument ${i} is not a Float32Array`);
      json[i] = { operand: written(v as Float32Array, op) };
    }
    steps.push({ op, args: json });
  };

  const stand = new Proxy(addon, {
    get(target, key) {
      const value = (target as Record<string | symbol, unknown>)[key];
      if (typeof value !== 'function' || typeof key !== 'string' || PURE.has(key)) return value;
      if (!(key in WRITES)) return () => fail(`${key} has no plan step`);
      const fn = value as (...a: unknown[]) => unknown;
      return (...args: unknown[]) => {
        record(key, args);
        return dry ? undefined : fn(...args);
      };
    },
  }) as Native;

  let out: unknown;
  try {
    out = withNative(stand, dry ? () => withCarvedAllocation(carver(), forward) : forward);
  } catch (e) {
    if (failure) throw new Untraceable(failure);
    throw e;
  }
  // A forward that caught the recorder's error still cannot be replayed.
  if (failure) throw new Untraceable(failure);
  const y = out as Tensor;
  if (!(y && typeof y === 'object' && (y as Tensor).data instanceof Float32Array && Array.isArray(y.shape))) {
    throw new Untraceable('the forward did not return one Tensor');
  }
  if (steps.length === 0) throw new Untraceable('the forward made no kernel calls');
  const output = locate(y.data, 'the output');
  const spec = JSON.stringify({
    inputLen: input.length,
    stateLens: usedState.map((t) => t.data.length),
    tempLens: temps.map((t) => t.length),
    steps,
    output,
  });
  return { spec, state: usedState, outputShape: [...y.shape], outputLen: y.data.length };
}
