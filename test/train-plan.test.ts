// Compiled training steps (src/plan/train.ts): fit() runs forward, loss, backward and the
// optimizer's update as one plan off the JavaScript thread. A planned fit must leave the model
// and the optimizer exactly where an eager fit does (same kernels, same order: they agree to the
// last bit here; the check allows 1e-5 relative), fall back to eager with the reason (undoing
// what the failed trace did), stop before the update on a non-finite loss, keep the event loop
// free and let two models train at once.
import { describe, expect, it } from 'vitest';
import {
  Adadelta,
  Adagrad,
  Adam,
  AdamW,
  BatchNorm2d,
  Conv2d,
  Dropout,
  Flatten,
  Linear,
  MaxPool2d,
  Module,
  RMSprop,
  ReLU,
  SGD,
  Sequential,
  type Tensor,
  fit,
  manualSeed,
  models,
  randn,
  sum,
} from '../src/index.js';
import type { Optimizer, ParamState } from '../src/optim/optimizer.js';
import { watchEventLoop } from './helpers.js';

type MakeOpt = (params: Tensor[]) => Optimizer;

interface Run {
  model: Module;
  optimizer: Optimizer;
  planned: boolean;
  planReason?: string;
  losses: number[];
}

function loaderOf(shape: number[], steps: number, classes: number, seed: number) {
  manualSeed(seed);
  const batches = Array.from({ length: steps }, (_, i) => ({
    images: randn(shape),
    labels: Int32Array.from({ length: shape[0] }, (_, k) => (k * 7 + i) % classes),
  }));
  return {
    length: steps,
    async *[Symbol.asyncIterator]() {
      yield* batches;
    },
  };
}

async function train(
  make: () => Module,
  makeOpt: MakeOpt,
  shape: number[],
  plan: boolean,
  extra: Record<string, unknown> = {},
  steps = 2,
): Promise<Run> {
  manualSeed(7);
  const model = make();
  const optimizer = makeOpt(model.parameters());
  const losses: number[] = [];
  const r = await fit(model, loaderOf(shape, steps, 10, 3), {
    optimizer,
    epochs: 1,
    progress: false,
    plan,
    callbacks: [{ onBatchEnd: (_b, logs) => void losses.push(logs.loss as number) }],
    ...extra,
  });
  return { model, optimizer, planned: r.planned, planReason: r.planReason, losses };
}

function expectSameTraining(a: Run, b: Run): void {
  expect(b.losses).toHaveLength(a.losses.length);
  b.losses.forEach((l, i) => {
    expect(Math.abs(l - a.losses[i])).toBeLessThanOrEqual(1e-5 * Math.abs(a.losses[i]));
  });
  const sb = b.model.stateDict();
  for (const [name, t] of a.model.stateDict()) {
    const u = sb.get(name)!;
    let worst = 0;
    for (let i = 0; i < t.size; i++) {
      worst = Math.max(worst, Math.abs(t.data[i] - u.data[i]) / Math.max(1, Math.abs(t.data[i])));
    }
    expect(worst, name).toBeLessThanOrEqual(1e-5);
  }
  // The optimizers' step counts and moment buffers (compared in place: a state dict of AlexNet's
  // would be 57 million numbers).
  const stateOf = (o: Optimizer) => (o as unknown as { state: Map<Tensor, ParamState> }).state;
  const ib = new Map(b.model.parameters().map((p, i) => [i, p]));
  const sb2 = stateOf(b.optimizer);
  const sa2 = stateOf(a.optimizer);
  expect(sb2.size).toBe(sa2.size);
  a.model.parameters().forEach((p, i) => {
    const x = sa2.get(p);
    const y = sb2.get(ib.get(i)!);
    expect(y?.step, `step of parameter ${i}`).toBe(x?.step);
    for (const [name, buf] of Object.entries(x?.buffers ?? {})) {
      const other = y!.buffers[name];
      let worst = 0;
      for (let k = 0; k < buf.length; k++) worst = Math.max(worst, Math.abs(buf[k] - other[k]));
      expect(worst, `${name} of parameter ${i}`).toBeLessThanOrEqual(1e-5);
    }
  });
}

const sgd: MakeOpt = (p) => new SGD(p, { lr: 0.01, momentum: 0.9, weightDecay: 1e-4 });

