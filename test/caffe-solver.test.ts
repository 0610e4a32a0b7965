// The Caffe solver (src/io/caffe/solver.ts): learning-rate policies against Caffe's formulas;
// every solver type's weights after a few iterations against Caffe's update rules written out
// in torch (test/fixtures/caffe_solver_reference.py), with lr_mult / decay_mult, iter_size,
// clip_gradients, L1 and L2 decay and a rate that changes mid-run; Caffe's fillers; BatchNorm's
// moving averages; `ferroconv train --solver` on Caffe's LeNet example; bad solvers as Errors.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { CaffeNet, loadCaffe, mnist, noGrad, parsePrototxt, Rng, randn, Tensor } from '../src/index.js';
import { create } from '@bufbuild/protobuf';
import { FillerParameterSchema, FillerParameter_VarianceNorm } from '../src/io/caffe/gen/caffe_pb.js';
import { fillBlob } from '../src/io/caffe/import.js';
import { CaffeSolver, caffeLearningRate, parseSolver } from '../src/io/caffe/solver.js';
import { hasPython, PYTHON, thrown } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-solver-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('caffeLearningRate', () => {
  const at = (text: string, iter: number) =>
    caffeLearningRate(parseSolver(`base_lr: 0.01 max_iter: 100 ${text}`), iter);
  it("follows Caffe's GetLearningRate for every policy", () => {
    expect(at('lr_policy: "fixed"', 57)).toBeCloseTo(0.01, 9);
    expect(at('lr_policy: "step" gamma: 0.1 stepsize: 10', 9)).toBeCloseTo(0.01, 9);
    expect(at('lr_policy: "step" gamma: 0.1 stepsize: 10', 25)).toBeCloseTo(0.0001, 9);
    expect(at('lr_policy: "exp" gamma: 0.9', 3)).toBeCloseTo(0.01 * 0.9 ** 3, 7);
    // Caffe's LeNet log: "Iteration 100, lr = 0.00992565".
    expect(at('lr_policy: "inv" gamma: 0.0001 power: 0.75', 100)).toBeCloseTo(0.00992565, 8);
    expect(at('lr_policy: "multistep" gamma: 0.5 stepvalue: 10 stepvalue: 30', 29)).toBeCloseTo(0.005, 9);
    expect(at('lr_policy: "multistep" gamma: 0.5 stepvalue: 10 stepvalue: 30', 30)).toBeCloseTo(0.0025, 9);
    expect(at('lr_policy: "poly" power: 2', 50)).toBeCloseTo(0.0025, 9);
    expect(at('lr_policy: "sigmoid" gamma: -0.1 stepsize: 20', 20)).toBeCloseTo(0.005, 9);
  });
  it('names what a policy lacks, and unknown policies', () => {
    expect(thrown(() => at('lr_policy: "step" stepsize: 3', 1)).message).toBe(
      "caffe solver: lr_policy 'step' needs gamma",
    );
    expect(thrown(() => at('lr_policy: "cosine"', 1)).message).toContain("unknown lr_policy 'cosine'");
  });
});

const NET = `
name: "tiny"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "xavier" } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
  param { lr_mult: 1.5 decay_mult: 2 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 3 weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
`;
const LR_MULT = { 'conv.weight': 1, 'conv.bias': 2, 'ip.weight': 1.5, 'ip.bias': 2 };
const DECAY_MULT = { 'conv.weight': 1, 'conv.bias': 0, 'ip.weight': 2, 'ip.bias': 0 };

