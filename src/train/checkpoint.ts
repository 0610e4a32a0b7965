// Checkpoints: everything a run needs to continue exactly where it stopped — model, optimizer
// state, scheduler, epoch, data order, random generator state and history — in ONE safetensors
// file, written atomically (temp file + rename), so a kill mid-save leaves the last good one.
// Large numeric arrays inside the optimizer/scheduler state become tensors; the rest is JSON in
// the file's metadata.
import { existsSync } from 'node:fs';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import type { Module } from '../nn/module.js';
import { Tensor } from '../tensor.js';

export const CHECKPOINT_FORMAT = 'ferroconv-checkpoint-1';

export interface TrainingState {
  /** Last completed epoch (0-based). */
  epoch: number;
  optimizer?: unknown;
  scheduler?: unknown;
  loader?: unknown;
  rng?: number[];
  history?: unknown[];
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

function restore(value: unknown, tensors: Map<string, Tensor>): unknown {
  if (Array.isArray(value)) return value.map((v) => restore(v, tensors));
  if (value && typeof value === 'object') {
    const ref = (value as { $tensor?: unknown }).$tensor;
    if (typeof ref === 'string') {
      const t = tensors.get(ref);
      if (!t) throw new Error(`checkpoint: state refers to tensor '${ref}', which the file does not hold`);
      return Array.from(t.data);
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, restore(v, tensors)]));
  }
  return value;
}

export function saveCheckpoint(path: string, model: Module, state: TrainingState): void {
  const tensors = new Map<string, Tensor>();
  for (const [k, t] of model.stateDict()) tensors.set(`model.${k}`, t);
  const json = extract(state, 'state', tensors);
  saveSafetensors(path, tensors, { metadata: { format: CHECKPOINT_FORMAT, state: JSON.stringify(json) } });
}

/**
 * Reads a checkpoint, loads the model weights (strictly: a checkpoint of another architecture
 * throws and changes nothing) and returns the training state for the caller to restore.
 */
export function loadCheckpoint(path: string, model: Module): TrainingState {
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
  const state = restore(parsed, tensors) as TrainingState;
  if (typeof state?.epoch !== 'number') throw new Error(`checkpoint ${path}: training state has no epoch`);
  const weights = new Map<string, Tensor>();
  for (const [k, t] of tensors) if (k.startsWith('model.')) weights.set(k.slice(6), t);
  model.loadStateDict(weights);
  return state;
}
