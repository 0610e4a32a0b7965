// A small pool of worker threads that build batches for a DataLoader. Each worker rebuilds the
// dataset and transform from plain data once, then answers batch requests one at a time; images
// come back as transferred ArrayBuffers (no copy). A worker holds the process open only while it
// has work, and close() terminates them all.
import type { Worker } from 'node:worker_threads';
import { Tensor } from '../tensor.js';
import { spawnModuleWorker } from '../worker-script.js';
import type { Batch, WorkerSource } from './dataset.js';
import type { TransformSpec } from './transforms.js';

/** What every worker starts from (workerData). */
export interface WorkerInit {
  source: WorkerSource;
  transform: TransformSpec | null;
  seed: number;
}

export interface WorkerRequest {
  id: number;
  epoch: number;
  indices: Int32Array;
}

export type WorkerReply =
  | { id: number; images: Float32Array; shape: number[]; labels: Int32Array }
  | { id: number; error: string };

interface Task {
  id: number;
  epoch: number;
  indices: Int32Array;
  resolve: (b: Batch) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  task: Task | null;
}

let nextId = 1;

export class WorkerPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private failure: Error | null = null;
  private closing = false;
  private closed: Promise<void> | null = null;

  constructor(size: number, init: WorkerInit) {
    for (let i = 0; i < size; i++) {
      const worker = spawn(init);
      const slot: Slot = { worker, task: null };
      worker.unref();
      worker.on('message', (reply: WorkerReply) => this.onReply(slot, reply));
      worker.on('error', (e: Error) => this.fail(new Error(`DataLoader worker failed: ${e.message}`)));
      worker.on('exit', (code) => {
        if (!this.closing) this.fail(new Error(`DataLoader worker exited unexpectedly (code ${code})`));
      });
      this.slots.push(slot);
    }
  }

  /** Workers not yet terminated. */
  get size(): number {
    return this.slots.length;
  }

  /** The batch at `indices` of epoch `epoch`, built by the next free worker. */
  run(epoch: number, indices: Int32Array): Promise<Batch> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new Error('DataLoader: worker pool is closed'));
    return new Promise<Batch>((resolve, reject) => {
      this.queue.push({ id: nextId++, epoch, indices, resolve, reject });
      this.dispatch();
    });
  }

  /** Terminates every worker; pending requests are rejected. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closing = true;
      const err = new Error('DataLoader: iteration ended before this batch was built');
      for (const t of this.queue.splice(0)) t.reject(err);
      const workers = this.slots.splice(0);
      for (const s of workers) s.task?.reject(err);
      this.closed = Promise.all(workers.map((s) => s.worker.terminate())).then(() => undefined);
    }
    return this.closed;
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.task || this.queue.length === 0) continue;
      const task = this.queue.shift()!;
      slot.task = task;
      // Busy workers keep the process alive, or a script awaiting a batch could exit mid-loop.
      slot.worker.ref();
      const req: WorkerRequest = { id: task.id, epoch: task.epoch, indices: task.indices };
      slot.worker.postMessage(req);
    }
  }

  private onReply(slot: Slot, reply: WorkerReply): void {
    const task = slot.task;
    if (!task || task.id !== reply.id) return;
    slot.task = null;
    slot.worker.unref();
    if ('error' in reply) {
      task.reject(new Error(reply.error));
    } else {
      try {
        task.resolve({ images: new Tensor(reply.images, reply.shape), labels: reply.labels });
      } catch (e) {
        task.reject(e as Error);
      }
    }
    this.dispatch();
  }

  private fail(err: Error): void {
    if (this.failure || this.closing) return;
    this.failure = err;
    for (const t of this.queue.splice(0)) t.reject(err);
    for (const s of this.slots) {
      s.task?.reject(err);
      s.task = null;
    }
    void this.close();
  }
}

function spawn(init: WorkerInit): Worker {
  return spawnModuleWorker(new URL('./worker', import.meta.url), init, 'DataLoader');
}
