// Post-training static quantization: quantize(model, calibration) -> QuantizedModel.
//
// The model's eval forward is traced once with inference fusion on (plan/trace.ts traceGraph),
// which gives the kernel calls of the fused graph: each conv with its batch norm folded into a
// per-channel scale and shift, its residual add and ReLU. Calibration replays those calls on
// each calibration batch and shows every activation to an observer (observers.ts). The graph is
// then rewritten call by call into int8 nodes (model.ts):
//   - a conv (or linear: a 1x1 conv over [N, features]) gets per-output-channel symmetric int8
//     weights of w * bn_scale (the batch norm folded in for good), an int32 bias of
//     round(shift / (x_scale * w_scale)), and its output's scale and zero point from the
//     observer; a ReLU that only it feeds is fused into it, and so is a graph-final dequantize
//     (the last linear writes float logits);
//   - pools keep their input's quantization; adds and concats requantize to their observed one;
//   - a call with no int8 kernel runs in float between a dequantize and a quantize, so any
//     traceable model quantizes, with the unsupported parts left in float.
import { noGrad } from '../autograd.js';
import type { Batch } from '../data/dataset.js';
import { addon, native } from '../native.js';
import type { Module } from '../nn/module.js';
import { traceEvalGraph } from '../nn/fuse.js';
import type { GraphTrace, Operand } from '../plan/trace.js';
import { Tensor } from '../tensor.js';
import { type QuantizedGraph, QuantizedModel, type QNode, type Shape3, type ValueRef, byteFloats } from './model.js';
import { type Observer, type ObserverKind, type QParams, makeObserver } from './observers.js';

export interface QuantizeOptions {
  /** How activation ranges are chosen (default 'minmax'; see observers.ts). */
  observer?: ObserverKind;
  /** For observer 'percentile': the share of values kept, in percent (default 99.99). */
  percentile?: number;
  /** Use at most this many calibration batches (default: all). */
  maxBatches?: number;
}

export type Calibration = Tensor | Iterable<Tensor | Batch> | AsyncIterable<Tensor | Batch>;

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

async function* batchesOf(c: Calibration): AsyncGenerator<Tensor> {
  if (c instanceof Tensor) {
    yield c;
    return;
  }
  for await (const b of c as AsyncIterable<Tensor | Batch>) yield b instanceof Tensor ? b : b.images;
}

interface OperandJson {
  operand: Operand;
}
const isOperand = (a: unknown): a is OperandJson => !!a && typeof a === 'object' && 'operand' in (a as object);

/** Runs a traced graph's calls again on another input of the same shape. */
class Replay {
  readonly temps: Float32Array[];

  constructor(private readonly g: GraphTrace) {
    this.temps = g.rec.temps.map((t) => new Float32Array(t.length));
  }

  array(o: Operand, input: Float32Array): Float32Array | Int32Array {
    const whole = (a: Float32Array | Int32Array) =>
      o.offset === 0 && o.len === a.length ? a : a.subarray(o.offset, o.offset + o.len);
    switch (o.src) {
      case 'input':
        return whole(input);
      case 'state':
        return whole((this.g.rec.usedState[o.id] as Tensor).data);
      case 'temp':
        return whole(this.temps[o.id]);
      default:
        return this.g.rec.constants[o.id];
    }
  }

  /** Runs every call on `input`; `after(i)` sees the temps after call i. */
  run(input: Float32Array, after: (i: number) => void): void {
    const calls = addon as unknown as Record<string, (...a: unknown[]) => unknown>;
    this.g.rec.steps.forEach((s, i) => {
      const args = s.args.map((a) => {
        if (isOperand(a)) return this.array(a.operand, input);
        if (Array.isArray(a) && a.length > 0 && a.every(isOperand)) return a.map((x) => this.array(x.operand, input));
        return a;
      });
      calls[s.op](...args);
      after(i);
    });
  }
}

