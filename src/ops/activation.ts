// Differentiable point-wise activations; the loops run in crates/kernels/src/activation.rs.
import { needsGrad, record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';

type Kind = 'relu' | 'leaky_relu' | 'sigmoid' | 'tanh';

function activation(kind: Kind, x: Tensor, negativeSlope?: number): Tensor {
  const out = uninitialized(x.size, kind);
  native.activationForward(kind, x.data, out, negativeSlope);
  const y = new Tensor(out, x.shape);
  return record(kind, y, [x], (g) => {
    const gx = uninitialized(x.size, kind);
    native.activationBackward(kind, x.data, out, g, gx, negativeSlope);
    return [gx];
  });
}

export const relu = (x: Tensor): Tensor => activation('relu', x);
export const leakyRelu = (x: Tensor, negativeSlope = 0.01): Tensor => activation('leaky_relu', x, negativeSlope);
export const sigmoid = (x: Tensor): Tensor => activation('sigmoid', x);
export const tanh = (x: Tensor): Tensor => activation('tanh', x);

/**
 * x = max(x, 0) in place (NaN stays NaN), returning x: for inference on a tensor nothing else
 * reads, saving a buffer. Records no gradient, so it throws when x would need one.
 */
export function relu_(x: Tensor): Tensor {
  if (needsGrad(x)) throw new Error('relu_: in-place ReLU records no gradient; use relu() when training');
  native.reluInplace(x.data);
  return x;
}
