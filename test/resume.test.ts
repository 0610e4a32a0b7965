// A failed resume changes nothing: fit({ resume }) checks the whole checkpoint (weights,
// optimizer, scheduler, loader, random generator, history, epoch) before applying any of it,
// so a corrupt checkpoint leaves the model, optimizer, scheduler, loader and global generator
// bit-identical and says what is wrong.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DataLoader,
  SGD,
  StepLR,
  Tensor,
  TensorDataset,
  fit,
  loadSafetensors,
  manualSeed,
  models,
  randn,
  saveSafetensors,
  type LoaderLike,
} from '../src/index.js';
import { globalRng } from '../src/random.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'fc-resume-'));

function toyData(n: number): TensorDataset {
  manualSeed(11);
  const x = randn([n, 1, 28, 28]);
  const labels = Int32Array.from({ length: n }, (_, i) => i % 2);
  return new TensorDataset(x, labels);
}

function setup(seed: number, data: TensorDataset) {
  manualSeed(seed);
  const model = models.mnistNet({ numClasses: 2 });
  const optimizer = new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
  const scheduler = new StepLR(optimizer, { stepSize: 1, gamma: 0.5 });
  const loader = new DataLoader(data, { batchSize: 8, shuffle: true, seed: 3 });
  return { model, optimizer, scheduler, loader };
}

type Parts = ReturnType<typeof setup>;

function snapshot({ model, optimizer, scheduler, loader }: Parts) {
  return {
    weights: [...model.stateDict()].map(([k, t]) => [k, Buffer.from(t.data.slice().buffer).toString('base64')]),
    optimizer: JSON.stringify(optimizer.stateDict()),
    scheduler: JSON.stringify(scheduler.stateDict()),
    loader: JSON.stringify(loader.getState()),
    rng: globalRng.getState(),
  };
}

// biome-ignore lint/suspicious/noExplicitAny: the parsed checkpoint JSON, which the cases below corrupt field by field
type Raw = { tensors: Map<string, Tensor>; state: Record<string, any> };

/** Writes a checkpoint file from its parts, as saveCheckpoint lays it out. */
function writeRaw(path: string, raw: Raw): void {
  saveSafetensors(path, raw.tensors, {
    metadata: { format: 'ferroconv-checkpoint-1', state: JSON.stringify(raw.state) },
  });
}