/** The written operands of a call, by argument position (as the tracer's WRITES lists them). */
function writesOf(step: { args: unknown[] }, reads: Set<number>): { pos: number; o: Operand }[] {
  const out: { pos: number; o: Operand }[] = [];
  step.args.forEach((a, pos) => {
    if (reads.has(pos)) return;
    if (isOperand(a)) out.push({ pos, o: a.operand });
    else if (Array.isArray(a) && a.length > 0 && a.every(isOperand)) for (const x of a) out.push({ pos, o: x.operand });
  });
  return out;
}

/** Argument positions each call reads (everything else that is an operand is a write). */
const READS: Record<string, number[]> = {
  conv2dForward: [0, 1, 2],
  conv2dForwardFused: [0, 1, 2, 3, 4],
  maxPool2dForwardNoIndices: [0],
  avgPool2dForward: [0],
  adaptiveAvgPool2dForward: [0],
  linearForward: [0, 1, 2],
  activationForward: [1],
  reluInplace: [],
  softmaxForward: [0],
  batchNormFold: [0, 1, 2, 3, 4],
  batchNorm2dForwardEval: [0, 1, 2, 3, 4],
  concatChannels: [0],
  concatChannelsAffine: [0, 4, 5],
  broadcastBinary: [1, 3],
  scale: [0],
  transpose: [0],
  padForward: [0],
  binaryNd: [1, 3],
  sumTo: [0],
  gatherForward: [0, 1],
  matmulBatched: [0, 1],
  lrnForward: [0],
};

/** A quantized version of a float temp: its value, NCHW shape per sample and parameters. */
interface QVal {
  value: number;
  shape: Shape3;
  q: QParams;
  /** The node that wrote it, while nothing else has read it (a ReLU may still fuse into it). */
  producer: ConvNode | null;
}

const shape3 = (s: readonly number[]): Shape3 =>
  s.length >= 4 ? [s[1], s[2], s[3]] : s.length === 2 ? [s[1], 1, 1] : [size(s.slice(1)), 1, 1];

/**
 * Quantizes `model` to int8 after training: traces its eval forward, calibrates the activations
 * on `calibration` (a batch, or an iterable or DataLoader of batches; a few hundred images are
 * enough), and returns a QuantizedModel whose convs and linears run int8 kernels. The model
 * itself is not changed. All calibration batches must have the first batch's shape; others are
 * skipped.
 */
export async function quantize(
  model: Module,
  calibration: Calibration,
  opts: QuantizeOptions = {},
): Promise<QuantizedModel> {
  const kind = opts.observer ?? 'minmax';
  makeObserver(kind, opts.percentile); // validates the options before any work
  const maxBatches = opts.maxBatches ?? Number.POSITIVE_INFINITY;
  const batches = batchesOf(calibration);
  const first = await batches.next();
  if (first.done) throw new Error('quantize: the calibration data is empty');
  const x0 = first.value;
  if (x0.ndim < 2) throw new Error(`quantize: expected calibration batches [N, ...], got [${x0.shape.join(', ')}]`);
  // Fusion on: batch norm already folded into each conv's scale and shift, ReLU and residual in it.
  const g = traceEvalGraph(model, x0, true, 'quantize');

  // Calibration: one observer per written value (call index, argument position), plus the input.
  const observers = new Map<string, Observer>();
  const observe = (key: string, a: Float32Array) => {
    let o = observers.get(key);
    if (!o) {
      o = makeObserver(key === 'input' && kind === 'entropy' ? 'minmax' : kind, opts.percentile);
      observers.set(key, o);
    }
    o.observe(a);
  };
  const replay = new Replay(g);
  const writes = g.rec.steps.map((s) => writesOf(s, new Set(READS[s.op] ?? [])));
  const calibrate = (x: Tensor) => {
    observe('input', x.data);
    replay.run(x.data, (i) => {
      if (g.rec.steps[i].op === 'batchNormFold') return;
      for (const w of writes[i]) observe(`${i}:${w.pos}`, replay.array(w.o, x.data) as Float32Array);
    });
  };
  let used = 0;
  let skipped = 0;
  noGrad(() => calibrate(x0));
  used++;
  for await (const x of batches) {
    if (used >= maxBatches) break;
    if (x.shape.join() !== x0.shape.join()) {
      skipped++;
      continue;
    }
    calibrate(x);
    used++;
  }
  const params = (key: string): QParams => {
    const o = observers.get(key);
    if (!o) throw new Error(`quantize: no observation for ${key}`);
    return o.qparams();
  };
  const built = new Builder(g, replay, x0, params).build();
  return Object.assign(built, { calibration: { batches: used, skipped, observer: kind } });
}

