// ONNX export (src/io/onnx/export.ts): every zoo family, Sequential models and a custom forward
// export, run in ONNX Runtime (onnxruntime-node, a dev dependency) and give ferroconv's outputs
// within 1e-4 of the largest logit; python3-onnx's checker (with shape inference) accepts the
// files where it is installed (.ci/run installs it). Initializers keep the state-dict names and
// values; bad options and unexportable forwards throw and write nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AdaptiveAvgPool2d,
  AvgPool2d,
  add,
  BatchNorm2d,
  Conv2d,
  ConvTranspose2d,
  div,
  gather,
  matmul,
  pad,
  poolNd,
  reshape,
  Rng,
  sub,
  cat,
  Dropout,
  Flatten,
  LeakyReLU,
  Linear,
  LocalResponseNorm,
  logSoftmax,
  MaxPool2d,
  Module,
  manualSeed,
  models,
  mul,
  noGrad,
  ReLU,
  randn,
  Sequential,
  scale,
  sigmoid,
  softmax,
  Tensor,
  tanh,
} from '../src/index.js';
import { ModelProtoSchema, TensorProto_DataType as DataType } from '../src/io/onnx/gen/onnx_pb.js';
import { toOnnx } from '../src/io/onnx/export.js';
import { hasPython, PYTHON, thrown } from './helpers.js';
import { liven, ortRun as runOrt, relError } from './onnx-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-onnx-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Files for the checker, checked in one python process at the end. */
const written: string[] = [];

async function expectOrtMatches(model: Module, bytes: Uint8Array, x: Tensor, tol = 1e-4): Promise<number> {
  model.eval();
  const want = noGrad(() => model.call(x));
  const got = await runOrt(bytes, x);
  expect([...got.dims]).toEqual(want.shape);
  const err = relError(got.data, want.data);
  expect(err).toBeLessThan(tol);
  // Not trivially equal: the outputs vary over the batch and the classes.
  expect(Math.max(...want.data) - Math.min(...want.data)).toBeGreaterThan(1e-3);
  return err;
}

function save(name: string, bytes: Uint8Array): void {
  const path = join(dir, `${name}.onnx`);
  writeFileSync(path, bytes);
  written.push(path);
}

describe('exportOnnx: the zoo runs in ONNX Runtime', () => {
  const families: [string, () => Module][] = [
    ['alexnet', () => models.alexnet()],
    ['vgg11', () => models.vgg11()],
    ['googlenet', () => models.googlenet({ transformInput: true })],
    ['resnet18', () => models.resnet18()],
    ['densenet121', () => models.densenet121()],
    ['squeezenet1_1', () => models.squeezenet1_1()],
    ['mobilenetV2', () => models.mobilenetV2()],
    ['mobilenetV3Small', () => models.mobilenetV3Small()],
    ['efficientnetB0', () => models.efficientnetB0()],
    ['shufflenetV2X1_0', () => models.shufflenetV2X1_0()],
    ['inceptionV3', () => models.inceptionV3()],
  ];
  const errors: string[] = [];
  afterAll(() => console.log(`ONNX export in ONNX Runtime vs ferroconv (relative error): ${errors.join(', ')}`));
  for (const [name, make] of families) {
    it(`${name}: dynamic batch, outputs within 1e-4 of ferroconv's`, async () => {
      const model = make();
      liven(model, 7);
      const bytes = toOnnx(model, { inputShape: [1, 3, 224, 224], dynamicBatch: true });
      manualSeed(3);
      const err = await expectOrtMatches(model, bytes, randn([2, 3, 224, 224]));
      errors.push(`${name} ${err.toExponential(1)}`);
      if (name !== 'vgg11') save(name, bytes); // the checker's shape inference on VGG's 500 MB is slow
    }, 120_000);
  }
});

class Custom extends Module {
  readonly conv = this.addModule('conv', new Conv2d(3, 6, 3, { padding: [1, 2], stride: 2, dilation: [1, 2] }));
  readonly up = this.addModule('up', new ConvTranspose2d(6, 4, 3, { stride: 2, padding: 1, outputPadding: 1 }));
  readonly grouped = this.addModule('grouped', new Conv2d(6, 6, 1, { groups: 3, bias: false }));
  readonly lrn = this.addModule('lrn', new LocalResponseNorm(3, { alpha: 1e-2, beta: 0.6, k: 1.5 }));
  readonly act = this.addModule('act', new LeakyReLU(0.2));
  readonly gate = this.addBuffer('gate', new Tensor(Float32Array.of(0.5, -1, 2, 0.25, 1, 3), [1, 6, 1, 1]));

