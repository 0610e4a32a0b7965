// `npm run bench:compare`: ferroconv next to its peers (PyTorch, onnxruntime-node, tfjs-wasm),
// measured on this machine in one run, with the same thread count everywhere. Prints markdown
// tables and writes bench/results/<date>-<host>.json (raw numbers) and bench/results/latest.md.
//
//   npm run bench:compare                       the default run (about 7 min on an idle 2-core machine)
//   npm run bench:compare -- --quick            a few shapes and models, 1-2 reps: harness check (~2 min)
//   npm run bench:compare -- --full             every conv algorithm on every zoo shape (long)
//   npm run bench:compare -- --threads 4        thread count for every framework (default 2)
//   npm run bench:compare -- --sections conv,gemm,infer,int8,train,memory,mpi   a subset of sections
//   npm run bench:compare -- --spin on|off|auto  peers' spin-waiting threads (auto: off when other
//                                                processes kept the cores busy at the start)
//
// Ratios are peer median / ferroconv median from the same run: > 1 means ferroconv is faster.
// Optional peers come from `npm run bench:peers`; a missing one becomes a row saying so.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { convTuning, info, setNumThreads } from '../src/index.js';
import { native } from '../src/native.js';
import {
  BENCH_DIR,
  CACHE_DIR,
  exportOnnx,
  quantizeWithOrt,
  findOrt,
  findTfjsWasm,
  findTorch,
  ortSessionOptions,
  setSpinning,
  TorchStream,
  type OrtApi,
  type Peer,
  type TfApi,
} from './compare/peers.js';
import { runRowHere, runRowIsolated, type Framework, type RowResult, type RowSpec } from './compare/rows.js';
import {
  convFlops,
  label,
  stemBatchNorm,
  stemPool,
  usedIn,
  ZOO,
  zooConvShapes,
  type ConvShape,
  type ZooName,
} from './compare/shapes.js';
import {
  fmt,
  geomean,
  mdTable,
  ms,
  perSec,
  ratio,
  timeIt,
  type Stat,
  type TableRow,
  type Timing,
} from './compare/timing.js';

const { values: argv } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    quick: { type: 'boolean', default: false },
    full: { type: 'boolean', default: false },
    sections: { type: 'string', default: 'conv,gemm,infer,int8,train,memory,mpi' },
    spin: { type: 'string', default: 'auto' },
    rounds: { type: 'string', default: '2' },
    row: { type: 'string' },
  },
  strict: true,
});

const threads = Number(argv.threads);
if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
  throw new Error(`--threads: expected an integer in 1..1024, got ${argv.threads}`);
}
// Before any kernel runs: the pool reads it when first built; setNumThreads makes sure.
process.env.FERROCONV_NUM_THREADS = String(threads);
setNumThreads(threads);

if (argv.row !== undefined) {
  // Child mode: one end-to-end row, one JSON line out.
  const res = await runRowHere(JSON.parse(argv.row) as RowSpec).catch((e: Error): RowResult => ({ error: e.message }));
  process.stdout.write(`${JSON.stringify(res)}\n`);
  process.exit(0);
}

const quick = argv.quick;
/** Rounds of each end-to-end row (its frameworks alternating, a fresh process per cell). */
const rounds = quick ? 1 : Number(argv.rounds);
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20)
  throw new Error(`--rounds: expected an integer in 1..20, got ${argv.rounds}`);
const full = argv.full;
const sections = new Set(argv.sections.split(',').map((s) => s.trim()));
for (const s of sections) {
  if (!['conv', 'gemm', 'infer', 'int8', 'train', 'memory', 'mpi'].includes(s))
    throw new Error(`--sections: unknown section '${s}'`);
}

/** Repetition policy per kind of measurement (see timing.ts); --quick runs each thing twice. */
const QUICK: Timing = { warmup: 1, minReps: 2, maxReps: 2, minSeconds: 0 };
const TIMING = {
  conv: quick ? QUICK : { warmup: 1, minReps: 3, maxReps: 15, minSeconds: 0.1 },
  algo: quick ? { ...QUICK, slowSeconds: 1 } : { warmup: 1, minReps: 3, maxReps: 15, minSeconds: 0.1, slowSeconds: 1 },
  gemm: quick ? QUICK : { warmup: 2, minReps: 5, maxReps: 30, minSeconds: 0.5 },
  memory: quick ? QUICK : { warmup: 2, minReps: 5, maxReps: 30, minSeconds: 0.3 },
  e2e: quick ? QUICK : { warmup: 2, warmupSeconds: 1, minReps: 5, maxReps: 30, minSeconds: 2 },
} satisfies Record<string, Timing>;

if (!['auto', 'on', 'off'].includes(argv.spin)) throw new Error(`--spin: expected auto, on or off, got '${argv.spin}'`);
/**
 * Cores' worth of CPU other processes used over `ms` while this one slept, from /proc/stat (null
 * where there is none). The load average is no guide: it decays over minutes, so a build that
 * just finished reads as a busy machine, and turning the peers' spinning off then slows torch's
 * small convs up to 1.9x (768->128 1x1 @7 at batch 8: 0.20 ms spinning, 0.37 ms passive).
 */
function busyCores(ms: number): number | null {
  const sample = (): number[] | null => {
    try {
      const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
      return [cpu.reduce((a, b) => a + b, 0), cpu[3] + (cpu[4] ?? 0)]; // total, idle + iowait
    } catch {
      return null;
    }
  };
  const a = sample();
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  const b = sample();
  if (!a || !b || b[0] === a[0]) return null;
  return ((b[0] - a[0] - (b[1] - a[1])) / (b[0] - a[0])) * cpus().length;
}
const busyNow = busyCores(2000);
const busyAtStart = busyNow === null ? loadavg()[0] > 1 : busyNow > 0.5;
const spin = argv.spin === 'on' || (argv.spin === 'auto' && !busyAtStart);
setSpinning(spin);

const started = Date.now();
const elapsed = (): string => `${((Date.now() - started) / 1000).toFixed(0)}s`;
const log = (msg: string): void => void process.stderr.write(`[${elapsed()}] ${msg}\n`);
const loads: { at: string; load1: number }[] = [];
const noteLoad = (at: string): void => void loads.push({ at, load1: +loadavg()[0].toFixed(2) });
noteLoad('start');

const md: string[] = [];
/** Headline numbers, gathered as the sections run and printed at the end. */
const headline: string[] = [];
/** Prints a block of markdown and keeps it for latest.md. */
function emit(block: string): void {
  md.push(block);
  process.stdout.write(`${block}\n`);
}

// ---------------------------------------------------------------------------------------------
// Machine, peers and ceilings

const fi = info();
const cpuModel = cpus()[0]?.model ?? 'unknown CPU';
const [torchPeer, tfPeer] = await Promise.all([findTorch(), findTfjsWasm(threads)]);
const ortPeer = findOrt();
if (!torchPeer.api && ortPeer.api)
  ortPeer.notes.push('its ONNX models are exported by PyTorch, which is missing: no ORT rows');
const peers: Peer<unknown>[] = [torchPeer, ortPeer, tfPeer];

/**
 * A machine ceiling from the kernel crate's `peak` probe (kept out of the addon): the FMA peak
 * in GFLOP/s or the triad bandwidth in GB/s on `threads` threads.
 */
