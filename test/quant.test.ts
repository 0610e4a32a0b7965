// Int8 quantization (src/quant) and batch-norm folding (nn.fuseConvBn): observers on known
// data, quantized layers inside a worst-case error bound derived from the scales, whole models
// close to their float selves and identical on every SIMD level, eager forward equal to the
// compiled plan, and clear errors for bad input. The int8 kernels themselves are checked bit for
// bit against an integer reference on every path in crates/kernels/tests/quant.rs.
import { describe, expect, it } from 'vitest';
import {
  conv2d,
  loadQuantized,
  manualSeed,
  mnist,
  models,
  nn,
  planInfo,
  quant,
  quantize,
  randn,
  Tensor,
} from '../src/index.js';
import { native } from '../src/native.js';
import { det, thrown, withKernels } from './helpers.js';

const { affineParams, HistogramObserver, MinMaxObserver, makeObserver } = quant;

/** Values with a long tail: most in [0, 1], a few far out. */
function tailed(n: number, seed: number): Float32Array {
  const v = det([n], seed).data.map((x) => Math.abs(x));
  for (let i = 0; i < n; i += 4999) v[i] = 40 + (i % 7);
  return v;
}

describe('observers', () => {
  it('min-max covers the range and keeps 0.0 exact', () => {
    const o = new MinMaxObserver();
    o.observe(Float32Array.from([-1, 0.5, 2]));
    o.observe(Float32Array.from([3, -0.25]));
    expect(o.range()).toEqual([-1, 3]);
    const q = o.qparams();
    expect(q.scale).toBeCloseTo(4 / 255, 7);
    expect(q.zeroPoint).toBe(Math.round(1 / q.scale));
    // Only positive values still include 0: the zero point is 0 and the scale covers max.
    expect(affineParams(0.5, 2)).toEqual({ scale: Math.fround(2 / 255), zeroPoint: 0 });
    expect(affineParams(-3, -1).zeroPoint).toBe(255);
    expect(() => new MinMaxObserver().qparams()).toThrow(/no finite values/);
    const nan = new MinMaxObserver();
    nan.observe(Float32Array.from([Number.NaN, Number.POSITIVE_INFINITY]));
    expect(() => nan.qparams()).toThrow(/finite/);
  });

  it('the histogram keeps every count when its range doubles', () => {
    const o = new HistogramObserver('percentile', 99);
    o.observe(Float32Array.from([0.1, -0.2, 0.3]));
    const first = o.limit;
    o.observe(Float32Array.from([5, -7]));
    expect(o.limit).toBeGreaterThanOrEqual(7);
    expect(o.limit / first).toBe(2 ** Math.round(Math.log2(o.limit / first)));
    expect(o.counts.reduce((a, b) => a + b, 0)).toBe(5);
  });

  it('percentile and entropy clip a long tail that min-max keeps', () => {
    const data = tailed(100_000, 3);
    const ranges = (['minmax', 'percentile', 'entropy'] as const).map((k) => {
      const o = makeObserver(k, 99.9);
      o.observe(data);
      return o.range()[1];
    });
    expect(ranges[0]).toBe(46);
    // 0.02% of the values are outliers at 40+: the 99.9th percentile is below them.
    expect(ranges[1]).toBeLessThan(41);
    expect(ranges[1]).toBeGreaterThan(0.9);
    // KL keeps the bulk [0, 1] at far better resolution than the full range would.
    expect(ranges[2]).toBeLessThan(20);
    expect(ranges[2]).toBeGreaterThan(0.9);
    expect(() => makeObserver('histogram' as never)).toThrow(/observer must be/);
    expect(() => new HistogramObserver('percentile', 30)).toThrow(/percentile/);
  });
});

