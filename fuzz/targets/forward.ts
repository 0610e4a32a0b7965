// What the model-file targets (caffe, tfjs, keras) do once a file loads: a forward on a
// deterministic input of the one declared input shape, when it is small, and a check that every
// output holds as many values as its shape says.
import { Tensor } from '../../src/tensor.js';
import { InvariantError } from '../engine.js';

/** Largest input a forward is tried on. */
const MAX_INPUT = 1 << 14;

interface Loaded {
  inputNames: readonly string[];
  inputShapes: readonly (readonly number[] | null)[];
  forwardAll(...inputs: Tensor[]): Tensor[];
}

export function forwardDeclared(model: Loaded): void {
  const shape = model.inputShapes[0];
  if (model.inputNames.length !== 1 || !shape) return;
  if (!shape.every((d) => Number.isSafeInteger(d) && d > 0)) return;
  const n = shape.reduce((a, b) => a * b, 1);
  if (n > MAX_INPUT) return;
  const x = new Tensor(
    Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
    [...shape],
  );
  for (const y of model.forwardAll(x)) {
    if (y.data.length !== y.shape.reduce((a, b) => a * b, 1)) {
      throw new InvariantError(`an output of shape [${y.shape}] holds ${y.data.length} values`);
    }
  }
}