function probe(kind: 'fma' | 'bandwidth', ...args: number[]): number {
  const out = execFileSync(
    'cargo',
    [
      'run',
      '--release',
      '--quiet',
      '-p',
      'ferroconv-kernels',
      '--features',
      'probes',
      '--example',
      'peak',
      '--',
      kind,
      ...args.map(String),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const v = Number(out.trim());
  if (!Number.isFinite(v) || v <= 0) throw new Error(`bench: the ${kind} probe printed '${out.trim()}'`);
  return v;
}

log('measuring the FMA peak and memory bandwidth (building the probe on first use)');
// Measured again right before the sections that divide by them; the best reading is the ceiling
// (other processes can only pull a reading down).
const peakReadings = [probe('fma', threads, quick ? 300 : 1500)];
const bandwidthReadings = [probe('bandwidth', threads)];
let fmaPeak = peakReadings[0];
let bandwidth = bandwidthReadings[0];

const results: Record<string, unknown> = {
  meta: {
    date: new Date().toISOString(),
    host: hostname(),
    cpu: cpuModel,
    cores: cpus().length,
    threads,
    mode: quick ? 'quick' : full ? 'full' : 'default',
    peersSpin: spin,
    busyCoresAtStart: busyNow,
    node: process.versions.node,
    ferroconv: { version: fi.version, simd: fi.simd, threads: fi.threads },
    timing: TIMING,
  },
  peers: peers.map((p) => ({ name: p.name, version: p.version, error: p.error, notes: p.notes })),
  ceilings: { fmaPeakGflopsReadings: peakReadings, triadBandwidthGbsReadings: bandwidthReadings },
};

const date = new Date().toISOString().slice(0, 10);
emit(`# ferroconv vs peers: ${date} on ${hostname()}${quick ? ' (--quick)' : full ? ' (--full)' : ''}\n`);
emit(
  [
    `- Machine: ${cpuModel}, ${cpus().length} cores; **${threads} threads for every framework** ` +
      `(ferroconv setNumThreads, torch set_num_threads + OMP/MKL/OPENBLAS_NUM_THREADS, ORT intraOpNumThreads, tfjs-wasm setThreadsCount).`,
    `- ferroconv ${fi.version} (${fi.simd}), node ${process.versions.node}.`,
    spin
      ? `- Peers' thread pools spin-wait as they do by default (--spin ${argv.spin}).`
      : `- Peers' spin-waiting is off (torch OMP_WAIT_POLICY=PASSIVE, ORT allow_spinning=0): ` +
        `${argv.spin === 'auto' ? `the machine was already busy (other processes used ${busyNow === null ? `a load average of ${loads[0].load1}` : `${busyNow.toFixed(2)} cores`} at the start), and spinning threads fighting other processes for the cores slowed torch up to 7x in trials; **passive peers are slower on small shapes** (torch's 1x1 convs @7x7 up to 1.9x), so ratios from such a run flatter ferroconv` : '--spin off'}.`,
    ...peers.map(
      (p) =>
        `- ${p.name}: ${p.api ? p.version : `**missing**: ${p.error}`}${p.notes.length ? ` (${p.notes.join('; ')})` : ''}`,
    ),
    `- Measured ceilings at the start: FMA peak ${fmt(fmaPeak)} GFLOP/s, triad memory bandwidth ${fmt(bandwidth)} GB/s ` +
      `(${threads} threads; measured again before the SGEMM and memory sections, which use the best reading).`,
    `- Times are medians of several repetitions after warm-up; ratio = peer time / ferroconv time, so **> 1 means ferroconv is faster**.`,
    `- End-to-end rows (inference, int8, training): each cell is a fresh process, warmed up for at least ${TIMING.e2e.warmup} ` +
      `calls and ${TIMING.e2e.warmupSeconds ?? 0} s, then timed over at least ${TIMING.e2e.minReps} calls and ${TIMING.e2e.minSeconds} s ` +
      `(at most ${TIMING.e2e.maxReps}). Every framework's cell runs ${rounds} time(s), the frameworks taking turns, and keeps its ` +
      `best round's median (stall and RSS: the worst round); each round's median is in the JSON (\`roundMedians\`).`,
    '',
  ].join('\n'),
);

// ---------------------------------------------------------------------------------------------
// Helpers

function det(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.37 + seed) * 0.5;
  return a;
}

type Pass = 'fwd' | 'bwdData' | 'bwdWeight';
type Algo = 'auto' | 'direct' | 'im2col' | 'fft' | 'winograd';
type PassStats = Partial<Record<Pass, Stat>>;

const BATCH = 8;

/** Shapes Winograd F(4x4, 3x3) computes itself: 3x3, stride 1, dilation 1. */
function isWinogradShape(s: ConvShape): boolean {
  return s.kh === 3 && s.kw === 3 && s.stride.every((v) => v === 1) && s.dilation.every((v) => v === 1);
}
/** Without --full, direct and fft skip shapes with more work than this (at batch 8). */
const SLOW_ALGO_MAX_FLOPS = 2.5e9;

/** How conv 'auto' chose in this run: tuned (and how many choices left the fixed rules) or fixed rules. */
function tuningNote(): string {
  if (info().deterministicAlgos) return ' (fixed rules: FERROCONV_DETERMINISTIC=1)';
  const tuned = convTuning();
  const moved = tuned.filter((t) => t.algo !== t.rule).length;
  return (
    `, tuned per shape in each shape's warm-up call (${tuned.length} shape-pass choices timed, ` +
    `${moved} of them away from the fixed rules' pick)`
  );
}

/**
 * Two rounds' timings of one conv shape's passes as one: per pass, the round with the lower
 * median. Other fields (a peer's error, its id) come from the later round.
 */
function fasterPasses<T extends Record<string, unknown>>(prev: T | undefined, next: T): T {
  if (!prev) return next;
  const out: Record<string, unknown> = { ...next };
  for (const pass of ['fwd', 'bwdData', 'bwdWeight']) {
    const [a, b] = [prev[pass] as Stat | undefined, next[pass] as Stat | undefined];
    if (a && typeof a.median === 'number' && (!b || typeof b.median !== 'number' || a.median < b.median)) out[pass] = a;
  }
  return out as T;
}

/** ferroconv's three passes of one conv shape with one algorithm. */
async function ferroConv(s: ConvShape, algo: Algo, passes: Pass[], timing: Timing): Promise<PassStats> {
  const args = {
    inputShape: [BATCH, s.c, s.h, s.w],
    weightShape: [s.oc, s.c / s.groups, s.kh, s.kw],
    stride: s.stride,
    padding: s.padding,
    dilation: s.dilation,
    groups: s.groups,
    algo,
  };
  const x = det(BATCH * s.c * s.h * s.w, 1);
  const w = det(s.oc * (s.c / s.groups) * s.kh * s.kw, 2).map((v) => v * 0.1);
  const y = new Float32Array(BATCH * s.oc * s.outH * s.outW);
  const out: PassStats = {};
  if (passes.includes('fwd')) out.fwd = await timeIt(() => native.conv2dForward(x, w, null, y, args), timing);
  const gy = det(y.length, 3);
  if (passes.includes('bwdData')) {
    const gx = new Float32Array(x.length);
    out.bwdData = await timeIt(() => native.conv2dBackwardData(gy, w, gx, args), timing);
  }
  if (passes.includes('bwdWeight')) {
    const gw = new Float32Array(w.length);
    out.bwdWeight = await timeIt(() => native.conv2dBackwardWeight(x, gy, gw, null, args), timing);
  }
  return out;
}

const convJob = (s: ConvShape): Record<string, unknown> => ({
  n: BATCH,
  c: s.c,
  h: s.h,
  w: s.w,
  oc: s.oc,
  kh: s.kh,
  kw: s.kw,
  stride: s.stride,
  padding: s.padding,
  dilation: s.dilation,
  groups: s.groups,
});
const onnxConvFile = (s: ConvShape): string => `conv_n${BATCH}_${s.key}.onnx`;
const onnxDir = join(CACHE_DIR, 'onnx');

/**
 * Shapes every algorithm runs on in the default mode: one per kind of layer (stems, 1x1, 3x3 at
 * several widths and sizes, AlexNet's 5x5, GoogLeNet's narrow 3x3, DenseNet's growth conv).
 */
const REPRESENTATIVE = [
  'resnet50:conv1',
  'resnet50:layer1.0.conv2',
  'alexnet:features.0',
  'resnet50:layer3.1.conv2',
  'resnet50:layer1.1.conv1',
  'alexnet:features.3',
  'vgg16:features.24',
  'googlenet:inception3a.branch3.1.conv',
  'densenet121:features.denseblock1.denselayer1.conv2',
  'densenet121:features.denseblock3.denselayer10.conv1',
];

function representative(shapes: ConvShape[]): ConvShape[] {
  const out: ConvShape[] = [];
  for (const use of REPRESENTATIVE) {
    const s = shapes.find((x) => x.uses.includes(use));
    if (s && !out.includes(s)) out.push(s);
  }
  return out;
}

const statOf = (r: Record<string, unknown> | undefined, key: string): Stat | undefined =>
  r && typeof r[key] === 'object' ? (r[key] as Stat) : undefined;
const r2 = (x: number | undefined): string => fmt(x, 3);
const missing = (p: Peer<unknown>): string => (p.api ? '' : 'missing');
/** One row per absent peer, saying so and how to install it. */
const missingRows = (col: string, ...ps: Peer<unknown>[]): TableRow[] =>
  ps.filter((p) => !p.api).map((p) => ({ [col]: `_${p.name} missing: ${p.error}_` }));

// ---------------------------------------------------------------------------------------------
// 1. Conv layers

async function convSection(): Promise<void> {
  const zoo: readonly ZooName[] = quick ? ['alexnet', 'resnet50'] : ZOO;
  log(`conv: deriving the distinct conv shapes of ${zoo.join(', ')}`);
  const all = zooConvShapes(zoo, log);
  const rep = representative(all);
  const table = quick ? rep.slice(0, 4) : all;
  const algoShapes = full ? all : quick ? rep.slice(0, 2) : rep;
  log(`conv: ${all.length} distinct shapes; ${table.length} in the main table, ${algoShapes.length} per algorithm`);

  // Single-conv ONNX models first (cached), so the timing loop below does nothing else.
  const ortOk = !!(ortPeer.api && torchPeer.api);
  if (ortOk) {
    log(`conv: exporting single-conv ONNX models (cached in ${onnxDir})`);
    const exp = await exportOnnx({
      dir: onnxDir,
      threads,
      models: [],
      convs: table.map((s) => ({ file: onnxConvFile(s), ...convJob(s) })),
    });
    if ('error' in exp) log(`conv: ${exp.error}`);
  }

  // Shape by shape, every framework in turn: the machine's load drifts, and this keeps the
  // numbers that are divided by each other close in time.
  const torch = torchPeer.api ? new TorchStream(threads, TIMING.conv) : undefined;
  // Python importing torch takes seconds of CPU: the first shapes' timings must not share the
  // cores with it.
  await torch?.ready;
  const ferro = new Map<string, Partial<Record<Algo, PassStats>>>();
  const torchRes = new Map<string, Record<string, unknown>>();
  const ortStats = new Map<string, Stat | string>();
  const tfStats = new Map<string, Stat>();
  const tfShapes = rep.filter((x) => x.groups === 1);
  const ort = ortPeer.api as OrtApi | undefined;
  const tf = tfPeer.api as TfApi | undefined;
  for (const [i, s] of table.entries()) {
    // `rounds` rounds, the frameworks taking turns, each keeping its faster round per pass: this
    // host's load comes in bursts of seconds, and one round let a burst halve either side's
    // number for a shape (544->128 1x1 @14 input gradient: 0.96 ms in one run, 0.55 in the next).
    for (let round = 0; round < rounds; round++) {
      const mine = await ferroConv(s, 'auto', ['fwd', 'bwdData', 'bwdWeight'], TIMING.conv);
      ferro.set(s.key, { auto: fasterPasses(ferro.get(s.key)?.auto, mine) });
      if (torch) {
        const theirs = await torch.run({ id: s.key, kind: 'conv', ...convJob(s) });
        torchRes.set(s.key, fasterPasses(torchRes.get(s.key), theirs));
      }
      if (ort && ortOk) {
        try {
          const session = await ort.InferenceSession.create(join(onnxDir, onnxConvFile(s)), ortSessionOptions(threads));
          const dims = [BATCH, s.c, s.h, s.w];
          const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', det(BATCH * s.c * s.h * s.w, 1), dims) };
          const stat = await timeIt(() => session.run(feeds), TIMING.conv);
          await session.release();
          const prev = ortStats.get(s.key);
          ortStats.set(s.key, typeof prev === 'object' && prev.median < stat.median ? prev : stat);
        } catch (e) {
          ortStats.set(s.key, (e as Error).message.split('\n')[0]);
        }
      }
    }
    // tfjs-wasm is single-threaded in Node and slow: only the representative shapes.
    if (tf && tfShapes.includes(s)) {
      const x = tf.randomNormal([BATCH, s.h, s.w, s.c]);
      const f = tf.randomNormal([s.kh, s.kw, s.c, s.oc]);
      const pad = [
        [0, 0],
        [s.padding[0], s.padding[1]],
        [s.padding[2], s.padding[3]],
        [0, 0],
      ];
      tfStats.set(
        s.key,
        await timeIt(() => {
          const y = tf.conv2d(x, f, s.stride, pad, 'NHWC', s.dilation);
          y.dataSync();
          y.dispose();
        }, TIMING.conv),
      );
      x.dispose();
      f.dispose();
    }
    if ((i + 1) % 10 === 0 || i === table.length - 1) log(`conv: ${i + 1}/${table.length} shapes`);
  }
  // Every algorithm back to back, 'auto' and PyTorch again included, so the rows of this table
  // are compared at one moment's load rather than against numbers taken minutes earlier.
  const algoRuns = new Map<string, Partial<Record<Algo, PassStats>>>();
  const algoTorch = new Map<string, Record<string, unknown>>();
  for (const s of algoShapes) {
    const entry: Partial<Record<Algo, PassStats>> = {};
    for (const algo of ['auto', 'direct', 'im2col', 'fft', 'winograd'] as const) {
      if (algo === 'fft' && (s.stride[0] > 1 || s.stride[1] > 1)) continue;
      // Winograd is F(4x4, 3x3): elsewhere it would just run im2col again.
      if (algo === 'winograd' && !isWinogradShape(s)) continue;
      // direct and fft run at ~1 GFLOP/s on big layers: minutes per shape. --full runs them anyway.
      if (!full && (algo === 'direct' || algo === 'fft') && convFlops(s, BATCH) > SLOW_ALGO_MAX_FLOPS) continue;
      entry[algo] = await ferroConv(s, algo, ['fwd', 'bwdData', 'bwdWeight'], TIMING.algo);
    }
    algoRuns.set(s.key, entry);
    if (torch) algoTorch.set(s.key, await torch.run({ id: s.key, kind: 'conv', ...convJob(s) }));
    log(`conv: every algorithm on ${label(s)}`);
  }
  torch?.close();

  // Tables.
  const fwdRows: TableRow[] = [];
  const bwdRows: TableRow[] = [];
  const ratios = {
    torchFwd: [] as (number | undefined)[],
    ortFwd: [] as (number | undefined)[],
    tfFwd: [] as (number | undefined)[],
    torchData: [] as (number | undefined)[],
    torchWeight: [] as (number | undefined)[],
  };
  const raw: unknown[] = [];
  for (const s of table) {
    const gflop = convFlops(s, BATCH) / 1e9;
    const f = ferro.get(s.key)?.auto ?? {};
    const t = torchRes.get(s.key);
    const o = ortStats.get(s.key);
    const ortStat = typeof o === 'object' ? o : undefined;
    const tfs = tfStats.get(s.key);
    const rt = ratio(f.fwd, statOf(t, 'fwd'));
    const ro = ratio(f.fwd, ortStat);
    const rf = ratio(f.fwd, tfs);
    const rd = ratio(f.bwdData, statOf(t, 'bwdData'));
    const rw = ratio(f.bwdWeight, statOf(t, 'bwdWeight'));
    ratios.torchFwd.push(rt);
    ratios.ortFwd.push(ro);
    ratios.tfFwd.push(rf);
    ratios.torchData.push(rd);
    ratios.torchWeight.push(rw);
    fwdRows.push({
      shape: label(s),
      'used in': usedIn(s),
      GFLOP: fmt(gflop),
      'ferroconv ms': ms(f.fwd),
      'GFLOP/s': fmt(perSec(gflop, f.fwd)),
      'torch ms': t?.error ? 'error' : ms(statOf(t, 'fwd')) || missing(torchPeer),
      '×torch': r2(rt),
      'ORT ms': typeof o === 'string' ? 'error' : ms(ortStat) || missing(ortPeer),
      '×ORT': r2(ro),
      'tfjs-wasm ms': ms(tfs) || (tfPeer.api ? '' : 'missing'),
      '×tfjs': r2(rf),
    });
    bwdRows.push({
      shape: label(s),
      'data ms': ms(f.bwdData),
      'data GFLOP/s': fmt(perSec(gflop, f.bwdData)),
      'torch data ms': ms(statOf(t, 'bwdData')) || missing(torchPeer),
      '×torch data': r2(rd),
      'weight ms': ms(f.bwdWeight),
      'weight GFLOP/s': fmt(perSec(gflop, f.bwdWeight)),
      'torch weight ms': ms(statOf(t, 'bwdWeight')) || missing(torchPeer),
      '×torch weight': r2(rw),
    });
    raw.push({
      shape: s,
      label: label(s),
      batch: BATCH,
      gflop,
      ferroconv: ferro.get(s.key),
      torch: t,
      ort: o,
      tfjsWasm: tfs,
    });
  }
  const gm = {
    torchFwd: geomean(ratios.torchFwd),
    ortFwd: geomean(ratios.ortFwd),
    tfFwd: geomean(ratios.tfFwd),
    torchData: geomean(ratios.torchData),
    torchWeight: geomean(ratios.torchWeight),
  };
  fwdRows.push({
    shape: '**geomean of ratios**',
    '×torch': r2(gm.torchFwd),
    '×ORT': r2(gm.ortFwd),
    '×tfjs': r2(gm.tfFwd),
  });
  bwdRows.push({
    shape: '**geomean of ratios**',
    '×torch data': r2(gm.torchData),
    '×torch weight': r2(gm.torchWeight),
  });
  fwdRows.push(...missingRows('shape', torchPeer, ortPeer, tfPeer));
  bwdRows.push(...missingRows('shape', torchPeer));

  // Per-algorithm table on the representative shapes.
  const algoRows: TableRow[] = [];
  const algoRatios: Record<string, Record<Pass, (number | undefined)[]>> = {};
  for (const s of algoShapes) {
    const gflop = convFlops(s, BATCH) / 1e9;
    const t = algoTorch.get(s.key);
    for (const algo of ['auto', 'direct', 'im2col', 'fft', 'winograd'] as const) {
      const st = algoRuns.get(s.key)?.[algo];
      if (!st) continue;
      algoRatios[algo] ??= { fwd: [], bwdData: [], bwdWeight: [] };
      const rr = algoRatios[algo];
      const row: TableRow = { shape: label(s), algo };
      for (const [pass, name] of [
        ['fwd', 'fwd'],
        ['bwdData', 'data'],
        ['bwdWeight', 'weight'],
      ] as const) {
        const q = ratio(st[pass], statOf(t, pass));
        rr[pass].push(q);
        row[`${name} GFLOP/s`] = fmt(perSec(gflop, st[pass]));
        row[`×torch ${name}`] = r2(q);
      }
      algoRows.push(row);
    }
  }
  for (const [algo, rr] of Object.entries(algoRatios)) {
    algoRows.push({
      shape: '**geomean of ratios**',
      algo,
      '×torch fwd': r2(geomean(rr.fwd)),
      '×torch data': r2(geomean(rr.bwdData)),
      '×torch weight': r2(geomean(rr.bwdWeight)),
    });
  }
  algoRows.push(...missingRows('shape', torchPeer));

  const summary: TableRow[] = [
    {
      pass: 'forward',
      '×torch': r2(gm.torchFwd),
      '×ORT': r2(gm.ortFwd),
      '×tfjs-wasm': r2(gm.tfFwd) + (tfStats.size ? ` (${tfStats.size} shapes)` : ''),
    },
    { pass: 'backward-data', '×torch': r2(gm.torchData), '×ORT': '', '×tfjs-wasm': '' },
    { pass: 'backward-weight', '×torch': r2(gm.torchWeight), '×ORT': '', '×tfjs-wasm': '' },
  ];
  emit(
    `## 1. Conv layers (batch ${BATCH})\n\n` +
      `${all.length} distinct conv shapes of ${zoo.join(', ')} (read from the zoo models' Conv2d layers on a ` +
      `[1, 3, 224, 224] forward), run at batch ${BATCH} without bias${quick ? `; --quick keeps ${table.length}` : ''}. ` +
      `ferroconv uses algo 'auto'${tuningNote()}. PyTorch: F.conv2d and aten::convolution_backward (one gradient at a time); ` +
      `ORT: a single-Conv ONNX model per shape; tfjs-wasm: tf.conv2d in NHWC on ${tfStats.size} representative shapes. ` +
      `GFLOP counts 2 x multiply-adds; the backward passes do the same work as the forward. ` +
      `Each shape runs ${rounds} round(s), the frameworks taking turns, and each keeps its faster round per pass.\n\n` +
      `Geometric means of the ratios:\n\n${mdTable(summary)}\n### Forward\n\n${mdTable(fwdRows)}\n` +
      `### Backward (data and weight) vs PyTorch\n\n${mdTable(bwdRows)}\n` +
      `### Every algorithm on ${algoShapes.length} representative shapes\n\n` +
      `FFT is skipped for strided convs${full ? '' : `, direct and FFT for shapes over ${SLOW_ALGO_MAX_FLOPS / 1e9} GFLOP (--full runs them)`}. 'auto' picks direct for depthwise convs, Winograd for dense 3x3 stride-1 layers where it measured faster (64+ channels, enough tiles), im2col otherwise. An algorithm whose first ` +
      `call takes over a second is timed on that one call. Each shape's algorithms and PyTorch are measured back to back ` +
      `(again, apart from the tables above), so compare within a shape.\n\n${mdTable(algoRows)}`,
  );
  headline.push(
    `Conv layers, geomean of ratios over ${table.length} shapes: forward ${r2(gm.torchFwd)}x vs PyTorch, ${r2(gm.ortFwd)}x vs ORT` +
      `${tfStats.size ? `, ${r2(gm.tfFwd)}x vs tfjs-wasm (${tfStats.size} shapes)` : ''}; backward-data ${r2(gm.torchData)}x and ` +
      `backward-weight ${r2(gm.torchWeight)}x vs PyTorch.`,
  );
  results.conv = {
    batch: BATCH,
    distinctShapes: all.length,
    geomean: gm,
    rows: raw,
    algorithms: algoShapes.map((s) => ({
      key: s.key,
      label: label(s),
      ferroconv: algoRuns.get(s.key),
      torch: algoTorch.get(s.key),
    })),
    // What `auto` kept for each shape and pass, with every candidate's time: a row far off its
    // neighbours can be read against the choice made at its first call.
    tuning: convTuning(),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. SGEMM

async function gemmSection(): Promise<void> {
  peakReadings.push(probe('fma', threads, quick ? 300 : 1500));
  fmaPeak = Math.max(...peakReadings);
  const sizes = quick ? [256, 512] : [256, 512, 1024, 2048];
  const ferro = new Map<number, Stat>();
  const torchRes = new Map<number, Record<string, unknown>>();
  const torch = torchPeer.api ? new TorchStream(threads, TIMING.gemm) : undefined;
  await torch?.ready; // (as in the conv section)
  for (const n of sizes) {
    const a = det(n * n, 1);
    const b = det(n * n, 2);
    const c = new Float32Array(n * n);
    ferro.set(n, await timeIt(() => native.sgemm(false, false, n, n, n, 1, a, b, 0, c), TIMING.gemm));
    if (torch) torchRes.set(n, await torch.run({ id: `gemm${n}`, kind: 'gemm', n }));
  }
  const blas = (await torch?.ready)?.blas ?? '';
  torch?.close();
  log('gemm: done');
  const rows: TableRow[] = [];
  const raw: unknown[] = [];
  for (const n of sizes) {
    const gflop = (2 * n ** 3) / 1e9;
    const f = ferro.get(n);
    const t = statOf(torchRes.get(n), 'mm');
    const fg = perSec(gflop, f);
    const tg = perSec(gflop, t);
    rows.push({
      n,
      'ferroconv ms': ms(f),
      'GFLOP/s': fmt(fg),
      '% FMA peak': fmt(fg && (100 * fg) / fmaPeak),
      'torch.mm ms': ms(t) || missing(torchPeer),
      'torch GFLOP/s': fmt(tg),
      'torch % peak': fmt(tg && (100 * tg) / fmaPeak),
      '×torch': r2(ratio(f, t)),
    });
    raw.push({
      n,
      gflop,
      ferroconv: f,
      torch: t,
      ferroPctPeak: fg && (100 * fg) / fmaPeak,
      torchPctPeak: tg && (100 * tg) / fmaPeak,
    });
  }
  rows.push(...missingRows('n', torchPeer));
  emit(
    `## 2. SGEMM (square, row-major C = A B)\n\n` +
      `FMA peak measured by this run: **${fmt(fmaPeak)} GFLOP/s** on ${threads} threads (10 independent FMA chains per thread, ` +
      `512-bit at the AVX-512 level and 256-bit at AVX2+FMA; best of ${peakReadings.map((x) => fmt(x)).join(', ')}). ` +
      `torch.mm runs on ${blas || 'its BLAS'} (Debian's libopenblas0-pthread).\n\n${mdTable(rows)}`,
  );
  const g1024 = sizes.includes(1024) ? 1024 : sizes[sizes.length - 1];
  const fg1024 = perSec((2 * g1024 ** 3) / 1e9, ferro.get(g1024));
  const tg1024 = perSec((2 * g1024 ** 3) / 1e9, statOf(torchRes.get(g1024), 'mm'));
  headline.push(
    `SGEMM ${g1024}: ${fmt(fg1024)} GFLOP/s = ${fmt(fg1024 && (100 * fg1024) / fmaPeak)}% of the measured FMA peak ` +
      `(${fmt(fmaPeak)} GFLOP/s)${tg1024 ? `; torch.mm ${fmt(tg1024)} GFLOP/s = ${fmt((100 * tg1024) / fmaPeak)}%` : ''}.`,
  );
  results.gemm = { fmaPeakGflops: fmaPeak, blas, rows: raw };
}

// ---------------------------------------------------------------------------------------------
// 3 + 4. End-to-end rows (each in a fresh process) and 5. their peak RSS

/** A row's results per framework; 'plan' is ferroconv's predict() (a compiled plan) for inference. */
type Column = Framework | 'plan';

interface E2eRow {
  kind: 'infer' | 'train';
  model: string;
  batch: number;
  byFw: Partial<Record<Column, RowResult>>;
}
const e2eRows: E2eRow[] = [];

async function e2e(
  kind: 'infer' | 'train',
  model: string,
  batch: number,
  fws: Framework[],
  onnx?: string,
): Promise<E2eRow> {
  const row: E2eRow = { kind, model, batch, byFw: {} };
  const columns: Column[] = fws.includes('ferroconv') ? ['plan', ...fws] : fws;
  // Each framework's cell runs `rounds` times, the frameworks taking turns, and keeps its best
  // round (lowest median): a neighbour's burst of load on this shared machine then slows one
  // round of a framework rather than its only one. Stall and peak RSS keep their worst round.
  // The eager column is not in the ratios and runs once.
  for (let round = 0; round < rounds; round++) {
    for (const col of columns) {
      const fw: Framework = col === 'plan' ? 'ferroconv' : col;
      if (fw === 'torch' && !torchPeer.api) continue;
      if (fw === 'ort' && !onnx) continue;
      if (col === 'ferroconv' && round > 0) continue;
      const mode = col === 'plan' ? 'plan' : 'eager';
      const spec: RowSpec = { fw, kind, model, batch, threads, timing: TIMING.e2e, onnx, spin, mode };
      const r = await runRowIsolated(spec);
      row.byFw[col] = bestRound(row.byFw[col], r);
      const stall = r.maxStallMs === undefined ? '' : `, max stall ${fmt(r.maxStallMs)} ms`;
      const planned = r.planned === undefined || r.planned === true ? '' : ` (eager: ${r.planned})`;
      log(
        `${kind} ${model} b${batch} ${col}${rounds > 1 ? ` (round ${round + 1})` : ''}: ${r.error ?? `${fmt(r.step && batch / r.step.median)} img/s, ${fmt((r.maxRssKb ?? 0) / 1024)} MB${stall}${planned}`}`,
      );
    }
  }
  e2eRows.push(row);
  return row;
}

/**
 * Two rounds of one cell as one result: the faster round's timing (lowest median), the worst
 * stall, first-call stall and peak RSS of either, every round's median kept in `roundMedians`.
 * An error stands only when no round succeeded.
 */
function bestRound(prev: RowResult | undefined, next: RowResult): RowResult {
  if (!prev || (prev.error && !next.error)) return { ...next, roundMedians: next.step ? [next.step.median] : [] };
  if (next.error || !next.step) return prev;
  const faster = !prev.step || next.step.median < prev.step.median ? next : prev;
  const worst = (a?: number, b?: number) => (a === undefined ? b : b === undefined ? a : Math.max(a, b));
  return {
    ...faster,
    maxStallMs: worst(prev.maxStallMs, next.maxStallMs),
    firstStallMs: worst(prev.firstStallMs, next.firstStallMs),
    maxRssKb: worst(prev.maxRssKb, next.maxRssKb),
    roundMedians: [...(prev.roundMedians ?? []), next.step.median],
  };
}

const imgs = (r: E2eRow, fw: Column): number | undefined => {
  const x = r.byFw[fw];
  return x?.step ? r.batch / x.step.median : undefined;
};
/** Max event-loop stall of a row's timed calls, in ms. */
const cellStall = (r: E2eRow, fw: Column): string => fmt(r.byFw[fw]?.maxStallMs);
const cellImgs = (r: E2eRow, fw: Column, peer?: Peer<unknown>, noRow = ''): string => {
  const x = r.byFw[fw];
  if (x?.error) return 'error';
  if (!x) return peer && !peer.api ? 'missing' : noRow;
  return fmt(imgs(r, fw));
};

async function inferSection(): Promise<void> {
  const zoo: readonly ZooName[] = quick ? ['alexnet', 'resnet50'] : ZOO;
  const batches = [1, 8];
  const onnxFiles = new Map<string, string>();
  if (ortPeer.api && torchPeer.api) {
    log('infer: exporting the zoo to ONNX (cached)');
    const exp = await exportOnnx({
      dir: onnxDir,
      threads,
      convs: [],
      models: zoo.map((m) => ({ file: `${m}.onnx`, model: m })),
    });
    if ('error' in exp) log(`infer: ${exp.error}`);
    else
      for (const m of zoo)
        if (![...exp.failed.map((f) => f.file)].includes(`${m}.onnx`)) onnxFiles.set(m, join(onnxDir, `${m}.onnx`));
  }
  const rows: TableRow[] = [];
  const rt: (number | undefined)[] = [];
  const ro: (number | undefined)[] = [];
  for (const model of zoo) {
    for (const batch of batches) {
      const r = await e2e('infer', model, batch, ['ferroconv', 'torch', 'ort'], onnxFiles.get(model));
      // The ratios use predict() (the planned path users get).
      const f = imgs(r, 'plan');
      const qt = f && imgs(r, 'torch') ? f / imgs(r, 'torch')! : undefined;
      const qo = f && imgs(r, 'ort') ? f / imgs(r, 'ort')! : undefined;
      rt.push(qt);
      ro.push(qo);
      const planned = r.byFw.plan?.planned;
      rows.push({
        model,
        batch,
        'predict img/s': cellImgs(r, 'plan') + (planned === true || planned === undefined ? '' : ' (eager)'),
        'stall ms': cellStall(r, 'plan'),
        'first-call stall ms': fmt(r.byFw.plan?.firstStallMs),
        'eager img/s': cellImgs(r, 'ferroconv'),
        'eager stall ms': cellStall(r, 'ferroconv'),
        'torch img/s': cellImgs(r, 'torch', torchPeer),
        'ORT img/s': cellImgs(r, 'ort', ortPeer, 'no model'),
        '×torch': r2(qt),
        '×ORT': r2(qo),
      });
    }
  }
  rows.push({ model: '**geomean of ratios**', '×torch': r2(geomean(rt)), '×ORT': r2(geomean(ro)) });
  rows.push(...missingRows('model', torchPeer, ortPeer));
  emit(
    `## 3. Inference (224x224, images/s)\n\n` +
      `ferroconv: zoo model, \`predict(x)\` (a compiled plan run off the JavaScript thread; the ratios use it) and the ` +
      `eager eval() + noGrad forward on the JavaScript thread; stall: the longest the event loop went without a turn ` +
      `during the timed calls (first-call stall: during the first predict, which traces the model and builds the plan). PyTorch: torchvision model, eval() + no_grad; ORT: the torchvision ` +
      `model exported to ONNX (opset 13, dynamic batch). Random weights (speed does not depend on them). Each cell is a ` +
      `fresh process, warmed up before timing.\n\n${mdTable(rows)}`,
  );
  const r50 = e2eRows.find((r) => r.kind === 'infer' && r.model === 'resnet50' && r.batch === 8);
  if (r50) {
    headline.push(
      `ResNet-50 inference, batch 8: ferroconv ${cellImgs(r50, 'plan')} (max event-loop stall ${cellStall(r50, 'plan')} ms), PyTorch ${cellImgs(r50, 'torch', torchPeer)}, ` +
        `ORT ${cellImgs(r50, 'ort', ortPeer, 'n/a')} images/s.`,
    );
  }
  headline.push(`Inference, geomean of ratios: ${r2(geomean(rt))}x vs PyTorch, ${r2(geomean(ro))}x vs ORT.`);
  results.infer = e2eRows.filter((r) => r.kind === 'infer');
}

async function int8Section(): Promise<void> {
  const nets = quick ? ['resnet18'] : ['resnet18', 'resnet50'];
  const batches = [1, 8];
  const floatFiles = new Map<string, string>();
  const int8Files = new Map<string, string>();
  if (ortPeer.api && torchPeer.api) {
    log('int8: exporting the float models to ONNX and quantizing them with onnxruntime.quantization (cached)');
    const exp = await exportOnnx({
      dir: onnxDir,
      threads,
      convs: [],
      models: nets.map((m) => ({ file: `${m}.onnx`, model: m })),
    });
    if ('error' in exp) log(`int8: ${exp.error}`);
    else {
      for (const m of nets)
        if (!exp.failed.some((f) => f.file === `${m}.onnx`)) floatFiles.set(m, join(onnxDir, `${m}.onnx`));
      const jobs = [...floatFiles].map(([m, src]) => ({
        src,
        dst: join(onnxDir, `${m}.int8.onnx`),
        shape: [1, 3, 224, 224],
      }));
      const q = await quantizeWithOrt({ models: jobs }, threads);
      if ('error' in q) log(`int8: ${q.error}`);
      else {
        for (const f of q.failed) log(`int8: ${f.file}: ${f.error}`);
        for (const m of nets) {
          const dst = join(onnxDir, `${m}.int8.onnx`);
          if (!q.failed.some((f) => f.file === dst)) int8Files.set(m, dst);
        }
      }
    }
  }
  const rows: TableRow[] = [];
  const vsSelf: (number | undefined)[] = [];
  const vsOrt: (number | undefined)[] = [];
  const perSecond = (r: RowResult | undefined, batch: number) => (r?.step ? batch / r.step.median : undefined);
  const raw: Record<string, unknown>[] = [];
  for (const model of nets) {
    for (const batch of batches) {
      const spec = (fw: Framework, mode?: 'plan' | 'int8', onnx?: string): RowSpec => ({
        fw,
        kind: 'infer',
        model,
        batch,
        threads,
        timing: TIMING.e2e,
        onnx,
        spin,
        mode,
      });
      // Rounds as in e2e(): the four cells take turns, each keeps its best round.
      let fp32: RowResult | undefined;
      let int8: RowResult | undefined;
      let ortInt8: RowResult | undefined;
      let ortFp32: RowResult | undefined;
      for (let round = 0; round < rounds; round++) {
        fp32 = bestRound(fp32, await runRowIsolated(spec('ferroconv', 'plan')));
        int8 = bestRound(int8, await runRowIsolated(spec('ferroconv', 'int8')));
        if (int8Files.has(model))
          ortInt8 = bestRound(ortInt8, await runRowIsolated(spec('ort', undefined, int8Files.get(model))));
        if (floatFiles.has(model))
          ortFp32 = bestRound(ortFp32, await runRowIsolated(spec('ort', undefined, floatFiles.get(model))));
      }
      if (!fp32 || !int8) throw new Error('int8: no round ran');
      const [f, q, oq, of] = [fp32, int8, ortInt8, ortFp32].map((r) => perSecond(r, batch));
      log(
        `int8 ${model} b${batch}: fp32 ${fmt(f)}, int8 ${fmt(q)} (stall ${fmt(int8.maxStallMs)} ms), ORT int8 ${fmt(oq)}, ORT fp32 ${fmt(of)} img/s`,
      );
      const self = q && f ? q / f : undefined;
      const ort = q && oq ? q / oq : undefined;
      vsSelf.push(self);
      vsOrt.push(ort);
      raw.push({ model, batch, fp32, int8, ortInt8, ortFp32 });
      const cell = (r: RowResult | undefined, v: number | undefined, missing: string) =>
        r?.error ? 'error' : r ? fmt(v) : missing;
      rows.push({
        model,
        batch,
        'fp32 img/s': cell(fp32, f, ''),
        'int8 img/s': cell(int8, q, '') + (int8.planned === true || int8.planned === undefined ? '' : ' (eager)'),
        'int8 stall ms': fmt(int8.maxStallMs),
        '×own fp32': r2(self),
        'ORT int8 img/s': cell(ortInt8, oq, ortPeer.api ? 'no model' : 'missing'),
        '×ORT int8': r2(ort),
        'ORT fp32 img/s': cell(ortFp32, of, ortPeer.api ? 'no model' : 'missing'),
      });
    }
  }
  rows.push({ model: '**geomean of ratios**', '×own fp32': r2(geomean(vsSelf)), '×ORT int8': r2(geomean(vsOrt)) });
  emit(
    `## 4. Int8 inference (224x224, images/s)\n\n` +
      `ferroconv: the zoo model quantized by \`quantize(model, calibration)\` (uint8 activations, int8 weights per ` +
      `channel, batch norm folded), \`predict(x)\`, next to the same model in float32 (\`predict\`). ONNX Runtime: the ` +
      `torchvision model exported to ONNX and quantized by \`onnxruntime.quantization.quantize_static\` (QDQ, uint8 ` +
      `activations, int8 per-channel weights, min-max calibration), and the float ONNX model. Random weights. ` +
      `Each cell is a fresh process, warmed up before timing.\n\n${mdTable(rows)}`,
  );
  headline.push(
    `Int8 inference (ResNet-18/50, batch 1 and 8), geomean: ${r2(geomean(vsSelf))}x ferroconv's own fp32, ` +
      `${r2(geomean(vsOrt))}x ONNX Runtime int8.`,
  );
  results.int8 = raw;
}

async function trainSection(): Promise<void> {
  const rows: TableRow[] = [];
  for (const [model, batch] of [
    ['resnet18', 16],
    ['mnistnet', 64],
  ] as const) {
    const r = await e2e('train', model, batch, ['ferroconv', 'torch']);
    // The ratio uses the compiled step (what fit() runs).
    const f = imgs(r, 'plan');
    const t = imgs(r, 'torch');
    const planned = r.byFw.plan?.planned;
    rows.push({
      model,
      batch,
      input: model === 'mnistnet' ? '1x28x28' : '3x224x224',
      'planned img/s': cellImgs(r, 'plan') + (planned === true || planned === undefined ? '' : ' (eager)'),
      'stall ms': cellStall(r, 'plan'),
      'first-step stall ms': fmt(r.byFw.plan?.firstStallMs),
      'eager img/s': cellImgs(r, 'ferroconv'),
      'eager stall ms': cellStall(r, 'ferroconv'),
      'torch img/s': cellImgs(r, 'torch', torchPeer),
      '×torch': r2(f && t ? f / t : undefined),
    });
  }
  rows.push(...missingRows('model', torchPeer));
  emit(
    `## 5. Training step (images/s)\n\n` +
      `One forward + cross-entropy + backward + SGD (lr 0.01, momentum 0.9) step, train mode (batch norm on batch ` +
      `statistics). ferroconv planned: the step as fit() runs it (traced, then one compiled plan run off the ` +
      `JavaScript thread; the ratio uses it); eager: the same step on the JavaScript thread. Stall: the longest the ` +
      `event loop went without a turn during the timed steps (first-step stall: the first, which also compiles). ` +
      `ResNet-18 from the zoo / torchvision; the MNIST network is models.mnistNet() and its PyTorch twin.\n\n${mdTable(rows)}`,
  );
  for (const r of e2eRows.filter((x) => x.kind === 'train')) {
    headline.push(
      `Training ${r.model} batch ${r.batch}: ferroconv ${cellImgs(r, 'plan')} (max event-loop stall ${cellStall(r, 'plan')} ms) vs PyTorch ${cellImgs(r, 'torch', torchPeer)} images/s.`,
    );
  }
  results.train = e2eRows.filter((r) => r.kind === 'train');
}

// ---------------------------------------------------------------------------------------------
// 5. Memory: peak RSS of the end-to-end rows; pooling and batch norm against the bandwidth

async function memorySection(): Promise<void> {
  bandwidthReadings.push(probe('bandwidth', threads));
  bandwidth = Math.max(...bandwidthReadings);
  const shape = [16, 64, 112, 112]; // ResNet's stem output at batch 16: 51 MB, beyond the L3
  const n = shape.reduce((a, b) => a * b, 1);
  const c = shape[1];
  const x = det(n, 1);
  const pool = stemPool(shape);
  const [oh, ow] = native.pool2dOutputSize(pool);
  const pooled = shape[0] * c * oh * ow;
  const out = new Float32Array(pooled);
  const idx = new Int32Array(pooled);
  const gap = new Float32Array(shape[0] * c);
  const y = new Float32Array(n);
  const bn = stemBatchNorm(shape);
  const B = 4; // bytes per float / int32
  // Bytes each op must move at least once (reads + writes; no write-allocate, as the triad counts).
  const ops = [
    {
      id: 'maxpool',
      name: 'max pool 3x3 s2 p1 (inference, no indices)',
      torch: { kind: 'maxpool', shape, kernel: 3, stride: 2, padding: 1 },
      ferroBytes: (n + pooled) * B,
      torchBytes: (n + pooled) * B,
      run: () => native.maxPool2dForwardNoIndices(x, out, pool),
    },
    {
      id: 'maxpoolIdx',
      name: 'max pool 3x3 s2 p1 + argmax indices (training)',
      torch: { kind: 'maxpool', shape, kernel: 3, stride: 2, padding: 1, indices: true },
      ferroBytes: (n + 2 * pooled) * B,
      torchBytes: (n + pooled) * B + pooled * 8,
      run: () => native.maxPool2dForward(x, out, idx, pool),
      note: 'bytes include the indices written, int32 for ferroconv and int64 for torch (return_indices=True)',
    },
    {
      id: 'avgpool',
      name: 'global avg pool',
      torch: { kind: 'avgpool', shape },
      ferroBytes: n * B,
      torchBytes: n * B,
      run: () => native.adaptiveAvgPool2dForward(x, gap, { inputShape: shape, outputSize: [1, 1] }),
    },
    {
      id: 'bnTrain',
      name: 'batch norm, train forward',
      torch: { kind: 'bnTrain', shape },
      ferroBytes: 3 * n * B,
      torchBytes: 3 * n * B,
      run: () => bn.train(x, y),
      note: 'counted as two reads of x (statistics, then normalise) and one write',
    },
    {
      id: 'bnEval',
      name: 'batch norm, eval forward',
      torch: { kind: 'bnEval', shape },
      ferroBytes: 2 * n * B,
      torchBytes: 2 * n * B,
      run: () => bn.eval(x, y),
    },
  ];
  const ferro = new Map<string, Stat>();
  const torchRes = new Map<string, Record<string, unknown>>();
  const torch = torchPeer.api ? new TorchStream(threads, TIMING.memory) : undefined;
  // Python importing torch takes seconds of CPU: on a 2-core machine it would slow whichever
  // ferroconv op was timed first.
  await torch?.ready;
  for (const op of ops) {
    ferro.set(op.id, await timeIt(op.run, TIMING.memory));
    if (torch) torchRes.set(op.id, await torch.run({ id: op.id, ...op.torch }));
  }
  torch?.close();
  const rows: TableRow[] = [];
  const raw: unknown[] = [];
  for (const op of ops) {
    const f = ferro.get(op.id);
    const t = statOf(torchRes.get(op.id), 'fwd');
    const fg = perSec(op.ferroBytes / 1e9, f);
    const tg = perSec(op.torchBytes / 1e9, t);
    rows.push({
      op: op.name,
      'ferroconv ms': ms(f),
      'GB/s': fmt(fg),
      '% of bandwidth': fmt(fg && (100 * fg) / bandwidth),
      'torch ms': ms(t) || missing(torchPeer),
      'torch GB/s': fmt(tg),
      'torch % of bandwidth': fmt(tg && (100 * tg) / bandwidth),
      '×torch': r2(ratio(f, t)),
    });
    raw.push({
      ...op,
      run: undefined,
      ferroconv: f,
      torch: t,
      ferroGbs: fg,
      torchGbs: tg,
      ferroPct: fg && (100 * fg) / bandwidth,
      torchPct: tg && (100 * tg) / bandwidth,
    });
  }
  rows.push(...missingRows('op', torchPeer));
  const rss: TableRow[] = e2eRows.map((r) => {
    const mb = (fw: Column, peer?: Peer<unknown>): string => {
      const x = r.byFw[fw];
      if (x?.error) return 'error';
      if (!x) return peer && !peer.api ? 'missing' : '';
      return fmt((x.maxRssKb ?? 0) / 1024);
    };
    return {
      row: `${r.kind} ${r.model}`,
      batch: r.batch,
      'ferroconv MB': mb('ferroconv'),
      'predict MB': r.kind === 'infer' ? mb('plan') : '',
      'torch MB': mb('torch', torchPeer),
      'ORT MB': mb('ort'),
    };
  });
  emit(
    `## 6. Memory\n\n### Peak RSS of each end-to-end row\n\n` +
      `Each row ran in its own process: node (ferroconv, ORT) or python (torch), so the numbers include each runtime's ` +
      `own footprint (V8 + tsx, or the Python interpreter + libtorch).\n\n${rss.length ? mdTable(rss) : '_(no end-to-end rows in this run)_\n'}\n` +
      `### Pooling and batch norm vs the measured bandwidth\n\n` +
      `Input [${shape.join(', ')}] (${fmt((n * B) / 1e6)} MB). GB/s counts the bytes each op must read and write once; ` +
      `% is of the triad bandwidth measured by this run (**${fmt(bandwidth)} GB/s**, ${threads} threads, best of ` +
      `${bandwidthReadings.map((x) => fmt(x)).join(', ')}). ` +
      `${ops
        .filter((o) => o.note)
        .map((o) => `${o.name}: ${o.note}.`)
        .join(' ')} Over 100% means part of the ` +
      `traffic came from cache (the L3 keeps part of x between the two passes of batch norm).\n\n${mdTable(rows)}`,
  );
  headline.push(
    `Pooling / batch norm, % of the measured bandwidth (${fmt(bandwidth)} GB/s): ` +
      raw
        .map((r) => {
          const x = r as { name: string; ferroPct?: number; torchPct?: number };
          return `${x.name} ${fmt(x.ferroPct)}%${x.torchPct ? ` (torch ${fmt(x.torchPct)}%)` : ''}`;
        })
        .join(', ') +
      '.',
  );
  results.memory = {
    triadBandwidthGbs: bandwidth,
    ops: raw,
    rss: e2eRows.map((r) => ({
      kind: r.kind,
      model: r.model,
      batch: r.batch,
      maxRssKb: Object.fromEntries(Object.entries(r.byFw).map(([k, v]) => [k, v?.maxRssKb])),
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// Data-parallel training over MPI

interface MpiRun {
  imgPerSec: number;
  stepMs: number;
  allreduceMs: number;
  parameterBytes: number;
  planned: boolean;
}

/** bench/distributed.ts under `mpirun -np ranks` (ranks 0: a plain process), `threads` kernel threads per rank. */
function mpiRun(ranks: number, threads: number, model: string, batch: number, steps: number): MpiRun | string {
  const script = [process.execPath, '--import', 'tsx', join(BENCH_DIR, 'distributed.ts')];
  const args = [...script, '--model', model, '--batch', String(batch), '--steps', String(quick ? 2 : steps)];
  const env = { ...process.env, FERROCONV_NUM_THREADS: String(threads) };
  if (process.getuid?.() === 0)
    Object.assign(env, { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' });
  const r =
    ranks === 0
      ? spawnSync(args[0], args.slice(1), { encoding: 'utf8', env })
      : spawnSync('mpirun', ['--oversubscribe', '-np', String(ranks), ...args], { encoding: 'utf8', env });
  const line = r.stdout?.trim().split('\n').at(-1);
  if (r.status !== 0 || !line) return `failed: ${(r.stderr ?? '').trim().split('\n').at(-1) ?? r.status}`;
  return JSON.parse(line) as MpiRun;
}

async function mpiSection(): Promise<void> {
  const title = '## 7. Data-parallel training over MPI (images/s over all ranks)';
  if (spawnSync('mpirun', ['--version'], { stdio: 'ignore' }).status !== 0) {
    emit(`${title}\n\nSkipped: no mpirun on PATH (apt-get install openmpi-bin).\n`);
    return;
  }
  const rows: TableRow[] = [];
  const raw: Record<string, unknown>[] = [];
  for (const [model, batch, steps] of [
    ['mnistnet', 64, 40],
    ['resnet18', 16, 6],
  ] as const) {
    log(`mpi: ${model} batch ${batch} per rank`);
    const one = mpiRun(1, 1, model, batch, steps);
    const two = mpiRun(2, 1, model, batch, steps);
    const alone = mpiRun(0, 2, model, 2 * batch, steps);
    const cell = (r: MpiRun | string) => (typeof r === 'string' ? r : fmt(r.imgPerSec));
    const ok = (r: MpiRun | string): r is MpiRun => typeof r !== 'string';
    rows.push({
      model,
      'batch per rank': batch,
      '1 rank x 1 thread': cell(one),
      '2 ranks x 1 thread': cell(two),
      'scaling efficiency': ok(one) && ok(two) ? `${((100 * two.imgPerSec) / (2 * one.imgPerSec)).toFixed(0)}%` : '--',
      'all-reduce ms (2 ranks)': ok(two) ? fmt(two.allreduceMs) : '--',
      'step ms (2 ranks)': ok(two) ? fmt(two.stepMs) : '--',
      'gradient MB': ok(two) ? (two.parameterBytes / 1e6).toFixed(1) : '--',
      '1 process x 2 threads, batch x2': cell(alone),
    });
    raw.push({ model, batch, one, two, alone });
  }
  emit(
    `${title}\n\n` +
      `fit({ distributed: true }) under \`mpirun --oversubscribe -np N\` on this machine (bench/distributed.ts): each ` +
      `rank trains on synthetic data at the batch shown, its gradients averaged over the ranks at every step (one ` +
      `bucketed MPI_Allreduce over shared memory here). Efficiency: 2-rank rate / (2 x 1-rank rate). The all-reduce ` +
      `column times the gradients' all-reduce alone. The last column is one process using both cores at twice the batch ` +
      `(the same samples per step), for comparison on one machine.\n\n${mdTable(rows)}`,
  );
  results.mpi = raw;
}

// ---------------------------------------------------------------------------------------------

if (sections.has('conv')) {
  await convSection();
  noteLoad('after conv');
}
if (sections.has('gemm')) {
  await gemmSection();
  noteLoad('after gemm');
}
if (sections.has('infer')) {
  await inferSection();
  noteLoad('after infer');
}
if (sections.has('int8')) {
  await int8Section();
  noteLoad('after int8');
}
if (sections.has('train')) {
  await trainSection();
  noteLoad('after train');
}
if (sections.has('memory')) {
  await memorySection();
  noteLoad('after memory');
}
if (sections.has('mpi')) {
  await mpiSection();
  noteLoad('end');
}

if (headline.length) emit(`## Summary\n\n${headline.map((h) => `- ${h}`).join('\n')}\n`);
results.headline = headline;
const busy = loads[0].load1 > 0.5;
emit(
  `## Notes\n\n` +
    `- Run took ${elapsed()}. Load average (1 min) at start ${loads[0].load1} (before this run did anything), ` +
    `then ${loads
      .slice(1)
      .map((l) => `${l.load1} ${l.at}`)
      .join(', ')}.` +
    (busy
      ? ` **The machine was shared with other work during this run, so absolute numbers are noisy (and low); ratios ` +
        `from the same run are more telling, but a busy neighbour can still favour whichever side ran at a quiet moment.**`
      : '') +
    `\n- Reproduce: \`npm run bench:peers\` once (optional peers), then \`npm run bench:compare\` ` +
    `(\`-- --quick\` for a harness check). Raw numbers: bench/results/${date}-${hostname()}${quick ? '-quick' : ''}.json.\n`,
);
results.loadAverage = loads;
results.seconds = (Date.now() - started) / 1000;

const resultsDir = join(BENCH_DIR, 'results');
mkdirSync(resultsDir, { recursive: true });
const suffix = quick ? '-quick' : '';
writeFileSync(join(resultsDir, `${date}-${hostname()}${suffix}.json`), `${JSON.stringify(results, null, 1)}\n`);
writeFileSync(join(resultsDir, quick ? 'quick-latest.md' : 'latest.md'), md.join('\n'));
log(
  `wrote bench/results/${date}-${hostname()}${suffix}.json and bench/results/${quick ? 'quick-latest.md' : 'latest.md'}`,
);