describe('fit({ resume }) with a corrupt checkpoint', () => {
  const data = toyData(32);
  const dir = tmp();
  const good = join(dir, 'checkpoint.safetensors');
  const made = (async () => {
    const p = setup(7, data);
    await fit(p.model, p.loader, {
      optimizer: p.optimizer,
      scheduler: p.scheduler,
      epochs: 1,
      checkpointDir: dir,
      progress: false,
    });
  })();
  const read = (): Raw => {
    const { tensors, metadata } = loadSafetensors(good);
    return { tensors, state: JSON.parse(metadata.state) };
  };
  const firstWeight = (r: Raw) => [...r.tensors.keys()].find((k) => k.startsWith('model.'))!;

  const cases: [string, (r: Raw) => void, RegExp][] = [
    [
      'bad optimizer state',
      (r) => {
        r.state.optimizer.paramGroups[0].momentum = 'fast';
      },
      /^fit: checkpoint .*: SGD\.loadStateDict: paramGroups\[0\]: momentum: expected a number, got "fast"/,
    ],
    [
      'bad optimizer step',
      (r) => {
        r.state.optimizer.state['0'].step = -2;
      },
      /SGD\.loadStateDict: state\[0\]\.step: expected a non-negative integer, got -2/,
    ],
    [
      'no optimizer state',
      (r) => {
        delete r.state.optimizer;
      },
      /^fit: checkpoint .*: holds no optimizer state/,
    ],
    [
      'bad scheduler state',
      (r) => {
        r.state.scheduler.lastEpoch = 'x';
      },
      /^fit: checkpoint .*: StepLR\.loadStateDict: lastEpoch: expected an integer >= -1, got "x"/,
    ],
    [
      'bad loader state',
      (r) => {
        r.state.loader.batchSize = 5;
      },
      /^fit: checkpoint .*: DataLoader\.setState: state is for batchSize 5, this loader has 8/,
    ],
    [
      'rng all zero',
      (r) => {
        r.state.rng = [0, 0, 0, 0];
      },
      /^fit: checkpoint .*: rng: expected a state that is not all zero/,
    ],
    [
      'rng of strings',
      (r) => {
        r.state.rng = ['a', 'b', 'c', 'd'];
      },
      /rng: state\[0\]: expected an integer in \[0, 2\^32\), got "a"/,
    ],
    [
      'history not an array',
      (r) => {
        r.state.history = {};
      },
      /^fit: checkpoint .*: history: expected an array of epoch records, got an object/,
    ],
    [
      'history record without epoch',
      (r) => {
        r.state.history = [{ loss: 1 }];
      },
      /history\[0\]\.epoch: expected a positive integer, got undefined/,
    ],
    [
      'epoch 1.5',
      (r) => {
        r.state.epoch = 1.5;
      },
      /^fit: checkpoint .*: epoch: expected a non-negative integer \(the last completed epoch\), got 1.5/,
    ],
    [
      'epoch 1e308',
      (r) => {
        r.state.epoch = 1e308;
      },
      /epoch: expected a non-negative integer \(the last completed epoch\), got 1e\+308/,
    ],
    [
      'epoch -1',
      (r) => {
        r.state.epoch = -1;
      },
      /epoch: expected a non-negative integer \(the last completed epoch\), got -1/,
    ],
    [
      'epoch NaN',
      (r) => {
        r.state.epoch = 'NaN';
      },
      /epoch: expected a non-negative integer \(the last completed epoch\), got "NaN"/,
    ],
    [
      'missing model key',
      (r) => {
        r.tensors.delete(firstWeight(r));
      },
      /^fit: checkpoint .*: loadStateDict: missing keys: 0\.weight/,
    ],
    [
      'mis-shaped weight',
      (r) => {
        r.tensors.set(firstWeight(r), new Tensor(new Float32Array(3), [3]));
      },
      /loadStateDict: shape mismatch: 0\.weight: expected \[16, 1, 3, 3\], got \[3\]/,
    ],
  ];

  it.each(cases)(
    '%s: rejects and changes nothing',
    async (_name, corrupt, msg) => {
      await made;
      const raw = read();
      corrupt(raw);
      const path = join(tmp(), 'bad.safetensors');
      writeRaw(path, raw);
      const p = setup(99, data);
      // A non-trivial optimizer and loader state to compare against.
      for (const t of p.model.parameters()) t.grad = new Tensor(new Float32Array(t.size).fill(0.5), t.shape);
      p.optimizer.step();
      p.optimizer.zeroGrad();
      p.optimizer.paramGroups[0].lr = 0.01;
      p.loader.setEpoch(2);
      manualSeed(123);
      const before = snapshot(p);
      await expect(
        fit(p.model, p.loader, {
          optimizer: p.optimizer,
          scheduler: p.scheduler,
          epochs: 3,
          resume: path,
          progress: false,
        }),
      ).rejects.toThrow(msg);
      expect(snapshot(p)).toEqual(before);
    },
    60_000,
  );

  it('a custom loader whose setState throws (no validateState): the optimizer and scheduler are put back', async () => {
    await made;
    const p = setup(99, data);
    p.optimizer.paramGroups[0].lr = 0.01;
    const loader: LoaderLike = {
      length: p.loader.length,
      [Symbol.asyncIterator]: () => p.loader[Symbol.asyncIterator](),
      getState: () => p.loader.getState(),
      setState: () => {
        throw new Error('MyLoader.setState: no');
      },
    };
    manualSeed(5);
    const before = snapshot(p);
    await expect(
      fit(p.model, loader, {
        optimizer: p.optimizer,
        scheduler: p.scheduler,
        epochs: 3,
        resume: good,
        progress: false,
      }),
    ).rejects.toThrow(/^fit: checkpoint .*: MyLoader\.setState: no/);
    expect(snapshot(p)).toEqual(before);
  }, 60_000);

  it('the good checkpoint still resumes, to epoch 2 of 2', async () => {
    await made;
    const p = setup(99, data);
    const r = await fit(p.model, p.loader, {
      optimizer: p.optimizer,
      scheduler: p.scheduler,
      epochs: 2,
      resume: good,
      progress: false,
    });
    expect(r.startEpoch).toBe(1);
    expect(r.history.map((h) => h.epoch)).toEqual([1, 2]);
  }, 60_000);
});
