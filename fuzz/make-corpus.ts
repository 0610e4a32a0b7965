// Writes the seed corpus in fuzz/corpus/<target>/ (committed; rerun only to change the seeds,
// which changes the inputs every --seed gives):  node --import tsx fuzz/make-corpus.ts [target...]
// Seeds are small valid files covering each format's variants: every safetensors dtype, real
// checkpoints of the checkpoint target's tiny setup, IDX files of every type code (plain and
// gzipped), PNG and JPEG files of the colour types and codings libvips decodes differently.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { mnistDataDir } from '../src/data/mnist.js';
import { manualSeed } from '../src/random.js';
import { Tensor } from '../src/tensor.js';
import { fit } from '../src/train/fit.js';
import { FUZZ_DIR, REPO_DIR } from './engine.js';
import { concat } from './mutate.js';
import { makeLoader, makeOptimizer, makeScheduler, tinySetup } from './targets/checkpoint.js';

const corpus = (name: string): string => {
  const dir = join(FUZZ_DIR, 'corpus', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
};

async function safetensors(): Promise<void> {
  const dir = corpus('safetensors');
  copyFileSync(
    join(REPO_DIR, 'test', 'fixtures', 'torch_small.safetensors'),
    join(dir, 'torch-small-all-dtypes.safetensors'),
  );
  const tensors = new Map<string, Tensor>([
    ['weight', new Tensor(Float32Array.from([1, -2, 3.5, 0, -0, 1e-40]), [2, 3])],
    ['scalar', new Tensor(Float32Array.from([7]), [])],
    ['empty', new Tensor(new Float32Array(0), [0, 4])],
    ['counter', new Tensor(Float32Array.from([42]), [1])],
  ]);
  writeFileSync(
    join(dir, 'ferroconv-i64-metadata.safetensors'),
    concat(serializeSafetensors(tensors, { metadata: { format: 'pt', note: 'seed' }, int64: (n) => n === 'counter' })),
  );
  writeFileSync(join(dir, 'empty-header.safetensors'), concat(serializeSafetensors(new Map())));
}

async function checkpoint(): Promise<void> {
  const dir = corpus('checkpoint');
  const work = mkdtempSync(join(tmpdir(), 'ferroconv-corpus-'));
  try {
    // After 1 of 3 epochs (a resume point), then the full run resumed from it (history of 3).
    // (Plain weight files are the safetensors target's seeds.)
    manualSeed(3);
    const { model, dataset, batchSize, epochs } = tinySetup();
    const optimizer = makeOptimizer(model);
    const loader = makeLoader(dataset, batchSize);
    const scheduler = makeScheduler(optimizer, epochs, loader.length);
    const common = { optimizer, scheduler, schedulerInterval: 'batch' as const, checkpointDir: work, progress: false };
    await fit(model, loader, { ...common, epochs: 1 });
    copyFileSync(join(work, 'checkpoint.safetensors'), join(dir, 'after-epoch-1.safetensors'));
    await fit(model, loader, { ...common, epochs, resume: true });
    copyFileSync(join(work, 'checkpoint.safetensors'), join(dir, 'after-epoch-3.safetensors'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function idxFile(type: number, dims: number[], values: ArrayLike<number>): Uint8Array {
  const width = { 0x08: 1, 0x09: 1, 0x0b: 2, 0x0c: 4, 0x0d: 4, 0x0e: 8 }[type]!;
  const b = new Uint8Array(4 + 4 * dims.length + width * values.length);
  const dv = new DataView(b.buffer);
  b.set([0, 0, type, dims.length]);
  dims.forEach((d, i) => {
    dv.setUint32(4 + 4 * i, d, false);
  });
  const at = 4 + 4 * dims.length;
  for (let i = 0; i < values.length; i++) {
    const o = at + width * i;
    const v = values[i];
    if (type === 0x08) dv.setUint8(o, v);
    else if (type === 0x09) dv.setInt8(o, v);
    else if (type === 0x0b) dv.setInt16(o, v, false);
    else if (type === 0x0c) dv.setInt32(o, v, false);
    else if (type === 0x0d) dv.setFloat32(o, v, false);
    else dv.setFloat64(o, v, false);
  }
  return b;
}

async function idx(): Promise<void> {
  const dir = corpus('idx');
  // The first two MNIST test images and their labels.
  const mnistDir = mnistDataDir();
  const images = readFileSync(join(mnistDir, 't10k-images-idx3-ubyte'));
  const two = concat([
    new Uint8Array([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28]),
    images.subarray(16, 16 + 2 * 784),
  ]);
  writeFileSync(join(dir, 'mnist-2-images.idx'), two);
  writeFileSync(join(dir, 'mnist-2-images.idx.gz'), gzipSync(two));
  writeFileSync(
    join(dir, 'mnist-5-labels.idx'),
    concat([
      new Uint8Array([0, 0, 8, 1, 0, 0, 0, 5]),
      readFileSync(join(mnistDir, 't10k-labels-idx1-ubyte')).subarray(8, 13),
    ]),
  );
  writeFileSync(
    join(dir, 'ubyte-3x4x4.idx'),
    idxFile(
      0x08,
      [3, 4, 4],
      Array.from({ length: 48 }, (_, i) => (i * 37) & 0xff),
    ),
  );
  writeFileSync(join(dir, 'sbyte-4.idx'), idxFile(0x09, [4], [-128, -1, 0, 127]));
  writeFileSync(join(dir, 'int16-2x3.idx'), idxFile(0x0b, [2, 3], [-32768, -1, 0, 1, 300, 32767]));
  writeFileSync(join(dir, 'int32-3.idx'), idxFile(0x0c, [3], [-(2 ** 31), 0, 2 ** 31 - 1]));
  writeFileSync(join(dir, 'float32-2x2.idx'), idxFile(0x0d, [2, 2], [0.5, -1.25, 3e38, 1e-45]));
  writeFileSync(join(dir, 'float64-1x1x1x2.idx'), idxFile(0x0e, [1, 1, 1, 2], [Math.PI, -0]));
}

type SharpInstance = {
  png(o?: object): SharpInstance;
  jpeg(o?: object): SharpInstance;
  toColourspace(s: string): SharpInstance;
  toBuffer(): Promise<Buffer>;
};
type SharpFactory = (
  input: Buffer,
  opts: { raw: { width: number; height: number; channels: number } },
) => SharpInstance;

async function images(): Promise<void> {
  const dir = corpus('image-folder');
  const sharp = createRequire(import.meta.url)('sharp') as SharpFactory;
  const raw = (w: number, h: number, c: number): SharpInstance => {
    const px = Buffer.alloc(w * h * c);
    for (let i = 0; i < px.length; i++) px[i] = (i * 53 + (i % c) * 97) & 0xff;
    return sharp(px, { raw: { width: w, height: h, channels: c } });
  };
  const out = async (name: string, img: SharpInstance): Promise<void> =>
    writeFileSync(join(dir, name), await img.toBuffer());
  await out('rgb-8x6.png', raw(8, 6, 3).png());
  await out('gray-5x5.png', raw(5, 5, 1).png());
  await out('rgba-4x4.png', raw(4, 4, 4).png());
  await out('palette-6x6.png', raw(6, 6, 3).png({ palette: true, colours: 8 }));
  await out('interlaced-9x7.png', raw(9, 7, 3).png({ progressive: true }));
  await out('gray16-4x3.png', raw(4, 3, 1).toColourspace('grey16').png());
  await out('baseline-8x8.jpg', raw(8, 8, 3).jpeg({ quality: 80 }));
  await out('progressive-16x12.jpg', raw(16, 12, 3).jpeg({ progressive: true, quality: 70 }));
  await out('gray-8x8.jpg', raw(8, 8, 1).jpeg({ quality: 90 }));
  await out('444-8x8.jpg', raw(8, 8, 3).jpeg({ chromaSubsampling: '4:4:4', quality: 60 }));
}

/** Traced plans of small models (every entry a plan can replay), run small enough to execute. */
async function plans(): Promise<void> {
  const dir = corpus('plan');
  const {
    Conv2d,
    BatchNorm2d,
    ReLU,
    MaxPool2d,
    AvgPool2d,
    Flatten,
    Linear,
    LocalResponseNorm,
    Sigmoid,
    Tanh,
    Sequential,
  } = await import('../src/nn/index.js');
  const { trace } = await import('../src/plan/trace.js');
  const { randn } = await import('../src/tensor.js');
  const { models } = await import('../src/index.js');
  manualSeed(1);
  const nets: [string, { eval(): unknown; stateDict(): Map<string, Tensor> }, number[]][] = [
    [
      'conv-bn-relu-pool-linear',
      new Sequential(
        new Conv2d(1, 4, 3, { padding: 1 }),
        new BatchNorm2d(4),
        new ReLU(),
        new MaxPool2d(2),
        new Flatten(),
        new Linear(4 * 4 * 4, 3),
      ),
      [2, 1, 8, 8],
    ],
    [
      'lrn-sigmoid-avgpool-tanh',
      new Sequential(
        new Conv2d(3, 4, 3, { bias: false }),
        new LocalResponseNorm(3),
        new Sigmoid(),
        new AvgPool2d(2, { padding: 1 }),
        new Tanh(),
      ),
      [1, 3, 7, 7],
    ],
    [
      'densenet-tiny',
      new models.DenseNet({ growthRate: 2, blockConfig: [2, 2], numInitFeatures: 4, bnSize: 2, numClasses: 3 }),
      [1, 3, 16, 16],
    ],
  ];
  for (const [name, net, shape] of nets) {
    net.eval();
    const x = randn(shape);
    const m = net as unknown as { forwardIsolated(s: null, inputs: Tensor[]): Tensor };
    const t = trace(() => m.forwardIsolated(null, [x]), x.data, [...net.stateDict().values()], false);
    writeFileSync(join(dir, `${name}.json`), t.spec);
  }
  // An int8 graph (quantize, int8 convs with residual and ReLU, pools, concat, float logits).
  const q = await tinyQuantized();
  const xq = randn([2, 2, 8, 8]);
  const tq = trace(() => q.forward(xq), xq.data, [...q.stateDict().values()], false);
  writeFileSync(join(dir, 'int8-tiny.json'), tq.spec);
  // A training step (forward, loss, backward, clipping, SGD with momentum), traced after one
  // eager step so that it updates the momentum buffers too.
  const { traceStep } = await import('../src/plan/trace.js');
  const { trainingStep } = await import('../src/train/fit.js');
  const { Dropout } = await import('../src/nn/index.js');
  const { SGD } = await import('../src/optim/index.js');
  const net = new Sequential(
    new Conv2d(1, 2, 3, { padding: 1 }),
    new BatchNorm2d(2),
    new ReLU(),
    new MaxPool2d(2),
    new Flatten(),
    new Dropout(0.5),
    new Linear(2 * 2 * 2, 3),
  );
  const opt = new SGD(net.parameters(), { lr: 0.1, momentum: 0.9 });
  const x = randn([2, 1, 4, 4]);
  const labels = Int32Array.from([0, 2]);
  const step = trainingStep(net, opt, x, labels, { clipGradNorm: 1 });
  step();
  const t = traceStep(step, [x.data, labels], [...net.stateDict().values()], opt.stateArrays(), []);
  writeFileSync(join(dir, 'train-step-small.json'), t.spec());
}

/**
 * A small quantized model exercising every int8 node: conv + ReLU, max and average pools, a
 * residual through a fused conv, an add and a ReLU of their own, a concat, global pooling and a
 * float-output linear.
 */
export async function tinyQuantized() {
  const nn = await import('../src/nn/index.js');
  const { Module } = await import('../src/nn/module.js');
  const { add, cat, relu_ } = await import('../src/ops/index.js');
  const { quantize } = await import('../src/quant/index.js');
  const { randn } = await import('../src/tensor.js');
  manualSeed(2);
  class Tiny extends Module {
    a = this.addModule('a', new nn.Conv2d(2, 4, 3, { padding: 1 }));
    b = this.addModule('b', new nn.Conv2d(4, 4, 1));
    c = this.addModule('c', new nn.Conv2d(4, 4, 3, { padding: 1 }));
    pool = this.addModule('pool', new nn.MaxPool2d(2));
    avg = this.addModule('avg', new nn.AvgPool2d(2, { padding: 1 }));
    gap = this.addModule('gap', new nn.AdaptiveAvgPool2d(1));
    fc = this.addModule('fc', new nn.Linear(8, 3));
    forward(x: Tensor): Tensor {
      const y = this.pool.call(nn.tryFusedConv(this.a, null, x, { relu: true }) ?? this.a.call(x));
      const r = nn.tryFusedConv(this.c, null, this.b.call(y), { residual: y, relu: true }) ?? this.c.call(y);
      const s = relu_(add(r, y));
      const z = cat([this.avg.call(s), this.avg.call(y)], 1);
      return this.fc.call(this.gap.call(z).reshape([x.shape[0], 8]));
    }
  }
  const m = new Tiny();
  m.eval();
  return quantize(m, [randn([2, 2, 8, 8]), randn([2, 2, 8, 8])]);
}

/** A saved quantized model. */
async function quantized(): Promise<void> {
  const dir = corpus('quantized');
  const { serializeQuantized } = await import('../src/quant/index.js');
  writeFileSync(join(dir, 'int8-tiny.safetensors'), concat(serializeQuantized(await tinyQuantized())));
}

/** Small ONNX models: ferroconv exports covering the exporter's operators, and opset 13 and 17. */
async function onnx(): Promise<void> {
  const dir = corpus('onnx');
  const nn = await import('../src/nn/index.js');
  const { toOnnx } = await import('../src/io/onnx/export.js');
  const { models } = await import('../src/index.js');
  manualSeed(1);
  const nets: [string, import('../src/nn/module.js').Module, number[], number][] = [
    [
      'conv-bn-relu-pool-linear',
      new nn.Sequential(
        new nn.Conv2d(1, 4, 3, { padding: 1 }),
        new nn.BatchNorm2d(4),
        new nn.ReLU(),
        new nn.MaxPool2d(2),
        new nn.Flatten(),
        new nn.Linear(4 * 4 * 4, 3),
      ),
      [2, 1, 8, 8],
      17,
    ],
    [
      'lrn-sigmoid-avgpool-tanh',
      new nn.Sequential(
        new nn.Conv2d(3, 4, 3, { bias: false, groups: 1 }),
        new nn.LocalResponseNorm(3),
        new nn.Sigmoid(),
        new nn.AvgPool2d(2, { padding: 1 }),
        new nn.Tanh(),
      ),
      [1, 3, 7, 7],
      13,
    ],
    [
      'densenet-tiny',
      new models.DenseNet({ growthRate: 2, blockConfig: [2, 2], numInitFeatures: 4, bnSize: 2, numClasses: 3 }),
      [1, 3, 16, 16],
      17,
    ],
  ];
  // The N-D ops: padding modes, broadcasting sub/div, gather, matmul and 3-D pools.
  const nd = await import('../src/ops/nd.js');
  const { poolNd } = await import('../src/ops/pool.js');
  const { reshape } = await import('../src/ops/elementwise.js');
  const { randn } = await import('../src/index.js');
  class NdOps extends nn.Module {
    readonly w = this.addParameter('w', randn([5, 3])) as Tensor;
    readonly s = this.addParameter('s', randn([2, 1, 5])) as Tensor;
    forward(x: Tensor): Tensor {
      const p = nd.pad(x, [0, 0, 1, 0], [0, 0, 1, 1], 'reflect'); // [1, 2, 6, 5]
      const m = nd.matmul(nd.div(nd.sub(p, this.s), this.s), this.w); // [1, 2, 6, 3]
      const g = nd.gather(m, 2, [0, 5, -2, 1]); // [1, 2, 4, 3]
      return poolNd('max', reshape(g, [1, 1, 2, 4, 3]), [2, 2, 2], { padsBegin: [1, 0, 1], padsEnd: [0, 1, 0] });
    }
  }
  nets.push(['nd-ops', new NdOps(), [1, 2, 4, 4], 17]);
  for (const [name, net, shape, opset] of nets) {
    writeFileSync(join(dir, `${name}.onnx`), toOnnx(net, { inputShape: shape, opset }));
  }
}

/** torch.save files from Debian's torch (test/fixtures/gen_torch_pth.py): the small ones. */
async function torch(): Promise<void> {
  const { execFileSync } = await import('node:child_process');
  const dir = corpus('torch');
  const tmp = mkdtempSync(join(tmpdir(), 'ferroconv-torch-corpus-'));
  try {
    execFileSync('/usr/bin/python3', [join(REPO_DIR, 'test', 'fixtures', 'gen_torch_pth.py'), tmp], { stdio: 'pipe' });
    for (const f of ['small.pth', 'small-legacy.pth']) copyFileSync(join(tmp, f), join(dir, f));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A small Caffe net as a prototxt and as a caffemodel holding its definition and blobs. */
async function caffe(): Promise<void> {
  const { create, toBinary } = await import('@bufbuild/protobuf');
  const { fromText } = await import('@bufbuild/protobuf/txtpb');
  const { BlobProtoSchema, NetParameterSchema } = await import('../src/io/caffe/gen/caffe_pb.js');
  const dir = corpus('caffe');
  const text = [
    'name: "small"',
    'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }',
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad_h: 1 } }',
    'layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }',
    'layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }',
    'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" relu_param { negative_slope: 0.1 } }',
    'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }',
    'layer { name: "slice" type: "Slice" bottom: "pool" top: "a" top: "b" slice_param { slice_point: 2 } }',
    'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { coeff: 1 coeff: -1 } }',
    'layer { name: "cat" type: "Concat" bottom: "sum" bottom: "a" top: "cat" }',
    'layer { name: "lrn" type: "LRN" bottom: "cat" top: "lrn" lrn_param { local_size: 3 } }',
    'layer { name: "fc" type: "InnerProduct" bottom: "lrn" top: "fc" inner_product_param { num_output: 3 } }',
    'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }',
  ].join('\n');
  writeFileSync(join(dir, 'small.prototxt'), text);
  const net = fromText(NetParameterSchema, text);
  const blob = (shape: number[], seed: number) =>
    create(BlobProtoSchema, {
      shape: { dim: shape.map(BigInt) },
      data: Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i + seed) * 0.5 + 0.6),
    });
  const blobs: Record<string, number[][]> = {
    conv: [[4, 2, 3, 3], [4]],
    bn: [[4], [4], [1]],
    scale: [[4], [4]],
    fc: [[3, 4 * 4 * 3], [3]],
  };
  for (const layer of net.layer) {
    const shapes = blobs[layer.name] ?? [];
    layer.blobs = shapes.map((sh, k) => blob(sh, k));
  }
  writeFileSync(join(dir, 'small.caffemodel'), toBinary(NetParameterSchema, net));
}

/** Small solvers with their nets inline: SGD with a step policy, Adam with iter_size and a test net. */
function caffeSolver(): void {
  const dir = corpus('caffe-solver');
  const net = (extra: string) =>
    [
      'net_param {',
      '  layer { name: "in" type: "Input" top: "data" top: "label"',
      '    input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } shape { dim: 2 } } }',
      '  layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" param { lr_mult: 1 } param { lr_mult: 2 }',
      '    convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }',
      '  layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }',
      '  layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }',
      '  layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }',
      '  layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 4 weight_filler { type: "msra" } } }',
      `  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" ${extra} }`,
      '  layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }',
      '}',
    ].join('\n');
  writeFileSync(
    join(dir, 'sgd.prototxt'),
    `base_lr: 0.01 max_iter: 2 lr_policy: "step" gamma: 0.1 stepsize: 1 momentum: 0.9 weight_decay: 0.0005\n${net('')}`,
  );
  writeFileSync(
    join(dir, 'adam.prototxt'),
    `base_lr: 0.001 max_iter: 2 type: "Adam" iter_size: 2 test_iter: 1 test_interval: 1 clip_gradients: 1\n${net('loss_weight: 0.5')}`,
  );
}

/** The Keras fixtures (written by Keras 3 with test/fixtures/keras/gen_keras.py), both formats. */
function keras(): void {
  const dir = corpus('keras');
  for (const name of ['sequential', 'functional']) {
    for (const ext of ['keras', 'h5']) {
      copyFileSync(join(REPO_DIR, 'test', 'fixtures', 'keras', `${name}.${ext}`), join(dir, `${name}.${ext}`));
    }
  }
}

/** Two small tfjs layers models, saved by tfjs, as the JSON documents the tfjs target reads. */
async function tfjs(): Promise<void> {
  const tf = await import('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  const dir = corpus('tfjs');
  const seq = tf.sequential();
  seq.add(tf.layers.conv2d({ inputShape: [6, 6, 2], filters: 3, kernelSize: 3, padding: 'same', activation: 'relu' }));
  seq.add(tf.layers.batchNormalization());
  seq.add(tf.layers.maxPooling2d({ poolSize: 2, padding: 'same' }));
  seq.add(tf.layers.flatten());
  seq.add(tf.layers.dense({ units: 4, activation: 'softmax' }));
  const input = tf.input({ shape: [5, 5, 2] });
  const a = tf.layers
    .depthwiseConv2d({ kernelSize: 3, padding: 'same' })
    .apply(input) as import('@tensorflow/tfjs').SymbolicTensor;
  const sum = tf.layers.add().apply([a, input]) as import('@tensorflow/tfjs').SymbolicTensor;
  const g = tf.layers.globalAveragePooling2d({}).apply(sum) as import('@tensorflow/tfjs').SymbolicTensor;
  const fn = tf.model({
    inputs: input,
    outputs: tf.layers.dense({ units: 2 }).apply(g) as import('@tensorflow/tfjs').SymbolicTensor,
  });
  for (const [name, model] of [
    ['sequential', seq],
    ['functional', fn],
  ] as const) {
    await model.save(
      tf.io.withSaveHandler(async (art) => {
        const data = Buffer.from(new Uint8Array(art.weightData as ArrayBuffer)).toString('base64');
        const doc = { modelTopology: art.modelTopology, weightSpecs: art.weightSpecs, weightData: data };
        writeFileSync(join(dir, `${name}.json`), JSON.stringify(doc));
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
  }
}

/**
 * Tuning caches: the choices the tuner made for a few small shapes of every pass (this CPU's
 * name replaced by '@CPU@', which the target puts back), a header alone, and lines made on
 * another CPU.
 */
async function tuneCache(): Promise<void> {
  const { clearConvTuning, conv2d, info, setTuneCache, sum } = await import('../src/index.js');
  const dir = corpus('tune-cache');
  const work = mkdtempSync(join(tmpdir(), 'ferroconv-corpus-'));
  try {
    const file = join(work, 'tune.tsv');
    clearConvTuning();
    setTuneCache(file);
    for (const [n, c, hw, oc, k] of [
      [2, 16, 12, 16, 3],
      [1, 8, 9, 4, 5],
      [2, 4, 8, 4, 1],
    ]) {
      const x = new Tensor(new Float32Array(n * c * hw * hw).fill(0.5), [n, c, hw, hw]).requiresGrad_();
      const w = new Tensor(new Float32Array(oc * c * k * k).fill(0.25), [oc, c, k, k]).requiresGrad_();
      sum(conv2d(x, w, null, { padding: Math.floor(k / 2) })).backward();
    }
    setTuneCache(null);
    clearConvTuning();
    const text = readFileSync(file, 'utf8').split(info().cpu).join('@CPU@');
    const lines = text.split('\n');
    writeFileSync(join(dir, 'tuned.tsv'), text);
    writeFileSync(join(dir, 'header.tsv'), `${lines[0]}\n`);
    writeFileSync(join(dir, 'other-cpu.tsv'), text.split('@CPU@').join('Another CPU 9000'));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const only = process.argv.slice(2);
const want = (name: string): boolean => only.length === 0 || only.includes(name);
if (want('safetensors')) await safetensors();
if (want('checkpoint')) await checkpoint();
if (want('idx')) await idx();
if (want('image-folder')) await images();
if (want('plan')) await plans();
if (want('quantized')) await quantized();
if (want('onnx')) await onnx();
if (want('torch')) await torch();
if (want('caffe')) await caffe();
if (want('caffe-solver')) caffeSolver();
if (want('keras')) keras();
if (want('tfjs')) await tfjs();
if (want('tune-cache')) await tuneCache();
console.log(`seed corpus written to ${join(FUZZ_DIR, 'corpus')}`);
