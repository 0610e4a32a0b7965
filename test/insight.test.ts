// Seeing inside a model: summary() against torchinfo 1.8's numbers for the zoo
// (test/fixtures/summary.json, made by test/fixtures/gen_summary.py), receptive fields against
// the hand-derived values of the classic networks.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { summary } from '../src/insight/summary.js';
import { profile } from '../src/insight/profile.js';
import { differenceOfGaussians, filter, KERNELS, kernelNames } from '../src/insight/kernels.js';
import {
  features,
  filters,
  gradCam,
  gradCamMap,
  inputGradientMap,
  receptiveFieldOverlay,
  saliency,
} from '../src/insight/visualize.js';
import {
  alexnet,
  densenet121,
  googlenet,
  inceptionV3,
  mobilenetV2,
  resnet18,
  resnet50,
  squeezenet1_1,
  vgg16,
  vgg16Bn,
} from '../src/models/index.js';
import {
  AdaptiveAvgPool2d,
  Conv2d,
  Flatten,
  isInferenceFusionEnabled,
  Linear,
  Module,
  loadOnnx,
  manualSeed,
  models,
  noGrad,
  rand,
  ReLU,
  Sequential,
  Tanh,
  Tensor,
} from '../src/index.js';

interface TorchinfoLayer {
  name: string;
  class_name: string;
  depth: number;
  output_size: number[];
  macs: number;
  is_leaf: boolean;
}
interface TorchinfoModel {
  input_size: number[];
  total_params: number;
  trainable_params: number;
  total_mult_adds: number;
  layers?: TorchinfoLayer[];
}
const golden = JSON.parse(readFileSync(new URL('./fixtures/summary.json', import.meta.url), 'utf8')) as {
  models: Record<string, TorchinfoModel>;
};

const zoo: [string, () => Module, number][] = [
  ['alexnet', () => alexnet(), 224],
  ['vgg16', () => vgg16(), 224],
  ['vgg16_bn', () => vgg16Bn(), 224],
  ['googlenet', () => googlenet({ auxLogits: false }), 224],
  ['resnet18', () => resnet18(), 224],
  ['resnet50', () => resnet50(), 224],
  ['densenet121', () => densenet121(), 224],
  ['squeezenet1_1', () => squeezenet1_1(), 224],
  ['mobilenet_v2', () => mobilenetV2(), 224],
  ['inception_v3', () => inceptionV3({ auxLogits: false }), 299],
];

const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, FERROCONV_NUM_THREADS: '2' },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