/** Worst-case |int8 - float| of one conv + ReLU output from its scales (see the test below). */
describe('a quantized conv stays inside the error bound its scales imply', () => {
  it('conv + ReLU: |y_q - y| <= s_x/2 sum|w_q s_w| + s_w/2 sum|x| + s_x s_w / 2 + s_y / 2', async () => {
    manualSeed(4);
    const conv = new nn.Conv2d(5, 7, 3, { padding: 1 });
    const model = new nn.Sequential(conv, new nn.ReLU());
    model.eval();
    const x = randn([4, 5, 9, 8]);
    const q = await quantize(model, x);
    const node = q.graph.nodes.find((n) => n.op === 'conv');
    if (node?.op !== 'conv') throw new Error('no conv node');
    // Why this bound: x is rounded to the nearest step of s_x (|dx| <= s_x/2; the test input is the
    // calibration batch, so no value is clipped), each weight to the nearest step of its channel's
    // s_w (|dw| <= s_w/2), the bias to a step of s_x*s_w; the int32 sum is exact; the output is
    // rounded once to a step of s_y (<= s_y/2) and clamped towards the float value's range. ReLU
    // does not widen a difference. So per output: sum|w_hat| s_x/2 + sum|x| s_w/2 + s_x s_w/2 +
    // s_y/2, with sums over the output's receptive field (plus float rounding, 1e-5 relative).
    const bufs = q.bufferData();
    const wScale = bufs.get(node.weight.replace(/_weight$/, '_wscale')) as Float32Array;
    const wq = new Int8Array(bufs.get(node.weight)!.buffer, 0, 7 * 5 * 9);
    const sx = node.inputScale;
    const sy = node.outputScale;
    const absX = new Tensor(x.data.map(Math.abs), x.shape);
    const windowSum = conv2d(absX, new Tensor(new Float32Array(5 * 9).fill(1), [1, 5, 3, 3]), null, { padding: 1 });
    const yf = model.forward(x);
    const yq = await q.predict(x);
    let worst = 0;
    for (let n = 0; n < 4; n++) {
      for (let o = 0; o < 7; o++) {
        let sumW = 0;
        for (let k = 0; k < 45; k++) sumW += Math.abs(wq[o * 45 + k]) * wScale[o];
        for (let p = 0; p < 72; p++) {
          const at = (n * 7 + o) * 72 + p;
          const bound = (sx / 2) * sumW + (wScale[o] / 2) * windowSum.data[n * 72 + p] + (sx * wScale[o]) / 2 + sy / 2;
          const err = Math.abs(yq.data[at] - yf.data[at]);
          worst = Math.max(worst, err / bound);
          expect(err).toBeLessThanOrEqual(bound * (1 + 1e-5) + 1e-6);
        }
      }
    }
    // And the bound is not vacuous: the error uses a fair share of it.
    expect(worst).toBeGreaterThan(0.05);
  });
});