describe('a planned fit trains exactly as an eager one', () => {
  const cases: [string, () => Module, number[], MakeOpt][] = [
    ['resnet18 (SGD, momentum)', () => models.resnet18({ numClasses: 10 }), [2, 3, 48, 48], sgd],
    ['alexnet (SGD, dropout)', () => models.alexnet({ numClasses: 10 }), [2, 3, 72, 72], sgd],
    // VGG's classifier holds 120 million parameters: one step of plain SGD keeps the test short.
    ['vgg11 (SGD, one step)', () => models.vgg11({ numClasses: 10 }), [1, 3, 32, 32], (p) => new SGD(p, { lr: 0.01 })],
    ['googlenet (AdamW)', () => models.googlenet({ numClasses: 10 }), [2, 3, 64, 64], (p) => new AdamW(p, {})],
    [
      'densenet121 (SGD, nesterov)',
      () => models.densenet121({ numClasses: 10 }),
      [2, 3, 40, 40],
      (p) => new SGD(p, { lr: 0.01, momentum: 0.9, nesterov: true }),
    ],
    // The mobile networks' kernels: ReLU6 (mobilenetV2), hard swish and sigmoid with
    // squeeze-and-excitation (mobilenetV3Small), SiLU (efficientnetB0), split and transpose
    // (shufflenetV2).
    ['mobilenetV2 (SGD, momentum)', () => models.mobilenetV2({ numClasses: 10 }), [2, 3, 48, 48], sgd],
    [
      'mobilenetV3Small (Adam)',
      () => models.mobilenetV3Small({ numClasses: 10 }),
      [2, 3, 48, 48],
      (p) => new Adam(p, {}),
    ],
    // Stochastic depth draws its row mask in JavaScript, which a plan cannot replay (such a fit
    // trains eagerly): off here.
    [
      'efficientnetB0 (SGD, momentum; no stochastic depth)',
      () => models.efficientnetB0({ numClasses: 10, stochasticDepthProb: 0 }),
      [2, 3, 48, 48],
      sgd,
    ],
    ['shufflenetV2X1_0 (SGD, momentum)', () => models.shufflenetV2X1_0({ numClasses: 10 }), [2, 3, 48, 48], sgd],
    ['mnistNet (Adam, amsgrad)', () => models.mnistNet(), [16, 1, 28, 28], (p) => new Adam(p, { amsgrad: true })],
    [
      'mnistNet (RMSprop)',
      () => models.mnistNet(),
      [16, 1, 28, 28],
      (p) => new RMSprop(p, { lr: 1e-3, momentum: 0.5 }),
    ],
    ['mnistNet (Adagrad)', () => models.mnistNet(), [16, 1, 28, 28], (p) => new Adagrad(p, { lr: 1e-2 })],
    ['mnistNet (Adadelta)', () => models.mnistNet(), [16, 1, 28, 28], (p) => new Adadelta(p, {})],
  ];
  for (const [name, make, shape, opt] of cases) {
    it(name, async () => {
      const steps = name.includes('one step') ? 1 : 2;
      const eager = await train(make, opt, shape, false, {}, steps);
      const planned = await train(make, opt, shape, true, {}, steps);
      expect(eager.planned).toBe(false);
      expect(planned.planned, planned.planReason).toBe(true);
      expectSameTraining(eager, planned);
    }, 120_000);
  }

  it('a shorter last batch and a learning rate changed between steps', async () => {
    const make = () => models.mnistNet();
    const opt: MakeOpt = (p) => new SGD(p, { lr: 0.05, momentum: 0.9 });
    const runs: Run[] = [];
    for (const plan of [false, true]) {
      manualSeed(7);
      const model = make();
      const optimizer = opt(model.parameters());
      const losses: number[] = [];
      const full = loaderOf([8, 1, 28, 28], 2, 10, 3);
      const short = loaderOf([3, 1, 28, 28], 1, 10, 4);
      const loader = {
        length: 3,
        async *[Symbol.asyncIterator]() {
          yield* full;
          yield* short;
        },
      };
      const r = await fit(model, loader, {
        optimizer,
        epochs: 2,
        progress: false,
        plan,
        callbacks: [
          {
            onBatchEnd: (_b, logs) => {
              losses.push(logs.loss as number);
              optimizer.paramGroups[0].lr *= 0.5;
            },
          },
        ],
      });
      runs.push({ model, optimizer, planned: r.planned, planReason: r.planReason, losses });
    }
    expect(runs[1].planned, runs[1].planReason).toBe(true);
    expectSameTraining(runs[0], runs[1]);
  }, 60_000);
});

/** A forward with an op that has no plan step, after batch norm and dropout. */
class Unplannable extends Module {
  body = this.addModule(
    'body',
    new Sequential(new Conv2d(1, 4, 3), new BatchNorm2d(4), new ReLU(), new Dropout(0.3), new Flatten()),
  );
  head = this.addModule('head', new Linear(4 * 26 * 26, 10));
  forward(x: Tensor): Tensor {
    const h = this.body.call(x);
    sum(h); // no plan step: the trace fails here, after batch norm counted and dropout drew
    return this.head.call(h);
  }
}

