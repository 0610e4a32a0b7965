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
// A training step is traced the same way (trainingTrace below: forward, loss, backward and the
// optimizer's update), always dry and once per step, so everything its JavaScript does besides
// kernel calls (the optimizer's step counts, a scheduler's rate, batch norm's counter, the
// random seeds of dropout) happens once per step, as eagerly. Its state is every array that
// outlives the step: the model's parameters and buffers, the optimizer's moments, and arrays
// made for them during the step (a copy on write, a new moment buffer); the step writes those in
// place.
//
// A dry trace records without computing: the forward's JavaScript runs (shapes, allocation,
// fusion decisions) but no kernel does, so tracing costs a little JavaScript, not a forward. It
// is only valid for forwards that never read tensor values in JavaScript to decide what to do;
// the zoo's and Sequential's do not, and a model that does can opt out (`predict(x, { plan:
// false })`).
import { type Native, addon, withNative } from '../native.js';
import { type Tensor, withCarvedAllocation, withPersistentHook } from '../tensor.js';

/** The entries a plan can replay, with the positions of the arguments each writes. */
const WRITES: Record<string, readonly number[]> = {
  // Inference.
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
  transpose: [3],
  padForward: [6],
  binaryNd: [5],
  sumTo: [3],
  gatherForward: [3],
  matmulBatched: [2],
  // Int8 inference (src/quant).
  quantizeU8: [1],
  dequantizeU8: [1],
  qconv2dForward: [5],
  maxPool2dU8: [1],
  avgPool2dU8: [1],
  adaptiveAvgPool2dU8: [1],
  addU8: [2],
  concatU8: [1],
  reluU8: [0],
  // Training: the forward's saved values, the backward, the optimizer's in-place updates.
  conv2dBackwardData: [2],
  conv2dBackwardWeight: [2, 3],
  batchNorm2dForwardTrain: [3, 4, 5, 6, 7],
  batchNorm2dBackward: [5, 6, 7],
  maxPool2dForward: [1, 2],
  maxPool2dBackward: [2],
  avgPool2dBackward: [1],
  adaptiveAvgPool2dBackward: [1],
  linearBackward: [3, 4, 5],
  activationBackward: [4],
  softmaxBackward: [2],
  crossEntropyForward: [3, 4, 6],
  crossEntropyBackward: [4],
  dropoutForward: [1, 2],
  dropoutBackward: [2],
  broadcastBinaryBackward: [6, 7],
  padBackward: [5],
  gatherBackward: [3],
  splitChannels: [1],
  lrnBackward: [4],
  accumulateGrad: [0],
  fill: [0],
  copy: [1],
  assertFinite: [],
  clipGradNorm: [0],
  sgdStep: [0, 2],
  adamStep: [0, 2, 3, 4],
  rmspropStep: [0, 2, 3, 4],
  adagradStep: [0, 2],
  adadeltaStep: [0, 2, 3],
};

/** Whether `op` is a binding entry a plan can replay (a kernel call, not a helper or a class). */
export function isPlanStep(op: string): boolean {
  return Object.hasOwn(WRITES, op);
}

/** Entries a graph traced for export may hold that no plan runs yet. */
const GRAPH_ONLY: Record<string, readonly number[]> = {
  convTranspose2dForward: [3],
};

/** Entries that only compute sizes or report settings: they run as they are during a trace. */
const PURE = new Set([
  'conv2dOutputSize',
  'convTranspose2dOutputSize',
  'pool2dOutputSize',
  'paddedShape',
  'broadcastShape',
  'nativeInfo',
  'int8Path',
]);

export interface Operand {
  src: 'input' | 'state' | 'temp' | 'const';
  id: number;
  offset: number;
  len: number;
}

interface Region {
  buffer: ArrayBufferLike;
  byteOffset: number;
  length: number;
}

