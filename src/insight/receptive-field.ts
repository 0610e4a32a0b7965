// Receptive-field arithmetic: for a unit of a feature map, which window of the input it sees.
// Per spatial axis, three numbers describe a whole map (the usual CNN bookkeeping):
//   size  - how many input pixels one unit sees,
//   jump  - the distance in input pixels between two neighbouring units,
//   start - the input coordinate of the centre of the first unit's window (pixel centres at
//           0.5, 1.5, ...; an input pixel has size 1, jump 1, start 0.5).
// A layer with kernel k, stride s, padding p (before the first pixel) and dilation d maps
//   jump' = jump * s,  size' = size + (k - 1) * d * jump,  start' = start + ((k - 1) * d / 2 - p) * jump.
// Where paths meet (a residual add, a concat), the unit sees the union of what each path sees.
import type { Module } from '../nn/module.js';
import { AdaptiveAvgPool2d } from '../nn/adaptive-avg-pool2d.js';
import { AvgPool2d } from '../nn/avg-pool2d.js';
import { Conv2d } from '../nn/conv2d.js';
import { ConvTranspose2d } from '../nn/conv-transpose2d.js';
import { MaxPool2d } from '../nn/max-pool2d.js';
import { pair } from '../ops/geometry.js';

/** One axis of a feature map's receptive field, in input pixels (see the top of this file). */
export interface FieldAxis {
  size: number;
  jump: number;
  start: number;
}

/** A feature map's receptive field: [height axis, width axis]. */
export type ReceptiveField = [FieldAxis, FieldAxis];

/** What an input pixel sees: itself. */
export const INPUT_FIELD: ReceptiveField = [
  { size: 1, jump: 1, start: 0.5 },
  { size: 1, jump: 1, start: 0.5 },
];

/** The field after a window of `kernel` taps, `stride`, leading padding `pad` and `dilation`. */
export function throughWindow(f: FieldAxis, kernel: number, stride: number, pad: number, dilation = 1): FieldAxis {
  const span = (kernel - 1) * dilation;
  return { size: f.size + span * f.jump, jump: f.jump * stride, start: f.start + (span / 2 - pad) * f.jump };
}

/** The union of what several maps' units see, for a map computed from all of them. */
export function unionField(fields: ReceptiveField[]): ReceptiveField {
  const axis = (a: 0 | 1): FieldAxis => {
    let lo = Infinity;
    let hi = -Infinity;
    let jump = 0;
    for (const f of fields) {
      lo = Math.min(lo, f[a].start - f[a].size / 2);
      hi = Math.max(hi, f[a].start + f[a].size / 2);
      jump = Math.max(jump, f[a].jump);
    }
    return { size: hi - lo, jump, start: (lo + hi) / 2 };
  };
  return [axis(0), axis(1)];
}

/**
 * The field of `layer`'s output given its input's, for the layers that change it (convolutions
 * and pools); null for any other layer (its output sees what its inputs see). The shapes are the
 * layer's input and output [N, C, H, W] (an adaptive pool's window depends on them).
 */
export function layerField(
  layer: Module,
  field: ReceptiveField,
  inputShape: readonly number[],
  outputShape: readonly number[],
): ReceptiveField | null {
  if (layer instanceof Conv2d) {
    const g = layer.geometry;
    const [kh, kw] = layer.weight.shape.slice(2);
    return [
      throughWindow(field[0], kh, g.stride[0], g.padding[0], g.dilation[0]),
      throughWindow(field[1], kw, g.stride[1], g.padding[2], g.dilation[1]),
    ];
  }
  if (layer instanceof MaxPool2d || layer instanceof AvgPool2d) {
    const g = layer.geometry;
    return [0, 1].map((a) =>
      throughWindow(field[a], g.kernel[a], g.stride[a], g.padding[a], g.dilation[a]),
    ) as ReceptiveField;
  }
  if (layer instanceof ConvTranspose2d) {
    // Upsampling: neighbouring output units are stride times closer; each output unit gathers
    // from ceil(k / s) input units.
    const [kh, kw] = layer.weight.shape.slice(2);
    const s = pair('ConvTranspose2d: stride', layer.opts.stride, 1);
    const d = pair('ConvTranspose2d: dilation', layer.opts.dilation, 1);
    const p = pair('ConvTranspose2d: padding', layer.opts.padding, 0, 0);
    return [kh, kw].map((k, a) => {
      const f = field[a];
      const taps = Math.ceil(k / s[a]);
      const jump = f.jump / s[a];
      return {
        size: f.size + (taps - 1) * d[a] * f.jump,
        jump,
        start: f.start - (((k - 1) * d[a]) / 2 - p[a]) * jump,
      };
    }) as ReceptiveField;
  }
  if (layer instanceof AdaptiveAvgPool2d) {
    // Output unit i averages input rows floor(i*H/o) .. ceil((i+1)*H/o) - 1: a window of about
    // ceil(H/o) rows every floor(H/o) rows (exact when o divides H, and for a global pool).
    return [0, 1].map((a) => {
      const n = inputShape[2 + a];
      const o = outputShape[2 + a];
      return throughWindow(field[a], Math.ceil(n / o), Math.max(1, Math.floor(n / o)), 0);
    }) as ReceptiveField;
  }
  return null;
}
