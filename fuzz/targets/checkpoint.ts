// Target `checkpoint`: loadCheckpoint of the bytes (written to a file in a temporary folder, on
// tmpfs when there is one) into a tiny network, then the rest of a resume as fit({ resume })
// does it (src/train/fit.ts: optimizer, scheduler, loader, random generator, history, epoch) and
// one use of each restored piece, so a state that loads but cannot be used is found too.
// Invariant: a loadCheckpoint that throws leaves the model's weights as they were.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataLoader } from '../../src/data/loader.js';
import { TensorDataset } from '../../src/data/dataset.js';
import { BatchNorm2d } from '../../src/nn/batch-norm.js';
import { Conv2d } from '../../src/nn/conv2d.js';
import { Flatten } from '../../src/nn/flatten.js';
import { Linear } from '../../src/nn/linear.js';
import { ReLU } from '../../src/nn/relu.js';
import { Sequential } from '../../src/nn/sequential.js';
import { Adam } from '../../src/optim/adam.js';
import { OneCycleLR } from '../../src/optim/lr-scheduler.js';
import { Rng } from '../../src/random.js';
import { Tensor } from '../../src/tensor.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { InvariantError, type Target } from '../engine.js';
import {
  clone,
  deepNesting,
  getAt,
  interestingValue,
  isPlainObject,
  type Json,
  mutateTree,
  paths,
  Raw,
  render,
  setKey,
  utf8,
} from '../mutate.js';
import type { Prng } from '../prng.js';
import { mutateHeader, mutateSafetensors, SAFETENSORS_DICTIONARY } from '../formats/safetensors.js';

/**
 * The network, data and training setup behind the checkpoint corpus (fuzz/make-corpus.ts) and
 * this target: conv 1->2 3x3, batch norm, linear 8->9 (its 72 weights cross the 64-number line
 * above which checkpoint state arrays become tensors), 12 samples of [1, 4, 4], batch 4.
 */
export function tinySetup(): { model: Sequential; dataset: TensorDataset; batchSize: number; epochs: number } {
  const model = new Sequential(new Conv2d(1, 2, 3), new BatchNorm2d(2), new ReLU(), new Flatten(), new Linear(8, 9));
  const images = new Float32Array(12 * 16).map((_, i) => Math.sin(i * 0.37));
  const dataset = new TensorDataset(
    new Tensor(images, [12, 1, 4, 4]),
    Array.from({ length: 12 }, (_, i) => i % 9),
  );
  return { model, dataset, batchSize: 4, epochs: 3 };
}

export const makeOptimizer = (model: Sequential): Adam => new Adam(model.parameters(), { lr: 0.01 });
export const makeScheduler = (opt: Adam, epochs: number, steps: number): OneCycleLR =>
  new OneCycleLR(opt, { maxLr: 0.01, epochs, stepsPerEpoch: steps });
export const makeLoader = (dataset: TensorDataset, batchSize: number): DataLoader =>
  new DataLoader(dataset, { batchSize, shuffle: true, seed: 7 });

const EPOCHS: Json[] = [
  -1,
  0,
  1,
  2,
  1.5,
  -0.5,
  2 ** 31,
  2 ** 53,
  1e308,
  '1',
  null,
  true,
  [],
  {},
  [1],
  new Raw('1e999'),
  new Raw('-1e999'),
  new Raw('-0'),
];
const RNGS: Json[] = [
  [0, 0, 0, 0],
  [1, 2, 3],
  [1, 2, 3, 4, 5],
  [],
  'abcd',
  '',
  { length: 4 },
  { 0: 1, 1: 2, 2: 3, 3: 4, length: 4 },
  [-1, -1, -1, -1],
  [1.5, 2.5, 3.5, 4.5],
  ['a', 'b', 'c', 'd'],
  [null, null, null, null],
  [2 ** 32, 2 ** 53, 1e308, -0],
  [[1], [2], [3], [4]],
  [{}, {}, {}, {}],
  5,
  null,
  true,
  new Raw('[1e999,1,2,3]'),
  new Raw('[4294967296,4294967296,4294967296,4294967296]'),
];
const HISTORIES: Json[] = [
  5,
  'x',
  {},
  null,
  [null],
  [1, 2],
  [[]],
  [{ epoch: 'x', loss: null }],
  new Raw(`[${new Array(50000).fill('{"epoch":1}').join(',')}]`),
];

