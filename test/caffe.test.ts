// Caffe import (src/io/caffe): nets the test builds itself, a prototxt (text) and a caffemodel
// (binary, written with the same generated schema) from one description, run by loadCaffe and by
// test/fixtures/caffe_reference.py (Caffe's layer semantics written out with Debian's torch:
// pooling's ceil rounding and clipping, LRN's alpha / size, BatchNorm's scale factor); the V1
// layer format; and bad files, each an Error naming the problem.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCaffe, noGrad, Rng, randn, Tensor } from '../src/index.js';
import {
  BlobProtoSchema,
  LayerParameterSchema,
  NetParameterSchema,
  V1LayerParameter_LayerType as V1Type,
  V1LayerParameterSchema,
} from '../src/io/caffe/gen/caffe_pb.js';
import { toOnnx } from '../src/io/onnx/export.js';
import { hasPython, PYTHON, thrown } from './helpers.js';
import { ortRun, relError } from './onnx-helpers.js';

const hasTorch = hasPython('torch');

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-caffe-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Param = Record<string, number | string | boolean | number[]>;
interface Blob {
  shape: number[];
  data: number[];
  legacy?: boolean;
}
interface Layer {
  name: string;
  type: string;
  bottom: string[];
  top: string[];
  param?: Param;
  blobs?: Blob[];
}

const PARAM_FIELD: Record<string, string> = {
  Convolution: 'convolution_param',
  Deconvolution: 'convolution_param',
  Pooling: 'pooling_param',
  LRN: 'lrn_param',
  InnerProduct: 'inner_product_param',
  ReLU: 'relu_param',
  Eltwise: 'eltwise_param',
  Concat: 'concat_param',
  Slice: 'slice_param',
  Flatten: 'flatten_param',
  Softmax: 'softmax_param',
  Scale: 'scale_param',
  BatchNorm: 'batch_norm_param',
  Dropout: 'dropout_param',
  Power: 'power_param',
};
const ENUMS = new Set(['pool', 'operation', 'norm_region']);

function textValue(key: string, v: number | string | boolean): string {
  if (typeof v === 'string') return ENUMS.has(key) ? v : JSON.stringify(v);
  return String(v);
}

/** The net definition in Caffe's text format. */
function prototxt(input: { name: string; shape: number[] }, layers: Layer[]): string {
  const lines = [
    'name: "test"',
    `layer { name: "${input.name}" type: "Input" top: "${input.name}"`,
    `  input_param { shape { ${input.shape.map((d) => `dim: ${d}`).join(' ')} } } }`,
  ];
  for (const l of layers) {
    lines.push(`layer { name: "${l.name}" type: "${l.type}"`);
    for (const b of l.bottom) lines.push(`  bottom: "${b}"`);
    for (const t of l.top) lines.push(`  top: "${t}"`);
    if (l.param && Object.keys(l.param).length) {
      const fields = Object.entries(l.param).flatMap(([k, v]) =>
        Array.isArray(v) ? v.map((x) => `${k}: ${textValue(k, x)}`) : [`${k}: ${textValue(k, v)}`],
      );
      lines.push(`  ${PARAM_FIELD[l.type]} { ${fields.join(' ')} }`);
    }
    lines.push('}');
  }
  return lines.join('\n');
}

function blobProto(b: Blob) {
  if (b.legacy) {
    const [num, channels, height, width] = [1, 1, 1, 1, ...b.shape].slice(-4);
    return create(BlobProtoSchema, { num, channels, height, width, data: b.data });
  }
  return create(BlobProtoSchema, { shape: { dim: b.shape.map(BigInt) }, data: b.data });
}

/** The weights as a caffemodel: a binary NetParameter of the layers with blobs. */
function caffemodel(layers: Layer[]): Uint8Array {
  return toBinary(
    NetParameterSchema,
    create(NetParameterSchema, {
      name: 'test',
      layer: layers
        .filter((l) => l.blobs?.length)
        .map((l) =>
          create(LayerParameterSchema, { name: l.name, type: l.type, blobs: (l.blobs ?? []).map(blobProto) }),
        ),
    }),
  );
}

