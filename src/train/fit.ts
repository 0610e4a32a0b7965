// fit(): the training loop. Epochs of forward, loss, backward and optimizer step; validation
// after every epoch; top-1/top-5 metrics; Keras-style callbacks (the progress bar is one);
// per-run logs and a training curve; atomic checkpoints and exact resume. Between batches it
// yields to the event loop, so a server that trains keeps answering.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../autograd.js';
import type { Module } from '../nn/module.js';
import { assertFinite, clipGradNormInPlace } from '../ops/elementwise.js';
import { crossEntropy } from '../ops/loss.js';
import { isPlannable, runStep } from '../plan/train.js';
import {
  allreduce,
  broadcast,
  checkSameOnEveryRank,
  type DistributedOptions,
  initDistributed,
  type World,
} from '../distributed/index.js';
import { globalRng } from '../random.js';
import type { Tensor } from '../tensor.js';
import { ProgressBar, type Callback, type Logs, type TrainerHandle } from './callbacks.js';
import { readCheckpoint, saveCheckpoint, type CheckpointContents } from './checkpoint.js';
import { type BatchRecord, writeRunLogs, type EpochRecord } from './history.js';
import { TrainingBoard } from './board.js';
import { topkCorrect } from './metrics.js';

export interface Batch {
  images: Tensor;
  labels: Int32Array;
}

/** What fit() needs of a data loader (src/data's DataLoader provides it). */
export interface LoaderLike extends AsyncIterable<Batch> {
  /** Batches per epoch. */
  readonly length: number;
  setEpoch?(epoch: number): void;
  getState?(): unknown;
  setState?(state: never): void;
  /** Throws what setState would throw, changing nothing (checked before a resume commits). */
  validateState?(state: never): void;
  /** The part of the data this process takes in distributed training (DataLoader's shard). */
  readonly shard?: { rank: number; size: number } | null;
  /** The seed of the data's order (compared across the ranks in distributed training). */
  readonly seed?: number;
}

/** What fit() needs of an optimizer (src/optim's optimizers provide it). */
export interface OptimizerLike {
  step(): void;
  zeroGrad(): void;
  paramGroups: { lr: number }[];
  stateDict(): unknown;
  loadStateDict(state: never): void;
  /** Throws what loadStateDict would throw, changing nothing (checked before a resume commits). */
  validateStateDict?(state: never): void;
}

/** What fit() needs of a learning-rate scheduler (src/optim's schedulers provide it). */
export interface SchedulerLike {
  step(metric?: number): void;
  stateDict(): unknown;
  loadStateDict(state: never): void;
  /** Throws what loadStateDict would throw, changing nothing (checked before a resume commits). */
  validateStateDict?(state: never): void;
}

export type LossFn = (logits: Tensor, labels: Int32Array) => Tensor;

