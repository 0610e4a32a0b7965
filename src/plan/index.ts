// Compiled plans for inference: a model's eval forward for one input shape, traced once into the
// kernel calls it makes (trace.ts) and run by the binding as one async task on the kernel pool,
// so predict() leaves the JavaScript thread free while the model computes.
//
// A plan is reused while a guard holds, as torch.compile guards its graphs: the same input
// shape, the same modules (identity, forward function, every own property of each: modes,
// hyper-parameters, and nested plain objects by value) and the same parameter and buffer tensors
// (identity and shape). Anything else traces again, so a replaced layer, another mode, a changed
// option or a new input shape never runs a stale plan. A process-wide setting that forwards read
// (inference fusion) calls invalidatePlans(). The weights are not part of a plan: each run reads
// the model's current parameter arrays, with a token naming each array's contents
// (contentToken); convs and linear layers keep their weights prepared for the GEMM from one run
// to the next while the weight's token stays the same, so a predict does not repack every
// weight of the model.
import { addon, type Native } from '../native.js';
import { contentGeneration, contentToken, pin, Tensor, uninitialized, unpin } from '../tensor.js';
import { type Trace, trace, Untraceable } from './trace.js';

type CompiledPlan = InstanceType<Native['CompiledPlan']>;

/** Compiled plans kept per model (the most recently used traces). */
const KEEP = 4;
const compiled = new WeakMap<object, Map<string, Promise<CompiledPlan>>>();
/**
 * Guards of recent traces per model, each with the plan it gives (or why it could not): a
 * promise while the plan compiles, so concurrent forwards of one trace share one compile.
 */
const guarded = new WeakMap<object, GuardEntry[]>();
interface GuardEntry {
  guard: unknown[];
  result: Promise<Runnable | string>;
  /** The result once the promise settled. */
  settled?: Runnable | string;
}

let epoch = 0;

/** Makes every model trace again before its next planned run (a process-wide setting changed). */
export function invalidatePlans(): void {
  epoch++;
}

/** Numbers, strings and the like, and arrays and plain objects of them (two levels deep). */
function plainData(v: unknown, depth: number): boolean {
  if (v === null || typeof v !== 'object') return typeof v !== 'function';
  if (depth === 0) return false;
  if (!Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype) return false;
  return Object.values(v).every((x) => plainData(x, depth - 1));
}

/** A copy of plain data (options, geometry, a shape), which the guard compares by value. */
class PlainCopy {
  constructor(readonly value: unknown) {}
}

/** A plain object as a PlainCopy keeps it: its own keys in order, and their values' copies. */
class KeptObject {
  constructor(
    readonly keys: string[],
    readonly values: unknown[],
  ) {}
}

function copyPlain(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(copyPlain);
  const keys = Object.keys(v);
  return new KeptObject(
    keys,
    keys.map((k) => copyPlain((v as Record<string, unknown>)[k])),
  );
}

/**
 * Whether `live` is plain data equal to the copy `kept` (same keys in the same order). Every
 * predict compares its model's options this way, so it allocates nothing.
 */
function samePlain(kept: unknown, live: unknown): boolean {
  if (kept === null || typeof kept !== 'object') return Object.is(kept, live);
  if (live === null || typeof live !== 'object') return false;
  if (Array.isArray(kept)) {
    if (!Array.isArray(live) || live.length !== kept.length) return false;
    for (let i = 0; i < kept.length; i++) if (!samePlain(kept[i], live[i])) return false;
    return true;
  }
  if (Array.isArray(live) || Object.getPrototypeOf(live) !== Object.prototype) return false;
  const { keys, values } = kept as KeptObject;
  let n = 0;
  for (const key in live) {
    if (!Object.hasOwn(live, key)) continue;
    if (keys[n] !== key || !samePlain(values[n], (live as Record<string, unknown>)[key])) return false;
    n++;
  }
  return n === keys.length;
}

/** A module property as the guard keeps it: plain data (options, geometry) by value. */
function guardValue(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  return plainData(v, 2) ? new PlainCopy(copyPlain(v)) : v;
}

/** What a cached plan's validity depends on (see the top of this file). */
function guardOf(modules: readonly object[], state: readonly Tensor[], input: Tensor): unknown[] {
  const g: unknown[] = [epoch, new PlainCopy([...input.shape])];
  for (const m of modules) {
    g.push(m, (m as { forward?: unknown }).forward);
    for (const [k, v] of Object.entries(m)) g.push(k, guardValue(v));
    g.push(GUARD_END);
  }
  for (const t of state) g.push(t, new PlainCopy([...t.shape]));
  return g;
}

/** Ends a module's properties in a guard. */
const GUARD_END = Symbol('end of module');

/**
 * Whether the guard `g` holds for the model as it is now: the same walk as guardOf, compared as
 * it goes, with nothing built (every predict checks the guard of the model's plan first).
 */
