// Caffe import. loadCaffe reads a net definition (a .prototxt, protobuf text format, through
// protobuf-es's fromText with code generated from caffe.proto) and optionally its weights (a
// .caffemodel, the same NetParameter in binary), and returns a CaffeNet: a Module whose children
// are the layers with weights, under the layers' names (`conv1.weight`, `conv1.bias`, batch norm's
// `mean` / `variance` as buffers), and whose forward runs the layers in order over named blobs,
// in place where a layer's top is its bottom, with Caffe's semantics:
//   - pooling rounds the output size up and drops a last window that would start in the padding
//     (torch's ceil_mode), average pooling divides by the window clipped at the padded border;
//   - LRN's alpha is divided by the window size, as torch's local_response_norm does; within a
//     channel it is Caffe's own composition, x * (1 + alpha * avg-pool(x^2))^-beta (k unused);
//   - STOCHASTIC pooling is Caffe's TEST-phase weighted average, sum(x^2) / sum(x) over each
//     window, in both phases (Caffe's TRAIN-phase sampling is not implemented);
//   - BatchNorm's statistics are its blobs divided by the third blob (the moving-average scale
//     factor), and it has no affine part (a Scale layer after it has);
//   - InnerProduct flattens from its axis, with weights [out, in] or [in, out] when transpose.
// The net runs in the TEST phase (layers whose include/exclude rules say otherwise are left out);
// loss and accuracy layers are left out of the forward, which returns the blob that fed them or
// the net's last output. Unsupported layers are reported together in one Error.
import { readFileSync } from 'node:fs';
import { create, type DescField, fromBinary, isFieldSet, type Message } from '@bufbuild/protobuf';
import type { GenMessage } from '@bufbuild/protobuf/codegenv2';
import { fromText } from '@bufbuild/protobuf/txtpb';
import { clip, leakyRelu, pow, relu, sigmoid, tanh } from '../../ops/activation.js';
import { conv2d, convTranspose2d } from '../../ops/conv.js';
import { add, cat, dropout, mul, reshape, scale, split, transpose } from '../../ops/elementwise.js';
import { linear } from '../../ops/linear.js';
import { div } from '../../ops/nd.js';
import { softmaxAlong } from '../../ops/loss.js';
import { batchNorm2d, localResponseNorm } from '../../ops/norm.js';
import { avgPool2d, maxPool2d } from '../../ops/pool.js';
import { Module } from '../../nn/module.js';
import { Tensor } from '../../tensor.js';
import {
  BatchNormParameterSchema,
  type BlobProto,
  type ConvolutionParameter,
  ConvolutionParameterSchema,
  EltwiseParameter_EltwiseOp as EltwiseOp,
  type LayerParameter,
  LayerParameterSchema,
  LRNParameter_NormRegion as NormRegion,
  type NetParameter,
  NetParameterSchema,
  type NetStateRule,
  NetStateRuleSchema,
  ParamSpecSchema,
  Phase,
  PoolingParameter_PoolMethod as PoolMethod,
  PoolingParameterSchema,
  V1LayerParameter_LayerType as V1Type,
  type V1LayerParameter,
} from './gen/caffe_pb.js';

function fail(msg: string): never {
  throw new Error(`loadCaffe: ${msg}`);
}

/** Layers that need labels (losses, accuracy): left out of the forward. */
const HEADS = new Set([
  'SoftmaxWithLoss',
  'Accuracy',
  'EuclideanLoss',
  'SigmoidCrossEntropyLoss',
  'HingeLoss',
  'InfogainLoss',
  'MultinomialLogisticLoss',
  'ContrastiveLoss',
  'Silence',
]);

/** Layers that make the net's inputs. */
const DATA = new Set(['Input', 'Data', 'ImageData', 'MemoryData', 'HDF5Data', 'DummyData', 'WindowData']);