export interface FitOptions {
  optimizer: OptimizerLike;
  /** Number of epochs to reach (a resumed run continues up to this). */
  epochs: number;
  /** Validation data, evaluated after every epoch (val_loss, val_acc, val_acc5). */
  validation?: LoaderLike;
  /** Default: cross-entropy on the labels. */
  loss?: LossFn;
  scheduler?: SchedulerLike;
  /** 'epoch' (default) or 'batch' (e.g. OneCycleLR). */
  schedulerInterval?: 'epoch' | 'batch';
  /** Pass this log entry (e.g. 'val_loss') to scheduler.step (ReduceLROnPlateau). */
  schedulerMetric?: string;
  /** Clip the global gradient L2 norm to this value before each step. */
  clipGradNorm?: number;
  callbacks?: Callback[];
  /** Show the progress bar (default true). */
  progress?: boolean;
  /** Write log.json, log.csv, log-batches.csv and curve.svg here after each epoch. */
  logDir?: string;
  /**
   * Write TensorBoard event files (`tensorboard --logdir <parent>` shows them): per step the
   * loss, accuracy and learning rate; per epoch the epoch and validation results, histograms of
   * every parameter and of its gradient (from the epoch's last step), and the first conv layer's
   * filters as an image. true writes into logDir (or runs/fit-<time> without one); a string is
   * the directory.
   */
  tensorboard?: boolean | string;
  /** Save checkpoint.safetensors here after each epoch. */
  checkpointDir?: string;
  /** Continue from checkpointDir/checkpoint.safetensors (or this path) when it exists. */
  resume?: boolean | string;
  /** Recorded in log.json. */
  meta?: Record<string, unknown>;
  /**
   * Run each training step as a compiled plan off the JavaScript thread (default true; also off
   * with FERROCONV_PLANS=0). A model or option that cannot be planned trains eagerly, and
   * fit's result says why (`planned`, `planReason`). While planned, parameters' `.grad` is null
   * after each step: the gradients live in the plan.
   */
  plan?: boolean;
  /**
   * Data-parallel training over MPI, for a process started by mpirun (see initDistributed; a
   * process started otherwise trains alone, unchanged). Every rank runs the same fit() on its
   * shard of the data (the training loader needs `shard: initDistributed()`): the parameters
   * and buffers start as rank 0's, each step's gradients are averaged over the ranks before
   * clipping and the update, and the epoch's metrics (and a sharded validation loader's) are
   * totalled over the ranks, so every rank keeps the same model, history and scheduler.
   * Only rank 0 shows progress and writes logs, TensorBoard files and checkpoints; every rank
   * resumes from them, so checkpointDir must be on storage every rank reads. Each rank's batch
   * is the loader's batchSize; the step sees size times as many samples (scale the learning
   * rate with it, and warm it up, as for any large batch). Batch norm normalises each rank's
   * batch alone unless nn.convertSyncBatchNorm synchronized it. An object sets the collectives'
   * time limit.
   */
  distributed?: boolean | DistributedOptions;
}

export interface FitResult {
  history: EpochRecord[];
  /** Epoch the run started from (non-zero after a resume). */
  startEpoch: number;
  stoppedEarly: boolean;
  /** True when every step ran as a compiled plan off the JavaScript thread. */
  planned: boolean;
  /** Why steps ran eagerly (an op with no plan step, an option, plan: false). */
  planReason?: string;
}

export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Clips the gradients' joint L2 norm to `maxNorm` in place (natively, so a planned step can too). */
function clipNorm(params: Tensor[], maxNorm: number): void {
  const grads = params.flatMap((p) => (p.grad ? [p.grad.data] : []));
  if (grads.length) clipGradNormInPlace(grads, maxNorm);
}

/** The gradients of those of `params` that have one; `whose` is refilled with their parameters. */
function gradientsOf(params: Tensor[], whose: Tensor[]): Tensor[] {
  whose.length = 0;
  const grads: Tensor[] = [];
  for (const p of params) {
    if (!p.grad) continue;
    whose.push(p);
    grads.push(p.grad);
  }
  return grads;
}

/**
 * One training step as fit() runs it (forward, loss, a stop on a non-finite loss, backward,
 * optional clipping, update), returning the loss and the logits (and, with `gradsOf`, the
 * gradients as the update used them): the function a compiled step traces (src/plan/train.ts
 * runStep). Exported for the benchmark, which times exactly this.
 */
export function trainingStep(
  model: Module,
  optimizer: OptimizerLike,
  images: Tensor,
  labels: Int32Array,
  opts: { loss?: LossFn; clipGradNorm?: number; gradsOf?: Tensor[]; update?: boolean } = {},
): () => Tensor[] {
  const lossFn = opts.loss ?? ((l: Tensor, y: Int32Array) => crossEntropy(l, y));
  const params = model.parameters();
  return () => {
    const y = model.call(images);
    const l = lossFn(y, labels);
    assertFinite(l, 'the loss');
    optimizer.zeroGrad();
    l.backward();
    // update: false stops at the gradients (distributed training averages them first).
    if (opts.update === false) return [l, y, ...(opts.gradsOf ? gradientsOf(params, opts.gradsOf) : [])];
    if (opts.clipGradNorm !== undefined) clipNorm(params, opts.clipGradNorm);
    // With gradsOf, the gradients also come out (after the logits), and gradsOf says whose.
    const grads = opts.gradsOf ? gradientsOf(params, opts.gradsOf) : [];
    optimizer.step();
    return [l, y, ...grads];
  };
}

export interface EvalResult {
  loss: number;
  acc: number;
  acc5: number;
  count: number;
}