type ConvNode = Extract<QNode, { op: 'conv' }>;

class Builder {
  private readonly nodes: QNode[] = [];
  private readonly buffers = new Map<string, Float32Array>();
  private readonly bufferSpecs: QuantizedGraph['buffers'] = {};
  private values = 1;
  /** Per float temp: its quantized version and its float version (value ids), when current. */
  private readonly qv = new Map<number, QVal>();
  private readonly fv = new Map<number, number>();
  /** Shape per sample of each temp, where a call told it. */
  private readonly shapes = new Map<number, Shape3>();
  /** Where each temp was last written (the observer's key). */
  private readonly writer = new Map<number, string>();
  private readonly readers = new Map<number, number>();
  private readonly skip = new Set<number>();
  private floatCalls = 0;
  private readonly n: number;

  constructor(
    private readonly g: GraphTrace,
    private readonly replay: Replay,
    private readonly x0: Tensor,
    private readonly params: (key: string) => QParams,
  ) {
    this.n = x0.shape[0];
    for (const s of g.rec.steps) {
      const reads = READS[s.op] ?? [];
      for (const pos of reads) {
        const a = s.args[pos];
        const ops = isOperand(a) ? [a] : Array.isArray(a) ? a.filter(isOperand) : [];
        for (const o of ops)
          if (o.operand.src === 'temp') this.readers.set(o.operand.id, (this.readers.get(o.operand.id) ?? 0) + 1);
      }
    }
  }

  private newValue(): number {
    return this.values++;
  }

  private addBuffer(name: string, dtype: 'int8' | 'int32' | 'float32', shape: number[], data: Float32Array): string {
    this.buffers.set(name, data);
    this.bufferSpecs[name] = { dtype, shape };
    return name;
  }

  /** The float values an operand holds now (a weight, a folded scale: never the input). */
  private constant(o: Operand): Float32Array {
    return this.replay.array(o, this.x0.data) as Float32Array;
  }

  private isWhole(o: Operand): boolean {
    return o.src === 'input'
      ? o.offset === 0 && o.len === this.x0.size
      : o.src === 'temp' && o.offset === 0 && o.len === this.g.rec.temps[o.id].length;
  }

  /** A uint8 version of the value `o` reads (whole), quantizing a float one if needed. */
  private quantized(o: Operand, shapeHint: Shape3 | null): QVal | null {
    if (!this.isWhole(o)) return null;
    if (o.src === 'input' && this.inputQ) return this.inputQ;
    if (o.src === 'temp') {
      const q = this.qv.get(o.id);
      if (q) {
        q.producer = null;
        return q;
      }
    }
    const shape = shapeHint ?? (o.src === 'input' ? shape3(this.x0.shape) : (this.shapes.get(o.id) ?? null));
    if (!shape) return null;
    const f = o.src === 'input' ? 0 : this.fv.get(o.id);
    if (f === undefined) return null;
    const key = o.src === 'input' ? 'input' : this.writer.get(o.id);
    if (!key) return null;
    const q: QVal = { value: this.newValue(), shape, q: this.params(key), producer: null };
    this.nodes.push({ op: 'quantize', x: f, y: q.value, shape, q: q.q });
    if (o.src === 'temp') this.qv.set(o.id, q);
    else this.inputQ = q;
    return q;
  }

