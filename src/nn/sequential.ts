// Sequential container and Identity, as torch.nn.Sequential / torch.nn.Identity.
import type { Tensor } from '../tensor.js';
import { fuseSequence } from './fuse.js';
import { Module, noteModelInput } from './module.js';

/**
 * Runs its children in order; they are named '0', '1', ... (or by the keys given). In inference
 * (eval mode, nothing recording gradients) a Conv2d followed by BatchNorm2d and/or ReLU runs as
 * one fused conv with the batch norm folded in, and a 1x1 Conv2d followed by an AvgPool2d runs
 * after the pool (same results within float rounding; see fuse.ts, and
 * setInferenceFusion(false) to opt out).
 */
export class Sequential extends Module {
  private readonly layers: Module[] = [];

  constructor(...layers: (Module | [string, Module])[]) {
    super();
    for (const l of layers) this.append(l);
  }

  append(layer: Module | [string, Module]): this {
    const [name, m] = Array.isArray(layer) ? layer : [String(this.layers.length), layer];
    this.layers.push(this.addModule(name, m));
    return this;
  }

  get length(): number {
    return this.layers.length;
  }

  at(i: number): Module {
    const m = this.layers[i < 0 ? this.layers.length + i : i];
    if (!m) throw new Error(`Sequential: no layer ${i} (has ${this.layers.length})`);
    return m;
  }

  forward(x: Tensor): Tensor {
    noteModelInput(this, x);
    let y = x;
    const layers = this.layers;
    for (let i = 0; i < layers.length; i++) {
      const fused = fuseSequence(layers, i, y);
      if (fused) {
        y = fused.y;
        i += fused.used - 1;
      } else {
        y = layers[i].call(y);
      }
    }
    return y;
  }
}

/** Returns its input. */
export class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}
