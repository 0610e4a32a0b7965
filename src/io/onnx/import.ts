// ONNX import. loadOnnx reads a ModelProto (protobuf-es, code generated from onnx.proto) and
// returns an OnnxModel: a Module whose parameters and buffers are the graph's float
// initializers under their own names (batch norm's running statistics are buffers, the rest
// parameters), and whose forward runs the graph's nodes with ferroconv's differentiable ops. So
// an imported model trains, freezes, saves, predicts with compiled plans and exports like any
// other.
//
// Integer values (the Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains PyTorch emits for
// a flatten, Reshape's shape, Squeeze's axes) are computed in JavaScript from the input's shape
// on every forward: they are tiny, and a compiled plan's guard already holds the input shape.
//
// Everything the importer checks happens when the file is read: a truncated or malformed
// protobuf, a missing input, a cycle, an initializer whose data does not match its dims, a path
// of external data outside the model's folder, and every unsupported operator, reported
// together with their node names in one Error. Options that only the input's shape decides
// (SAME padding, an asymmetric pool padding) are checked on the forward, naming the node.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { clip, hardSigmoid, hardSwish, leakyRelu, relu, sigmoid, tanh } from '../../ops/activation.js';
import { type Conv2dOptions, conv2d, conv2dFused, convTransposeNd } from '../../ops/conv.js';
import { add, cat, dropoutWithMask, mul, narrow, reshape, scale, split, transpose } from '../../ops/elementwise.js';
import { div, gather, matmul, pad, sub } from '../../ops/nd.js';
import { linear } from '../../ops/linear.js';
import { logSoftmax, softmax, softmaxAlong } from '../../ops/loss.js';
import { batchNorm2d, batchNormFold, localResponseNorm } from '../../ops/norm.js';
import { adaptiveAvgPool2d, maxPool2d, maxPool2dWithIndices, poolNd } from '../../ops/pool.js';
import { isGradEnabled } from '../../autograd.js';
import { isInferenceFusionEnabled } from '../../nn/fuse.js';
import { Module, observeStep } from '../../nn/module.js';
import { Tensor } from '../../tensor.js';
import {
  type AttributeProto,
  AttributeProto_AttributeType as AttrType,
  type GraphProto,
  type ModelProto,
  ModelProtoSchema,
  type NodeProto,
  type TensorProto,
  TensorProto_DataLocation as DataLocation,
  TensorProto_DataType as DataType,
} from './gen/onnx_pb.js';
import { attribute } from './proto.js';

/** An integer tensor computed in JavaScript (shapes, axes, indices). */
export class Ints {
  constructor(
    readonly values: number[],
    readonly dims: number[],
  ) {}
}

export type Value = Tensor | Ints;

/**
 * An ONNX sequence of values (a sequence type; an optional holding a value is that value). Only
 * passed through (Identity): CNN graphs compute on tensors.
 */
export class Sequence {
  constructor(readonly items: Value[]) {}
}

/** What a graph's edge may hold. */
export type GraphValue = Value | Sequence;

/** Limits on what a file may ask for, so a hostile one fails early instead of exhausting memory. */
const MAX_ELEMENTS = 2 ** 31 - 1;

function fail(msg: string): never {
  throw new Error(`loadOnnx: ${msg}`);
}

// ---------------------------------------------------------------------------------------------
// Tensors and attributes

function elements(dims: readonly bigint[], what: string): { shape: number[]; size: number } {
  const shape = dims.map((d) => {
    if (d < 0n || d > BigInt(MAX_ELEMENTS)) fail(`${what}: dimension ${d} is out of range`);
    return Number(d);
  });
  const size = shape.reduce((a, b) => a * b, 1);
  if (size > MAX_ELEMENTS) fail(`${what}: ${size} elements is more than ${MAX_ELEMENTS}`);
  return { shape, size };
}

/** Reads the bytes of a tensor stored outside the model file. */
type ExternalReader = (t: TensorProto, what: string) => Uint8Array;

/** A TensorProto's values: float data as a Tensor, integer data as Ints (see tensorValue). */
export function tensorFromProto(t: TensorProto, what = 'tensor'): Tensor | Ints {
  return tensorValue(t, what, () => fail(`${what}: external data is not supported here`));
}