/**
 * Mean loss and top-1/top-5 accuracy of `model` (in eval mode, no graph) over `loader`, on the
 * model as it was at the call (see Module.inferenceSession: compiled plans off the JavaScript
 * thread where the model traces): training or loading weights meanwhile does not change the
 * result, and the model's mode is never switched.
 */
export async function evaluate(
  model: Module,
  loader: LoaderLike,
  lossFn: LossFn = (l, y) => crossEntropy(l, y),
): Promise<EvalResult> {
  const session = model.inferenceSession();
  let lossSum = 0;
  let c1 = 0;
  let c5 = 0;
  let count = 0;
  try {
    for await (const { images, labels } of loader) {
      const logits = await session.forward(images);
      noGrad(() => {
        lossSum += lossFn(logits, labels).data[0] * labels.length;
        c1 += topkCorrect(logits, labels, 1);
        c5 += topkCorrect(logits, labels, 5);
      });
      count += labels.length;
      await yieldToEventLoop();
    }
  } finally {
    session.close();
  }
  if (count === 0) throw new Error('evaluate: the loader yielded no samples');
  return { loss: lossSum / count, acc: c1 / count, acc5: c5 / count, count };
}

/**
 * evaluate() in a distributed run: a loader sharded over the world is totalled over the ranks;
 * one that is not is evaluated whole by every rank (the same model: the same result).
 */
async function evaluateAcross(
  model: Module,
  loader: LoaderLike,
  lossFn: LossFn,
  dist: World | null,
): Promise<EvalResult> {
  if (!dist || !loader.shard) return evaluate(model, loader, lossFn);
  checkShard('the validation loader', loader, dist);
  // A rank whose uneven shard is empty (fewer samples than ranks) adds nothing.
  const none: EvalResult = { loss: 0, acc: 0, acc5: 0, count: 0 };
  const r = loader.length === 0 ? none : await evaluate(model, loader, lossFn);
  const f = Float32Array.of(r.loss * r.count, r.acc * r.count, r.acc5 * r.count, r.count);
  await allreduce([f], 'sum', 'fit: totalling the validation over the ranks');
  const [loss, c1, c5, count] = f;
  return { loss: loss / count, acc: c1 / count, acc5: c5 / count, count };
}

/**
 * Restores a run from the checkpoint at `path`: all of it or, on an Error, none of it. Every
 * part (weights, optimizer, scheduler, loader, random generator, history, epoch) is checked
 * before anything is changed; the parts whose owners cannot check without applying (a custom
 * optimizer, scheduler or loader without validateStateDict/validateState) are applied first and
 * put back if a later one throws.
 */
function resume(
  path: string,
  model: Module,
  train: LoaderLike,
  opts: FitOptions,
): { history: EpochRecord[]; batches: BatchRecord[]; startEpoch: number } {
  const fail = (e: unknown, what = ''): never => {
    throw new Error(`fit: ${what}${(e as Error).message}`, { cause: e });
  };
  let ckpt: CheckpointContents;
  try {
    ckpt = readCheckpoint(path, model);
  } catch (e) {
    return fail(e);
  }
  const { weights, state } = ckpt;
  const where = `checkpoint ${path}: `;
  const { optimizer, scheduler } = opts;
  const loaderState = state.loader !== undefined && train.setState ? state.loader : undefined;
  const useScheduler = scheduler !== undefined && state.scheduler !== undefined;
  if (state.optimizer === undefined) fail(new Error('holds no optimizer state'), where);
  try {
    optimizer.validateStateDict?.(state.optimizer as never);
    if (useScheduler) scheduler.validateStateDict?.(state.scheduler as never);
    if (loaderState !== undefined) train.validateState?.(loaderState as never);
  } catch (e) {
    fail(e, where);
  }
  // Checked: apply. Only a custom part without a validation method can still throw here.
  const undo: (() => void)[] = [];
  try {
    const optimizerBefore = optimizer.stateDict();
    optimizer.loadStateDict(state.optimizer as never);
    undo.push(() => optimizer.loadStateDict(optimizerBefore as never));
    if (useScheduler) {
      const schedulerBefore = scheduler.stateDict();
      scheduler.loadStateDict(state.scheduler as never);
      undo.push(() => scheduler.loadStateDict(schedulerBefore as never));
    }
    if (loaderState !== undefined) train.setState!(loaderState as never);
  } catch (e) {
    for (const f of undo.reverse()) f();
    fail(e, where);
  }
  // These cannot throw: checked by readCheckpoint.
  if (state.rng !== undefined) globalRng.setState(state.rng);
  model.loadStateDict(weights);
  return {
    history: (state.history ?? []) as EpochRecord[],
    batches: (state.batches ?? []) as BatchRecord[],
    startEpoch: state.epoch + 1,
  };
}

