// One run of data-parallel training throughput, for bench/compare.ts's "distributed" section:
// started under `mpirun -np N` (or alone: a world of one), every rank trains `--model` on
// synthetic data at `--batch` per rank through fit({ distributed: true }), and rank 0 prints one
// JSON line: images per second over all ranks (after `--warmup` steps), the step time, and the
// median time of one all-reduce of the model's gradients alone (what a step adds to talk).
import { parseArgs } from 'node:util';
import {
  allreduce,
  barrier,
  DataLoader,
  fit,
  initDistributed,
  manualSeed,
  models,
  randn,
  SGD,
  TensorDataset,
} from '../src/index.js';

const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'mnistnet' },
    batch: { type: 'string', default: '64' },
    steps: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
  },
  strict: true,
});
const world = initDistributed({ timeout: 600 });
const batch = Number(a.batch);
const steps = Number(a.steps);
const warmup = Number(a.warmup);
manualSeed(1);
const model = a.model === 'resnet18' ? models.resnet18({ numClasses: 10 }) : models.mnistNet();
const shape = a.model === 'resnet18' ? [3, 224, 224] : [1, 28, 28];
// Each rank's samples: (warmup + steps) batches, the labels 0-9 in turn.
const n = (warmup + steps) * batch * world.size;
const data = new TensorDataset(
  randn([n, ...shape]),
  Int32Array.from({ length: n }, (_, i) => i % 10),
);
const loader = new DataLoader(data, { batchSize: batch, shuffle: true, seed: 1, shard: world });
const stamps: number[] = [];
const result = await fit(model, loader, {
  optimizer: new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 }),
  epochs: 1,
  distributed: true,
  progress: false,
  callbacks: [{ onBatchEnd: () => void stamps.push(performance.now()) }],
});
// The gradients' all-reduce alone, as a step makes it.
const grads = model.parameters().map((p) => new Float32Array(p.size));
const talk: number[] = [];
for (let i = 0; i < 5; i++) {
  await barrier();
  const t0 = performance.now();
  await allreduce(grads, 'mean');
  talk.push(performance.now() - t0);
}
talk.sort((x, y) => x - y);
const seconds = (stamps[stamps.length - 1] - stamps[warmup - 1]) / 1000;
if (world.rank === 0) {
  const parameters = model.parameters().reduce((s, p) => s + p.size, 0);
  process.stdout.write(
    `${JSON.stringify({
      model: a.model,
      ranks: world.size,
      batchPerRank: batch,
      planned: result.planned,
      imgPerSec: (steps * batch * world.size) / seconds,
      stepMs: (1000 * seconds) / steps,
      allreduceMs: talk[2],
      parameterBytes: 4 * parameters,
    })}\n`,
  );
}