type Obj = { [key: string]: Json };

/** One mutation aimed at the training state: the fields fit() restores and their types. */
function mutateState(state: Json, rng: Prng): Json {
  if (!isPlainObject(state) || rng.chance(0.05))
    return rng.chance(0.5) ? interestingValue(rng) : mutateTree(state, rng);
  const s = state;
  const opt = isPlainObject(s.optimizer) ? s.optimizer : null;
  switch (rng.int(10)) {
    case 0:
      if (rng.chance(0.15)) delete s.epoch;
      else s.epoch = rng.pick(EPOCHS);
      return s;
    case 1:
      if (rng.chance(0.15)) delete s.rng;
      else s.rng = rng.pick(RNGS);
      return s;
    case 2:
      s.history = rng.pick(HISTORIES);
      return s;
    case 3: {
      // Optimizer per-parameter state: step counts and buffers (inline arrays or $tensor refs).
      const st = opt && isPlainObject(opt.state) ? opt.state : null;
      if (!st) break;
      const keys = Object.keys(st);
      if (!keys.length || rng.chance(0.2)) {
        setKey(st, rng.pick(['0', '1', '99', '-1', '1.5', '__proto__', 'x']), { step: 1, expAvg: [0], expAvgSq: [0] });
        return s;
      }
      const entry = st[rng.pick(keys)];
      if (!isPlainObject(entry)) break;
      const field = rng.pick([...Object.keys(entry), 'maxExpAvgSq', 'extra']);
      const cur = entry[field];
      const choices: Json[] = [
        -1,
        0,
        1.5,
        2 ** 53,
        1e308,
        '3',
        null,
        [],
        [0],
        [1, 2, 3],
        new Raw('[1e999,0]'),
        { $tensor: 'model.4.weight' },
        { $tensor: 'model.0.weight' },
        { $tensor: 'nope' },
        { $tensor: 5 },
        { $tensor: null },
        { $tensor: ['x'] },
        { $tensor: 'state.optimizer.state.0.expAvg' },
        new Raw(`[${new Array(rng.pick([17, 71, 73, 1000])).fill('0.5').join(',')}]`),
      ];
      if (Array.isArray(cur) && cur.length && rng.chance(0.4)) {
        cur.length = rng.chance(0.5) ? cur.length - 1 : cur.length + 1;
        for (let i = 0; i < cur.length; i++) if (cur[i] === undefined) cur[i] = 0;
      } else {
        setKey(entry, field, rng.pick(choices));
      }
      return s;
    }
    case 4: {
      const groups = opt && Array.isArray(opt.paramGroups) ? opt.paramGroups : null;
      if (!groups?.length) break;
      const g = groups[rng.int(groups.length)];
      const op = rng.int(5);
      if (op === 0) groups.push(clone(g));
      else if (op === 1) groups.length = 0;
      else if (isPlainObject(g) && Array.isArray(g.params) && op === 2) {
        const p = g.params;
        const v = rng.int(5);
        if (v === 0 && p.length) p[rng.int(p.length)] = rng.pick<Json>([-1, 1.5, 2 ** 53, '0', null, p[0]]);
        else if (v === 1) p.push(p.length);
        else if (v === 2) p.pop();
        else if (v === 3) p.reverse();
        else
          g.params = rng.pick<Json>([
            [],
            null,
            'x',
            { 0: 0 },
            new Raw(`[${Array.from({ length: 100000 }, (_, i) => i).join(',')}]`),
          ]);
      } else if (isPlainObject(g)) {
        const key = rng.pick([
          'lr',
          'betas',
          'eps',
          'weightDecay',
          'amsgrad',
          'maximize',
          'lrMult',
          'decayMult',
          'initialLr',
          'maxLr',
          'minLr',
          '__proto__',
          'constructor',
          'foo',
        ]);
        setKey(
          g,
          key,
          rng.pick<Json>([
            -1,
            0,
            2,
            1e308,
            'x',
            null,
            true,
            [0.9],
            [2, 3],
            [0.9, 'x'],
            new Raw('1e999'),
            new Raw('[0.9,1e999]'),
            {},
            [],
          ]),
        );
      }
      return s;
    }
    case 5:
      if (!opt) break;
      opt.optimizer = rng.pick<Json>(['SGD', 'AdamW', '', '__proto__', 'constructor', 1, null]);
      return s;
    case 6: {
      if (!isPlainObject(s.scheduler)) s.scheduler = {} as Obj;
      const sched = s.scheduler;
      const key = rng.pick([
        'scheduler',
        'lastEpoch',
        'baseLrs',
        'lastLr',
        'best',
        'numBadEpochs',
        'cooldownCounter',
        '__proto__',
      ]);
      setKey(
        sched as Obj,
        key,
        rng.pick<Json>([
          -2,
          -1,
          0,
          1.5,
          2 ** 53,
          1e308,
          'OneCycleLR',
          'StepLR',
          'x',
          null,
          [],
          [0.01],
          [0.01, 0.02],
          ['x'],
          new Raw('[1e999]'),
          {},
        ]),
      );
      return s;
    }
    case 7: {
      if (!isPlainObject(s.loader)) s.loader = {} as Obj;
      const loader = s.loader;
      const key = rng.pick(['seed', 'epoch', 'position', 'batchSize', 'numSamples', 'shuffle', '__proto__']);
      setKey(
        loader as Obj,
        key,
        rng.pick<Json>([
          -1,
          0,
          1,
          2,
          3,
          4,
          12,
          13,
          1.5,
          2 ** 32,
          2 ** 53,
          1e308,
          'x',
          null,
          true,
          false,
          new Raw('1e999'),
          [],
        ]),
      );
      return s;
    }
    case 8: {
      // Retarget or break one $tensor reference.
      const refs = paths(s).filter((p) => isPlainObject(getAt(s, p)) && '$tensor' in (getAt(s, p) as Obj));
      if (!refs.length) break;
      const ref = getAt(s, rng.pick(refs)) as Obj;
      ref.$tensor = rng.pick<Json>([
        '',
        'nope',
        'model.0.weight',
        'model.1.num_batches_tracked',
        'model.4.bias',
        'state',
        '__proto__',
        5,
        null,
        { $tensor: 'x' },
      ]);
      return s;
    }
    default:
      break;
  }
  // Generic mutation inside one of the top-level fields (or anywhere).
  let root: Json = s;
  for (let k = rng.range(1, 3); k > 0; k--) root = mutateTree(root, rng);
  return root;
}