/** Models a fit() call is training: a second concurrent fit() of the same model is refused. */
const training = new WeakSet<Module>();

/**
 * Trains `model`. While it runs, fit() owns the model's mode: every step runs in train mode
 * even if something else calls eval() in between, and a second fit() of the same model throws.
 * predict() and evaluate() meanwhile run on snapshots and do not disturb it.
 */
export async function fit(model: Module, train: LoaderLike, opts: FitOptions): Promise<FitResult> {
  if (training.has(model))
    throw new Error('fit: this model is already being trained by another fit() call; await it first');
  training.add(model);
  try {
    return await fitUnguarded(model, train, opts);
  } finally {
    training.delete(model);
  }
}

async function fitUnguarded(model: Module, train: LoaderLike, opts: FitOptions): Promise<FitResult> {
  if (!Number.isInteger(opts.epochs) || opts.epochs < 1)
    throw new Error(`fit: epochs must be a positive integer, got ${opts.epochs}`);
  const world = opts.distributed ? initDistributed(opts.distributed === true ? {} : opts.distributed) : null;
  const dist = world && world.size > 1 ? world : null;
  if (dist) checkShard('the training loader', train, dist);
  // Rank 0 alone reports and writes: progress, logs, TensorBoard, checkpoints.
  const lead = !dist || dist.rank === 0;
  const handle: TrainerHandle = { stopTraining: false, epochs: opts.epochs, batchesPerEpoch: train.length };
  const bar = opts.progress === false || !lead ? [] : [new ProgressBar()];
  const callbacks: Callback[] = [...bar, ...(opts.callbacks ?? [])];
  const emit = async <K extends keyof Callback>(hook: K, ...args: Parameters<NonNullable<Callback[K]>>) => {
    for (const cb of callbacks) {
      const f = cb[hook] as ((...a: unknown[]) => void | Promise<void>) | undefined;
      if (f) await f.apply(cb, args);
    }
  };
  const ckptPath =
    typeof opts.resume === 'string'
      ? opts.resume
      : opts.checkpointDir
        ? join(opts.checkpointDir, 'checkpoint.safetensors')
        : undefined;

  for (const cb of callbacks) cb.setTrainer?.(handle);
  let history: EpochRecord[] = [];
  let batches: BatchRecord[] = [];
  let startEpoch = 0;
  if (opts.resume && ckptPath && existsSync(ckptPath)) {
    ({ history, batches, startEpoch } = resume(ckptPath, model, train, opts));
  }
  if (dist) await startTogether(model, train, startEpoch, dist);
  if (opts.checkpointDir && lead) mkdirSync(opts.checkpointDir, { recursive: true });
  const board = lead ? TrainingBoard.open(opts.tensorboard, opts.logDir) : null;
  try {
    return await trainEpochs(model, train, opts, { handle, emit, ckptPath, history, batches, startEpoch, board, dist });
  } finally {
    board?.close();
  }
}

interface RunState {
  handle: TrainerHandle;
  emit: <K extends keyof Callback>(hook: K, ...args: Parameters<NonNullable<Callback[K]>>) => Promise<void>;
  ckptPath: string | undefined;
  history: EpochRecord[];
  batches: BatchRecord[];
  startEpoch: number;
  board: TrainingBoard | null;
  /** The world of a distributed run (null: this process trains alone). */
  dist: World | null;
}

/** Throws unless `loader` is sharded for this rank of `world`. */
function checkShard(what: string, loader: LoaderLike, world: World): void {
  const s = loader.shard;
  if (!s || s.rank !== world.rank || s.size !== world.size) {
    throw new Error(
      `fit: distributed training over ${world.size} ranks needs ${what} sharded for this rank ` +
        `(new DataLoader(dataset, { ..., shard: initDistributed() })), ` +
        (s ? `it is sharded as rank ${s.rank} of ${s.size}` : 'it is not sharded'),
    );
  }
}

