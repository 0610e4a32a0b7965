// ONNX import (src/io/onnx/import.ts): torchvision models exported by PyTorch give ONNX
// Runtime's outputs; ferroconv -> ONNX -> ferroconv round trips exactly; an imported model is
// an ordinary Module (state dict under the initializer names, compiled plans, save/load,
// export, fine-tuning with frozen layers); hostile and malformed files give one clear Error.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import {
  Adam,
  BatchNorm2d,
  Conv2d,
  DataLoader,
  Flatten,
  Linear,
  loadOnnx,
  MaxPool2d,
  manualSeed,
  models,
  noGrad,
  parseOnnx,
  planInfo,
  ReLU,
  randn,
  Sequential,
  setInferenceFusion,
  Tensor,
  TensorDataset,
  toOnnx,
  fit,
  evaluate,
} from '../src/index.js';
import {
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProto_DataLocation,
  StringStringEntryProtoSchema,
} from '../src/io/onnx/gen/onnx_pb.js';
import { writableData } from '../src/tensor.js';
import { hasPython, PYTHON, thrown } from './helpers.js';
import { liven, ortRun, relError } from './onnx-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-onnx-import-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Debian's torch exports the torchvision models (test/fixtures/gen_torchvision_onnx.py) into a
// temporary folder; the files are too large to commit.
const hasTorch = hasPython('torch', 'torchvision');

const TORCHVISION = [
  'resnet18',
  'resnet50',
  'alexnet',
  'vgg16',
  'googlenet',
  'densenet121',
  'inception_v3',
  'squeezenet1_1',
  'mobilenet_v2',
  'mobilenet_v3_small',
  'efficientnet_b0',
  'shufflenet_v2_x1_0',
];

describe.skipIf(!hasTorch)('loadOnnx: torchvision models exported by PyTorch match ONNX Runtime', () => {
  const tv = join(dir, 'torchvision');
  // The per-model error, printed for the notes (max |got - want| / max |want|).
  const errors: string[] = [];
  afterAll(() => console.log(`ONNX import vs ONNX Runtime (relative error): ${errors.join(', ')}`));
  it('exports them (gen_torchvision_onnx.py)', () => {
    mkdirSync(tv, { recursive: true });
    const script = join(import.meta.dirname, 'fixtures', 'gen_torchvision_onnx.py');
    execFileSync(PYTHON, [script, tv, ...TORCHVISION], { stdio: 'pipe' });
  }, 300_000);
  for (const name of TORCHVISION) {
    it(`${name}: within 1e-4 of ONNX Runtime at batch 2`, async () => {
      const path = join(tv, `${name}.onnx`);
      const model = await loadOnnx(path);
      model.eval();
      const size = name === 'inception_v3' ? 299 : 224;
      manualSeed(2);
      const x = randn([2, 3, size, size]);
      const got = noGrad(() => model.call(x));
      const want = (await ortRun(readFileSync(path), x)).data;
      expect(got.shape).toEqual([2, 1000]);
      const err = relError(got.data, want);
      errors.push(`${name} ${err.toExponential(1)}`);
      expect(err).toBeLessThan(1e-4);
      expect(Math.max(...want) - Math.min(...want)).toBeGreaterThan(1e-2);
    }, 120_000);
  }
});
if (!hasTorch) console.warn('onnx-import: the torchvision tests are skipped: python3-torch is not installed');

