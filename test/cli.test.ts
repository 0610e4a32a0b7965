// The ferroconv command: help, --version, info, a tiny training run, eval and predict on its checkpoint,
// and error paths that print one line and exit non-zero without a stack trace.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { mnist, models, Tensor } from '../src/index.js';

const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, FERROCONV_NUM_THREADS: '2' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('ferroconv CLI', () => {
  it('prints help for every command', () => {
    for (const cmd of ['train', 'eval', 'predict', 'export', 'quantize', 'prune', 'app']) {
      const r = run(cmd, '--help');
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain(`ferroconv ${cmd}`);
    }
    expect(run('--help').out).toContain('Commands:');
    expect(JSON.parse(run('info').out).simd).toMatch(/^(avx512|avx2\+fma|neon|scalar)$/);
  });

  it('prints the version in package.json for --version and -v, from src/ and from the built dist/cli.js', () => {
    const root = join(import.meta.dirname, '..');
    const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    for (const flag of ['--version', '-v']) {
      const r = run(flag);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toBe(`${version}\n`);
      const d = spawnSync(process.execPath, [join(root, 'dist', 'cli.js'), flag], { encoding: 'utf8' });
      expect(d.status, d.stderr).toBe(0);
      expect(d.stdout).toBe(`${version}\n`);
    }
    expect(run('--help').out).toContain('-v, --version');
  });

  it('without a loadable native addon: --version still works, any command is one line on stderr', () => {
    const root = join(import.meta.dirname, '..');
    const cli = join(root, 'dist', 'cli.js');
    // The napi loader tries this path first; a missing file makes the whole load fail.
    const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: join(root, 'no-such-addon.node') };
    const v = spawnSync(process.execPath, [cli, '--version'], { encoding: 'utf8', env });
    expect(v.status, v.stderr).toBe(0);
    const r = spawnSync(process.execPath, [cli, 'info'], { encoding: 'utf8', env });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^ferroconv: cannot load the native addon: Cannot find native binding\.[^\n]*\n$/);
  });

  it.each([
    [['train', '--epochs', 'x'], "--epochs: expected an integer >= 1, got 'x'"],
    [['train', '--bogus'], "Unknown option '--bogus'"],
    [['train', '--model', 'nope'], "--model: unknown model 'nope'"],
    [['train', '--dataset', '/no/such/dir'], "--dataset: '/no/such/dir' is neither"],
    [['train', '--optimizer', 'nope', '--limit', '10'], "--optimizer: unknown optimizer 'nope'"],
    [['train', '--model', 'resnet18', '--limit', '10'], '--model resnet18: expects 3-channel images'],
    [['eval'], '--checkpoint is required'],
    [['eval', '--checkpoint', '/no/such.safetensors'], '--checkpoint: file not found'],
    [['predict', '--checkpoint', '/no/such.safetensors'], 'no images given'],
    [['frobnicate'], "unknown command 'frobnicate'"],
    [['app'], 'expected one task, one of localization, segmentation'],
    [['app', 'detection'], 'expected one task'],
    [['app', 'pose', '--epochs', '0'], "--epochs: expected an integer >= 1, got '0'"],
  ])('%j fails with one line and no stack trace', (args, message) => {
    const r = run(...args);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(message);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).not.toMatch(/\n\s+at /);
  });

  it('app runs a task: a short pose run prints its metrics as JSON and writes the picture', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-app-'));
    const r = run('app', 'pose', '--epochs', '1', '--train', '64', '--out', dir, '--json');
    expect(r.code, r.err).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toMatch(/^epoch 1\/1: heatmap MSE/);
    const result = JSON.parse(lines[lines.length - 1]);
    expect(result.task).toBe('pose');
    expect(result.metrics.pck).toBeGreaterThanOrEqual(0);
    expect(result.metrics.pck).toBeLessThanOrEqual(1);
    expect(result.picture).toBe(join(dir, 'pose.png'));
    const meta = await sharp(result.picture).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBeGreaterThan(8 * 64);
  });

  it('trains briefly, then evaluates and predicts with the checkpoint; a corrupt checkpoint is an error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-cli-'));
    const t = run(
      'train',
      '--epochs',
      '1',
      '--limit',
      '640',
      '--batch-size',
      '64',
      '--checkpoint-dir',
      dir,
      '--no-progress',
      '--schedule',
      'none',
    );
    expect(t.code, t.err).toBe(0);
    expect(t.out).toMatch(/test accuracy: \d+\.\d\d%/);
    const e = run('eval', '--checkpoint', join(dir, 'checkpoint.safetensors'));
    expect(e.code, e.err).toBe(0);
    expect(e.out).toMatch(/test accuracy: \d+\.\d\d% .* on 10000 images/);
    const bad = join(dir, 'bad.safetensors');
    writeFileSync(bad, 'not a model');
    const b = run('eval', '--checkpoint', bad);
    expect(b.code).toBe(1);
    expect(b.err).toMatch(/^ferroconv: safetensors .*bad\.safetensors/);
    // A real digit as a PNG (MNIST test image 0, a 7), written with sharp.
    const png = join(dir, 'seven.png');
    const img = mnist({ train: false, normalize: false }).get(0).image;
    await sharp(Buffer.from(Uint8Array.from(img.data, (v) => Math.round(v * 255))), {
      raw: { width: 28, height: 28, channels: 1 },
    })
      .png()
      .toFile(png);
    const ok = run('predict', '--checkpoint', join(dir, 'model.safetensors'), '--top', '2', png);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toMatch(/seven\.png: \d - \w+ \d+\.\d%, \d - \w+ \d+\.\d%/);
    const p = run('predict', '--checkpoint', join(dir, 'model.safetensors'), join(dir, 'missing.png'));
    expect(p.code).toBe(2);
    expect(p.err).toContain('image not found');
    // export: the checkpoint as ONNX, which ONNX Runtime runs to ferroconv's logits.
    const onnxPath = join(dir, 'model.onnx');
    const x = run('export', '--checkpoint', join(dir, 'model.safetensors'), '--onnx', onnxPath, '--dynamic-batch');
    expect(x.code, x.err).toBe(0);
    expect(x.out).toContain('(opset 17, input [batch, 1, 28, 28])');
    const model = models.mnistNet();
    model.load(join(dir, 'model.safetensors'));
    const images = mnist({ train: false });
    const batch = new Tensor(new Float32Array(3 * 784), [3, 1, 28, 28]);
    for (let i = 0; i < 3; i++) batch.data.set(images.get(i).image.data, i * 784);
    const want = await model.predict(batch);
    const session = await ort.InferenceSession.create(onnxPath);
    const got = (await session.run({ input: new ort.Tensor('float32', batch.data, batch.shape) })).output;
    expect(got.dims).toEqual([3, 10]);
    const d = got.data as Float32Array;
    for (let i = 0; i < d.length; i++) expect(Math.abs(d[i] - want.data[i])).toBeLessThan(1e-4);
    expect(run('export', '--checkpoint', join(dir, 'model.safetensors')).err).toContain('--onnx is required');
    // quantize: int8 within a point of the float model on the test set, saved and loadable, and
    // its ONNX QDQ file runs in ONNX Runtime.
    const qPath = join(dir, 'q.safetensors');
    const qOnnx = join(dir, 'q.onnx');
    const q = run('quantize', '--checkpoint', join(dir, 'model.safetensors'), '--out', qPath, '--onnx', qOnnx);
    expect(q.code, q.err).toBe(0);
    const m = /float (\d+\.\d\d)%, int8 (\d+\.\d\d)%/.exec(q.out);
    expect(m, q.out).not.toBeNull();
    expect(Math.abs(Number(m?.[1]) - Number(m?.[2]))).toBeLessThan(1);
    const { loadQuantized } = await import('../src/index.js');
    const int8 = loadQuantized(qPath);
    // Unoptimised where ORT's fused int8 kernels saturate (see ortInt8Options).
    const { ortInt8Options } = await import('./onnx-helpers.js');
    const qs = await ort.InferenceSession.create(qOnnx, ortInt8Options());
    const qo = (await qs.run({ input: new ort.Tensor('float32', batch.data.subarray(0, 784), [1, 1, 28, 28]) })).output;
    const mine = int8.forward(new Tensor(batch.data.subarray(0, 784), [1, 1, 28, 28]));
    for (let i = 0; i < 10; i++) expect(Math.abs((qo.data as Float32Array)[i] - mine.data[i])).toBeLessThan(1e-4);
    expect(run('quantize', '--checkpoint', join(dir, 'model.safetensors')).err).toContain('--out is required');
    expect(
      run('quantize', '--checkpoint', join(dir, 'model.safetensors'), '--out', qPath, '--observer', 'kl').code,
    ).toBe(2);
    // prune: half of every conv's channels removed and fine-tuned; the smaller model loads back
    // into eval, predict and export by --checkpoint, and has the parameters the command printed.
    const pruned = join(dir, 'pruned.safetensors');
    const args = ['--checkpoint', join(dir, 'model.safetensors'), '--limit', '640', '--epochs', '1', '--no-progress'];
    const pc = run('prune', ...args, '--out', pruned);
    expect(pc.code, pc.err).toBe(0);
    const counts = /parameters ([\d,]+) -> ([\d,]+), mult-adds ([\d,]+) -> ([\d,]+) per image/.exec(pc.out);
    expect(counts, pc.out).not.toBeNull();
    const [p0, p1, m0, m1] = counts!.slice(1).map((v) => Number(v.replace(/,/g, '')));
    expect(p0).toBe(models.mnistNet().numParameters());
    expect(p1).toBeLessThan(p0 / 2);
    expect(m1).toBeLessThan(m0 / 2);
    expect(pc.out).toMatch(
      /test accuracy: \d+\.\d\d% before, \d+\.\d\d% right after pruning, \d+\.\d\d% after 1 epoch/,
    );
    const pe = run('eval', '--checkpoint', pruned);
    expect(pe.code, pe.err).toBe(0);
    const pp = run('predict', '--checkpoint', pruned, png);
    expect(pp.code, pp.err).toBe(0);
    const small = models.mnistNet();
    const { quant } = await import('../src/index.js');
    const { loadSafetensors } = await import('../src/io/safetensors.js');
    const w = loadSafetensors(pruned).tensors;
    expect(quant.resizeToWeights(small, w)).toBeGreaterThan(0);
    small.loadStateDict(w);
    expect(small.numParameters()).toBe(p1);
    // Magnitude pruning keeps the shapes and zeroes 70% of the conv and linear weights.
    const mag = join(dir, 'sparse.safetensors');
    const pm = run('prune', ...args, '--method', 'magnitude', '--amount', '0.7', '--out', mag);
    expect(pm.code, pm.err).toBe(0);
    expect(pm.out).toMatch(/sparsity 70\.00% of the conv and linear weights/);
    const sparse = models.mnistNet().load(mag);
    expect(quant.pruneReport(sparse).sparsity).toBeCloseTo(0.7, 3);
    expect(run('prune', ...args, '--out', mag, '--method', 'random').code).toBe(2);
    // A shape that differs in more than channels is refused by name, changing nothing.
    const other = models.mnistNet({ numClasses: 5 });
    expect(() => quant.resizeToWeights(other, w)).toThrow(/resizeToWeights: '.*weight'/);
    expect(other.numParameters()).toBe(models.mnistNet({ numClasses: 5 }).numParameters());
  }, 240_000);
});
