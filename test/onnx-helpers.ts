// Shared by the ONNX suites: weights that keep deep networks' activations away from zero, the
// error measure they compare outputs with, and a run in ONNX Runtime.
import * as ort from 'onnxruntime-node';
import { type Module, manualSeed, randn, type Tensor } from '../src/index.js';
import { writableData } from '../src/tensor.js';

/**
 * Redraws `model`'s weights so activations keep their size through deep networks (He-normal
 * convs and linears, batch-norm statistics away from identity): with torchvision's
 * initialisation some families' logits are within 1e-6 of their biases, which would hide a
 * wrong graph.
 */
export function liven(model: Module, seed: number): void {
  manualSeed(seed);
  for (const [name, t] of model.stateDict()) {
    if (name.endsWith('num_batches_tracked')) continue;
    const d = writableData(t);
    const r = randn([t.size]).data;
    const fanIn = t.ndim >= 2 ? t.size / t.shape[0] : 1;
    for (let i = 0; i < d.length; i++) {
      if (t.ndim >= 2) d[i] = r[i] * Math.sqrt(2 / fanIn);
      else if (name.endsWith('running_var')) d[i] = 0.5 + Math.abs(r[i]);
      else if (name.endsWith('weight')) d[i] = 1 + 0.2 * r[i];
      else d[i] = 0.1 * r[i];
    }
  }
}

/** Max |a - b| over the largest |b| (at least 1). */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let big = 1;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    big = Math.max(big, Math.abs(b[i]));
  }
  return diff / big;
}

/** The first output of the model in `bytes`, run by ONNX Runtime on `x` as its first input. */
export async function ortRun(bytes: Uint8Array, x: Tensor): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) });
    const y = out[session.outputNames[0]];
    return { data: y.data as Float32Array, dims: y.dims };
  } finally {
    await session.release();
  }
}
