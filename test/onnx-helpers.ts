// Shared by the ONNX suites: weights that keep deep networks' activations away from zero, the
// error measure they compare outputs with, and a run in ONNX Runtime.
import { readFileSync } from 'node:fs';
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

/** The int8 comparisons' bound against ONNX Runtime where [`ortInt8Exact`] is false. */
export const SATURATED_BOUND = 0.25;

/**
 * Whether ONNX Runtime's int8 convolutions and matrix products compute exactly on this CPU. On
 * x86-64 without VNNI its uint8 x int8 kernels add pairs of products in 16 bits (`pmaddubsw`),
 * which saturate for large activations and weights (ONNX Runtime's quantization tools offer
 * `reduce_range`, 7-bit weights, for such CPUs): there ORT's results move off the exact
 * arithmetic. Checked on a Zen 3 CPU with the CLI test's MNIST network and image: ONNX's
 * reference evaluator (`onnx.reference`, the QDQ graph in float) gave ferroconv's logits to
 * 1e-3 on every SIMD level, ONNX Runtime (Node and Python) was off by up to 0.103. There the
 * int8 comparisons with ORT use [`SATURATED_BOUND`], which a wrong file (a scale, a zero point,
 * a layout) still exceeds. Elsewhere (VNNI, AArch64) ORT is exact and the tight bounds apply.
 */
export function ortInt8Exact(): boolean {
  if (process.arch !== 'x64') return true;
  let info: string;
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return true; // not Linux: no way to tell here, keep the tight bounds
  }
  return /\b(avx512_vnni|avx_vnni)\b/.test(info);
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
