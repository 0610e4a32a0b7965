// Where whole-model inference time goes: wraps every native entry point with a timer (before
// the library loads it), runs zoo models in eval() + noGrad, and prints time per native
// function (convs split by kernel size), the JavaScript-side remainder, and minor page faults
// per forward (fresh output buffers are faulted in by whoever first writes them).
//
//   node --import tsx bench/profile_infer.ts [--models resnet50,densenet121] [--batch 8] [--iters 3]
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'resnet50,densenet121' },
    batch: { type: 'string', default: '8' },
    iters: { type: 'string', default: '3' },
  },
});

interface Acc {
  ms: number;
  calls: number;
  flops: number;
}
const acc = new Map<string, Acc>();
let nativeMs = 0;

const require = createRequire(import.meta.url);
const binding = require('../ferroconv.linux-x64-gnu.node') as Record<string, unknown>;
for (const [name, fn] of Object.entries(binding)) {
  if (typeof fn !== 'function' || /OutputSize$|^nativeInfo$|^setNumThreads$/.test(name)) continue;
  const f = fn as (...a: unknown[]) => unknown;
  binding[name] = (...a: unknown[]): unknown => {
    const t0 = performance.now();
    const r = f(...a);
    const dt = performance.now() - t0;
    nativeMs += dt;
    let key = name;
    let flops = 0;
    const args = a[a.length - 1] as { inputShape?: number[]; weightShape?: number[]; stride?: number[] } | undefined;
    if (name.startsWith('conv2d') && args?.weightShape && args.inputShape) {
      const [oc, icg, kh, kw] = args.weightShape;
      const [n, , h, w] = args.inputShape;
      const s = args.stride ?? [1, 1];
      key = `${name} ${kh}x${kw}${s[0] > 1 ? `/s${s[0]}` : ''}`;
      const out = a[a.length - 2] as Float32Array;
      flops = 2 * out.length * icg * kh * kw;
      void n;
      void h;
      void w;
      void oc;
    }
    const e = acc.get(key) ?? { ms: 0, calls: 0, flops: 0 };
    e.ms += dt;
    e.calls++;
    e.flops += flops;
    acc.set(key, e);
    return r;
  };
}

const { models, noGrad, randn, info } = await import('../src/index.js');

const builders: Record<string, () => { eval(): unknown; forward(x: unknown): unknown }> = {
  resnet50: () => models.resnet50(),
  resnet18: () => models.resnet18(),
  densenet121: () => models.densenet121(),
  googlenet: () => models.googlenet(),
  alexnet: () => models.alexnet(),
  vgg16: () => models.vgg16(),
};

const batch = Number(values.batch);
const iters = Number(values.iters);
console.log(`threads ${info().threads}, simd ${info().simd}, batch ${batch}, iters ${iters}`);
for (const name of values.models!.split(',')) {
  const model = builders[name]();
  model.eval();
  const x = randn([batch, 3, 224, 224]);
  noGrad(() => model.forward(x)); // warm-up
  acc.clear();
  nativeMs = 0;
  const faults0 = process.resourceUsage().minorPageFault;
  const times: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    noGrad(() => model.forward(x));
    times.push(performance.now() - t0);
  }
  const faults = (process.resourceUsage().minorPageFault - faults0) / iters;
  const total = times.reduce((a, b) => a + b, 0) / iters;
  const nat = nativeMs / iters;
  console.log(
    `\n== ${name} b${batch}: ${total.toFixed(1)} ms/forward (${((batch * 1000) / total).toFixed(2)} img/s; ` +
      `min ${Math.min(...times).toFixed(1)}), native ${nat.toFixed(1)} ms, JS-side ${(total - nat).toFixed(1)} ms, ` +
      `${Math.round(faults)} minor faults/forward (${((faults * 4096) / 2 ** 20).toFixed(0)} MiB first-touched)`,
  );
  const rows = [...acc.entries()].sort((a, b) => b[1].ms - a[1].ms);
  for (const [k, e] of rows) {
    const ms = e.ms / iters;
    const gf = e.flops ? ` ${(e.flops / (e.ms / 1000) / 1e9).toFixed(1)} GFLOP/s` : '';
    console.log(
      `  ${k.padEnd(36)} ${ms.toFixed(1).padStart(8)} ms ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${String(e.calls / iters).padStart(4)} calls${gf}`,
    );
  }
}

// What a fresh, never-touched output buffer costs compared with a reused one (page faults +
// kernel zeroing), for a typical ResNet-50 activation (8 x 256 x 56 x 56).
{
  const n = 8 * 256 * 56 * 56;
  const reps = 10;
  let t0 = performance.now();
  for (let i = 0; i < reps; i++) new Float32Array(n).fill(1);
  const fresh = (performance.now() - t0) / reps;
  const buf = new Float32Array(n);
  t0 = performance.now();
  for (let i = 0; i < reps; i++) buf.fill(1);
  const reused = (performance.now() - t0) / reps;
  console.log(
    `\nfill of ${((n * 4) / 2 ** 20).toFixed(0)} MiB: fresh Float32Array ${fresh.toFixed(2)} ms, reused ${reused.toFixed(2)} ms`,
  );
}