const SUPPORTED = new Set([
  'Convolution',
  'Deconvolution',
  'Pooling',
  'LRN',
  'InnerProduct',
  'ReLU',
  'PReLU',
  'Sigmoid',
  'TanH',
  'Dropout',
  'Softmax',
  'Concat',
  'Eltwise',
  'Flatten',
  'Split',
  'Slice',
  'BatchNorm',
  'Scale',
  'Power',
]);

/** The V1 (`layers { type: CONVOLUTION }`) names of the layer types, as their V2 strings. */
const V1_NAMES: Partial<Record<number, string>> = {
  [V1Type.CONVOLUTION]: 'Convolution',
  [V1Type.DECONVOLUTION]: 'Deconvolution',
  [V1Type.POOLING]: 'Pooling',
  [V1Type.LRN]: 'LRN',
  [V1Type.INNER_PRODUCT]: 'InnerProduct',
  [V1Type.RELU]: 'ReLU',
  [V1Type.SIGMOID]: 'Sigmoid',
  [V1Type.TANH]: 'TanH',
  [V1Type.DROPOUT]: 'Dropout',
  [V1Type.SOFTMAX]: 'Softmax',
  [V1Type.SOFTMAX_LOSS]: 'SoftmaxWithLoss',
  [V1Type.ACCURACY]: 'Accuracy',
  [V1Type.CONCAT]: 'Concat',
  [V1Type.ELTWISE]: 'Eltwise',
  [V1Type.FLATTEN]: 'Flatten',
  [V1Type.SPLIT]: 'Split',
  [V1Type.SLICE]: 'Slice',
  [V1Type.DATA]: 'Data',
  [V1Type.IMAGE_DATA]: 'ImageData',
  [V1Type.MEMORY_DATA]: 'MemoryData',
  [V1Type.HDF5_DATA]: 'HDF5Data',
  [V1Type.DUMMY_DATA]: 'DummyData',
  [V1Type.WINDOW_DATA]: 'WindowData',
  [V1Type.EUCLIDEAN_LOSS]: 'EuclideanLoss',
  [V1Type.SILENCE]: 'Silence',
  [V1Type.POWER]: 'Power',
  [V1Type.SIGMOID_CROSS_ENTROPY_LOSS]: 'SigmoidCrossEntropyLoss',
};

/** A V1 layer as a LayerParameter (the fields ferroconv reads). */
function fromV1(l: V1LayerParameter): LayerParameter {
  const type = V1_NAMES[l.type] ?? `V1:${V1Type[l.type] ?? l.type}`;
  return create(LayerParameterSchema, {
    name: l.name,
    type,
    bottom: l.bottom,
    top: l.top,
    blobs: l.blobs,
    include: l.include,
    exclude: l.exclude,
    concatParam: l.concatParam,
    convolutionParam: l.convolutionParam,
    dropoutParam: l.dropoutParam,
    eltwiseParam: l.eltwiseParam,
    innerProductParam: l.innerProductParam,
    lrnParam: l.lrnParam,
    poolingParam: l.poolingParam,
    reluParam: l.reluParam,
    softmaxParam: l.softmaxParam,
    sliceParam: l.sliceParam,
    powerParam: l.powerParam,
    transformParam: l.transformParam,
    lossParam: l.lossParam,
    accuracyParam: l.accuracyParam,
    dataParam: l.dataParam,
    imageDataParam: l.imageDataParam,
    memoryDataParam: l.memoryDataParam,
    lossWeight: l.lossWeight,
    // V1's per-blob learning-rate and decay multipliers, as V2's param blocks.
    param: l.blobsLr.map((lr, i) => create(ParamSpecSchema, { lrMult: lr, decayMult: l.weightDecay[i] ?? 1 })),
  });
}

function layersOf(net: NetParameter): LayerParameter[] {
  if (net.layer.length && net.layers.length) fail('the net mixes `layer` and the deprecated `layers`');
  return net.layer.length ? net.layer : net.layers.map(fromV1);
}

