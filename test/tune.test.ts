// The conv autotuner seen from JavaScript: `auto` is tuned by default and lists its choices,
// deterministic mode follows the fixed rules, and the cache file persists choices across
// processes (FERROCONV_TUNE_CACHE) and survives bad files. The kernel-side checks (a tuned
// call's bits are the chosen algorithm's) are in crates/kernels/tests/tune.rs.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  clearConvTuning,
  conv2d,
  convTuning,
  info,
  manualSeed,
  models,
  planInfo,
  randn,
  setDeterministicAlgos,
  setTuneCache,
  Tensor,
} from '../src/index.js';
import { conv2dAlgorithms } from '../src/ops/conv.js';
import { convGeometry } from '../src/ops/geometry.js';
import { expectClose } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-tune-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A 3x3 conv of `c` channels on an `hw` map (im2col, Winograd and direct are candidates). */
function run3x3(c: number, hw: number): Tensor {
  const x = new Tensor(
    Float32Array.from({ length: 2 * c * hw * hw }, (_, i) => Math.sin(i)),
    [2, c, hw, hw],
  );
  const w = new Tensor(
    Float32Array.from({ length: c * c * 9 }, (_, i) => Math.cos(i) / 9),
    [c, c, 3, 3],
  );
  return conv2d(x, w, null, { padding: 1 });
}

const tunedFor = (c: number, hw: number) =>
  convTuning().filter((t) => t.inputShape.join() === [2, c, hw, hw].join() && t.pass === 'forward');