function blob(shape: number[], seed: number, scale = 0.5, offset = 0): Blob {
  const t = randn(shape, { rng: new Rng(seed), std: scale });
  return { shape, data: Array.from(t.data, (v) => v + offset) };
}

/** A net touching every supported layer and Caffe's rounding rules; input [2, 3, 13, 11]. */
function testNet(): Layer[] {
  return [
    {
      name: 'conv1',
      type: 'Convolution',
      bottom: ['data'],
      top: ['conv1'],
      param: { num_output: 8, kernel_size: 3, stride: 2, pad_h: 1, pad_w: 2 },
      blobs: [blob([8, 3, 3, 3], 1), blob([8], 2)],
    },
    {
      name: 'bn1',
      type: 'BatchNorm',
      bottom: ['conv1'],
      top: ['conv1'],
      param: { eps: 0.001 },
      blobs: [blob([8], 3, 1), blob([8], 4, 0.2, 2), { shape: [1], data: [2.5] }],
    },
    {
      name: 'sc1',
      type: 'Scale',
      bottom: ['conv1'],
      top: ['conv1'],
      param: { bias_term: true },
      blobs: [blob([8], 5, 0.3, 1), blob([8], 6)],
    },
    { name: 'relu1', type: 'ReLU', bottom: ['conv1'], top: ['conv1'], param: { negative_slope: 0.1 } },
    {
      name: 'pool1',
      type: 'Pooling',
      bottom: ['conv1'],
      top: ['pool1'],
      param: { pool: 'MAX', kernel_size: 3, stride: 2, pad: 1 },
    },
    {
      name: 'norm1',
      type: 'LRN',
      bottom: ['pool1'],
      top: ['norm1'],
      param: { local_size: 3, alpha: 0.5, beta: 0.75, k: 2 },
    },
    {
      name: 'conv2',
      type: 'Convolution',
      bottom: ['norm1'],
      top: ['conv2'],
      param: { num_output: 8, kernel_size: 3, pad: 2, dilation: 2, group: 2 },
      blobs: [blob([8, 4, 3, 3], 7), blob([8], 8)],
    },
    { name: 'prelu2', type: 'PReLU', bottom: ['conv2'], top: ['conv2'], blobs: [blob([8], 9, 0.2)] },
    { name: 'slice', type: 'Slice', bottom: ['conv2'], top: ['a', 'b'], param: { axis: 1, slice_point: [3] } },
    {
      name: 'conv3',
      type: 'Convolution',
      bottom: ['a'],
      top: ['conv3'],
      param: { num_output: 5, kernel_size: 1, bias_term: false },
      blobs: [blob([5, 3, 1, 1], 10)],
    },
    {
      name: 'sum',
      type: 'Eltwise',
      bottom: ['conv3', 'b'],
      top: ['sum'],
      param: { operation: 'SUM', coeff: [0.5, -1.5] },
    },
    { name: 'prod', type: 'Eltwise', bottom: ['conv3', 'b'], top: ['prod'], param: { operation: 'PROD' } },
    { name: 'max', type: 'Eltwise', bottom: ['conv3', 'b'], top: ['max'], param: { operation: 'MAX' } },
    { name: 'cat', type: 'Concat', bottom: ['sum', 'prod', 'max'], top: ['cat'] },
    { name: 'split', type: 'Split', bottom: ['cat'], top: ['s1', 's2'] },
    // 4x4 -> ceil((4 + 2 - 2) / 2) + 1 = 3, windows clipped at the padded border.
    {
      name: 'pool2',
      type: 'Pooling',
      bottom: ['s1'],
      top: ['pool2'],
      param: { pool: 'AVE', kernel_size: 2, stride: 2, pad: 1 },
    },
    { name: 'tanh', type: 'TanH', bottom: ['s2'], top: ['s2'] },
    { name: 'gpool', type: 'Pooling', bottom: ['s2'], top: ['gpool'], param: { pool: 'AVE', global_pooling: true } },
    { name: 'flat', type: 'Flatten', bottom: ['pool2'], top: ['flat'] },
    {
      name: 'ip1',
      type: 'InnerProduct',
      bottom: ['flat'],
      top: ['ip1'],
      param: { num_output: 10 },
      blobs: [{ ...blob([10, 135], 11, 0.1), legacy: true }, blob([10], 12)],
    },
    { name: 'sig', type: 'Sigmoid', bottom: ['ip1'], top: ['ip1'] },
    {
      name: 'ip2',
      type: 'InnerProduct',
      bottom: ['gpool'],
      top: ['ip2'],
      param: { num_output: 6, transpose: true },
      blobs: [blob([15, 6], 13), blob([6], 14)],
    },
    { name: 'cat2', type: 'Concat', bottom: ['ip1', 'ip2'], top: ['cat2'], param: { axis: 1 } },
    { name: 'drop', type: 'Dropout', bottom: ['cat2'], top: ['cat2'], param: { dropout_ratio: 0.3 } },
    { name: 'prob', type: 'Softmax', bottom: ['cat2'], top: ['prob'] },
    {
      name: 'up',
      type: 'Deconvolution',
      bottom: ['pool2'],
      top: ['up'],
      param: { num_output: 4, kernel_size: 2, stride: 2 },
      blobs: [blob([15, 4, 2, 2], 15), blob([4], 16)],
    },
    // pool1 [2, 8, 4, 4]: LRN within a channel, STOCHASTIC pooling (on non-negative input, as
    // Caffe expects), Power, and a Scale whose scale is its second bottom (its blob the bias).
    { name: 'pos', type: 'ReLU', bottom: ['pool1'], top: ['pos'] },
    {
      name: 'normw',
      type: 'LRN',
      bottom: ['pos'],
      top: ['normw'],
      param: { local_size: 3, alpha: 0.8, beta: 0.6, norm_region: 'WITHIN_CHANNEL' },
    },
    {
      name: 'spool',
      type: 'Pooling',
      bottom: ['normw'],
      top: ['spool'],
      param: { pool: 'STOCHASTIC', kernel_size: 3, stride: 2 },
    },
    { name: 'power', type: 'Power', bottom: ['spool'], top: ['power'], param: { power: 1.5, scale: 2, shift: 0.5 } },
    {
      name: 'gate',
      type: 'Scale',
      bottom: ['power', 'spool'],
      top: ['gated'],
      param: { axis: 0, bias_term: true },
      blobs: [blob([2, 8, 2, 2], 17)],
    },
  ];
}

