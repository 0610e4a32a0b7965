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
import { noGrad } from '../../autograd.js';
import { Module } from '../../nn/module.js';
import { globalRng, type Rng } from '../../random.js';
import { Tensor } from '../../tensor.js';
import {
  BatchNormParameterSchema,
  type BlobProto,
  type ConvolutionParameter,
  ConvolutionParameterSchema,
  EltwiseParameter_EltwiseOp as EltwiseOp,
  type FillerParameter,
  FillerParameter_VarianceNorm as VarianceNorm,
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

/** Whether a rule matches the phase (level 0, no stages). */
function ruleMatches(r: NetStateRule, phase: Phase): boolean {
  const f = NetStateRuleSchema.field;
  if (isFieldSet(r, f.phase) && r.phase !== phase) return false;
  if (isFieldSet(r, f.minLevel) && r.minLevel > 0) return false;
  if (isFieldSet(r, f.maxLevel) && r.maxLevel < 0) return false;
  return r.stage.length === 0;
}

/** Caffe's inclusion rule for a phase. */
function included(l: LayerParameter, phase: Phase): boolean {
  if (isFieldSet(l, LayerParameterSchema.field.phase) && l.phase !== phase) return false;
  if (l.include.length) return l.include.some((r) => ruleMatches(r, phase));
  return !l.exclude.some((r) => ruleMatches(r, phase));
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

export interface CaffeNetOptions {
  /** Which layers the definition's include/exclude rules keep: 'TEST' (default) or 'TRAIN'. */
  phase?: 'TEST' | 'TRAIN';
  /**
   * A net whose weights this one uses, layer by layer name, as Caffe's solver shares one set of
   * blobs between its train and test nets.
   */
  shareWeights?: CaffeNet;
}

/** A data layer (Data, ImageData, MemoryData, ...): what it feeds and how Caffe transforms it. */
export interface CaffeDataLayer {
  name: string;
  type: string;
  /** Its tops: the data blob, then (for most) the label blob. */
  tops: string[];
  /** Samples per batch, when the layer says. */
  batchSize: number | null;
  /** Caffe's transform_param: (pixel in 0..255 - mean) * scale. */
  scale: number;
  meanValue: number[];
  meanFile: string | null;
  cropSize: number;
  mirror: boolean;
}

/** The batch size a data layer declares, from whichever parameter block its type reads. */
function dataBatchSize(l: LayerParameter): number | null {
  const n =
    l.dataParam?.batchSize ??
    l.imageDataParam?.batchSize ??
    l.memoryDataParam?.batchSize ??
    l.hdf5DataParam?.batchSize ??
    (l.inputParam?.shape[0] ? Number(l.inputParam.shape[0].dim[0] ?? 0) : 0);
  return n > 0 ? n : null;
}

/** A Caffe net as a ferroconv Module. */
export class CaffeNet extends Module {
  /** The net's input blobs, in order (forward's arguments). */
  readonly inputNames: string[];
  /** Declared input shapes, when the net gives them (Input layers, input_shape, input_dim). */
  readonly inputShapes: (number[] | null)[];
  /** The blobs forward returns (forwardAll), in order; forward returns the first. */
  readonly outputNames: string[];
  /** The phase whose layers this net holds. */
  readonly phase: 'TEST' | 'TRAIN';
  /** The data layers of that phase, in order. */
  readonly dataLayers: CaffeDataLayer[];
  /** Loss and accuracy layers (not run by forward; the Caffe solver evaluates them). */
  readonly heads: LayerParameter[];
  private readonly built: Built[];
  /** Set while initialize() runs: layers without blobs get them from their fillers. */
  private filling: Rng | null = null;

  constructor(net: NetParameter, opts: CaffeNetOptions = {}) {
    super();
    this.phase = opts.phase ?? 'TEST';
    if (this.phase !== 'TEST' && this.phase !== 'TRAIN') fail(`phase: expected 'TEST' or 'TRAIN', got '${this.phase}'`);
    const phase = this.phase === 'TRAIN' ? Phase.TRAIN : Phase.TEST;
    const layers = layersOf(net).filter((l) => included(l, phase));
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
    this.dataLayers = layers
      .filter((l) => DATA.has(l.type))
      .map((l) => {
        const t = l.transformParam;
        return {
          name: l.name,
          type: l.type,
          tops: [...l.top],
          batchSize: dataBatchSize(l),
          scale: t?.scale ?? l.dataParam?.scale ?? 1,
          meanValue: [...(t?.meanValue ?? [])],
          meanFile: t?.meanFile || l.dataParam?.meanFile || null,
          cropSize: t?.cropSize || l.dataParam?.cropSize || 0,
          mirror: t?.mirror ?? l.dataParam?.mirror ?? false,
        };
      });
    this.heads = layers.filter((l) => HEADS.has(l.type));
    const names = new Set<string>();
    this.built = layers
      .filter((l) => SUPPORTED.has(l.type))
      .map((l) => {
        if (!l.name) fail(`a ${l.type} layer has no name`);
        if (names.has(l.name)) fail(`two layers are named '${l.name}'`);
        names.add(l.name);
        const shared = opts.shareWeights?.weightsOf(l.name);
        return { layer: l, weights: shared ? this.addModule(moduleName(l.name), shared) : this.makeWeights(l) };
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

  /** The holder of a layer's blobs (null for layers without blobs or not in this net). */
  weightsOf(layer: string): LayerWeights | null {
    return this.built.find((b) => b.layer.name === layer)?.weights ?? null;
  }

  /** The layers of this net with their definitions and weights, in order. */
  layers(): { layer: LayerParameter; weights: Module | null }[] {
    return this.built.map((b) => ({ ...b }));
  }

  /**
   * Gives every weighted layer that has no blobs yet (no caffemodel, or a layer the caffemodel
   * lacks) its initial values from the layer's fillers (weight_filler, bias_filler, ...), as
   * Caffe does when it builds a net: constant (Caffe's default, 0), uniform, gaussian (with
   * sparse), xavier, msra, positive_unitball and bilinear. Blob shapes follow from the input
   * shapes: `shapes` by input name, else the declared ones.
   */
  initialize(opts: { shapes?: Record<string, readonly number[]>; rng?: Rng } = {}): void {
    const feed: Record<string, Tensor> = {};
    this.inputNames.forEach((n, i) => {
      const shape = opts.shapes?.[n] ?? this.inputShapes[i];
      if (!shape) fail(`initialize: the shape of input '${n}' is not declared; pass it in shapes`);
      feed[n] = new Tensor(new Float32Array(shape.reduce((a, d) => a * d, 1)), [...shape]);
    });
    const wasTraining = this.training;
    this.eval();
    this.filling = opts.rng ?? globalRng;
    try {
      noGrad(() => this.forwardBlobs(feed));
    } finally {
      this.filling = null;
      this.train(wasTraining);
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
    const blobs = this.forwardBlobs(Object.fromEntries(this.inputNames.map((n, i) => [n, inputs[i]])));
    return this.outputNames.map((n) => blobs.get(n) ?? fail(`output blob '${n}' was not computed`));
  }

  /**
   * Runs the layers on named blobs (the inputs, and any other blob a caller provides, such as a
   * data layer's label for the loss layers) and returns every blob by name.
   */
  forwardBlobs(feed: Record<string, Tensor>): Map<string, Tensor> {
    const blobs = new Map<string, Tensor>(Object.entries(feed));
    for (const n of this.inputNames) if (!blobs.has(n)) fail(`input blob '${n}' is not given`);
    for (const { layer, weights } of this.built) {
      const bottoms = layer.bottom.map(
        (b) => blobs.get(b) ?? fail(`layer '${layer.name}': blob '${b}' is not computed`),
      );
      let tops: Tensor[];
      try {
        if (this.filling && weights) fillMissing(layer, bottoms, weights, this.filling);
        tops = runLayer(layer, bottoms, weights, this.training);
      } catch (e) {
        throw new Error(`CaffeNet: layer '${layer.name}' (${layer.type}): ${(e as Error).message}`, { cause: e });
      }
      layer.top.forEach((t, i) => {
        if (tops[i]) blobs.set(t, tops[i]);
      });
    }
    return blobs;
  }
}

/** The product of a shape's dimensions. */
const count = (shape: readonly number[]): number => shape.reduce((a, d) => a * d, 1);

/**
 * A blob of `shape` from a Caffe filler (filler.cpp's semantics; `dflt` is the constant a layer
 * uses when it names no filler, e.g. PReLU's 0.25). fan_in = count / shape[0], fan_out = count
 * / shape[1], as Caffe's xavier and msra fillers compute them.
 */
export function fillBlob(filler: FillerParameter | undefined, shape: readonly number[], rng: Rng, dflt = 0): Tensor {
  const n = count(shape);
  const out = new Float32Array(n);
  const type = filler?.type ?? 'constant';
  const fanIn = shape.length ? n / Math.max(shape[0], 1) : n;
  const fanOut = shape.length > 1 ? n / Math.max(shape[1], 1) : n;
  const norm = filler?.varianceNorm ?? VarianceNorm.FAN_IN;
  const fan = norm === VarianceNorm.FAN_OUT ? fanOut : norm === VarianceNorm.AVERAGE ? (fanIn + fanOut) / 2 : fanIn;
  switch (type) {
    case 'constant':
      out.fill(filler ? filler.value : dflt);
      break;
    case 'uniform': {
      const [lo, hi] = [filler?.min ?? 0, filler?.max ?? 1];
      for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * rng.next();
      break;
    }
    case 'gaussian': {
      const [mean, std, sparse] = [filler?.mean ?? 0, filler?.std ?? 1, filler?.sparse ?? -1];
      // sparse >= 0 keeps each weight with probability sparse / shape[0] (the number of outputs).
      const keep = sparse >= 0 ? sparse / Math.max(shape[0] ?? 1, 1) : 1;
      for (let i = 0; i < n; i++) {
        const v = mean + std * rng.normal();
        out[i] = keep >= 1 || rng.next() < keep ? v : 0;
      }
      break;
    }
    case 'xavier': {
      const a = Math.sqrt(3 / fan);
      for (let i = 0; i < n; i++) out[i] = -a + 2 * a * rng.next();
      break;
    }
    case 'msra': {
      const std = Math.sqrt(2 / fan);
      for (let i = 0; i < n; i++) out[i] = std * rng.normal();
      break;
    }
    case 'positive_unitball': {
      // Uniform in [0, 1), then each of shape[0]'s rows scaled to sum to 1.
      const rows = Math.max(shape[0] ?? 1, 1);
      const dim = n / rows;
      for (let r = 0; r < rows; r++) {
        let sum = 0;
        for (let i = 0; i < dim; i++) sum += out[r * dim + i] = rng.next();
        for (let i = 0; i < dim; i++) out[r * dim + i] /= sum;
      }
      break;
    }
    case 'bilinear': {
      // Upsampling weights for a Deconvolution: square kernels only, as Caffe requires.
      const [kh, kw] = shape.slice(-2);
      if (shape.length !== 4 || kh !== kw) fail(`the bilinear filler needs a square 4-D blob, got [${shape}]`);
      const f = Math.ceil(kw / 2);
      const c = (2 * f - 1 - (f % 2)) / (2 * f);
      for (let i = 0; i < n; i++) {
        const x = i % kw;
        const y = Math.floor(i / kw) % kh;
        out[i] = (1 - Math.abs(x / f - c)) * (1 - Math.abs(y / f - c));
      }
      break;
    }
    default:
      fail(
        `unknown filler type '${type}' (expected constant, uniform, gaussian, xavier, msra, ` +
          'positive_unitball or bilinear)',
      );
  }
  return new Tensor(out, [...shape]);
}

/** Creates the blobs a layer lacks, shaped by its bottoms, from its fillers. */
function fillMissing(l: LayerParameter, bottoms: Tensor[], w: LayerWeights, rng: Rng): void {
  const x = bottoms[0];
  if (!x) return;
  const have = new Set(w.stateDict().keys());
  const put = (name: string, shape: number[], filler: FillerParameter | undefined, dflt: number, trainable = true) => {
    if (!have.has(name)) w.hold(name, fillBlob(filler, shape, rng, dflt), trainable);
  };
  const axisOf = (axis: number) => (axis < 0 ? axis + x.ndim : axis);
  switch (l.type) {
    case 'Convolution':
    case 'Deconvolution': {
      const g = convGeometry(l.convolutionParam, l.name);
      const c = x.shape[1];
      if (!g.outputs) fail(`layer '${l.name}': num_output is missing`);
      if (c % g.groups || g.outputs % g.groups)
        fail(`layer '${l.name}': group ${g.groups} does not divide the channels`);
      const shape =
        l.type === 'Convolution' ? [g.outputs, c / g.groups, ...g.kernel] : [c, g.outputs / g.groups, ...g.kernel];
      put('weight', shape, l.convolutionParam?.weightFiller, 0);
      if (g.bias) put('bias', [g.outputs], l.convolutionParam?.biasFiller, 0);
      return;
    }
    case 'InnerProduct': {
      const p = l.innerProductParam;
      const out = p?.numOutput ?? 0;
      if (!out) fail(`layer '${l.name}': num_output is missing`);
      const k = count(x.shape.slice(axisOf(p?.axis ?? 1)));
      put('weight', p?.transpose ? [k, out] : [out, k], p?.weightFiller, 0);
      if (p?.biasTerm ?? true) put('bias', [out], p?.biasFiller, 0);
      return;
    }
    case 'PReLU':
      put('weight', l.preluParam?.channelShared ? [1] : [x.shape[1]], l.preluParam?.filler, 0.25);
      return;
    case 'Scale': {
      const p = l.scaleParam;
      const a = axisOf(p?.axis ?? 1);
      if (bottoms.length > 1) {
        if (p?.biasTerm) put('bias', [...bottoms[1].shape], p.biasFiller, 0);
        return;
      }
      const axes = p?.numAxes ?? 1;
      const shape = x.shape.slice(a, axes < 0 ? undefined : a + axes);
      put('weight', shape, p?.filler, 1);
      if (p?.biasTerm) put('bias', shape, p.biasFiller, 0);
      return;
    }
    case 'BatchNorm': {
      const c = x.shape[1];
      put('mean', [c], undefined, 0, false);
      put('variance', [c], undefined, 0, false);
      put('scale_factor', [1], undefined, 0, false);
      return;
    }
  }
}

/**
 * Caffe's TRAIN-phase BatchNorm bookkeeping (batch_norm_layer.cpp): the blobs accumulate the
 * batch's mean and unbiased variance, decayed by moving_average_fraction, and the scale factor
 * counts the decayed updates, so blob / scale_factor is the running estimate.
 */
function accumulateStats(x: Tensor, mean: Tensor, variance: Tensor, factor: Tensor, fraction: number): void {
  const [n, c] = x.shape;
  const spatial = x.size / (n * c);
  const m = n * spatial;
  const correction = m > 1 ? m / (m - 1) : 1;
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    let s2 = 0;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * spatial;
      for (let i = 0; i < spatial; i++) s += x.data[base + i];
    }
    const mu = s / m;
    for (let b = 0; b < n; b++) {
      const base = (b * c + ch) * spatial;
      for (let i = 0; i < spatial; i++) s2 += (x.data[base + i] - mu) ** 2;
    }
    mean.data[ch] = fraction * mean.data[ch] + mu;
    variance.data[ch] = fraction * variance.data[ch] + correction * (s2 / m);
  }
  factor.data[0] = factor.data[0] * fraction + 1;
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
      if (!globalStats && training && has('scale_factor')) {
        accumulateStats(x, get('mean'), get('variance'), get('scale_factor'), p?.movingAverageFraction ?? 0.999);
      }
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