/** A tensor's values as float32 (float data) or numbers (integer data). */
function tensorValue(t: TensorProto, what: string, external: ExternalReader): Value {
  const { shape, size } = elements(t.dims, what);
  let raw = t.rawData;
  if (t.dataLocation === DataLocation.EXTERNAL) raw = external(t, what);
  const has = raw.length > 0;
  const width: Partial<Record<number, number>> = {
    [DataType.FLOAT]: 4,
    [DataType.DOUBLE]: 8,
    [DataType.FLOAT16]: 2,
    [DataType.INT64]: 8,
    [DataType.INT32]: 4,
    [DataType.INT8]: 1,
    [DataType.UINT8]: 1,
    [DataType.BOOL]: 1,
  };
  const w = width[t.dataType];
  if (!w) fail(`${what}: data type ${DataType[t.dataType] ?? t.dataType} is not supported`);
  if (has && raw.length !== size * w) fail(`${what}: raw data holds ${raw.length} bytes, dims need ${size * w}`);
  const view = has ? new DataView(raw.buffer, raw.byteOffset, raw.byteLength) : null;
  const check = (n: number) => {
    if (n !== size) fail(`${what}: ${n} values for dims [${shape.join(', ')}]`);
  };
  switch (t.dataType) {
    case DataType.FLOAT: {
      if (view) {
        const out = new Float32Array(size);
        for (let i = 0; i < size; i++) out[i] = view.getFloat32(i * 4, true);
        return new Tensor(out, shape);
      }
      check(t.floatData.length);
      return new Tensor(Float32Array.from(t.floatData), shape);
    }
    case DataType.DOUBLE: {
      if (view)
        return new Tensor(
          Float32Array.from({ length: size }, (_, i) => view.getFloat64(i * 8, true)),
          shape,
        );
      check(t.doubleData.length);
      return new Tensor(Float32Array.from(t.doubleData), shape);
    }
    case DataType.FLOAT16: {
      // float16 values come as raw bytes or in int32_data, one per element.
      const bits = view ? Array.from({ length: size }, (_, i) => view.getUint16(i * 2, true)) : t.int32Data;
      if (!view) check(bits.length);
      return new Tensor(Float32Array.from(bits, halfToFloat), shape);
    }
    case DataType.INT64: {
      if (view)
        return new Ints(
          Array.from({ length: size }, (_, i) => Number(view.getBigInt64(i * 8, true))),
          shape,
        );
      check(t.int64Data.length);
      return new Ints(t.int64Data.map(Number), shape);
    }
    default: {
      const read = (i: number) =>
        t.dataType === DataType.INT32
          ? view?.getInt32(i * 4, true)
          : t.dataType === DataType.INT8
            ? view?.getInt8(i)
            : view?.getUint8(i);
      if (view)
        return new Ints(
          Array.from({ length: size }, (_, i) => read(i) as number),
          shape,
        );
      check(t.int32Data.length);
      return new Ints([...t.int32Data], shape);
    }
  }
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

class Attributes {
  private readonly byName = new Map<string, AttributeProto>();
  constructor(private readonly node: NodeProto) {
    for (const a of node.attribute) this.byName.set(a.name, a);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  int(name: string, dflt: number): number {
    const a = this.byName.get(name);
    if (!a) return dflt;
    if (a.type !== AttrType.INT && a.type !== AttrType.UNDEFINED) this.wrong(name, 'an integer');
    return Number(a.i);
  }

  float(name: string, dflt: number): number {
    const a = this.byName.get(name);
    if (!a) return dflt;
    if (a.type !== AttrType.FLOAT && a.type !== AttrType.UNDEFINED) this.wrong(name, 'a float');
    return a.f;
  }

  ints(name: string, dflt: number[] | null = null): number[] | null {
    const a = this.byName.get(name);
    if (!a) return dflt;
    if (a.type !== AttrType.INTS && a.type !== AttrType.UNDEFINED) this.wrong(name, 'a list of integers');
    return a.ints.map(Number);
  }

  string(name: string, dflt: string): string {
    const a = this.byName.get(name);
    if (!a) return dflt;
    if (a.type !== AttrType.STRING && a.type !== AttrType.UNDEFINED) this.wrong(name, 'a string');
    return new TextDecoder().decode(a.s);
  }

  get(name: string): AttributeProto | undefined {
    return this.byName.get(name);
  }

  private wrong(name: string, what: string): never {
    fail(`node '${this.node.name}' (${this.node.opType}): attribute ${name}: expected ${what}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Operators

/** What an operator's implementation sees: its node, attributes, opset and the model's mode. */
interface Ctx {
  node: NodeProto;
  attrs: Attributes;
  opset: number;
  training: boolean;
}

type Impl = (ctx: Ctx, inputs: (Value | null)[]) => Value[];

function tensorIn(inputs: (Value | null)[], i: number): Tensor {
  const v = inputs[i];
  if (v instanceof Tensor) return v;
  if (v instanceof Ints) return new Tensor(Float32Array.from(v.values), v.dims);
  throw new Error(`input ${i} is missing`);
}

function valueIn(inputs: (Value | null)[], i: number): Value {
  const v = inputs[i];
  if (!v) throw new Error(`input ${i} is missing`);
  return v;
}

function optionalTensor(inputs: (Value | null)[], i: number): Tensor | null {
  const v = inputs[i];
  if (v instanceof Ints) return new Tensor(Float32Array.from(v.values), v.dims);
  return v ?? null;
}

function intsIn(inputs: (Value | null)[], i: number, what: string): Ints {
  const v = inputs[i];
  if (v instanceof Ints) return v;
  throw new Error(`${what} (input ${i}) must be a constant or computed from shapes`);
}

/** Spatial padding [top, bottom, left, right] for a 2-D window op, from pads or auto_pad. */
function padding2d(
  ctx: Ctx,
  input: readonly number[],
  kernel: number[],
  strides: number[],
  dilations: number[],
): [number, number, number, number] {
  const auto = ctx.attrs.string('auto_pad', 'NOTSET');
  if (auto === 'NOTSET') {
    const p = ctx.attrs.ints('pads', [0, 0, 0, 0]) as number[];
    if (p.length !== 4) throw new Error(`pads: expected 4 values for a 2-D op, got ${p.length}`);
    return [p[0], p[2], p[1], p[3]];
  }
  if (auto === 'VALID') return [0, 0, 0, 0];
  if (auto !== 'SAME_UPPER' && auto !== 'SAME_LOWER') throw new Error(`auto_pad: unknown value '${auto}'`);
  const pads = [0, 1].map((d) => {
    const inSize = input[2 + d];
    const out = Math.ceil(inSize / strides[d]);
    const total = Math.max(0, (out - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 - inSize);
    const small = Math.floor(total / 2);
    return auto === 'SAME_UPPER' ? [small, total - small] : [total - small, small];
  });
  return [pads[0][0], pads[0][1], pads[1][0], pads[1][1]];
}

/** A 2-D op's per-axis attribute ([h, w]), or an Error naming it. */
function two(v: readonly number[], name: string): [number, number] {
  if (v.length !== 2) throw new Error(`${name}: expected 2 values for a 2-D op, got ${v.length}`);
  return [v[0], v[1]];
}

function expect4d(x: Tensor, op: string): void {
  if (x.ndim !== 4) throw new Error(`${op}: only 2-D (4-D NCHW input) is supported, got [${x.shape.join(', ')}]`);
}

function windowAttrs(ctx: Ctx, x: Tensor, kernel: number[]) {
  const strides = two(ctx.attrs.ints('strides', [1, 1]) as number[], 'strides');
  const dilations = two(ctx.attrs.ints('dilations', [1, 1]) as number[], 'dilations');
  const pads = padding2d(ctx, x.shape, kernel, strides, dilations);
  return { strides, dilations, pads };
}

/** A window op's attributes over `kernel.length` spatial axes: strides, dilations, padding before and after. */
function windowNd(ctx: Ctx, x: Tensor, kernel: readonly number[]) {
  const r = kernel.length;
  if (x.ndim !== r + 2) throw new Error(`a ${r}-D window needs a ${r + 2}-D input, got [${x.shape.join(', ')}]`);
  const per = (name: string, dflt: number) => {
    const v = (ctx.attrs.ints(name) as number[] | null) ?? kernel.map(() => dflt);
    if (v.length !== r) throw new Error(`${name}: expected ${r} values, got ${v.length}`);
    return v;
  };
  const strides = per('strides', 1);
  const dilations = per('dilations', 1);
  const auto = ctx.attrs.string('auto_pad', 'NOTSET');
  let begins = kernel.map(() => 0);
  let ends = kernel.map(() => 0);
  if (auto === 'NOTSET') {
    const p = (ctx.attrs.ints('pads') as number[] | null) ?? [...begins, ...ends];
    if (p.length !== 2 * r) throw new Error(`pads: expected ${2 * r} values, got ${p.length}`);
    begins = p.slice(0, r);
    ends = p.slice(r);
  } else if (auto === 'SAME_UPPER' || auto === 'SAME_LOWER') {
    kernel.forEach((k, d) => {
      const inSize = x.shape[2 + d];
      const out = Math.ceil(inSize / strides[d]);
      const total = Math.max(0, (out - 1) * strides[d] + (k - 1) * dilations[d] + 1 - inSize);
      const small = Math.floor(total / 2);
      begins[d] = auto === 'SAME_UPPER' ? small : total - small;
      ends[d] = total - begins[d];
    });
  } else if (auto !== 'VALID') {
    throw new Error(`auto_pad: unknown value '${auto}'`);
  }
  return { strides, dilations, begins, ends };
}

function poolKernel(ctx: Ctx): number[] {
  const k = ctx.attrs.ints('kernel_shape') as number[] | null;
  if (!k) throw new Error('kernel_shape: missing');
  return k;
}

/** Global pooling over every spatial axis of [N, C, ...]: one window the size of the map. */
function globalPool(kind: 'max' | 'avg', x: Tensor): Tensor {
  if (x.ndim < 3) throw new Error(`expected an [N, C, ...] input, got [${x.shape.join(', ')}]`);
  const [n, c] = x.shape;
  const plane = x.size / (n * c);
  const flat = reshape(x, [n, c, 1, plane]);
  const y = kind === 'avg' ? adaptiveAvgPool2d(flat, 1) : maxPool2d(flat, [1, plane]);
  return reshape(y, [n, c, ...x.shape.slice(2).map(() => 1)]);
}

/** Axes normalised to [0, rank). */
function axesOf(axes: number[], rank: number): number[] {
  return axes.map((a) => {
    if (a < -rank || a >= rank) throw new Error(`axis ${a} is out of range for rank ${rank}`);
    return a < 0 ? a + rank : a;
  });
}

/** A Conv node's geometry for conv2d / conv2dFused. */
function convOptions(ctx: Ctx, x: Tensor, w: Tensor): Conv2dOptions {
  expect4d(x, 'Conv');
  const kernel = two(ctx.attrs.ints('kernel_shape') ?? w.shape.slice(2), 'kernel_shape');
  const { strides, dilations, pads } = windowAttrs(ctx, x, kernel);
  return { stride: strides, padding: pads, dilation: dilations, groups: ctx.attrs.int('group', 1) };
}

function softmaxOp(log: boolean): Impl {
  return (ctx, inputs) => {
    const x = tensorIn(inputs, 0);
    const rank = x.ndim;
    const f = log ? logSoftmax : softmax;
    if (ctx.opset < 13) {
      // Before opset 13: the input is coerced to 2-D at `axis` and normalised over the second part.
      const [axis] = axesOf([ctx.attrs.int('axis', 1)], rank);
      const rows = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
      return [reshape(f(reshape(x, [rows, x.size / rows])), x.shape)];
    }
    const [axis] = axesOf([ctx.attrs.int('axis', -1)], rank);
    return [softmaxAlong(x, axis, log)];
  };
}

/** Broadcasting shape of two integer tensors (NumPy's rule). */
function broadcastDims(a: number[], b: number[]): number[] {
  const rank = Math.max(a.length, b.length);
  return Array.from({ length: rank }, (_, i) => {
    const x = a[i - rank + a.length] ?? 1;
    const y = b[i - rank + b.length] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a}] and [${b}] do not broadcast`);
    return Math.max(x, y);
  });
}

/** An elementwise op on integer tensors (shape arithmetic). */
function intsBinary(a: Ints, b: Ints, f: (x: number, y: number) => number): Ints {
  const dims = broadcastDims(a.dims, b.dims);
  const size = dims.reduce((s, d) => s * d, 1);
  const at = (t: Ints, flat: number) => {
    let idx = 0;
    let stride = 1;
    let rest = flat;
    const off = dims.length - t.dims.length;
    const coords = dims.map(() => 0);
    for (let d = dims.length - 1; d >= 0; d--) {
      coords[d] = rest % dims[d];
      rest = Math.floor(rest / dims[d]);
    }
    for (let d = t.dims.length - 1; d >= 0; d--) {
      idx += (t.dims[d] === 1 ? 0 : coords[d + off]) * stride;
      stride *= t.dims[d];
    }
    return t.values[idx];
  };
  return new Ints(
    Array.from({ length: size }, (_, i) => f(at(a, i), at(b, i))),
    dims,
  );
}

function binary(kind: 'Add' | 'Sub' | 'Mul' | 'Div'): Impl {
  const ints: Record<string, (x: number, y: number) => number> = {
    Add: (x, y) => x + y,
    Sub: (x, y) => x - y,
    Mul: (x, y) => x * y,
    Div: (x, y) => Math.trunc(x / y),
  };
  return (_ctx, inputs) => {
    const [a, b] = inputs;
    if (a instanceof Ints && b instanceof Ints) return [intsBinary(a, b, ints[kind])];
    const x = tensorIn(inputs, 0);
    const y = tensorIn(inputs, 1);
    // Division by a constant scalar: multiplication by its reciprocal (the usual case).
    if (kind === 'Div' && y.size === 1 && b instanceof Ints) return [scale(x, 1 / y.data[0])];
    if (kind === 'Add' || kind === 'Mul') {
      // add/mul broadcast either side; the per-channel fast path wants the larger first.
      const [p, q] = y.size > x.size ? [y, x] : [x, y];
      return [kind === 'Add' ? add(p, q) : mul(p, q)];
    }
    return [kind === 'Sub' ? sub(x, y) : div(x, y)];
  };
}

/**
 * The mean over `axes`: the reduced axes moved last, the tensor seen as [1, kept, 1, reduced]
 * and averaged by global average pooling.
 */
function reduceMean(x: Tensor, axes: readonly number[], keep: boolean): Tensor {
  const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const perm = [...kept, ...[...axes].sort((a, b) => a - b)];
  const moved = perm.every((p, i) => p === i) ? x : transpose(x, perm);
  const keptSize = kept.reduce((a, i) => a * x.shape[i], 1);
  const y = adaptiveAvgPool2d(reshape(moved, [1, keptSize, 1, x.size / keptSize]), 1);
  return reshape(y, keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : kept.map((i) => x.shape[i]));
}

/** Reshape's target with 0 (copy the input's dim, unless allowzero) and -1 resolved by reshape(). */
function reshapeTarget(x: readonly number[], target: number[], allowZero: boolean): number[] {
  return target.map((d, i) => (d === 0 && !allowZero ? x[i] : d));
}

function shapeOf(v: Value): number[] {
  return v instanceof Tensor ? v.shape : v.dims;
}

function withShape(v: Value, dims: number[]): Value {
  if (v instanceof Tensor) return reshape(v, dims);
  const size = dims.reduce((a, b) => a * b, 1);
  if (size !== v.values.length) throw new Error(`cannot reshape [${v.dims}] to [${dims}]`);
  return new Ints(v.values, dims);
}

/** Squeeze/Unsqueeze's axes: attribute before opset 13, second input from 13. */
function axesInput(ctx: Ctx, inputs: (Value | null)[]): number[] | null {
  if (ctx.opset >= 13) return inputs[1] ? intsIn(inputs, 1, 'axes').values : null;
  return ctx.attrs.ints('axes');
}

const OPS: Record<string, Impl> = {
  Conv(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const w = tensorIn(inputs, 1);
    return [conv2d(x, w, optionalTensor(inputs, 2), convOptions(ctx, x, w))];
  },
  ConvTranspose(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const w = tensorIn(inputs, 1);
    const r = w.ndim - 2;
    const kernel = (ctx.attrs.ints('kernel_shape') as number[] | null) ?? w.shape.slice(2);
    const outputShape = ctx.attrs.ints('output_shape') as number[] | null;
    const auto = ctx.attrs.string('auto_pad', 'NOTSET');
    // SAME pads from the input alone; output_shape's below.
    const same = auto === 'SAME_UPPER' || auto === 'SAME_LOWER';
    const win = windowNd(
      ctx,
      x,
      kernel.map(() => 1),
    );
    const { strides, dilations } = win;
    let { begins, ends } = win;
    const outputPadding = (ctx.attrs.ints('output_padding') as number[] | null) ?? kernel.map(() => 0);
    if (outputPadding.length !== r) throw new Error(`output_padding: expected ${r} values`);
    if (outputShape || same) {
      // The padding that gives the requested size (output_shape, or input * stride for SAME),
      // split as ONNX specifies: the odd one after for SAME_UPPER, before otherwise.
      const want = outputShape ? outputShape.slice(-r) : kernel.map((_, d) => x.shape[2 + d] * strides[d]);
      const total = kernel.map(
        (k, d) => strides[d] * (x.shape[2 + d] - 1) + outputPadding[d] + (k - 1) * dilations[d] + 1 - want[d],
      );
      // A negative total asks for more than the full output: zeros after it.
      const upper = auto === 'SAME_UPPER';
      begins = total.map((t) => (upper ? Math.floor(t / 2) : t - Math.floor(t / 2)));
      ends = total.map((t, d) => t - begins[d]);
    }
    return [
      convTransposeNd(x, w, optionalTensor(inputs, 2), {
        stride: strides,
        padsBegin: begins,
        padsEnd: ends,
        outputPadding,
        dilation: dilations,
        groups: ctx.attrs.int('group', 1),
      }),
    ];
  },
  BatchNormalization(ctx, inputs) {
    let x = tensorIn(inputs, 0);
    const shape = x.shape;
    if (x.ndim < 2) throw new Error(`expected an [N, C, ...] input, got [${shape.join(', ')}]`);
    if (x.ndim !== 4) x = reshape(x, [shape[0], shape[1], x.size / (shape[0] * shape[1]), 1]);
    const [w, b, mean, variance] = [1, 2, 3, 4].map((i) => tensorIn(inputs, i));
    const momentum = ctx.attrs.float('momentum', 0.9);
    // training_mode (opset 14+) asks for batch statistics even in an eval-mode model; the
    // model's own running statistics then stay as they are.
    const nodeTraining = ctx.attrs.int('training_mode', 0) === 1;
    const outs: Value[] = [];
    if (ctx.node.output.slice(1).some((o) => o)) {
      // The updated running statistics ONNX defines: input * momentum + batch * (1 - momentum),
      // with the batch's biased variance; computed before a training forward updates them.
      const batchMean = reduceMean(x, [0, 2, 3], false);
      const centered = sub(x, reshape(batchMean, [1, batchMean.size, 1, 1]));
      const batchVar = reduceMean(mul(centered, centered), [0, 2, 3], false);
      const blend = (run: Tensor, batch: Tensor) => add(scale(run, momentum), scale(batch, 1 - momentum));
      outs.push(blend(mean, batchMean), blend(variance, batchVar));
    }
    const training = ctx.training || nodeTraining;
    const own = ctx.training;
    const y = batchNorm2d(x, training && !own ? null : mean, training && !own ? null : variance, w, b, {
      training,
      eps: ctx.attrs.float('epsilon', 1e-5),
      // ONNX's momentum weighs the running statistics, torch's the batch's.
      momentum: 1 - momentum,
    });
    return [shape.length !== 4 ? reshape(y, shape) : y, ...outs];
  },
  Relu: (_ctx, i) => [relu(tensorIn(i, 0))],
  Sigmoid: (_ctx, i) => [sigmoid(tensorIn(i, 0))],
  Tanh: (_ctx, i) => [tanh(tensorIn(i, 0))],
  LeakyRelu: (ctx, i) => [leakyRelu(tensorIn(i, 0), ctx.attrs.float('alpha', 0.01))],
  Softmax: softmaxOp(false),
  LogSoftmax: softmaxOp(true),
  MaxPool(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const kernel = poolKernel(ctx);
    const { strides, dilations, begins, ends } = windowNd(ctx, x, kernel);
    const ceilMode = ctx.attrs.int('ceil_mode', 0) === 1;
    if (!(ctx.node.output.length > 1 && ctx.node.output[1])) {
      return [
        poolNd('max', x, kernel, { stride: strides, padsBegin: begins, padsEnd: ends, dilation: dilations, ceilMode }),
      ];
    }
    // The Indices output: flat indices into the whole input, row- or column-major per plane.
    if (kernel.length !== 2 || begins.some((p, i) => p !== ends[i] || p > Math.floor(kernel[i] / 2))) {
      throw new Error('the Indices output needs a 2-D window padded alike on both sides by at most half of it');
    }
    const [y, idx] = maxPool2dWithIndices(x, [kernel[0], kernel[1]], {
      stride: [strides[0], strides[1]],
      padding: [begins[0], begins[1]],
      dilation: [dilations[0], dilations[1]],
      ceilMode,
    });
    const [h, w] = x.shape.slice(2);
    const plane = y.shape[2] * y.shape[3];
    const columnMajor = ctx.attrs.int('storage_order', 0) === 1;
    const values = Array.from(idx, (p, i) => {
      const base = Math.floor(i / plane) * h * w;
      return base + (columnMajor ? (p % w) * h + Math.floor(p / w) : p);
    });
    return [y, new Ints(values, y.shape)];
  },
  AveragePool(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const kernel = poolKernel(ctx);
    const { strides, dilations, begins, ends } = windowNd(ctx, x, kernel);
    if (dilations.some((d) => d !== 1)) throw new Error('dilated average pooling is not supported');
    return [
      poolNd('avg', x, kernel, {
        stride: strides,
        padsBegin: begins,
        padsEnd: ends,
        ceilMode: ctx.attrs.int('ceil_mode', 0) === 1,
        countIncludePad: ctx.attrs.int('count_include_pad', 0) === 1,
      }),
    ];
  },
  GlobalAveragePool: (_ctx, inputs) => [globalPool('avg', tensorIn(inputs, 0))],
  GlobalMaxPool: (_ctx, inputs) => [globalPool('max', tensorIn(inputs, 0))],
  LRN(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    expect4d(x, 'LRN');
    const size = ctx.attrs.int('size', 0);
    // ONNX centres an even window one channel later than torch's local_response_norm.
    if (size % 2 === 0) throw new Error(`size ${size}: only odd window sizes are supported`);
    const opts = {
      alpha: ctx.attrs.float('alpha', 1e-4),
      beta: ctx.attrs.float('beta', 0.75),
      k: ctx.attrs.float('bias', 1),
    };
    return [localResponseNorm(x, size, opts)];
  },
  Gemm(ctx, inputs) {
    let a = tensorIn(inputs, 0);
    let b = tensorIn(inputs, 1);
    const c = optionalTensor(inputs, 2);
    if (a.ndim !== 2 || b.ndim !== 2) throw new Error('A and B must be 2-D');
    // A fully connected layer is transA = 0, transB = 1; other forms transpose first.
    if (ctx.attrs.int('transA', 0) === 1) a = transpose(a, [1, 0]);
    if (ctx.attrs.int('transB', 0) === 0) b = transpose(b, [1, 0]);
    const alpha = ctx.attrs.float('alpha', 1);
    const beta = ctx.attrs.float('beta', 1);
    const outF = b.shape[0];
    const vectorBias =
      c && beta === 1 && alpha === 1 && c.size === outF && (c.ndim === 1 || (c.ndim === 2 && c.shape[0] === 1));
    let y = linear(a, b, vectorBias && c.ndim === 1 ? c : null);
    if (vectorBias && c.ndim === 2) y = add(y, c);
    if (alpha !== 1) y = scale(y, alpha);
    if (c && !vectorBias) y = add(y, beta === 1 ? c : scale(c, beta));
    if (y.shape[1] !== outF) throw new Error('unexpected output shape');
    return [y];
  },
  Add: binary('Add'),
  Sub: binary('Sub'),
  Mul: binary('Mul'),
  Div: binary('Div'),
  Concat(ctx, inputs) {
    const vals = inputs.filter((v): v is Value => v !== null);
    if (vals.length === 0) throw new Error('expected at least one input');
    const rank = shapeOf(vals[0]).length;
    const [axis] = axesOf([ctx.attrs.int('axis', 0)], rank);
    if (vals.every((v) => v instanceof Ints)) {
      if (rank !== 1) throw new Error('only 1-D integer tensors can be concatenated');
      const values = vals.flatMap((v) => (v as Ints).values);
      return [new Ints(values, [values.length])];
    }
    return [
      cat(
        vals.map((_, i) => tensorIn(vals, i)),
        axis,
      ),
    ];
  },
  Flatten(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const dims = shapeOf(x);
    const [axis] =
      ctx.attrs.int('axis', 1) === dims.length ? [dims.length] : axesOf([ctx.attrs.int('axis', 1)], dims.length);
    const rows = dims.slice(0, axis).reduce((a, b) => a * b, 1);
    const cols = dims.slice(axis).reduce((a, b) => a * b, 1);
    return [withShape(x, [rows, cols])];
  },
  Reshape(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const target = ctx.opset >= 5 ? intsIn(inputs, 1, 'shape').values : (ctx.attrs.ints('shape') ?? []);
    const dims = reshapeTarget(shapeOf(x), target, ctx.attrs.int('allowzero', 0) === 1);
    if (x instanceof Tensor) return [reshape(x, dims)];
    const infer = dims.indexOf(-1);
    if (infer >= 0) dims[infer] = x.values.length / dims.reduce((a, d, i) => (i === infer ? a : a * d), 1);
    return [withShape(x, dims)];
  },
  Squeeze(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const dims = shapeOf(x);
    const given = axesInput(ctx, inputs);
    const axes = given ? axesOf(given, dims.length) : dims.flatMap((d, i) => (d === 1 ? [i] : []));
    for (const a of axes) if (dims[a] !== 1) throw new Error(`cannot squeeze axis ${a} of size ${dims[a]}`);
    return [
      withShape(
        x,
        dims.filter((_, i) => !axes.includes(i)),
      ),
    ];
  },
  Unsqueeze(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const dims = [...shapeOf(x)];
    const given = axesInput(ctx, inputs);
    if (!given) throw new Error('axes: missing');
    const axes = axesOf(given, dims.length + given.length).sort((a, b) => a - b);
    for (const a of axes) dims.splice(a, 0, 1);
    return [withShape(x, dims)];
  },
  Identity: (_ctx, inputs) => [valueIn(inputs, 0)],
  Dropout(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const ratio = ctx.opset >= 12 ? (optionalTensor(inputs, 1)?.data[0] ?? 0.5) : ctx.attrs.float('ratio', 0.5);
    // Opset 12's training_mode input switches dropout on whatever the model's mode.
    const t = ctx.opset >= 12 ? inputs[2] : null;
    const nodeTraining = t ? (t instanceof Ints ? t.values[0] : t.data[0]) !== 0 : false;
    const [y, mask] = dropoutWithMask(x, ratio, ctx.training || nodeTraining);
    if (!(ctx.node.output.length > 1 && ctx.node.output[1])) return [y];
    // The mask output: true where kept (all of it when nothing is dropped).
    const kept = mask ? Array.from(mask, (m) => (m !== 0 ? 1 : 0)) : new Array<number>(x.size).fill(1);
    return [y, new Ints(kept, x.shape)];
  },
  Shape(ctx, inputs) {
    const dims = shapeOf(valueIn(inputs, 0));
    const rank = dims.length;
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
    const start = clamp(ctx.attrs.int('start', 0));
    const end = ctx.attrs.has('end') ? clamp(ctx.attrs.int('end', rank)) : rank;
    const values = dims.slice(start, end);
    return [new Ints(values, [values.length])];
  },
  Gather(ctx, inputs) {
    const idx = intsIn(inputs, 1, 'indices');
    if (inputs[0] instanceof Tensor) {
      const x = inputs[0];
      const [axis] = axesOf([ctx.attrs.int('axis', 0)], x.ndim);
      return [gather(x, axis, idx.values, idx.dims)];
    }
    const data = intsIn(inputs, 0, 'data');
    const [axis] = axesOf([ctx.attrs.int('axis', 0)], data.dims.length);
    if (axis !== 0 || data.dims.length !== 1) throw new Error('only gathering from a 1-D integer tensor is supported');
    const n = data.values.length;
    const values = idx.values.map((i) => {
      if (i < -n || i >= n) throw new Error(`index ${i} is out of range for ${n} values`);
      return data.values[i < 0 ? i + n : i];
    });
    return [new Ints(values, idx.dims)];
  },
  Cast(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const to = ctx.attrs.int('to', 0);
    if (x instanceof Ints) {
      return [to === DataType.FLOAT || to === DataType.DOUBLE ? new Tensor(Float32Array.from(x.values), x.dims) : x];
    }
    if (to === DataType.FLOAT) return [x];
    throw new Error(`casting a float tensor to ${DataType[to] ?? to} is not supported`);
  },
  ReduceMean(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const given = ctx.opset >= 18 ? (inputs[1] ? intsIn(inputs, 1, 'axes').values : null) : ctx.attrs.ints('axes');
    const axes = given ? axesOf(given, x.ndim) : x.shape.map((_, i) => i);
    return [reduceMean(x, axes, ctx.attrs.int('keepdims', 1) === 1)];
  },
  Clip(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    // Bounds: attributes before opset 11, optional scalar inputs from 11.
    const bound = (i: number, name: string, dflt: number) => {
      if (ctx.opset < 11) return ctx.attrs.float(name, dflt);
      const v = optionalTensor(inputs, i);
      if (v && v.size !== 1) throw new Error(`${name}: expected a scalar`);
      return v ? v.data[0] : dflt;
    };
    return [clip(x, bound(1, 'min', -Infinity), bound(2, 'max', Infinity))];
  },
  HardSigmoid: (ctx, i) => [hardSigmoid(tensorIn(i, 0), ctx.attrs.float('alpha', 0.2), ctx.attrs.float('beta', 0.5))],
  HardSwish: (_ctx, i) => [hardSwish(tensorIn(i, 0))],
  PRelu(_ctx, inputs) {
    // relu(x) - slope * relu(-x), slope broadcast as ONNX's (unidirectionally) to x.
    const x = tensorIn(inputs, 0);
    const slope = tensorIn(inputs, 1);
    return [add(relu(x), mul(scale(relu(scale(x, -1)), -1), slope))];
  },
  Transpose(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const perm = ctx.attrs.ints('perm') ?? x.shape.map((_, i) => x.ndim - 1 - i);
    return [transpose(x, perm)];
  },
  Split(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const [axis] = axesOf([ctx.attrs.int('axis', 0)], x.ndim);
    const given = ctx.opset >= 13 ? (inputs[1] ? intsIn(inputs, 1, 'split').values : null) : ctx.attrs.ints('split');
    const parts = ctx.node.output.length;
    let sizes = given;
    if (!sizes) {
      if (x.shape[axis] % parts) throw new Error(`${x.shape[axis]} does not split into ${parts} equal parts`);
      sizes = Array.from({ length: parts }, () => x.shape[axis] / parts);
    }
    return split(x, sizes, axis);
  },
  Slice(ctx, inputs) {
    const x = valueIn(inputs, 0);
    const dims = shapeOf(x);
    const get = (i: number, name: string) => (inputs[i] ? intsIn(inputs, i, name).values : null);
    const starts = ctx.opset >= 10 ? get(1, 'starts') : ctx.attrs.ints('starts');
    const ends = ctx.opset >= 10 ? get(2, 'ends') : ctx.attrs.ints('ends');
    if (!starts || !ends) throw new Error('starts and ends are required');
    const given = ctx.opset >= 10 ? get(3, 'axes') : ctx.attrs.ints('axes');
    const axes = axesOf(given ?? starts.map((_, i) => i), dims.length);
    const steps = (ctx.opset >= 10 ? get(4, 'steps') : null) ?? starts.map(() => 1);
    let y: Value = x;
    axes.forEach((a, k) => {
      if (steps[k] !== 1) throw new Error('only step 1 is supported');
      const size = dims[a];
      const clampTo = (v: number) => Math.min(Math.max(v < 0 ? v + size : v, 0), size);
      const start = clampTo(starts[k]);
      const end = Math.max(start, clampTo(ends[k]));
      if (y instanceof Ints) {
        if (dims.length !== 1) throw new Error('only 1-D integer tensors can be sliced');
        y = new Ints(y.values.slice(start, end), [end - start]);
      } else if (start !== 0 || end !== size) {
        y = narrow(y, a, start, end - start);
      }
    });
    return [y];
  },
  MatMul(_ctx, inputs) {
    const a = tensorIn(inputs, 0);
    const b = tensorIn(inputs, 1);
    if (b.ndim === 2 && a.ndim >= 2) {
      // [..., M, K] x [K, N]: the rows through a linear layer with weight b^T.
      const k = a.shape[a.ndim - 1];
      if (b.shape[0] !== k) throw new Error(`[${a.shape}] and [${b.shape}] do not chain`);
      const y = linear(reshape(a, [a.size / k, k]), transpose(b, [1, 0]));
      return [reshape(y, [...a.shape.slice(0, -1), b.shape[1]])];
    }
    return [matmul(a, b)];
  },
  Pad(ctx, inputs) {
    const x = tensorIn(inputs, 0);
    const r = x.ndim;
    const pads = ctx.opset >= 11 ? intsIn(inputs, 1, 'pads').values : (ctx.attrs.ints('pads') ?? []);
    let value = ctx.attrs.float('value', 0);
    if (ctx.opset >= 11 && inputs[2]) {
      const v = tensorIn(inputs, 2);
      if (v.size !== 1) throw new Error('constant_value: expected a scalar');
      value = v.data[0];
    }
    // Opset 18's axes input: the pads cover only these axes.
    const axes = ctx.opset >= 18 && inputs[3] ? axesOf(intsIn(inputs, 3, 'axes').values, r) : x.shape.map((_, i) => i);
    if (pads.length !== 2 * axes.length)
      throw new Error(`pads: expected ${2 * axes.length} values, got ${pads.length}`);
    const begins = x.shape.map(() => 0);
    const ends = x.shape.map(() => 0);
    axes.forEach((a, i) => {
      begins[a] = pads[i];
      ends[a] = pads[axes.length + i];
    });
    const mode = ctx.attrs.string('mode', 'constant');
    if (mode !== 'constant' && mode !== 'edge' && mode !== 'reflect' && mode !== 'wrap') {
      throw new Error(`mode: unknown value '${mode}'`);
    }
    if (begins.every((p) => p === 0) && ends.every((p) => p === 0)) return [x];
    return [pad(x, begins, ends, mode, value)];
  },
};

/** Operators whose outputs are computed from constants alone when the graph is read. */
const CONSTANT = 'Constant';

function constantValue(node: NodeProto, external: ExternalReader): Value {
  const a = node.attribute[0];
  if (!a || node.attribute.length !== 1) fail(`node '${node.name}' (Constant): expected one attribute`);
  const what = `node '${node.name}' (Constant)`;
  switch (a.name) {
    case 'value':
      if (!a.t) fail(`${what}: value: expected a tensor`);
      return tensorValue(a.t, what, external);
    case 'value_float':
      return new Tensor(Float32Array.of(a.f), []);
    case 'value_floats':
      return new Tensor(Float32Array.from(a.floats), [a.floats.length]);
    case 'value_int':
      return new Ints([Number(a.i)], []);
    case 'value_ints':
      return new Ints(a.ints.map(Number), [a.ints.length]);
    default:
      return fail(`${what}: attribute ${a.name} is not supported`);
  }
}

// ---------------------------------------------------------------------------------------------
// The model

/** A module holding some of the graph's tensors: one per dotted prefix of their names. */
class TensorHolder extends Module {
  hold(name: string, t: Tensor, trainable: boolean): void {
    if (trainable) this.addParameter(name, t);
    else this.addBuffer(name, t);
  }

  child(name: string): TensorHolder {
    const found = this.namedChildren().find(([n]) => n === name);
    return (found?.[1] as TensorHolder | undefined) ?? this.addModule(name, new TensorHolder());
  }

  forward(): Tensor {
    throw new Error('a holder of ONNX initializers has no forward');
  }
}

interface Step {
  node: NodeProto;
  impl: Impl;
  attrs: Attributes;
}

/**
 * Conv [-> BatchNormalization] [-> Add] [-> Relu] whose intermediate values nothing else reads:
 * in inference one conv2dFused call (the epilogue applies the folded batch norm, the residual and
 * the ReLU while each output tile is in cache), as the zoo's blocks run. By step index.
 */
interface FusedGroup {
  /** Indices into the steps: the Conv first, the group's last node last. */
  members: number[];
  bn: Step | null;
  /** The Add's other operand, or null. */
  residual: string | null;
  relu: boolean;
}

/** Finds the fusable groups of `steps` (see FusedGroup). */
function findGroups(steps: Step[], outputs: readonly string[]): FusedGroup[] {
  const readers = new Map<string, number[]>();
  steps.forEach((s, i) => {
    for (const name of s.node.input) {
      if (!name) continue;
      const list = readers.get(name) ?? [];
      list.push(i);
      readers.set(name, list);
    }
  });
  // The one step reading `name`, when nothing else (graph outputs included) does.
  const soleReader = (name: string): number | null => {
    const r = readers.get(name);
    return r && r.length === 1 && !outputs.includes(name) ? r[0] : null;
  };
  const groups: FusedGroup[] = [];
  // A step belongs to one group at most (a ResNet block's Add is read by its main branch and
  // by its downsample conv: the first group to reach it takes it).
  const claimed = new Set<number>();
  steps.forEach((s, i) => {
    if (s.node.opType !== 'Conv' || s.node.output.length !== 1 || claimed.has(i)) return;
    const g: FusedGroup = { members: [i], bn: null, residual: null, relu: false };
    let out = s.node.output[0];
    let next = soleReader(out);
    const is = (k: number | null, op: string): k is number =>
      k !== null && !claimed.has(k) && steps[k].node.opType === op && steps[k].node.output.length === 1;
    if (is(next, 'BatchNormalization') && steps[next].node.input[0] === out) {
      g.bn = steps[next];
      g.members.push(next);
      out = g.bn.node.output[0];
      next = soleReader(out);
    }
    if (is(next, 'Add') && steps[next].node.input.length === 2) {
      const add = steps[next].node;
      const other = add.input[0] === out ? add.input[1] : add.input[0];
      if (other !== out) {
        g.residual = other;
        g.members.push(next);
        out = add.output[0];
        next = soleReader(out);
      }
    }
    if (is(next, 'Relu')) {
      g.relu = true;
      g.members.push(next);
    }
    if (g.members.length > 1) {
      groups.push(g);
      for (const m of g.members) claimed.add(m);
    }
  });
  return groups;
}

/**
 * An imported ONNX graph as a Module. forward(...inputs) takes the graph's inputs in order and
 * returns its first output; forwardAll returns every output.
 */
export class OnnxModel extends TensorHolder {
  /** The graph's input and output names, in order. */
  readonly inputNames: string[];
  /** The inputs' declared shapes (-1 for a symbolic dimension such as the batch), null when not declared. */
  readonly inputShapes: (number[] | null)[];
  readonly outputNames: string[];
  /** The default-domain opset the graph was written for. */
  readonly opset: number;
  private readonly steps: Step[];
  private readonly constants: Map<string, Value>;
  /** Fusable groups by the index of their last step, and the other steps they cover. */
  private readonly groupEnding = new Map<number, FusedGroup>();
  private readonly inGroup = new Set<number>();

  constructor(graph: GraphProto, opset: number, tensors: Map<string, Value>, buffers: Set<string>) {
    super();
    this.opset = opset;
    this.constants = new Map();
    for (const [name, v] of tensors) {
      if (!(v instanceof Tensor)) {
        this.constants.set(name, v);
        continue;
      }
      const parts = name.split('.');
      // A name with an empty part (which no Module path has) stays whole.
      const path = parts.every(Boolean) ? parts : [name];
      let holder: TensorHolder = this;
      for (const p of path.slice(0, -1)) holder = holder.child(p);
      holder.hold(path[path.length - 1], v, !buffers.has(name));
    }
    const names = new Set(tensors.keys());
    const inputs = graph.input.filter((i) => !names.has(i.name));
    this.inputNames = inputs.map((i) => i.name);
    this.inputShapes = inputs.map((i) => {
      const t = i.type?.value;
      if (t?.case !== 'tensorType' || !t.value.shape) return null;
      return t.value.shape.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : -1));
    });
    this.outputNames = graph.output.map((o) => o.name);
    this.steps = graph.node.map((node) => ({ node, impl: OPS[node.opType], attrs: new Attributes(node) }));
    for (const g of findGroups(this.steps, this.outputNames)) {
      this.groupEnding.set(g.members[g.members.length - 1], g);
      for (const m of g.members.slice(0, -1)) this.inGroup.add(m);
    }
  }

  forward(...inputs: Tensor[]): Tensor {
    const out = this.forwardAll(...inputs)[0];
    return out;
  }

  /** Every output of the graph, in order. */
  forwardAll(...inputs: Tensor[]): Tensor[] {
    return this.run(inputs).map((v) => {
      if (v instanceof Sequence) throw new Error('OnnxModel: an output is a sequence; use run() for it');
      return v instanceof Tensor ? v : new Tensor(Float32Array.from(v.values), v.dims);
    });
  }

  /**
   * Runs the graph on inputs that may be integer tensors (shapes, indices) or sequences, and
   * returns its outputs as computed.
   */
  run(inputs: GraphValue[]): GraphValue[] {
    if (inputs.length !== this.inputNames.length) {
      throw new Error(
        `OnnxModel: expected ${this.inputNames.length} input(s) (${this.inputNames.join(', ')}), got ${inputs.length}`,
      );
    }
    const values = new Map<string, GraphValue>(this.constants);
    for (const [name, t] of this.stateDict()) values.set(name, t);
    this.inputNames.forEach((n, i) => {
      values.set(n, inputs[i]);
    });
    // Inference fusion (as the zoo's: eval mode, no gradient recorded, setInferenceFusion on).
    const fuse = !this.training && !isGradEnabled() && isInferenceFusionEnabled();
    const runStep = ({ node, impl, attrs }: Step) => {
      const given = node.input.map((n) => (n === '' ? null : (values.get(n) ?? null)));
      let outs: GraphValue[];
      try {
        if (given.some((v) => v instanceof Sequence)) {
          if (node.opType !== 'Identity') throw new Error('sequence values are only passed through (by Identity)');
          outs = [given[0] as Sequence];
        } else {
          // Observers (summary, profile) see each node as a call; inputs that are no tensors they skip.
          outs = observeStep(this, { name: node.name || node.output[0], type: node.opType }, given as Tensor[], () =>
            impl({ node, attrs, opset: this.opset, training: this.training }, given as (Value | null)[]),
          );
        }
      } catch (e) {
        throw new Error(`OnnxModel: node '${node.name}' (${node.opType}): ${(e as Error).message}`, { cause: e });
      }
      node.output.forEach((n, i) => {
        if (n && outs[i] !== undefined) values.set(n, outs[i]);
      });
    };
    this.steps.forEach((step, i) => {
      const g = fuse ? this.groupEnding.get(i) : undefined;
      if (fuse && this.inGroup.has(i)) {
        // Covered by the group that ends later.
      } else if (!g) {
        runStep(step);
      } else {
        const y = this.runFused(g, values);
        // A group the fused kernel cannot take (a broadcasting residual, say) runs node by node.
        if (y) values.set(step.node.output[0], y);
        else for (const m of g.members) runStep(this.steps[m]);
      }
    });
    return this.outputNames.map((n) => {
      const v = values.get(n);
      if (!v) throw new Error(`OnnxModel: output '${n}' was not computed`);
      return v;
    });
  }

  /** A fused group's output, or null when its values do not fit conv2dFused. */
  private runFused(g: FusedGroup, values: Map<string, GraphValue>): Tensor | null {
    const conv = this.steps[g.members[0]];
    const get = (name: string | undefined) => (name ? values.get(name) : undefined);
    const [x, w, b] = conv.node.input.map(get);
    if (!(x instanceof Tensor) || !(w instanceof Tensor) || x.ndim !== 4 || w.ndim !== 4) return null;
    const bias = b instanceof Tensor ? b : null;
    let scale: Tensor | null = null;
    let shift: Tensor | null = bias;
    if (g.bn) {
      const [gamma, beta, mean, variance] = g.bn.node.input.slice(1).map(get);
      if (![gamma, beta, mean, variance].every((t) => t instanceof Tensor && t.size === w.shape[0])) return null;
      const eps = g.bn.attrs.float('epsilon', 1e-5);
      ({ scale, shift } = batchNormFold(
        mean as Tensor,
        variance as Tensor,
        gamma as Tensor,
        beta as Tensor,
        bias,
        eps,
      ));
    }
    const residual = g.residual ? get(g.residual) : null;
    if (g.residual && !(residual instanceof Tensor)) return null;
    const ctx: Ctx = { node: conv.node, attrs: conv.attrs, opset: this.opset, training: false };
    try {
      const opts = convOptions(ctx, x, w);
      // A residual must have the conv's output shape (the epilogue does not broadcast): else null.
      return conv2dFused(
        x,
        w,
        { scale, shift, residual: residual instanceof Tensor ? residual : null, relu: g.relu },
        opts,
      );
    } catch (e) {
      if (/residual: expected shape/.test((e as Error).message)) return null;
      throw new Error(`OnnxModel: node '${conv.node.name}' (Conv): ${(e as Error).message}`, { cause: e });
    }
  }
}