/** Whether a rule matches the TEST phase (level 0, no stages). */
function ruleMatches(r: NetStateRule): boolean {
  const f = NetStateRuleSchema.field;
  if (isFieldSet(r, f.phase) && r.phase !== Phase.TEST) return false;
  if (isFieldSet(r, f.minLevel) && r.minLevel > 0) return false;
  if (isFieldSet(r, f.maxLevel) && r.maxLevel < 0) return false;
  return r.stage.length === 0;
}

/** Caffe's inclusion rule for the TEST phase. */
function included(l: LayerParameter): boolean {
  if (isFieldSet(l, LayerParameterSchema.field.phase) && l.phase !== Phase.TEST) return false;
  if (l.include.length) return l.include.some(ruleMatches);
  return !l.exclude.some(ruleMatches);
}

/** A blob's shape: `shape.dim`, or the legacy num/channels/height/width. */
function blobShape(b: BlobProto): number[] {
  if (b.shape) return b.shape.dim.map(Number);
  return [b.num, b.channels, b.height, b.width];
}

function blobTensor(b: BlobProto, what: string): Tensor {
  const shape = blobShape(b);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    fail(`${what}: shape [${shape.join(', ')}] is not a shape`);
  const n = shape.reduce((a, d) => a * d, 1);
  const data = b.data.length ? b.data : b.doubleData;
  if (data.length !== n) fail(`${what}: ${data.length} values for shape [${shape.join(', ')}]`);
  return new Tensor(Float32Array.from(data), shape);
}

/**
 * Per-axis values [h, w] of a conv/pool parameter: `<name>_h` / `<name>_w` when set (proto2
 * presence, not the default), else the one or two values of `<name>`, else `dflt`.
 */
function hw<M extends Message>(
  msg: M | undefined,
  schema: GenMessage<M>,
  name: string,
  dflt: number,
): [number, number] {
  if (!msg) return [dflt, dflt];
  const fields = schema.field as Record<string, DescField>;
  const value = (key: string) => (msg as unknown as Record<string, unknown>)[key];
  const [fh, fw] = [fields[`${name}H`], fields[`${name}W`]];
  const setH = fh && isFieldSet(msg, fh);
  const setW = fw && isFieldSet(msg, fw);
  if (setH || setW) {
    return [setH ? (value(`${name}H`) as number) : dflt, setW ? (value(`${name}W`) as number) : dflt];
  }
  const v = value(name);
  const field = fields[name];
  if (Array.isArray(v)) return v.length ? [v[0], v[v.length > 1 ? 1 : 0]] : [dflt, dflt];
  if (typeof v === 'number' && field && isFieldSet(msg, field)) return [v, v];
  return [dflt, dflt];
}

function convGeometry(p: ConvolutionParameter | undefined, layer: string) {
  if (!p) fail(`layer '${layer}': convolution_param is missing`);
  const kernel = hw(p, ConvolutionParameterSchema, 'kernelSize', 0);
  if (kernel.some((k) => k < 1)) fail(`layer '${layer}': the kernel size is missing`);
  return {
    kernel,
    stride: hw(p, ConvolutionParameterSchema, 'stride', 1),
    padding: hw(p, ConvolutionParameterSchema, 'pad', 0),
    dilation: hw(p, ConvolutionParameterSchema, 'dilation', 1),
    groups: p.group ?? 1,
    outputs: p.numOutput ?? 0,
    bias: p.biasTerm ?? true,
  };
}

/**
 * The module name of a layer: its name with '.' (which separates state-dict path parts) as '_',
 * so `conv1/7x7_s2.weight` keeps Caffe's name and `res2a.bn` becomes `res2a_bn.weight`.
 */
function moduleName(layer: string): string {
  return layer.replace(/\./g, '_');
}

/** A layer's weights, as a module of its own (so the state dict reads `conv1.weight`). */
class LayerWeights extends Module {
  hold(name: string, t: Tensor, trainable: boolean): void {
    if (trainable) this.addParameter(name, t);
    else this.addBuffer(name, t);
  }
  get(name: string): Tensor {
    const t = this.stateDict().get(name);
    if (!t) throw new Error(`no ${name}`);
    return t;
  }
  forward(): Tensor {
    throw new Error('a holder of Caffe weights has no forward');
  }
}