describe('quantize', () => {
  it('quantizes the MNIST network and ResNet-18 close to their float outputs, as a compiled plan', async () => {
    manualSeed(5);
    for (const [make, shape] of [
      [() => models.mnistNet(), [16, 1, 28, 28]],
      [() => models.resnet18({ numClasses: 10 }), [4, 3, 48, 48]],
    ] as const) {
      const m = make();
      // Statistics that make the folded batch norms matter.
      for (const [k, t] of m.stateDict()) {
        if (k.endsWith('running_var')) t.data.set(det([t.size], 7).data.map((v) => 0.5 + Math.abs(v)));
        if (k.endsWith('running_mean')) t.data.set(det([t.size], 8, 0.3).data);
      }
      m.eval();
      const batches = [0, 1, 2].map(() => randn([...shape]));
      const q = await quantize(m, batches);
      const kinds = new Set(q.graph.nodes.map((n) => n.op));
      expect(kinds.has('float')).toBe(false);
      const x = batches[1];
      const yf = m.forward(x);
      const yq = await q.predict(x);
      expect(planInfo(q)?.planned).toBe(true);
      // The eager forward makes the same kernel calls as the plan: equal bit for bit.
      expect(Buffer.from(q.forward(x).data.buffer).equals(Buffer.from(yq.data.buffer))).toBe(true);
      let err = 0;
      let mag = 0;
      for (let i = 0; i < yf.size; i++) {
        err = Math.max(err, Math.abs(yf.data[i] - yq.data[i]));
        mag = Math.max(mag, Math.abs(yf.data[i]));
      }
      // Untrained nets, so only a loose relative bound: a few percent of the logits' range.
      expect(err / mag).toBeLessThan(0.08);
    }
  });

  it('gives the same bytes on every SIMD level, any batch size, and one batch or many', async () => {
    manualSeed(6);
    const m = models.resnet18({ numClasses: 5 });
    m.eval();
    const x = randn([3, 3, 40, 40]);
    const q = await quantize(m, x);
    const best = q.forward(x);
    const scalar = withKernels({ simd: 'scalar' }, () => q.forward(x));
    expect(Buffer.from(scalar.data.buffer).equals(Buffer.from(best.data.buffer))).toBe(true);
    const one = q.forward(new Tensor(x.data.slice(2 * 3 * 40 * 40), [1, 3, 40, 40]));
    expect(Array.from(one.data)).toEqual(Array.from(best.data.subarray(10)));
  });

  it('folds batch norm, fuses ReLU and residuals, and writes the logits as float from the last linear', async () => {
    const m = models.resnet18({ numClasses: 4 });
    m.eval();
    const q = await quantize(m, randn([2, 3, 32, 32]));
    const convs = q.graph.nodes.filter((n) => n.op === 'conv');
    expect(convs.length).toBe(21); // 20 convs + the classifier
    expect(convs.filter((c) => c.op === 'conv' && c.residual !== null).length).toBe(8);
    expect(convs.filter((c) => c.op === 'conv' && c.relu).length).toBe(17);
    const last = convs[convs.length - 1];
    expect(last.op === 'conv' && last.floatOutput).toBe(true);
    expect(q.graph.nodes.some((n) => n.op === 'dequantize')).toBe(false);
  });

  it('runs calls without an int8 kernel in float between dequantize and quantize', async () => {
    manualSeed(7);
    const m = new nn.Sequential(new nn.Conv2d(2, 4, 3), new nn.Sigmoid(), new nn.Conv2d(4, 3, 1));
    m.eval();
    const x = randn([2, 2, 6, 6]);
    const q = await quantize(m, x);
    const ops = q.graph.nodes.map((n) => n.op);
    expect(ops).toEqual(['quantize', 'conv', 'dequantize', 'float', 'quantize', 'conv', 'dequantize']);
    expect(q.graph.floatBatch).toBe(2);
    const yf = m.forward(x);
    // A batch of 3 runs as chunks of the traced 2 (the last one padded).
    const x3 = randn([3, 2, 6, 6]);
    x3.data.set(x.data);
    const yq = q.forward(x3);
    expect(yq.shape).toEqual([3, 3, 4, 4]);
    for (let i = 0; i < yf.size; i++) expect(Math.abs(yq.data[i] - yf.data[i])).toBeLessThan(0.05);
  });

  it('refuses bad calibration and bad inputs with clear errors', async () => {
    const m = models.mnistNet();
    await expect(quantize(m, [])).rejects.toThrow(/calibration data is empty/);
    await expect(quantize(m, randn([2, 1, 28, 28]), { observer: 'kl' as never })).rejects.toThrow(/observer must be/);
    const bad = randn([2, 1, 28, 28]);
    bad.data[5] = Number.NaN;
    bad.data[6] = Number.POSITIVE_INFINITY;
    await expect(quantize(m, bad)).rejects.toThrow(/finite/);
    const q = await quantize(m, randn([2, 1, 28, 28]));
    expect(thrown(() => q.forward(randn([2, 1, 27, 28]))).message).toMatch(/expected input \[N, 1, 28, 28\]/);
    expect(m.training).toBe(true); // quantize never changes the model's mode
  });

  it('the int8 entries check their arguments', () => {
    const args = { shape: [1, 2, 2, 2], scale: 0.1, zeroPoint: 3 };
    expect(thrown(() => native.quantizeU8(new Float32Array(8), new Float32Array(3), args)).message).toMatch(
      /quantizeU8: output: expected 8 bytes in 2 floats, got 3/,
    );
    expect(
      thrown(() => native.quantizeU8(new Float32Array(8), new Float32Array(2), { ...args, scale: 0 })).message,
    ).toMatch(/scale/);
    expect(
      thrown(() => native.quantizeU8(new Float32Array(8), new Float32Array(2), { ...args, zeroPoint: 256 })).message,
    ).toMatch(/zero point/);
    const x = new Float32Array(2);
    expect(thrown(() => native.quantizeU8(x, x.subarray(0, 2), { ...args, shape: [1, 2, 1, 1] })).message).toMatch(
      /must not share memory/,
    );
    const conv = {
      conv: {
        inputShape: [1, 4, 3, 3],
        weightShape: [2, 4, 3, 3],
        stride: [1, 1],
        padding: [1, 1, 1, 1],
        dilation: [1, 1],
        groups: 1,
      },
      inputZeroPoint: 0,
      outputZeroPoint: 0,
      relu: false,
      floatOutput: false,
    };
    const call =
      (over: Partial<typeof conv>, weight = new Float32Array(18), residual: Float32Array | null = null) =>
      () =>
        native.qconv2dForward(new Float32Array(9), weight, null, new Float32Array(2), residual, new Float32Array(5), {
          ...conv,
          ...over,
        });
    expect(call({})).not.toThrow();
    expect(thrown(call({}, new Float32Array(17))).message).toMatch(/weight: expected 72 bytes/);
    expect(thrown(call({ inputZeroPoint: -1 })).message).toMatch(/zero point/);
    expect(thrown(call({}, new Float32Array(18), new Float32Array(5))).message).toMatch(/residual/);
  });
});

