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

/**
 * Session options under which ONNX Runtime computes an int8 (QDQ) graph exactly on this CPU. On
 * x86-64 without VNNI its fused uint8 x int8 kernels add pairs of products in 16 bits
 * (`pmaddubsw`), which saturate for large activations and weights (its quantizer's
 * `reduce_range`, 7-bit weights, exists for such CPUs). On a Zen 3 CPU, with the CLI test's MNIST
 * network and image, ORT's logits were off ferroconv's by up to 0.103 with its graph optimised,
 * and within 9e-8 with optimisations off, where it runs the QDQ graph as written (dequantize,
 * float conv, quantize), as ONNX's reference evaluator does (which also gave ferroconv's logits).
 * There the comparisons run ORT unoptimised, with the same tight bounds; elsewhere (VNNI,
 * AArch64) ORT's own int8 kernels are exact and run as a user's would.
 */
export function ortInt8Options(): ort.InferenceSession.SessionOptions {
  if (process.arch !== 'x64') return {};
  let info: string;
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return {}; // not Linux: no way to tell here
  }
  return /\b(avx512_vnni|avx_vnni)\b/.test(info) ? {} : { graphOptimizationLevel: 'disabled' };
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

/** The first output of the model in `bytes`, run by ONNX Runtime (with `options`) on `x` as its first input. */
export async function ortRun(
  bytes: Uint8Array,
  x: Tensor,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await ort.InferenceSession.create(bytes, options);
  try {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) });
    const y = out[session.outputNames[0]];
    return { data: y.data as Float32Array, dims: y.dims };
  } finally {
    await session.release();
  }
}
