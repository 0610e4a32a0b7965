// ONNX export. The model's eval forward runs once under the tracer (plan/trace.ts traceGraph),
// which writes down every kernel call with where each array it reads comes from: the input, a
// parameter or buffer, an earlier call's output, or a constant made in JavaScript. Each call
// becomes ONNX nodes; parameters and buffers become initializers under their state-dict names.
// Fusion is turned off for the trace, so batch norm is exported as BatchNormalization with its
// own parameters, not folded into the conv.
//
// Reshapes and flattens are views in ferroconv (no kernel call), so the graph tracks each value's
// shape and inserts a Reshape wherever a call reads a value as another shape than its producer
// wrote (the classifier reading a feature map as [N, C*H*W], say).
import { createRequire } from 'node:module';
import { create } from '@bufbuild/protobuf';
import { native } from '../../native.js';
import type { Module } from '../../nn/module.js';
import { traceEvalGraph } from '../../nn/fuse.js';
import type { GraphTrace, Operand } from '../../plan/trace.js';
import { Tensor } from '../../tensor.js';
import { writeFileAtomic } from '../atomic.js';
import {
  GraphProtoSchema,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  type TensorProto,
} from './gen/onnx_pb.js';
import { type AttrValue, attribute, encodeModel, floatTensor, int64Tensor, valueInfo } from './proto.js';

export interface OnnxExportOptions {
  /** The input's shape, batch first (e.g. [1, 3, 224, 224]). */
  inputShape: readonly number[];
  /** ONNX opset, 13 to 17 (default 17). */
  opset?: number;
  /** Leave the batch dimension symbolic ('batch'), so the file runs at any batch size (default false). */
  dynamicBatch?: boolean;
  /** Name of the graph's input (default 'input'). */
  inputName?: string;
  /** Name of the graph's output (default 'output'). */
  outputName?: string;
}

/** IR version 8 (ONNX 1.10 and later) covers opsets 13 to 17. */
const IR_VERSION = 8n;

interface Value {
  name: string;
  shape: number[];
}

interface OperandJson {
  operand: Operand;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** A read of a value whose producer could not be exported (reported already, not again). */
class MissingValue extends Error {}

/** Builds the graph from a trace: nodes, initializers, and the values each temp holds. */
class GraphWriter {
  readonly nodes: NodeProto[] = [];
  readonly initializers: TensorProto[] = [];
  private readonly used = new Set<string>();
  private readonly temps = new Map<number, Value>();
  private readonly stateValues = new Map<number, Value>();
  private readonly constValues = new Map<string, string>();
  private counter = 0;

  constructor(
    private readonly g: GraphTrace,
    private readonly stateNames: string[],
    private readonly input: Value,
    private readonly dynamicBatch: boolean,
  ) {
    this.used.add(input.name);
    for (const n of stateNames) this.used.add(n);
  }

  unique(base: string): string {
    let name = base;
    for (let k = 1; this.used.has(name); k++) name = `${base}_${k}`;
    this.used.add(name);
    return name;
  }