  private inputQ: QVal | null = null;

  /** A float version of what `o` reads (a slice of a whole value when `o` is part of a temp). */
  private floatRef(o: Operand): ValueRef | { buffer: string } {
    if (o.src === 'input') return this.slice(0, o, this.x0.size);
    if (o.src === 'state' || o.src === 'const') {
      const name = `${o.src}_${o.id}`;
      if (!this.buffers.has(name)) {
        const data = o.src === 'state' ? (this.g.rec.usedState[o.id] as Tensor).data : this.g.rec.constants[o.id];
        if (!(data instanceof Float32Array)) throw new Error('quantize: an integer constant in a float call');
        this.addBuffer(name, 'float32', [data.length], data);
      }
      if (o.offset !== 0 || o.len !== this.buffers.get(name)?.length)
        throw new Error('quantize: a slice of a parameter in a float call');
      return { buffer: name };
    }
    let f = this.fv.get(o.id);
    if (f === undefined) {
      const q = this.qv.get(o.id);
      if (!q) throw new Error(`quantize: temp ${o.id} is read before it is written`);
      q.producer = null;
      f = this.newValue();
      this.nodes.push({ op: 'dequantize', x: q.value, y: f, shape: q.shape, q: q.q });
      this.fv.set(o.id, f);
    }
    return this.slice(f, o, this.g.rec.temps[o.id].length);
  }

  private slice(value: number, o: Operand, whole: number): ValueRef {
    return o.offset === 0 && o.len === whole ? { value } : { value, offset: o.offset, len: o.len };
  }

  build(): QuantizedModel {
    const steps = this.g.rec.steps;
    for (let i = 0; i < steps.length; i++) {
      if (this.skip.has(i)) continue;
      const s = steps[i];
      const done = this.int8(i, s.op, s.args);
      if (!done) this.floatCall(i, s.op, s.args);
    }
    // The output, in float.
    const out = this.g.output;
    let outValue: number;
    if (out.src === 'temp' && this.fv.has(out.id) && !this.qv.has(out.id)) outValue = this.fv.get(out.id) as number;
    else {
      const ref = this.floatRef(out);
      if (!('value' in ref) || ref.offset !== undefined) throw new Error('quantize: the output is not a whole value');
      outValue = ref.value;
    }
    const graph: QuantizedGraph = {
      format: 'ferroconv-int8',
      version: 1,
      inputShape: this.x0.shape.slice(1),
      outputShape: this.g.outputShape.slice(1),
      output: outValue,
      values: this.values,
      nodes: this.nodes,
      floatBatch: this.floatCalls > 0 ? this.n : null,
      buffers: this.bufferSpecs,
    };
    return new QuantizedModel(graph, this.buffers);
  }

