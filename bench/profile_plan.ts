// Where a compiled inference plan's time goes: runs predict() on zoo models, then a few more
// runs with the plan timing each step (CompiledPlan.setProfiling), and prints the time per kind
// of step (convs split by kernel, stride and output size), the median over the runs, next to the
// whole predict's time.
//
//   node --import tsx bench/profile_plan.ts [--models resnet50,googlenet] [--batch 1] [--iters 5] [--int8]
//   node --import tsx bench/profile_plan.ts --train resnet18 [--batch 16] [--iters 10]
// (--int8: the models quantized by quantize() first, calibrated on two random batches. --train:
// the training step as fit() runs it (SGD with momentum, cross-entropy), resnet18 or mnistnet;
// its labels come from tracing the step once more, which advances the optimizer's counters.)
import { parseArgs } from 'node:util';
import { models, optim, quantize, randn } from '../src/index.js';
import type { Module } from '../src/nn/module.js';
import { recentPlan } from '../src/plan/index.js';
import { traceStep } from '../src/plan/trace.js';
import { recentTrainPlan, runStep } from '../src/plan/train.js';
import { trainingStep } from '../src/train/fit.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'resnet50,googlenet,densenet121' },
    batch: { type: 'string', default: '1' },
    iters: { type: 'string', default: '5' },
    top: { type: 'string', default: '12' },
    int8: { type: 'boolean', default: false },
    train: { type: 'string' },
  },
});

interface StepSpec {
  op: string;
  args: unknown[];
}

/** A step's row label: its op, and for convs the kernel, stride, channels and output size. */
function label(s: StepSpec): string {
  if (!s.op.startsWith('conv2d') && s.op !== 'qconv2dForward') return s.op;
  const last = s.args[s.args.length - 1] as { conv?: unknown };
  const a = (s.op === 'qconv2dForward' ? last.conv : last) as {
    inputShape?: number[];
    weightShape?: number[];
    stride?: number[];
  };
  if (!a?.inputShape || !a.weightShape) return s.op;
  const [oc, icg, kh, kw] = a.weightShape;
  const [, ic, h] = a.inputShape;
  const st = a.stride?.[0] ?? 1;
  void icg;
  const pass = s.op.startsWith('conv2dBackwardData')
    ? 'conv data-grad'
    : s.op.startsWith('conv2dBackwardWeight')
      ? 'conv weight-grad'
      : 'conv';
  return `${pass} ${kh}x${kw}${st > 1 ? `/s${st}` : ''} ${ic}->${oc} @${h}`;
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const iters = Number(values.iters);
const batch = Number(values.batch);

/** Prints the per-label and per-op sums of the steps' median times. */
function report(title: string, steps: StepSpec[], perStep: number[]): void {
  const rows = new Map<string, { ms: number; calls: number }>();
  steps.forEach((s, k) => {
    const row = rows.get(label(s)) ?? { ms: 0, calls: 0 };
    row.ms += perStep[k];
    row.calls++;
    rows.set(label(s), row);
  });
  const total = perStep.reduce((a, b) => a + b, 0);
  console.log(`\n== ${title}; steps ${total.toFixed(1)} ms over ${steps.length} steps`);
  const sorted = [...rows.entries()].sort((a, b) => b[1].ms - a[1].ms);
  for (const [l, { ms, calls }] of sorted.slice(0, Number(values.top))) {
    console.log(
      `  ${l.padEnd(36)} ${ms.toFixed(2).padStart(7)} ms ${((100 * ms) / total).toFixed(1).padStart(5)}% ${String(calls).padStart(4)} steps`,
    );
  }
  const byOp = new Map<string, number>();
  steps.forEach((s, k) => {
    byOp.set(s.op, (byOp.get(s.op) ?? 0) + perStep[k]);
  });
  console.log(
    `  by op: ${[...byOp.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([op, ms]) => `${op} ${ms.toFixed(1)}`)
      .join(', ')}`,
  );
}

if (values.train) {
  const name = values.train;
  const model = name === 'mnistnet' ? models.mnistNet() : models.resnet18();
  model.train();
  const opt = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
  const shape = name === 'mnistnet' ? [batch, 1, 28, 28] : [batch, 3, 224, 224];
  const x = randn(shape);
  const targets = Int32Array.from({ length: batch }, (_, i) => (i * 7) % 10);
  const step = trainingStep(model, opt, x, targets);
  const run = () => runStep(model, opt, step, [x.data, targets]);
  for (let i = 0; i < 3; i++) {
    const r = await run();
    if (typeof r === 'string') throw new Error(`${name}: the step did not plan: ${r}`);
  }
  const whole: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await run();
    whole.push(performance.now() - t0);
  }
  const plan = recentTrainPlan(model)!;
  const labels = new Float32Array(targets.buffer);
  const spec = traceStep(step, [x.data, labels], [...model.stateDict().values()], opt.stateArrays(), []).spec();
  const steps = (JSON.parse(spec) as { steps: StepSpec[] }).steps;
  if (steps.length !== plan.steps)
    throw new Error(`${name}: the trace has ${steps.length} steps, the plan ${plan.steps}`);
  plan.setProfiling(true);
  const runs: number[][] = [];
  for (let i = 0; i < iters; i++) {
    await run();
    runs.push(plan.stepMs);
  }
  plan.setProfiling(false);
  report(
    `${name} training step b${batch}: ${median(whole).toFixed(1)} ms (median of ${iters})`,
    steps,
    steps.map((_, k) => median(runs.map((t) => t[k]))),
  );
  process.exit(0);
}

for (const name of values.models!.split(',')) {
  const float = (models as unknown as Record<string, () => Module>)[name]().eval();
  const x = randn([batch, 3, 224, 224]);
  const model = values.int8 ? await quantize(float, [randn([2, 3, 224, 224]), randn([2, 3, 224, 224])]) : float;
  for (let i = 0; i < 3; i++) await model.predict(x);
  const whole: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await model.predict(x);
    whole.push(performance.now() - t0);
  }
  const r = recentPlan(model);
  if (!r) {
    console.log(`${name}: not planned`);
    continue;
  }
  const steps = (JSON.parse(r.trace.spec) as { steps: StepSpec[] }).steps;
  r.plan.setProfiling(true);
  const runs: number[][] = [];
  // Per profiled run: the predict's wall time less its own steps' sum, i.e. what a predict
  // spends outside the steps (JavaScript, argument conversion, hand-offs between threads).
  const outside: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await model.predict(x);
    const dt = performance.now() - t0;
    runs.push(r.plan.stepMs);
    outside.push(dt - r.plan.stepMs.reduce((a, b) => a + b, 0));
  }
  r.plan.setProfiling(false);
  const perStep = steps.map((_, k) => median(runs.map((t) => t[k])));
  const title =
    `${name} b${batch}: predict ${median(whole).toFixed(1)} ms (median of ${iters}); ` +
    `outside the steps ${median(outside).toFixed(2)} ms`;
  report(title, steps, perStep);
}
