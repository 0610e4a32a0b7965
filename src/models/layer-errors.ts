// Clear errors for the model zoo. A failure deep inside a model ("expected 3 channels", "output
// would be empty") is only useful if it says which layer failed and on what; these helpers make
// every zoo model report the dotted layer name (as in its state dict), the shape that layer got,
// and the shape the whole model was given.
import { markTransparentForward } from '../nn/fuse.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor.js';

const fmt = (shape: readonly number[]): string => `[${shape.join(', ')}]`;

/** Errors already rewritten by an inner layer; outer layers pass them on unchanged. */
const annotated = new WeakSet<Error>();

/**
 * Throws unless `x` is [N, channels, H, W]. Used at the top of
 * each model's forward, so a wrong input fails before any work is done.
 */
export function checkModelInput(model: string, x: Tensor, channels: number, firstLayer: string): void {
  if (x.ndim !== 4 || x.shape[1] !== channels) {
    throw new Error(
      `${model}: expected input [N, ${channels}, H, W] (layer '${firstLayer}' ` +
        `takes ${channels} channel${channels === 1 ? '' : 's'}), got ${fmt(x.shape)}`,
    );
  }
}

/**
 * Wraps the forward of `model` and of every module inside it so that an Error thrown inside a
 * layer (an input too small for a conv or pooling window among them: the kernel crate's message
 * gives the window and the sizes) is rethrown with the layer's dotted name, its input shape and
 * the model's input shape in front of the original message (which is kept as `cause`). Call
 * once, at the end of a model's constructor.
 */
export function guardLayers(model: Module, modelName: string, entry = 'forward'): void {
  let modelInput: readonly number[] = [];
  // The entry point (forward, or e.g. GoogLeNet's forwardAux) only notes the model's input shape.
  const host = model as unknown as Record<string, (...inputs: Tensor[]) => unknown>;
  const entryFn = host[entry];
  if (typeof entryFn !== 'function') throw new Error(`guardLayers: ${modelName} has no method '${entry}'`);
  const boundEntry = entryFn.bind(model);
  host[entry] = (...inputs: Tensor[]): unknown => {
    modelInput = inputs[0] ? inputs[0].shape : [];
    return boundEntry(...inputs);
  };
  for (const [path, m] of model.namedModules()) {
    if (path === '') continue;
    const inner = m.forward.bind(m);
    const kind = m.constructor.name;
    // Only adds context to errors, so inference fusion may still bypass it (see nn/fuse.ts).
    m.forward = (...inputs: Tensor[]): Tensor => {
      const x = inputs[0];
      try {
        return inner(...inputs);
      } catch (e) {
        if (!(e instanceof Error) || annotated.has(e)) throw e;
        const err = new Error(
          `${modelName}: layer '${path}' (${kind}) failed on ${x ? fmt(x.shape) : 'no input'} ` +
            `(model input ${fmt(modelInput)}): ${e.message}`,
          { cause: e },
        );
        annotated.add(err);
        throw err;
      }
    };
    markTransparentForward(m.forward);
  }
}