describe('summary', () => {
  it('pins ResNet-50: 25,557,032 parameters and 4.09 G mult-adds at [1, 3, 224, 224]', () => {
    const s = summary(resnet50(), [1, 3, 224, 224]);
    expect(s.totalParams).toBe(25_557_032);
    expect((s.totalMacs / 1e9).toFixed(2)).toBe('4.09');
    expect(String(s)).toMatch(/Total mult-adds \(G\): 4\.09/);
  });

  it.each(zoo)(
    '%s: parameters and mult-adds equal torchinfo, leaf by leaf where the fixture lists them',
    (name, build, size) => {
      const ref = golden.models[name];
      const model = build();
      const s = summary(model, [1, 3, size, size]);
      expect(s.totalParams).toBe(ref.total_params);
      expect(s.trainableParams).toBe(ref.trainable_params);
      expect(s.totalMacs).toBe(ref.total_mult_adds);
      if (!ref.layers) return;
      // torchinfo lists every module call, in call order; ours too. Leaves carry the numbers
      // (its container MACs are not summed, and are computed differently).
      const theirs = ref.layers.filter((l) => l.is_leaf);
      const ours = s.rows.filter((r) => r.leaf);
      const key = (path: string, type: string) => `${path}:${type}`;
      const byKey = new Map<string, typeof ours>();
      for (const r of ours) byKey.set(key(r.path, r.type), [...(byKey.get(key(r.path, r.type)) ?? []), r]);
      for (const l of theirs) {
        const mine = byKey.get(key(l.name, l.class_name))?.shift();
        expect(mine, `${name}: layer ${l.name} (${l.class_name})`).toBeDefined();
        expect(mine!.outputShape).toEqual(l.output_size);
        expect(mine!.macs).toBe(l.macs);
      }
    },
    120_000,
  );

  it('gives the receptive fields of the classic networks (size/jump, start at the first unit)', () => {
    const field = (m: Module, path: string, size = 224) => {
      const row = summary(m, [1, 3, size, size]).rows.find((r) => r.path === path)!;
      return row.receptiveField![0];
    };
    // AlexNet's pool5: 11 (conv1, /4) +2*4 (pool) +4*8 (conv2) +2*8 (pool) +3*2*16 (conv3-5)
    // +2*16 (pool) = 195 pixels, 32 apart.
    expect(field(alexnet(), 'features.12')).toMatchObject({ size: 195, jump: 32 });
    // VGG-16's pool5: 212.
    expect(field(vgg16(), 'features.30')).toMatchObject({ size: 212, jump: 32 });
    // torchvision's ResNet-50 (stride in the 3x3 conv, "v1.5"): 7 +2*2 (maxpool) +3*2*4 (layer1)
    // +2*4 +3*2*8 (layer2) +2*8 +5*2*16 (layer3) +2*16 +2*2*32 (layer4) = 427; the residual
    // paths see less, so the union is the main path's.
    const r50 = field(resnet50(), 'layer4');
    expect(r50).toEqual({ size: 427, jump: 32, start: 0.5 });
    // Unequal axes and padding: a 3x5 kernel, stride [2, 1], padding [1, 0], then a 2x2 pool.
    const m = new Sequential(new Conv2d(1, 2, [3, 5], { stride: [2, 1], padding: [1, 0] }), new ReLU());
    const rf = summary(m, [1, 1, 9, 9]).rows.find((r) => r.path === '0')!.receptiveField!;
    expect(rf[0]).toEqual({ size: 3, jump: 2, start: 0.5 });
    expect(rf[1]).toEqual({ size: 5, jump: 1, start: 2.5 });
  });

  it('counts frozen and shared parameters once, reports memory, and changes nothing', () => {
    const shared = new Linear(4, 4);
    class Twice extends Module {
      readonly fc = this.addModule('fc', shared);
      readonly head = this.addModule('head', new Linear(4, 2));
      forward(x: Tensor): Tensor {
        return this.head.call(this.fc.call(this.fc.call(x)));
      }
    }
    const m = new Twice();
    m.freeze('head.');
    m.train();
    const before = m.fc.weight.data.slice();
    const s = summary(m, [3, 4]);
    expect(s.totalParams).toBe(20 + 10);
    expect(s.trainableParams).toBe(20);
    expect(s.frozenParams).toBe(10);
    expect(s.rows.map((r) => r.path)).toEqual(['', 'fc', 'fc', 'head']);
    expect(s.totalMacs).toBe(3 * 20 * 2 + 3 * 10); // the shared layer runs twice
    expect(s.bytes).toEqual({ input: 48, activations: (12 + 12 + 6) * 4, params: 120 });
    expect(m.training).toBe(true);
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(m.fc.weight.data).toEqual(before);
    expect(m.fc.weight.grad).toBeNull();
    expect(() => summary(m, [3, 0])).toThrow(/summary: expected an input shape of positive integers/);
    expect(() => summary(m, [3, 5])).toThrow(/Linear/);
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(m.training).toBe(true);
  });
});

describe('ferroconv summary', () => {
  it('prints the table and the JSON, and refuses a bad input shape in one line', () => {
    const t = cli('summary', '--model', 'resnet50', '--depth', '1');
    expect(t.code, t.err).toBe(0);
    expect(t.out).toMatch(/layer4 \(Sequential\) +\[1, 2048, 7, 7\] +14,964,736 .* 427\/32\/0\.5/);
    expect(t.out).toContain('Total params: 25,557,032');
    expect(t.out).not.toContain('conv1 (Conv2d)  '.repeat(2));
    const j = cli('summary', '--model', 'mnist-net', '--input', '2,1,28,28', '--json');
    expect(j.code, j.err).toBe(0);
    const s = JSON.parse(j.out);
    expect(s.inputShapes).toEqual([[2, 1, 28, 28]]);
    expect(s.totalParams).toBe(s.rows[0].params);
    const bad = cli('summary', '--model', 'resnet18', '--input', '1,3,x');
    expect(bad.code).toBe(2);
    expect(bad.err).toBe("ferroconv: --input: expected positive integers such as 1,3,224,224, got '1,3,x'\n");
    const help = cli('summary', '--help');
    expect(help.out).toContain('ferroconv summary --model NAME');
  }, 120_000);
});