function holds(g: readonly unknown[], modules: readonly object[], state: readonly Tensor[], input: Tensor): boolean {
  let i = 0;
  if (g[i++] !== epoch || !same(g[i++], input.shape)) return false;
  for (const m of modules) {
    if (g[i++] !== m || g[i++] !== (m as { forward?: unknown }).forward) return false;
    const keys = Object.keys(m);
    const values = Object.values(m);
    for (let j = 0; j < keys.length; j++) if (g[i++] !== keys[j] || !same(g[i++], values[j])) return false;
    if (g[i++] !== GUARD_END) return false;
  }
  for (const t of state) if (g[i++] !== t || !same(g[i++], t.shape)) return false;
  return i === g.length;
}

/** Whether the live value `live` is what the guard kept as `kept` (see guardValue). */
function same(kept: unknown, live: unknown): boolean {
  if (kept instanceof PlainCopy) return samePlain(kept.value, live);
  if (!Object.is(kept, live)) return false;
  // An object kept by identity that is plain data now (an array whose function was replaced in
  // place) would be kept by value: not the same guard.
  return live === null || typeof live !== 'object' || !plainData(live, 2);
}

/** How the last predict() of a model ran; see planInfo(). */
export interface PlanInfo {
  /** True when it ran compiled plans off the JavaScript thread, false when it ran eagerly. */
  planned: boolean;
  /** Why it ran eagerly (an op with no plan step, an array made in JavaScript, opted out). */
  reason?: string;
  /** Kernel calls per run of the plan. */
  steps?: number;
  /** Bytes of the plan's arena for intermediate values. */
  arenaBytes?: number;
  /**
   * Bytes of conv and linear weights the plan keeps prepared (packed for the GEMM, or
   * Winograd-transformed) between runs, as of the end of the last run.
   */
  preparedBytes?: number;
}

const infos = new WeakMap<object, PlanInfo>();

/** How `model`'s last predict() ran (compiled or eager, and why), or null before any. */
export function planInfo(model: object): PlanInfo | null {
  return infos.get(model) ?? null;
}

export function notePlanInfo(model: object, info: PlanInfo): void {
  infos.set(model, info);
}

/** A compiled plan with what its runs need: the state tensors it reads and the output shape. */
export interface Runnable {
  plan: CompiledPlan;
  trace: Trace;
}

/**
 * The compiled plan for `forward` (the model's eval forward on `input`) or the reason it cannot
 * be planned: cached while the guard holds, else traced (dry, here, on this thread) and
 * compiled (off it), reusing the compiled plan of an identical earlier trace.
 */
export function compile(
  owner: object,
  modules: readonly object[],
  forward: () => unknown,
  input: Tensor,
  state: readonly Tensor[],
): Promise<Runnable | string> {
  const entries = guarded.get(owner) ?? [];
  guarded.set(owner, entries);
  const hit = entries.findIndex((e) => holds(e.guard, modules, state, input));
  if (hit >= 0) {
    const [e] = entries.splice(hit, 1);
    entries.push(e);
    return e.result;
  }
  const guard = guardOf(modules, state, input);
  let t: Trace;
  try {
    t = trace(forward, input.data, state, true);
  } catch (e) {
    if (!(e instanceof Untraceable)) throw e;
    const reason = e.message;
    return remember(entries, { guard, result: Promise.resolve(reason), settled: reason });
  }
  const entry: GuardEntry = { guard, result: planFor(owner, t) };
  void entry.result.then((r) => {
    entry.settled = r;
  });
  return remember(entries, entry);
}

/** Keeps `entry` as `entries`' most recent, evicting the oldest past KEEP; gives its result. */
function remember(entries: GuardEntry[], entry: GuardEntry): Promise<Runnable | string> {
  if (entries.length >= KEEP) void entries.shift()?.result.then(release, () => {});
  entries.push(entry);
  return entry.result;
}

/** The compiled plan `owner`'s most recent planned forward ran, with its trace (for tools). */
export function recentPlan(owner: object): Runnable | undefined {
  const entries = guarded.get(owner) ?? [];
  for (let i = entries.length - 1; i >= 0; i--) {
    const r = entries[i].settled;
    if (r !== undefined && typeof r !== 'string') return r;
  }
  return undefined;
}

/** Frees the arena an evicted plan keeps between runs (a later run makes a new one). */
function release(result: Runnable | string | undefined): void {
  if (result && typeof result !== 'string') releasePlan(result.plan);
}

/**
 * The plan for trace `t`: an identical earlier trace's, or compiled now on a thread of its own
 * (milliseconds for a zoo model), so the event loop keeps turning meanwhile.
 */