/** A layer of the net as it runs: its definition and, for layers with blobs, their holder. */
interface Built {
  layer: LayerParameter;
  weights: LayerWeights | null;
}

/** A Caffe net as a ferroconv Module. */
export class CaffeNet extends Module {
  /** The net's input blobs, in order (forward's arguments). */
  readonly inputNames: string[];
  /** Declared input shapes, when the net gives them (Input layers, input_shape, input_dim). */
  readonly inputShapes: (number[] | null)[];
  /** The blobs forward returns (forwardAll), in order; forward returns the first. */
  readonly outputNames: string[];
  private readonly built: Built[];

  constructor(net: NetParameter) {
    super();
    const layers = layersOf(net).filter(included);
    const unsupported = layers
      .filter((l) => !SUPPORTED.has(l.type) && !HEADS.has(l.type) && !DATA.has(l.type))
      .map((l) => `'${l.name}' (${l.type})`);
    if (unsupported.length) fail(`unsupported layers: ${unsupported.join(', ')}`);
    this.inputNames = [...net.input];
    this.inputShapes = net.input.map((_, i) => {
      if (net.inputShape[i]) return net.inputShape[i].dim.map(Number);
      const d = net.inputDim.slice(4 * i, 4 * i + 4);
      return d.length === 4 ? d : null;
    });
    for (const l of layers.filter((x) => DATA.has(x.type))) {
      // A data layer's first top is an input (its label, the second, is for loss layers only).
      const top = l.top[0];
      if (!top) fail(`layer '${l.name}' (${l.type}) has no top`);
      this.inputNames.push(top);
      const shapes = l.inputParam?.shape ?? [];
      this.inputShapes.push(shapes[0] ? shapes[0].dim.map(Number) : null);
      for (const [k, extra] of l.top.slice(1).entries()) {
        if (l.type === 'Input') {
          this.inputNames.push(extra);
          this.inputShapes.push(shapes[k + 1] ? shapes[k + 1].dim.map(Number) : null);
        }
      }
    }
    if (this.inputNames.length === 0) fail('the net has no input (an Input layer, or input: in the net)');
    const names = new Set<string>();
    this.built = layers
      .filter((l) => SUPPORTED.has(l.type))
      .map((l) => {
        if (!l.name) fail(`a ${l.type} layer has no name`);
        if (names.has(l.name)) fail(`two layers are named '${l.name}'`);
        names.add(l.name);
        return { layer: l, weights: this.makeWeights(l) };
      });
    // Outputs: what a loss or accuracy layer reads, else the last layer's tops nothing reads.
    const heads = layers.filter((l) => HEADS.has(l.type)).map((l) => l.bottom[0]);
    const consumed = new Set(this.built.flatMap((b) => b.layer.bottom.filter((x) => !b.layer.top.includes(x))));
    const produced = this.built.flatMap((b) => b.layer.top);
    const open = [...new Set(produced.filter((t) => !consumed.has(t)))];
    this.outputNames = [...new Set(heads.filter((h) => h && produced.includes(h)))];
    if (this.outputNames.length === 0) this.outputNames = open.length ? open : this.inputNames.slice(0, 1);
  }

  /** The weight tensors of a layer, shaped from its parameters (filled by loadWeights). */
  private makeWeights(l: LayerParameter): LayerWeights | null {
    const w = new LayerWeights();
    switch (l.type) {
      case 'Convolution':
      case 'Deconvolution':
      case 'InnerProduct':
      case 'PReLU':
      case 'Scale':
      case 'BatchNorm': {
        // Shapes come from the caffemodel's blobs (the input's channels are not known here).
        if (l.blobs.length === 0) return this.addModule(moduleName(l.name), w);
        l.blobs.forEach((b, i) => {
          const t = blobTensor(b, `layer '${l.name}' blob ${i}`);
          const [name, trainable] = blobNames(l)[i] ?? fail(`layer '${l.name}' has ${l.blobs.length} blobs`);
          w.hold(name, name === 'weight' && l.type === 'InnerProduct' ? reshape(t, innerShape(l, t)) : t, trainable);
        });
        return this.addModule(moduleName(l.name), w);
      }
      default:
        return null;
    }
  }