/** Each solver with the Caffe text of its settings and the same settings for the reference. */
const SOLVERS: [string, string, Record<string, unknown>][] = [
  [
    'SGD, step policy (the rate halves mid-run), iter_size 2, clip_gradients, L2',
    'type: "SGD" lr_policy: "step" gamma: 0.5 stepsize: 2 momentum: 0.9 weight_decay: 0.01 iter_size: 2 clip_gradients: 0.5',
    {
      type: 'SGD',
      lr_policy: 'step',
      gamma: 0.5,
      stepsize: 2,
      momentum: 0.9,
      weight_decay: 0.01,
      iter_size: 2,
      clip_gradients: 0.5,
    },
  ],
  [
    'Nesterov, multistep',
    'type: "Nesterov" lr_policy: "multistep" gamma: 0.3 stepvalue: 1 stepvalue: 4 momentum: 0.8 weight_decay: 0.005',
    { type: 'Nesterov', lr_policy: 'multistep', gamma: 0.3, stepvalue: [1, 4], momentum: 0.8, weight_decay: 0.005 },
  ],
  [
    'Nesterov by the deprecated solver_type, sigmoid policy',
    'solver_type: NESTEROV lr_policy: "sigmoid" gamma: -0.5 stepsize: 3 momentum: 0.9',
    { type: 'Nesterov', lr_policy: 'sigmoid', gamma: -0.5, stepsize: 3, momentum: 0.9 },
  ],
  [
    'AdaGrad, L1 decay',
    'type: "AdaGrad" weight_decay: 0.001 regularization_type: "L1"',
    { type: 'AdaGrad', weight_decay: 0.001, regularization_type: 'L1' },
  ],
  [
    'RMSProp, inv policy',
    'type: "RMSProp" lr_policy: "inv" gamma: 0.1 power: 0.75 rms_decay: 0.9 weight_decay: 0.002',
    { type: 'RMSProp', lr_policy: 'inv', gamma: 0.1, power: 0.75, rms_decay: 0.9, weight_decay: 0.002 },
  ],
  [
    'AdaDelta, poly policy',
    'type: "AdaDelta" lr_policy: "poly" power: 2 momentum: 0.95 delta: 1e-6',
    { type: 'AdaDelta', lr_policy: 'poly', power: 2, momentum: 0.95, delta: 1e-6, base_lr: 1 },
  ],
  [
    'Adam, exp policy',
    'type: "Adam" lr_policy: "exp" gamma: 0.9 momentum: 0.9 momentum2: 0.999',
    { type: 'Adam', lr_policy: 'exp', gamma: 0.9, momentum: 0.9, momentum2: 0.999 },
  ],
];

describe.skipIf(!hasPython('torch'))('CaffeSolver against Caffe update rules (torch reference)', () => {
  it.each(SOLVERS)('%s', (_name, text, settings) => {
    const iterations = 6;
    const baseLr = (settings.base_lr as number | undefined) ?? 0.05;
    const solverText = `base_lr: ${baseLr} max_iter: 10 ${text.includes('lr_policy') ? '' : 'lr_policy: "fixed" '}${text}`;
    const solver = new CaffeSolver(parseSolver(solverText.replace(/^/, `net_param { ${NET} } `)), {
      rng: new Rng(5),
    });
    const iterSize = (settings.iter_size as number | undefined) ?? 1;
    const rng = new Rng(11);
    const batches = Array.from({ length: iterations * iterSize }, () => ({
      data: randn([4, 2, 6, 6], { rng }),
      label: Int32Array.from({ length: 4 }, () => rng.int(3)),
    }));
    const feed = (b: (typeof batches)[number]) => ({
      data: b.data,
      label: new Tensor(Float32Array.from(b.label), [4]),
    });
    solver.net.initialize({ rng: new Rng(5) });
    const dump = () =>
      Object.fromEntries(
        [...solver.net.stateDict()].map(([k, t]) => [k, { shape: t.shape, data: Array.from(t.data) }]),
      );
    const initial = dump();
    for (let it = 0; it < iterations; it++) {
      solver.step(batches.slice(it * iterSize, (it + 1) * iterSize).map(feed));
    }
    const input = join(dir, 'solver.json');
    const output = join(dir, 'solver-out.json');
    writeFileSync(
      input,
      JSON.stringify({
        solver: { base_lr: baseLr, max_iter: 10, ...settings },
        weights: initial,
        lr_mult: LR_MULT,
        decay_mult: DECAY_MULT,
        iterations,
        batches: batches.map((b) => ({
          shape: b.data.shape,
          data: Array.from(b.data.data),
          label: Array.from(b.label),
        })),
      }),
    );
    execFileSync(PYTHON, [join(__dirname, 'fixtures', 'caffe_solver_reference.py'), input, output], { stdio: 'pipe' });
    const want = JSON.parse(readFileSync(output, 'utf8')) as Record<string, { data: number[] }>;
    let worst = 0;
    let moved = 0;
    for (const [k, t] of solver.net.stateDict()) {
      const ref = want[k].data;
      const scale = Math.max(...ref.map(Math.abs));
      ref.forEach((v, i) => {
        worst = Math.max(worst, Math.abs(t.data[i] - v) / scale);
        moved = Math.max(moved, Math.abs(v - initial[k].data[i]) / scale);
      });
    }
    console.log(
      `${_name}: max error ${worst.toExponential(2)} relative to the largest weight (weights moved ${moved.toFixed(3)})`,
    );
    expect(moved).toBeGreaterThan(1e-3);
    expect(worst).toBeLessThan(2e-5);
  });
});