export interface LoadOnnxOptions {
  /** Folder of external data files when the model is given as bytes (default: none allowed). */
  externalDataDir?: string;
}

/** The default-domain opset of a model. */
function defaultOpset(model: ModelProto): number {
  const entry = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  if (!entry) fail('the model imports no default-domain (ai.onnx) opset');
  return Number(entry.version);
}

function externalReader(dir: string | null): ExternalReader {
  const cache = new Map<string, Uint8Array>();
  return (t, what) => {
    if (!dir) fail(`${what}: its data is in an external file; load the model from its path`);
    const info = new Map(t.externalData.map((e) => [e.key, e.value]));
    const location = info.get('location');
    if (!location) fail(`${what}: external data without a location`);
    const rel = normalize(location);
    if (isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) {
      fail(`${what}: external data location '${location}' is outside the model's folder`);
    }
    const file = join(dir, rel);
    let bytes = cache.get(file);
    if (!bytes) {
      bytes = readFileSyncChecked(file, what);
      cache.set(file, bytes);
    }
    const offset = Number(info.get('offset') ?? 0);
    const length = info.has('length') ? Number(info.get('length')) : bytes.length - offset;
    if (!(offset >= 0 && length >= 0 && offset + length <= bytes.length)) {
      fail(`${what}: external data [${offset}, ${offset + length}) is outside '${location}' (${bytes.length} bytes)`);
    }
    return bytes.subarray(offset, offset + length);
  };
}

