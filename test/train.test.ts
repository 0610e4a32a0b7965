// Training end to end: a short MNIST run that learns, exact resume from a checkpoint, an event
// loop that keeps turning during fit(), early stopping, run logs and checkpoint errors.
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  Adam,
  DataLoader,
  EarlyStopping,
  SGD,
  Subset,
  StepLR,
  TensorDataset,
  evaluate,
  fit,
  loadCheckpoint,
  manualSeed,
  mnist,
  models,
  ProgressBar,
  randn,
  saveCheckpoint,
  Tensor,
} from '../src/index.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'fc-train-'));

function toyData(n: number, seed: number): TensorDataset {
  // Two classes separable by the sign of the mean of the first channel.
  manualSeed(seed);
  const x = randn([n, 1, 28, 28]);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < 784; j++) s += x.data[i * 784 + j];
    labels[i] = s > 0 ? 1 : 0;
    for (let j = 0; j < 784; j++) x.data[i * 784 + j] += labels[i] ? 0.3 : -0.3;
  }
  return new TensorDataset(x, labels);
}

describe('fit', () => {
  it('learns MNIST: the loss falls and a held-out accuracy passes 90% after one short epoch', async () => {
    manualSeed(1);
    const model = models.mnistNet();
    const train = new DataLoader(
      new Subset(
        mnist({ train: true }),
        Array.from({ length: 4000 }, (_, i) => i),
      ),
      { batchSize: 32, shuffle: true, seed: 1 },
    );
    const test = new DataLoader(
      new Subset(
        mnist({ train: false }),
        Array.from({ length: 1000 }, (_, i) => i),
      ),
      { batchSize: 500 },
    );
    const losses: number[] = [];
    const before = await evaluate(model, test);
    const r = await fit(model, train, {
      optimizer: new Adam(model.parameters(), { lr: 3e-3 }),
      epochs: 1,
      validation: test,
      progress: false,
      callbacks: [{ onBatchEnd: (_b, logs) => void losses.push(logs.loss) }],
    });
    const first = losses.slice(0, 10).reduce((a, b) => a + b) / 10;
    const last = losses.slice(-10).reduce((a, b) => a + b) / 10;
    expect(last).toBeLessThan(first / 3);
    expect(before.acc).toBeLessThan(0.3);
    expect(r.history[0].val_acc).toBeGreaterThan(0.9);
  }, 120_000);

  it('resumes from a checkpoint to exactly the weights of an uninterrupted run', async () => {
    const data = toyData(96, 5);
    const run = async (epochs: number, dir: string, resume: boolean) => {
      manualSeed(resume ? 999 : 7); // a resumed model's own init must not matter
      const model = models.mnistNet({ numClasses: 2 });
      const opt = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
      const sched = new StepLR(opt, { stepSize: 1, gamma: 0.5 });
      const loader = new DataLoader(data, { batchSize: 16, shuffle: true, seed: 3 });
      const r = await fit(model, loader, {
        optimizer: opt,
        scheduler: sched,
        epochs,
        checkpointDir: dir,
        resume,
        progress: false,
      });
      return { model, r };
    };
    const full = await run(3, tmp(), false);
    const dir = tmp();
    await run(1, dir, false);
    const resumed = await run(3, dir, true);
    expect(resumed.r.startEpoch).toBe(1);
    expect(resumed.r.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    for (const [name, t] of full.model.stateDict()) {
      expect(
        Buffer.from(resumed.model.stateDict().get(name)!.data.buffer).equals(Buffer.from(t.data.buffer)),
        name,
      ).toBe(true);
    }
    expect(resumed.r.history.at(-1)!.loss).toBe(full.r.history.at(-1)!.loss);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  }, 120_000);

  it('keeps the event loop turning: a timer fires while fit() trains', async () => {
    const data = toyData(64, 2);
    const model = models.mnistNet({ numClasses: 2 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const batches: number[] = [];
    await fit(model, new DataLoader(data, { batchSize: 8, seed: 1 }), {
      optimizer: new Adam(model.parameters()),
      epochs: 2,
      progress: false,
      callbacks: [{ onBatchEnd: () => void batches.push(ticks) }],
    });
    clearInterval(timer);
    expect(batches.length).toBe(16);
    // the timer advanced between batches, not only after fit() returned
    expect(batches.at(-1)!).toBeGreaterThan(batches[0]);
    expect(new Set(batches).size).toBeGreaterThan(8);
  }, 60_000);

  it('stops early, writes log.json, log.csv and curve.svg, and reports lr', async () => {
    const data = toyData(32, 3);
    const model = models.mnistNet({ numClasses: 2 });
    const dir = tmp();
    const es = new EarlyStopping({ monitor: 'loss', patience: 0, minDelta: 100 });
    const r = await fit(model, new DataLoader(data, { batchSize: 16, seed: 1 }), {
      optimizer: new Adam(model.parameters()),
      epochs: 5,
      progress: false,
      logDir: dir,
      callbacks: [es],
    });
    expect(r.stoppedEarly).toBe(true);
    expect(r.history.length).toBe(2);
    const log = JSON.parse(readFileSync(join(dir, 'log.json'), 'utf8'));
    expect(log.history[1].lr).toBeCloseTo(1e-3);
    expect(readFileSync(join(dir, 'log.csv'), 'utf8').split('\n')[0]).toContain('loss');
    const svg = readFileSync(join(dir, 'curve.svg'), 'utf8');
    expect(svg).toMatch(/^<svg[\s\S]*polyline[\s\S]*<\/svg>\n$/);
  }, 60_000);

  it('the progress bar redraws one line on a terminal, and prints plain lines with live: false', async () => {
    const model = models.mnistNet();
    const data = new DataLoader(toyData(64, 3), { batchSize: 32, seed: 1 });
    const printed = async (live: boolean | undefined) => {
      let text = '';
      const write = (s: string) => {
        text += s;
        return true;
      };
      const stream = { isTTY: true, write } as unknown as NodeJS.WriteStream;
      const bar = new ProgressBar({ stream, every: Infinity, ...(live === undefined ? {} : { live }) });
      await fit(model, data, {
        optimizer: new SGD(model.parameters(), { lr: 0.01 }),
        epochs: 1,
        progress: false,
        callbacks: [bar],
      });
      return text;
    };
    expect(await printed(undefined)).toMatch(/\r\[=+\] epoch 1\/1 2\/2 /);
    const plain = await printed(false);
    expect(plain).not.toContain('\r');
    expect(plain.trim().split('\n')).toHaveLength(1);
    expect(plain).toMatch(/^epoch 1\/1 .* img\/s - loss /);
  });

  it('refuses bad settings and a loss that is not finite, with a clear message', async () => {
    const model = models.mnistNet({ numClasses: 2 });
    const loader = new DataLoader(toyData(8, 1), { batchSize: 8 });
    await expect(
      fit(model, loader, { optimizer: new Adam(model.parameters()), epochs: 0, progress: false }),
    ).rejects.toThrow('fit: epochs must be a positive integer, got 0');
    await expect(
      fit(model, loader, { optimizer: new SGD(model.parameters(), { lr: 1e30 }), epochs: 3, progress: false }),
    ).rejects.toThrow(/loss became (NaN|Infinity)/);
  }, 60_000);

  it('a checkpoint of another architecture is refused and the model is left unchanged', () => {
    const dir = tmp();
    const path = join(dir, 'c.safetensors');
    saveCheckpoint(path, models.mnistNet({ numClasses: 3 }), { epoch: 0 });
    const target = models.mnistNet({ numClasses: 2 });
    const before = target.stateDict().get('14.weight')!.data.slice();
    expect(() => loadCheckpoint(path, target)).toThrow(/shape mismatch: 14\.weight/);
    expect(Array.from(target.stateDict().get('14.weight')!.data)).toEqual(Array.from(before));
    expect(() => loadCheckpoint(join(dir, 'none.safetensors'), target)).toThrow('file not found');
    target.save(join(dir, 'plain.safetensors'));
    expect(() => loadCheckpoint(join(dir, 'plain.safetensors'), target)).toThrow(/not a ferroconv checkpoint/);
    expect(existsSync(path)).toBe(true);
    expect(new Tensor(new Float32Array(1), [1]).size).toBe(1);
  });
});
