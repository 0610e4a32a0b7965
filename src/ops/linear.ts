// Differentiable fully-connected layer: y = x W^T + b, W shaped [out, in] as torch.nn.Linear.
import { record } from '../autograd.js';
import { native } from '../native.js';
import { Tensor, uninitialized } from '../tensor.js';

/** linear(input [N, in], weight [out, in], bias [out]?) -> [N, out]. */
export function linear(input: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  if (weight.ndim !== 2)
    throw new Error(`linear: weight: expected a 2-D tensor, got shape [${weight.shape.join(', ')}]`);
  const [outFeatures, inFeatures] = weight.shape;
  if (input.ndim !== 2 || input.shape[1] !== inFeatures) {
    throw new Error(`linear: input: expected shape [N, ${inFeatures}], got [${input.shape.join(', ')}]`);
  }
  if (bias !== null && (bias.ndim !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`linear: bias: expected shape [${outFeatures}], got [${bias.shape.join(', ')}]`);
  }
  const args = { batch: input.shape[0], inFeatures, outFeatures };
  const out = uninitialized(args.batch * outFeatures, 'linear');
  native.linearForward(input.data, weight.data, bias ? bias.data : null, out, args);
  const y = new Tensor(out, [args.batch, outFeatures]);
  return record('linear', y, [input, weight, bias], (g) => {
    const gx = input.requiresGrad ? uninitialized(input.size, 'linear') : null;
    const gw = weight.requiresGrad ? uninitialized(weight.size, 'linear') : null;
    const gb = bias?.requiresGrad ? uninitialized(bias.size, 'linear') : null;
    native.linearBackward(input.data, weight.data, g, gx, gw, gb, args);
    return [gx, gw, gb];
  });
}
