// Target `onnx`: parseOnnx on the bytes, then (when it loads and its input's declared shape is
// small) a forward on that shape. Every failure must be one of the importer's own Errors
// ('loadOnnx: ...' when reading, 'OnnxModel: ...' when running); an Error from inside a node
// whose cause is a TypeError or RangeError is a bug in the importer, not bad input.
import { parseOnnx } from '../../src/io/onnx/import.js';
import { Tensor } from '../../src/tensor.js';
import { InvariantError, type Target } from '../engine.js';
import { mutateOnnx, ONNX_DICTIONARY } from '../formats/onnx.js';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from '../../src/io/onnx/gen/onnx_pb.js';

/** Largest input a forward is tried on. */
const MAX_INPUT = 1 << 16;

function declaredShape(input: Uint8Array): number[] | null {
  const graph = fromBinary(ModelProtoSchema, input).graph;
  const t = graph?.input[0]?.type?.value;
  if (t?.case !== 'tensorType') return null;
  const dims = t.value.shape?.dim.map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : 1)) ?? [];
  const n = dims.reduce((a, b) => a * b, 1);
  return dims.length && dims.every((d) => Number.isSafeInteger(d) && d > 0) && n <= MAX_INPUT ? dims : null;
}

export function createTarget(): Target {
  return {
    name: 'onnx',
    dictionary: ONNX_DICTIONARY,
    isParserError: (message) => message.startsWith('loadOnnx: ') || message.startsWith('OnnxModel: '),
    extension: () => 'onnx',
    mutate: (input, rng) => mutateOnnx(input, rng),
    execute(input) {
      const model = parseOnnx(input, { dir: null });
      const shape = model.inputNames.length === 1 ? declaredShape(input) : null;
      if (!shape) return;
      model.eval();
      const x = new Tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i)),
        shape,
      );
      try {
        const outs = model.forwardAll(x);
        for (const y of outs) {
          if (y.data.length !== y.shape.reduce((a, b) => a * b, 1)) {
            throw new InvariantError(`an output has shape [${y.shape.join(', ')}] but ${y.data.length} values`);
          }
        }
      } catch (e) {
        const cause = (e as Error).cause;
        if (cause instanceof TypeError || cause instanceof RangeError) throw cause;
        throw e;
      }
    },
  };
}
