// SummaryWriter (src/train/tensorboard.ts): CRC-32C against published check values; an event file
// with scalars, histograms and a PNG image parsed back here (TFRecord framing and both CRCs checked
// with a bit-by-bit CRC written independently of the table-driven one) and read by TensorBoard's
// own EventAccumulator and EventFileLoader in Python; bad arguments and use after close() as Errors.
// The Python side runs FERROCONV_TENSORBOARD_PYTHON, else bench/.peers/venv/bin/python, else
// /usr/bin/python3, and is skipped, saying so, where that python cannot import tensorboard.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromBinary } from '@bufbuild/protobuf';
import sharp from 'sharp';
import { crc32c, FILE_VERSION, maskedCrc32c, SummaryWriter, tensorflowBucketLimits } from '../src/train/tensorboard.js';
import { type Event, EventSchema, type HistogramProto } from '../src/train/tensorboard/gen/event_pb.js';
import { thrown } from './helpers.js';
import {
  Conv2d,
  DataLoader,
  Flatten,
  fit,
  Linear,
  manualSeed,
  randn,
  ReLU,
  SGD,
  Sequential,
  TensorDataset,
} from '../src/index.js';
import type { BatchRecord } from '../src/train/history.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-tensorboard-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const PEERS_PYTHON = fileURLToPath(new URL('../bench/.peers/venv/bin/python', import.meta.url));
const TB_PYTHON =
  process.env.FERROCONV_TENSORBOARD_PYTHON ?? (existsSync(PEERS_PYTHON) ? PEERS_PYTHON : '/usr/bin/python3');
const hasTensorboard = spawnSync(TB_PYTHON, ['-c', 'import tensorboard'], { stdio: 'ignore' }).status === 0;
if (!hasTensorboard) {
  console.warn(
    `tensorboard: the TensorBoard reader tests are skipped: ${TB_PYTHON} cannot import tensorboard ` +
      '(set FERROCONV_TENSORBOARD_PYTHON to a python with `pip install tensorboard`)',
  );
}

/** CRC-32C bit by bit, straight from the definition: an independent check of the table. */
function crc32cBitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
const maskBitwise = (bytes: Uint8Array) => {
  const crc = crc32cBitwise(bytes);
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
};

/** The records of a TFRecord file, each CRC checked; throws on a bad frame. */
function readRecords(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: Uint8Array[] = [];
  for (let at = 0; at < bytes.length; ) {
    if (at + 12 > bytes.length) throw new Error(`truncated header at ${at}`);
    const length = Number(view.getBigUint64(at, true));
    if (view.getUint32(at + 8, true) !== maskBitwise(bytes.subarray(at, at + 8)))
      throw new Error(`length crc at ${at}`);
    const data = bytes.subarray(at + 12, at + 12 + length);
    if (data.length !== length || at + 16 + length > bytes.length) throw new Error(`truncated data at ${at}`);
    if (view.getUint32(at + 12 + length, true) !== maskBitwise(data)) throw new Error(`data crc at ${at}`);
    records.push(data);
    at += 16 + length;
  }
  return records;
}

describe('crc32c', () => {
  it('gives the standard check value and the RFC 3720 (iSCSI) test vectors', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(new Uint8Array(0))).toBe(0);
  });
  it('matches the bit-by-bit definition, masked as TFRecord masks it', () => {
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 2654435761) >>> 24);
    for (const n of [1, 7, 8, 100, 1000]) {
      expect(crc32c(bytes.subarray(0, n))).toBe(crc32cBitwise(bytes.subarray(0, n)));
      expect(maskedCrc32c(bytes.subarray(0, n))).toBe(maskBitwise(bytes.subarray(0, n)));
    }
  });
});