/**
 * The ranks check they are about to train alike (the same batches per epoch, the same epoch to
 * resume from, the same data order and model), then take rank 0's parameters and buffers.
 */
async function startTogether(model: Module, train: LoaderLike, startEpoch: number, world: World): Promise<void> {
  const seed = train.seed ?? 0;
  const state = [...model.stateDict().values()];
  await checkSameOnEveryRank(
    'fit',
    [
      'the batches per epoch',
      'the epoch to start from',
      "the loader's seed (low half)",
      '(high half)',
      'the model size',
    ],
    // The seed in halves: float32 holds integers exactly up to 2^24.
    [train.length, startEpoch, seed & 0xffff, seed >>> 16, state.length],
  );
  await broadcast(
    state.map((t) => t.data),
    0,
    `fit: taking rank 0's parameters and buffers (rank ${world.rank})`,
  );
}

/** Averages the gradients of `params` over the ranks (one bucketed all-reduce). */
async function averageGradients(params: Tensor[]): Promise<void> {
  const grads = params.flatMap((p) => (p.grad ? [p.grad.data] : []));
  await allreduce(grads, 'mean', 'fit: averaging the gradients');
}

async function trainEpochs(model: Module, train: LoaderLike, opts: FitOptions, run: RunState): Promise<FitResult> {
  const { handle, emit, ckptPath, history, batches, startEpoch, board, dist } = run;
  const lead = !dist || dist.rank === 0;
  const lossFn = opts.loss ?? ((l: Tensor, y: Int32Array) => crossEntropy(l, y));

  const params = model.parameters();
  // Compiled steps, unless something rules them out (then the reason).
  let planReason: string | undefined =
    opts.plan === false
      ? 'plan: false'
      : process.env.FERROCONV_PLANS === '0'
        ? 'FERROCONV_PLANS=0'
        : !isPlannable(opts.optimizer)
          ? 'the optimizer is not one of ferroconv.optim'
          : undefined;
  let plannedSteps = 0;
  const plannable = isPlannable(opts.optimizer) ? opts.optimizer : null;
  await emit('onTrainBegin', {});
  for (let epoch = startEpoch; epoch < opts.epochs && !handle.stopTraining; epoch++) {
    const t0 = performance.now();
    model.train();
    train.setEpoch?.(epoch);
    await emit('onEpochBegin', epoch, {});
    let lossSum = 0;
    let c1 = 0;
    let c5 = 0;
    let count = 0;
    let batch = 0;
    // The epoch's last step also hands its gradients out, for the board's histograms.
    const gradsOf: Tensor[] = [];
    let lastGrads: Tensor[] = [];
    for await (const { images, labels } of train) {
      const wantGrads = board !== null && batch === train.length - 1;
      const stepLr = opts.optimizer.paramGroups[0]?.lr ?? Number.NaN; // the rate this step uses
      // A distributed step's samples are every rank's (what the progress bar's rate counts).
      const stepSize = labels.length * (dist?.size ?? 1);
      await emit('onBatchBegin', batch, { size: stepSize });
      // Set again at every step: callbacks and the loader may have let other code run.
      model.train();
      const diverged = (value: number) =>
        new Error(
          `fit: loss became ${value} at epoch ${epoch + 1}, batch ${batch + 1} ` +
            '(learning rate too high, or bad input?)',
        );
      let logits: Tensor | undefined;
      let lossValue = NaN;
      if (planReason === undefined && plannable) {
        // One call into the binding for the whole step, off the JavaScript thread.
        // Distributed, the plan stops at the gradients: they are averaged, then clipped and applied.
        const step = trainingStep(model, plannable, images, labels, {
          ...opts,
          gradsOf: wantGrads || dist ? gradsOf : undefined,
          update: !dist,
        });
        let result: Tensor[] | string;
        try {
          result = await runStep(model, plannable, step, [images.data, labels]);
        } catch (e) {
          const m = /the loss is not finite: element \d+ is (\S+)/.exec((e as Error).message);
          if (m) throw diverged(m[1] === 'inf' ? Infinity : m[1] === '-inf' ? -Infinity : NaN);
          throw e;
        }
        if (typeof result === 'string') {
          planReason = result;
        } else {
          plannedSteps++;
          [, logits] = result;
          lossValue = result[0].data[0];
          if (wantGrads) lastGrads = result.slice(2);
          if (dist) {
            gradsOf.forEach((p, i) => {
              p.grad = result[2 + i] as Tensor;
            });
            await averageGradients(gradsOf);
            if (opts.clipGradNorm !== undefined) clipNorm(params, opts.clipGradNorm);
            opts.optimizer.step();
          }
        }
      }
      if (!logits) {
        logits = model.call(images);
        const loss = lossFn(logits, labels);
        lossValue = loss.data[0];
        if (!Number.isFinite(lossValue)) throw diverged(lossValue);
        opts.optimizer.zeroGrad();
        loss.backward();
        if (dist) await averageGradients(params);
        if (opts.clipGradNorm !== undefined) clipNorm(params, opts.clipGradNorm);
        if (wantGrads) lastGrads = gradientsOf(params, gradsOf);
        opts.optimizer.step();
      }
      if (opts.scheduler && opts.schedulerInterval === 'batch') opts.scheduler.step();
      const b1 = topkCorrect(logits, labels, 1);
      const b5 = topkCorrect(logits, labels, 5);
      lossSum += lossValue * labels.length;
      c1 += b1;
      c5 += b5;
      count += labels.length;
      const stepRecord: BatchRecord = {
        step: (batches.at(-1)?.step ?? 0) + 1,
        epoch: epoch + 1,
        batch,
        loss: lossValue,
        acc: b1 / labels.length,
        lr: stepLr,
      };
      batches.push(stepRecord);
      board?.batch(stepRecord);
      await emit('onBatchEnd', batch, {
        loss: lossValue,
        acc: b1 / labels.length,
        acc5: b5 / labels.length,
        size: stepSize,
      });
      batch++;
      await yieldToEventLoop();
    }
    if (dist) {
      // The epoch's results are every rank's together.
      const f = Float32Array.of(lossSum, c1, c5, count);
      await allreduce([f], 'sum', 'fit: totalling the epoch over the ranks');
      [lossSum, c1, c5, count] = f;
    }
    if (count === 0) throw new Error('fit: the training loader yielded no samples');
    const logs: Logs = {
      loss: lossSum / count,
      acc: c1 / count,
      acc5: c5 / count,
      lr: opts.optimizer.paramGroups[0]?.lr ?? NaN,
    };
    if (opts.validation) {
      const v = await evaluateAcross(model, opts.validation, lossFn, dist);
      Object.assign(logs, { val_loss: v.loss, val_acc: v.acc, val_acc5: v.acc5 });
    }
    if (opts.scheduler && opts.schedulerInterval !== 'batch') {
      opts.scheduler.step(opts.schedulerMetric ? logs[opts.schedulerMetric] : undefined);
    }
    const record: EpochRecord = { epoch: epoch + 1, seconds: (performance.now() - t0) / 1000, ...logs };
    history.push(record);
    if (opts.logDir && lead) writeRunLogs(opts.logDir, history, opts.meta, batches);
    if (board) {
      const names = new Map(model.namedParameters().map(([n, p]) => [p, n] as const));
      const grads = new Map(gradsOf.map((p, i) => [names.get(p) ?? `${i}`, lastGrads[i]] as const));
      await board.epoch(model, record, batches.at(-1)?.step ?? 0, grads);
    }
    if (opts.checkpointDir && ckptPath && lead) {
      saveCheckpoint(ckptPath, model, {
        epoch,
        optimizer: opts.optimizer.stateDict(),
        scheduler: opts.scheduler?.stateDict(),
        loader: train.getState?.(),
        rng: globalRng.getState(),
        history,
        batches,
      });
    }
    await emit('onEpochEnd', epoch, logs);
    if (dist) {
      // A callback on any rank stopping the run stops every rank.
      const stop = Float32Array.of(handle.stopTraining ? 1 : 0);
      await allreduce([stop], 'max', 'fit: agreeing whether to stop');
      handle.stopTraining = stop[0] > 0;
    }
  }
  await emit('onTrainEnd', history.at(-1) ?? {});
  const planned = planReason === undefined && plannedSteps > 0;
  return { history, startEpoch, stoppedEarly: handle.stopTraining, planned, ...(planned ? {} : { planReason }) };
}