/** The filter of each channel computed directly: pad as `border` asks, then cross-correlate. */
function referenceFilter(x: Tensor, k: readonly (readonly number[])[], border: string): Float32Array {
  const [n, c, h, w] = x.shape;
  const kh = k.length;
  const kw = k[0].length;
  const ph = (kh - 1) / 2;
  const pw = (kw - 1) / 2;
  const at = (i: number, size: number): number | null => {
    if (i >= 0 && i < size) return i;
    if (border === 'constant') return null;
    if (border === 'edge') return Math.min(size - 1, Math.max(0, i));
    return i < 0 ? -i : 2 * (size - 1) - i; // reflect (without repeating the edge)
  };
  const out = new Float32Array(x.size);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < h; y++) {
      for (let xx = 0; xx < w; xx++) {
        let sum = 0;
        for (let dy = 0; dy < kh; dy++) {
          for (let dx = 0; dx < kw; dx++) {
            const sy = at(y + dy - ph, h);
            const sx = at(xx + dx - pw, w);
            if (sy !== null && sx !== null) sum += k[dy][dx] * x.data[p * h * w + sy * w + sx];
          }
        }
        out[p * h * w + y * w + xx] = sum;
      }
    }
  }
  return out;
}

describe('filter: the classic kernels through conv2d', () => {
  it('equals a direct computation for every named kernel and border, on an awkward shape', () => {
    manualSeed(3);
    const x = rand([2, 3, 7, 11]);
    for (const border of ['edge', 'reflect', 'constant'] as const) {
      for (const name of kernelNames()) {
        const y = filter(x, name, { border });
        expect(y.shape).toEqual(x.shape);
        const ref = referenceFilter(x, KERNELS[name], border);
        let err = 0;
        for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(ref[i] - y.data[i]));
        expect(err, `${name}, ${border}`).toBeLessThan(1e-5);
      }
    }
    // Identity is exact, a blur keeps a flat image flat, and [H, W] / [C, H, W] keep their shape.
    expect(filter(x, 'identity').data).toEqual(x.data);
    const flat = new Tensor(new Float32Array(5 * 6).fill(0.25), [5, 6]);
    for (const v of filter(flat, 'gaussian-blur-5').data) expect(v).toBeCloseTo(0.25, 6);
    expect(filter(rand([3, 4, 5]), [[1, 2, 1]]).shape).toEqual([3, 4, 5]);
  });

  it('has an on-centre/off-surround difference of Gaussians that sums to zero', () => {
    const dog = differenceOfGaussians(9, 1, 2);
    expect(dog.flat().reduce((a, b) => a + b, 0)).toBeCloseTo(0, 12);
    expect(dog[4][4]).toBeGreaterThan(0);
    expect(dog[4][1]).toBeLessThan(0);
    expect(dog[0][0]).toBeLessThan(0);
    // A bright spot on a dark ground answers strongly at its centre; a flat region not at all.
    const spot = new Float32Array(15 * 15);
    spot[7 * 15 + 7] = 1;
    const y = filter(new Tensor(spot, [15, 15]), 'dog');
    expect(y.data[7 * 15 + 7]).toBeCloseTo(dog[4][4], 6);
    expect(filter(new Tensor(new Float32Array(100).fill(1), [10, 10]), 'dog').data[55]).toBeCloseTo(0, 6);
    expect(() => differenceOfGaussians(4)).toThrow(/odd integer/);
    expect(() => differenceOfGaussians(9, 2, 1)).toThrow(/sigmaCentre < sigmaSurround/);
  });

  it('refuses bad kernels and images with a clear Error', () => {
    const x = rand([1, 1, 8, 8]);
    expect(() => filter(x, 'blurry' as never)).toThrow(/filter: unknown kernel "blurry" \(expected one of identity/);
    expect(() => filter(x, [[1, 1]])).toThrow(/kernel sizes must be odd, got 1x2/);
    expect(() => filter(x, [[1, Number.NaN, 1]])).toThrow(/finite numbers/);
    expect(() => filter(x, [])).toThrow(/expected a kernel name, rows of numbers or a 2-D tensor/);
    expect(() => filter(rand([5]), 'sharpen')).toThrow(/expected an image tensor/);
    expect(() => filter(rand([1, 1, 2, 2]), 'unsharp', { border: 'reflect' })).toThrow(/too small to reflect/);
  });
});