describe('tensorflowBucketLimits', () => {
  it("are TensorFlow's: ±1e-12 growing by 10% below 1e20, 0 between, ±DBL_MAX outside", () => {
    const limits = tensorflowBucketLimits();
    const positive: number[] = [];
    for (let v = 1e-12; v < 1e20; v *= 1.1) positive.push(v);
    expect(positive.length).toBe(774);
    expect(limits.length).toBe(2 * 775 + 1);
    expect(limits[775]).toBe(0);
    expect(Array.from(limits.subarray(776, 776 + 774))).toEqual(positive);
    expect(limits[limits.length - 1]).toBe(Number.MAX_VALUE);
    for (let i = 0; i < limits.length; i++) expect(limits[i] + limits[limits.length - 1 - i]).toBe(0);
  });
});

// What the run below logs, for the checks to compare against.
const lossSteps = [0, 1, 2, 10, 20];
const losses = [2.3, 1.25, 0, 0.5, 1e-7];
const weights = Float32Array.from({ length: 500 }, (_, i) => Math.sin(i * 0.37) * (i % 7) * 0.1);
weights[3] = Number.NaN;
weights[4] = 0;
const activations = [0.5, 0.5, 3, -1e-15, 42, Number.NaN];
const WALL_TIME = 1_700_000_000.25;