  /** Copies the blobs of a caffemodel's layers (matched by name) into this net's weights. */
  loadWeights(model: NetParameter, strict = true): void {
    const byName = new Map(layersOf(model).map((l) => [l.name, l]));
    const state = new Map<string, Tensor>();
    for (const { layer } of this.built) {
      if (!blobNames(layer).length) continue;
      const src = byName.get(layer.name);
      if (!src) {
        if (strict) fail(`the caffemodel has no layer '${layer.name}'`);
        continue;
      }
      src.blobs.forEach((b, i) => {
        const [name] = blobNames(layer)[i] ?? fail(`layer '${layer.name}' has ${src.blobs.length} blobs`);
        let t = blobTensor(b, `layer '${layer.name}' blob ${i}`);
        if (name === 'weight' && layer.type === 'InnerProduct') t = reshape(t, innerShape(layer, t));
        state.set(`${moduleName(layer.name)}.${name}`, t);
      });
    }
    // Layers the definition gave no blobs get theirs now: shaped by the caffemodel.
    for (const { layer, weights } of this.built) {
      if (!weights) continue;
      const have = new Set(weights.stateDict().keys());
      for (const [key, t] of state) {
        const [owner, name] = [key.slice(0, key.lastIndexOf('.')), key.slice(key.lastIndexOf('.') + 1)];
        if (owner !== moduleName(layer.name) || have.has(name)) continue;
        const trainable = blobNames(layer).find(([n]) => n === name)?.[1] ?? true;
        weights.hold(name, new Tensor(new Float32Array(t.size), t.shape), trainable);
      }
    }
    this.loadStateDict(state, strict);
  }

  forward(...inputs: Tensor[]): Tensor {
    return this.forwardAll(...inputs)[0];
  }

  /** Every output blob, in outputNames' order. */
  forwardAll(...inputs: Tensor[]): Tensor[] {
    if (inputs.length !== this.inputNames.length) {
      throw new Error(
        `CaffeNet: expected ${this.inputNames.length} input(s) (${this.inputNames.join(', ')}), got ${inputs.length}`,
      );
    }
    const blobs = new Map<string, Tensor>();
    this.inputNames.forEach((n, i) => {
      blobs.set(n, inputs[i]);
    });
    for (const { layer, weights } of this.built) {
      const bottoms = layer.bottom.map(
        (b) => blobs.get(b) ?? fail(`layer '${layer.name}': blob '${b}' is not computed`),
      );
      let tops: Tensor[];
      try {
        tops = runLayer(layer, bottoms, weights, this.training);
      } catch (e) {
        throw new Error(`CaffeNet: layer '${layer.name}' (${layer.type}): ${(e as Error).message}`, { cause: e });
      }
      layer.top.forEach((t, i) => {
        if (tops[i]) blobs.set(t, tops[i]);
      });
    }
    return this.outputNames.map((n) => blobs.get(n) ?? fail(`output blob '${n}' was not computed`));
  }
}

/** Each weighted layer's blobs in Caffe's order: the state-dict name and whether it trains. */
const BLOB_NAMES: Record<string, [string, boolean][]> = {
  Convolution: [
    ['weight', true],
    ['bias', true],
  ],
  Deconvolution: [
    ['weight', true],
    ['bias', true],
  ],
  InnerProduct: [
    ['weight', true],
    ['bias', true],
  ],
  PReLU: [['weight', true]],
  Scale: [
    ['weight', true],
    ['bias', true],
  ],
  BatchNorm: [
    ['mean', false],
    ['variance', false],
    ['scale_factor', false],
  ],
};