  forward(x: Tensor): Tensor {
    let y = this.act.call(this.conv.call(x));
    y = add(mul(y, this.gate as Tensor), sigmoid(this.grouped.call(y)));
    const z = this.lrn.call(tanh(this.up.call(y)));
    const w = cat([z, scale(z, 0.5)], 1);
    return logSoftmax(new Tensor(w.data, [w.shape[0], w.size / w.shape[0]]));
  }
}

describe('exportOnnx: layers and ops', () => {
  it('a Sequential with pools, dropout and a classifier, at opsets 13 and 17', async () => {
    manualSeed(5);
    const model = new Sequential(
      new Conv2d(2, 8, 5, { padding: 2 }),
      new BatchNorm2d(8),
      new ReLU(),
      new MaxPool2d(3, { stride: 2, padding: 1, ceilMode: true }),
      new Conv2d(8, 8, 3),
      new BatchNorm2d(8, { affine: false }),
      new ReLU(),
      new AvgPool2d(2, { stride: 2, padding: 1, countIncludePad: false, ceilMode: true }), // -> 4x4
      new AdaptiveAvgPool2d(2),
      new Flatten(),
      new Dropout(0.5),
      new Linear(32, 10),
    );
    liven(model, 11);
    model.train(); // export is always the eval forward: dropout left out, running statistics used
    for (const opset of [13, 17]) {
      const bytes = toOnnx(model, { inputShape: [3, 2, 16, 16], opset });
      expect(model.training).toBe(true);
      const proto = fromBinary(ModelProtoSchema, bytes);
      expect(proto.opsetImport[0].version).toBe(BigInt(opset));
      expect(proto.graph?.node.map((n) => n.opType)).not.toContain('Dropout');
      manualSeed(opset);
      await expectOrtMatches(model, bytes, randn([3, 2, 16, 16]));
      model.train();
      save(`sequential-${opset}`, bytes);
    }
  });

  it('a custom forward: strided, dilated, grouped and transposed convs, broadcasting, cat, LRN, softmax', async () => {
    manualSeed(9);
    const model = new Custom();
    liven(model, 12);
    const bytes = toOnnx(model, { inputShape: [2, 3, 11, 13], dynamicBatch: true });
    const ops = new Set(fromBinary(ModelProtoSchema, bytes).graph?.node.map((n) => n.opType));
    for (const op of ['Conv', 'ConvTranspose', 'LRN', 'Concat', 'Mul', 'Add', 'Sigmoid', 'Tanh', 'LogSoftmax']) {
      expect(ops).toContain(op);
    }
    for (const batch of [1, 4]) {
      manualSeed(batch);
      await expectOrtMatches(model, bytes, randn([batch, 3, 11, 13]));
    }
    save('custom', bytes);
  });

  it('the N-D ops: reflect and edge padding, broadcasting sub and div, gather, matmul, 3-D pools', async () => {
    class NdOps extends Module {
      readonly w = this.addParameter('w', randn([9, 4], { rng: new Rng(21) })) as Tensor;
      readonly s = this.addParameter('s', randn([4, 1, 9], { rng: new Rng(22) })) as Tensor;
      readonly one = this.addBuffer('one', new Tensor(Float32Array.of(1.5), [1])) as Tensor;
      forward(x: Tensor): Tensor {
        const p = pad(pad(x, [0, 0, 1, 1], [0, 0, 2, 1], 'reflect'), [0, 0, 0, 1], [0, 0, 0, 0], 'edge'); // [N, 4, 8, 9]
        const d = div(sub(p, this.s), add(mul(this.s, this.s), this.one));
        const m = matmul(d, this.w); // [N, 4, 8, 4]
        const g = gather(m, 2, [0, 7, -2, 3]); // [N, 4, 4, 4]
        const v = reshape(g, [g.shape[0], 1, 4, 4, 4]);
        return poolNd(
          'avg',
          poolNd('max', v, [2, 2, 2], { stride: [1, 1, 1], padsBegin: [1, 0, 1], padsEnd: [0, 1, 0] }),
          [2, 1, 2],
          {
            padsBegin: [1, 0, 0],
            padsEnd: [0, 0, 1],
          },
        );
      }
    }
    const model = new NdOps();
    const bytes = toOnnx(model, { inputShape: [2, 4, 5, 6] });
    const ops = new Set(fromBinary(ModelProtoSchema, bytes).graph?.node.map((n) => n.opType));
    for (const op of ['Pad', 'Sub', 'Div', 'MatMul', 'Gather']) expect(ops).toContain(op);
    manualSeed(3);
    await expectOrtMatches(model, bytes, randn([2, 4, 5, 6]));
    save('nd-ops', bytes);
  });

  it('softmax output at a fixed batch', async () => {
    manualSeed(2);
    const model = new Sequential(new Flatten(), new Linear(12, 5));
    liven(model, 4);
    class WithSoftmax extends Module {
      readonly body = this.addModule('body', model);
      forward(x: Tensor): Tensor {
        return softmax(this.body.call(x));
      }
    }
    const m = new WithSoftmax();
    const bytes = toOnnx(m, { inputShape: [4, 3, 2, 2] });
    manualSeed(8);
    const x = randn([4, 3, 2, 2]);
    const got = await runOrt(bytes, x);
    const want = noGrad(() => m.call(x));
    expect(relError(got.data, want.data)).toBeLessThan(1e-6);
  });

  it('initializers are the state-dict tensors under their names, values bit for bit', () => {
    const model = models.resnet18({ numClasses: 7 });
    liven(model, 1);
    const proto = fromBinary(ModelProtoSchema, toOnnx(model, { inputShape: [1, 3, 64, 64] }));
    const state = model.stateDict();
    // Every tensor the forward reads (all but the batch-norm counters), and the exporter's own
    // int64 constants (the classifier's Reshape).
    const all = proto.graph?.initializer ?? [];
    const inits = all.filter((t) => t.dataType === DataType.FLOAT);
    expect(all.filter((t) => t.dataType !== DataType.FLOAT).map((t) => t.dataType)).toEqual([DataType.INT64]);
    const expected = [...state.keys()].filter((k) => !k.endsWith('num_batches_tracked'));
    expect(inits.map((t) => t.name).sort()).toEqual(expected.sort());
    for (const t of inits) {
      const mine = state.get(t.name) as Tensor;
      expect(t.dims.map(Number)).toEqual(mine.shape);
      const raw = t.rawData;
      const got = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
      expect(
        Buffer.from(got.buffer).equals(Buffer.from(mine.data.buffer, mine.data.byteOffset, mine.data.byteLength)),
      ).toBe(true);
    }
    expect(proto.producerName).toBe('ferroconv');
  });
});

