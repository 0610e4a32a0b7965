// A QuantizedModel as an ONNX file in the QDQ format: float operators (Conv, Gemm, Add, Relu,
// pools, Concat) with every quantized tensor written as QuantizeLinear -> DequantizeLinear at the
// scale and zero point ferroconv computes it with, int8 weights behind a per-channel
// DequantizeLinear (axis 0) and int32 biases behind one at x_scale * w_scale. ONNX Runtime turns
// each such pattern into its integer kernels (QLinearConv, QGemm, QLinearAdd, ...). The graph is
// NCHW, as every ONNX graph: a linear layer after a feature map gets a Flatten and its weight's
// columns back in (c, h, w) order (ferroconv keeps them in its NHWC order).
import { create } from '@bufbuild/protobuf';
import { writeFileAtomic } from '../io/atomic.js';
import {
  GraphProtoSchema,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  type TensorProto,
  TensorProtoSchema,
} from '../io/onnx/gen/onnx_pb.js';
import { type AttrValue, attribute, DataType, encodeModel, floatTensor, valueInfo } from '../io/onnx/proto.js';
import type { QNode, QuantizedModel, Shape3 } from './model.js';
import type { QParams } from './observers.js';

export interface QdqExportOptions {
  /** ONNX opset, 13 to 17 (default 17). */
  opset?: number;
  /** Leave the batch dimension symbolic (default false: the batch of `batch`). */
  dynamicBatch?: boolean;
  /** The batch size written in the input's shape (default 1). */
  batch?: number;
}

interface Value {
  /** The float tensor (a DequantizeLinear's output for a quantized value). */
  name: string;
  shape: Shape3;
  /** Rank in the ONNX graph: a feature map [N, C, H, W] or features [N, F]. */
  rank: 4 | 2;
  q: QParams | null;
}

class Writer {
  readonly nodes: NodeProto[] = [];
  readonly inits: TensorProto[] = [];
  private count = 0;

  fresh(prefix: string): string {
    return `${prefix}_${this.count++}`;
  }

  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, out?: string): string {
    const output = out ?? this.fresh(op);
    this.nodes.push(
      create(NodeProtoSchema, {
        opType: op,
        name: this.fresh(`${op}_node`),
        input: inputs,
        output: [output],
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return output;
  }

  raw(name: string, dataType: DataType, dims: number[], bytes: Uint8Array): string {
    this.inits.push(create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType, rawData: bytes }));
    return name;
  }

  float(name: string, dims: number[], data: Float32Array): string {
    this.inits.push(floatTensor(name, dims, data));
    return name;
  }

  /** x -> QuantizeLinear -> DequantizeLinear at `q` (uint8): a quantized tensor in QDQ form. */
  qdq(x: string, q: QParams): string {
    const s = this.float(this.fresh('scale'), [], Float32Array.of(q.scale));
    const z = this.raw(this.fresh('zero_point'), DataType.UINT8, [], Uint8Array.of(q.zeroPoint));
    const qx = this.node('QuantizeLinear', [x, s, z]);
    return this.node('DequantizeLinear', [qx, s, z]);
  }
}