/** An array a plan reads or writes: float32, or int32 (labels, max-pool indices) as its bytes. */
type Data = Float32Array | Int32Array;

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
 * chunks, so their pages are never touched. `chunks` collects every buffer handed out.
 */
function carver(chunks: Set<ArrayBufferLike>, pool: Float32Array[] = []): (n: number) => Float32Array {
  let size = 1 << 24;
  let chunk: Float32Array = new Float32Array(0);
  let next = 0;
  let used = 0;
  return (n) => {
    if (n > 1 << 28) {
      const own = new Float32Array(n);
      chunks.add(own.buffer);
      return own;
    }
    if (used + n > chunk.length) {
      // The pool's chunks first (a training step traces every step: asking the allocator for
      // a gigabyte each time made V8 collect garbage every few steps), then new ones.
      while (next < pool.length && pool[next].length < n) next++;
      if (next < pool.length) {
        chunk = pool[next++];
      } else {
        while (size < n) size *= 2;
        chunk = new Float32Array(Math.max(size, pool.at(-1)?.length ?? 0));
        pool.push(chunk);
        next = pool.length;
      }
      chunks.add(chunk.buffer);
      size = Math.min(chunk.length * 2, 1 << 28);
      used = 0;
    }
    const a = chunk.subarray(used, used + n);
    used += Math.ceil(n / 16) * 16;
    return a;
  };
}

function contains(r: Region, a: Data): boolean {
  return (
    r.buffer === a.buffer && a.byteOffset >= r.byteOffset && a.byteOffset + a.length * 4 <= r.byteOffset + r.length * 4
  );
}

/** What a trace records: the plan's JSON parts and the arrays and tensors it found. */
export interface Recording {
  steps: { op: string; args: unknown[] }[];
  temps: Region[];
  /** State by first use: tensors (inference) or arrays (training). */
  usedState: (Tensor | Float32Array)[];
  /** Arrays made in JavaScript that the forward read, by first use (graph traces only). */
  constants: Data[];
}

interface Options {
  /** Record without running the kernels (outputs carved, never written). */
  dry: boolean;
  /** A training step: state is every array that outlives it, written in place by its steps. */
  training: boolean;
  /** Chunks a dry trace carves from, kept from earlier traces (see carver). */
  pool?: Float32Array[];
  /**
   * Record arrays made in JavaScript as constants (operand src 'const') instead of failing: a
   * graph for export holds their values, as torch.jit.trace does. A plan never takes them.
   */
  constants?: boolean;
}

/**
 * Runs `forward` under the recorder. `inputs` are the arrays the forward reads that each run
 * passes anew (the batch; the labels); `state` the model's parameters and buffers (for a
 * training step also `extraState`, the optimizer's moments). Throws Untraceable (with the
 * reason) when the forward cannot be replayed.
 */