/** A layer's blob names: a Scale with two bottoms takes its scale from the second, so its one blob is the bias. */
function blobNames(l: LayerParameter): [string, boolean][] {
  if (l.type === 'Scale' && l.bottom.length > 1) return [['bias', true]];
  return BLOB_NAMES[l.type] ?? [];
}

/** InnerProduct's weight as a matrix: [out, in], or [in, out] with transpose. */
function innerShape(l: LayerParameter, t: Tensor): number[] {
  const out = l.innerProductParam?.numOutput ?? 0;
  if (!out || t.size % out) fail(`layer '${l.name}': ${t.size} weights do not fit ${out} outputs`);
  return l.innerProductParam?.transpose ? [t.size / out, out] : [out, t.size / out];
}

function runLayer(l: LayerParameter, bottoms: Tensor[], w: LayerWeights | null, training: boolean): Tensor[] {
  const x = bottoms[0];
  if (!x) throw new Error('no bottom blob');
  const has = (n: string) => !!w && w.stateDict().has(n);
  const get = (n: string): Tensor => {
    if (!w) throw new Error(`no ${n}`);
    return w.get(n);
  };
  switch (l.type) {
    case 'Convolution':
    case 'Deconvolution': {
      const g = convGeometry(l.convolutionParam, l.name);
      if (!has('weight')) throw new Error('no weights (load a caffemodel)');
      const bias = g.bias && has('bias') ? get('bias') : null;
      const opts = { stride: g.stride, padding: g.padding, dilation: g.dilation, groups: g.groups };
      const weight = get('weight');
      return [l.type === 'Convolution' ? conv2d(x, weight, bias, opts) : convTranspose2d(x, weight, bias, opts)];
    }
    case 'Pooling': {
      const p = l.poolingParam;
      const global = p?.globalPooling ?? false;
      const kernel: [number, number] = global
        ? [x.shape[2], x.shape[3]]
        : hw(p, PoolingParameterSchema, 'kernelSize', 0);
      if (kernel.some((k) => k < 1)) throw new Error('the kernel size is missing');
      const stride: [number, number] = global ? [1, 1] : hw(p, PoolingParameterSchema, 'stride', 1);
      const padding: [number, number] = global ? [0, 0] : hw(p, PoolingParameterSchema, 'pad', 0);
      const method = p?.pool ?? PoolMethod.MAX;
      if (method === PoolMethod.MAX) return [maxPool2d(x, kernel, { stride, padding, ceilMode: true })];
      if (method === PoolMethod.AVE)
        return [avgPool2d(x, kernel, { stride, padding, ceilMode: true, countIncludePad: true })];
      // Caffe's windows for STOCHASTIC ignore the padding, so only unpadded pooling matches it.
      if (padding.some((v) => v > 0)) throw new Error('STOCHASTIC pooling with padding is not supported');
      // sum(x^2) / sum(x): two average pools over the same windows (their divisors cancel);
      // Caffe starts the denominator at FLT_MIN, so an all-zero window gives 0, not NaN.
      const opts = { stride, ceilMode: true, countIncludePad: true };
      const num = avgPool2d(mul(x, x), kernel, opts);
      return [div(num, clip(avgPool2d(x, kernel, opts), 1.1754944e-38))];
    }
    case 'LRN': {
      const p = l.lrnParam;
      const [size, alpha, beta] = [p?.localSize ?? 5, p?.alpha ?? 1, p?.beta ?? 0.75];
      if ((p?.normRegion ?? NormRegion.ACROSS_CHANNELS) === NormRegion.ACROSS_CHANNELS) {
        return [localResponseNorm(x, size, { alpha, beta, k: p?.k ?? 1 })];
      }
      // WITHIN_CHANNEL, as Caffe builds it from its own layers: square, average-pool over a
      // size x size window (padded by (size - 1) / 2, divisor size^2), then
      // x * (1 + alpha * pooled)^-beta.
      const pad = Math.floor((size - 1) / 2);
      const pooled = avgPool2d(mul(x, x), [size, size], {
        stride: [1, 1],
        padding: [pad, pad],
        ceilMode: true,
        countIncludePad: true,
      });
      return [mul(x, pow(affine(pooled, alpha, 1), -beta))];
    }
    case 'InnerProduct': {
      if (!has('weight')) throw new Error('no weights (load a caffemodel)');
      const axis = l.innerProductParam?.axis ?? 1;
      const a = axis < 0 ? axis + x.ndim : axis;
      const rows = x.shape.slice(0, a).reduce((s, d) => s * d, 1);
      const flat = reshape(x, [rows, x.size / rows]);
      let weight = get('weight');
      if (l.innerProductParam?.transpose) weight = transpose(weight, [1, 0]);
      const bias = (l.innerProductParam?.biasTerm ?? true) && has('bias') ? get('bias') : null;
      const y = linear(flat, weight, bias);
      return [reshape(y, [...x.shape.slice(0, a), weight.shape[0]])];
    }
    case 'ReLU': {
      const slope = l.reluParam?.negativeSlope ?? 0;
      return [slope ? leakyRelu(x, slope) : relu(x)];
    }
    case 'PReLU': {
      if (!has('weight')) throw new Error('no weights (load a caffemodel)');
      const a = get('weight');
      const slope = a.size === 1 ? a : reshape(a, [1, a.size, ...x.shape.slice(2).map(() => 1)]);
      return [add(relu(x), mul(scale(relu(scale(x, -1)), -1), slope))];
    }
    case 'Sigmoid':
      return [sigmoid(x)];
    case 'TanH':
      return [tanh(x)];
    case 'Dropout':
      return [dropout(x, l.dropoutParam?.dropoutRatio ?? 0.5, training)];
    case 'Softmax':
      return [softmaxAlong(x, l.softmaxParam?.axis ?? 1)];
    case 'Concat': {
      const axis = l.concatParam?.axis ?? 1;
      return [cat(bottoms, axis < 0 ? axis + x.ndim : axis)];
    }
    case 'Eltwise': {
      const p = l.eltwiseParam;
      const op = p?.operation ?? EltwiseOp.SUM;
      if (op === EltwiseOp.SUM) {
        const coeff = p?.coeff ?? [];
        if (coeff.length && coeff.length !== bottoms.length) throw new Error('coeff needs one value per bottom');
        const terms = bottoms.map((b, i) => (coeff.length && coeff[i] !== 1 ? scale(b, coeff[i]) : b));
        return [terms.slice(1).reduce((s, t) => add(s, t), terms[0])];
      }
      if (op === EltwiseOp.PROD) return [bottoms.slice(1).reduce((s, t) => mul(s, t), x)];
      // max(a, b) = a + relu(b - a)
      return [bottoms.slice(1).reduce((s, t) => add(s, relu(add(t, scale(s, -1)))), x)];
    }
    case 'Flatten': {
      const axis = l.flattenParam?.axis ?? 1;
      const end = l.flattenParam?.endAxis ?? -1;
      const [a, e] = [axis < 0 ? axis + x.ndim : axis, end < 0 ? end + x.ndim : end];
      const mid = x.shape.slice(a, e + 1).reduce((s, d) => s * d, 1);
      return [reshape(x, [...x.shape.slice(0, a), mid, ...x.shape.slice(e + 1)])];
    }
    case 'Split':
      return l.top.map(() => x);
    case 'Slice': {
      const p = l.sliceParam;
      const axis = p?.axis ?? 1;
      const a = axis < 0 ? axis + x.ndim : axis;
      const size = x.shape[a];
      const points = p?.slicePoint ?? [];
      const bounds = points.length ? [0, ...points, size] : null;
      const sizes = bounds ? bounds.slice(1).map((b, i) => b - bounds[i]) : l.top.map(() => size / l.top.length);
      if (sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.reduce((s, d) => s + d, 0) !== size) {
        throw new Error(`cannot slice ${size} at [${points.join(', ')}] into ${l.top.length} tops`);
      }
      return split(x, sizes, a);
    }
    case 'BatchNorm': {
      if (!has('mean') || !has('variance')) throw new Error('no statistics (load a caffemodel)');
      const sf = has('scale_factor') ? get('scale_factor').data[0] : 1;
      const factor = sf === 0 ? 0 : 1 / sf;
      const mean = scale(get('mean'), factor);
      const variance = scale(get('variance'), factor);
      const p = l.batchNormParam;
      // Caffe's default: the stored statistics in TEST, the batch's in TRAIN.
      const globalStats =
        p && isFieldSet(p, BatchNormParameterSchema.field.useGlobalStats) ? p.useGlobalStats : !training;
      const four = x.ndim === 4 ? x : reshape(x, [x.shape[0], x.shape[1], x.size / (x.shape[0] * x.shape[1]), 1]);
      const y = batchNorm2d(four, globalStats ? mean : null, globalStats ? variance : null, null, null, {
        training: !globalStats,
        eps: p?.eps ?? 1e-5,
      });
      return [x.ndim === 4 ? y : reshape(y, x.shape)];
    }
    case 'Power': {
      // (shift + scale * x) ^ power
      const p = l.powerParam;
      const [power, s, shift] = [p?.power ?? 1, p?.scale ?? 1, p?.shift ?? 0];
      const y = affine(x, s, shift);
      return [power === 1 ? y : pow(y, power)];
    }
    case 'Scale': {
      // The scale is the layer's first blob, or with two bottoms the second bottom (the
      // layer's blob, if any, is then the bias).
      if (bottoms.length === 1 && !has('weight')) throw new Error('no weights (load a caffemodel)');
      const axis = l.scaleParam?.axis ?? 1;
      const a = axis < 0 ? axis + x.ndim : axis;
      const gamma = bottoms.length > 1 ? bottoms[1] : get('weight');
      if (x.shape.slice(a, a + gamma.ndim).join() !== gamma.shape.join()) {
        throw new Error(`scale of shape [${gamma.shape}] does not fit the input [${x.shape}] at axis ${a}`);
      }
      const shape = x.shape.map((d, i) => (i >= a && i < a + gamma.ndim ? d : 1));
      let y = mul(x, reshape(gamma, shape));
      if (has('bias')) y = add(y, reshape(get('bias'), shape));
      return [y];
    }
    default:
      throw new Error('unsupported');
  }
}

