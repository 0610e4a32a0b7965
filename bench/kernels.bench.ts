// Kernel micro-benchmarks (tinybench): every conv algorithm on representative layer shapes,
// forward and both backwards, in GFLOP/s; pooling and batch norm in GB/s; SGEMM in GFLOP/s.
//   npm run bench                      (all rows; FERROCONV_NUM_THREADS sets the threads)
//   npm run bench -- --quick           (fewer iterations)
//   npm run bench -- --sections conv,memory --algos direct   (a subset: sections gemm, conv,
//                                      memory; conv algorithms auto, direct, im2col, fft)
import { Bench } from 'tinybench';
import { info } from '../src/index.js';
import { native } from '../src/native.js';
import { stemBatchNorm, stemPool } from './compare/shapes.js';

const quick = process.argv.includes('--quick');
const time = quick ? 200 : 1000;

/** The comma-separated values after `flag`, or all of `all` when it is absent. */
function listArg(flag: string, all: string[]): string[] {
  const at = process.argv.indexOf(flag);
  if (at < 0) return all;
  const picked = (process.argv[at + 1] ?? '').split(',').filter((v) => v !== '');
  const unknown = picked.filter((v) => !all.includes(v));
  if (picked.length === 0 || unknown.length > 0) {
    throw new Error(`${flag} takes a comma-separated subset of ${all.join(', ')}; got ${process.argv[at + 1]}`);
  }
  return picked;
}
const sections = listArg('--sections', ['gemm', 'conv', 'memory']);
const algos = listArg('--algos', ['auto', 'direct', 'im2col', 'fft']);

interface ConvShape {
  name: string;
  n: number;
  c: number;
  h: number;
  w: number;
  k: number;
  oc: number;
  stride: number;
  pad: number;
  groups: number;
}

const SHAPES: ConvShape[] = [
  { name: 'resnet50 3x3 64', n: 8, c: 64, h: 56, w: 56, k: 3, oc: 64, stride: 1, pad: 1, groups: 1 },
  { name: 'resnet50 1x1 256->64', n: 8, c: 256, h: 56, w: 56, k: 1, oc: 64, stride: 1, pad: 0, groups: 1 },
  { name: 'resnet50 3x3 256 s1 14x14', n: 8, c: 256, h: 14, w: 14, k: 3, oc: 256, stride: 1, pad: 1, groups: 1 },
  { name: 'vgg16 3x3 128', n: 8, c: 128, h: 112, w: 112, k: 3, oc: 128, stride: 1, pad: 1, groups: 1 },
  { name: 'alexnet 11x11 s4 stem', n: 8, c: 3, h: 224, w: 224, k: 11, oc: 64, stride: 4, pad: 2, groups: 1 },
  { name: 'resnet 7x7 s2 stem', n: 8, c: 3, h: 224, w: 224, k: 7, oc: 64, stride: 2, pad: 3, groups: 1 },
  { name: 'googlenet 5x5 32', n: 8, c: 16, h: 28, w: 28, k: 5, oc: 32, stride: 1, pad: 2, groups: 1 },
  { name: 'depthwise 3x3 256', n: 8, c: 256, h: 28, w: 28, k: 3, oc: 256, stride: 1, pad: 1, groups: 256 },
];

function rand(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.37) * 0.5;
  return a;
}

type Row = Record<string, string | number>;
const rows: Row[] = [];

async function measure(name: string, fn: () => void): Promise<number> {
  const bench = new Bench({ time, warmupTime: quick ? 50 : 200 });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0].result as unknown as { latency?: { p50?: number; mean: number }; mean?: number };
  return (r.latency?.p50 ?? r.latency?.mean ?? r.mean ?? NaN) / 1000; // seconds
}

