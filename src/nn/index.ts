// The layers, one file each, named and parameterised as torch.nn's classes.
export { type InferenceSession, type InferenceSnapshot, Module, type StateDict } from './module.js';
export { Conv2d, type Conv2dLayerOptions } from './conv2d.js';
export { ConvTranspose2d, type ConvTranspose2dLayerOptions } from './conv-transpose2d.js';
export { Linear } from './linear.js';
export { BatchNorm2d, convertSyncBatchNorm, type BatchNormLayerOptions } from './batch-norm.js';
export { MaxPool2d } from './max-pool2d.js';
export { AvgPool2d } from './avg-pool2d.js';
export { AdaptiveAvgPool2d } from './adaptive-avg-pool2d.js';
export { LocalResponseNorm } from './local-response-norm.js';
export { ReLU } from './relu.js';
export { LeakyReLU } from './leaky-relu.js';
export { Sigmoid, Tanh } from './sigmoid.js';
export { ReLU6, Hardsigmoid, Hardswish, SiLU } from './mobile-activations.js';
export { Dropout } from './dropout.js';
export { Flatten } from './flatten.js';
export { GRU } from './gru.js';
export { Embedding } from './embedding.js';
export { Sequential, Identity } from './sequential.js';
export {
  setInferenceFusion,
  isInferenceFusionEnabled,
  tryFusedConv,
  FoldedBatchNorm,
  type FuseOptions,
} from './fuse.js';
export { fuseConvBn, type FuseConvBnResult } from './fold-batch-norm.js';
export * as init from './init.js';