function relErr(got: Float32Array, want: number[]): number {
  const scale = Math.max(...want.map(Math.abs), 1e-6);
  return Math.max(...want.map((w, i) => Math.abs(got[i] - w) / scale));
}

describe.skipIf(!hasTorch)('loadCaffe against Caffe semantics in PyTorch', () => {
  it('a net of every supported layer gives the reference outputs', () => {
    const layers = testNet();
    const shape = [2, 3, 13, 11];
    const x = randn(shape, { rng: new Rng(99) });
    const protoPath = join(dir, 'net.prototxt');
    const modelPath = join(dir, 'net.caffemodel');
    writeFileSync(protoPath, prototxt({ name: 'data', shape }, layers));
    writeFileSync(modelPath, caffemodel(layers));
    const net = loadCaffe(protoPath, modelPath);
    expect(net.inputNames).toEqual(['data']);
    expect(net.inputShapes).toEqual([shape]);
    expect(net.outputNames).toEqual(['prob', 'up', 'gated']);
    const outs = noGrad(() => net.forwardAll(x));

    const json = join(dir, 'net.json');
    const out = join(dir, 'out.json');
    writeFileSync(json, JSON.stringify({ inputs: { data: { shape, data: Array.from(x.data) } }, layers }));
    execFileSync(PYTHON, [join(__dirname, 'fixtures', 'caffe_reference.py'), json, out], { stdio: 'pipe' });
    const ref = JSON.parse(readFileSync(out, 'utf8')) as Record<string, { shape: number[]; data: number[] }>;
    for (const [i, name] of net.outputNames.entries()) {
      expect(outs[i].shape, name).toEqual(ref[name].shape);
      expect(relErr(outs[i].data, ref[name].data), name).toBeLessThan(1e-5);
    }
    // The parameters are the layers' blobs under their names; batch norm's are buffers.
    const params = net.namedParameters().map(([n]) => n);
    expect(params).toContain('conv1.weight');
    expect(params).toContain('ip1.weight');
    expect(params).not.toContain('bn1.mean');
    expect(net.stateDict().get('bn1.scale_factor')?.data[0]).toBe(2.5);
    expect(net.stateDict().get('ip1.weight')?.shape).toEqual([10, 135]);
  });
});

