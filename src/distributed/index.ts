// Data-parallel training over MPI. Processes started by mpirun (or Slurm's srun, or Kubeflow's
// MPI Operator, which run mpirun) form a world of ranks; each trains on its shard of the data
// (DataLoader's `shard`) and the gradients are averaged over the ranks at every step, so the
// ranks stay identical and together train as one process with their batches joined would.
//
// MPI itself comes from Open MPI's libmpi, loaded by the addon only when a process is started
// by an MPI launcher (crates/node/src/mpi.rs): a process started any other way is a world of
// one and never touches libmpi, so single-process use needs no MPI installed. Collectives run
// on a thread of their own, never blocking the event loop, and each has a time limit: a rank
// that dies or hangs makes the others fail with an Error instead of waiting forever.
import { availableParallelism } from 'node:os';
import { addon, native } from '../native.js';

/** The processes training together, and which one this is. */
export interface World {
  /** This process's rank, 0 to size - 1. Rank 0 writes the logs and checkpoints. */
  readonly rank: number;
  /** The number of processes. */
  readonly size: number;
  /** The libmpi loaded (null for a process not started by an MPI launcher: a world of one). */
  readonly library: string | null;
}

export interface DistributedOptions {
  /**
   * Seconds a collective may wait for the other ranks before it fails (default: the
   * FERROCONV_MPI_TIMEOUT environment variable, else 300). Long enough for the slowest rank's
   * step and its data loading; a dead rank is usually reported sooner, by the launcher.
   */
  timeout?: number;
}

/** Whether this process was started by an MPI launcher (Open MPI's mpirun, or a PMIx/PMI one such as srun). */
export function launchedByMpi(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['OMPI_COMM_WORLD_SIZE', 'PMIX_RANK', 'PMI_RANK'].some((k) => env[k] !== undefined);
}

let world: World | null = null;
let timeoutMs = 300_000;
/** Why collectives can no longer run (the launcher ended the job, or one timed out). */
let broken: Error | null = null;
const pending = new Set<(e: Error) => void>();

function secondsFrom(value: unknown, what: string): number {
  const s = typeof value === 'string' ? Number(value) : value;
  if (typeof s !== 'number' || !Number.isFinite(s) || s <= 0)
    throw new Error(`initDistributed: ${what} must be a positive number of seconds, got ${String(value)}`);
  return s;
}

/**
 * Joins the world this process was launched into: under mpirun, loads libmpi and initialises
 * MPI (an Error when Open MPI's libmpi cannot be loaded); otherwise a world of one. Once per
 * process: later calls return the same world (a given timeout still applies). MPI is finalized
 * when the process exits. When several ranks run on one machine and FERROCONV_NUM_THREADS is
 * not set, each rank's kernel pool is sized to its share of the cores.
 */
export function initDistributed(opts: DistributedOptions = {}): World {
  const env = process.env.FERROCONV_MPI_TIMEOUT;
  if (opts.timeout !== undefined) timeoutMs = secondsFrom(opts.timeout, 'timeout') * 1000;
  else if (env !== undefined && !world) timeoutMs = secondsFrom(env, 'FERROCONV_MPI_TIMEOUT') * 1000;
  if (world) return world;
  if (!launchedByMpi()) {
    world = Object.freeze({ rank: 0, size: 1, library: null });
    return world;
  }
  const w = addon.mpiInit();
  world = Object.freeze({ rank: w.rank, size: w.size, library: w.library });
  // Ranks sharing a machine share its cores: unless FERROCONV_NUM_THREADS says otherwise, each
  // rank's kernel pool gets its share, not all of them (which would oversubscribe every core).
  const local = Number(process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? process.env.SLURM_NTASKS_PER_NODE ?? 1);
  if (process.env.FERROCONV_NUM_THREADS === undefined && Number.isInteger(local) && local > 1) {
    addon.setNumThreads(Math.max(1, Math.floor(availableParallelism() / local)));
  }
  // A clean exit finalizes MPI. A failing one (an Error, a timeout) does not: MPI_Finalize
  // would wait for the other ranks, and MPI_Abort would kill this process before its Error is
  // written out; the launcher ends the job of a rank that exits without finalizing.
  process.once('exit', (code) => {
    if (code === 0) addon.mpiFinalize();
  });
  // The launcher ends every rank with SIGTERM when one of them dies: the collective this rank
  // waits in fails with an Error saying so (rather than the process vanishing mid-call), and
  // the process exits soon after whatever handles it.
  process.once('SIGTERM', () => {
    fail(new Error(`MPI: rank ${w.rank}: the launcher ended the job (SIGTERM; another rank failed or was stopped)`));
    process.exitCode = 143;
    setTimeout(() => process.exit(143), 2000).unref();
  });
  return world;
}