describe('fuseConvBn', () => {
  it('folds every conv + batch norm pair and keeps the outputs', async () => {
    manualSeed(8);
    for (const [make, shape, pairs] of [
      [() => models.mnistNet(), [2, 1, 28, 28], 3],
      [() => models.resnet18({ numClasses: 3 }), [1, 3, 32, 32], 20],
      [() => models.densenet121({ numClasses: 3 }), [1, 3, 32, 32], 59],
    ] as const) {
      const m = make();
      for (const [k, t] of m.stateDict()) {
        if (k.endsWith('running_var')) t.data.set(det([t.size], 9).data.map((v) => 0.5 + Math.abs(v)));
        if (k.endsWith('running_mean')) t.data.set(det([t.size], 10, 0.3).data);
        if (k.endsWith('.bias') && t.size > 0) t.data.set(det([t.size], 11, 0.2).data);
      }
      m.eval();
      const x = randn([...shape]);
      const before = m.forward(x);
      const params = m.numParameters();
      const r = nn.fuseConvBn(m, shape);
      expect(r.fused.length).toBe(pairs);
      expect(m.numParameters()).toBeLessThan(params);
      const after = m.forward(x);
      let err = 0;
      let mag = 0;
      for (let i = 0; i < before.size; i++) {
        err = Math.max(err, Math.abs(before.data[i] - after.data[i]));
        mag = Math.max(mag, Math.abs(before.data[i]));
      }
      expect(err).toBeLessThan(1e-5 * Math.max(1, mag));
      // Still a working model: it trains (the folded norms are identities) and saves by name.
      m.train();
      expect(() => m.forward(randn([2, ...shape.slice(1)]))).not.toThrow();
      expect([...m.stateDict().keys()].some((k) => k.includes('running_mean'))).toBe(pairs === 59);
    }
  });
});

