// Define-by-run automatic differentiation. Each op (src/ops) computes its output eagerly and, when
// gradients are wanted, attaches a GradFn that knows its inputs. backward() walks the graph in
// reverse topological order, sums gradients per tensor, accumulates into leaves' `.grad`, and
// then drops the graph (gradFn links), so memory does not grow from one step to the next. A
// dropped node is marked (graphFreed), so a second backward through it throws, as in PyTorch,
// rather than silently computing nothing.
import { native } from './native.js';
import { type GradFn, Tensor, uninitialized } from './tensor.js';

let gradEnabled = true;

/** True unless inside noGrad(). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording anything (inference, optimizer updates). Nests; restores on throw. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Enables or disables recording globally; returns the previous setting. */
export function setGradEnabled(flag: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = flag;
  return prev;
}

/** True when an op with these inputs must record its backward. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) return false;
  for (const t of inputs) if (t?.requiresGrad) return true;
  return false;
}

/**
 * Attaches `backward` to `out` when any input requires grad (and recording is on). Returns `out`.
 * `backward` gets d(loss)/d(out) and returns one gradient (or null) per input, in order.
 */
export function record(
  name: string,
  out: Tensor,
  inputs: (Tensor | null)[],
  backward: (gradOutput: Float32Array) => (Float32Array | null)[],
): Tensor {
  if (!needsGrad(...inputs)) return out;
  const fn: GradFn = { name, inputs, backward };
  out.gradFn = fn;
  out.requiresGrad = true;
  hooks?.recorded?.(fn, out);
  return out;
}

/**
 * Watchers of the tape, for tools that read a model as it runs (summary's receptive fields,
 * per-layer backward timing): `recorded` sees every op recorded, `backward` runs each op's
 * backward in place of the plain call (and must call `run`).
 */
export interface TapeHooks {
  recorded?(fn: GradFn, out: Tensor): void;
  backward?(fn: GradFn, run: () => (Float32Array | null)[]): (Float32Array | null)[];
}

let hooks: TapeHooks | null = null;

/** Runs `fn` with the tape watched by `watch` (see TapeHooks); watches do not nest. */
export function watchTape<T>(watch: TapeHooks, fn: () => T): T {
  if (hooks) throw new Error('watchTape: the tape is already watched (watches do not nest)');
  hooks = watch;
  try {
    return fn();
  } finally {
    hooks = null;
  }
}

export function runBackward(root: Tensor, grad: Tensor | undefined, retainGraph: boolean): void {
  if (!root.requiresGrad) {
    throw new Error('backward: tensor does not require grad (no input had requiresGrad, or it was made under noGrad)');
  }
  if (root.graphFreed) throw freedError(root);
  let seed: Float32Array;
  if (grad) {
    if (grad.size !== root.size) {
      throw new Error(`backward: grad has ${grad.size} elements, tensor has ${root.size}`);
    }
    seed = uninitialized(grad.size, 'backward');
    native.copy(grad.data, seed);
  } else {
    if (root.size !== 1) {
      throw new Error(`backward: implicit gradient needs a scalar, got shape [${root.shape.join(', ')}]; pass grad`);
    }
    // Filled by the binding, as every array a step computes with, so a traced training step
    // (src/plan) can replay it.
    seed = uninitialized(1, 'backward');
    native.fill(seed, 1);
  }

  // Reverse topological order by iterative depth-first search (deep nets would overflow recursion).
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.gradFn ? t.gradFn.inputs : [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i];
      if (child?.requiresGrad && !seen.has(child)) {
        // Checked while collecting, before any gradient is accumulated: all or nothing.
        if (child.graphFreed) throw freedError(child);
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }

  // Nothing may keep a processed tensor alive: once its own node and every consumer have run,
  // its buffer (and those its closure saved) can be collected while backward is still going,
  // so the peak holds the activations not yet consumed rather than all of them.
  seen.clear();
  const grads = new Map<Tensor, Float32Array>();
  grads.set(root, seed);
  while (order.length) {
    const t = order.pop()!;
    const g = grads.get(t);
    if (!g) continue;
    const fn = t.gradFn;
    if (!fn) {
      // A leaf: accumulate into .grad (as PyTorch does across backward calls).
      if (t.grad) {
        const acc = t.grad.data;
        if (acc.length !== g.length) {
          throw new Error(
            `backward: the .grad of a leaf of shape [${t.shape.join(', ')}] has ${acc.length} elements, ` +
              `expected ${g.length}`,
          );
        }
        // A gradient may be the very buffer of .grad (a user-assigned .grad fed back in): add a copy.
        native.accumulateGrad(acc, g.buffer === acc.buffer ? g.slice() : g);
      } else {
        const own = uninitialized(g.length, 'backward');
        native.copy(g, own);
        t.grad = new Tensor(own, t.shape);
      }
      continue;
    }
    grads.delete(t);
    const inGrads = hooks?.backward ? hooks.backward(fn, () => fn.backward(g)) : fn.backward(g);
    fn.inputs.forEach((inp, j) => {
      const ig = inGrads[j];
      if (!inp?.requiresGrad || !ig) return;
      if (ig.length !== inp.size) {
        throw new Error(
          `backward of ${fn.name}: gradient for input ${j} has ${ig.length} elements, expected ${inp.size}`,
        );
      }
      const prev = grads.get(inp);
      if (prev) {
        // Gradients handed back may alias each other or an op's buffers (add passes its
        // gradient through to both inputs): sum into a new array, natively and in parallel.
        const sum = uninitialized(prev.length, 'backward');
        if (sum.length) native.broadcastBinary('add', prev, [prev.length], ig, [ig.length], sum);
        grads.set(inp, sum);
      } else {
        grads.set(inp, ig);
      }
    });
    if (!retainGraph) {
      t.gradFn = null;
      t.graphFreed = true;
    }
  }
}

function freedError(t: Tensor): Error {
  return new Error(
    'backward: trying to backward through the graph a second time: ' +
      `the graph behind this tensor (shape [${t.shape.join(', ')}]) ` +
      'was freed by an earlier backward(); ' +
      'pass { retainGraph: true } to that first backward() to backward through it again, ' +
      'or detach() the tensor to start a new graph from it',
  );
}
