// Training: fit(), evaluate(), callbacks, checkpoints and run logs.
export { fit, evaluate, yieldToEventLoop } from './fit.js';
export type {
  FitOptions,
  FitResult,
  EvalResult,
  LoaderLike,
  OptimizerLike,
  SchedulerLike,
  LossFn,
  Batch,
} from './fit.js';
export { EarlyStopping, ProgressBar } from './callbacks.js';
export type { Callback, Logs, TrainerHandle } from './callbacks.js';
export { saveCheckpoint, loadCheckpoint } from './checkpoint.js';
export type { TrainingState } from './checkpoint.js';
export { writeRunLogs, curveSvg } from './history.js';
export type { EpochRecord } from './history.js';
export { topkCorrect } from './metrics.js';
