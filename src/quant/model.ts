// QuantizedModel: a model after int8 post-training quantization (quantize.ts), as a list of
// nodes over uint8 NHWC activations: quantize the float input, int8 convs and linears with their
// requantization fused, pools, adds and concats in uint8, dequantize the float output; and, for
// a call with no int8 kernel, the float call itself between a dequantize and a quantize.
//
// It is an ordinary Module: its forward makes kernel calls on arrays it allocates, so predict()
// traces it into a compiled plan and runs it off the JavaScript thread like any model, and its
// int8 weights, int32 biases and float multipliers are buffers. Those travel in Float32Arrays
// holding their bytes (an int8 tensor of n values in ceil(n / 4) floats, an int32 bias one float
// per value bit for bit), the form the binding and the plan arena take; save() writes them with
// their real dtypes and shapes.
//
// Every node is described per sample (shapes without the batch), so one graph serves any batch
// size, except a graph with float calls in it: those keep the arguments of the batch size they
// were traced at, and forward() runs such a graph in chunks of that size.
import { readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import { parseRawSafetensors, type RawTensor, serializeRawSafetensors } from '../io/safetensors.js';
import { native } from '../native.js';
import { Module } from '../nn/module.js';
import { isPlanStep } from '../plan/trace.js';
import { Tensor, uninitialized } from '../tensor.js';
import type { QParams } from './observers.js';

export type Shape3 = [number, number, number];

/** A value a node reads: an earlier node's output (or the input, value 0), maybe a slice. */
export interface ValueRef {
  value: number;
  offset?: number;
  len?: number;
}

export type QNode =
  | { op: 'quantize' | 'dequantize'; x: number; y: number; shape: Shape3; q: QParams }
  | {
      op: 'conv';
      x: number;
      y: number;
      /** Buffer names of the int8 weight [C_out, C_in/groups, kH, kW], int32 bias, float mult. */
      weight: string;
      bias: string | null;
      mult: string;
      residual: number | null;
      inShape: Shape3;
      outShape: Shape3;
      weightShape: [number, number, number, number];
      stride: [number, number];
      padding: [number, number, number, number];
      dilation: [number, number];
      groups: number;
      inputZeroPoint: number;
      outputZeroPoint: number;
      /** The residual's zero point and r_scale / y_scale. */
      residualQ: [number, number] | null;
      relu: boolean;
      floatOutput: boolean;
      /** A linear layer (over [N, features], its input flattened): Gemm in an ONNX export. */
      linear?: boolean;
      /** The scales behind the buffers, for export and inspection. */
      inputScale: number;
      outputScale: number;
      residualScale: number | null;
    }
  | {
      op: 'maxpool' | 'avgpool';
      x: number;
      y: number;
      inShape: Shape3;
      outShape: Shape3;
      kernel: [number, number];
      stride: [number, number];
      padding: [number, number];
      dilation: [number, number];
      ceilMode: boolean;
      countIncludePad: boolean;
      divisorOverride: number | null;
      zeroPoint: number;
    }
  | { op: 'adaptive'; x: number; y: number; inShape: Shape3; outShape: Shape3 }
  | { op: 'add'; a: number; b: number; y: number; shape: Shape3; qa: QParams; qb: QParams; qy: QParams; relu: boolean }
  | { op: 'concat'; xs: number[]; y: number; hw: [number, number]; channels: number[]; qs: QParams[]; qy: QParams }
  | { op: 'relu'; x: number; shape: Shape3; zeroPoint: number }
  | {
      op: 'float';
      call: string;
      /** The call's arguments: plain JSON, with {read: ValueRef}, {write: ValueRef}, {buffer: name}. */
      args: unknown[];
      /** Values this call creates (written whole), with their lengths. */
      allocs: { value: number; len: number }[];
    };

/** What a QuantizedModel is made of, as JSON (saved beside the buffers). */
export interface QuantizedGraph {
  format: 'ferroconv-int8';
  version: 1;
  /** The float input's shape per sample, and the output's. */
  inputShape: number[];
  outputShape: number[];
  /** The value the output is read from (float). */
  output: number;
  values: number;
  nodes: QNode[];
  /** Batch size the float calls were traced at (null when there are none). */
  floatBatch: number | null;
  /** Each buffer's dtype and shape ('int8' | 'int32' | 'float32'). */
  buffers: Record<string, { dtype: 'int8' | 'int32' | 'float32'; shape: number[] }>;
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Floats needed to hold `n` bytes. */
export const byteFloats = (n: number) => Math.ceil(n / 4);

export class QuantizedModel extends Module {
  readonly graph: QuantizedGraph;
  private readonly named = new Map<string, Tensor>();

  /** Builds the model from its graph and buffers (each a Float32Array in the binding's form). */
  constructor(graph: QuantizedGraph, buffers: Map<string, Float32Array>) {
    super();
    this.graph = graph;
    this.training = false;
    for (const [name, spec] of Object.entries(graph.buffers)) {
      const data = buffers.get(name);
      if (!data) throw new Error(`QuantizedModel: buffer '${name}' is missing`);
      const n = size(spec.shape);
      const want = spec.dtype === 'int8' ? byteFloats(n) : n;
      if (data.length !== want) {
        const what = `${spec.dtype} [${spec.shape}]`;
        throw new Error(`QuantizedModel: buffer '${name}': expected ${want} floats for ${what}, got ${data.length}`);
      }
      const t = new Tensor(data, [data.length]);
      this.addBuffer(name, t);
      this.named.set(name, t);
    }
  }

  forward(x: Tensor): Tensor {
    const per = this.graph.inputShape;
    if (x.ndim !== per.length + 1 || per.some((d, i) => x.shape[i + 1] !== d)) {
      throw new Error(`QuantizedModel: expected input [N, ${per.join(', ')}], got [${x.shape.join(', ')}]`);
    }
    const n = x.shape[0];
    const fixed = this.graph.floatBatch;
    if (fixed === null || fixed === n) return this.run(x, n);
    // Float calls keep their traced batch size: run chunks of it (the last one padded).
    const outs: Tensor[] = [];
    const inPer = size(per);
    for (let i = 0; i < n; i += fixed) {
      const m = Math.min(fixed, n - i);
      const chunk = uninitialized(fixed * inPer, 'QuantizedModel');
      chunk.fill(0);
      chunk.set(x.data.subarray(i * inPer, (i + m) * inPer));
      const y = this.run(new Tensor(chunk, [fixed, ...per]), fixed);
      outs.push(new Tensor(y.data.subarray(0, m * (y.size / fixed)), [m, ...y.shape.slice(1)]));
    }
    const outPer = size(this.graph.outputShape);
    const data = uninitialized(n * outPer, 'QuantizedModel');
    let at = 0;
    for (const o of outs) {
      data.set(o.data, at);
      at += o.size;
    }
    return new Tensor(data, [n, ...this.graph.outputShape]);
  }

  private buffer(name: string): Float32Array {
    const t = this.named.get(name);
    if (!t) throw new Error(`QuantizedModel: no buffer '${name}'`);
    return t.data;
  }

  private run(x: Tensor, n: number): Tensor {
    const values: Float32Array[] = new Array(this.graph.values);
    values[0] = x.data;
    const get = (v: number): Float32Array => {
      const a = values[v];
      if (!a) throw new Error(`QuantizedModel: value ${v} is read before it is written`);
      return a;
    };
    const bytes = (count: number) => uninitialized(byteFloats(count), 'QuantizedModel');
    for (const node of this.graph.nodes) {
      switch (node.op) {
        case 'quantize': {
          const y = bytes(n * size(node.shape));
          native.quantizeU8(get(node.x), y, { shape: [n, ...node.shape], ...node.q });
          values[node.y] = y;
          break;
        }
        case 'dequantize': {
          const y = uninitialized(n * size(node.shape), 'QuantizedModel');
          native.dequantizeU8(get(node.x), y, { shape: [n, ...node.shape], ...node.q });
          values[node.y] = y;
          break;
        }
        case 'conv': {
          const len = n * size(node.outShape);
          const y = node.floatOutput ? uninitialized(len, 'QuantizedModel') : bytes(len);
          native.qconv2dForward(
            get(node.x),
            this.buffer(node.weight),
            node.bias ? this.buffer(node.bias) : null,
            this.buffer(node.mult),
            node.residual === null ? null : get(node.residual),
            y,
            {
              conv: {
                inputShape: [n, ...node.inShape],
                weightShape: node.weightShape,
                stride: node.stride,
                padding: node.padding,
                dilation: node.dilation,
                groups: node.groups,
              },
              inputZeroPoint: node.inputZeroPoint,
              outputZeroPoint: node.outputZeroPoint,
              residual: node.residualQ ?? undefined,
              relu: node.relu,
              floatOutput: node.floatOutput,
            },
          );
          values[node.y] = y;
          break;
        }
        case 'maxpool':
        case 'avgpool': {
          const y = bytes(n * size(node.outShape));
          const args = {
            inputShape: [n, ...node.inShape],
            kernel: node.kernel,
            stride: node.stride,
            padding: node.padding,
            dilation: node.dilation,
            ceilMode: node.ceilMode,
            countIncludePad: node.countIncludePad,
            divisorOverride: node.divisorOverride ?? undefined,
          };
          if (node.op === 'maxpool') native.maxPool2dU8(get(node.x), y, args);
          else native.avgPool2dU8(get(node.x), y, args, node.zeroPoint);
          values[node.y] = y;
          break;
        }
        case 'adaptive': {
          const y = bytes(n * size(node.outShape));
          native.adaptiveAvgPool2dU8(get(node.x), y, {
            inputShape: [n, ...node.inShape],
            outputSize: [node.outShape[1], node.outShape[2]],
          });
          values[node.y] = y;
          break;
        }
        case 'add': {
          const len = n * size(node.shape);
          const y = bytes(len);
          const qp = (q: QParams) => [q.scale, q.zeroPoint];
          native.addU8(get(node.a), get(node.b), y, {
            len,
            a: qp(node.qa),
            b: qp(node.qb),
            output: qp(node.qy),
            relu: node.relu,
          });
          values[node.y] = y;
          break;
        }
        case 'concat': {
          const pixels = n * node.hw[0] * node.hw[1];
          const total = node.channels.reduce((a, b) => a + b, 0);
          const y = bytes(pixels * total);
          native.concatU8(node.xs.map(get), y, {
            pixels,
            channels: node.channels,
            inputs: node.qs.map((q) => [q.scale, q.zeroPoint]),
            output: [node.qy.scale, node.qy.zeroPoint],
          });
          values[node.y] = y;
          break;
        }
        case 'relu':
          native.reluU8(get(node.x), n * size(node.shape), node.zeroPoint);
          break;
        case 'float':
          this.runFloat(node, values, get);
          break;
      }
    }
    return new Tensor(get(this.graph.output), [n, ...this.graph.outputShape]);
  }

  private runFloat(
    node: Extract<QNode, { op: 'float' }>,
    values: Float32Array[],
    get: (v: number) => Float32Array,
  ): void {
    for (const a of node.allocs) values[a.value] = uninitialized(a.len, node.call);
    const resolve = (arg: unknown): unknown => {
      if (Array.isArray(arg)) return arg.map(resolve);
      if (!arg || typeof arg !== 'object') return arg;
      const o = arg as { read?: ValueRef; write?: ValueRef; buffer?: string };
      const ref = o.read ?? o.write;
      if (ref) {
        const a = get(ref.value);
        return ref.offset === undefined ? a : a.subarray(ref.offset, ref.offset + (ref.len ?? 0));
      }
      if (o.buffer !== undefined) return this.buffer(o.buffer);
      return arg;
    };
    const fn = (native as unknown as Record<string, (...a: unknown[]) => unknown>)[node.call];
    if (typeof fn !== 'function') throw new Error(`QuantizedModel: unknown kernel call ${node.call}`);
    fn(...node.args.map(resolve));
  }

  /**
   * Saves the model (atomically) as safetensors: int8 weights as I8, int32 biases as I32, scales
   * and multipliers as F32, each with its shape, and the graph in the metadata. Read it back
   * with loadQuantized(path).
   */
  override save(path: string, metadata?: Record<string, string>): void {
    writeFileAtomic(path, serializeQuantized(this, metadata));
  }

  /**
   * Writes the model as an ONNX QDQ graph (QuantizeLinear / DequantizeLinear around float
   * operators, int8 weights per channel, int32 biases) that ONNX Runtime runs with its integer
   * kernels; atomically. The options of the float export's that apply: opset, dynamicBatch,
   * and inputShape's batch.
   */
  override async exportOnnx(
    path: string,
    opts: { inputShape?: readonly number[]; opset?: number; dynamicBatch?: boolean } = {},
  ): Promise<void> {
    const { exportQuantizedOnnx } = await import('./onnx.js');
    exportQuantizedOnnx(this, path, {
      opset: opts.opset,
      dynamicBatch: opts.dynamicBatch,
      batch: opts.inputShape?.[0] ?? 1,
    });
  }

  /** A QuantizedModel's weights cannot be replaced piecewise: use loadQuantized(path). */
  override load(): this {
    throw new Error('QuantizedModel: load a quantized model with loadQuantized(path)');
  }

  /** The buffers as the binding holds them, by name (for saving and export). */
  bufferData(): Map<string, Float32Array> {
    return new Map([...this.named].map(([k, t]) => [k, t.data]));
  }
}

const DTYPES = { int8: 'I8', int32: 'I32', float32: 'F32' } as const;
const FORMAT_KEY = 'ferroconv_format';
const GRAPH_KEY = 'ferroconv_int8_graph';

/** The file's bytes: each buffer with its real dtype and shape, the graph as metadata. */
export function serializeQuantized(model: QuantizedModel, metadata: Record<string, string> = {}): Uint8Array[] {
  const tensors = new Map<string, RawTensor>();
  for (const [name, spec] of Object.entries(model.graph.buffers)) {
    const data = model.bufferData().get(name) as Float32Array;
    const n = size(spec.shape);
    const width = spec.dtype === 'int8' ? 1 : 4;
    const bytes = new Uint8Array(n * width);
    bytes.set(new Uint8Array(data.buffer, data.byteOffset, n * width));
    tensors.set(name, { dtype: DTYPES[spec.dtype], shape: [...spec.shape], bytes });
  }
  return serializeRawSafetensors(tensors, {
    ...metadata,
    [FORMAT_KEY]: 'int8',
    [GRAPH_KEY]: JSON.stringify(model.graph),
  });
}

/** Reads a QuantizedModel from the bytes serializeQuantized (QuantizedModel.save) wrote. */
export function parseQuantized(buf: Uint8Array, path = '<buffer>'): QuantizedModel {
  const { tensors, metadata } = parseRawSafetensors(buf, path);
  const fail = (why: string): never => {
    throw new Error(`loadQuantized ${path}: ${why}`);
  };
  if (metadata[FORMAT_KEY] !== 'int8' || typeof metadata[GRAPH_KEY] !== 'string') {
    fail('not a quantized ferroconv model (no int8 graph in its metadata; save one with QuantizedModel.save)');
  }
  let graph: unknown;
  try {
    graph = JSON.parse(metadata[GRAPH_KEY]);
  } catch (e) {
    fail(`the graph is not valid JSON (${(e as Error).message})`);
  }
  const g = checkGraph(graph, fail);
  const buffers = new Map<string, Float32Array>();
  for (const [name, spec] of Object.entries(g.buffers)) {
    const t = tensors.get(name) ?? fail(`buffer '${name}' is missing`);
    if (t.dtype !== DTYPES[spec.dtype] || t.shape.join() !== spec.shape.join()) {
      fail(`buffer '${name}': expected ${DTYPES[spec.dtype]} [${spec.shape}], got ${t.dtype} [${t.shape}]`);
    }
    const n = size(spec.shape);
    const data = new Float32Array(spec.dtype === 'int8' ? byteFloats(n) : n);
    new Uint8Array(data.buffer).set(t.bytes);
    buffers.set(name, data);
  }
  return new QuantizedModel(g, buffers);
}

/** Loads a QuantizedModel saved by QuantizedModel.save. A bad file throws, naming what is wrong. */
export function loadQuantized(path: string): QuantizedModel {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new Error(`loadQuantized ${path}: ${(e as Error).message}`);
  }
  return parseQuantized(buf, path);
}

const NODE_OPS = new Set([
  'quantize',
  'dequantize',
  'conv',
  'maxpool',
  'avgpool',
  'adaptive',
  'add',
  'concat',
  'relu',
  'float',
]);

/**
 * Checks a graph read from a file: its fields' types, node kinds, value ids written before
 * they are read, buffer names declared, shapes of positive integers. The kernels check every
 * size again when the graph runs; this catches what JavaScript would otherwise trip over.
 */
function checkGraph(graph: unknown, fail: (why: string) => never): QuantizedGraph {
  const g = graph as QuantizedGraph;
  if (!g || typeof g !== 'object' || g.format !== 'ferroconv-int8' || g.version !== 1) {
    fail('the graph is not a ferroconv int8 graph of version 1');
  }
  const dims = (v: unknown, what: string, len?: number): void => {
    if (!Array.isArray(v) || (len !== undefined && v.length !== len) || v.length > 8) fail(`${what}: expected a shape`);
    for (const d of v as unknown[])
      if (!Number.isSafeInteger(d) || (d as number) < 0) fail(`${what}: ${d} is not a size`);
  };
  dims(g.inputShape, 'inputShape');
  dims(g.outputShape, 'outputShape');
  if (!Number.isSafeInteger(g.values) || g.values < 1 || g.values > 1_000_000)
    fail('values: expected a positive count');
  if (!Number.isSafeInteger(g.output) || g.output < 0 || g.output >= g.values) fail('output: not a value of the graph');
  if (g.floatBatch !== null && !(Number.isSafeInteger(g.floatBatch) && g.floatBatch > 0))
    fail('floatBatch: expected null or a positive size');
  if (!g.buffers || typeof g.buffers !== 'object') fail('buffers: expected an object');
  for (const [name, spec] of Object.entries(g.buffers)) {
    if (!spec || !(spec.dtype in DTYPES)) fail(`buffer '${name}': unknown dtype`);
    dims(spec.shape, `buffer '${name}'`);
  }
  if (!Array.isArray(g.nodes)) fail('nodes: expected a list');
  const written = new Set([0]);
  const read = (v: unknown, at: number) => {
    if (!Number.isSafeInteger(v) || !written.has(v as number))
      fail(`node ${at}: reads value ${v} before it is written`);
  };
  const write = (v: unknown, at: number) => {
    if (!Number.isSafeInteger(v) || (v as number) <= 0 || (v as number) >= g.values)
      fail(`node ${at}: writes value ${v}`);
    written.add(v as number);
  };
  const buffer = (name: unknown, at: number) => {
    if (typeof name !== 'string' || !Object.hasOwn(g.buffers, name)) fail(`node ${at}: unknown buffer ${name}`);
  };
  g.nodes.forEach((n, at) => {
    if (!n || typeof n !== 'object' || !NODE_OPS.has(n.op)) fail(`node ${at}: unknown op`);
    const where = `node ${at} (${n.op})`;
    const field = n as unknown as Record<string, unknown>;
    const int = (k: string) => {
      if (!Number.isSafeInteger(field[k])) fail(`${where}: ${k}: expected an integer`);
    };
    const bool = (k: string) => {
      if (typeof field[k] !== 'boolean') fail(`${where}: ${k}: expected true or false`);
    };
    const qp = (q: unknown, k: string) => {
      const o = q as QParams | null;
      if (!o || typeof o.scale !== 'number' || !Number.isFinite(o.scale) || !Number.isSafeInteger(o.zeroPoint)) {
        fail(`${where}: ${k}: expected {scale, zeroPoint}`);
      }
    };
    const ints = (k: string, len: number) => dims(field[k], `${where}: ${k}`, len);
    switch (n.op) {
      case 'quantize':
      case 'dequantize':
        read(n.x, at);
        ints('shape', 3);
        qp(n.q, 'q');
        write(n.y, at);
        break;
      case 'conv':
        read(n.x, at);
        if (n.residual !== null) read(n.residual, at);
        buffer(n.weight, at);
        buffer(n.mult, at);
        if (n.bias !== null) buffer(n.bias, at);
        ints('inShape', 3);
        ints('outShape', 3);
        ints('weightShape', 4);
        ints('stride', 2);
        ints('padding', 4);
        ints('dilation', 2);
        for (const k of ['groups', 'inputZeroPoint', 'outputZeroPoint']) int(k);
        for (const k of ['relu', 'floatOutput']) bool(k);
        if (n.linear !== undefined) bool('linear');
        if (n.residualQ !== null) {
          if (!Array.isArray(n.residualQ) || n.residualQ.length !== 2) fail(`${where}: residualQ: expected [zp, mult]`);
          if (!n.residualQ.every((v) => typeof v === 'number' && Number.isFinite(v)))
            fail(`${where}: residualQ: numbers`);
        }
        if ((n.residual === null) !== (n.residualQ === null))
          fail(`${where}: residual and residualQ must come together`);
        write(n.y, at);
        break;
      case 'maxpool':
      case 'avgpool':
        read(n.x, at);
        ints('inShape', 3);
        ints('outShape', 3);
        for (const k of ['kernel', 'stride', 'padding', 'dilation']) ints(k, 2);
        for (const k of ['ceilMode', 'countIncludePad']) bool(k);
        int('zeroPoint');
        if (n.divisorOverride !== null) int('divisorOverride');
        write(n.y, at);
        break;
      case 'adaptive':
        read(n.x, at);
        ints('inShape', 3);
        ints('outShape', 3);
        write(n.y, at);
        break;
      case 'add':
        read(n.a, at);
        read(n.b, at);
        ints('shape', 3);
        qp(n.qa, 'qa');
        qp(n.qb, 'qb');
        qp(n.qy, 'qy');
        bool('relu');
        write(n.y, at);
        break;
      case 'concat':
        if (!Array.isArray(n.xs) || !Array.isArray(n.channels) || !Array.isArray(n.qs)) fail(`${where}: bad lists`);
        if (n.xs.length !== n.channels.length || n.xs.length !== n.qs.length) fail(`${where}: list lengths differ`);
        for (const x of n.xs) read(x, at);
        dims(n.channels, `${where}: channels`);
        for (const [i, q] of n.qs.entries()) qp(q, `qs[${i}]`);
        qp(n.qy, 'qy');
        ints('hw', 2);
        write(n.y, at);
        break;
      case 'relu':
        read(n.x, at);
        ints('shape', 3);
        int('zeroPoint');
        break;
      case 'float':
        if (typeof n.call !== 'string' || !Array.isArray(n.args) || !Array.isArray(n.allocs))
          fail(`${where}: bad call`);
        if (!isPlanStep(n.call))
          fail(`${where}: ${String(n.call).slice(0, 40)} is not a kernel call of an inference graph`);
        for (const a of n.allocs) {
          if (!Number.isSafeInteger(a?.len) || a.len < 0 || a.len > 2 ** 31) fail(`${where}: bad allocation`);
          write(a.value, at);
        }
        break;
    }
  });
  read(g.output, g.nodes.length);
  return g;
}