function record(
  forward: () => unknown,
  inputs: Data[],
  state: readonly Tensor[],
  extraState: Float32Array[],
  opts: Options,
): { out: unknown; rec: Recording; locate: (a: Data, op: string) => Operand } {
  const { dry, training } = opts;
  const temps: Region[] = [];
  const usedState: (Tensor | Float32Array)[] = [];
  const constants: Data[] = [];
  const constIndex = new Map<Data, number>();
  const stateIndex = new Map<Tensor | Float32Array, number>();
  const steps: { op: string; args: unknown[] }[] = [];
  const carved = new Set<ArrayBufferLike>();
  let failure: string | null = null;

  const fail = (why: string): never => {
    failure ??= why;
    throw new Untraceable(why);
  };

  const stateId = (key: Tensor | Float32Array): number => {
    let id = stateIndex.get(key);
    if (id === undefined) {
      id = usedState.length;
      usedState.push(key);
      stateIndex.set(key, id);
    }
    return id;
  };
  const stateOperand = (t: Tensor, a: Data): Operand => ({
    src: 'state',
    id: stateId(t),
    offset: (a.byteOffset - t.data.byteOffset) / 4,
    len: a.length,
  });

  // A training step's state, by array: the model's and the optimizer's arrays at the start, and
  // those made for them during the step (withPersistentHook).
  const knownSet = new Set<Float32Array>();
  const knownIn = new Map<ArrayBufferLike, Float32Array[]>();
  const noteKnown = (k: Float32Array): void => {
    if (knownSet.has(k)) return;
    knownSet.add(k);
    const list = knownIn.get(k.buffer) ?? [];
    knownIn.set(k.buffer, list);
    list.push(k);
  };
  if (training) for (const k of [...state.map((t) => t.data), ...extraState]) noteKnown(k);
  const arrayState = (a: Data): Operand | null => {
    if (a instanceof Float32Array && knownSet.has(a)) return { src: 'state', id: stateId(a), offset: 0, len: a.length };
    for (const k of knownIn.get(a.buffer) ?? []) {
      if (contains(k, a)) {
        return { src: 'state', id: stateId(k), offset: (a.byteOffset - k.byteOffset) / 4, len: a.length };
      }
    }
    return null;
  };

  // Most arrays a call sees are the very objects an earlier call wrote or a parameter's data:
  // found by identity first, by range (views) only when that fails.
  const tempOf = new Map<Data, number>();
  let stateOf: Map<Float32Array, Tensor> | null = null;
  let stateBuffers: Set<ArrayBufferLike> | null = null;
  // Temps per buffer, sorted by offset (they never overlap: a write into part of a temp is that
  // temp), so the temp holding a view is found by binary search, not by a scan of every temp.
  const tempsIn = new Map<ArrayBufferLike, number[]>();
  const addTemp = (a: Data): number => {
    const id = temps.push({ buffer: a.buffer, byteOffset: a.byteOffset, length: a.length }) - 1;
    tempOf.set(a, id);
    const list = tempsIn.get(a.buffer) ?? [];
    tempsIn.set(a.buffer, list);
    let at = list.length;
    while (at > 0 && temps[list[at - 1]].byteOffset > a.byteOffset) at--;
    list.splice(at, 0, id);
    return id;
  };
  const tempRange = (a: Data): Operand | null => {
    const list = tempsIn.get(a.buffer);
    if (!list) return null;
    let lo = 0;
    let hi = list.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (temps[list[mid]].byteOffset <= a.byteOffset) lo = mid;
      else hi = mid - 1;
    }
    const t = list[lo];
    if (!contains(temps[t], a)) return null;
    return { src: 'temp', id: t, offset: (a.byteOffset - temps[t].byteOffset) / 4, len: a.length };
  };
  const inputRange = (a: Data): Operand | null => {
    for (let k = 0; k < inputs.length; k++) {
      if (contains(inputs[k], a)) {
        return { src: 'input', id: k, offset: (a.byteOffset - inputs[k].byteOffset) / 4, len: a.length };
      }
    }
    return null;
  };

  /** Where an array the call reads lives. */
  const locate = (a: Data, op: string): Operand => {
    const known = tempOf.get(a);
    if (known !== undefined) return { src: 'temp', id: known, offset: 0, len: a.length };
    if (training) {
      const st = arrayState(a) ?? tempRange(a) ?? inputRange(a);
      if (st) return st;
    } else {
      // Built at the first lookup, inside the forward, where the state tensors hold the arrays
      // the forward reads.
      stateOf ??= new Map(state.map((t) => [t.data, t]));
      const owner = a instanceof Float32Array ? stateOf.get(a) : undefined;
      if (owner && owner.data === a) return stateOperand(owner, a);
      const found = tempRange(a) ?? inputRange(a);
      if (found) return found;
      for (const t of state) {
        if (contains(t.data, a)) return stateOperand(t, a);
      }
    }
    if (opts.constants) {
      let id = constIndex.get(a);
      if (id === undefined) {
        id = constants.push(a) - 1;
        constIndex.set(a, id);
      }
      return { src: 'const', id, offset: 0, len: a.length };
    }
    return fail(
      `${op} reads an array made in JavaScript ` +
        "(neither the input, a parameter or buffer, nor an earlier kernel's output)",
    );
  };

  /** An array the call writes: part of an earlier temp, state (training), or a new temp. */
  const written = (a: Data, op: string): Operand => {
    const known = tempOf.get(a);
    if (known !== undefined) return { src: 'temp', id: known, offset: 0, len: a.length };
    const part = tempRange(a);
    if (part) return part;
    if (training) {
      const st = arrayState(a);
      if (st) return st;
      if (!carved.has(a.buffer)) fail(`${op} writes an array made in JavaScript`);
    } else {
      stateBuffers ??= new Set(state.map((t) => t.data.buffer));
      if (inputs.some((x) => x.buffer === a.buffer) || stateBuffers.has(a.buffer)) {
        fail(`${op} writes into the input or the model's parameters`);
      }
    }
    return { src: 'temp', id: addTemp(a), offset: 0, len: a.length };
  };

  const isData = (v: unknown): v is Data => v instanceof Float32Array || v instanceof Int32Array;
  const recordCall = (op: string, args: unknown[]): void => {
    const writes = WRITES[op] ?? GRAPH_ONLY[op];
    // Reads first: a call that reads and writes parts of one temp must see the earlier writer.
    const json = args.map((v, i) => {
      if (writes.includes(i)) return null;
      if (isData(v)) return { operand: locate(v, op) };
      if (Array.isArray(v) && v.some(isData)) {
        return v.map((x) => (isData(x) ? { operand: locate(x, op) } : fail(`${op}: a list mixing arrays and values`)));
      }
      if (ArrayBuffer.isView(v)) return fail(`${op}: a ${v.constructor.name} argument`);
      return v === undefined ? null : v;
    });
    for (const i of writes) {
      const v = args[i];
      if (v === null || v === undefined) continue; // an optional output left out
      if (Array.isArray(v) && v.length > 0 && v.every(isData)) {
        json[i] = v.map((x) => ({ operand: written(x, op) }));
      } else if (isData(v)) {
        json[i] = { operand: written(v, op) };
      } else {
        fail(`${op}: argument ${i} is not an array`);
      }
    }
    steps.push({ op, args: json });
  };

  const stand = new Proxy(addon, {
    get(target, key) {
      const value = (target as Record<string | symbol, unknown>)[key];
      if (typeof value !== 'function' || typeof key !== 'string' || PURE.has(key)) return value;
      if (!(key in WRITES) && !(opts.constants && key in GRAPH_ONLY)) return () => fail(`${key} has no plan step`);
      const fn = value as (...a: unknown[]) => unknown;
      return (...args: unknown[]) => {
        recordCall(key, args);
        return dry ? undefined : fn(...args);
      };
    },
  }) as Native;

  let out: unknown;
  const run = () => withNative(stand, dry ? () => withCarvedAllocation(carver(carved, opts.pool), forward) : forward);
  try {
    out = training ? withPersistentHook(noteKnown, run) : run();
  } catch (e) {
    if (failure) throw new Untraceable(failure);
    throw e;
  }
  // A forward that caught the recorder's error still cannot be replayed.
  if (failure) throw new Untraceable(failure);
  if (steps.length === 0) throw new Untraceable('the forward made no kernel calls');
  return { out, rec: { steps, temps, usedState, constants }, locate };
}

