// Differentiable point-wise activations; the loops run in crates/kernels/src/activation.rs.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';

type Kind = 'relu' | 'leaky_relu' | 'sigmoid' | 'tanh' | 'clip' | 'hardsigmoid' | 'hardswish' | 'silu' | 'pow';

/** `alpha`/`beta`: the kind's parameters (see the binding's activationForward). */
function activation(kind: Kind, x: Tensor, alpha?: number, beta?: number): Tensor {
  const out = uninitialized(x.size, kind);
  native.activationForward(kind, x.data, out, alpha, beta);
  const y = new Tensor(out, x.shape);
  return record(kind, y, [x], (g) => {
    const gx = uninitialized(x.size, kind);
    native.activationBackward(kind, x.data, out, g, gx, alpha, beta);
    return [gx];
  });
}

export const relu = (x: Tensor): Tensor => activation('relu', x);
export const leakyRelu = (x: Tensor, negativeSlope = 0.01): Tensor => activation('leaky_relu', x, negativeSlope);
export const sigmoid = (x: Tensor): Tensor => activation('sigmoid', x);
export const tanh = (x: Tensor): Tensor => activation('tanh', x);
/** min(max(x, min), max), as torch.clamp (gradient as torch.nn.functional.hardtanh's). */
export const clip = (x: Tensor, min = -Infinity, max = Infinity): Tensor => activation('clip', x, min, max);
/** min(max(x, 0), 6), as torch.nn.functional.relu6. */
export const relu6 = (x: Tensor): Tensor => activation('clip', x, 0, 6);
/** max(0, min(1, alpha x + beta)); torch.nn.functional.hardsigmoid is alpha 1/6, beta 1/2 (the defaults). */
export const hardSigmoid = (x: Tensor, alpha = 1 / 6, beta = 0.5): Tensor => activation('hardsigmoid', x, alpha, beta);
/** x * relu6(x + 3) / 6, as torch.nn.functional.hardswish. */
export const hardSwish = (x: Tensor): Tensor => activation('hardswish', x);
/** x * sigmoid(x), as torch.nn.functional.silu. */
export const silu = (x: Tensor): Tensor => activation('silu', x);
/** x ^ exponent elementwise, as torch.pow(x, exponent) (NaN for a negative x and a fractional exponent). */
export const pow = (x: Tensor, exponent: number): Tensor => activation('pow', x, exponent);

/**
 * x = max(x, 0) in place (NaN stays NaN), returning x: for inference on a tensor nothing else
 * reads, saving a buffer. Records no gradient, so it throws when x would need one.
 */
export function relu_(x: Tensor): Tensor {
  if (needsGrad(x)) throw new Error('relu_: in-place ReLU records no gradient; use relu() when training');
  native.reluInplace(x.data);
  return x;
}