describe('Caffe to ONNX', () => {
  it('the net of every layer exports, and ONNX Runtime runs it to ferroconv outputs', async () => {
    const layers = testNet();
    const shape = [2, 3, 13, 11];
    const net = loadCaffe(prototxt({ name: 'data', shape }, layers), caffemodel(layers));
    const bytes = toOnnx(net, { inputShape: shape });
    const x = randn(shape, { rng: new Rng(7) });
    const want = noGrad(() => net.call(x));
    const got = await ortRun(bytes, x);
    expect([...got.dims]).toEqual(want.shape);
    expect(relError(got.data, want.data)).toBeLessThan(1e-5);
  });

  it('ferroconv export --caffe writes the ONNX file', () => {
    const small = testNet().slice(0, 6); // conv, batch norm, scale, relu, max pool, LRN
    const proto = join(dir, 'cli.prototxt');
    const model = join(dir, 'cli.caffemodel');
    const out = join(dir, 'cli.onnx');
    writeFileSync(proto, prototxt({ name: 'data', shape: [1, 3, 13, 11] }, small));
    writeFileSync(model, caffemodel(small));
    const cli = join(__dirname, '..', 'src', 'cli.ts');
    const args = [
      '--import',
      'tsx',
      cli,
      'export',
      '--caffe',
      proto,
      '--caffemodel',
      model,
      '--onnx',
      out,
      '--dynamic-batch',
    ];
    const printed = execFileSync(process.execPath, args, { encoding: 'utf8' });
    expect(printed).toContain(`wrote ${out} (opset 17, input [batch, 3, 13, 11])`);
    expect(readFileSync(out).length).toBeGreaterThan(1000);
  });
});