function isTensor(y: unknown): y is Tensor {
  return (
    !!y && typeof y === 'object' && (y as Tensor).data instanceof Float32Array && Array.isArray((y as Tensor).shape)
  );
}

function specOf(rec: Recording, inputs: Data[], outputs: Operand[]): string {
  return JSON.stringify({
    inputLens: inputs.map((x) => x.length),
    stateLens: rec.usedState.map((t) => (t instanceof Float32Array ? t.length : t.data.length)),
    tempLens: rec.temps.map((t) => t.length),
    steps: rec.steps,
    outputs,
  });
}

/**
 * Runs `forward` under the recorder and returns the plan it makes. `input` is the batch the
 * forward reads; `state` the model's parameters and buffers. Throws Untraceable (with the
 * reason) when the forward cannot be replayed.
 */
export function trace(forward: () => unknown, input: Float32Array, state: readonly Tensor[], dry: boolean): Trace {
  const { out, rec, locate } = record(forward, [input], state, [], { dry, training: false });
  if (!isTensor(out)) throw new Untraceable('the forward did not return one Tensor');
  const spec = specOf(rec, [input], [locate(out.data, 'the output')]);
  return { spec, state: rec.usedState as Tensor[], outputShape: [...out.shape], outputLen: out.data.length };
}