async function convRows(): Promise<void> {
  // --quick leaves out the VGG row (about 30 GFLOP per call at batch 8).
  for (const s of quick ? SHAPES.filter((x) => !x.name.startsWith('vgg')) : SHAPES) {
    const args = {
      inputShape: [s.n, s.c, s.h, s.w],
      weightShape: [s.oc, s.c / s.groups, s.k, s.k],
      stride: [s.stride, s.stride],
      padding: [s.pad, s.pad, s.pad, s.pad],
      dilation: [1, 1],
      groups: s.groups,
    };
    const [oh, ow] = native.conv2dOutputSize(args);
    const x = rand(s.n * s.c * s.h * s.w);
    const w = rand(s.oc * (s.c / s.groups) * s.k * s.k);
    const y = new Float32Array(s.n * s.oc * oh * ow);
    const gy = rand(y.length);
    const gx = new Float32Array(x.length);
    const gw = new Float32Array(w.length);
    const flops = 2 * s.n * s.oc * oh * ow * (s.c / s.groups) * s.k * s.k;
    for (const algo of algos) {
      // FFT on strided or huge shapes is pointless and slow; auto never picks it there.
      if (algo === 'fft' && (s.stride > 1 || s.k < 3)) continue;
      const a = { ...args, algo };
      const tf = await measure(`${s.name} ${algo} fwd`, () => native.conv2dForward(x, w, null, y, a));
      const td = await measure(`${s.name} ${algo} bwd-data`, () => native.conv2dBackwardData(gy, w, gx, a));
      const tw = await measure(`${s.name} ${algo} bwd-weight`, () => native.conv2dBackwardWeight(x, gy, gw, null, a));
      rows.push({
        layer: s.name,
        algo,
        'fwd ms': +(tf * 1e3).toFixed(2),
        'fwd GFLOP/s': +(flops / tf / 1e9).toFixed(1),
        'bwd-data GFLOP/s': +(flops / td / 1e9).toFixed(1),
        'bwd-weight GFLOP/s': +(flops / tw / 1e9).toFixed(1),
      });
      console.error(JSON.stringify(rows.at(-1)));
    }
  }
}

async function memoryRows(): Promise<void> {
  const shape = [8, 64, 112, 112];
  const n = shape.reduce((a, b) => a * b, 1);
  const x = rand(n);
  const pool = stemPool(shape);
  const [oh, ow] = native.pool2dOutputSize(pool);
  const out = new Float32Array(8 * 64 * oh * ow);
  const idx = new Int32Array(out.length);
  const tMax = await measure('maxpool 3x3 s2', () => native.maxPool2dForward(x, out, idx, pool));
  rows.push({
    layer: 'maxpool 3x3 s2 [8,64,112,112]',
    algo: '-',
    'fwd ms': +(tMax * 1e3).toFixed(2),
    'GB/s': +(((n + 2 * out.length) * 4) / tMax / 1e9).toFixed(1),
  });
  const gap = new Float32Array(8 * 64);
  const tGap = await measure('global avg pool', () =>
    native.adaptiveAvgPool2dForward(x, gap, { inputShape: shape, outputSize: [1, 1] }),
  );
  rows.push({
    layer: 'global avgpool [8,64,112,112]',
    algo: '-',
    'fwd ms': +(tGap * 1e3).toFixed(2),
    'GB/s': +((n * 4) / tGap / 1e9).toFixed(1),
  });
  const y = new Float32Array(n);
  const bn = stemBatchNorm(shape);
  const tTrain = await measure('bn train', () => bn.train(x, y));
  // training forward reads x twice (statistics, then normalise) and writes y once
  rows.push({
    layer: 'batchnorm train fwd [8,64,112,112]',
    algo: '-',
    'fwd ms': +(tTrain * 1e3).toFixed(2),
    'GB/s': +((3 * n * 4) / tTrain / 1e9).toFixed(1),
  });
  const tEval = await measure('bn eval', () => bn.eval(x, y));
  rows.push({
    layer: 'batchnorm eval fwd [8,64,112,112]',
    algo: '-',
    'fwd ms': +(tEval * 1e3).toFixed(2),
    'GB/s': +((2 * n * 4) / tEval / 1e9).toFixed(1),
  });
}

async function gemmRows(): Promise<void> {
  for (const n of [256, 512, 1024, 2048]) {
    const a = rand(n * n);
    const b = rand(n * n);
    const c = new Float32Array(n * n);
    const t = await measure(`sgemm ${n}`, () => native.sgemm(false, false, n, n, n, 1, a, b, 0, c));
    rows.push({
      layer: `sgemm ${n}x${n}x${n}`,
      algo: '-',
      'fwd ms': +(t * 1e3).toFixed(2),
      'fwd GFLOP/s': +((2 * n ** 3) / t / 1e9).toFixed(1),
    });
    console.error(JSON.stringify(rows.at(-1)));
  }
}

const i = info();
console.log(`ferroconv ${i.version} kernels bench: ${i.threads} threads, ${i.simd}, node ${i.node}`);
if (sections.includes('gemm')) await gemmRows();
if (sections.includes('conv')) await convRows();
if (sections.includes('memory')) await memoryRows();
console.table(rows);