describe('loadOnnx: ferroconv -> ONNX -> ferroconv', () => {
  for (const name of ['resnet18', 'densenet121', 'googlenet'] as const) {
    it(`${name}: identical outputs and state dict`, async () => {
      const model = models[name]();
      liven(model, 3);
      model.eval();
      const imported = parseOnnx(toOnnx(model, { inputShape: [1, 3, 64, 64], dynamicBatch: true }));
      imported.eval();
      const mine = [...model.stateDict()].filter(([k]) => !k.endsWith('num_batches_tracked'));
      const theirs = imported.stateDict();
      expect([...theirs.keys()].sort()).toEqual(mine.map(([k]) => k).sort());
      for (const [k, t] of mine) {
        expect(theirs.get(k)?.shape).toEqual(t.shape);
        expect(Buffer.from((theirs.get(k) as Tensor).data.buffer).equals(Buffer.from(t.data.slice().buffer))).toBe(
          true,
        );
      }
      manualSeed(4);
      const x = randn([3, 3, 64, 64]);
      const want = noGrad(() => model.call(x));
      const got = noGrad(() => imported.call(x));
      // The zoo fuses conv + batch norm in inference; the import runs them apart.
      expect(relError(got.data, want.data)).toBeLessThan(1e-5);
      // predict() runs the imported graph as a compiled plan, conv + batch norm (+ add) (+ ReLU)
      // fused as in the zoo: fewer kernel calls than with fusion off, the same outputs.
      const predicted = await imported.predict(x);
      expect(planInfo(imported)?.planned).toBe(true);
      // Fused as the zoo's own plan fuses: its numbers (ResNet-18 bit for bit; 3e-7 and 5e-7
      // for DenseNet-121 and GoogLeNet, whose imported graphs concatenate apart). Against the
      // unfused eager import, fused and unfused round apart: 1.05e-6 for ResNet-18 on an AVX2
      // and on an AVX-512 CPU alike, so 1e-6 cannot hold there.
      const zooPredicted = await model.predict(x);
      expect(relError(predicted.data, zooPredicted.data)).toBeLessThan(1e-6);
      expect(relError(predicted.data, got.data)).toBeLessThan(2e-6);
      const fusedSteps = planInfo(imported)?.steps as number;
      const was = setInferenceFusion(false);
      try {
        const unfused = noGrad(() => imported.call(x));
        expect(relError(unfused.data, got.data)).toBeLessThan(1e-5);
        await imported.predict(x);
        expect(planInfo(imported)?.steps).toBeGreaterThan(fusedSteps + 10);
      } finally {
        setInferenceFusion(was);
      }
      // And it exports again, to the same outputs in ONNX Runtime.
      const again = toOnnx(imported, { inputShape: [3, 3, 64, 64] });
      expect(relError((await ortRun(again, x)).data, got.data)).toBeLessThan(1e-4);
    }, 60_000);
  }

  it('saves and loads as safetensors under the initializer names', async () => {
    manualSeed(5);
    const model = new Sequential(new Conv2d(1, 4, 3), new BatchNorm2d(4), new ReLU(), new Flatten(), new Linear(64, 3));
    liven(model, 6);
    const path = join(dir, 'small.onnx');
    await model.exportOnnx(path, { inputShape: [1, 1, 6, 6], dynamicBatch: true });
    const a = await loadOnnx(path);
    const b = await loadOnnx(path);
    for (const t of b.parameters()) writableData(t).fill(0);
    a.save(join(dir, 'small.safetensors'));
    b.load(join(dir, 'small.safetensors'));
    const x = randn([2, 1, 6, 6]);
    a.eval();
    b.eval();
    expect(noGrad(() => b.call(x)).data).toEqual(noGrad(() => a.call(x)).data);
    expect(
      a
        .getSubmodule('1')
        .namedParameters()
        .map(([n]) => n),
    ).toEqual(['weight', 'bias']);
  });
});

