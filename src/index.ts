// ferroconv: convolutional neural networks for Node.js, with Rust kernels behind N-API.
import { native } from './native.js';

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
  };
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