describe('SummaryWriter', () => {
  let png: Uint8Array;
  let path: string;
  let events: Event[];

  beforeAll(async () => {
    png = new Uint8Array(
      await sharp({ create: { width: 4, height: 3, channels: 3, background: '#f00' } })
        .png()
        .toBuffer(),
    );
    const w = new SummaryWriter(join(dir, 'runs', 'exp1'));
    path = w.filePath;
    lossSteps.forEach((step, i) => {
      w.addScalar('loss/train', losses[i], step, i === 0 ? WALL_TIME : undefined);
    });
    w.addHistogram('conv1/weight', weights, 10);
    w.addHistogram(
      'conv1/weight',
      Array.from(weights, (v) => v * 2),
      20,
      { wallTime: WALL_TIME + 1 },
    );
    w.addHistogram('act', activations, 0);
    w.addHistogram('empty', new Float32Array(0), 0);
    w.addHistogram('all-nan', [Number.NaN, Number.NaN], 0);
    w.addImage('input/0', png, 4, 3, 3, 5);
    w.flush();
    w.close();
    events = readRecords(new Uint8Array(readFileSync(path))).map((r) => fromBinary(EventSchema, r));
  });

  const summaries = (tag: string) =>
    events.flatMap((e) =>
      e.what.case === 'summary' ? e.what.value.value.filter((v) => v.tag === tag).map((v) => ({ e, v })) : [],
    );
  const histo = (tag: string, step: number): HistogramProto => {
    const found = summaries(tag).find(({ e }) => e.step === BigInt(step));
    if (found?.v.value.case !== 'histo') throw new Error(`no histogram ${tag} at ${step}`);
    return found.v.value.value;
  };

  it('names the file as TensorFlow does and starts it with the file_version event', () => {
    expect(readdirSync(join(dir, 'runs', 'exp1'))).toEqual([basename(path)]);
    expect(basename(path)).toMatch(/^events\.out\.tfevents\.\d{10}\.[^.]+.*\.\d+\.\d+$/);
    expect(basename(path)).toContain(`.${process.pid}.`);
    expect(events[0].what).toEqual({ case: 'fileVersion', value: FILE_VERSION });
    expect(FILE_VERSION).toBe('brain.Event:2');
    expect(Math.abs(events[0].wallTime - Date.now() / 1000)).toBeLessThan(600);
    expect(events.length).toBe(1 + lossSteps.length + 5 + 1);
  });

  it('writes scalars as float simple_values, 0 included, at their steps and wall times', () => {
    const got = summaries('loss/train');
    expect(got.map(({ e }) => Number(e.step))).toEqual(lossSteps);
    expect(got.map(({ v }) => v.value)).toEqual(losses.map((x) => ({ case: 'simpleValue', value: Math.fround(x) })));
    expect(got[0].e.wallTime).toBe(WALL_TIME);
    expect(got[1].e.wallTime).toBeGreaterThan(WALL_TIME);
  });

  it('writes histograms whose buckets count every finite value in [previous limit, limit)', () => {
    const finiteOf = (values: ArrayLike<number>) => Array.from(values).filter(Number.isFinite);
    const cases: [string, number, number[]][] = [
      ['conv1/weight', 10, finiteOf(weights)],
      ['conv1/weight', 20, finiteOf(Array.from(weights, (v) => v * 2))],
      ['act', 0, finiteOf(activations)],
    ];
    const all = new Set(tensorflowBucketLimits());
    for (const [tag, step, values] of cases) {
      const h = histo(tag, step);
      expect(h.num).toBe(values.length);
      expect(h.min).toBe(Math.min(...values));
      expect(h.max).toBe(Math.max(...values));
      expect(h.sum).toBeCloseTo(
        values.reduce((a, b) => a + b, 0),
        9,
      );
      expect(h.sumSquares).toBeCloseTo(
        values.reduce((a, b) => a + b * b, 0),
        9,
      );
      expect(h.bucket.length).toBe(h.bucketLimit.length);
      expect(h.bucket.reduce((a, b) => a + b, 0)).toBe(values.length);
      for (let i = 0; i < h.bucket.length; i++) {
        expect(all.has(h.bucketLimit[i])).toBe(true);
        if (i > 0) expect(h.bucketLimit[i]).toBeGreaterThan(h.bucketLimit[i - 1]);
        const lo = i === 0 ? Number.NEGATIVE_INFINITY : h.bucketLimit[i - 1];
        expect(values.filter((v) => v >= lo && v < h.bucketLimit[i]).length).toBe(h.bucket[i]);
        // Runs of empty buckets are collapsed into one.
        if (i > 0) expect(h.bucket[i] + h.bucket[i - 1]).toBeGreaterThan(0);
      }
      // ... and dropped at the ends, so min and max lie in the first and last bucket.
      expect(h.bucket[0]).toBeGreaterThan(0);
      expect(h.bucket[h.bucket.length - 1]).toBeGreaterThan(0);
      expect(h.bucketLimit[h.bucketLimit.length - 1]).toBeGreaterThan(h.max);
      expect(h.bucketLimit[0]).toBeGreaterThan(h.min);
    }
    // 0.5 twice shares a bucket; -1e-15 lies between -1e-12 and 0.
    const act = histo('act', 0);
    expect(act.bucket.filter((c) => c > 0)).toEqual([1, 2, 1, 1]);
    expect(act.bucketLimit[0]).toBe(0);
  });

  it('writes a well-formed empty histogram for no finite values', () => {
    for (const tag of ['empty', 'all-nan']) {
      const h = histo(tag, 0);
      expect({ min: h.min, max: h.max, num: h.num, sum: h.sum, sumSquares: h.sumSquares }).toEqual({
        min: 0,
        max: 0,
        num: 0,
        sum: 0,
        sumSquares: 0,
      });
      expect(h.bucketLimit).toEqual([Number.MAX_VALUE]);
      expect(h.bucket).toEqual([0]);
    }
  });

  it('writes the PNG unchanged with its size and colorspace', () => {
    const [{ e, v }] = summaries('input/0');
    expect(Number(e.step)).toBe(5);
    if (v.value.case !== 'image') throw new Error('not an image');
    const { width, height, colorspace, encodedImageString } = v.value.value;
    expect({ width, height, colorspace }).toEqual({ width: 4, height: 3, colorspace: 3 });
    expect(Buffer.from(encodedImageString).equals(Buffer.from(png))).toBe(true);
  });

  it.skipIf(!hasTensorboard)("is read by TensorBoard's EventAccumulator and EventFileLoader", () => {
    const script = `
import base64, dataclasses, json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util import tensor_util
import tensorboard
acc = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0, 'histograms': 0, 'images': 0})
acc.Reload()
tags = acc.Tags()
migrated = {}
for event in EventFileLoader(sys.argv[2]).Load():
    for v in event.summary.value:
        if v.metadata.plugin_data.plugin_name == 'histograms':
            migrated.setdefault(v.tag, []).append(tensor_util.make_ndarray(v.tensor).tolist())
print(json.dumps({
    'version': tensorboard.__version__,
    'tags': {k: sorted(tags[k]) for k in ('scalars', 'histograms', 'images')},
    'scalars': {t: [[e.step, e.value, e.wall_time] for e in acc.Scalars(t)] for t in tags['scalars']},
    'histograms': {t: [[e.step, dataclasses.asdict(e.histogram_value)] for e in acc.Histograms(t)]
                   for t in tags['histograms']},
    'images': {t: [[e.step, e.width, e.height, base64.b64encode(e.encoded_image_string).decode()]
                   for e in acc.Images(t)] for t in tags['images']},
    'migrated': migrated,
}))
`;
    const r = spawnSync(TB_PYTHON, ['-c', script, join(dir, 'runs', 'exp1'), path], { encoding: 'utf8' });
    expect(r.stderr.includes('DataLossError') || r.stderr.includes('crc32'), r.stderr).toBe(false);
    expect(r.status, r.stderr).toBe(0);
    const tb = JSON.parse(r.stdout);
    console.info(`tensorboard ${tb.version} read ${basename(path)}`);
    expect(tb.tags).toEqual({
      scalars: ['loss/train'],
      histograms: ['act', 'all-nan', 'conv1/weight', 'empty'],
      images: ['input/0'],
    });
    expect(tb.scalars['loss/train'].map((s: number[]) => s[0])).toEqual(lossSteps);
    expect(tb.scalars['loss/train'].map((s: number[]) => s[1])).toEqual(losses.map(Math.fround));
    expect(tb.scalars['loss/train'][0][2]).toBe(WALL_TIME);
    for (const [tag, steps] of [
      ['conv1/weight', [10, 20]],
      ['act', [0]],
      ['empty', [0]],
      ['all-nan', [0]],
    ] as const) {
      expect(tb.histograms[tag].map((h: [number, unknown]) => h[0])).toEqual(steps);
      for (const [step, value] of tb.histograms[tag]) {
        const h = histo(tag, step);
        expect(value).toEqual({
          min: h.min,
          max: h.max,
          num: h.num,
          sum: h.sum,
          sum_squares: h.sumSquares,
          bucket_limit: h.bucketLimit,
          bucket: h.bucket,
        });
      }
    }
    // What TensorBoard's Histograms tab draws: [left, right, count] rows between min and max.
    for (const [tag, step] of [
      ['conv1/weight', 10],
      ['act', 0],
    ] as const) {
      const h = histo(tag, step);
      const rows: number[][] = tb.migrated[tag][0];
      expect(rows.reduce((a, row) => a + row[2], 0)).toBe(h.num);
      expect(rows[0][0]).toBeCloseTo(h.min, 5);
      expect(rows[rows.length - 1][1]).toBeCloseTo(h.max, 5);
      for (const [left, right] of rows) expect(left).toBeLessThanOrEqual(right);
    }
    expect(tb.migrated.empty).toEqual([[]]);
    expect(tb.images['input/0']).toEqual([[5, 4, 3, Buffer.from(png).toString('base64')]]);
  });

  it('gives each writer its own file, also within one second in one directory', () => {
    const sub = join(dir, 'two');
    const a = new SummaryWriter(sub);
    const b = new SummaryWriter(sub);
    a.addScalar('x', 1, 0);
    b.addScalar('x', 2, 0);
    a.close();
    b.close();
    expect(a.filePath).not.toBe(b.filePath);
    expect(readdirSync(sub).length).toBe(2);
    for (const p of [a.filePath, b.filePath]) expect(readRecords(new Uint8Array(readFileSync(p))).length).toBe(2);
  });
});

