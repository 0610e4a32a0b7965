// Checkpoints: everything a run needs to continue exactly where it stopped — model, optimizer
// state, scheduler, epoch, data order, random generator state and history — in ONE safetensors
// file, written atomically (temp file + rename), so a kill mid-save leaves the last good one.
// Large numeric arrays inside the optimizer/scheduler state become tensors; the rest is JSON in
// the file's metadata.
import { existsSync } from 'node:fs';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Module } from '../nn/module.js';
import { checkRngState } from '../random.js';
import { Tensor } from '../tensor.js';
import { describe } from '../describe.js';

export const CHECKPOINT_FORMAT = 'ferroconv-checkpoint-1';

export interface TrainingState {
  /** Last completed epoch (0-based). */
  epoch: number;
  optimizer?: unknown;
  scheduler?: unknown;
  loader?: unknown;
  rng?: number[];
  history?: unknown[];
  /** Per-batch records (fit's BatchRecord). */
  batches?: unknown[];
  [key: string]: unknown;
}

const BIG = 64;

/** Replaces numeric arrays longer than BIG with {"$tensor": name} and collects them. */
function extract(value: unknown, path: string, out: Map<string, Tensor>): unknown {
  if (Array.isArray(value) && value.length > BIG && value.every((v) => typeof v === 'number')) {
    out.set(path, new Tensor(Float32Array.from(value as number[]), [value.length]));
    return { $tensor: path };
  }
  if (value instanceof Float32Array) {
    out.set(path, new Tensor(value, [value.length]));
    return { $tensor: path };
  }
  if (Array.isArray(value)) return value.map((v, i) => extract(v, `${path}.${i}`, out));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, extract(v, `${path}.${k}`, out)]));
  }
  return value;
}

/** Deepest nesting a training state may have: real ones nest a few levels; a hostile file could
 * nest deep enough to overflow the stack of any recursive reader. */
const MAX_STATE_DEPTH = 64;

function restore(value: unknown, tensors: Map<string, Tensor>, depth = 0): unknown {
  if (depth > MAX_STATE_DEPTH)
    throw new Error(`checkpoint: training state nests deeper than ${MAX_STATE_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((v) => restore(v, tensors, depth + 1));
  if (value && typeof value === 'object') {
    const ref = (value as { $tensor?: unknown }).$tensor;
    if (typeof ref === 'string') {
      const t = tensors.get(ref);
      if (!t) throw new Error(`checkpoint: state refers to tensor '${ref}', which the file does not hold`);
      return Array.from(t.data);
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, restore(v, tensors, depth + 1)]));
  }
  return value;
}

export function saveCheckpoint(path: string, model: Module, state: TrainingState): void {
  const tensors = new Map<string, Tensor>();
  for (const [k, t] of model.stateDict()) tensors.set(`model.${k}`, t);
  const json = extract(state, 'state', tensors);
  saveSafetensors(path, tensors, { metadata: { format: CHECKPOINT_FORMAT, state: JSON.stringify(json) } });
}

/** A checkpoint as read from disk, checked but not yet applied to anything. */
export interface CheckpointContents {
  /** The model's weights, by the names of model.stateDict(). */
  weights: Map<string, Tensor>;
  state: TrainingState;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Checks the parts of a training state whose form TrainingState fixes (epoch, rng, history);
 * the optimizer, scheduler and loader states are checked by their owners. Throws naming `where`.
 */
export function checkTrainingState(state: unknown, where: string): asserts state is TrainingState {
  if (!isRecord(state)) throw new Error(`${where}: training state: expected an object, got ${describe(state)}`);
  if (state.epoch === undefined) throw new Error(`${where}: training state has no epoch`);
  const epoch = state.epoch;
  // Safe integers only: from 2^53 on, epoch + 1 === epoch and a loop over epochs never advances.
  if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
    throw new Error(
      `${where}: epoch: expected a non-negative integer (the last completed epoch), got ${describe(epoch)}`,
    );
  }
  if (state.rng !== undefined) checkRngState(state.rng, `${where}: rng`);
  if (state.history !== undefined) {
    const history = state.history;
    if (!Array.isArray(history))
      throw new Error(`${where}: history: expected an array of epoch records, got ${describe(history)}`);
    history.forEach((h, i) => {
      if (!isRecord(h))
        throw new Error(`${where}: history[${i}]: expected an epoch record (an object), got ${describe(h)}`);
      if (typeof h.epoch !== 'number' || !Number.isSafeInteger(h.epoch) || h.epoch < 1) {
        throw new Error(`${where}: history[${i}].epoch: expected a positive integer, got ${describe(h.epoch)}`);
      }
    });
  }
  if (state.batches !== undefined) {
    const batches = state.batches;
    if (!Array.isArray(batches))
      throw new Error(`${where}: batches: expected an array of batch records, got ${describe(batches)}`);
    batches.forEach((b, i) => {
      if (!isRecord(b) || !['step', 'epoch', 'batch'].every((k) => Number.isSafeInteger(b[k]))) {
        throw new Error(`${where}: batches[${i}]: expected a batch record with integer step, epoch and batch`);
      }
    });
  }
}

/**
 * Reads a checkpoint and checks it, changing nothing: the training state's own fields (see
 * checkTrainingState) and, when `model` is given, that the weights load into it strictly.
 */
export function readCheckpoint(path: string, model?: Module): CheckpointContents {
  if (!existsSync(path)) throw new Error(`checkpoint ${path}: file not found`);
  const { tensors, metadata } = loadSafetensors(path);
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new Error(`checkpoint ${path}: not a ferroconv checkpoint (format '${metadata.format ?? 'none'}')`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(metadata.state ?? '');
  } catch {
    throw new Error(`checkpoint ${path}: training state is not valid JSON`);
  }
  const state = restore(parsed, tensors);
  checkTrainingState(state, `checkpoint ${path}`);
  const weights = new Map<string, Tensor>();
  for (const [k, t] of tensors) if (k.startsWith('model.')) weights.set(k.slice(6), t);
  if (model) {
    try {
      model.validateStateDict(weights);
    } catch (e) {
      throw new Error(`checkpoint ${path}: ${(e as Error).message}`, { cause: e });
    }
  }
  return { weights, state };
}

/**
 * Reads a checkpoint, loads the model weights (strictly: a checkpoint of another architecture
 * throws and changes nothing) and returns the training state for the caller to restore.
 */
export function loadCheckpoint(path: string, model: Module): TrainingState {
  const { weights, state } = readCheckpoint(path, model);
  model.loadStateDict(weights);
  return state;
}
