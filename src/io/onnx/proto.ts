// ONNX protobuf helpers shared by the exporter and the importer: tensors to and from float32
// arrays, attributes by name. The message types are generated from onnx.proto (gen/, made by
// `npm run gen:onnx` with protoc-gen-es); nothing here parses protobuf by hand.
import { create, toBinary } from '@bufbuild/protobuf';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import {
  type AttributeProto,
  AttributeProto_AttributeType as AttrType,
  AttributeProtoSchema,
  GraphProtoSchema,
  type ModelProto,
  ModelProtoSchema,
  type NodeProto,
  type TensorProto,
  TensorProto_DataType as DataType,
  TensorProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  type ValueInfoProto,
  ValueInfoProtoSchema,
} from './gen/onnx_pb.js';

export { AttrType, DataType };

/** A float32 initializer: the array's bytes as raw_data (little-endian, as ONNX stores them). */
export function floatTensor(name: string, dims: readonly number[], data: Float32Array): TensorProto {
  return create(TensorProtoSchema, {
    name,
    dims: dims.map(BigInt),
    dataType: DataType.FLOAT,
    rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
  });
}

/** An int64 initializer (Reshape's shape, Pad's pads, ...). */
export function int64Tensor(name: string, values: readonly number[]): TensorProto {
  return create(TensorProtoSchema, {
    name,
    dims: [BigInt(values.length)],
    dataType: DataType.INT64,
    int64Data: values.map(BigInt),
  });
}

/** A node attribute from a JavaScript value: integer, float, string, or a list of ints/floats. */
export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };

export function attribute(name: string, v: AttrValue): AttributeProto {
  if (typeof v === 'string') {
    return create(AttributeProtoSchema, { name, type: AttrType.STRING, s: new TextEncoder().encode(v) });
  }
  if (typeof v === 'number') {
    return Number.isInteger(v)
      ? create(AttributeProtoSchema, { name, type: AttrType.INT, i: BigInt(v) })
      : create(AttributeProtoSchema, { name, type: AttrType.FLOAT, f: v });
  }
  if (Array.isArray(v)) return create(AttributeProtoSchema, { name, type: AttrType.INTS, ints: v.map(BigInt) });
  if ('float' in v) return create(AttributeProtoSchema, { name, type: AttrType.FLOAT, f: v.float });
  return create(AttributeProtoSchema, { name, type: AttrType.FLOATS, floats: v.floats });
}

/** A float tensor's value info; a string dimension is symbolic (a dynamic batch). */
export function valueInfo(name: string, dims: readonly (number | string)[]): ValueInfoProto {
  const shape = create(TensorShapeProtoSchema, {
    dim: dims.map((d) =>
      create(TensorShapeProto_DimensionSchema, {
        value: typeof d === 'string' ? { case: 'dimParam', value: d } : { case: 'dimValue', value: BigInt(d) },
      }),
    ),
  });
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType: DataType.FLOAT, shape }) },
    }),
  });
}

/** The attribute of `node` named `name`, if present. */
export function findAttribute(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name);
}

/**
 * A ModelProto's bytes as chunks, with every initializer's raw_data left in place as a view of
 * the weights: serializing a model of several hundred megabytes in one toBinary call copies the
 * weights once per nesting level (tensor, graph, model). A message's fields may come in any
 * order and a repeated message field is a run of (tag, length, bytes) records (the protobuf
 * wire format), so the graph's initializers and each tensor's raw_data are appended as such
 * records after the rest of their message, which protobuf-es serializes.
 */
export function encodeModel(model: ModelProto): Uint8Array[] {
  const graph = model.graph;
  if (!graph) return [toBinary(ModelProtoSchema, model)];
  const inits = graph.initializer;
  const rest = create(GraphProtoSchema, { ...graph, initializer: [] });
  const graphChunks: Uint8Array[] = [toBinary(GraphProtoSchema, rest)];
  for (const t of inits) {
    const raw = t.rawData;
    // Our float initializers have only these fields besides raw_data.
    const fields = { name: t.name, dims: t.dims, dataType: t.dataType };
    const meta = toBinary(TensorProtoSchema, raw.length ? create(TensorProtoSchema, fields) : t);
    const rawHead = raw.length ? lengthPrefix(9, raw.length) : new Uint8Array(0);
    const tensorLen = meta.length + rawHead.length + raw.length;
    graphChunks.push(lengthPrefix(5, tensorLen), meta, rawHead, raw);
  }
  const graphLen = graphChunks.reduce((s, c) => s + c.length, 0);
  const head = toBinary(ModelProtoSchema, create(ModelProtoSchema, { ...model, graph: undefined }));
  return [head, lengthPrefix(7, graphLen), ...graphChunks].filter((c) => c.length > 0);
}

/** The tag and length of a length-delimited field `field` holding `len` bytes. */
function lengthPrefix(field: number, len: number): Uint8Array {
  return new BinaryWriter().tag(field, WireType.LengthDelimited).uint32(len).finish();
}