/** Header mutation for checkpoints: mostly inside metadata.state (the training state JSON). */
function mutateCheckpointHeader(header: Json, data: Uint8Array, rng: Prng): { header: Json; data: Uint8Array } {
  const meta = isPlainObject(header) && isPlainObject(header.__metadata__) ? header.__metadata__ : null;
  if (!meta || typeof meta.state !== 'string' || rng.chance(0.35)) return mutateHeader(header, data, rng);
  if (rng.chance(0.06)) {
    setKey(
      meta,
      'format',
      rng.pick<Json>(['ferroconv-checkpoint-2', 'ferroconv-checkpoint', '', 'pt', null, 1, ['ferroconv-checkpoint-1']]),
    );
    return { header, data };
  }
  if (rng.chance(0.08)) {
    const depth = rng.pick([1000, 10000, 100000]);
    setKey(
      meta,
      'state',
      rng.pick<Json>([
        `{"epoch":0,"history":${deepNesting(depth).text}}`,
        `{"epoch":0,"optimizer":${deepNesting(depth, 'object').text}}`,
        '',
        'null',
        '0',
        '[]',
        '"x"',
        '{',
        '{"epoch":0}',
        5,
        null,
        { epoch: 0 },
      ]),
    );
    return { header, data };
  }
  let state: Json;
  try {
    state = JSON.parse(meta.state) as Json;
  } catch {
    return mutateHeader(header, data, rng);
  }
  for (let k = rng.chance(0.3) ? rng.range(2, 4) : 1; k > 0; k--) state = mutateState(state, rng);
  setKey(meta, 'state', render(state));
  return { header, data };
}

