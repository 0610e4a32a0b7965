// Calls on one model that overlap in time: predict() and evaluate() run on a snapshot of the
// model taken when they start, in eval mode, without switching the model's own mode; fit() owns
// the mode of the model it trains and refuses a second fit() of the same model. Results are
// compared within 1e-6: a chunk's batch size may change the kernels' summation order, while the
// SGD steps these tests interleave move the logits by far more.
import { describe, expect, it } from 'vitest';
import { expectClose, smallConvNet } from './helpers.js';
import {
  DataLoader,
  SGD,
  type Sequential,
  TensorDataset,
  evaluate,
  fit,
  manualSeed,
  noGrad,
  randn,
  type Tensor,
} from '../src/index.js';

const net = (): Sequential => smallConvNet(3);

function data(n: number): TensorDataset {
  manualSeed(5);
  const labels = Int32Array.from({ length: n }, (_, i) => i % 3);
  return new TensorDataset(randn([n, 1, 6, 6]), labels);
}

/** Eval-mode logits of `model`'s current weights, computed alone. */
function reference(model: Sequential, x: Tensor): Float32Array {
  const modes = model.namedModules().map(([, m]) => m.training);
  model.eval();
  try {
    return noGrad(() => model.forward(x)).data.slice();
  } finally {
    model.namedModules().forEach(([, m], i) => {
      m.training = modes[i];
    });
  }
}

const stateCopy = (model: Sequential) => new Map([...model.stateDict()].map(([k, t]) => [k, t.clone()]));
const ticks = (n: number) =>
  new Promise<void>((resolve) => {
    let left = n;
    const step = () => (--left <= 0 ? resolve() : setImmediate(step));
    setImmediate(step);
  });

describe('overlapping calls on one model', () => {
  it('two predicts on a model in train mode each give eval-mode rows and leave the statistics alone', async () => {
    const model = net();
    const x = randn([12, 1, 6, 6]);
    const want = reference(model, x);
    const stats = model.stateDict().get('1.running_mean')!.data.slice();
    expect(model.training).toBe(true);
    // The first finishes first: it must not put the model back in train mode under the second.
    const [a, b] = await Promise.all([model.predict(x, { batchSize: 3 }), model.predict(x, { batchSize: 2 })]);
    expectClose(a.data, want, 1e-6, 1e-6);
    expectClose(b.data, want, 1e-6, 1e-6);
    expect(Array.from(model.stateDict().get('1.running_mean')!.data)).toEqual(Array.from(stats));
    expect(model.training).toBe(true);
  });

  it('predict during loadStateDict sees only the weights it started with', async () => {
    const model = net();
    const x = randn([8, 1, 6, 6]);
    const want = reference(model, x);
    const other = net();
    for (const t of other.parameters()) t.data.fill(0.5);
    const pending = model.predict(x, { batchSize: 2 });
    await ticks(1);
    model.loadStateDict(other.stateDict());
    expectClose((await pending).data, want, 1e-6, 1e-6);
    expect(Array.from(model.parameters()[0].data)).toEqual(Array.from(other.parameters()[0].data));
  });

  it('train() or eval() called during predict neither changes its rows nor is undone by it', async () => {
    const model = net().eval();
    const x = randn([8, 1, 6, 6]);
    const want = reference(model, x);
    const pending = model.predict(x, { batchSize: 2 });
    await ticks(1);
    model.train();
    expectClose((await pending).data, want, 1e-6, 1e-6);
    expect(model.training).toBe(true);
    expect(model.getSubmodule('1').training).toBe(true);
  });

  it('keeps each submodule its own mode (a frozen batch norm stays in eval)', async () => {
    const model = net();
    model.getSubmodule('1').eval();
    await model.predict(randn([4, 1, 6, 6]), { batchSize: 2 });
    expect(model.training).toBe(true);
    expect(model.getSubmodule('0').training).toBe(true);
    expect(model.getSubmodule('1').training).toBe(false);
  });

  it('predict and evaluate during fit run in eval mode on the weights they started with; fit trains in train mode', async () => {
    const model = net();
    const loader = new DataLoader(data(48), { batchSize: 4, shuffle: true, seed: 1 });
    // Enough chunks (each a turn of the event loop) for fit's steps to go on between them.
    const x = randn([24, 1, 6, 6]);
    const evalLoader = new DataLoader(data(12), { batchSize: 3 });
    const steps: number[] = [];
    const training = fit(model, loader, {
      optimizer: new SGD(model.parameters(), { lr: 0.1 }),
      epochs: 1,
      progress: false,
      callbacks: [{ onBatchEnd: (b) => void steps.push(b) }],
    });
    // Until a step or two is done (each runs off the JavaScript thread, so it takes turns).
    for (let i = 0; i < 10_000 && steps.length === 0; i++) await ticks(1);
    expect(steps.length).toBeGreaterThan(0);
    const stepsBefore = steps.length;
    const before = stateCopy(model);
    const want = reference(model, x);
    const [got, ev] = await Promise.all([model.predict(x, { batchSize: 1 }), evaluate(model, evalLoader)]);
    const stepsDuring = steps.length;
    await training;
    expect(steps.length).toBe(12);
    expect(stepsDuring - stepsBefore).toBeGreaterThanOrEqual(3); // training went on between the chunks
    expectClose(got.data, want, 1e-6, 1e-6);
    // evaluate's numbers are those of the weights at its start.
    const snapshot = net();
    snapshot.loadStateDict(before);
    const alone = await evaluate(snapshot, evalLoader);
    expect(ev.loss).toBe(alone.loss);
    // Every step trained in train mode: the batch-norm counter counts all 12.
    expect(model.stateDict().get('1.num_batches_tracked')!.data[0]).toBe(12);
  });

  it('a second fit of a model already training is an Error, and the first finishes', async () => {
    const model = net();
    const opts = () => ({ optimizer: new SGD(model.parameters(), { lr: 0.01 }), epochs: 1, progress: false });
    const first = fit(model, new DataLoader(data(16), { batchSize: 4 }), opts());
    await expect(fit(model, new DataLoader(data(16), { batchSize: 4 }), opts())).rejects.toThrow(
      'fit: this model is already being trained by another fit() call; await it first',
    );
    const r = await first;
    expect(r.history).toHaveLength(1);
    // And once it is done, the model can be trained again.
    await expect(fit(model, new DataLoader(data(16), { batchSize: 4 }), opts())).resolves.toBeDefined();
  });
});