  /** Emits the int8 nodes of call i; false when it has none (it then runs in float). */
  private int8(i: number, op: string, args: unknown[]): boolean {
    const operand = (k: number) => (isOperand(args[k]) ? (args[k] as OperandJson).operand : null);
    switch (op) {
      case 'batchNormFold':
        return true; // its scale and shift are read as constants by the conv that uses them
      case 'conv2dForward':
      case 'conv2dForwardFused': {
        const fused = op === 'conv2dForwardFused';
        const a = args[fused ? 7 : 4] as {
          inputShape: number[];
          weightShape: number[];
          stride: number[];
          padding: number[];
          dilation: number[];
          groups: number;
        };
        const x = operand(0);
        const out = operand(fused ? 6 : 3);
        if (!x || !out || !this.isWhole(out)) return false;
        const inShape = shape3(a.inputShape);
        const xq = this.quantized(x, inShape);
        if (!xq) return false;
        const [oh, ow] = native.conv2dOutputSize(a);
        const scaleO = fused ? operand(2) : null;
        const shiftO = fused ? operand(3) : operand(2);
        const residualO = fused ? operand(4) : null;
        let residual: QVal | null = null;
        if (residualO) {
          residual = this.quantized(residualO, [a.weightShape[0], oh, ow]);
          if (!residual) return false;
        }
        const w = this.constant(operand(1) as Operand);
        const scale = scaleO ? this.constant(scaleO) : null;
        const shift = shiftO ? this.constant(shiftO) : null;
        this.conv(i, out, xq, w, scale, shift, residual, fused && (args[5] as boolean), {
          inShape,
          outShape: [a.weightShape[0], oh, ow],
          weightShape: a.weightShape as [number, number, number, number],
          stride: a.stride as [number, number],
          padding: a.padding as [number, number, number, number],
          dilation: a.dilation as [number, number],
          groups: a.groups,
          key: `${i}:${fused ? 6 : 3}`,
          columnOrder: null,
        });
        return true;
      }
      case 'linearForward': {
        const a = args[4] as { batch: number; inFeatures: number; outFeatures: number };
        const x = operand(0);
        const out = operand(3);
        if (!x || !out || !this.isWhole(out)) return false;
        const known = x.src === 'temp' ? (this.qv.get(x.id)?.shape ?? this.shapes.get(x.id)) : shape3(this.x0.shape);
        const xq = this.quantized(x, known ?? [a.inFeatures, 1, 1]);
        if (!xq || size(xq.shape) !== a.inFeatures) return false;
        const w = this.constant(operand(1) as Operand);
        const bias = operand(2) ? this.constant(operand(2) as Operand) : null;
        // The NHWC bytes of [C, H, W] are the features in (h, w, c) order: the weight's columns
        // (torch's (c, h, w) flatten order) are permuted to match.
        const [c, h, wd] = xq.shape;
        const order =
          h * wd === 1 ? null : Array.from({ length: a.inFeatures }, (_, k) => (k % c) * h * wd + Math.floor(k / c));
        const xFlat: QVal = { ...xq, shape: [a.inFeatures, 1, 1] };
        this.conv(i, out, xFlat, w, null, bias, null, false, {
          inShape: [a.inFeatures, 1, 1],
          outShape: [a.outFeatures, 1, 1],
          weightShape: [a.outFeatures, a.inFeatures, 1, 1],
          stride: [1, 1],
          padding: [0, 0, 0, 0],
          dilation: [1, 1],
          groups: 1,
          key: `${i}:3`,
          columnOrder: order,
          linear: true,
        });
        return true;
      }
      case 'reluInplace':
      case 'activationForward': {
        if (op === 'activationForward' && args[0] !== 'relu') return false;
        const x = operand(op === 'reluInplace' ? 0 : 1);
        const out = operand(op === 'reluInplace' ? 0 : 2);
        if (!x || !out || x.src !== 'temp' || !this.isWhole(x) || !this.isWhole(out)) return false;
        const q = this.qv.get(x.id);
        if (!q) return false;
        const key = `${i}:${op === 'reluInplace' ? 0 : 2}`;
        const sole = op === 'reluInplace' || this.readers.get(x.id) === 1;
        if (q.producer && sole) {
          // Fused into the conv that wrote it: the conv clamps, at the ReLU's observed range.
          const p = q.producer;
          p.relu = true;
          this.retarget(p, this.params(key));
          q.q = { scale: p.outputScale, zeroPoint: p.outputZeroPoint };
          this.qv.set(out.id, q);
          if (out.id !== x.id) this.qv.delete(x.id);
          this.fv.delete(out.id);
          this.writer.set(out.id, key);
          return true;
        }
        if (op !== 'reluInplace') return false;
        this.nodes.push({ op: 'relu', x: q.value, shape: q.shape, zeroPoint: q.q.zeroPoint });
        q.producer = null;
        this.fv.delete(x.id);
        this.writer.set(x.id, key);
        return true;
      }
      case 'maxPool2dForwardNoIndices':
      case 'avgPool2dForward': {
        const a = args[2] as {
          inputShape: number[];
          kernel: [number, number];
          stride: [number, number];
          padding: [number, number];
          dilation: [number, number];
          ceilMode: boolean;
          countIncludePad?: boolean;
          divisorOverride?: number;
        };
        const x = operand(0);
        const out = operand(1);
        if (!x || !out || !this.isWhole(out)) return false;
        const xq = this.quantized(x, shape3(a.inputShape));
        if (!xq) return false;
        const [oh, ow] = native.pool2dOutputSize(a);
        const y = this.newValue();
        const outShape: Shape3 = [xq.shape[0], oh, ow];
        this.nodes.push({
          op: op === 'avgPool2dForward' ? 'avgpool' : 'maxpool',
          x: xq.value,
          y,
          inShape: xq.shape,
          outShape,
          kernel: a.kernel,
          stride: a.stride,
          padding: a.padding,
          dilation: a.dilation,
          ceilMode: a.ceilMode,
          countIncludePad: a.countIncludePad ?? true,
          divisorOverride: a.divisorOverride ?? null,
          zeroPoint: xq.q.zeroPoint,
        });
        this.setQ(out.id, { value: y, shape: outShape, q: xq.q, producer: null }, `${i}:1`);
        return true;
      }
      case 'adaptiveAvgPool2dForward': {
        const a = args[2] as { inputShape: number[]; outputSize: [number, number] };
        const x = operand(0);
        const out = operand(1);
        if (!x || !out || !this.isWhole(out)) return false;
        const xq = this.quantized(x, shape3(a.inputShape));
        if (!xq) return false;
        const y = this.newValue();
        const outShape: Shape3 = [xq.shape[0], a.outputSize[0], a.outputSize[1]];
        this.nodes.push({ op: 'adaptive', x: xq.value, y, inShape: xq.shape, outShape });
        this.setQ(out.id, { value: y, shape: outShape, q: xq.q, producer: null }, `${i}:1`);
        return true;
      }
      case 'broadcastBinary': {
        const [kindOp, , aShape, , bShape] = args as [string, unknown, number[], unknown, number[]];
        const ao = operand(1);
        const bo = operand(3);
        const out = operand(5);
        if (kindOp !== 'add' || !ao || !bo || !out || !this.isWhole(out) || aShape.join() !== bShape.join())
          return false;
        const s = shape3(aShape);
        const qa = this.quantized(ao, s);
        const qb = this.quantized(bo, s);
        if (!qa || !qb) return false;
        const key = `${i}:5`;
        const qy = this.params(key);
        const y = this.newValue();
        this.nodes.push({ op: 'add', a: qa.value, b: qb.value, y, shape: s, qa: qa.q, qb: qb.q, qy, relu: false });
        this.setQ(out.id, { value: y, shape: s, q: qy, producer: null }, key);
        return true;
      }
      case 'concatChannels': {
        const list = args[0] as OperandJson[];
        const channels = args[1] as number[];
        const plane = args[3] as number;
        const out = operand(4);
        if (!out || !this.isWhole(out)) return false;
        const first = list[0]?.operand;
        const hw0 = first?.src === 'temp' ? (this.qv.get(first.id)?.shape ?? this.shapes.get(first.id)) : null;
        if (!hw0 || hw0[1] * hw0[2] !== plane) return false;
        const qs: QVal[] = [];
        for (let k = 0; k < list.length; k++) {
          const q = this.quantized(list[k].operand, [channels[k], hw0[1], hw0[2]]);
          if (!q) return false;
          qs.push(q);
        }
        const key = `${i}:4`;
        const qy = this.params(key);
        const y = this.newValue();
        const total = channels.reduce((p, c) => p + c, 0);
        this.nodes.push({
          op: 'concat',
          xs: qs.map((q) => q.value),
          y,
          hw: [hw0[1], hw0[2]],
          channels,
          qs: qs.map((q) => q.q),
          qy,
        });
        this.setQ(out.id, { value: y, shape: [total, hw0[1], hw0[2]], q: qy, producer: null }, key);
        return true;
      }
      default:
        return false;
    }
  }