/** The model's bytes as an ONNX QDQ graph. Throws for graphs with float calls (not exported yet). */
export function quantizedToOnnx(model: QuantizedModel, opts: QdqExportOptions = {}): Uint8Array[] {
  const { opset = 17, dynamicBatch = false, batch = 1 } = opts;
  if (!Number.isInteger(opset) || opset < 13 || opset > 17) {
    throw new Error(`exportOnnx: opset: expected an integer from 13 to 17, got ${opset}`);
  }
  const g = model.graph;
  if (g.inputShape.length !== 3) throw new Error('exportOnnx: a QDQ export needs an image input [N, C, H, W]');
  const w = new Writer();
  const bufs = model.bufferData();
  const values = new Map<number, Value>();
  values.set(0, { name: 'input', shape: g.inputShape as Shape3, rank: 4, q: null });
  const get = (v: number): Value => {
    const x = values.get(v);
    if (!x) throw new Error(`exportOnnx: value ${v} is read before it is written`);
    return x;
  };
  for (const n of g.nodes) emit(w, n, get, values, bufs);
  const out = get(g.output);
  const outName = w.node('Identity', [out.name], {}, 'output');
  const batchDim = dynamicBatch ? 'batch' : batch;
  const outDims = [batchDim, ...g.outputShape];
  const graph = create(GraphProtoSchema, {
    name: 'ferroconv-int8',
    node: w.nodes,
    initializer: w.inits,
    input: [valueInfo('input', [batchDim, ...g.inputShape])],
    output: [valueInfo(outName, outDims)],
  });
  return encodeModel(
    create(ModelProtoSchema, {
      irVersion: 8n,
      producerName: 'ferroconv',
      opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: BigInt(opset) })],
      graph,
    }),
  );
}

/** Writes quantizedToOnnx's bytes to `path` atomically. */
export function exportQuantizedOnnx(model: QuantizedModel, path: string, opts: QdqExportOptions = {}): void {
  writeFileAtomic(path, quantizedToOnnx(model, opts));
}

