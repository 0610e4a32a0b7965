// Compiled training steps: fit() runs each step (forward, loss, backward, optimizer update) as
// one compiled plan off the JavaScript thread. Every step is traced dry (trace.ts traceStep):
// its JavaScript runs once, as eagerly, with the kernels recorded instead of run, so the
// optimizer's step counts, a scheduler's learning rate, batch norm's counter and dropout's seeds
// are all this step's. The trace is cheap next to the step; compiling is not, so compiled plans
// are kept per model by the trace's structure (operands and lengths), and a run replaces the
// steps whose scalar arguments changed since the plan was compiled (a seed, a step count).
//
// A run never writes the arrays JavaScript sees: the updated parameters, moments and statistics
// go to a second set of arrays (each first a copy of its current one, made off the thread),
// which replace the current ones when the step is done; the replaced ones are the next step's
// second set. So whatever reads the model during a step (a predict, a save, a timer) sees the
// weights before it, whole; an array JavaScript replaced meanwhile (a loadStateDict during the
// step) is kept, not overwritten by the step's result. (A reference to `p.data` kept across
// steps sees later weights, as it did when steps updated the arrays in place.)
//
// A trace that fails part-way (an op with no plan step, an array made in JavaScript) has run
// some of the step's JavaScript: what it did is put back (the random generator, batch norm's
// counters, the optimizer's bookkeeping, the gradients) and the step runs eagerly.
import type { Module } from '../nn/module.js';
import { addon, type Native } from '../native.js';
import { globalRng } from '../random.js';
import { contentChanged, isPinned, pin, Tensor, unpin, uninitialized } from '../tensor.js';
import { traceStep, Untraceable } from './trace.js';

type CompiledPlan = InstanceType<Native['CompiledPlan']>;

/** What a compiled step needs of the optimizer (src/optim's optimizers provide it). */
export interface PlannableOptimizer {
  stateArrays(): Float32Array[];
  snapshotState(): () => void;
  replaceArrays(replacements: Map<Float32Array, Float32Array>): void;
}

export function isPlannable(o: object): o is PlannableOptimizer {
  const x = o as Partial<PlannableOptimizer>;
  return (
    typeof x.stateArrays === 'function' &&
    typeof x.snapshotState === 'function' &&
    typeof x.replaceArrays === 'function'
  );
}

/** Compiled steps kept per model (a last, shorter batch has its own). */
const KEEP = 4;
const compiled = new WeakMap<object, Map<string, { plan: CompiledPlan; args: string[] }>>();
/** Per model, the chunks its step traces carve arrays from (trace.ts carver). */
const pools = new WeakMap<object, Float32Array[]>();
/**
 * Per model, the arrays the last step replaced, by length: the next step writes into them
 * rather than allocating its ~100 MB (for ResNet-18) anew, which cost milliseconds on the
 * JavaScript thread and a garbage collection every few steps. An array a run is still holding
 * (a predict's) is never reused.
 */
const spares = new WeakMap<object, Map<number, Float32Array[]>>();

function spareOf(model: object, n: number): Float32Array {
  const list = spares.get(model)?.get(n);
  while (list?.length) {
    const a = list.pop()!;
    if (!isPinned(a)) return a;
  }
  return uninitialized(n, 'fit');
}

/**
 * The compiled training step `model` ran last (for bench/profile_plan.ts --train: its
 * `setProfiling` and `stepMs`), or undefined before any.
 */
export function recentTrainPlan(model: object): CompiledPlan | undefined {
  const plans = compiled.get(model);
  if (!plans || plans.size === 0) return undefined;
  return [...plans.values()][plans.size - 1].plan;
}

/** The step's JavaScript-side effects a failed trace puts back. */
function snapshot(model: Module, restoreOptimizer: () => void): () => void {
  const rng = globalRng.getState();
  const counters = model
    .namedBuffers()
    .filter(([, b]) => b.size === 1)
    .map(([, b]) => [b, b.data, b.data[0]] as const);
  const grads = model.parameters().map((p) => [p, p.grad] as const);
  return () => {
    globalRng.setState(rng);
    for (const [b, data, v] of counters) {
      (b as { data: Float32Array }).data = data;
      data[0] = v;
    }
    for (const [p, g] of grads) p.grad = g;
    restoreOptimizer();
  };
}

/**
 * Runs one training step compiled: traces `step` (which returns the loss and the logits) and
 * runs its plan off the JavaScript thread. Resolves to the values of the tensors `step`
 * returned, or to the reason it could not plan (the step's JavaScript undone: run it eagerly).
 * Afterwards every parameter's `.grad` is null (the gradients lived in the plan's arena).
 */
