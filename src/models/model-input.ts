// The zoo models' input check. A layer's failure deep inside a model is named by Module.call (the
// layer's dotted path, its input shape, the model's input shape); this check runs first, so a
// wrong input fails before any work is done, naming the layer that fixes the channel count.
import { type Module, noteModelInput } from '../nn/module.js';
import type { Tensor } from '../tensor.js';

/**
 * Throws unless `x` is [N, channels, H, W]; notes `x` as `model`'s input (see noteModelInput).
 * Called at the top of each zoo model's forward.
 */
export function checkModelInput(model: Module, name: string, x: Tensor, channels: number, firstLayer: string): void {
  if (x.ndim !== 4 || x.shape[1] !== channels) {
    throw new Error(
      `${name}: expected input [N, ${channels}, H, W] (layer '${firstLayer}' ` +
        `takes ${channels} channel${channels === 1 ? '' : 's'}), got [${x.shape.join(', ')}]`,
    );
  }
  noteModelInput(model, x);
}