describe('loadOnnx: fine-tuning an imported model', () => {
  it('trains only the unfrozen classifier, and the accuracy rises', async () => {
    // A small network exported, imported, its features frozen, its classifier refitted to a new
    // task: which half of the image is brighter.
    manualSeed(7);
    const net = new Sequential(
      new Conv2d(1, 8, 3, { padding: 1 }),
      new BatchNorm2d(8),
      new ReLU(),
      new MaxPool2d(2),
      new Flatten(),
      new Linear(8 * 4 * 4, 2),
    );
    const model = parseOnnx(toOnnx(net, { inputShape: [1, 1, 8, 8], dynamicBatch: true }));
    const n = 256;
    manualSeed(8);
    const x = randn([n, 1, 8, 8]);
    const labels = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      labels[i] = i % 2;
      for (let r = 0; r < 8; r++)
        for (let c = 0; c < 8; c++) x.data[i * 64 + r * 8 + c] += r < 4 === (i % 2 === 0) ? 1 : 0;
    }
    const loader = new DataLoader(new TensorDataset(x, labels), { batchSize: 32, shuffle: true, seed: 1 });
    const frozen = model.freeze(/^(?!5\.)/);
    expect(frozen).toBe(4); // conv weight and bias, batch-norm weight and bias
    const before = new Map([...model.stateDict()].map(([k, t]) => [k, t.data.slice()]));
    const start = await evaluate(model, loader);
    await fit(model, loader, {
      optimizer: new Adam(
        model.parameters().filter((p) => p.requiresGrad),
        { lr: 0.05 },
      ),
      epochs: 5,
      progress: false,
    });
    const end = await evaluate(model, loader);
    expect(end.acc).toBeGreaterThan(0.9);
    expect(end.acc).toBeGreaterThan(start.acc + 0.2);
    for (const [k, t] of model.stateDict()) {
      const changed = !Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(
        Buffer.from((before.get(k) as Float32Array).buffer),
      );
      // Only the classifier moved; batch norm's running statistics track the batches.
      if (k.startsWith('5.') || k.includes('running')) continue;
      expect(changed, k).toBe(false);
    }
  }, 60_000);
});

function model(nodes: Parameters<typeof create<typeof NodeProtoSchema>>[1][]) {
  return toBinary(
    ModelProtoSchema,
    create(ModelProtoSchema, {
      irVersion: 8n,
      opsetImport: [{ domain: '', version: 17n }],
      graph: create(GraphProtoSchema, {
        node: nodes.map((n) => create(NodeProtoSchema, n)),
        input: [{ name: 'x' }],
        output: [{ name: 'y' }],
      }),
    }),
  );
}

