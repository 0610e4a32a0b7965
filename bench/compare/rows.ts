// End-to-end rows (whole-model inference, a training step), each run in a fresh child process so
// its peak RSS belongs to that row alone. The driver spawns itself with `--row <json>` for the
// ferroconv and ORT rows and torch_bench.py with a single job for the PyTorch rows; every child
// prints one JSON line: seconds per step (median), setup time and its peak RSS.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, models, noGrad, optim, planInfo, quantize, randn, setNumThreads } from '../../src/index.js';
import { runStep } from '../../src/plan/train.js';
import { trainingStep } from '../../src/train/fit.js';
import { buildZooModel, ZOO, type ZooName } from './shapes.js';
import { BENCH_DIR, findOrt, lastJson, ortSessionOptions, runChild, runTorch, threadEnv } from './peers.js';
import { timeIt, type Stat, type Timing } from './timing.js';

export type Framework = 'ferroconv' | 'torch' | 'ort';

export interface RowSpec {
  fw: Framework;
  kind: 'infer' | 'train';
  /** A zoo name for 'infer'; 'resnet18' or 'mnistnet' for 'train'. */
  model: string;
  batch: number;
  threads: number;
  timing: Timing;
  /** ONNX file, for ORT rows. */
  onnx?: string;
  /** Let ORT's threads spin-wait (see peers.ts setSpinning). */
  spin: boolean;
  /**
   * ferroconv: 'eager' (on the JavaScript thread) or 'plan' (inference: predict(); training:
   * fit()'s compiled step), or 'int8' (inference: the model quantized by quantize(), predict()).
   */
  mode?: 'eager' | 'plan' | 'int8';
}

export interface RowResult {
  /** Seconds per forward (infer) or per forward + backward + SGD step (train). */
  step?: Stat;
  setupSeconds?: number;
  maxRssKb?: number;
  /** Longest the JavaScript event loop went without a turn during the timed calls, in ms. */
  maxStallMs?: number;
  /** ferroconv 'plan' rows: the same during the first predict (trace and plan build), in ms. */
  firstStallMs?: number;
  /** ferroconv 'plan' rows: whether predict() ran a compiled plan, or why not. */
  planned?: boolean | string;
  /** Seconds per call, the median of each round this result stands for (see compare.ts). */
  roundMedians?: number[];
  error?: string;
}

/**
 * Times `fn` like timeIt while a 1 ms timer watches the event loop; adds the longest gap
 * between two turns during the timed calls (what a server running this would stall for in
 * steady state; the warm-up calls, which include a plan's trace and build, are not counted).
 */
async function timeWatched(fn: () => unknown, t: Timing): Promise<{ step: Stat; maxStallMs: number }> {
  let last = performance.now();
  let worst = 0;
  let timing = false;
  const timer = setInterval(() => {
    const now = performance.now();
    if (timing) worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  try {
    const step = await timeIt(async (timed) => {
      timing = timed;
      // Start each call fresh so the gap before it (the harness's own work) is not counted.
      last = performance.now();
      await fn();
      if (timed) worst = Math.max(worst, performance.now() - last);
    }, t);
    return { step, maxStallMs: worst };
  } finally {
    clearInterval(timer);
  }
}

/** The longest the event loop waits during one call of `fn` (the first predict: trace + build). */
async function stallOf(fn: () => unknown): Promise<number> {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 1);
  try {
    await fn();
    return Math.max(worst, performance.now() - last);
  } finally {
    clearInterval(timer);
  }
}

/** Input [channels, height, width] of a row's model. */
function inputChw(model: string): [number, number, number] {
  return model === 'mnistnet' ? [1, 28, 28] : [3, 224, 224];
}

/**
 * This process's own peak RSS in KiB. On Linux, getrusage's maxrss survives fork + exec, so a row
 * process would report at least the driver's resident size at the moment it was spawned; VmHWM in
 * /proc/self/status is the high-water mark of this process's own address space only.
 */
function peakRssKb(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux: fall back to getrusage
  }
  return process.resourceUsage().maxRSS;
}

