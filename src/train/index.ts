// Training: fit(), evaluate(), callbacks, checkpoints, run logs and TensorBoard event files.
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
export { writeRunLogs, curveSvg, smooth } from './history.js';
export type { EpochRecord, BatchRecord } from './history.js';
export {
  SummaryWriter,
  type HistogramOptions,
  crc32c,
  histogramProto,
  tensorflowBucketLimits,
} from './tensorboard.js';
export { topkCorrect } from './metrics.js';
