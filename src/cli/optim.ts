// Optimizer and schedule names the CLI accepts.
import {
  Adadelta,
  Adagrad,
  Adam,
  AdamW,
  CosineAnnealingLR,
  OneCycleLR,
  ReduceLROnPlateau,
  RMSprop,
  SGD,
  StepLR,
  type Optimizer,
} from '../optim/index.js';
import type { Tensor } from '../tensor.js';
import type { SchedulerLike } from '../train/fit.js';

export const optimizerNames = (): string[] => ['sgd', 'adam', 'adamw', 'rmsprop', 'adagrad', 'adadelta'];
export const scheduleNames = (): string[] => ['none', 'onecycle', 'cosine', 'step', 'plateau'];

export function buildOptimizer(
  name: string,
  params: Tensor[],
  o: { lr?: number; momentum?: number; weightDecay: number },
): Optimizer {
  const lr = o.lr ?? (name === 'adam' || name === 'adamw' ? 1e-3 : name === 'adadelta' ? 1 : 0.01);
  switch (name) {
    case 'sgd':
      return new SGD(params, { lr, momentum: o.momentum ?? 0.9, weightDecay: o.weightDecay });
    case 'adam':
      return new Adam(params, { lr, weightDecay: o.weightDecay });
    case 'adamw':
      return new AdamW(params, { lr, weightDecay: o.weightDecay || 0.01 });
    case 'rmsprop':
      return new RMSprop(params, { lr, momentum: o.momentum ?? 0, weightDecay: o.weightDecay });
    case 'adagrad':
      return new Adagrad(params, { lr, weightDecay: o.weightDecay });
    case 'adadelta':
      return new Adadelta(params, { lr, weightDecay: o.weightDecay });
    default:
      throw new Error(`--optimizer: unknown optimizer '${name}' (expected one of ${optimizerNames().join(', ')})`);
  }
}

export function buildScheduler(
  name: string,
  optimizer: Optimizer,
  o: { epochs: number; stepsPerEpoch: number },
): { scheduler: SchedulerLike; interval: 'epoch' | 'batch'; metric?: string } | undefined {
  const baseLr = optimizer.paramGroups[0].lr;
  switch (name) {
    case 'none':
      return undefined;
    case 'onecycle':
      return {
        scheduler: new OneCycleLR(optimizer, { maxLr: baseLr, epochs: o.epochs, stepsPerEpoch: o.stepsPerEpoch }),
        interval: 'batch',
      };
    case 'cosine':
      return { scheduler: new CosineAnnealingLR(optimizer, { tMax: o.epochs }), interval: 'epoch' };
    case 'step':
      return {
        scheduler: new StepLR(optimizer, { stepSize: Math.max(1, Math.floor(o.epochs / 3)), gamma: 0.1 }),
        interval: 'epoch',
      };
    case 'plateau':
      return {
        scheduler: new ReduceLROnPlateau(optimizer, { factor: 0.1, patience: 2 }),
        interval: 'epoch',
        metric: 'val_loss',
      };
    default:
      throw new Error(`--schedule: unknown schedule '${name}' (expected one of ${scheduleNames().join(', ')})`);
  }
}