describe('fit falls back to eager, with the reason', () => {
  it('an op with no plan step: what the failed trace did is undone', async () => {
    const make = () => new Unplannable();
    const eager = await train(make, sgd, [4, 1, 28, 28], false, {}, 3);
    const planned = await train(make, sgd, [4, 1, 28, 28], true, {}, 3);
    expect(planned.planned).toBe(false);
    expect(planned.planReason).toMatch(/sum has no plan step/);
    expectSameTraining(eager, planned);
  });

  it('plan: false', async () => {
    const off = await train(() => models.mnistNet(), sgd, [4, 1, 28, 28], false);
    expect(off.planReason).toBe('plan: false');
  });
});

describe('fit options a planned step keeps', () => {
  it('clipGradNorm: the gradients clipped in the plan as eagerly', async () => {
    const make = () => models.resnet18({ numClasses: 10 });
    // A small limit, so every step clips.
    const eager = await train(make, sgd, [2, 3, 32, 32], false, { clipGradNorm: 0.05 });
    const planned = await train(make, sgd, [2, 3, 32, 32], true, { clipGradNorm: 0.05 });
    expect(planned.planned, planned.planReason).toBe(true);
    expectSameTraining(eager, planned);
    const unclipped = await train(make, sgd, [2, 3, 32, 32], true);
    expect(unclipped.losses[1]).not.toBe(planned.losses[1]);
  }, 60_000);
});

describe('a planned step that goes wrong', () => {
  it('a non-finite loss stops the step before the update, as eagerly', async () => {
    for (const plan of [false, true]) {
      manualSeed(1);
      const model = models.mnistNet();
      const optimizer = new SGD(model.parameters(), { lr: 0.1, momentum: 0.9 });
      let batch = { images: randn([1]), labels: new Int32Array(0) };
      for await (const b of loaderOf([4, 1, 28, 28], 1, 10, 5)) batch = b;
      batch.images.data[5] = Number.NaN;
      const before = new Map([...model.parameters()].map((p) => [p, p.data.slice()]));
      const loader = {
        length: 1,
        [Symbol.asyncIterator]: async function* () {
          yield batch;
        },
      };
      await expect(fit(model, loader, { optimizer, epochs: 1, progress: false, plan })).rejects.toThrow(
        /^fit: loss became NaN at epoch 1, batch 1/,
      );
      for (const [p, data] of before) expect(p.data).toEqual(data);
      expect(optimizer.stateDict().state).toEqual({});
    }
  });
});

describe('planned training leaves the event loop free', () => {
  it('ResNet-18 at batch 16: the event loop keeps ticking during every step', async () => {
    manualSeed(2);
    const model = models.resnet18({ numClasses: 10 });
    const optimizer = new SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
    // The batches are made before the watch starts (randn of four batches blocks for ~100 ms).
    const loader = loaderOf([16, 3, 96, 96], 4, 10, 6);
    // The first step traces longer (first calls of the tracer's JavaScript) and compiles the
    // plan (off this thread); the later ones only trace. Watched apart, so a first step that
    // blocks is told from the others.
    let watch = watchEventLoop();
    let first = { worst: 0, ticks: 0 };
    const t0 = performance.now();
    let t1 = t0;
    const r = await fit(model, loader, {
      optimizer,
      epochs: 1,
      progress: false,
      callbacks: [
        {
          onBatchEnd: (batch) => {
            if (batch !== 0) return;
            first = watch.stop();
            watch = watchEventLoop();
            t1 = performance.now();
          },
        },
      ],
    });
    const elapsed = performance.now() - t1;
    const { worst, ticks } = watch.stop();
    expect(r.planned, r.planReason).toBe(true);
    // Generous for a shared CI machine (other test files run on the same two cores): the real
    // figures (a few ms) are in the benchmark. Eagerly, each step blocks for its whole duration
    // (hundreds of ms here).
    expect(first.worst).toBeLessThan(100);
    expect(worst).toBeLessThan(100);
    expect(ticks).toBeGreaterThan(elapsed / 50);
  }, 120_000);

  it('two models train at once, each as it would alone', async () => {
    // Without dropout: two fits at once draw from the one global generator in turns.
    const make = () => models.mnistNet({ dropout: 0 });
    const alone = [await train(make, sgd, [8, 1, 28, 28], true), await train(make, sgd, [8, 1, 28, 28], true)];
    manualSeed(7);
    const a = make();
    manualSeed(7);
    const b = make();
    const oa = sgd(a.parameters());
    const ob = sgd(b.parameters());
    const la = loaderOf([8, 1, 28, 28], 2, 10, 3);
    const lb = loaderOf([8, 1, 28, 28], 2, 10, 3);
    const [ra, rb] = await Promise.all([
      fit(a, la, { optimizer: oa, epochs: 1, progress: false }),
      fit(b, lb, { optimizer: ob, epochs: 1, progress: false }),
    ]);
    expect(ra.planned && rb.planned).toBe(true);
    expectSameTraining(alone[0], { model: a, optimizer: oa, planned: true, losses: alone[0].losses });
    expectSameTraining(alone[1], { model: b, optimizer: ob, planned: true, losses: alone[1].losses });
  });
});
