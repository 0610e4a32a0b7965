// ferroconv.optim: optimizers, gradient clipping and learning-rate schedules, numerically
// matching torch.optim (PyTorch 1.13).
export { Optimizer } from './optimizer.js';
export type {
  GroupOptions,
  OptionValue,
  ParamGroup,
  ParamGroupInput,
  Params,
  ParamState,
  OptimizerStateDict,
  SavedParamGroup,
} from './optimizer.js';
export { SGD } from './sgd.js';
export type { SGDOptions } from './sgd.js';
export { Adam } from './adam.js';
export type { AdamOptions } from './adam.js';
export { AdamW } from './adamw.js';
export type { AdamWOptions } from './adamw.js';
export { RMSprop } from './rmsprop.js';
export type { RMSpropOptions } from './rmsprop.js';
export { Adagrad } from './adagrad.js';
export type { AdagradOptions } from './adagrad.js';
export { Adadelta } from './adadelta.js';
export type { AdadeltaOptions } from './adadelta.js';
export { clipGradNorm, clipGradValue } from './clip.js';
export {
  LRScheduler,
  StepLR,
  MultiStepLR,
  ExponentialLR,
  PolynomialLR,
  CosineAnnealingLR,
  WarmupCosineLR,
  OneCycleLR,
  ReduceLROnPlateau,
} from './lr-scheduler.js';
export type {
  LRSchedulerStateDict,
  StepLROptions,
  MultiStepLROptions,
  ExponentialLROptions,
  PolynomialLROptions,
  CosineAnnealingLROptions,
  WarmupCosineLROptions,
  OneCycleLROptions,
  ReduceLROnPlateauOptions,
  ReduceLROnPlateauStateDict,
} from './lr-scheduler.js';