/** Runs one row in this process (the child side of `--row`). */
export async function runRowHere(spec: RowSpec): Promise<RowResult> {
  const t0 = performance.now();
  const [c, h, w] = inputChw(spec.model);
  if (spec.fw === 'ort') {
    const ort = findOrt();
    if (!ort.api || !spec.onnx) return { error: ort.error ?? 'no ONNX file' };
    const session = await ort.api.InferenceSession.create(spec.onnx, ortSessionOptions(spec.threads, spec.spin));
    const dims = [spec.batch, c, h, w];
    const x = new ort.api.Tensor('float32', randn(dims).data, dims);
    const feeds = { [session.inputNames[0]]: x };
    const setupSeconds = (performance.now() - t0) / 1000;
    const step = await timeIt(() => session.run(feeds), spec.timing);
    await session.release();
    return { step, setupSeconds, maxRssKb: peakRssKb() };
  }
  setNumThreads(spec.threads);
  const x = randn([spec.batch, c, h, w]);
  if (spec.kind === 'infer') {
    const zoo = (ZOO as readonly string[]).includes(spec.model);
    if (!zoo && spec.model !== 'resnet18') return { error: `unknown zoo model ${spec.model}` };
    const float = zoo ? buildZooModel(spec.model as ZooName) : models.resnet18();
    float.eval();
    // int8: calibrated on two random batches (speed does not depend on the weights or ranges).
    const model = spec.mode === 'int8' ? await quantize(float, [randn([2, c, h, w]), randn([2, c, h, w])]) : float;
    const setupSeconds = (performance.now() - t0) / 1000;
    if (spec.mode === 'plan' || spec.mode === 'int8') {
      const predict = () => model.predict(x, { batchSize: spec.batch });
      const firstStallMs = await stallOf(predict);
      const { step, maxStallMs } = await timeWatched(predict, spec.timing);
      const info = planInfo(model);
      return {
        step,
        setupSeconds,
        maxRssKb: peakRssKb(),
        maxStallMs,
        firstStallMs,
        planned: info?.planned || info?.reason,
      };
    }
    const { step, maxStallMs } = await timeWatched(() => noGrad(() => model.forward(x)), spec.timing);
    return { step, setupSeconds, maxRssKb: peakRssKb(), maxStallMs };
  }
  const model = spec.model === 'mnistnet' ? models.mnistNet() : models.resnet18();
  model.train();
  const opt = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
  const targets = Int32Array.from({ length: spec.batch }, (_, i) => (i * 7) % 10);
  const setupSeconds = (performance.now() - t0) / 1000;
  if (spec.mode === 'plan') {
    // What fit() runs per step: the step traced and run as a compiled plan off the thread.
    const trainStep = trainingStep(model, opt, x, targets);
    let planned: boolean | string = true;
    const once = async () => {
      const r = await runStep(model, opt, trainStep, [x.data, targets]);
      if (typeof r === 'string') planned = r;
    };
    const firstStallMs = await stallOf(once);
    const { step, maxStallMs } = await timeWatched(once, spec.timing);
    return { step, setupSeconds, maxRssKb: peakRssKb(), maxStallMs, firstStallMs, planned };
  }
  const { step, maxStallMs } = await timeWatched(() => {
    opt.zeroGrad();
    const loss = crossEntropy(model.forward(x), targets);
    loss.backward();
    opt.step();
  }, spec.timing);
  return { step, setupSeconds, maxRssKb: peakRssKb(), maxStallMs };
}

/** Runs one row in a fresh child process and returns what it reported. */
export async function runRowIsolated(spec: RowSpec): Promise<RowResult> {
  if (spec.fw === 'torch') {
    const out = await runTorch({
      threads: spec.threads,
      timing: spec.timing,
      jobs: [{ id: 'row', kind: spec.kind, model: spec.model, batch: spec.batch }],
    });
    if ('error' in out) return { error: out.error };
    const r = out.results[0] as { step?: Stat; setupSeconds?: number; error?: string };
    if (r.error) return { error: r.error };
    return { step: r.step, setupSeconds: r.setupSeconds, maxRssKb: out.maxRssKb };
  }
  const script = join(BENCH_DIR, 'compare.ts');
  const r = await runChild(process.execPath, [...process.execArgv, script, '--row', JSON.stringify(spec)], {
    env: threadEnv(spec.threads),
    quietStderr: true,
  });
  const res = lastJson<RowResult>(r.stdout);
  if (r.code !== 0 || !res)
    return { error: `row child failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-2).join(' / ')}` };
  return res;
}