describe('loadOnnx: bad files give one clear Error', () => {
  const good = toOnnx(new Sequential(new Conv2d(1, 2, 3), new ReLU()), { inputShape: [1, 1, 5, 5] });

  it('truncated, empty, random and non-ONNX bytes', () => {
    expect(thrown(() => parseOnnx(good.subarray(0, good.length - 7))).message).toMatch(/^loadOnnx: /);
    expect(thrown(() => parseOnnx(new Uint8Array(0))).message).toMatch(/holds no graph/);
    manualSeed(1);
    const noise = Uint8Array.from(randn([4096]).data, (v) => (v * 1000) & 255);
    expect(thrown(() => parseOnnx(noise)).message).toMatch(/^loadOnnx: /);
    expect(thrown(() => parseOnnx(new TextEncoder().encode('{"not": "onnx"}'))).message).toMatch(/^loadOnnx: /);
  });

  it('lists every unsupported operator with its node name', () => {
    const bytes = model([
      { opType: 'Erf', name: 'a', input: ['x'], output: ['t'] },
      { opType: 'Relu', name: 'b', input: ['t'], output: ['u'] },
      { opType: 'NonZero', name: 'c', input: ['u'], output: ['y'] },
    ]);
    expect(thrown(() => parseOnnx(bytes)).message).toBe('loadOnnx: unsupported operators: Erf (a), NonZero (c)');
  });

  it('cycles, missing producers and outputs nothing computes', () => {
    const cycle = model([
      { opType: 'Relu', name: 'a', input: ['u'], output: ['t'] },
      { opType: 'Relu', name: 'b', input: ['t'], output: ['u'] },
      { opType: 'Relu', name: 'c', input: ['u'], output: ['y'] },
    ]);
    expect(thrown(() => parseOnnx(cycle)).message).toMatch(/the graph has a cycle/);
    const missing = model([{ opType: 'Add', name: 'a', input: ['x', 'w'], output: ['y'] }]);
    expect(thrown(() => parseOnnx(missing)).message).toBe("loadOnnx: node 'a' (Add) reads 'w', which nothing produces");
    const noOutput = model([{ opType: 'Relu', name: 'a', input: ['x'], output: ['z'] }]);
    expect(thrown(() => parseOnnx(noOutput)).message).toBe("loadOnnx: output 'y' is not produced by any node");
    const twice = model([
      { opType: 'Relu', name: 'a', input: ['x'], output: ['y'] },
      { opType: 'Relu', name: 'b', input: ['x'], output: ['y'] },
    ]);
    expect(thrown(() => parseOnnx(twice)).message).toMatch(/value 'y' is produced twice/);
  });

  it('initializers whose data does not match their dims, absurd dims, external data outside the folder', () => {
    const short = fromBinary(ModelProtoSchema, good);
    const s0 = short.graph?.initializer[0];
    if (s0) s0.rawData = s0.rawData.subarray(0, 8);
    expect(thrown(() => parseOnnx(toBinary(ModelProtoSchema, short))).message).toMatch(
      /initializer '0.weight': raw data holds 8 bytes, dims need 72/,
    );
    const huge = fromBinary(ModelProtoSchema, good);
    const h0 = huge.graph?.initializer[0];
    if (h0) h0.dims = [1n << 40n, 1n << 40n];
    expect(thrown(() => parseOnnx(toBinary(ModelProtoSchema, huge))).message).toMatch(/out of range|more than/);
    const outside = fromBinary(ModelProtoSchema, good);
    const o0 = outside.graph?.initializer[0];
    if (o0) {
      o0.rawData = new Uint8Array(0);
      o0.dataLocation = TensorProto_DataLocation.EXTERNAL;
      o0.externalData = [create(StringStringEntryProtoSchema, { key: 'location', value: '../../etc/passwd' })];
    }
    const path = join(dir, 'outside.onnx');
    writeFileSync(path, toBinary(ModelProtoSchema, outside));
    return loadOnnx(path).then(
      () => {
        throw new Error('expected an Error');
      },
      (e: Error) => {
        expect(e.message).toMatch(/external data location '..\/..\/etc\/passwd' is outside the model's folder/);
      },
    );
  });

  it('loads external data kept beside the model', async () => {
    const proto = fromBinary(ModelProtoSchema, good);
    const sub = join(dir, 'external');
    mkdirSync(sub, { recursive: true });
    const chunks: Uint8Array[] = [];
    let offset = 0;
    for (const t of proto.graph?.initializer ?? []) {
      chunks.push(t.rawData);
      t.externalData = [
        create(StringStringEntryProtoSchema, { key: 'location', value: 'weights.bin' }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
        create(StringStringEntryProtoSchema, { key: 'length', value: String(t.rawData.length) }),
      ];
      offset += t.rawData.length;
      t.rawData = new Uint8Array(0);
      t.dataLocation = TensorProto_DataLocation.EXTERNAL;
    }
    writeFileSync(join(sub, 'weights.bin'), Buffer.concat(chunks));
    writeFileSync(join(sub, 'model.onnx'), toBinary(ModelProtoSchema, proto));
    const a = await loadOnnx(join(sub, 'model.onnx'));
    const b = parseOnnx(good);
    const x = randn([1, 1, 5, 5]);
    expect(noGrad(() => a.call(x)).data).toEqual(noGrad(() => b.call(x)).data);
    expect(thrown(() => parseOnnx(readFileSync(join(sub, 'model.onnx')))).message).toMatch(
      /its data is in an external file; load the model from its path/,
    );
  });

  it('names the node whose inputs it cannot run', () => {
    const m = parseOnnx(toOnnx(new Sequential(new Conv2d(3, 2, 3)), { inputShape: [1, 3, 5, 5] }));
    expect(thrown(() => m.call(new Tensor(new Float32Array(2 * 25), [1, 2, 5, 5]))).message).toMatch(
      /^OnnxModel: node '0' \(Conv\): conv2d: the weight \[2, 3, 3, 3\] takes 3 input channels per group, but the input \[1, 2, 5, 5\] has 2 channels/,
    );
    expect(thrown(() => m.forwardAll()).message).toBe('OnnxModel: expected 1 input(s) (input), got 0');
  });
});