/** s * x + shift, skipping the identity parts. */
function affine(x: Tensor, s: number, shift: number): Tensor {
  const y = s === 1 ? x : scale(x, s);
  return shift === 0 ? y : add(y, new Tensor(Float32Array.of(shift), [1]));
}

/** Reads a net definition (prototxt text) as a NetParameter. */
export function parsePrototxt(text: string): NetParameter {
  try {
    return fromText(NetParameterSchema, text);
  } catch (e) {
    return fail(`the net definition does not parse: ${(e as Error).message}`);
  }
}

/** Reads a caffemodel (binary NetParameter). */
export function parseCaffemodel(bytes: Uint8Array): NetParameter {
  try {
    return fromBinary(NetParameterSchema, bytes);
  } catch (e) {
    return fail(`the caffemodel does not parse: ${(e as Error).message}`);
  }
}

function read(path: string, what: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    return fail(`${what} ${path}: ${(e as Error).message}`);
  }
}

/**
 * A Caffe net from its definition (a .prototxt path, or its text when it contains a newline or
 * a brace) and, optionally, its weights (a .caffemodel path or bytes). Without weights, layers
 * whose blobs the definition does not hold have none until loadWeights.
 */
export function loadCaffe(prototxt: string, caffemodel?: string | Uint8Array): CaffeNet {
  const text = /[\n{]/.test(prototxt) ? prototxt : new TextDecoder().decode(read(prototxt, 'prototxt'));
  const net = new CaffeNet(parsePrototxt(text));
  if (caffemodel !== undefined) {
    const bytes = typeof caffemodel === 'string' ? read(caffemodel, 'caffemodel') : caffemodel;
    net.loadWeights(parseCaffemodel(bytes));
  }
  net.eval();
  return net;
}
