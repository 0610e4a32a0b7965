// A hang guard for in-process fuzzing (the CI pass): a parser stuck in a synchronous loop blocks
// the event loop, so no timer — not even the test runner's timeout — can end the test. This
// watchdog runs on its own thread; the fuzzing loop posts the input number it is on into shared
// memory, and when that number stops changing for longer than the limit the watchdog writes
// which input hung (straight to fd 2: the main thread cannot print) and kills the process, so
// the run fails instead of hanging forever.
import { Worker } from 'node:worker_threads';

const WATCHDOG_SOURCE = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const beat = new Int32Array(workerData.shared);
let last = -2;
let since = Date.now();
setInterval(() => {
  const now = Date.now();
  const cur = Atomics.load(beat, 0);
  if (cur === -1) return process.exit(0);
  if (cur !== last) { last = cur; since = now; return; }
  if (now - since > workerData.limitMs) {
    writeSync(2, '\\nfuzz watchdog: ' + workerData.label + ' input ' + cur + ' (seed ' + workerData.seed + ') ran for more than ' + workerData.limitMs +
      ' ms: a hang. Reproduce with: npm run fuzz -- --target ' + workerData.label + ' --seed ' + workerData.seed + ' --from ' + cur + ' --iterations 1\\n');
    process.kill(process.pid, 'SIGKILL');
  }
}, Math.min(250, workerData.limitMs / 4));
`;

export interface Watchdog {
  /** Call before each input. */
  beat(index: number): void;
  stop(): Promise<void>;
}

export function startWatchdog(label: string, seed: number, limitMs: number): Watchdog {
  const shared = new SharedArrayBuffer(4);
  const beat = new Int32Array(shared);
  Atomics.store(beat, 0, 0);
  const worker = new Worker(WATCHDOG_SOURCE, { eval: true, workerData: { shared, label, seed, limitMs } });
  worker.unref();
  return {
    beat: (index) => void Atomics.store(beat, 0, index),
    stop: async () => {
      Atomics.store(beat, 0, -1);
      await worker.terminate();
    },
  };
}
