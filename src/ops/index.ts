// Differentiable functional ops (torch.nn.functional's counterparts).
export { conv2d, conv2dFused, convTranspose2d, convTransposeNd } from './conv.js';
export type {
  Conv2dOptions,
  ConvEpilogue,
  ConvTranspose2dOptions,
  ConvTransposeNdOptions,
  ConvAlgo,
  Pair,
} from './conv.js';
export { linear } from './linear.js';
export { gruCell } from './recurrent.js';
export { relu, relu_, leakyRelu, sigmoid, tanh, clip, relu6, hardSigmoid, hardSwish, silu, pow } from './activation.js';
export { maxPool2d, maxPool2dWithIndices, avgPool2d, adaptiveAvgPool2d, poolNd } from './pool.js';
export type { Pool2dOptions, PoolNdOptions } from './pool.js';
export { pad, sub, div, binaryNd, broadcastShape, sumTo, gather, matmul } from './nd.js';
export { interpolate, interpolationMatrix } from './interpolate.js';
export type { InterpolateMode, InterpolateOptions } from './interpolate.js';
export type { PadMode } from './nd.js';
export { batchNorm2d, localResponseNorm } from './norm.js';
export type { BatchNormOptions, LrnOptions } from './norm.js';
export {
  add,
  mul,
  scale,
  cat,
  catAffine,
  split,
  narrow,
  transpose,
  reshape,
  flatten,
  dropout,
  dropoutWithMask,
  sum,
  mean,
} from './elementwise.js';
export {
  softmax,
  logSoftmax,
  crossEntropy,
  nllLoss,
  mseLoss,
  l1Loss,
  smoothL1Loss,
  binaryCrossEntropyWithLogits,
} from './loss.js';
export type { CrossEntropyOptions, Reduction } from './loss.js';