/** A forward traced for export: every kernel call with its operands, and the output. */
export interface GraphTrace {
  rec: Recording;
  output: Operand;
  outputShape: number[];
}

/**
 * Runs `forward` (computing, not dry: a constant made in JavaScript then holds the values it
 * would hold on this input) and returns every kernel call it made. Arrays made in JavaScript
 * that the forward reads become constants. Throws Untraceable when it cannot be replayed.
 */
export function traceGraph(forward: () => unknown, input: Float32Array, state: Tensor[]): GraphTrace {
  const { out, rec, locate } = record(forward, [input], state, [], { dry: false, training: false, constants: true });
  if (!isTensor(out)) throw new Untraceable('the forward did not return one Tensor');
  return { rec, output: locate(out.data, 'the output'), outputShape: [...out.shape] };
}

/** A traced training step: its plan's steps, the arrays each run passes, its outputs. */
export interface StepTrace {
  /** The plan's JSON without the steps' arguments: what a compiled plan is cached by. */
  structure: string;
  /** Each step's arguments as JSON (a run replaces the steps whose arguments changed). */
  args: string[];
  /** The plan's JSON (for compiling; made only when no compiled plan has this structure). */
  spec: () => string;
  /** The state arrays, in plan order. */
  state: Float32Array[];
  /** The tensors `step` returned, whose values the run writes back. */
  outputs: Tensor[];
}

/**
 * Traces one training step, dry: `step` runs its JavaScript (forward, loss, backward, optimizer
 * update) with every kernel call recorded and none run, and returns the tensors a run must
 * produce (the loss, the logits). `inputs` are the batch and labels; `state` the model's
 * parameters and buffers, `extraState` the optimizer's arrays. `pool` keeps the chunks the
 * trace carves its arrays from for the next trace: nothing ever writes them, and a step keeps
 * no carved array past its trace (the values a run produces come back in new arrays).
 */
export function traceStep(
  step: () => Tensor[],
  inputs: Data[],
  state: Tensor[],
  extraState: Float32Array[],
  pool: Float32Array[],
): StepTrace {
  const { out, rec, locate } = record(step, inputs, state, extraState, { dry: true, training: true, pool });
  if (!Array.isArray(out) || !out.every(isTensor)) throw new Untraceable('the step did not return tensors');
  const outputs = out.map((t) => locate(t.data, 'an output'));
  const args = rec.steps.map((s) => JSON.stringify(s.args));
  // Operands stay; every other argument is left out of the structure (a run may replace it).
  const shape = rec.steps.map((s) => [s.op, s.args.map((a) => (isOperandJson(a) ? a : null))]);
  const structure = JSON.stringify([
    inputs.map((x) => x.length),
    rec.usedState.map((t) => (t as Float32Array).length),
    rec.temps.map((t) => t.length),
    shape,
    outputs,
  ]);
  const spec = () => specOf(rec, inputs, outputs);
  return { structure, args, spec, state: rec.usedState as Float32Array[], outputs: out };
}

function isOperandJson(a: unknown): boolean {
  if (Array.isArray(a)) return a.length > 0 && a.every(isOperandJson);
  return !!a && typeof a === 'object' && 'operand' in a;
}