  private setQ(temp: number, q: QVal, key: string): void {
    this.qv.set(temp, q);
    this.fv.delete(temp);
    this.shapes.set(temp, q.shape);
    this.writer.set(temp, key);
  }

  /** Quantizes a conv's (or linear's) weights and emits its node. */
  private conv(
    i: number,
    out: Operand,
    xq: QVal,
    w: Float32Array,
    bnScale: Float32Array | null,
    shift: Float32Array | null,
    residual: QVal | null,
    relu: boolean,
    geo: Pick<ConvNode, 'inShape' | 'outShape' | 'weightShape' | 'stride' | 'padding' | 'dilation' | 'groups'> & {
      /** The observer of the conv's output. */
      key: string;
      /** For a linear after a feature map: the weight column each NHWC feature takes. */
      columnOrder: number[] | null;
      linear?: boolean;
    },
  ): void {
    const oc = geo.weightShape[0];
    const per = w.length / oc;
    const wq = new Int8Array(byteFloats(w.length) * 4);
    const wScale = new Float32Array(oc);
    for (let o = 0; o < oc; o++) {
      const s = bnScale ? bnScale[o] : 1;
      let max = 0;
      for (let k = 0; k < per; k++) max = Math.max(max, Math.abs(w[o * per + k] * s));
      const ws = max > 0 ? max / 127 : 1;
      wScale[o] = ws;
      for (let k = 0; k < per; k++) {
        const src = geo.columnOrder ? geo.columnOrder[k] : k;
        const v = Math.round((w[o * per + src] * s) / ws);
        wq[o * per + k] = Math.max(-127, Math.min(127, v));
      }
    }
    const prefix = `q${i}`;
    const weight = this.addBuffer(`${prefix}_weight`, 'int8', [...geo.weightShape], new Float32Array(wq.buffer));
    let bias: string | null = null;
    if (shift) {
      const b = new Int32Array(oc);
      for (let o = 0; o < oc; o++) {
        const v = Math.round(shift[o] / (xq.q.scale * wScale[o]));
        b[o] = Math.max(-(2 ** 31), Math.min(2 ** 31 - 1, v));
      }
      bias = this.addBuffer(`${prefix}_bias`, 'int32', [oc], new Float32Array(b.buffer));
    }
    this.addBuffer(`${prefix}_wscale`, 'float32', [oc], wScale);
    const mult = this.addBuffer(`${prefix}_mult`, 'float32', [oc], new Float32Array(oc));
    // The graph's output comes out of its last linear (or 1x1-map conv, where NHWC is NCHW) as
    // float directly.
    const floatOutput =
      geo.outShape[1] * geo.outShape[2] === 1 &&
      out.src === 'temp' &&
      this.g.output.src === 'temp' &&
      this.g.output.id === out.id &&
      !this.laterWrites(i, out.id);
    const qy = floatOutput ? { scale: 1, zeroPoint: 0 } : this.params(geo.key);
    const y = this.newValue();
    const node: ConvNode = {
      op: 'conv',
      x: xq.value,
      y,
      weight,
      bias,
      mult,
      residual: residual ? residual.value : null,
      inShape: geo.inShape,
      outShape: geo.outShape,
      weightShape: geo.weightShape,
      stride: geo.stride,
      padding: geo.padding,
      dilation: geo.dilation,
      groups: geo.groups,
      inputZeroPoint: xq.q.zeroPoint,
      outputZeroPoint: qy.zeroPoint,
      residualQ: null,
      relu,
      floatOutput,
      inputScale: xq.q.scale,
      outputScale: qy.scale,
      residualScale: residual ? residual.q.scale : null,
    };
    if (geo.linear) node.linear = true;
    if (residual) node.residualQ = [residual.q.zeroPoint, 0];
    this.nodes.push(node);
    this.retarget(node, qy);
    if (floatOutput) {
      this.fv.set(out.id, y);
      this.qv.delete(out.id);
      this.shapes.set(out.id, geo.outShape);
      this.writer.set(out.id, geo.key);
    } else {
      this.setQ(out.id, { value: y, shape: geo.outShape, q: qy, producer: node }, geo.key);
    }
  }

