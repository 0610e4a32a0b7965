// Structure-aware mutations of ONNX models: the bytes are decoded with the generated protobuf
// code, one part of the model is changed the way a broken or hostile file would be (dims,
// data types and raw data of initializers, node inputs and outputs rewired into cycles or
// dangling names, operator types swapped, attributes set to extreme values, nodes dropped or
// duplicated), and the model is encoded again.
import { clone, create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProto_AttributeType as AttrType,
  AttributeProtoSchema,
  type ModelProto,
  ModelProtoSchema,
  NodeProtoSchema,
  TensorProto_DataLocation,
  StringStringEntryProtoSchema,
} from '../../src/io/onnx/gen/onnx_pb.js';
import { utf8 } from '../mutate.js';
import type { Prng } from '../prng.js';

const OPS = [
  'Conv',
  'ConvTranspose',
  'BatchNormalization',
  'Relu',
  'Clip',
  'MaxPool',
  'AveragePool',
  'GlobalAveragePool',
  'Gemm',
  'MatMul',
  'Add',
  'Mul',
  'Div',
  'Concat',
  'Split',
  'Slice',
  'Flatten',
  'Reshape',
  'Transpose',
  'Squeeze',
  'Unsqueeze',
  'Pad',
  'Shape',
  'Gather',
  'Softmax',
  'ReduceMean',
  'Constant',
  'Identity',
  'LRN',
  'Sub',
  'Dropout',
  'ConvTranspose',
  'Erf',
];
const ATTRS = [
  'kernel_shape',
  'pads',
  'strides',
  'dilations',
  'group',
  'axis',
  'perm',
  'axes',
  'size',
  'transB',
  'to',
  'mode',
  'ceil_mode',
  'count_include_pad',
  'auto_pad',
  'output_shape',
  'output_padding',
  'storage_order',
  'training_mode',
];
const EXTREME = [0n, 1n, -1n, 2n, 3n, 7n, 1n << 31n, -(1n << 31n), 1n << 40n, (1n << 63n) - 1n];

export const ONNX_DICTIONARY: readonly Uint8Array[] = [...OPS, ...ATTRS, 'ai.onnx', 'input', 'output'].map(utf8);

function decode(input: Uint8Array): ModelProto | null {
  try {
    return fromBinary(ModelProtoSchema, input);
  } catch {
    return null;
  }
}

export function mutateOnnx(input: Uint8Array, rng: Prng): Uint8Array | null {
  const model = decode(input);
  const graph = model?.graph;
  if (!model || !graph) return null;
  const nodes = graph.node;
  const inits = graph.initializer;
  const names = [...nodes.flatMap((n) => [...n.input, ...n.output]), ...inits.map((t) => t.name), 'nowhere', ''];
  switch (rng.int(10)) {
    case 0: {
      const t = inits.length ? rng.pick(inits) : null;
      if (!t) return null;
      if (t.dims.length && rng.chance(0.7)) t.dims[rng.int(t.dims.length)] = rng.pick(EXTREME);
      else t.dims.push(rng.pick(EXTREME));
      break;
    }
    case 1: {
      const t = inits.length ? rng.pick(inits) : null;
      if (!t) return null;
      if (rng.chance(0.5)) t.rawData = t.rawData.subarray(0, rng.int(t.rawData.length + 1));
      else t.dataType = rng.int(20);
      break;
    }
    case 2: {
      const n = nodes.length ? rng.pick(nodes) : null;
      if (!n || n.input.length === 0) return null;
      n.input[rng.int(n.input.length)] = rng.pick(names);
      break;
    }
    case 3: {
      const n = nodes.length ? rng.pick(nodes) : null;
      if (!n || n.output.length === 0) return null;
      n.output[rng.int(n.output.length)] = rng.pick(names);
      break;
    }
    case 4: {
      const n = nodes.length ? rng.pick(nodes) : null;
      if (!n) return null;
      n.opType = rng.pick(OPS);
      break;
    }
    case 5: {
      const n = nodes.length ? rng.pick(nodes) : null;
      if (!n) return null;
      const name = rng.pick(ATTRS);
      const ints = Array.from({ length: rng.int(9) }, () => rng.pick(EXTREME));
      const a = rng.chance(0.5)
        ? create(AttributeProtoSchema, { name, type: AttrType.INTS, ints })
        : create(AttributeProtoSchema, { name, type: rng.int(15), i: rng.pick(EXTREME), f: rng.float() * 1e9 });
      n.attribute = [...n.attribute.filter((x) => x.name !== name), a];
      break;
    }
    case 6:
      if (!nodes.length) return null;
      nodes.splice(rng.int(nodes.length), 1);
      break;
    case 7:
      if (!nodes.length) return null;
      nodes.splice(rng.int(nodes.length + 1), 0, clone(NodeProtoSchema, rng.pick(nodes)));
      break;
    case 8: {
      const t = inits.length ? rng.pick(inits) : null;
      if (!t) return null;
      // External data that points outside the folder, at a missing file, or past its end.
      t.dataLocation = TensorProto_DataLocation.EXTERNAL;
      t.externalData = [
        create(StringStringEntryProtoSchema, {
          key: 'location',
          value: rng.pick(['../x.bin', '/etc/hostname', 'w.bin']),
        }),
        create(StringStringEntryProtoSchema, { key: 'offset', value: String(rng.pick(EXTREME)) }),
      ];
      break;
    }
    default:
      model.opsetImport = [
        {
          $typeName: 'onnx.OperatorSetIdProto',
          domain: rng.pick(['', 'ai.onnx', 'com.x']),
          version: rng.pick(EXTREME),
        },
      ];
  }
  return toBinary(ModelProtoSchema, model);
}