describe('conv autotuner', () => {
  // The suites run deterministic (vitest.config.ts); these tests run as users do, tuned.
  beforeAll(() => setDeterministicAlgos(false));

  it('is on by default: the first use of a shape times its candidates and keeps one', () => {
    expect(info().deterministicAlgos).toBe(false);
    const first = run3x3(16, 11);
    const [t] = tunedFor(16, 11);
    expect(t).toBeDefined();
    expect(t.weightShape).toEqual([16, 16, 3, 3]);
    // im2col has two forward paths here (indirect tiles, the GEMM), both timed.
    expect(['im2col:indirect', 'im2col:gemm', 'winograd', 'direct']).toContain(t.algo);
    expect(Object.keys(t.ms)).toEqual(expect.arrayContaining(['im2col:indirect', 'im2col:gemm', 'winograd', t.rule]));
    for (const ms of Object.values(t.ms)) expect(ms).toBeGreaterThan(0);
    // What the call ran is what conv2dAlgorithms reports, and a second call gives the same bits.
    expect(conv2dAlgorithms([2, 16, 11, 11], [16, 16, 3, 3], convGeometry({ padding: 1 }))[0]).toBe(
      t.algo.split(':')[0],
    );
    expect(run3x3(16, 11).data).toEqual(first.data);
    // Forcing the kept algorithm gives the first call's bits too (JavaScript forces im2col on
    // its rules' path; the kernel tests force either path).
    if (t.algo.includes(':') && t.algo !== t.rule) return;
    const x = new Tensor(
      Float32Array.from({ length: 2 * 16 * 121 }, (_, i) => Math.sin(i)),
      [2, 16, 11, 11],
    );
    const w = new Tensor(
      Float32Array.from({ length: 16 * 16 * 9 }, (_, i) => Math.cos(i) / 9),
      [16, 16, 3, 3],
    );
    const forced = conv2d(x, w, null, { padding: 1, algo: t.algo.split(':')[0] as 'im2col' });
    expect(forced.data).toEqual(first.data);
  });

  it('deterministic mode follows the fixed rules and times nothing', () => {
    setDeterministicAlgos(true);
    try {
      expect(info().deterministicAlgos).toBe(true);
      run3x3(16, 13);
      expect(tunedFor(16, 13)).toHaveLength(0);
    } finally {
      setDeterministicAlgos(false);
    }
    expect(info().deterministicAlgos).toBe(false);
  });

  it('persists choices in a cache file that the next process loads', () => {
    const file = join(dir, 'tune.tsv');
    expect(setTuneCache(file)).toEqual({ loaded: 0, skipped: 0 });
    expect(info().tuneCache).toBe(file);
    run3x3(16, 9);
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines[0]).toMatch(/^# ferroconv conv tuning cache/);
    expect(lines.slice(1).some((l) => l.includes('\tforward\t2,16,9,9,16,3,3,'))).toBe(true);
    const kept = tunedFor(16, 9)[0].algo;
    setTuneCache(null);
    expect(info().tuneCache).toBeNull();

    // A fresh process given the file starts with the choice made here.
    const script = "import('./dist/index.js').then(m => console.log(JSON.stringify([m.info(), m.convTuning()])))";
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, FERROCONV_TUNE_CACHE: file },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const [childInfo, childTuning] = JSON.parse(r.stdout);
    expect(childInfo.tuneCache).toBe(file);
    expect(childInfo.tuneCacheError).toBeNull();
    const loaded = childTuning.find(
      (t: { inputShape: number[]; pass: string }) => t.inputShape.join() === '2,16,9,9' && t.pass === 'forward',
    );
    expect(loaded?.algo).toBe(kept);

    // In this process: forget, then load the file again.
    clearConvTuning();
    expect(tunedFor(16, 9)).toHaveLength(0);
    const load = setTuneCache(file);
    expect(load.loaded).toBeGreaterThanOrEqual(1);
    expect(tunedFor(16, 9)[0].algo).toBe(kept);
    setTuneCache(null);
  });

  it('skips malformed lines, and refuses what is not a usable file without changing anything', () => {
    const file = join(dir, 'bad.tsv');
    const good = readFileSync(join(dir, 'tune.tsv'), 'utf8').split('\n')[1];
    const junk = [
      'garbage',
      good.replace('\tforward\t', '\tsideways\t'),
      good.replace(/\t(im2col:[a-z-]+|winograd|direct)\t/, '\tfft\t'),
      good.replace('2,16,9,9,16,3,3', '2,16,9,9,16,30,30'),
      good.replace(info().cpu, 'Another CPU'),
      '\u0000\u00ff\t\t\t\t\t\t',
    ];
    writeFileSync(file, [good, ...junk].join('\n'));
    clearConvTuning();
    expect(setTuneCache(file)).toEqual({ loaded: 1, skipped: junk.length });
    setTuneCache(null);

    const using = join(dir, 'using.tsv');
    setTuneCache(using);
    const tuned = convTuning().length;
    expect(() => setTuneCache(dir)).toThrow(/^tune cache: cannot/);
    const big = join(dir, 'big.tsv');
    writeFileSync(big, Buffer.alloc((4 << 20) + 1, 35));
    expect(() => setTuneCache(big)).toThrow(/^tune cache: .* more than/);
    expect(info().tuneCache).toBe(using);
    expect(convTuning()).toHaveLength(tuned);
    setTuneCache(null);

    // A bad FERROCONV_TUNE_CACHE does not stop the module loading: info() says why.
    const script = "import('./dist/index.js').then(m => console.log(JSON.stringify(m.info())))";
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, FERROCONV_TUNE_CACHE: dir },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout);
    expect(got.tuneCache).toBeNull();
    expect(got.tuneCacheError).toMatch(/^tune cache: cannot open/);
  });

  it('FERROCONV_DETERMINISTIC=1 starts in deterministic mode, and tuning is the default', () => {
    const script = "import('./dist/index.js').then(m => console.log(JSON.stringify(m.info())))";
    for (const [value, deterministic] of [
      ['1', true],
      ['', false],
    ] as const) {
      const r = spawnSync(process.execPath, ['-e', script], {
        env: { ...process.env, FERROCONV_DETERMINISTIC: value },
        encoding: 'utf8',
      });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).deterministicAlgos).toBe(deterministic);
    }
  });

  it('tuned, compiled plans still give the eager results within 1e-5, and tune their prepared forwards', async () => {
    clearConvTuning();
    for (const [name, make] of [
      ['resnet18', () => models.resnet18({ numClasses: 10 })],
      ['googlenet', () => models.googlenet({ numClasses: 10 })],
    ] as const) {
      manualSeed(1);
      const model = make();
      manualSeed(7);
      const x = randn([2, 3, 64, 64]);
      const planned = await model.predict(x);
      expect(planInfo(model)?.planned).toBe(true);
      const eager = await model.predict(x, { plan: false });
      expectClose(planned.data, eager.data, 1e-5, 1e-6, name);
      expectClose((await model.predict(x)).data, planned.data, 0, 0, `${name} again`);
    }
    const passes = new Set(convTuning().map((t) => t.pass));
    expect(passes.has('forward-prepared')).toBe(true);
    expect(passes.has('forward')).toBe(true);
  }, 60_000);
});
