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
import { contentToken, pin, Tensor, uninitialized, unpin } from '../tensor.js';
import { type Trace, trace, Untraceable } from './trace.js';

type CompiledPlan = InstanceType<Native['CompiledPlan']>;

/** Compiled plans kept per model (the most recently used traces). */
const KEEP = 4;
const compiled = new WeakMap<object, Map<string, CompiledPlan>>();
/** Guards of recent traces per model, each with the plan it gave (or why it could not). */
const guarded = new WeakMap<object, { guard: unknown[]; result: Runnable | string }[]>();

let epoch = 0;

/** Makes every model trace again before its next planned run (a process-wide setting changed). */
export function invalidatePlans(): void {
  epoch++;
}

/** Numbers, strings and the like, and arrays and plain objects of them (two levels deep). */
function plainData(v: unknown, depth: number): boolean {
  if (v === null || typeof v !== 'object') return typeof v !== 'function';
  if (depth === 0 || ArrayBuffer.isView(v)) return false;
  if (!Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype) return false;
  return Object.values(v).every((x) => plainData(x, depth - 1));
}

/** A module property as the guard compares it: plain data (options, geometry) by value. */
function guardValue(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return v;
  return plainData(v, 2) ? `json:${JSON.stringify(v)}` : v;
}

/** What a cached plan's validity depends on (see the top of this file). */
function guardOf(modules: readonly object[], state: readonly Tensor[], input: Tensor): unknown[] {
  const g: unknown[] = [epoch, input.shape.join()];
  for (const m of modules) {
    g.push(m, (m as { forward?: unknown }).forward);
    for (const [k, v] of Object.entries(m)) g.push(k, guardValue(v));
  }
  for (const t of state) g.push(t, t.shape.join());
  return g;
}

function sameGuard(a: unknown[], b: unknown[]): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
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
 * be planned: cached while the guard holds, else traced (dry) and compiled, reusing the compiled
 * plan of an identical earlier trace.
 */
export function compile(
  owner: object,
  modules: readonly object[],
  forward: () => unknown,
  input: Tensor,
  state: Tensor[],
): Runnable | string {
  const guard = guardOf(modules, state, input);
  const entries = guarded.get(owner) ?? [];
  guarded.set(owner, entries);
  const hit = entries.findIndex((e) => sameGuard(e.guard, guard));
  if (hit >= 0) {
    const [e] = entries.splice(hit, 1);
    entries.push(e);
    return e.result;
  }
  const result = traceAndCompile(owner, forward, input, state);
  if (entries.length >= KEEP) release(entries.shift()?.result);
  entries.push({ guard, result });
  return result;
}

/** The compiled plan `owner`'s most recent planned forward ran, with its trace (for tools). */
export function recentPlan(owner: object): Runnable | undefined {
  const entries = guarded.get(owner) ?? [];
  for (let i = entries.length - 1; i >= 0; i--) {
    const r = entries[i].result;
    if (typeof r !== 'string') return r;
  }
  return undefined;
}

/** Frees the arena an evicted plan keeps between runs (a later run makes a new one). */
function release(result: Runnable | string | undefined): void {
  if (result && typeof result !== 'string') result.plan.releaseArena();
}

function traceAndCompile(owner: object, forward: () => unknown, input: Tensor, state: Tensor[]): Runnable | string {
  let t: Trace;
  try {
    t = trace(forward, input.data, state, true);
  } catch (e) {
    if (e instanceof Untraceable) return e.message;
    throw e;
  }
  const plans = compiled.get(owner) ?? new Map<string, CompiledPlan>();
  compiled.set(owner, plans);
  let plan = plans.get(t.spec);
  if (plan) {
    plans.delete(t.spec); // most recently used last
  } else {
    try {
      plan = new addon.CompiledPlan(t.spec);
    } catch (e) {
      return `the binding refused the plan: ${(e as Error).message}`;
    }
    if (plans.size >= KEEP) {
      const oldest = plans.keys().next().value as string;
      plans.get(oldest)?.releaseArena();
      plans.delete(oldest);
    }
  }
  plans.set(t.spec, plan);
  return { plan, trace: t };
}

/**
 * Runs a compiled plan on `input` off the JavaScript thread. `arrays` gives the state array to
 * read for each state tensor (the ones predict() pinned when it started), so every chunk of a
 * predict sees the weights as they were at its start.
 */
export async function run(r: Runnable, input: Tensor, arrays: Map<Tensor, Float32Array>): Promise<Tensor> {
  const out = uninitialized(r.trace.outputLen, 'predict');
  const state = r.trace.state.map((t) => arrays.get(t) ?? t.data);
  pin(state);
  try {
    await r.plan.run([input.data], state, [out], null, null, state.map(contentToken));
  } finally {
    unpin(state);
  }
  return new Tensor(out, r.trace.outputShape);
}