describe('SummaryWriter errors', () => {
  it('rejects bad tags, values, steps and images with what it expected', () => {
    const w = new SummaryWriter(join(dir, 'errors'));
    const message = (fn: () => unknown) => thrown(fn).message;
    expect(message(() => w.addScalar('loss', Number.NaN, 0))).toMatch(
      /^SummaryWriter: expected the scalar value of "loss" to be a finite number, got NaN/,
    );
    expect(message(() => w.addScalar('loss', Number.POSITIVE_INFINITY, 0))).toMatch(/finite number, got Infinity/);
    expect(message(() => w.addScalar('loss', '1' as unknown as number, 0))).toMatch(/finite number, got "1"/);
    expect(message(() => w.addScalar('', 1, 0))).toMatch(/^SummaryWriter: expected tag to be a non-empty string/);
    expect(message(() => w.addScalar(3 as unknown as string, 1, 0))).toMatch(/non-empty string, got 3/);
    for (const step of [-1, 1.5, Number.NaN, 2 ** 60]) {
      expect(message(() => w.addScalar('loss', 1, step))).toMatch(/^SummaryWriter: expected step to be a non-negative/);
    }
    expect(message(() => w.addScalar('loss', 1, 0, Number.NaN))).toMatch(/^SummaryWriter: expected wallTime/);
    expect(message(() => w.addHistogram('h', new Float64Array(2) as unknown as number[], 0))).toMatch(
      /^SummaryWriter: expected values of "h" as a Float32Array or number\[\]/,
    );
    expect(message(() => w.addHistogram('h', [1, '2' as unknown as number], 0))).toMatch(/to be numbers/);
    const raw = new Uint8Array(4 * 3 * 3);
    expect(message(() => w.addImage('img', raw, 4, 3, 3, 0))).toMatch(/^SummaryWriter: expected image "img" as PNG/);
    expect(message(() => w.addImage('img', raw, 4, 3, 5, 0))).toMatch(/channels .* to be 1, 2, 3 or 4, got 5/);
    expect(message(() => w.addImage('img', raw, 0, 3, 3, 0))).toMatch(/width .* positive int32, got 0/);
    w.close();
    // Only the file_version record was written: every bad call threw before writing.
    expect(readRecords(new Uint8Array(readFileSync(w.filePath))).length).toBe(1);
  });

  it('checks the PNG is the size given', async () => {
    const w = new SummaryWriter(join(dir, 'errors-png'));
    const png = await sharp({ create: { width: 4, height: 3, channels: 4, background: '#0f08' } })
      .png()
      .toBuffer();
    expect(thrown(() => w.addImage('img', png, 3, 4, 4, 0)).message).toBe(
      'SummaryWriter: expected image "img" to be 3x4, the PNG is 4x3',
    );
    w.addImage('img', png, 4, 3, 4, 0);
    w.close();
  });

  it('closes once, then every other method throws', () => {
    const w = new SummaryWriter(join(dir, 'closed'));
    w.close();
    w.close();
    const closed = new RegExp(`^SummaryWriter: ${w.filePath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is closed$`);
    expect(thrown(() => w.addScalar('loss', 1, 0)).message).toMatch(closed);
    expect(thrown(() => w.addHistogram('h', [1], 0)).message).toMatch(closed);
    expect(thrown(() => w.addImage('img', new Uint8Array(0), 1, 1, 1, 0)).message).toMatch(closed);
    expect(thrown(() => w.flush()).message).toMatch(closed);
    expect(readRecords(new Uint8Array(readFileSync(w.filePath))).length).toBe(1);
  });

  it('rejects an empty logDir', () => {
    expect(thrown(() => new SummaryWriter('')).message).toMatch(/^SummaryWriter: expected logDir to be a non-empty/);
  });
});