function emit(
  w: Writer,
  n: QNode,
  get: (v: number) => Value,
  values: Map<number, Value>,
  bufs: Map<string, Float32Array>,
): void {
  const same = (x: Value, name: string, shape: Shape3, rank: 4 | 2 = x.rank): Value => ({ name, shape, rank, q: x.q });
  switch (n.op) {
    case 'quantize': {
      const x = get(n.x);
      values.set(n.y, { name: w.qdq(x.name, n.q), shape: n.shape, rank: x.rank, q: n.q });
      return;
    }
    case 'dequantize':
      values.set(n.y, { ...get(n.x), q: null });
      return;
    case 'conv': {
      const x = get(n.x);
      const oc = n.weightShape[0];
      const per = n.weightShape[1] * n.weightShape[2] * n.weightShape[3];
      const wq = new Int8Array(bufs.get(n.weight)!.buffer, bufs.get(n.weight)!.byteOffset, oc * per);
      const wScale = bufs.get(n.weight.replace(/_weight$/, '_wscale')) as Float32Array;
      const linear = n.linear === true;
      let weight = wq;
      let dims: number[] = [...n.weightShape];
      let input = x.name;
      if (linear) {
        // Gemm's weight is [out, features]; the features of a feature map in (c, h, w) order.
        const [c, h, wd] = x.shape;
        const k = c * h * wd;
        dims = [oc, k];
        if (h * wd > 1) {
          weight = new Int8Array(oc * k);
          for (let o = 0; o < oc; o++) {
            for (let kk = 0; kk < k; kk++) weight[o * k + (kk % c) * h * wd + Math.floor(kk / c)] = wq[o * k + kk];
          }
        }
        if (x.rank === 4) input = w.node('Flatten', [x.name], { axis: 1 });
      }
      const wName = w.raw(
        w.fresh(`${n.weight}`),
        DataType.INT8,
        dims,
        new Uint8Array(weight.buffer, weight.byteOffset, weight.length),
      );
      const ws = w.float(w.fresh(`${n.weight}_scale`), [oc], wScale);
      const wz = w.raw(w.fresh(`${n.weight}_zero_point`), DataType.INT8, [oc], new Uint8Array(oc));
      const wf = w.node('DequantizeLinear', [wName, ws, wz], { axis: 0 });
      const inputs = [input, wf];
      if (n.bias) {
        const b = bufs.get(n.bias) as Float32Array;
        const bs = new Float32Array(oc);
        for (let o = 0; o < oc; o++) bs[o] = n.inputScale * wScale[o];
        const bName = w.raw(w.fresh(n.bias), DataType.INT32, [oc], new Uint8Array(b.buffer, b.byteOffset, oc * 4));
        const bsName = w.float(w.fresh(`${n.bias}_scale`), [oc], bs);
        const bz = w.raw(w.fresh(`${n.bias}_zero_point`), DataType.INT32, [oc], new Uint8Array(oc * 4));
        inputs.push(w.node('DequantizeLinear', [bName, bsName, bz], { axis: 0 }));
      }
      let y: string;
      if (linear) {
        y = w.node('Gemm', inputs, { transB: 1 });
      } else {
        const [top, bottom, left, right] = n.padding;
        y = w.node('Conv', inputs, {
          kernel_shape: [n.weightShape[2], n.weightShape[3]],
          strides: n.stride,
          pads: [top, left, bottom, right],
          dilations: n.dilation,
          group: n.groups,
        });
      }
      if (n.residual !== null) y = w.node('Add', [y, get(n.residual).name]);
      if (n.relu) y = w.node('Relu', [y]);
      const rank = linear ? 2 : 4;
      if (n.floatOutput) {
        values.set(n.y, { name: y, shape: n.outShape, rank, q: null });
      } else {
        const q = { scale: n.outputScale, zeroPoint: n.outputZeroPoint };
        values.set(n.y, { name: w.qdq(y, q), shape: n.outShape, rank, q });
      }
      return;
    }
    case 'maxpool':
    case 'avgpool': {
      const x = get(n.x);
      if (!x.q) throw new Error('exportOnnx: a pool of a float value');
      if (n.op === 'avgpool' && n.divisorOverride !== null)
        throw new Error('exportOnnx: avg pool with divisorOverride has no ONNX operator');
      const attrs: Record<string, AttrValue> = {
        kernel_shape: n.kernel,
        strides: n.stride,
        pads: [n.padding[0], n.padding[1], n.padding[0], n.padding[1]],
        ceil_mode: n.ceilMode ? 1 : 0,
      };
      if (n.op === 'maxpool') attrs.dilations = n.dilation;
      else attrs.count_include_pad = n.countIncludePad ? 1 : 0;
      const y = w.node(n.op === 'maxpool' ? 'MaxPool' : 'AveragePool', [x.name], attrs);
      values.set(n.y, same(x, w.qdq(y, x.q), n.outShape));
      return;
    }
    case 'adaptive': {
      const x = get(n.x);
      if (!x.q) throw new Error('exportOnnx: a pool of a float value');
      const [, ih, iw] = n.inShape;
      const [, oh, ow] = n.outShape;
      let y: string;
      if (oh === 1 && ow === 1) y = w.node('GlobalAveragePool', [x.name]);
      else if (ih % oh === 0 && iw % ow === 0) {
        const k = [ih / oh, iw / ow];
        y = w.node('AveragePool', [x.name], { kernel_shape: k, strides: k });
      } else throw new Error(`exportOnnx: adaptive average pool ${ih}x${iw} -> ${oh}x${ow} has no ONNX operator`);
      values.set(n.y, same(x, w.qdq(y, x.q), n.outShape));
      return;
    }
    case 'add': {
      const a = get(n.a);
      let y = w.node('Add', [a.name, get(n.b).name]);
      if (n.relu) y = w.node('Relu', [y]);
      values.set(n.y, { name: w.qdq(y, n.qy), shape: n.shape, rank: a.rank, q: n.qy });
      return;
    }
    case 'concat': {
      const xs = n.xs.map(get);
      const y = w.node(
        'Concat',
        xs.map((x) => x.name),
        { axis: 1 },
      );
      const total = n.channels.reduce((s, c) => s + c, 0);
      values.set(n.y, { name: w.qdq(y, n.qy), shape: [total, n.hw[0], n.hw[1]], rank: 4, q: n.qy });
      return;
    }
    case 'relu': {
      const x = get(n.x);
      const q = x.q ?? { scale: 1, zeroPoint: 0 };
      values.set(n.x, same(x, w.qdq(w.node('Relu', [x.name]), q), x.shape));
      return;
    }
    case 'float':
      throw new Error(
        `exportOnnx: the graph runs ${n.call} in float; a QDQ export of such a graph is not supported yet`,
      );
  }
}