/** A model whose Grad-CAM is known: channel 0 = relu(x), channel 1 = relu(-x), class k = mean of channel k. */
function twoChannelModel(): Sequential {
  const conv = new Conv2d(1, 2, 1, { bias: false });
  conv.weight.data.set([1, -1]);
  const fc = new Linear(2, 2);
  fc.weight.data.set([1, 0, 0, 1]);
  fc.bias!.data.fill(0);
  return new Sequential(conv, new ReLU(), new AdaptiveAvgPool2d(1), new Flatten(), fc);
}

async function pixelStats(path: string) {
  const img = sharp(path);
  const meta = await img.metadata();
  const st = await img.stats();
  return { width: meta.width, height: meta.height, spread: Math.max(...st.channels.map((c) => c.stdev)) };
}

describe('visualize', () => {
  it('Grad-CAM finds where the evidence for each class is', () => {
    manualSeed(5);
    const x = rand([1, 1, 6, 6], { low: -1, high: 1 });
    const model = twoChannelModel();
    const norm = (v: number[]) => {
      const hi = Math.max(...v);
      return v.map((e) => e / hi);
    };
    for (const k of [0, 1]) {
      const r = gradCamMap(model, x, { layer: '1', classIndex: k });
      expect(r.map.shape).toEqual([6, 6]);
      const expected = norm(Array.from(x.data, (v) => Math.max(0, k === 0 ? v : -v)));
      for (const [i, v] of r.map.data.entries()) expect(v).toBeCloseTo(expected[i], 5);
    }
    // The default layer is the last child with a spatial output: the ReLU here ('1').
    expect(gradCamMap(model, x).layer).toBe('1');
    expect(() => gradCamMap(model, x, { layer: 'nope' })).toThrow(
      /gradCam: no layer 'nope' ran in the forward \(layers: 0, 1, 2, 3, 4\)/,
    );
    expect(() => gradCamMap(model, x, { layer: '1', classIndex: 2 })).toThrow(
      /classIndex must be an integer in \[0, 2\)/,
    );
  });

  it('input-gradient saliency equals |finite differences| of the class score', () => {
    manualSeed(7);
    const model = new Sequential(
      new Conv2d(3, 3, 3, { padding: 1 }),
      new Tanh(),
      new Flatten(),
      new Linear(3 * 5 * 4, 4),
    );
    const x = rand([1, 3, 5, 4]);
    const r = inputGradientMap(model, x, { classIndex: 2 });
    const score = (data: Float32Array) => noGrad(() => model.eval().call(new Tensor(data, x.shape)).data[2]);
    const fd = new Float32Array(20);
    const eps = 1e-2;
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < 20; i++) {
        const up = x.data.slice();
        const down = x.data.slice();
        up[c * 20 + i] += eps;
        down[c * 20 + i] -= eps;
        fd[i] = Math.max(fd[i], Math.abs((score(up) - score(down)) / (2 * eps)));
      }
    }
    // The map is scaled to [0, 1] by its minimum and maximum.
    const lo = Math.min(...fd);
    const hi = Math.max(...fd);
    for (const [i, v] of r.map.data.entries()) expect(v).toBeCloseTo((fd[i] - lo) / (hi - lo), 2);
    expect(model.parameters().every((p) => p.grad === null && p.requiresGrad)).toBe(true);
  });

  it('writes filter, feature, Grad-CAM, saliency and receptive-field pictures that are not blank, changing nothing', async () => {
    manualSeed(11);
    const dir = mkdtempSync(join(tmpdir(), 'ferroconv-show-'));
    const model = resnet18({ numClasses: 10 });
    model.train();
    const before = model.stateDict().get('layer1.0.conv1.weight')!.data.slice();
    const image = rand([1, 3, 64, 64]);
    const f = await filters(model, { out: join(dir, 'filters.png') });
    expect([f.layer, f.count]).toEqual(['conv1', 64]);
    const feat = await features(model, image, { layer: 'layer1', out: join(dir, 'features.png'), max: 16 });
    expect(feat.shape).toEqual([1, 64, 16, 16]);
    const cam = await gradCam(model, image, { out: join(dir, 'cam.png') });
    expect(cam.layer).toBe('layer4');
    const sal = await saliency(model, image, { out: join(dir, 'saliency.png'), classIndex: 3 });
    expect(sal.classIndex).toBe(3);
    const rf = await receptiveFieldOverlay(model, image, { layer: 'layer1', unit: [0, 0], out: join(dir, 'rf.png') });
    // layer1's field is 43 pixels, 4 apart, centred on pixel 0.5 for unit [0, 0]: clipped at 0.
    expect(rf.box).toEqual([0, 0, 22, 22]);
    for (const p of [f, feat, cam, sal, rf]) {
      const s = await pixelStats(p.path);
      expect([s.width, s.height]).toEqual([p.width, p.height]);
      expect(s.spread).toBeGreaterThan(5);
    }
    expect(model.training).toBe(true);
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(model.parameters().every((p) => p.grad === null && p.requiresGrad)).toBe(true);
    expect(model.stateDict().get('layer1.0.conv1.weight')!.data).toEqual(before);
    await expect(features(model, image, { layer: 'fc', out: join(dir, 'x.png') })).rejects.toThrow(
      /features: layer 'fc' gives \[1, 10\], expected \[1, C, H, W\] maps/,
    );
  }, 60_000);
});