describe('Caffe fillers', () => {
  const filler = (init: Parameters<typeof create<typeof FillerParameterSchema>>[1]) =>
    create(FillerParameterSchema, init);
  it('xavier and msra follow fan-in (or fan-out / average), constant and uniform their values', () => {
    const rng = new Rng(3);
    const x = fillBlob(filler({ type: 'xavier' }), [64, 32, 3, 3], rng);
    const bound = Math.sqrt(3 / (32 * 9));
    expect(Math.max(...x.data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...x.data.map(Math.abs))).toBeGreaterThan(0.95 * bound);
    const fanOut = fillBlob(
      filler({ type: 'xavier', varianceNorm: FillerParameter_VarianceNorm.FAN_OUT }),
      [64, 32, 3, 3],
      rng,
    );
    expect(Math.max(...fanOut.data.map(Math.abs))).toBeLessThanOrEqual(Math.sqrt(3 / (64 * 9)));
    const m = fillBlob(filler({ type: 'msra' }), [64, 32, 3, 3], rng);
    const std = Math.sqrt(m.data.reduce((a, v) => a + v * v, 0) / m.size);
    expect(std).toBeGreaterThan(0.95 * Math.sqrt(2 / 288));
    expect(std).toBeLessThan(1.05 * Math.sqrt(2 / 288));
    expect(Array.from(fillBlob(filler({ type: 'constant', value: 0.25 }), [3], rng).data)).toEqual([0.25, 0.25, 0.25]);
    expect(Array.from(fillBlob(undefined, [2], rng, 0.25).data)).toEqual([0.25, 0.25]);
    const u = fillBlob(filler({ type: 'uniform', min: -2, max: -1 }), [1000], rng);
    expect(Math.min(...u.data)).toBeGreaterThanOrEqual(-2);
    expect(Math.max(...u.data)).toBeLessThan(-1);
  });
  it('gaussian with sparse, positive_unitball and bilinear as Caffe computes them', () => {
    const rng = new Rng(4);
    const s = fillBlob(filler({ type: 'gaussian', std: 1, sparse: 5 }), [20, 500], rng);
    const kept = s.data.filter((v) => v !== 0).length / s.size;
    expect(kept).toBeGreaterThan(0.2);
    expect(kept).toBeLessThan(0.3);
    const ball = fillBlob(filler({ type: 'positive_unitball' }), [3, 7], rng);
    for (let r = 0; r < 3; r++) expect(ball.data.slice(r * 7, r * 7 + 7).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    // A 4x4 bilinear kernel (upsampling by 2): the outer product of [1, 3, 3, 1] / 4.
    const b = fillBlob(filler({ type: 'bilinear' }), [1, 1, 4, 4], rng);
    const k = [0.25, 0.75, 0.75, 0.25];
    expect(Array.from(b.data)).toEqual(k.flatMap((y) => k.map((x) => y * x)));
    expect(thrown(() => fillBlob(filler({ type: 'orthogonal' }), [2, 2], rng)).message).toContain(
      "unknown filler type 'orthogonal'",
    );
  });
});

describe('CaffeNet in the TRAIN phase', () => {
  it("BatchNorm accumulates Caffe's moving averages; the TEST net shares the weights by layer name", () => {
    const def = parsePrototxt(`
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 5 dim: 3 dim: 2 dim: 2 } } }
      layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { moving_average_fraction: 0.9 } }
      layer { name: "drop" type: "Dropout" bottom: "y" top: "y" include { phase: TRAIN } }`);
    const train = new CaffeNet(def, { phase: 'TRAIN' });
    const test = new CaffeNet(def, { shareWeights: train });
    train.initialize();
    train.train();
    const xs = [randn([5, 3, 2, 2], { rng: new Rng(1) }), randn([5, 3, 2, 2], { rng: new Rng(2) })];
    noGrad(() => {
      for (const x of xs) train.forward(x);
    });
    const state = train.stateDict();
    // After two batches: scale_factor = 0.9 * 1 + 1, mean blob = 0.9 * m1 + m2 (unscaled).
    expect(state.get('bn.scale_factor')!.data[0]).toBeCloseTo(1.9, 6);
    const channelMean = (x: Tensor, c: number) => {
      let s = 0;
      for (let n = 0; n < 5; n++) for (let i = 0; i < 4; i++) s += x.data[(n * 3 + c) * 4 + i];
      return s / 20;
    };
    for (let c = 0; c < 3; c++) {
      expect(state.get('bn.mean')!.data[c]).toBeCloseTo(0.9 * channelMean(xs[0], c) + channelMean(xs[1], c), 5);
    }
    expect(train.layers().map((l) => l.layer.name)).toEqual(['bn', 'drop']);
    expect(test.layers().map((l) => l.layer.name)).toEqual(['bn']);
    expect(test.stateDict().get('bn.mean')).toBe(state.get('bn.mean'));
    // TEST phase: normalised by the running estimates, blob / scale_factor.
    const y = noGrad(() => test.eval().forward(xs[0]));
    const mean = state.get('bn.mean')!.data[0] / 1.9;
    const variance = state.get('bn.variance')!.data[0] / 1.9;
    expect(y.data[0]).toBeCloseTo((xs[0].data[0] - mean) / Math.sqrt(variance + 1e-5), 4);
  });
});

describe('bad solvers are Errors naming the problem', () => {
  it.each([
    ['base_lr: 0.1 max_iter: 5 type: "Momentum" net_param { name: "n" }', "unknown solver type 'Momentum'"],
    ['base_lr: 0.1 type: "SGD" net_param { name: "n" }', 'max_iter is required'],
    ['base_lr: 0.1 max_iter: 5 regularization_type: "L3" net_param { name: "n" }', "regularization_type 'L3'"],
    ['base_lr: 0.1 max_iter: 5', 'the solver names no net'],
    ['base_lr: 0.1 max_iter: 5 lr_policy: "poly" net_param { name: "n" }', "lr_policy 'poly' needs power"],
    ['base_lr: 0.1 max_iter: 5 momentum: "fast"', 'the solver definition does not parse'],
  ])('%s', (text, message) => {
    expect(thrown(() => new CaffeSolver(parseSolver(text))).message).toContain(message);
  });
});

const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
// tsx by path: the CLI runs in the snapshot folder, where a bare 'tsx' does not resolve.
const TSX = pathToFileURL(join(import.meta.dirname, '..', 'node_modules', 'tsx', 'dist', 'esm', 'index.mjs')).href;

describe("ferroconv train --solver on Caffe's LeNet example", () => {
  it('trains, tests, snapshots a caffemodel loadCaffe reads, and resumes from the solver state', () => {
    const work = mkdtempSync(join(dir, 'lenet-'));
    for (const f of ['lenet_solver.prototxt', 'lenet_train_test.prototxt']) {
      writeFileSync(join(work, f), readFileSync(join(__dirname, 'fixtures', 'caffe', f)));
    }
    const run = (...args: string[]) =>
      spawnSync(process.execPath, ['--import', TSX, CLI, 'train', '--solver', 'lenet_solver.prototxt', ...args], {
        cwd: work,
        encoding: 'utf8',
        env: { ...process.env, FERROCONV_NUM_THREADS: '2' },
      });
    const r = run('--max-iter', '150');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Iteration 100, lr = 0.00992565');
    const acc = Number(/test accuracy: ([\d.]+)% after 150 iterations/.exec(r.stdout)?.[1]);
    expect(acc).toBeGreaterThan(90);
    const model = join(work, 'lenet_iter_150.caffemodel');
    expect(existsSync(model)).toBe(true);
    // The snapshot as Caffe's deploy-time pair: the TEST net of the same definition.
    const net = loadCaffe(join(work, 'lenet_train_test.prototxt'), model);
    expect(net.inputNames).toEqual(['data']);
    expect(net.stateDict().get('ip1.weight')?.shape).toEqual([500, 800]);
    // It classifies MNIST test images fed as Caffe's data layer feeds them (pixels / 256).
    const test = mnist({ train: false, normalize: false });
    const n = 300;
    const images = new Float32Array(n * 784);
    for (let i = 0; i < n; i++) images.set(test.get(i).image.data, i * 784);
    const x = new Tensor(
      images.map((v) => (255 * v) / 256),
      [n, 1, 28, 28],
    );
    const logits = noGrad(() => net.forward(x));
    let right = 0;
    for (let i = 0; i < n; i++) {
      const row = Array.from(logits.data.slice(i * 10, i * 10 + 10));
      if (row.indexOf(Math.max(...row)) === test.get(i).label) right++;
    }
    expect(right / n).toBeGreaterThan(0.85);
    const resumed = run('--snapshot', 'lenet_iter_150.solverstate.safetensors', '--max-iter', '160');
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain('Solving with SGD to iteration 160 (from 150)');
    expect(resumed.stdout).toMatch(/test accuracy: [\d.]+% after 160 iterations/);
    const bad = run('--lr', '0.1');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('--lr: the solver file sets this with --solver');
  }, 120_000);
});