describe('exportOnnx: errors', () => {
  const model = () => new Sequential(new Conv2d(3, 4, 3), new ReLU());
  it('checks its options', () => {
    expect(thrown(() => toOnnx(model(), { inputShape: [1, 3, 0, 8] })).message).toMatch(
      /inputShape: expected positive/,
    );
    expect(thrown(() => toOnnx(model(), { inputShape: [1, 3, 8, 8], opset: 12 })).message).toMatch(
      /opset: expected an integer from 13 to 17, got 12/,
    );
    expect(thrown(() => toOnnx(model(), { inputShape: [1, 4, 8, 8] })).message).toMatch(
      /expected input \[N, 3, H, W\]/,
    );
  });

  it('names what it cannot export, and a failed export writes no file', async () => {
    const m = new Sequential(new Conv2d(3, 4, 3), new AdaptiveAvgPool2d(3));
    const path = join(dir, 'never.onnx');
    const err = await m.exportOnnx(path, { inputShape: [1, 3, 7, 7] }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/adaptive average pooling from 5x5 to 3x3 has no ONNX operator/);
    expect(existsSync(path)).toBe(false);
  });

  it('writes the file through Module.exportOnnx', async () => {
    const m = model();
    const path = join(dir, 'written.onnx');
    await m.exportOnnx(path, { inputShape: [1, 3, 8, 8] });
    const bytes = readFileSync(path);
    manualSeed(1);
    const x = randn([1, 3, 8, 8]);
    const got = await runOrt(bytes, x);
    expect(relError(got.data, noGrad(() => m.call(x)).data)).toBeLessThan(1e-5);
  });
});

// python3-onnx's checker with full_check (shape inference): .ci/run installs it with apt.
const hasOnnx = hasPython('onnx');

describe.skipIf(!hasOnnx)('exportOnnx: the ONNX checker (python3-onnx)', () => {
  it('accepts every exported file', () => {
    expect(written.length).toBe(14);
    const script = 'import sys, onnx\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(p, full_check=True)\n';
    execFileSync(PYTHON, ['-c', script, ...written], { stdio: 'pipe' });
  }, 120_000);
});
if (!hasOnnx) console.warn('onnx-export: the checker tests are skipped: python3-onnx is not installed');
