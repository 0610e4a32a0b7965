// The deterministic weight formula of test/fixtures/gen_zoo_logits.py (see its docstring), so the
// zoo tests can fill ferroconv's models with exactly the values the PyTorch reference used.
import type { Module, Tensor } from '../src/index.js';

/** 32-bit polynomial hash of a state-dict key (seed = seed * 31 + charCode, mod 2^32). */
export function nameSeed(name: string): number {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 31) + name.charCodeAt(i)) >>> 0;
  return h;
}

/** Fills `t` (the state-dict entry `name`) in place with the formula. */
export function fillByFormula(name: string, t: Tensor): void {
  const mix = Math.imul(nameSeed(name), 0x9e3779b9);
  const leaf = name.slice(name.lastIndexOf('.') + 1);
  let value: (r: number) => number;
  if (leaf === 'num_batches_tracked') value = () => 0;
  else if (leaf === 'running_mean') value = (r) => 0.1 * r;
  else if (leaf === 'running_var') value = (r) => 1 + 0.5 * Math.abs(r);
  else if (leaf === 'bias') value = (r) => 0.05 * r;
  else if (leaf === 'weight' && t.ndim === 1) value = (r) => 1 + 0.2 * r;
  else if (leaf === 'weight') {
    const scale = Math.sqrt(6 / t.shape.slice(1).reduce((a, b) => a * b, 1));
    value = (r) => r * scale;
  } else throw new Error(`no formula for ${name}`);
  const out = t.data;
  for (let i = 0; i < out.length; i++) {
    // lowbias32 of (i + seed * 0x9E3779B9) mod 2^32
    let x = (i + mix) >>> 0;
    x ^= x >>> 16;
    x = Math.imul(x, 0x7feb352d);
    x ^= x >>> 15;
    x = Math.imul(x, 0x846ca68b);
    x ^= x >>> 16;
    out[i] = value((x >>> 0) / 2147483648 - 1);
  }
}

/** Overwrites every parameter and buffer of `model` with the formula. */
export function fillModel(model: Module): void {
  for (const [name, t] of model.stateDict()) fillByFormula(name, t);
}