async function planFor(owner: object, t: Trace): Promise<Runnable | string> {
  const plans = compiled.get(owner) ?? new Map<string, Promise<CompiledPlan>>();
  compiled.set(owner, plans);
  let plan = plans.get(t.spec);
  try {
    if (plan) {
      plans.delete(t.spec); // most recently used last
    } else {
      plan = addon.CompiledPlan.compile(t.spec);
      if (plans.size >= KEEP) {
        const oldest = plans.keys().next().value as string;
        void plans.get(oldest)?.then(releasePlan, () => {});
        plans.delete(oldest);
      }
    }
    plans.set(t.spec, plan);
    return { plan: await plan, trace: t };
  } catch (e) {
    // Never rejects: a plan the binding refuses is a reason to run eagerly.
    if (plan && plans.get(t.spec) === plan) plans.delete(t.spec);
    return `the binding refused the plan: ${(e as Error).message}`;
  }
}

/**
 * A model's state arrays as one inference session pins them: `arrays[i]` is `tensors[i].data`
 * as it was when the session started, `set` the same arrays for pinSet.
 */
export interface StateArrays {
  tensors: readonly Tensor[];
  arrays: readonly Float32Array[];
  set: ReadonlySet<Float32Array>;
}

const kept = new WeakMap<object, StateArrays>();

/**
 * `owner`'s state arrays now (`tensors` its state tensors): the previous session's while every
 * tensor still has the same array, so a predict neither rebuilds the set nor pins array by
 * array (what a model's weights look like between predicts of a server that does not train).
 */
export function stateArrays(owner: object, tensors: readonly Tensor[]): StateArrays {
  const k = kept.get(owner);
  if (k && k.tensors === tensors && tensors.every((t, i) => t.data === k.arrays[i])) return k;
  const arrays = tensors.map((t) => t.data);
  const s = { tensors, arrays, set: new Set(arrays) };
  kept.set(owner, s);
  return s;
}

/**
 * What a plan's last run passed: its state arrays and their tokens, for the `of` state arrays
 * at content generation `generation`; the next run with both the same passes them again.
 */
const passed = new WeakMap<
  Runnable,
  {
    of: StateArrays;
    generation: number;
    state: Float32Array[];
    tokens: Float64Array;
    /** State arrays from outside the session, and their places in the trace's state. */
    extra: Float32Array[];
    extraAt: number[];
  }
>();

/** The state arrays and their content tokens a run of `r` passes, given the session's `s`. */
function runState(r: Runnable, s: StateArrays): { state: Float32Array[]; tokens: Float64Array; extra: Float32Array[] } {
  const p = passed.get(r);
  const generation = contentGeneration();
  // A state tensor outside the session's (none in ferroconv's modules) is read from the tensor,
  // so its array may differ from run to run: that run computes afresh.
  if (p?.of === s && p.generation === generation && p.extra.every((a, i) => a === r.trace.state[p.extraAt[i]].data))
    return p;
  const index = new Map(s.tensors.map((t, i) => [t, i]));
  const extra: Float32Array[] = [];
  const extraAt: number[] = [];
  const state = r.trace.state.map((t, i) => {
    const k = index.get(t);
    if (k !== undefined) return s.arrays[k];
    extra.push(t.data);
    extraAt.push(i);
    return t.data;
  });
  const next = { of: s, generation, state, tokens: Float64Array.from(state, contentToken), extra, extraAt };
  passed.set(r, next);
  return next;
}

/**
 * Runs a compiled plan on `input` off the JavaScript thread, reading the state arrays of `s`
 * (pinned by the caller's inference session from its start to its end, so every chunk of a
 * predict sees the weights as they were at its start).
 */
export async function run(r: Runnable, input: Tensor, s: StateArrays): Promise<Tensor> {
  const out = uninitialized(r.trace.outputLen, 'predict');
  const { state, tokens, extra } = runState(r, s);
  // Only a state array from outside the session is pinned here.
  pin(extra);
  try {
    bindState(r.plan, state);
    await r.plan.run([input.data], null, [out], null, null, tokens);
  } finally {
    unpin(extra);
  }
  return new Tensor(out, r.trace.outputShape);
}

/** The state arrays each plan holds from its last bindState, and their lengths then. */
const bound = new WeakMap<CompiledPlan, { arrays: Float32Array[]; lens: number[] }>();

/**
 * Makes `plan` hold `state` for the runs that pass none, unless it holds these very arrays at
 * their lengths then already (a detached array's length reads 0): a predict then hands the
 * binding none of the hundreds of state arrays of a zoo model (DenseNet-121: 606, 0.3 ms of
 * the JavaScript thread per call). The plan keeps them until the next binding or its release,
 * so an array the model has since replaced lives on until then.
 */
function bindState(plan: CompiledPlan, state: Float32Array[]): void {
  const b = bound.get(plan);
  if (b && b.arrays.length === state.length && state.every((a, i) => a === b.arrays[i] && a.length === b.lens[i]))
    return;
  plan.bindState(state);
  bound.set(plan, { arrays: state, lens: state.map((a) => a.length) });
}

/** Frees what a plan keeps between runs: its arena, prepared weights and bound state. */
function releasePlan(plan: CompiledPlan): void {
  plan.releaseArena();
  bound.delete(plan);
}