function readFileSyncChecked(file: string, what: string): Uint8Array {
  try {
    return readFileSync(file);
  } catch (e) {
    return fail(`${what}: cannot read external data '${file}': ${(e as Error).message}`);
  }
}

/** Every node in an order where each runs after the producers of its inputs; throws on a cycle. */
function sortNodes(graph: GraphProto, known: Set<string>): NodeProto[] {
  const producer = new Map<string, number>();
  graph.node.forEach((n, i) => {
    for (const o of n.output) {
      if (!o) continue;
      if (producer.has(o) || known.has(o)) fail(`value '${o}' is produced twice (node '${n.name}')`);
      producer.set(o, i);
    }
  });
  const state = new Uint8Array(graph.node.length); // 0 new, 1 visiting, 2 done
  const order: NodeProto[] = [];
  const visit = (start: number) => {
    // Iterative depth-first search: a hostile file's long chains must not overflow the stack.
    const stack: [number, number][] = [[start, 0]];
    state[start] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const node = graph.node[top[0]];
      if (top[1] < node.input.length) {
        const name = node.input[top[1]++];
        if (!name || known.has(name)) continue;
        const p = producer.get(name);
        if (p === undefined) fail(`node '${node.name}' (${node.opType}) reads '${name}', which nothing produces`);
        if (state[p] === 1) fail(`the graph has a cycle through node '${graph.node[p].name}'`);
        if (state[p] === 0) {
          state[p] = 1;
          stack.push([p, 0]);
        }
      } else {
        state[top[0]] = 2;
        order.push(node);
        stack.pop();
      }
    }
  };
  for (let i = 0; i < graph.node.length; i++) if (state[i] === 0) visit(i);
  return order;
}

