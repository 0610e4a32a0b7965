// tfjs / Keras layers models: the model.json a tfjs `model.save('file://...')` (or tfjs-converter
// from Keras) writes, with its weights manifest and .bin shards, as a ferroconv Module. Sequential
// and functional models of the CNN layers (Conv2D, DepthwiseConv2D, SeparableConv2D,
// Conv2DTranspose, Dense, BatchNormalization, Max/AveragePooling2D, GlobalAverage/MaxPooling2D,
// Activation, ReLU, LeakyReLU, Softmax, Flatten, Dropout, Add, Concatenate, ZeroPadding2D).
//
// ferroconv is NCHW where tfjs is NHWC: the model takes [N, C, H, W] inputs, kernels are transposed
// to ferroconv's layouts once at load (Conv2D [kh, kw, in, out] -> [out, in, kh, kw], Dense
// [in, out] -> [out, in]), and Flatten first moves channels last, so the Dense after it keeps the
// tfjs weights' order and gives tfjs's numbers. 'same' padding is TensorFlow's (the odd pixel
// after). State-dict names are `<layer name>.weight`, `.bias`, batch norm's `.running_mean` and
// `.running_var`, as ferroconv's own layers name them.
import { readFileSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import { clip, hardSigmoid, leakyRelu, relu, sigmoid, tanh } from '../ops/activation.js';
import { conv2d, convTransposeNd } from '../ops/conv.js';
import { add, cat, dropout, reshape, transpose } from '../ops/elementwise.js';
import { linear } from '../ops/linear.js';
import { softmaxAlong } from '../ops/loss.js';
import { pad } from '../ops/nd.js';
import { batchNorm2d } from '../ops/norm.js';
import { adaptiveAvgPool2d, maxPool2d, poolNd } from '../ops/pool.js';
import { Module } from '../nn/module.js';
import { Tensor } from '../tensor.js';

function fail(msg: string): never {
  throw new Error(`loadTfjsLayersModel: ${msg}`);
}

/** What tfjs's save handlers get: the topology, the weights' specs and their bytes. */
export interface TfjsArtifacts {
  modelTopology: unknown;
  weightSpecs: { name: string; shape: number[]; dtype?: string }[];
  weightData: ArrayBuffer | Uint8Array;
}

type Config = Record<string, unknown>;
interface LayerSpec {
  className: string;
  name: string;
  config: Config;
  inbound: string[];
}

const SUPPORTED = new Set([
  'InputLayer',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'Conv2DTranspose',
  'Dense',
  'BatchNormalization',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Activation',
  'ReLU',
  'LeakyReLU',
  'Softmax',
  'Flatten',
  'Dropout',
  'Add',
  'Concatenate',
  'ZeroPadding2D',
]);

const num = (v: unknown, dflt: number): number => (typeof v === 'number' ? v : dflt);
/** A string field, or an Error (String() of a hostile object can throw or recurse without end). */
const str = (v: unknown, what: string): string => (typeof v === 'string' ? v : fail(`${what}: expected a string`));
const pairOf = (v: unknown, dflt: number): [number, number] =>
  Array.isArray(v) ? [v[0], v[1] ?? v[0]] : typeof v === 'number' ? [v, v] : [dflt, dflt];

/** TensorFlow's 'same' padding of one axis: [before, after], the odd one after. */
function samePad(size: number, kernel: number, stride: number, dilation: number): [number, number] {
  const out = Math.ceil(size / stride);
  const total = Math.max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

function activate(x: Tensor, name: unknown): Tensor {
  switch (name ?? 'linear') {
    case 'linear':
      return x;
    case 'relu':
      return relu(x);
    case 'relu6':
      return clip(x, 0, 6);
    case 'sigmoid':
      return sigmoid(x);
    case 'tanh':
      return tanh(x);
    case 'hard_sigmoid':
    case 'hardSigmoid':
      // tfjs and Keras: clip(0.2 x + 0.5, 0, 1).
      return hardSigmoid(x, 0.2, 0.5);
    case 'softmax':
      return softmaxChannels(x);
    default:
      throw new Error(`activation '${typeof name === 'string' ? name : typeof name}' is not supported`);
  }
}

/** Softmax over channels: the last axis of 2-D, channels (axis 1) of NCHW. */
const softmaxChannels = (x: Tensor): Tensor => softmaxAlong(x, 1);

/** The layers of a Sequential or functional model, with the names of their inputs. */
function layerSpecs(topology: unknown): { layers: LayerSpec[]; inputs: string[]; outputs: string[] } {
  const top = topology as Config;
  const model = (top?.model_config ?? top) as Config;
  const cls = model?.class_name;
  const config = model?.config as Config | undefined;
  const raw = (Array.isArray(config) ? config : config?.layers) as Config[] | undefined;
  if (!Array.isArray(raw)) fail('the topology has no layers (expected a Sequential or functional model)');
  const specs = raw.map((l, i) => {
    const c = (l?.config ?? {}) as Config;
    const name = typeof c.name === 'string' ? c.name : typeof l?.name === 'string' ? l.name : `layer_${i}`;
    if (name.includes('.')) fail(`layer name '${name}' has a '.'`);
    return { className: str(l?.class_name, `layer ${i} class_name`), name, config: c, inbound: [] as string[], raw: l };
  });
  if (cls === 'Sequential') {
    const layers: LayerSpec[] = [];
    let prev = 'input';
    const first = specs[0];
    const inputs = ['input'];
    for (const s of specs) {
      if (s.className === 'InputLayer') continue;
      layers.push({ ...s, inbound: [prev] });
      prev = s.name;
    }
    if (!first) fail('the model has no layers');
    return { layers, inputs, outputs: [prev] };
  }
  if (cls !== 'Model' && cls !== 'Functional') fail(`model class '${str(cls, 'class_name')}' is not supported`);
  const names = (v: unknown): string[] =>
    Array.isArray(v)
      ? v.map((e) => str(Array.isArray(e) ? e[0] : e, 'an input or output layer'))
      : fail('bad input/output layers');
  const layers = specs.map((s) => {
    const nodes = (s.raw as Config).inbound_nodes as unknown[];
    if (Array.isArray(nodes) && nodes.length > 1) fail(`layer '${s.name}' is called more than once (shared layers)`);
    const first = Array.isArray(nodes) && nodes.length ? nodes[0] : [];
    const node = Array.isArray(first) ? first : fail(`layer '${s.name}': bad inbound_nodes`);
    return {
      ...s,
      inbound: node.map((e) => str(Array.isArray(e) ? e[0] : null, `layer '${s.name}': inbound node`)),
    };
  });
  const inputs = names(config?.input_layers);
  return { layers: layers.filter((l) => l.className !== 'InputLayer'), inputs, outputs: names(config?.output_layers) };
}

/** A layer's weights as a module of its own (state dict `<layer>.weight`, ...). */
class Weights extends Module {
  hold(name: string, t: Tensor, trainable: boolean): void {
    if (trainable) this.addParameter(name, t);
    else this.addBuffer(name, t);
  }
  has(name: string): boolean {
    return this.stateDict().has(name);
  }
  get(name: string): Tensor {
    const t = this.stateDict().get(name);
    if (!t) throw new Error(`no ${name}`);
    return t;
  }
  forward(): Tensor {
    throw new Error('a holder of tfjs weights has no forward');
  }
}

/** A tfjs / Keras layers model as a ferroconv Module (NCHW inputs). */
export class TfjsModel extends Module {
  readonly inputNames: string[];
  readonly outputNames: string[];
  /** Declared input shapes, NCHW with the batch as 1, when the model gives them. */
  readonly inputShapes: (number[] | null)[];
  private readonly layers: LayerSpec[];
  private readonly held = new Map<string, Weights>();

  constructor(topology: unknown, weights: Map<string, Tensor>) {
    super();
    const { layers, inputs, outputs } = layerSpecs(topology);
    const bad = layers.filter((l) => !SUPPORTED.has(l.className)).map((l) => `'${l.name}' (${l.className})`);
    if (bad.length) fail(`unsupported layers: ${bad.join(', ')}`);
    this.layers = layers;
    this.inputNames = inputs;
    this.outputNames = outputs;
    const all = (topology as Config)?.model_config ?? topology;
    const rawLayers = ((all as Config)?.config as Config)?.layers as Config[] | undefined;
    this.inputShapes = inputs.map((name, i) => {
      const cands = (rawLayers ?? []).map((l) => l?.config as Config).filter(Boolean);
      const c = cands.find((x) => x.name === name) ?? (i === 0 ? cands[0] : undefined);
      const s = (c?.batch_input_shape ?? c?.batchInputShape) as (number | null)[] | undefined;
      if (!Array.isArray(s) || s.length !== 4) return null;
      const dims = [1, s[3], s[1], s[2]];
      return dims.every((d) => Number.isSafeInteger(d) && (d as number) > 0) ? (dims as number[]) : null;
    });
    const used = new Set<string>();
    for (const l of layers) {
      let w: Weights | null;
      try {
        w = this.convert(l, weights, used);
      } catch (e) {
        const msg = (e as Error).message;
        if (msg.startsWith('loadTfjsLayersModel: ')) throw e;
        fail(`layer '${l.name}' (${l.className}): ${msg}`);
      }
      if (w) this.held.set(l.name, this.addModule(l.name, w));
    }
    const unused = [...weights.keys()].filter((k) => !used.has(k));
    if (unused.length) fail(`weights no layer uses: ${unused.slice(0, 5).join(', ')}`);
  }

  /** A layer's weights in ferroconv's layouts. */
  private convert(l: LayerSpec, weights: Map<string, Tensor>, used: Set<string>): Weights | null {
    const take = (suffix: string, required = true): Tensor | null => {
      const key = [...weights.keys()].find((k) => k === `${l.name}/${suffix}` || k.endsWith(`/${l.name}/${suffix}`));
      if (!key) return required ? fail(`layer '${l.name}': weight '${suffix}' is missing`) : null;
      used.add(key);
      return weights.get(key) as Tensor;
    };
    const w = new Weights();
    const useBias = l.config.use_bias !== false;
    switch (l.className) {
      case 'Conv2D': {
        w.hold('weight', transpose(take('kernel') as Tensor, [3, 2, 0, 1]), true);
        if (useBias) w.hold('bias', take('bias') as Tensor, true);
        return w;
      }
      case 'Conv2DTranspose': {
        // [kh, kw, out, in] -> [in, out, kh, kw]
        w.hold('weight', transpose(take('kernel') as Tensor, [3, 2, 0, 1]), true);
        if (useBias) w.hold('bias', take('bias') as Tensor, true);
        return w;
      }
      case 'DepthwiseConv2D':
      case 'SeparableConv2D': {
        const k = take('depthwise_kernel') as Tensor; // [kh, kw, in, mult]
        const [kh, kw, cin, mult] = k.shape;
        w.hold('depthwise_weight', reshape(transpose(k, [2, 3, 0, 1]), [cin * mult, 1, kh, kw]), true);
        if (l.className === 'SeparableConv2D') {
          w.hold('pointwise_weight', transpose(take('pointwise_kernel') as Tensor, [3, 2, 0, 1]), true);
        }
        if (useBias) w.hold('bias', take('bias') as Tensor, true);
        return w;
      }
      case 'Dense': {
        w.hold('weight', transpose(take('kernel') as Tensor, [1, 0]), true);
        if (useBias) w.hold('bias', take('bias') as Tensor, true);
        return w;
      }
      case 'BatchNormalization': {
        const gamma = l.config.scale !== false ? take('gamma') : null;
        const beta = l.config.center !== false ? take('beta') : null;
        if (gamma) w.hold('weight', gamma, true);
        if (beta) w.hold('bias', beta, true);
        w.hold('running_mean', take('moving_mean') as Tensor, false);
        w.hold('running_var', take('moving_variance') as Tensor, false);
        return w;
      }
      default:
        return null;
    }
  }

  forward(...inputs: Tensor[]): Tensor {
    return this.forwardAll(...inputs)[0];
  }

  forwardAll(...inputs: Tensor[]): Tensor[] {
    if (inputs.length !== this.inputNames.length) {
      throw new Error(`TfjsModel: expected ${this.inputNames.length} input(s), got ${inputs.length}`);
    }
    const values = new Map<string, Tensor>();
    this.inputNames.forEach((n, i) => {
      values.set(n, inputs[i]);
    });
    for (const l of this.layers) {
      const xs = l.inbound.map((n) => values.get(n) ?? fail(`layer '${l.name}': input '${n}' is not computed`));
      try {
        values.set(l.name, this.run(l, xs));
      } catch (e) {
        throw new Error(`TfjsModel: layer '${l.name}' (${l.className}): ${(e as Error).message}`, { cause: e });
      }
    }
    return this.outputNames.map((n) => values.get(n) ?? fail(`output '${n}' is not computed`));
  }

  private run(l: LayerSpec, xs: Tensor[]): Tensor {
    const x = xs[0];
    const c = l.config;
    const w = this.held.get(l.name);
    const get = (n: string): Tensor => {
      if (!w) throw new Error(`no ${n}`);
      return w.get(n);
    };
    const bias = () => (w?.has('bias') ? get('bias') : null);
    const window = (kernel: [number, number], stride: [number, number], dil: [number, number]) => {
      if (c.padding !== 'same') return [0, 0, 0, 0] as [number, number, number, number];
      const [t, b] = samePad(x.shape[2], kernel[0], stride[0], dil[0]);
      const [le, r] = samePad(x.shape[3], kernel[1], stride[1], dil[1]);
      return [t, b, le, r] as [number, number, number, number];
    };
    if (x && x.ndim !== 4 && /Conv|Pooling2D|ZeroPadding/.test(l.className)) {
      throw new Error(`expected an NCHW input, got [${x.shape.join(', ')}]`);
    }
    switch (l.className) {
      case 'Conv2D': {
        const weight = get('weight');
        const kernel: [number, number] = [weight.shape[2], weight.shape[3]];
        const stride = pairOf(c.strides, 1);
        const dilation = pairOf(c.dilation_rate, 1);
        const y = conv2d(x, weight, bias(), { stride, dilation, padding: window(kernel, stride, dilation) });
        return activate(y, c.activation);
      }
      case 'DepthwiseConv2D':
      case 'SeparableConv2D': {
        const dw = get('depthwise_weight');
        const kernel: [number, number] = [dw.shape[2], dw.shape[3]];
        const stride = pairOf(c.strides, 1);
        const dilation = pairOf(c.dilation_rate, 1);
        const padding = window(kernel, stride, dilation);
        const sep = l.className === 'SeparableConv2D';
        let y = conv2d(x, dw, sep ? null : bias(), { stride, dilation, padding, groups: x.shape[1] });
        if (sep) y = conv2d(y, get('pointwise_weight'), bias());
        return activate(y, c.activation);
      }
      case 'Conv2DTranspose': {
        const weight = get('weight');
        const [kh, kw] = [weight.shape[2], weight.shape[3]];
        const stride = pairOf(c.strides, 1);
        const dilation = pairOf(c.dilation_rate, 1);
        // 'same': output = input * stride, the crop split as the forward conv pads it.
        const crop = [0, 1].map((d) => {
          if (c.padding !== 'same') return [0, 0];
          const k = [kh, kw][d];
          const full = (x.shape[2 + d] - 1) * stride[d] + (k - 1) * dilation[d] + 1;
          const total = Math.max(0, full - x.shape[2 + d] * stride[d]);
          return [Math.floor(total / 2), total - Math.floor(total / 2)];
        });
        const extra = [0, 1].map((d) => {
          if (c.padding !== 'same') return 0;
          const k = [kh, kw][d];
          const full = (x.shape[2 + d] - 1) * stride[d] + (k - 1) * dilation[d] + 1;
          return Math.max(0, x.shape[2 + d] * stride[d] - full);
        });
        const y = convTransposeNd(x, weight, bias(), {
          stride,
          dilation,
          padsBegin: crop.map((p) => p[0]),
          padsEnd: crop.map((p) => p[1]),
          outputPadding: extra,
        });
        return activate(y, c.activation);
      }
      case 'Dense': {
        if (x.ndim !== 2) throw new Error(`expected a 2-D input, got [${x.shape.join(', ')}]`);
        return activate(linear(x, get('weight'), bias()), c.activation);
      }
      case 'BatchNormalization': {
        const axis = num(c.axis, -1);
        if (!(axis === -1 || axis === x.ndim - 1 || (x.ndim === 4 && axis === 3))) {
          throw new Error(`batch normalization over axis ${axis} is not supported`);
        }
        const four = x.ndim === 4 ? x : reshape(x, [x.shape[0], x.shape[1], 1, 1]);
        const y = batchNorm2d(
          four,
          get('running_mean'),
          get('running_var'),
          w?.has('weight') ? get('weight') : null,
          w?.has('bias') ? get('bias') : null,
          { training: this.training, eps: num(c.epsilon, 1e-3), momentum: 1 - num(c.momentum, 0.99) },
        );
        return x.ndim === 4 ? y : reshape(y, x.shape);
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const kernel = pairOf(c.pool_size, 2);
        const stride = c.strides == null ? kernel : pairOf(c.strides, 1);
        const [t, b, le, r] = window(kernel, stride, [1, 1]);
        const kind = l.className === 'MaxPooling2D' ? 'max' : 'avg';
        return poolNd(kind, x, kernel, { stride, padsBegin: [t, le], padsEnd: [b, r], countIncludePad: false });
      }
      case 'GlobalAveragePooling2D':
        return reshape(adaptiveAvgPool2d(x, 1), [x.shape[0], x.shape[1]]);
      case 'GlobalMaxPooling2D':
        return reshape(maxPool2d(x, [x.shape[2], x.shape[3]]), [x.shape[0], x.shape[1]]);
      case 'Activation':
        return activate(x, c.activation);
      case 'ReLU': {
        const max = c.max_value == null ? Infinity : num(c.max_value, Infinity);
        const slope = num(c.negative_slope, 0);
        if (num(c.threshold, 0) !== 0) throw new Error('a ReLU threshold is not supported');
        const y = slope ? leakyRelu(x, slope) : relu(x);
        return max === Infinity ? y : clip(y, -Infinity, max);
      }
      case 'LeakyReLU':
        // Keras 3 names the slope negative_slope, Keras 2 and tfjs alpha.
        return leakyRelu(x, num(c.negative_slope, num(c.alpha, 0.3)));
      case 'Softmax':
        return softmaxChannels(x);
      case 'Flatten': {
        // Channels last first: tfjs flattens NHWC.
        const nhwc = x.ndim === 4 ? transpose(x, [0, 2, 3, 1]) : x;
        return reshape(nhwc, [x.shape[0], x.size / x.shape[0]]);
      }
      case 'Dropout':
        return dropout(x, num(c.rate, 0.5), this.training);
      case 'Add':
        return xs.slice(1).reduce((s, t) => add(s, t), x);
      case 'Concatenate': {
        const axis = num(c.axis, -1);
        const last = axis === -1 || axis === x.ndim - 1;
        if (!last) throw new Error(`concatenation over axis ${axis} is not supported`);
        return cat(xs, x.ndim === 4 ? 1 : x.ndim - 1);
      }
      case 'ZeroPadding2D': {
        const p = c.padding;
        const [[t, b], [le, r]] = Array.isArray(p)
          ? (p as unknown[]).map((v) => (Array.isArray(v) ? [v[0], v[1]] : [v, v]))
          : [
              [num(p, 1), num(p, 1)],
              [num(p, 1), num(p, 1)],
            ];
        return pad(x, [0, 0, t as number, le as number], [0, 0, b as number, r as number]);
      }
      default:
        throw new Error('unsupported');
    }
  }
}

const DTYPE_BYTES = new Map([
  ['float32', 4],
  ['int32', 4],
]);

/** The weights of a manifest's specs, in order, from their concatenated bytes. */
function readWeights(specs: TfjsArtifacts['weightSpecs'], data: Uint8Array): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  let off = 0;
  for (const s of specs) {
    if (typeof s?.name !== 'string' || !Array.isArray(s.shape)) fail('a weight spec without a name or shape');
    if ((s as { quantization?: unknown }).quantization)
      fail(`weight '${s.name}' is quantized; quantized weights are not supported`);
    const dtype = str(s.dtype ?? 'float32', `weight '${s.name}': dtype`);
    const width = DTYPE_BYTES.get(dtype) ?? fail(`weight '${s.name}': dtype ${dtype} is not supported`);
    if (!s.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail(`weight '${s.name}': bad shape`);
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (off + n * width > data.length) fail(`weight '${s.name}' runs past the end of the weight data`);
    const view = new DataView(data.buffer, data.byteOffset + off, n * width);
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++)
      values[i] = dtype === 'int32' ? view.getInt32(i * 4, true) : view.getFloat32(i * 4, true);
    out.set(s.name, new Tensor(values, [...s.shape]));
    off += n * width;
  }
  if (off !== data.length) fail(`the weight data holds ${data.length - off} bytes no weight spec describes`);
  return out;
}

/** Reads model.json and its shards (paths inside model.json's folder). */
function readModelJson(path: string): TfjsArtifacts {
  let json: Config;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    return fail(`${path}: ${(e as Error).message}`);
  }
  const folder = dirname(path);
  const manifest = json.weightsManifest as { paths: string[]; weights: TfjsArtifacts['weightSpecs'] }[] | undefined;
  if (!Array.isArray(manifest)) fail(`${path}: no weightsManifest`);
  const specs: TfjsArtifacts['weightSpecs'] = [];
  const parts: Uint8Array[] = [];
  for (const group of manifest ?? []) {
    if (!Array.isArray(group?.paths) || !Array.isArray(group?.weights)) fail(`${path}: a bad weights manifest group`);
    for (const p of group.paths) {
      const file = normalize(join(folder, str(p, `${path}: a shard path`)));
      if (!file.startsWith(normalize(folder) + sep)) fail(`${path}: shard '${p}' is outside the model's folder`);
      try {
        parts.push(readFileSync(file));
      } catch (e) {
        fail(`${path}: shard '${p}': ${(e as Error).message}`);
      }
    }
    specs.push(...group.weights);
  }
  const total = parts.reduce((a, p) => a + p.length, 0);
  const data = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  return { modelTopology: json.modelTopology, weightSpecs: specs, weightData: data };
}

/**
 * A tfjs layers model (the path of its model.json, or the artifacts tfjs's save handlers get) as
 * a ferroconv Module taking NCHW inputs.
 */
export async function loadTfjsLayersModel(source: string | TfjsArtifacts): Promise<TfjsModel> {
  const art = typeof source === 'string' ? readModelJson(source) : source;
  const data = art.weightData instanceof Uint8Array ? art.weightData : new Uint8Array(art.weightData);
  const model = new TfjsModel(art.modelTopology, readWeights(art.weightSpecs ?? [], data));
  model.eval();
  return model;
}