describe('saving a quantized model', () => {
  it('round-trips through safetensors with real dtypes, and refuses bad files', async () => {
    const { mkdtempSync, readFileSync, rmSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const { parseRawSafetensors } = await import('../src/io/safetensors.js');
    manualSeed(12);
    const m = models.resnet18({ numClasses: 3 });
    m.eval();
    const x = randn([2, 3, 32, 32]);
    const q = await quantize(m, x);
    const dir = mkdtempSync(join(tmpdir(), 'ferroconv-quant-'));
    try {
      const path = join(dir, 'q.safetensors');
      q.save(path, { note: 'test' });
      const raw = parseRawSafetensors(readFileSync(path));
      const dtypes = new Set([...raw.tensors.values()].map((t) => t.dtype));
      expect([...dtypes].sort()).toEqual(['F32', 'I32', 'I8']);
      expect(raw.tensors.get('q1_weight')?.shape).toEqual([64, 3, 7, 7]);
      expect(raw.metadata.note).toBe('test');
      const back = loadQuantized(path);
      expect(Array.from(back.forward(x).data)).toEqual(Array.from(q.forward(x).data));
      expect(() => back.load()).toThrow(/loadQuantized/);
      // A float model's file, a missing buffer, a graph reading a value never written.
      m.save(join(dir, 'float.safetensors'));
      expect(() => loadQuantized(join(dir, 'float.safetensors'))).toThrow(/not a quantized ferroconv model/);
      const bytes = readFileSync(path);
      const text = bytes.toString('latin1');
      const broken = (from: string, to: string) => {
        const p2 = join(dir, 'broken.safetensors');
        expect(text.includes(from)).toBe(true);
        writeFileSync(p2, Buffer.from(text.replace(from, to), 'latin1'));
        return () => loadQuantized(p2);
      };
      expect(broken('\\"x\\":0,', '\\"x\\":9,')).toThrow(/reads value 9 before it is written/);
      expect(broken('\\"op\\":\\"conv\\"', '\\"op\\":\\"conw\\"')).toThrow(/unknown op/);
      expect(() => loadQuantized(join(dir, 'missing.safetensors'))).toThrow(/loadQuantized/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('ONNX QDQ export', () => {
  it('runs in ONNX Runtime with the numbers ferroconv computes', async () => {
    const { ortInt8Options, ortRun, relError } = await import('./onnx-helpers.js');
    const { quantizedToOnnx } = await import('../src/quant/index.js');
    manualSeed(13);
    const cat = (chunks: Uint8Array[]) => new Uint8Array(Buffer.concat(chunks));
    // Without residuals ONNX Runtime's QLinearConv does ferroconv's integer arithmetic: equal but
    // for float rounding. With them, it rounds each conv's output before QLinearAdd where
    // ferroconv adds the residual before its one rounding, so blocks may differ by an output step.
    for (const [make, shape, bound] of [
      [() => models.mnistNet(), [4, 1, 28, 28], 1e-5],
      [() => models.googlenet({ numClasses: 10, auxLogits: false } as never), [2, 3, 64, 64], 1e-5],
      [() => models.resnet18({ numClasses: 10 }), [2, 3, 64, 64], 0.03],
    ] as const) {
      const m = make();
      m.eval();
      const x = randn([...shape]);
      const q = await quantize(m, [x, randn([...shape])]);
      const bytes = cat(quantizedToOnnx(q, { batch: shape[0] }));
      // Unoptimised where ORT's fused int8 kernels saturate (see ortInt8Options).
      const ort = await ortRun(bytes, x, ortInt8Options());
      const ours = q.forward(x);
      expect([...ort.dims]).toEqual(ours.shape);
      expect(relError(ort.data, ours.data)).toBeLessThan(bound);
      // And it is an int8 graph: ONNX Runtime would run a float model just as well, so count the
      // quantize nodes (one per quantized tensor, at least one per conv) in the file.
      const text = Buffer.from(bytes).toString('latin1');
      const convs = q.graph.nodes.filter((n) => n.op === 'conv').length;
      expect(text.split('QuantizeLinear').length - 1).toBeGreaterThanOrEqual(convs - 1);
    }
  });

  it('refuses graphs it cannot write', async () => {
    const { quantizedToOnnx } = await import('../src/quant/index.js');
    const m = new nn.Sequential(new nn.Conv2d(2, 4, 3), new nn.Sigmoid(), new nn.Conv2d(4, 3, 1));
    m.eval();
    const q = await quantize(m, randn([2, 2, 6, 6]));
    expect(() => quantizedToOnnx(q)).toThrow(/sigmoidForward|activationForward|in float/);
    expect(() => quantizedToOnnx(q, { opset: 11 })).toThrow(/opset/);
  });
});

describe('prune (unstructured magnitude)', () => {
  it('zeroes the smallest weights, globally or per layer, and keeps them zero through fit', async () => {
    const { prune, pruneReport } = await import('../src/quant/index.js');
    const { fit, optim, TensorDataset, DataLoader } = await import('../src/index.js');
    manualSeed(14);
    const m = models.mnistNet();
    const before = new Map([...m.stateDict()].map(([k, t]) => [k, t.data.slice()]));
    const p = prune(m, { amount: 0.6 });
    const r = p.report();
    expect(r.sparsity).toBeCloseTo(0.6, 3);
    // Global: every pruned weight was at most as large as every kept one.
    let maxPruned = 0;
    let minKept = Number.POSITIVE_INFINITY;
    for (const [name, mask] of p.masks) {
      const w = m.stateDict().get(name) as Tensor;
      const w0 = before.get(name) as Float32Array;
      for (let i = 0; i < mask.length; i++) {
        if (mask[i]) minKept = Math.min(minKept, Math.abs(w0[i]));
        else {
          expect(w.data[i]).toBe(0);
          maxPruned = Math.max(maxPruned, Math.abs(w0[i]));
        }
      }
    }
    expect(maxPruned).toBeLessThanOrEqual(minKept);
    expect(minKept).toBeGreaterThan(0);
    const perLayer = prune(models.mnistNet(), { amount: 0.3, scope: 'layer' }).report();
    for (const l of perLayer.layers) expect(l.zeros).toBe(Math.floor(0.3 * l.weights));
    // Fine-tuning with the callback: pruned weights stay exactly zero, the model still learns.
    const x = randn([64, 1, 28, 28]);
    const y = Int32Array.from({ length: 64 }, (_, i) => i % 10);
    const loader = new DataLoader(new TensorDataset(x, Array.from(y)), { batchSize: 16 });
    await fit(m, loader, {
      optimizer: new optim.Adam(m.parameters(), { lr: 0.01 }),
      epochs: 2,
      progress: false,
      callbacks: [p.callback()],
    });
    expect(
      pruneReport(
        m,
        [...p.masks.keys()].map((k) => [k, m.stateDict().get(k) as Tensor]),
      ).sparsity,
    ).toBeCloseTo(0.6, 3);
    for (const [name, mask] of p.masks) {
      const w = m.stateDict().get(name) as Tensor;
      for (let i = 0; i < mask.length; i++) if (!mask[i]) expect(w.data[i]).toBe(0);
    }
  });

  it('raises sparsity on a schedule, and refuses bad options', async () => {
    const { prune } = await import('../src/quant/index.js');
    const { fit, optim, TensorDataset, DataLoader } = await import('../src/index.js');
    const m = models.mnistNet();
    const p = prune(m, { amount: 0.8, schedule: { epochs: 3 } });
    expect(p.sparsity).toBe(0);
    const seen: number[] = [];
    const loader = new DataLoader(
      new TensorDataset(
        randn([16, 1, 28, 28]),
        Array.from({ length: 16 }, (_, i) => i % 10),
      ),
      { batchSize: 8 },
    );
    await fit(m, loader, {
      optimizer: new optim.SGD(m.parameters(), { lr: 0.01 }),
      epochs: 3,
      progress: false,
      callbacks: [p.callback(), { onEpochBegin: () => void seen.push(p.sparsity) }],
    });
    expect(seen[0]).toBeGreaterThan(0);
    expect(seen[1]).toBeGreaterThan(seen[0]);
    expect(seen[2]).toBeCloseTo(0.8, 6);
    expect(p.report().sparsity).toBeCloseTo(0.8, 3);
    expect(() => prune(m, { amount: 1 })).toThrow(/amount/);
    expect(() => prune(m, { amount: 0.5, scope: 'all' as never })).toThrow(/scope/);
    expect(() => prune(new nn.Sequential(new nn.ReLU()), { amount: 0.5 })).toThrow(/no Conv2d or Linear/);
  });
});

describe('quantization-aware training', () => {
  it('fake quantization rounds as int8 does, with straight-through gradients', async () => {
    const { fakeQuantize, fakeQuantizeWeight } = await import('../src/quant/index.js');
    const x = new Tensor(Float32Array.from([-2, -0.26, 0.04, 0.51, 3.3, 9]), [6]);
    x.requiresGrad = true;
    const q = { scale: 0.1, zeroPoint: 20 }; // represents -2.0 .. 23.5
    const y = fakeQuantize(x, q);
    expect(Array.from(y.data).map((v) => Math.round(v * 1000) / 1000)).toEqual([-2, -0.3, 0, 0.5, 3.3, 9]);
    y.backward(new Tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [6]));
    expect(Array.from(x.grad!.data)).toEqual([1, 2, 3, 4, 5, 6]);
    const clipped = new Tensor(Float32Array.from([-5, 30, 1]), [3]);
    clipped.requiresGrad = true;
    const c = fakeQuantize(clipped, q);
    expect(Array.from(c.data).map((v) => Math.round(v * 10) / 10)).toEqual([-2, 23.5, 1]);
    c.backward(new Tensor(Float32Array.from([1, 1, 1]), [3]));
    expect(Array.from(clipped.grad!.data)).toEqual([0, 0, 1]);
    const w = new Tensor(Float32Array.from([1.27, -0.5, 0.013, 0.2, -0.4, 0.1]), [2, 3]);
    const wq = fakeQuantizeWeight(w).data;
    // Channel 0: scale 0.01; channel 1: scale 0.4/127.
    expect(Array.from(wq.subarray(0, 3)).map((v) => Math.round(v * 1e4) / 1e4)).toEqual([1.27, -0.5, 0.01]);
    for (const v of wq.subarray(3)) expect(Math.abs(v / (0.4 / 127) - Math.round(v / (0.4 / 127)))).toBeLessThan(1e-4);
  });

  it('prepareQat trains with fit and convertQat gives an int8 model close to the trained float one', async () => {
    const { prepareQat, convertQat } = await import('../src/quant/index.js');
    const { fit, optim, TensorDataset, DataLoader } = await import('../src/index.js');
    manualSeed(15);
    const m = models.mnistNet();
    prepareQat(m, [1, 1, 28, 28]);
    expect(m.namedModules().some(([, mm]) => mm instanceof nn.BatchNorm2d)).toBe(false);
    // 256 real digits: a task the network learns within a few epochs.
    const digits = mnist({ train: true });
    const x = new Tensor(new Float32Array(256 * 784), [256, 1, 28, 28]);
    const labels: number[] = [];
    for (let i = 0; i < 256; i++) {
      const s = digits.get(i);
      x.data.set(s.image.data, i * 784);
      labels.push(s.label);
    }
    const loader = new DataLoader(new TensorDataset(x, labels), { batchSize: 32 });
    const r = await fit(m, loader, {
      optimizer: new optim.Adam(m.parameters(), { lr: 0.003 }),
      epochs: 3,
      progress: false,
    });
    expect(r.history[2].loss).toBeLessThan(r.history[0].loss);
    const q = await convertQat(m, loader);
    m.eval();
    const yf = m.forward(x);
    const yq = q.forward(x);
    let err = 0;
    let mag = 0;
    for (let i = 0; i < yf.size; i++) {
      err = Math.max(err, Math.abs(yf.data[i] - yq.data[i]));
      mag = Math.max(mag, Math.abs(yf.data[i]));
    }
    expect(err / mag).toBeLessThan(0.05);
    await expect(convertQat(m, loader)).rejects.toThrow(/not prepared/);
  });
});

describe('pruneChannels (structured)', () => {
  /** Zeroes gamma and beta of the first quarter of every batch norm's channels: those channels are 0. */
  function silenceQuarter(m: ReturnType<typeof models.mnistNet>): void {
    for (const [k, t] of m.stateDict()) {
      if (!k.endsWith('.weight') && !k.endsWith('.bias')) continue;
      const bn = m.getSubmodule(k.slice(0, k.lastIndexOf('.')));
      if (!(bn instanceof nn.BatchNorm2d)) continue;
      const n = Math.floor(0.25 * t.size);
      for (let c = 0; c < n; c++) t.data[c] = 0;
    }
  }

  it('removes channels whose batch norm silences them without changing the outputs, through residuals and concats', async () => {
    const { pruneChannels } = await import('../src/quant/index.js');
    manualSeed(16);
    for (const [make, shape] of [
      [() => models.mnistNet(), [2, 1, 28, 28]],
      [() => models.resnet18({ numClasses: 5 }), [2, 3, 48, 48]],
      [() => models.googlenet({ numClasses: 5, auxLogits: false } as never), [1, 3, 64, 64]],
    ] as const) {
      const m = make();
      for (const [k, t] of m.stateDict()) {
        if (k.endsWith('running_var')) t.data.set(det([t.size], 17).data.map((v) => 0.5 + Math.abs(v)));
        if (k.endsWith('running_mean')) t.data.set(det([t.size], 18, 0.3).data);
      }
      silenceQuarter(m as never);
      m.eval();
      const x = randn([...shape]);
      const before = m.forward(x);
      const r = pruneChannels(m, { amount: 0.25, criterion: 'bn', inputShape: shape });
      expect(r.groups.length).toBeGreaterThan(2);
      expect(r.parameters.after).toBeLessThan(r.parameters.before);
      expect(r.macs.after).toBeLessThan(r.macs.before);
      const after = m.forward(x);
      expect(after.shape).toEqual(before.shape);
      let err = 0;
      let mag = 0;
      for (let i = 0; i < before.size; i++) {
        err = Math.max(err, Math.abs(before.data[i] - after.data[i]));
        mag = Math.max(mag, Math.abs(before.data[i]));
      }
      expect(err).toBeLessThan(1e-4 * Math.max(1, mag));
    }
  });

  it('gives a model that trains, saves, loads, exports and quantizes, smaller by the amount', async () => {
    const { pruneChannels } = await import('../src/quant/index.js');
    const { fit, optim, TensorDataset, DataLoader } = await import('../src/index.js');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    manualSeed(17);
    const m = models.densenet121({ numClasses: 3 });
    const r = pruneChannels(m, { amount: 0.5, inputShape: [1, 3, 32, 32] });
    // DenseNet's concats: every conv's output is its own group; half of each goes.
    expect(r.groups.every((gr) => gr.after === gr.before - Math.floor(gr.before / 2))).toBe(true);
    expect(r.macs.after / r.macs.before).toBeLessThan(0.35);
    const mn = models.mnistNet();
    const rm = pruneChannels(mn, { amount: 0.5, inputShape: [1, 1, 28, 28] });
    expect(rm.groups.map((gr) => gr.after)).toEqual([8, 16, 32]);
    const loader = new DataLoader(
      new TensorDataset(
        randn([32, 1, 28, 28]),
        Array.from({ length: 32 }, (_, i) => i % 10),
      ),
      {
        batchSize: 16,
      },
    );
    await fit(mn, loader, { optimizer: new optim.SGD(mn.parameters(), { lr: 0.01 }), epochs: 1, progress: false });
    const dir = mkdtempSync(join(tmpdir(), 'ferroconv-prune-'));
    try {
      mn.save(join(dir, 'pruned.safetensors'));
      const again = models.mnistNet();
      pruneChannels(again, { amount: 0.5, inputShape: [1, 1, 28, 28] });
      again.load(join(dir, 'pruned.safetensors'));
      const x = randn([2, 1, 28, 28]);
      mn.eval();
      again.eval();
      expect(Array.from(again.forward(x).data)).toEqual(Array.from(mn.forward(x).data));
      await mn.exportOnnx(join(dir, 'pruned.onnx'), { inputShape: [1, 1, 28, 28] });
      const q = await quantize(mn, x);
      expect(q.forward(x).shape).toEqual([2, 10]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(() => pruneChannels(mn, { amount: 1, inputShape: [1, 1, 28, 28] })).toThrow(/amount/);
  });
});
