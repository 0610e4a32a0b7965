// Where a training step's time goes: one ResNet-18 (or MNIST net) train step split by op type,
// forward and backward separately, plus the autograd bookkeeping between backward nodes, the
// optimizer step, zero_grad, cross-entropy, garbage collection and page faults.
//
//   node --import tsx bench/profile_train.ts [--model resnet18|mnistnet] [--batch 16] [--steps 5]
//
// Forward: leaf modules' forward() is wrapped with a timer (the prototypes are patched, so the
// library is unchanged). Backward: after each forward the graph is walked from the loss and every
// GradFn.backward is wrapped; backward time not spent inside a node is autograd overhead
// (gradient sums, leaf .grad copies, topological sort).
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { crossEntropy, models, nn, optim, randn, setNumThreads, type Tensor } from '../src/index.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resnet18' },
    batch: { type: 'string', default: '16' },
    steps: { type: 'string', default: '5' },
    threads: { type: 'string' },
  },
});
const batch = Number(values.batch);
const steps = Number(values.steps);
if (values.threads) setNumThreads(Number(values.threads));

const fwd = new Map<string, number>();
const bwd = new Map<string, number>();
const add = (m: Map<string, number>, k: string, dt: number): void => {
  m.set(k, (m.get(k) ?? 0) + dt);
};

// Only leaf layers are wrapped, so nested calls are not counted twice.
const leafClasses: Record<string, { prototype: { forward: (...a: Tensor[]) => Tensor } }> = {
  Conv2d: nn.Conv2d,
  BatchNorm2d: nn.BatchNorm2d,
  ReLU: nn.ReLU,
  MaxPool2d: nn.MaxPool2d,
  AdaptiveAvgPool2d: nn.AdaptiveAvgPool2d,
  Linear: nn.Linear,
  Flatten: nn.Flatten,
  Dropout: nn.Dropout,
};
let timing = false;
for (const [name, cls] of Object.entries(leafClasses)) {
  if (!cls) continue;
  const orig = cls.prototype.forward;
  cls.prototype.forward = function (this: unknown, ...a: Tensor[]): Tensor {
    if (!timing) return orig.apply(this, a);
    const t0 = performance.now();
    const r = orig.apply(this, a);
    add(fwd, name, performance.now() - t0);
    return r;
  };
}

function wrapGraph(root: Tensor): void {
  const seen = new Set<Tensor>();
  const stack = [root];
  while (stack.length) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    const fn = t.gradFn;
    if (!fn) continue;
    const orig = fn.backward;
    (fn as { backward: typeof orig }).backward = (g: Float32Array) => {
      const t0 = performance.now();
      const r = orig(g);
      if (timing) add(bwd, fn.name, performance.now() - t0);
      return r;
    };
    for (const i of fn.inputs) if (i) stack.push(i);
  }
}

let wall0 = Infinity;
let wallEnd = Infinity;
let gcMs = 0;
let gcCount = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.startTime < wall0 || e.startTime > wallEnd) continue;
    gcMs += e.duration;
    gcCount++;
  }
}).observe({ entryTypes: ['gc'] });

const [c, h, w] = values.model === 'mnistnet' ? [1, 28, 28] : [3, 224, 224];
const model = values.model === 'mnistnet' ? models.mnistNet() : models.resnet18();
model.train();
const opt = new optim.SGD(model.parameters(), { lr: 0.01, momentum: 0.9 });
const x = randn([batch, c, h, w]);
const targets = Int32Array.from({ length: batch }, (_, i) => (i * 7) % 10);
const nParams = model.parameters().reduce((a, p) => a + p.size, 0);

const phase = { zeroGrad: 0, forward: 0, loss: 0, backward: 0, step: 0, total: 0 };
function trainStep(): void {
  let t = performance.now();
  const t0 = t;
  const lap = (k: keyof typeof phase): void => {
    const now = performance.now();
    if (timing) phase[k] += now - t;
    t = now;
  };
  opt.zeroGrad();
  lap('zeroGrad');
  const logits = model.forward(x);
  lap('forward');
  const loss = crossEntropy(logits, targets);
  lap('loss');
  wrapGraph(loss);
  t = performance.now();
  loss.backward();
  lap('backward');
  opt.step();
  lap('step');
  if (timing) phase.total += performance.now() - t0;
}

trainStep(); // warm-up: first touch, momentum buffers, lazy init
trainStep();
const ru0 = process.resourceUsage();
timing = true;
wall0 = performance.now();
for (let i = 0; i < steps; i++) trainStep();
wallEnd = performance.now();
const wall = wallEnd - wall0;
timing = false;
const ru1 = process.resourceUsage();
await new Promise((r) => setTimeout(r, 50)); // let the gc observer flush

const per = (ms: number): string => (ms / steps).toFixed(1);
const table = (m: Map<string, number>, total: number) => {
  const rows = [...m]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => ({ op: k, 'ms/step': per(v), '%': ((100 * v) / total).toFixed(1) }));
  const inside = [...m.values()].reduce((a, b) => a + b, 0);
  rows.push({
    op: '(outside the timed ops)',
    'ms/step': per(total - inside),
    '%': ((100 * (total - inside)) / total).toFixed(1),
  });
  return rows;
};
console.log(
  `${values.model} batch ${batch}: ${steps} steps, ${(wall / steps).toFixed(1)} ms/step, ${((batch * steps * 1000) / wall).toFixed(2)} img/s, ${(nParams / 1e6).toFixed(2)}M params`,
);
console.log('phases (ms/step):', Object.fromEntries(Object.entries(phase).map(([k, v]) => [k, Number(per(v))])));
console.log('forward by layer:');
console.table(table(fwd, phase.forward));
console.log('backward by node:');
console.table(table(bwd, phase.backward));
console.log(
  `gc: ${gcCount / steps} collections, ${per(gcMs)} ms/step; minor page faults ${((ru1.minorPageFault - ru0.minorPageFault) / steps).toFixed(0)}/step; ` +
    `user ${((ru1.userCPUTime - ru0.userCPUTime) / 1000 / steps).toFixed(0)} ms/step, system ${((ru1.systemCPUTime - ru0.systemCPUTime) / 1000 / steps).toFixed(0)} ms/step; ` +
    `maxRSS ${(ru1.maxRSS / 1024).toFixed(0)} MB`,
);