  private laterWrites(i: number, temp: number): boolean {
    const steps = this.g.rec.steps;
    for (let k = i + 1; k < steps.length; k++) {
      const reads = new Set(READS[steps[k].op] ?? []);
      if (writesOf(steps[k], reads).some((w) => w.o.src === 'temp' && w.o.id === temp)) return true;
    }
    return false;
  }

  /** Sets a conv node's output parameters and recomputes its multipliers from them. */
  private retarget(node: ConvNode, qy: QParams): void {
    const wScale = this.buffers.get(node.weight.replace(/_weight$/, '_wscale')) as Float32Array;
    const mult = this.buffers.get(node.mult) as Float32Array;
    if (node.floatOutput) {
      for (let o = 0; o < mult.length; o++) mult[o] = node.inputScale * wScale[o];
      return;
    }
    node.outputScale = qy.scale;
    node.outputZeroPoint = qy.zeroPoint;
    for (let o = 0; o < mult.length; o++) mult[o] = (node.inputScale * wScale[o]) / qy.scale;
    if (node.residualQ && node.residualScale !== null) node.residualQ[1] = Math.fround(node.residualScale / qy.scale);
  }

  /** Call i in float: its reads dequantized, its writes new float values. */
  private floatCall(i: number, op: string, args: unknown[]): void {
    this.floatCalls++;
    const reads = new Set(READS[op] ?? []);
    if (!READS[op]) throw new Error(`quantize: the kernel call ${op} is not supported in a quantized graph`);
    const allocs: { value: number; len: number }[] = [];
    const written = new Map<number, string>();
    const writeRef = (o: Operand, pos: number): { write: ValueRef } => {
      if (o.src !== 'temp') throw new Error(`quantize: ${op} writes outside its temps`);
      const whole = this.g.rec.temps[o.id].length;
      let v: number;
      if (o.offset === 0 && o.len === whole) {
        v = this.newValue();
        allocs.push({ value: v, len: whole });
      } else {
        // A write into part of a temp updates its float value in place.
        const ref = this.floatRef({ src: 'temp', id: o.id, offset: 0, len: whole });
        v = (ref as ValueRef).value;
      }
      written.set(o.id, `${i}:${pos}`);
      this.fv.set(o.id, v);
      return { write: this.slice(v, o, whole) };
    };
    const mapped = args.map((a, pos) => {
      if (reads.has(pos)) {
        if (isOperand(a)) return { read: this.floatRef(a.operand) };
        if (Array.isArray(a) && a.length > 0 && a.every(isOperand))
          return a.map((x) => ({ read: this.floatRef(x.operand) }));
        return a;
      }
      if (isOperand(a)) return writeRef(a.operand, pos);
      if (Array.isArray(a) && a.length > 0 && a.every(isOperand)) return a.map((x) => writeRef(x.operand, pos));
      return a;
    });
    // Reads resolved as {read: {buffer}} for parameters: flatten to {buffer}.
    const args2 = mapped.map(function flat(a: unknown): unknown {
      if (Array.isArray(a)) return a.map(flat);
      if (a && typeof a === 'object' && 'read' in a && 'buffer' in (a as { read: object }).read)
        return (a as { read: object }).read;
      return a;
    });
    for (const [t, key] of written) {
      this.qv.delete(t);
      this.writer.set(t, key);
    }
    this.nodes.push({ op: 'float', call: op, args: args2, allocs });
  }
}