/**
 * Folds a zero Pad (constant mode, value 0, spatial pads only) into the Conv or AveragePool that
 * alone reads it, as PyTorch exports an average pool that counts its padding (DenseNet's
 * transitions, Inception's branch pools): the pool then pads itself and counts the padding.
 * Removes the folded Pad nodes from `nodes`.
 */
function foldPads(nodes: NodeProto[], tensors: Map<string, Value>, outputs: string[]): void {
  for (let i = nodes.length - 1; i >= 0; i--) {
    const pad = nodes[i];
    if (pad.opType !== 'Pad') continue;
    const attrs = new Attributes(pad);
    if (attrs.string('mode', 'constant') !== 'constant') continue;
    const padsValue = pad.input[1] ? tensors.get(pad.input[1]) : null;
    const pads = padsValue instanceof Ints ? padsValue.values : attrs.ints('pads');
    const value = pad.input[2] ? tensors.get(pad.input[2]) : null;
    const zero =
      !pad.input[2] ||
      (value instanceof Tensor && value.data.every((v) => v === 0)) ||
      (value instanceof Ints && value.values.every((v) => v === 0));
    if (pads?.length !== 8 || !zero || attrs.float('value', 0) !== 0) continue;
    if (pads[0] || pads[1] || pads[4] || pads[5] || pads.some((p) => p < 0)) continue;
    const out = pad.output[0];
    const readers = nodes.filter((n) => n.input.includes(out));
    if (readers.length !== 1 || outputs.includes(out)) continue;
    const next = readers[0];
    const nextAttrs = new Attributes(next);
    if (next.input[0] !== out || nextAttrs.string('auto_pad', 'NOTSET') !== 'NOTSET') continue;
    const own = nextAttrs.ints('pads', [0, 0, 0, 0]) as number[];
    if (own.length !== 4) continue;
    const extra = [pads[2], pads[3], pads[6], pads[7]];
    if (next.opType === 'AveragePool') {
      if (own.some((p) => p !== 0) || nextAttrs.int('ceil_mode', 0) !== 0) continue;
      setAttribute(next, attribute('count_include_pad', 1));
    } else if (next.opType !== 'Conv') {
      continue;
    }
    setAttribute(
      next,
      attribute(
        'pads',
        own.map((p, k) => p + extra[k]),
      ),
    );
    next.input[0] = pad.input[0];
    nodes.splice(i, 1);
  }
}

