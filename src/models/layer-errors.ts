// Clear errors for the model zoo. A failure deep inside a model ("expected 3 channels", "output
// would be empty") is only useful if it says which layer failed and on what; these helpers make
// every zoo model report the dotted layer name (as in its state dict), the shape that layer got,
// and the shape the whole model was given.
import { padding4, pair } from '../ops/conv.js';
import { AvgPool2d } from '../nn/avg-pool2d.js';
import { Conv2d } from '../nn/conv2d.js';
import { markTransparentForward } from '../nn/fuse.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
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
      `${model}: expected input [N, ${channels}, H, W] (layer '${firstLayer}' takes ${channels} channel${channels === 1 ? '' : 's'}), got ${fmt(x.shape)}`,
    );
  }
}

/** Output length of a sliding window, with PyTorch's formula for conv and pooling. */
function windowOut(size: number, k: number, stride: number, padBefore: number, padAfter: number, dilation: number, ceil: boolean): number {
  const span = size + padBefore + padAfter - dilation * (k - 1) - 1;
  let out = Math.floor((span + (ceil ? stride - 1 : 0)) / stride) + 1;
  // In ceil mode PyTorch drops a last window that would start inside the right padding.
  if (ceil && (out - 1) * stride >= size + padBefore) out--;
  return out;
}

interface Window {
  kernel: [number, number];
  stride: [number, number];
  padding: [number, number, number, number];
  dilation: [number, number];
  ceil: boolean;
}

function windowOf(m: Module): Window | null {
  if (m instanceof Conv2d) {
    return {
      kernel: [m.weight.shape[2], m.weight.shape[3]],
      stride: pair('stride', m.opts.stride, 1),
      padding: padding4(m.opts.padding),
      dilation: pair('dilation', m.opts.dilation, 1),
      ceil: false,
    };
  }
  if (m instanceof MaxPool2d || m instanceof AvgPool2d) {
    const kernel = pair('kernelSize', m.kernelSize, 1);
    const [ph, pw] = pair('padding', m.opts.padding, 0);
    const dilation = m instanceof MaxPool2d ? pair('dilation', m.opts.dilation, 1) : ([1, 1] as [number, number]);
    return {
      kernel,
      stride: m.opts.stride === undefined ? kernel : pair('stride', m.opts.stride, 1),
      padding: [ph, ph, pw, pw],
      dilation,
      ceil: m.opts.ceilMode ?? false,
    };
  }
  return null;
}

/**
 * Wraps the forward of `model` and of every module inside it so that (1) a conv or pooling layer
 * whose input is too small to produce any output fails with an Error naming that layer, its
 * window and the model's input shape, and (2) any other Error thrown inside a layer is rethrown
 * with the layer's dotted name and input shape in front of the original message (which is kept
 * as `cause`). Call once, at the end of a model's constructor.
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
    const win = windowOf(m);
    const kind = m.constructor.name;
    // Only adds context to errors, so inference fusion may still bypass it (see nn/fuse.ts).
    m.forward = (...inputs: Tensor[]): Tensor => {
      const x = inputs[0];
      if (win && x && x.ndim === 4) {
        const oh = windowOut(x.shape[2], win.kernel[0], win.stride[0], win.padding[0], win.padding[1], win.dilation[0], win.ceil);
        const ow = windowOut(x.shape[3], win.kernel[1], win.stride[1], win.padding[2], win.padding[3], win.dilation[1], win.ceil);
        if (oh < 1 || ow < 1) {
          const err = new Error(
            `${modelName}: input ${fmt(modelInput)} is too small: layer '${path}' (${kind}, kernel ${win.kernel.join('x')}, ` +
              `stride ${win.stride.join('x')}, padding ${win.padding.join(',')}) gets ${fmt(x.shape)} and would give a ` +
              `${Math.max(oh, 0)}x${Math.max(ow, 0)} output`,
          );
          annotated.add(err);
          throw err;
        }
      }
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