describe('ferroconv filter and show', () => {
  it('filters an image, draws every kernel, and shows Grad-CAM of an MNIST digit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferroconv-cli-'));
    const input = join(dir, 'in.png');
    await sharp({ create: { width: 20, height: 16, channels: 3, background: '#204080' } })
      .composite([{ input: { create: { width: 8, height: 8, channels: 3, background: '#ffcc00' } }, left: 6, top: 4 }])
      .png()
      .toFile(input);
    const one = cli('filter', '--kernel', 'sharpen', input, join(dir, 'sharp.png'));
    expect(one.code, one.err).toBe(0);
    expect((await pixelStats(join(dir, 'sharp.png'))).width).toBe(20);
    const all = cli('filter', '--kernel', 'all', input, join(dir, 'all.png'));
    expect(all.code, all.err).toBe(0);
    expect(all.out).toMatch(/wrote .*all\.png \(12 kernels/);
    const rows = cli('filter', '--kernel', '0,1,0;1,-4,1;0,1,0', '--grey', input, join(dir, 'lap.png'));
    expect(rows.code, rows.err).toBe(0);
    const bad = cli('filter', '--kernel', '1,x', input, join(dir, 'bad.png'));
    expect([bad.code, bad.err]).toEqual([
      2,
      "ferroconv: --kernel: expected a name or rows such as '0,-1,0;-1,5,-1;0,-1,0', got '1,x'\n",
    ]);
    const show = cli('show', 'gradcam', '--model', 'mnist-net', '--out', join(dir, 'cam.png'));
    expect(show.code, show.err).toBe(0);
    expect(show.out).toMatch(/gradcam for class \d/);
    const noLayer = cli('show', 'features', '--model', 'mnist-net', '--out', join(dir, 'f.png'));
    expect(noLayer.code).toBe(2);
    expect(noLayer.err).toContain('--layer is required for features');
  }, 120_000);
});