function setAttribute(node: NodeProto, a: AttributeProto): void {
  const at = node.attribute.findIndex((x) => x.name === a.name);
  if (at >= 0) node.attribute[at] = a;
  else node.attribute.push(a);
}

/** Parses and checks an ONNX model; see loadOnnx. */
export function parseOnnx(bytes: Uint8Array, opts: { dir?: string | null } = {}): OnnxModel {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (e) {
    return fail(`not a valid ONNX file: ${(e as Error).message}`);
  }
  const graph = model.graph;
  if (!graph || graph.node.length === 0) fail('the file holds no graph (is it an ONNX model?)');
  const opset = defaultOpset(model);
  const external = externalReader(opts.dir ?? null);
  const unsupported: string[] = [];
  for (const n of graph.node) {
    if (n.domain !== '' && n.domain !== 'ai.onnx') unsupported.push(`${n.opType} (${n.name}, domain ${n.domain})`);
    else if (!OPS[n.opType] && n.opType !== CONSTANT) unsupported.push(`${n.opType} (${n.name || 'unnamed'})`);
  }
  if (unsupported.length) fail(`unsupported operators: ${unsupported.join(', ')}`);

  const tensors = new Map<string, Value>();
  for (const t of graph.initializer) {
    if (!t.name) fail('an initializer has no name');
    if (tensors.has(t.name)) fail(`initializer '${t.name}' appears twice`);
    tensors.set(t.name, tensorValue(t, `initializer '${t.name}'`, external));
  }
  const known = new Set([...tensors.keys(), ...graph.input.map((i) => i.name)]);
  const order = sortNodes(graph, known);
  // Constant nodes become tensors of the model (floats: buffers, so plans can read them).
  const nodes: NodeProto[] = [];
  for (const n of order) {
    if (n.opType === CONSTANT) {
      if (n.output.length !== 1) fail(`node '${n.name}' (Constant): expected one output`);
      tensors.set(n.output[0], constantValue(n, external));
    } else {
      nodes.push(n);
    }
  }
  for (const o of graph.output) {
    if (!known.has(o.name) && !order.some((n) => n.output.includes(o.name))) {
      fail(`output '${o.name}' is not produced by any node`);
    }
  }
  // Batch norm's running statistics are buffers; other float tensors parameters, except those
  // made by Constant nodes (buffers: they are part of the graph, not weights to train).
  const buffers = new Set<string>();
  for (const n of order) {
    if (n.opType === 'BatchNormalization') for (const name of n.input.slice(3, 5)) buffers.add(name);
    if (n.opType === CONSTANT) buffers.add(n.output[0]);
  }
  foldPads(
    nodes,
    tensors,
    graph.output.map((o) => o.name),
  );
  const sorted = { ...graph, node: nodes } as GraphProto;
  return new OnnxModel(sorted, opset, tensors, buffers);
}

/**
 * Loads an ONNX model (a file path, or the file's bytes) as an OnnxModel. Models with external
 * data load from a path (their data files must be in the model's folder or below it).
 */
export async function loadOnnx(source: string | Uint8Array, opts: LoadOnnxOptions = {}): Promise<OnnxModel> {
  if (typeof source === 'string') {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(source);
    } catch (e) {
      return fail(`cannot read '${source}': ${(e as Error).message}`);
    }
    return parseOnnx(bytes, { dir: dirname(source) });
  }
  if (!(source instanceof Uint8Array)) fail('expected a file path or the bytes of an ONNX file');
  return parseOnnx(source, { dir: opts.externalDataDir ?? null });
}