  node(op: string, inputs: string[], outputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): void {
    this.nodes.push(
      create(NodeProtoSchema, {
        opType: op,
        name: this.unique(name ?? `${op}_${this.counter++}`),
        input: inputs,
        output: outputs,
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
  }

  /** An initializer made by the exporter (a missing batch-norm weight, a scale factor). */
  constant(base: string, dims: number[], data: Float32Array): string {
    const name = this.unique(base);
    this.initializers.push(floatTensor(name, dims, data));
    return name;
  }

  int64Name(base: string, values: number[]): string {
    return this.int64(base, values);
  }

  private int64(base: string, values: number[]): string {
    const key = `${base}:${values.join(',')}`;
    const known = this.constValues.get(key);
    if (known) return known;
    const name = this.unique(base);
    this.initializers.push(int64Tensor(name, values));
    this.constValues.set(key, name);
    return name;
  }

  /** The value an operand refers to, without reshaping. */
  private valueOf(o: Operand, what: string, shape: readonly number[] | null): Value {
    if (o.src === 'input') {
      if (o.offset !== 0 || o.len !== size(this.input.shape)) throw new Error(`${what} reads part of the input`);
      return this.input;
    }
    if (o.src === 'temp') {
      const v = this.temps.get(o.id);
      if (!v) throw new MissingValue(`${what} reads a value no exported node produced`);
      if (o.offset !== 0 || o.len !== size(v.shape)) throw new Error(`${what} reads part of a value`);
      return v;
    }
    if (o.src === 'state') {
      const t = this.g.rec.usedState[o.id] as Tensor;
      if (o.offset !== 0 || o.len !== t.size) throw new Error(`${what} reads part of ${this.stateNames[o.id]}`);
      let v = this.stateValues.get(o.id);
      if (!v) {
        v = { name: this.stateNames[o.id], shape: t.shape.length ? [...t.shape] : [1] };
        this.initializers.push(floatTensor(v.name, v.shape, t.data));
        this.stateValues.set(o.id, v);
      }
      return v;
    }
    // A constant made in JavaScript: shaped as the reading call declares.
    const data = this.g.rec.constants[o.id];
    if (!(data instanceof Float32Array)) throw new Error(`${what} reads an integer array`);
    const dims = shape && size(shape) === data.length ? [...shape] : [data.length];
    return { name: this.constant(`constant_${o.id}`, dims, data), shape: dims };
  }

  /**
   * The name of the value an argument refers to, reshaped to `shape` when given and different
   * from the producer's (same number of elements).
   */
  read(arg: unknown, what: string, shape: readonly number[] | null = null): Value {
    const o = (arg as OperandJson | null)?.operand;
    if (!o) throw new Error(`${what}: expected an array argument`);
    const v = this.valueOf(o, what, shape);
    if (!shape || v.shape.join() === shape.join()) return v;
    if (size(v.shape) !== size(shape)) {
      throw new Error(`${what} reads [${v.shape.join(', ')}] as [${shape.join(', ')}]`);
    }
    const target = this.dynamicBatch ? [-1, ...shape.slice(1)] : [...shape];
    const out = this.unique(`${v.name}_reshaped`);
    this.node('Reshape', [v.name, this.int64('shape', target)], [out]);
    return { name: out, shape: [...shape] };
  }

  /** Records that a call wrote `arg` (a whole temp) with a value of `shape`; returns its name. */
  write(arg: unknown, what: string, shape: readonly number[], base: string): string {
    const o = (arg as OperandJson | null)?.operand;
    if (o?.src !== 'temp') throw new Error(`${what} writes outside the values it computes`);
    if (o.offset !== 0 || o.len !== this.g.rec.temps[o.id].length || o.len !== size(shape)) {
      throw new Error(`${what} writes into part of a value`);
    }
    const name = this.unique(`${base}_output`);
    this.temps.set(o.id, { name, shape: [...shape] });
    return name;
  }

  /** The node name for a call reading state `arg`: the module path of that parameter. */
  nameFrom(arg: unknown, op: string): string {
    const o = (arg as OperandJson | null)?.operand;
    if (o?.src === 'state') {
      const n = this.stateNames[o.id];
      const dot = n.lastIndexOf('.');
      return dot > 0 ? n.slice(0, dot) : n;
    }
    return `${op}_${this.counter++}`;
  }

  outputOf(o: Operand, shape: number[]): Value {
    return this.read({ operand: o }, 'the output', shape);
  }
}

/** Per kernel entry: the ONNX nodes for one recorded call. */
type Emit = (w: GraphWriter, args: unknown[]) => void;

const conv2dAttrs = (a: Conv2dArgsJson) => ({
  kernel_shape: a.weightShape.slice(2),
  strides: a.stride,
  pads: [a.padding[0], a.padding[2], a.padding[1], a.padding[3]],
  dilations: a.dilation,
  group: a.groups,
});

interface Conv2dArgsJson {
  inputShape: number[];
  weightShape: number[];
  stride: number[];
  padding: number[];
  dilation: number[];
  groups: number;
}

interface Pool2dArgsJson {
  inputShape: number[];
  kernel: number[];
  stride: number[];
  padding: number[];
  dilation: number[];
  ceilMode: boolean;
  countIncludePad?: boolean | null;
  divisorOverride?: number | null;
}

/** A MaxPool or AveragePool node for a pooling call, with the attributes only `op` has. */
function poolNode(
  w: GraphWriter,
  op: 'MaxPool' | 'AveragePool',
  x: unknown,
  out: unknown,
  args: Pool2dArgsJson,
  own: Record<string, AttrValue>,
): void {
  const v = w.read(x, op, args.inputShape);
  const [oh, ow] = native.pool2dOutputSize({ ...args, countIncludePad: undefined, divisorOverride: undefined });
  const y = w.write(out, op, [...args.inputShape.slice(0, 2), oh, ow], op);
  const [ph, pw] = args.padding;
  w.node(op, [v.name], [y], {
    kernel_shape: args.kernel,
    strides: args.stride,
    pads: [ph, pw, ph, pw],
    ceil_mode: args.ceilMode ? 1 : 0,
    ...own,
  });
}

/** add/sub/mul/div with NumPy broadcasting (broadcastBinary and binaryNd share arguments). */
function binaryNode(w: GraphWriter, [op, a, aShape, b, bShape, out]: unknown[]): void {
  const onnxOp = ({ add: 'Add', sub: 'Sub', mul: 'Mul', div: 'Div' } as Record<string, string>)[op as string];
  if (!onnxOp) throw new Error(`elementwise '${String(op)}' has no ONNX export`);
  const as = aShape as number[];
  const bs = bShape as number[];
  const va = w.read(a, onnxOp, as);
  const vb = w.read(b, onnxOp, bs);
  const rank = Math.max(as.length, bs.length);
  const dim = (s: number[], i: number) => s[i - (rank - s.length)] ?? 1;
  const shape = Array.from({ length: rank }, (_, i) => (dim(as, i) === 1 ? dim(bs, i) : dim(as, i)));
  w.node(onnxOp, [va.name, vb.name], [w.write(out, onnxOp, shape, onnxOp)]);
}

const ACTIVATIONS: Record<string, string> = { relu: 'Relu', leaky_relu: 'LeakyRelu', sigmoid: 'Sigmoid', tanh: 'Tanh' };

const EMIT: Record<string, Emit> = {
  conv2dForward(w, [x, weight, bias, out, a]) {
    const args = a as Conv2dArgsJson;
    const name = w.nameFrom(weight, 'Conv');
    const inputs = [w.read(x, name, args.inputShape).name, w.read(weight, name, args.weightShape).name];
    if (bias) inputs.push(w.read(bias, name, [args.weightShape[0]]).name);
    const [oh, ow] = native.conv2dOutputSize({ ...args });
    const y = w.write(out, name, [args.inputShape[0], args.weightShape[0], oh, ow], name);
    w.node('Conv', inputs, [y], conv2dAttrs(args), name);
  },
  convTranspose2dForward(w, [x, weight, bias, out, a]) {
    const args = a as Conv2dArgsJson & { outputPadding: number[] };
    const name = w.nameFrom(weight, 'ConvTranspose');
    const inputs = [w.read(x, name, args.inputShape).name, w.read(weight, name, args.weightShape).name];
    const cout = args.weightShape[1] * args.groups;
    if (bias) inputs.push(w.read(bias, name, [cout]).name);
    const [oh, ow] = native.convTranspose2dOutputSize({ ...args });
    const y = w.write(out, name, [args.inputShape[0], cout, oh, ow], name);
    const [ph, pw] = args.padding;
    w.node(
      'ConvTranspose',
      inputs,
      [y],
      {
        kernel_shape: args.weightShape.slice(2),
        strides: args.stride,
        pads: [ph, pw, ph, pw],
        output_padding: args.outputPadding,
        dilations: args.dilation,
        group: args.groups,
      },
      name,
    );
  },
  batchNorm2dForwardEval(w, [x, weight, bias, mean, variance, out, a]) {
    const args = a as { inputShape: number[]; momentum: number; eps: number };
    const c = args.inputShape[1];
    const name = w.nameFrom(mean, 'BatchNormalization');
    const scale = weight
      ? w.read(weight, name, [c]).name
      : w.constant(`${name}.scale`, [c], new Float32Array(c).fill(1));
    const shift = bias ? w.read(bias, name, [c]).name : w.constant(`${name}.shift`, [c], new Float32Array(c));
    const inputs = [w.read(x, name, args.inputShape).name, scale, shift, w.read(mean, name, [c]).name];
    inputs.push(w.read(variance, name, [c]).name);
    const y = w.write(out, name, args.inputShape, name);
    // ONNX's momentum weighs the running statistics, torch's the batch's.
    w.node(
      'BatchNormalization',
      inputs,
      [y],
      { epsilon: { float: args.eps }, momentum: { float: 1 - args.momentum } },
      name,
    );
  },
  activationForward(w, [kind, x, out, alpha, beta]) {
    const a = alpha as number | null;
    const b = beta as number | null;
    if (kind === 'clip') {
      const v = w.read(x, 'Clip');
      const bound = (n: number | null, dflt: number, base: string) =>
        n === null || !Number.isFinite(n) ? '' : w.constant(base, [], Float32Array.of(n ?? dflt));
      const inputs = [v.name, bound(a, -Infinity, 'clip_min'), bound(b, Infinity, 'clip_max')];
      while (inputs.at(-1) === '') inputs.pop();
      w.node('Clip', inputs, [w.write(out, 'Clip', v.shape, 'Clip')]);
      return;
    }
    if (kind === 'hardsigmoid') {
      const v = w.read(x, 'HardSigmoid');
      const attrs = { alpha: { float: a ?? 0.2 }, beta: { float: b ?? 0.5 } };
      w.node('HardSigmoid', [v.name], [w.write(out, 'HardSigmoid', v.shape, 'HardSigmoid')], attrs);
      return;
    }
    if (kind === 'hardswish' || kind === 'silu') {
      // x * hardsigmoid(x) (HardSwish before opset 14) and x * sigmoid(x).
      const v = w.read(x, 'Mul');
      const gate = w.unique(`${kind}_gate`);
      if (kind === 'silu') w.node('Sigmoid', [v.name], [gate]);
      else w.node('HardSigmoid', [v.name], [gate], { alpha: { float: 1 / 6 }, beta: { float: 0.5 } });
      w.node('Mul', [v.name, gate], [w.write(out, 'Mul', v.shape, kind)]);
      return;
    }
    if (kind === 'pow') {
      const v = w.read(x, 'Pow');
      const exponent = w.constant('pow_exponent', [], Float32Array.of(a ?? 1));
      w.node('Pow', [v.name, exponent], [w.write(out, 'Pow', v.shape, 'Pow')]);
      return;
    }
    const op = ACTIVATIONS[kind as string];
    if (!op) throw new Error(`activation '${String(kind)}' has no ONNX operator`);
    const v = w.read(x, op);
    const y = w.write(out, op, v.shape, op);
    w.node(op, [v.name], [y], op === 'LeakyRelu' ? { alpha: { float: a ?? 0.01 } } : {});
  },
  transpose(w, [x, shape, perm, out]) {
    const v = w.read(x, 'Transpose', shape as number[]);
    const p = perm as number[];
    const y = w.write(
      out,
      'Transpose',
      p.map((a) => v.shape[a]),
      'Transpose',
    );
    w.node('Transpose', [v.name], [y], { perm: p });
  },
  splitChannels(w, [x, outs, channels, outer, inner]) {
    const cs = channels as number[];
    const v = w.read(x, 'Split', [outer as number, cs.reduce((s, c) => s + c, 0), inner as number]);
    const names = (outs as unknown[]).map((o, k) =>
      w.write(o, 'Split', [outer as number, cs[k], inner as number], 'Split'),
    );
    w.node('Split', [v.name, w.int64Name('split', cs)], names, { axis: 1 });
  },
  reluInplace(w, [x]) {
    const v = w.read(x, 'Relu');
    w.node('Relu', [v.name], [w.write(x, 'Relu', v.shape, 'Relu')]);
  },
  maxPool2dForwardNoIndices(w, [x, out, a]) {
    const args = a as Pool2dArgsJson;
    poolNode(w, 'MaxPool', x, out, args, { dilations: args.dilation });
  },
  avgPool2dForward(w, [x, out, a]) {
    const args = a as Pool2dArgsJson;
    if (!args.divisorOverride) {
      poolNode(w, 'AveragePool', x, out, args, { count_include_pad: args.countIncludePad === false ? 0 : 1 });
      return;
    }
    // A fixed divisor (poolNd's window sums): the average times window / divisor, exact when
    // every window is whole (no padding, no ceil mode).
    const [ph, pw] = args.padding;
    if (ph || pw || args.ceilMode) {
      throw new Error('average pooling with divisorOverride, padding or ceil mode has no ONNX operator');
    }
    const mean = w.unique('window_mean');
    const [oh, ow] = native.pool2dOutputSize({ ...args, countIncludePad: undefined, divisorOverride: undefined });
    const v = w.read(x, 'AveragePool', args.inputShape);
    w.node('AveragePool', [v.name], [mean], { kernel_shape: args.kernel, strides: args.stride });
    const factor = (args.kernel[0] * args.kernel[1]) / args.divisorOverride;
    const f = w.constant('window_scale', [], Float32Array.of(factor));
    const shape = [...args.inputShape.slice(0, 2), oh, ow];
    w.node('Mul', [mean, f], [w.write(out, 'Mul', shape, 'Mul')]);
  },
  adaptiveAvgPool2dForward(w, [x, out, a]) {
    const { inputShape, outputSize } = a as { inputShape: number[]; outputSize: number[] };
    const v = w.read(x, 'AveragePool', inputShape);
    const [h, wd] = inputShape.slice(2);
    const [oh, ow] = outputSize;
    const shape = [...inputShape.slice(0, 2), oh, ow];
    if (oh === 1 && ow === 1) {
      w.node('GlobalAveragePool', [v.name], [w.write(out, 'GlobalAveragePool', shape, 'GlobalAveragePool')]);
    } else if (oh === h && ow === wd) {
      w.node('Identity', [v.name], [w.write(out, 'Identity', shape, 'Identity')]);
    } else if (h % oh === 0 && wd % ow === 0) {
      const y = w.write(out, 'AveragePool', shape, 'AveragePool');
      w.node('AveragePool', [v.name], [y], { kernel_shape: [h / oh, wd / ow], strides: [h / oh, wd / ow] });
    } else {
      throw new Error(
        `adaptive average pooling from ${h}x${wd} to ${oh}x${ow} has no ONNX operator (export at an input size ` +
          'where the map divides evenly)',
      );
    }
  },
  linearForward(w, [x, weight, bias, out, a]) {
    const { batch, inFeatures, outFeatures } = a as { batch: number; inFeatures: number; outFeatures: number };
    const name = w.nameFrom(weight, 'Gemm');
    const inputs = [w.read(x, name, [batch, inFeatures]).name, w.read(weight, name, [outFeatures, inFeatures]).name];
    if (bias) inputs.push(w.read(bias, name, [outFeatures]).name);
    w.node('Gemm', inputs, [w.write(out, name, [batch, outFeatures], name)], { transB: 1 }, name);
  },
  softmaxForward(w, [x, out, rows, cols, log]) {
    const op = log ? 'LogSoftmax' : 'Softmax';
    let v = w.read(x, op);
    if (v.shape.at(-1) !== cols) v = w.read(x, op, [rows as number, cols as number]);
    w.node(op, [v.name], [w.write(out, op, v.shape, op)], { axis: -1 });
  },
  concatChannels(w, [inputs, channels, batch, plane, out]) {
    const cs = channels as number[];
    const first = w.read((inputs as unknown[])[0], 'Concat');
    const spatial = size(first.shape.slice(2)) === plane ? first.shape.slice(2) : [plane as number];
    const names = (inputs as unknown[]).map((x, k) => w.read(x, 'Concat', [batch as number, cs[k], ...spatial]).name);
    const total = cs.reduce((s, c) => s + c, 0);
    w.node('Concat', names, [w.write(out, 'Concat', [batch as number, total, ...spatial], 'Concat')], { axis: 1 });
  },
  lrnForward(w, [x, out, _scale, a]) {
    const args = a as { inputShape: number[]; size: number; alpha: number; beta: number; k: number };
    const v = w.read(x, 'LRN', args.inputShape);
    w.node('LRN', [v.name], [w.write(out, 'LRN', args.inputShape, 'LRN')], {
      size: args.size,
      alpha: { float: args.alpha },
      beta: { float: args.beta },
      bias: { float: args.k },
    });
  },
  broadcastBinary: (w, args) => binaryNode(w, args),
  binaryNd: (w, args) => binaryNode(w, args),
  padForward(w, [mode, x, shape, begins, ends, value, out]) {
    const s = shape as number[];
    const [b, e] = [begins as number[], ends as number[]];
    const v = w.read(x, 'Pad', s);
    const outShape = s.map((d, i) => d + b[i] + e[i]);
    const inputs = [v.name, w.int64Name('pads', [...b, ...e])];
    if (mode === 'constant' && value !== 0) inputs.push(w.constant('pad_value', [], Float32Array.of(value as number)));
    w.node('Pad', inputs, [w.write(out, 'Pad', outShape, 'Pad')], { mode: mode as string });
  },
  gatherForward(w, [x, dims, indices, out]) {
    const [outer, len, inner] = dims as number[];
    const idx = indices as number[];
    const v = w.read(x, 'Gather', [outer, len, inner]);
    const y = w.write(out, 'Gather', [outer, idx.length, inner], 'Gather');
    w.node('Gather', [v.name, w.int64Name('indices', idx)], [y], { axis: 1 });
  },
  matmulBatched(w, [a, b, out, dims, transA, transB]) {
    // The forward of matmul: ONNX MatMul has NumPy's rules too, so the operands go as their
    // producers shaped them, checked against the call's matrix sizes.
    const [m, n, k] = dims as number[];
    if (transA || transB) throw new Error('a transposed batched matmul has no ONNX export');
    const va = w.read(a, 'MatMul');
    const vb = w.read(b, 'MatMul');
    const as = va.shape.length === 1 ? [1, va.shape[0]] : va.shape;
    const bs = vb.shape.length === 1 ? [vb.shape[0], 1] : vb.shape;
    if (as.at(-2) !== m || as.at(-1) !== k || bs.at(-2) !== k || bs.at(-1) !== n) {
      throw new Error(`MatMul reads [${va.shape}] and [${vb.shape}] as ${m}x${k} and ${k}x${n} matrices`);
    }
    const [ab, bb] = [as.slice(0, -2), bs.slice(0, -2)];
    const rank = Math.max(ab.length, bb.length);
    const dim = (s: number[], i: number) => s[i - (rank - s.length)] ?? 1;
    const batch = Array.from({ length: rank }, (_, i) => (dim(ab, i) === 1 ? dim(bb, i) : dim(ab, i)));
    const shape = [...batch, ...(va.shape.length === 1 ? [] : [m]), ...(vb.shape.length === 1 ? [] : [n])];
    w.node('MatMul', [va.name, vb.name], [w.write(out, 'MatMul', shape, 'MatMul')]);
  },
  fill(w, [out, value]) {
    // A tensor filled with one value (average pooling's window counts): a constant of its size.
    const o = (out as { operand?: { len: number } } | null)?.operand;
    if (!o) throw new Error('fill: expected an array');
    const c = w.constant('filled', [o.len], new Float32Array(o.len).fill(value as number));
    w.node('Identity', [c], [w.write(out, 'Identity', [o.len], 'Identity')]);
  },
  scale(w, [x, factor, out]) {
    const v = w.read(x, 'Mul');
    const f = w.constant('scale', [], Float32Array.of(factor as number));
    w.node('Mul', [v.name, f], [w.write(out, 'Mul', v.shape, 'Mul')]);
  },
};

/** Runs the eval forward on a zero input of `shape` under the tracer, fusion off. */
function traceModel(model: Module, shape: readonly number[]): { g: GraphTrace; names: string[] } {
  const x = new Tensor(new Float32Array(size(shape)), [...shape]);
  const named = [...model.stateDict()];
  const nameOf = new Map(named.map(([n, t]) => [t, n]));
  const g = traceEvalGraph(model, x, false, 'exportOnnx');
  const names = g.rec.usedState.map((t) => nameOf.get(t as Tensor) ?? 'state');
  return { g, names };
}

function checkOptions(opts: OnnxExportOptions): void {
  const { inputShape, opset = 17 } = opts ?? {};
  if (!Array.isArray(inputShape) || inputShape.length < 1 || !inputShape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(
      `exportOnnx: inputShape: expected positive integers, batch first, got ${JSON.stringify(inputShape)}`,
    );
  }
  if (!Number.isInteger(opset) || opset < 13 || opset > 17) {
    throw new Error(`exportOnnx: opset: expected an integer from 13 to 17, got ${opset}`);
  }
}

/** The ONNX file's bytes, in chunks (see encodeModel). */
function exportChunks(model: Module, opts: OnnxExportOptions): Uint8Array[] {
  checkOptions(opts);
  const { inputShape, opset = 17, dynamicBatch = false } = opts;
  const inputName = opts.inputName ?? 'input';
  const outputName = opts.outputName ?? 'output';
  const { g, names } = traceModel(model, inputShape);
  const w = new GraphWriter(g, names, { name: inputName, shape: [...inputShape] }, dynamicBatch);
  w.unique(outputName);
  const problems: string[] = [];
  for (const step of g.rec.steps) {
    const emit = EMIT[step.op];
    try {
      if (!emit) throw new Error(`the kernel call ${step.op} has no ONNX export`);
      emit(w, step.args);
    } catch (e) {
      if (e instanceof MissingValue && problems.length) continue;
      problems.push((e as Error).message);
      if (problems.length >= 20) break;
    }
  }
  if (problems.length) throw new Error(`exportOnnx: cannot export this model: ${[...new Set(problems)].join('; ')}`);
  const out = w.outputOf(g.output, g.outputShape);
  w.node('Identity', [out.name], [outputName]);
  const batchDim = (s: readonly number[]) => (dynamicBatch ? ['batch', ...s.slice(1)] : [...s]);
  const graph = create(GraphProtoSchema, {
    name: model.constructor.name,
    node: w.nodes,
    initializer: w.initializers,
    input: [valueInfo(inputName, batchDim(inputShape))],
    output: [valueInfo(outputName, batchDim(g.outputShape))],
  });
  const proto = create(ModelProtoSchema, {
    irVersion: IR_VERSION,
    producerName: 'ferroconv',
    producerVersion: packageVersion(),
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opset) })],
    graph,
    metadataProps: [create(StringStringEntryProtoSchema, { key: 'exported_by', value: 'ferroconv exportOnnx' })],
  });
  return encodeModel(proto);
}

/** ferroconv's version, from its own package.json (the file's producer_version). */
function packageVersion(): string {
  return (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
}

/**
 * The model as ONNX bytes (a ModelProto): its eval forward on an input of `inputShape`, with
 * the parameters and buffers it reads as initializers under their state-dict names. Throws
 * one Error listing every call with no ONNX equivalent.
 */
export function toOnnx(model: Module, opts: OnnxExportOptions): Uint8Array {
  return Buffer.concat(exportChunks(model, opts));
}

/** Writes toOnnx(model, opts) to `path` atomically (a failed export leaves no file behind). */
export function exportOnnx(model: Module, path: string, opts: OnnxExportOptions): void {
  writeFileAtomic(path, exportChunks(model, opts));
}