/**
 * The Errors of the pieces a resume goes through: the file (checkpoint, safetensors), the model,
 * optimizer, scheduler, loader and generator restoring their state, and (for states that only
 * fail when used) their first step.
 */
const OWN_ERRORS = [
  /^checkpoint /,
  /^checkpoint: /,
  /^safetensors /,
  /^loadStateDict: /,
  /^Adam[.:]/,
  /^OneCycleLR[.:]/,
  /^DataLoader[.:]/,
  /^rng state: /,
];

export function createTarget(opts: { workDir?: string } = {}): Target {
  const base = opts.workDir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(base, 'ferroconv-fuzz-checkpoint-'));
  const path = join(dir, 'checkpoint.safetensors');
  const { model, dataset, batchSize, epochs } = tinySetup();
  const initial = [...model.stateDict()].map(([k, t]) => [k, Float32Array.from(t.data)] as const);
  const live = new Map(model.stateDict());
  const reset = (): void => {
    for (const [k, v] of initial) live.get(k)!.data.set(v);
  };
  const changed = (): string | null => {
    for (const [k, v] of initial) {
      const d = live.get(k)!.data;
      for (let i = 0; i < v.length; i++) if (!Object.is(d[i], v[i])) return k;
    }
    return null;
  };
  return {
    name: 'checkpoint',
    dictionary: [
      ...SAFETENSORS_DICTIONARY,
      ...['"epoch"', '"rng"', '"history"', '"optimizer"', '"$tensor"', '"state"', '"format"'].map(utf8),
    ],
    isParserError: (message) => OWN_ERRORS.some((re) => re.test(message)),
    extension: () => 'safetensors',
    mutate: (input, rng) => mutateSafetensors(input, rng, mutateCheckpointHeader),
    async execute(input) {
      writeFileSync(path, input);
      reset();
      let state: ReturnType<typeof loadCheckpoint>;
      try {
        state = loadCheckpoint(path, model);
      } catch (e) {
        const k = changed();
        if (k)
          throw new InvariantError(
            `loadCheckpoint threw but changed weight '${k}' (${String((e as Error)?.message ?? e).split('\n')[0]})`,
          );
        throw e;
      }
      // What fit({ resume }) does with the state, in its order (src/train/fit.ts).
      const optimizer = makeOptimizer(model);
      const loader = makeLoader(dataset, batchSize);
      const scheduler = makeScheduler(optimizer, epochs, loader.length);
      const rng = new Rng(1);
      optimizer.loadStateDict(state.optimizer as never);
      if (state.scheduler !== undefined) scheduler.loadStateDict(state.scheduler as never);
      if (state.loader !== undefined) loader.setState(state.loader as never);
      if (state.rng) rng.setState(state.rng);
      const history = (state.history ?? []) as unknown[];
      const startEpoch = state.epoch + 1;
      // The first step of the next epoch, if fit() would run one, then the end of training.
      if (startEpoch < epochs) {
        loader.setEpoch(startEpoch);
        for await (const batch of loader) {
          if (batch.labels.length < 1) throw new InvariantError('the restored loader gave an empty batch');
          break;
        }
        for (const p of model.parameters()) p.grad = new Tensor(new Float32Array(p.size).fill(0.01), p.shape);
        optimizer.step();
        scheduler.step();
        rng.next();
        rng.normal();
        history.push({ epoch: startEpoch + 1 });
      }
      history.at(-1);
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}