export async function runStep(
  model: Module,
  optimizer: PlannableOptimizer,
  step: () => Tensor[],
  inputs: (Float32Array | Int32Array)[],
): Promise<Tensor[] | string> {
  const restoreOptimizer = optimizer.snapshotState();
  const undo = snapshot(model, restoreOptimizer);
  const params = model.parameters();
  let traced: ReturnType<typeof traceStep>;
  let entry: { plan: CompiledPlan; args: string[] } | undefined;
  const plans = compiled.get(model) ?? new Map<string, { plan: CompiledPlan; args: string[] }>();
  compiled.set(model, plans);
  try {
    const pool = pools.get(model) ?? [];
    pools.set(model, pool);
    traced = traceStep(step, inputs, [...model.stateDict().values()], optimizer.stateArrays(), pool);
  } catch (e) {
    undo();
    if (e instanceof Untraceable) return e.message;
    throw e;
  }
  // Pinned from here: JavaScript writing a state array while the plan compiles or runs writes
  // a copy (tensor.ts writableData), so the step reads the weights its trace saw.
  pin(traced.state);
  try {
    entry = plans.get(traced.structure);
    if (entry) {
      plans.delete(traced.structure); // most recently used last
    } else {
      try {
        // Compiled on a thread of its own (milliseconds for a zoo model's step), so the event
        // loop keeps turning during the first step too.
        entry = { plan: await addon.CompiledPlan.compile(traced.spec()), args: traced.args };
      } catch (e) {
        undo();
        if (e instanceof Error && e.message.startsWith('CompiledPlan'))
          return `the binding refused the plan: ${e.message}`;
        throw e;
      }
      if (plans.size >= KEEP) {
        const oldest = plans.keys().next().value as string;
        plans.get(oldest)?.plan.releaseArena();
        plans.delete(oldest);
      }
    }
    plans.set(traced.structure, entry);
    return await runCompiled(model, optimizer, traced, entry, inputs, params, restoreOptimizer);
  } finally {
    unpin(traced.state);
  }
}

/** Runs the compiled step `entry` for `traced`, then swaps the updated arrays in. */
async function runCompiled(
  model: Module,
  optimizer: PlannableOptimizer,
  traced: ReturnType<typeof traceStep>,
  entry: { plan: CompiledPlan; args: string[] },
  inputs: (Float32Array | Int32Array)[],
  params: Tensor[],
  restoreOptimizer: () => void,
): Promise<Tensor[]> {
  for (const p of params) p.grad = null;
  const changed: string[] = [];
  traced.args.forEach((a, i) => {
    if (a !== entry.args[i]) changed.push(`[${i},${a}]`);
  });
  const outputs = traced.outputs.map((t) => uninitialized(t.size, 'fit'));
  const written = entry.plan.writtenState.map((k) => traced.state[k]);
  const updated = written.map((a) => spareOf(model, a.length));
  for (const a of updated) contentChanged(a); // the run writes new values into them
  // Labels travel as the bytes of an Int32Array, seen as floats.
  const views = inputs.map((x) => (x instanceof Float32Array ? x : new Float32Array(x.buffer, x.byteOffset, x.length)));
  try {
    await entry.plan.run(views, traced.state, outputs, changed.length ? `[${changed.join(',')}]` : null, updated);
  } catch (e) {
    // Stopped before its update (the loss was not finite, say): as eagerly, the forward's
    // effects on the JavaScript side stay and the optimizer's bookkeeping does not.
    restoreOptimizer();
    throw e;
  }
  // The new arrays replace the old where nothing else replaced them meanwhile.
  const tensors = [...model.stateDict().values()];
  const owners = new Map(tensors.map((t) => [t.data, t] as const));
  const replacements = new Map<Float32Array, Float32Array>();
  written.forEach((old, j) => {
    const t = owners.get(old);
    if (t) (t as { data: Float32Array }).data = updated[j];
    else replacements.set(old, updated[j]);
  });
  if (replacements.size) optimizer.replaceArrays(replacements);
  // The old arrays become the next step's targets, unless something still holds one.
  const live = new Set(tensors.map((t) => t.data));
  for (const a of optimizer.stateArrays()) live.add(a);
  const byLen = spares.get(model) ?? new Map<number, Float32Array[]>();
  spares.set(model, byLen);
  for (const list of byLen.values()) list.length = 0;
  for (const old of written) {
    if (live.has(old)) continue;
    const list = byLen.get(old.length) ?? [];
    byLen.set(old.length, list);
    list.push(old);
  }
  return traced.outputs.map((t, k) => new Tensor(outputs[k], t.shape));
}