describe('profile and ferroconv time', () => {
  it('times every layer of a training step, names conv algorithms, and leaves the model as it was', async () => {
    manualSeed(2);
    const model = models.mnistNet();
    model.eval();
    const stats = model.namedBuffers().map(([, b]) => b.data.slice());
    const r = await profile(model, [16, 1, 28, 28], { iterations: 3, warmup: 1 });
    expect(r.rows.map((row) => row.type)).toEqual(summary(model, [16, 1, 28, 28]).rows.map((row) => row.type));
    const convs = r.rows.filter((row) => row.type === 'Conv2d');
    expect(convs.length).toBeGreaterThan(0);
    for (const c of convs) {
      expect(c.algorithms).toHaveLength(3);
      for (const a of c.algorithms!) expect(['direct', 'im2col', 'fft', 'winograd']).toContain(a);
      expect(c.forwardMs).toBeGreaterThan(0);
      expect(c.backwardMs).toBeGreaterThan(0);
      // 2 flops per multiply-add: weight elements times output positions.
      const conv = model.getSubmodule(c.path) as Conv2d;
      const [n, , oh, ow] = c.outputShape!;
      expect(c.flops).toBe(2 * conv.weight.size * n * oh * ow);
      expect(c.gflops!.forward).toBeGreaterThan(0);
      expect(c.gflops!.backward).toBeGreaterThan(0);
    }
    // Own times add up to no more than the step (the rest is the backward's bookkeeping).
    const own = r.rows.reduce((a, row) => a + row.forwardMs + row.backwardMs, 0);
    expect(own).toBeLessThanOrEqual(r.stepMs * 1.5);
    expect(r.stepMs).toBeGreaterThan(0);
    expect(String(r)).toMatch(/Average Forward-Backward: [\d.]+ ms\./);
    // Train mode ran (batch statistics), yet the running statistics, mode and gradients are back.
    expect(model.training).toBe(false);
    for (const [i, [, b]] of model.namedBuffers().entries()) expect(b.data).toEqual(stats[i]);
    expect(model.parameters().every((p) => p.grad === null)).toBe(true);
    await expect(profile(model, [16, 1, 28], { iterations: 1 })).rejects.toThrow(/MnistNet|expected/);
    await expect(profile(model, [16, 1, 28, 28], { iterations: 0 })).rejects.toThrow(
      'profile: iterations must be a positive integer, got 0',
    );
  }, 60_000);

  it('reads an imported ONNX model node by node, with the counts of the model it was exported from', async () => {
    manualSeed(3);
    const dir = mkdtempSync(join(tmpdir(), 'ferroconv-onnx-insight-'));
    const model = resnet18({ numClasses: 10 }).eval();
    const file = join(dir, 'r18.onnx');
    await model.exportOnnx(file, { inputShape: [1, 3, 64, 64], dynamicBatch: true });
    const imported = await loadOnnx(file);
    expect(imported.inputShapes).toEqual([[-1, 3, 64, 64]]); // a symbolic batch
    const a = summary(model, [1, 3, 64, 64]);
    const b = summary(imported, [1, 3, 64, 64]);
    expect(b.totalParams).toBe(a.totalParams);
    expect(b.totalMacs).toBe(a.totalMacs);
    expect(b.rows.filter((r) => r.type === 'Conv')).toHaveLength(20);
    const t = await profile(imported, [2, 3, 64, 64], { iterations: 2, warmup: 0 });
    expect(t.rows.filter((r) => r.type === 'Conv' && r.forwardMs > 0 && r.backwardMs > 0)).toHaveLength(20);
    const cli1 = cli('time', '--model', file, '--batch', '3', '--iterations', '2', '--json');
    expect(cli1.code, cli1.err).toBe(0);
    const j = JSON.parse(cli1.out);
    expect(j.inputShape).toEqual([3, 3, 64, 64]);
    expect(j.rows.length).toBeGreaterThan(20);
    const cli2 = cli(
      'time',
      '--model',
      'resnet18',
      '--batch',
      '2',
      '--input',
      '2,3,32,32',
      '--iterations',
      '1',
      '--sort',
    );
    expect(cli2.code, cli2.err).toBe(0);
    expect(cli2.out).toMatch(/conv1 \(Conv2d\) +\[2, 64, 16, 16\] .* (im2col|winograd|direct|fft) \//);
    expect(cli2.out).toContain('Average Backward pass');
  }, 120_000);
});

describe('examples/mlp-vs-cnn.ts', () => {
  it('prints both models with their parameters, and the CNN reads shifted digits better', () => {
    const script = join(import.meta.dirname, '..', 'examples', 'mlp-vs-cnn.ts');
    const r = spawnSync(process.execPath, ['--import', 'tsx', script, '--epochs', '1', '--limit', '3000'], {
      encoding: 'utf8',
      env: { ...process.env, FERROCONV_NUM_THREADS: '2' },
    });
    expect(r.status, r.stderr).toBe(0);
    const rows = r.stdout
      .split('\n')
      .filter((l) => /^\| (MLP|CNN) \|/.test(l))
      .map((l) => l.split('|').map((c) => c.trim()));
    expect(rows.map((c) => [c[1], c[2], c[3]])).toEqual([
      ['MLP', '28,630', 'MNIST'],
      ['CNN', '22,826', 'MNIST'],
      ['MLP', '28,630', 'shifted MNIST'],
      ['CNN', '22,826', 'shifted MNIST'],
    ]);
    const pct = (s: string) => Number(s.replace('%', ''));
    // Trained on centred digits, tested on shifted ones: weight sharing and pooling carry over.
    expect(pct(rows[1][5])).toBeGreaterThan(pct(rows[0][5]) + 10);
  }, 120_000);
});
