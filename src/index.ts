// ferroconv: convolutional neural networks for Node.js, with Rust kernels behind N-API.
import { native, type TunedConv } from './native.js';

export { Tensor, zeros, ones, full, rand, randn, fromArray, shapeSize } from './tensor.js';
export type { Shape, GradFn } from './tensor.js';
export { Rng, manualSeed } from './random.js';
export { noGrad, isGradEnabled, setGradEnabled } from './autograd.js';
export { planInfo, type PlanInfo } from './plan/index.js';
export * from './ops/index.js';
export * as nn from './nn/index.js';
export {
  Module,
  type InferenceSnapshot,
  Conv2d,
  ConvTranspose2d,
  Linear,
  BatchNorm2d,
  MaxPool2d,
  AvgPool2d,
  AdaptiveAvgPool2d,
  LocalResponseNorm,
  ReLU,
  LeakyReLU,
  Sigmoid,
  Tanh,
  ReLU6,
  Hardsigmoid,
  Hardswish,
  SiLU,
  Dropout,
  Flatten,
  GRU,
  Embedding,
  Sequential,
  Identity,
  init,
  setInferenceFusion,
  isInferenceFusionEnabled,
} from './nn/index.js';

export interface Info {
  /** Threads in the kernel pool (FERROCONV_NUM_THREADS or all cores). */
  threads: number;
  /** SIMD path in use: 'avx512' or 'avx2+fma' (x86-64), 'neon' (aarch64) or 'scalar'. */
  simd: string;
  /** Best SIMD path the CPU supports. */
  simdDetected: string;
  version: string;
  node: string;
  napi: string;
  arch: string;
  platform: string;
  /** The CPU's name (its brand string on x86-64); tuning cache entries are kept per CPU. */
  cpu: string;
  /** Whether conv `algo: 'auto'` follows fixed rules (true) or is tuned per shape (false). */
  deterministicAlgos: boolean;
  /** The conv tuning cache file in use (`FERROCONV_TUNE_CACHE` or `setTuneCache`), if any. */
  tuneCache: string | null;
  /** Why `FERROCONV_TUNE_CACHE` could not be used, if it could not. */
  tuneCacheError: string | null;
}

/** What ferroconv runs with on this machine. */
export function info(): Info {
  const n = native.nativeInfo();
  return {
    threads: n.threads,
    simd: n.simd,
    simdDetected: n.simdDetected,
    version: n.version,
    node: process.versions.node,
    napi: process.versions.napi ?? 'unknown',
    arch: n.arch,
    platform: n.os,
    cpu: n.cpu,
    deterministicAlgos: n.deterministicAlgos,
    tuneCache: n.tuneCache ?? null,
    tuneCacheError: n.tuneCacheError ?? null,
  };
}

/**
 * One conv shape and pass the autotuner timed, with what it chose: the shape (`inputShape`,
 * `weightShape`, `stride`, `padding`, `dilation`, `groups`), `pass` ('forward',
 * 'forward-prepared' for a compiled plan's, 'backward-data', 'backward-weight'), `threads`,
 * `simd`, `algo` (with im2col's path where it has two, e.g. 'im2col:gemm'), `rule` (the fixed
 * rules' pick) and `ms` (each candidate's best time).
 */
export type { TunedConv } from './native.js';

/**
 * Conv `algo: 'auto'` times the algorithms that could win a shape at its first use (per pass
 * and thread count), keeps the fastest for the process and persists it when a tuning cache is
 * set, as cuDNN's benchmark mode does. `setDeterministicAlgos(true)` (or
 * `FERROCONV_DETERMINISTIC=1`) makes `auto` follow fixed per-shape rules instead, so the same
 * shape always runs the same algorithm whatever the machine's timings.
 */
export function setDeterministicAlgos(on: boolean): void {
  native.setDeterministicAlgos(on);
}

/** The autotuner's choices so far (this process's and those loaded from the cache file). */
export function convTuning(): TunedConv[] {
  return native.convTuning();
}

/** Forgets the autotuner's choices (the cache file is left as it is). */
export function clearConvTuning(): void {
  native.clearConvTuning();
}

/**
 * Persists the autotuner's choices in `path` (created when missing; also set by
 * `FERROCONV_TUNE_CACHE`): loads the choices it holds for this CPU and appends new ones, so the
 * next process starts tuned. `null` stops persisting. Throws, changing nothing, when the file
 * cannot be read or written or is too large; malformed lines are skipped and counted.
 */
export function setTuneCache(path: string | null): { loaded: number; skipped: number } {
  return native.setTuneCache(path);
}

/** Resizes the kernel thread pool. */
export function setNumThreads(threads: number): void {
  native.setNumThreads(threads);
}

/**
 * Forces the scalar kernels ('scalar'), a SIMD level below the best the CPU has ('avx2+fma' on
 * an AVX-512 CPU), or returns to the best ('auto'). A level the CPU lacks gives the best it has.
 * Returns the level now in use.
 */
export function setSimd(level: 'auto' | 'scalar' | 'avx2+fma' | 'avx512' | 'neon'): string {
  return native.setSimd(level);
}
export * from './io/index.js';
export * from './train/index.js';
export * as optim from './optim/index.js';
export * from './optim/index.js';
export * as data from './data/index.js';
export { DataLoader, TensorDataset, Subset, mnist, fashionMnist, ImageFolder, transforms } from './data/index.js';
export * as models from './models/index.js';
export { classify } from './models/index.js';
export * as apps from './apps/index.js';
export * as quant from './quant/index.js';
export { quantize, QuantizedModel, loadQuantized, prune } from './quant/index.js';
export * from './insight/index.js';
export {
  initDistributed,
  currentWorld,
  launchedByMpi,
  allreduce,
  broadcast,
  barrier,
  type World,
  type DistributedOptions,
  type ReduceOp,
} from './distributed/index.js';