describe('loadCaffe: formats and errors', () => {
  const small: Layer[] = [
    {
      name: 'conv',
      type: 'Convolution',
      bottom: ['data'],
      top: ['conv'],
      param: { num_output: 4, kernel_size: 3 },
      blobs: [blob([4, 2, 3, 3], 21), blob([4], 22)],
    },
    { name: 'relu', type: 'ReLU', bottom: ['conv'], top: ['conv'] },
    {
      name: 'pool',
      type: 'Pooling',
      bottom: ['conv'],
      top: ['pool'],
      param: { pool: 'MAX', kernel_size: 2, stride: 2 },
    },
    {
      name: 'fc',
      type: 'InnerProduct',
      bottom: ['pool'],
      top: ['fc'],
      param: { num_output: 3 },
      blobs: [blob([3, 64], 23), blob([3], 24)],
    },
  ];

  it('the V1 layer format (layers { type: CONVOLUTION }) gives the same net', () => {
    const v2 = loadCaffe(prototxt({ name: 'data', shape: [1, 2, 10, 10] }, small), caffemodel(small));
    const v1Text = [
      'name: "v1"',
      'input: "data"',
      'input_dim: 1 input_dim: 2 input_dim: 10 input_dim: 10',
      'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }',
      'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }',
      'layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }',
      'layers { name: "fc" type: INNER_PRODUCT bottom: "pool" top: "fc" inner_product_param { num_output: 3 } }',
      'layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc" bottom: "label" top: "loss" }',
    ].join('\n');
    const v1Model = toBinary(
      NetParameterSchema,
      create(NetParameterSchema, {
        layers: small
          .filter((l) => l.blobs)
          .map((l) =>
            create(V1LayerParameterSchema, {
              name: l.name,
              type: l.type === 'Convolution' ? V1Type.CONVOLUTION : V1Type.INNER_PRODUCT,
              blobs: (l.blobs ?? []).map(blobProto),
            }),
          ),
      }),
    );
    const v1 = loadCaffe(v1Text, v1Model);
    expect(v1.inputShapes).toEqual([[1, 2, 10, 10]]);
    expect(v1.outputNames).toEqual(['fc']);
    const x = randn([1, 2, 10, 10], { rng: new Rng(5) });
    const [a, b] = noGrad(() => [v2.call(x), v1.call(x)]);
    expect(Array.from(b.data)).toEqual(Array.from(a.data));
  });

  it("a '.' in a layer name becomes '_' in its state-dict keys", () => {
    const dotted = small.map((l) => (l.name === 'conv' ? { ...l, name: 'conv.1' } : l));
    const net = loadCaffe(prototxt({ name: 'data', shape: [1, 2, 10, 10] }, dotted), caffemodel(dotted));
    expect([...net.stateDict().keys()]).toContain('conv_1.weight');
  });

  it('layers of the TRAIN phase are left out; a loss layer names the output', () => {
    const text = `${prototxt({ name: 'data', shape: [1, 2, 10, 10] }, small)}
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" include { phase: TRAIN } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }`;
    const net = loadCaffe(text, caffemodel(small));
    expect(net.outputNames).toEqual(['fc']);
    expect(noGrad(() => net.call(new Tensor(new Float32Array(200), [1, 2, 10, 10]))).shape).toEqual([1, 3]);
  });

  it('unsupported layers are listed together; bad files are Errors naming the problem', () => {
    const text = `${prototxt({ name: 'data', shape: [1, 2, 10, 10] }, small)}
layer { name: "weird" type: "Python" bottom: "fc" top: "w" }
layer { name: "odd" type: "Crop" bottom: "fc" top: "o" }`;
    expect(thrown(() => loadCaffe(text)).message).toMatch(/unsupported layers: 'weird' \(Python\), 'odd' \(Crop\)/);
    expect(thrown(() => loadCaffe('layer { name: "x" type: }')).message).toMatch(
      /^loadCaffe: the net definition does not parse/,
    );
    const good = prototxt({ name: 'data', shape: [1, 2, 10, 10] }, small);
    expect(thrown(() => loadCaffe(good, Uint8Array.of(0x0a, 0xff, 0xff, 0xff))).message).toMatch(
      /^loadCaffe: the caffemodel does not parse/,
    );
    const three = small.map((l) =>
      l.name === 'fc' ? { ...l, blobs: [blob([3, 64], 1), blob([3], 2), blob([3], 3)] } : l,
    );
    expect(thrown(() => loadCaffe(good, caffemodel(three))).message).toMatch(/layer 'fc' has 3 blobs/);
    // Shapes are the caffemodel's (Caffe infers them at setup): a wrong one fails the forward, named.
    const wrong = small.map((l) => (l.name === 'fc' ? { ...l, blobs: [blob([3, 60], 1), blob([3], 2)] } : l));
    const net = loadCaffe(good, caffemodel(wrong));
    const x = new Tensor(new Float32Array(200), [1, 2, 10, 10]);
    expect(thrown(() => noGrad(() => net.call(x))).message).toMatch(/layer 'fc' \(InnerProduct\): linear/);
    expect(thrown(() => loadCaffe(join(dir, 'missing.prototxt'))).message).toMatch(/missing\.prototxt/);
  });
});