describe('fit with tensorboard: true', () => {
  /** Two separable classes of 1x8x8 images. */
  function toyLoader(n: number, seed: number): DataLoader {
    manualSeed(seed);
    const x = randn([n, 1, 8, 8]);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      labels[i] = i % 2;
      for (let j = 0; j < 64; j++) x.data[i * 64 + j] += labels[i] ? 0.5 : -0.5;
    }
    return new DataLoader(new TensorDataset(x, labels), { batchSize: 16, shuffle: true, seed });
  }
  const net = () => new Sequential(new Conv2d(1, 4, 3), new ReLU(), new Flatten(), new Linear(4 * 6 * 6, 2));

  /** Per tag, the (step, value or histogram) pairs of every event file in `logDir`. */
  function readRun(logDir: string) {
    const scalars = new Map<string, [number, number][]>();
    const histos = new Map<string, [number, HistogramProto][]>();
    const images: string[] = [];
    for (const f of readdirSync(logDir).filter((n) => n.startsWith('events.out.tfevents.'))) {
      for (const rec of readRecords(readFileSync(join(logDir, f))).slice(1)) {
        const e = fromBinary(EventSchema, rec);
        if (e.what.case !== 'summary') continue;
        for (const v of e.what.value.value) {
          const step = Number(e.step);
          if (v.value.case === 'simpleValue')
            scalars.set(v.tag, [...(scalars.get(v.tag) ?? []), [step, v.value.value]]);
          if (v.value.case === 'histo') histos.set(v.tag, [...(histos.get(v.tag) ?? []), [step, v.value.value]]);
          if (v.value.case === 'image') images.push(v.tag);
        }
      }
    }
    return { scalars, histos, images };
  }

  it('logs every step, every epoch, every parameter and gradient, and the filters; planned or eager alike', async () => {
    const runs = [];
    for (const plan of [true, false]) {
      manualSeed(4);
      const model = net();
      const logDir = join(dir, `fit-${plan}`);
      const result = await fit(model, toyLoader(64, 2), {
        optimizer: new SGD(model.parameters(), { lr: 0.05, momentum: 0.9 }),
        epochs: 2,
        validation: toyLoader(32, 3),
        progress: false,
        logDir,
        tensorboard: true,
        plan,
      });
      expect(result.planned).toBe(plan);
      runs.push({ logDir, run: readRun(logDir), model });
    }
    for (const { logDir, run, model } of runs) {
      const log = JSON.parse(readFileSync(join(logDir, 'log.json'), 'utf8'));
      expect(log.batches.map((b: { step: number }) => b.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(run.scalars.get('train/loss')).toEqual(log.batches.map((b: BatchRecord) => [b.step, Math.fround(b.loss)]));
      expect(run.scalars.get('train/acc')?.length).toBe(8);
      expect(run.scalars.get('val/acc')?.map(([s]) => s)).toEqual([4, 8]);
      for (const [name, p] of model.namedParameters()) {
        expect(run.histos.get(`weights/${name}`)?.map(([s]) => s)).toEqual([4, 8]);
        const g = run.histos.get(`grads/${name}`);
        expect(g?.map(([s, h]) => [s, h.num])).toEqual([
          [4, p.size],
          [8, p.size],
        ]);
      }
      expect(run.images).toEqual(['filters/0', 'filters/0']);
      expect(readFileSync(join(logDir, 'log-batches.csv'), 'utf8').trim().split('\n')).toHaveLength(9);
      const svg = readFileSync(join(logDir, 'curve.svg'), 'utf8');
      expect(svg).toContain('loss (smoothed)');
      expect(svg).toContain('val_acc');
    }
    // The compiled step hands out the same gradients as the eager one.
    const [planned, eager] = runs.map((r) => r.run.histos);
    for (const [tag, list] of planned) {
      if (!tag.startsWith('grads/')) continue;
      list.forEach(([, h], i) => {
        const e = eager.get(tag)![i][1];
        expect(h.sum).toBeCloseTo(e.sum, 4);
        expect(h.sumSquares).toBeCloseTo(e.sumSquares, 4);
      });
    }
  }, 60_000);
});