/** The world initDistributed joined, or null before it is called. */
export function currentWorld(): World | null {
  return world;
}

function fail(e: Error): void {
  broken ??= e;
  for (const reject of pending) reject(e);
  pending.clear();
}

/** Runs one collective with the time limit; every rank must make the same calls in the same order. */
function collective(what: string, start: () => Promise<void>): Promise<void> {
  const w = world;
  if (!w || w.size === 1) return Promise.resolve();
  if (broken) return Promise.reject(new Error(`MPI: ${what}: ${broken.message}`, { cause: broken }));
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      fail(
        new Error(
          `MPI: rank ${w.rank}: ${what} did not complete within ${timeoutMs / 1000} s: another rank has ` +
            'failed, hung or fallen behind (FERROCONV_MPI_TIMEOUT sets the limit in seconds)',
        ),
      );
    }, timeoutMs);
    const settle = (e?: Error) => {
      clearTimeout(timer);
      pending.delete(settle);
      if (e) reject(e);
      else resolve();
    };
    pending.add(settle);
    start().then(
      () => settle(),
      (e: Error) => settle(new Error(`MPI: rank ${w.rank}: ${what}: ${e.message}`, { cause: e })),
    );
  });
}

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

/** Replaces every array by its element-wise `op` over the ranks (in one bucketed MPI_Allreduce). */
export function allreduce(arrays: Float32Array[], op: ReduceOp, what = `allreduce (${op})`): Promise<void> {
  return collective(what, () => addon.mpiAllreduce(arrays, op));
}

/** Replaces every array by rank `root`'s. */
export function broadcast(arrays: Float32Array[], root = 0, what = 'broadcast'): Promise<void> {
  return collective(what, () => addon.mpiBroadcast(arrays, root));
}

/** Resolves when every rank has reached it. */
export function barrier(what = 'barrier'): Promise<void> {
  return collective(what, () => addon.mpiBarrier());
}

/**
 * Throws, on every rank alike, unless every rank passed the same `values` (one max all-reduce
 * of the values and their negatives: the max and, negated, the min). `names` say what each
 * value is, for the message.
 */
export async function checkSameOnEveryRank(where: string, names: string[], values: number[]): Promise<void> {
  const both = Float32Array.from([...values, ...values.map((v) => -v)]);
  await allreduce([both], 'max', `${where}: comparing ${names.join(', ')}`);
  const hi = both.subarray(0, values.length);
  const lo = both.subarray(values.length).map((v) => -v);
  const differ = names.flatMap((n, i) =>
    hi[i] !== lo[i] ? [`${n} (${lo[i]} to ${hi[i]}; rank ${world?.rank}: ${values[i]})`] : [],
  );
  if (differ.length) throw new Error(`${where}: the ranks disagree on ${differ.join(', ')}`);
}

/**
 * The blocking all-reduce, for the few floats a collective inside a forward or backward pass
 * needs (synchronized batch norm): it holds the JavaScript thread until every rank has joined,
 * or throws after the time limit. A no-op in a world of one. Through `native`, so a compiled
 * plan's trace refuses it (the step then runs eagerly).
 */
export function allreduceSync(arrays: Float32Array[], op: ReduceOp, what = `allreduce (${op})`): void {
  const w = world;
  if (!w || w.size === 1) return;
  if (broken) throw new Error(`MPI: ${what}: ${broken.message}`, { cause: broken });
  try {
    native.mpiAllreduceSync(arrays, op, timeoutMs);
  } catch (e) {
    const err = new Error(`MPI: rank ${w.rank}: ${what}: ${(e as Error).message}`, { cause: e });
    if (/did not complete|timed out/.test((e as Error).message)) fail(err);
    throw err;
  }
}
