// Quantization-aware training: the model trains with its int8 rounding simulated, so fit()
// fine-tunes the weights towards values that survive quantization (PyTorch's prepare_qat /
// convert, with FakeQuantize modules).
//
// prepareQat(model, inputShape) folds batch norm into the convs first (fuseConvBn: the int8
// graph has no batch norm either), then makes every Conv2d and Linear compute with
//   - its weight fake-quantized per output channel, symmetric int8 (-127..127), as quantize()
//     will quantize it, and
//   - its output fake-quantized per tensor, uint8 affine, at a range a moving average of each
//     batch's min and max learns in training (torch's MovingAverageMinMaxObserver, 0.01).
// Fake quantization is quantize-then-dequantize in float; its gradient is the straight-through
// estimator: passed unchanged where the input lies inside the quantized range, zero where it
// was clipped (torch's fake_quantize_per_tensor_affine). convertQat(model, calibration) then
// removes the fake quantization and returns quantize(model, calibration).
import { isGradEnabled, noGrad, record } from '../autograd.js';
import { Conv2d } from '../nn/conv2d.js';
import { fuseConvBn } from '../nn/fold-batch-norm.js';
import { Linear } from '../nn/linear.js';
import { Module } from '../nn/module.js';
import { conv2d } from '../ops/conv.js';
import { linear } from '../ops/linear.js';
import { invalidatePlans } from '../plan/index.js';
import { Tensor } from '../tensor.js';
import type { QuantizedModel } from './model.js';
import { affineParams, type QParams } from './observers.js';
import { type Calibration, type QuantizeOptions, quantize } from './quantize.js';

/** The float value each element rounds to: scale * (clamp(round(x / scale) + zp, qmin, qmax) - zp). */
function fakeQuant(v: number, scale: number, zp: number, qmin: number, qmax: number): number {
  const q = Math.min(qmax, Math.max(qmin, Math.round(v / scale) + zp));
  return (q - zp) * scale;
}

/**
 * x quantized to uint8 at (scale, zeroPoint) and back, with the straight-through gradient:
 * 1 where (qmin - zp) * scale <= x <= (qmax - zp) * scale, else 0.
 */
export function fakeQuantize(x: Tensor, q: QParams, qmin = 0, qmax = 255): Tensor {
  const y = new Float32Array(x.size);
  const lo = (qmin - q.zeroPoint) * q.scale;
  const hi = (qmax - q.zeroPoint) * q.scale;
  for (let i = 0; i < x.size; i++) y[i] = fakeQuant(x.data[i], q.scale, q.zeroPoint, qmin, qmax);
  return record('fakeQuantize', new Tensor(y, x.shape), [x], (g) => {
    const gx = new Float32Array(g.length);
    for (let i = 0; i < g.length; i++) gx[i] = x.data[i] >= lo && x.data[i] <= hi ? g[i] : 0;
    return [gx];
  });
}

/**
 * A weight [C_out, ...] quantized per output channel, symmetric int8 (-127..127, scale
 * max|w| / 127 of the channel) and back, with the straight-through gradient (no element is
 * clipped: the scale covers each channel's largest weight).
 */
export function fakeQuantizeWeight(w: Tensor): Tensor {
  const oc = w.shape[0];
  const per = w.size / oc;
  const y = new Float32Array(w.size);
  for (let o = 0; o < oc; o++) {
    let max = 0;
    for (let k = 0; k < per; k++) max = Math.max(max, Math.abs(w.data[o * per + k]));
    const s = max > 0 ? max / 127 : 1;
    for (let k = 0; k < per; k++) y[o * per + k] = fakeQuant(w.data[o * per + k], s, 0, -127, 127);
  }
  return record('fakeQuantizeWeight', new Tensor(y, w.shape), [w], (g) => [g]);
}

/** An activation's fake quantization with a range learned by a moving average of min and max. */
export class FakeQuantize extends Module {
  lo = 0;
  hi = 0;
  private seen = false;

  constructor(readonly averagingConstant = 0.01) {
    super();
  }

  get qparams(): QParams {
    return affineParams(this.lo, this.hi);
  }

  forward(x: Tensor): Tensor {
    if (this.training) {
      let lo = Number.POSITIVE_INFINITY;
      let hi = Number.NEGATIVE_INFINITY;
      for (const v of x.data) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      if (Number.isFinite(lo) && Number.isFinite(hi)) {
        const c = this.seen ? this.averagingConstant : 1;
        this.lo += c * (lo - this.lo);
        this.hi += c * (hi - this.hi);
        this.seen = true;
      }
    }
    return this.seen ? fakeQuantize(x, this.qparams) : x;
  }
}

const PREPARED = new WeakMap<Module, Module[]>();

/**
 * Prepares `model` for quantization-aware training, in place: batch norm folded (fuseConvBn, so
 * the model needs an input of `inputShape` to trace), then every Conv2d and Linear computes with
 * fake-quantized weights and outputs. Train it with fit() as usual, then convertQat().
 */
export function prepareQat<M extends Module>(model: M, inputShape: readonly number[]): M {
  if (PREPARED.has(model)) throw new Error('prepareQat: this model is prepared already');
  fuseConvBn(model, inputShape);
  const changed: Module[] = [];
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof Conv2d || m instanceof Linear)) continue;
    const act = new FakeQuantize();
    (m as unknown as { addModule(n: string, c: Module): Module }).addModule('activation_post_process', act);
    const weighted = (x: Tensor): Tensor => {
      const w = isGradEnabled() ? fakeQuantizeWeight(m.weight) : noGrad(() => fakeQuantizeWeight(m.weight));
      return m instanceof Conv2d ? conv2d(x, w, m.bias, { ...m.geometry, algo: m.opts.algo }) : linear(x, w, m.bias);
    };
    // An own property shadows the class's forward (fusion then leaves the layer alone).
    Object.defineProperty(m, 'forward', {
      value: (x: Tensor) => act.call(weighted(x)),
      configurable: true,
      writable: true,
    });
    changed.push(m);
  }
  PREPARED.set(model, changed);
  invalidatePlans();
  return model;
}

/**
 * Ends quantization-aware training: removes the fake quantization (each layer's own forward
 * back) and quantizes the model after its training, calibrated on `calibration`.
 */
export async function convertQat(
  model: Module,
  calibration: Calibration,
  opts: QuantizeOptions = {},
): Promise<QuantizedModel> {
  const changed = PREPARED.get(model);
  if (!changed) throw new Error('convertQat: the model was not prepared with prepareQat');
  for (const m of changed) {
    delete (m as unknown as { forward?: unknown }).forward;
    const children = m as unknown as { addModule(n: string, c: Module): Module };
    children.addModule('activation_post_process', new Identity());
  }
  PREPARED.delete(model);
  invalidatePlans();
  return quantize(model, calibration, opts);
}

class Identity extends Module {
  forward(x: Tensor): Tensor {
    return x;
  }
}
