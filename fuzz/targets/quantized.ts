// Target `quantized`: parseQuantized (QuantizedModel's file: safetensors with I8/I32/F32 buffers
// and the int8 graph as JSON in its metadata), then, when the model is small enough, one forward
// on zeros of its input shape. Whatever the bytes, both give a model and an output or an Error
// (from the file's checks, or from a kernel's argument checks at run time); never a crash.
import { parseQuantized } from '../../src/quant/model.js';
import { Tensor } from '../../src/tensor.js';
import type { Target } from '../engine.js';
import { mutateSafetensors, SAFETENSORS_DICTIONARY } from '../formats/safetensors.js';

const NAME = 'fuzz-input';
/** Input values a forward may take: keeps every run well under a second. */
const RUN_LIMIT = 1 << 14;

const DICTIONARY = [
  ...SAFETENSORS_DICTIONARY,
  ...['"op"', '"conv"', '"float"', '"concat"', '"values"', '"nodes"', '"inShape"', '"floatBatch"', '"residual"'].map(
    (s) => new TextEncoder().encode(s),
  ),
];

/** Errors a bad file may give: the loader's, the safetensors reader's, the graph's and the kernels'. */
const PREFIXES = [
  `loadQuantized ${NAME}: `,
  `safetensors ${NAME}: `,
  'QuantizedModel: ',
  'quantize',
  'dequantize',
  'qconv2d',
  'maxPool2dU8',
  'avgPool2dU8',
  'adaptiveAvgPool2dU8',
  'addU8',
  'concatU8',
  'reluU8',
  'pool2d',
  'conv2d',
  'kernel',
  'input',
  'padding',
  'inputShape',
  'weightShape',
  'stride',
  'dilation',
  'groups',
  'outputSize',
];

export function createTarget(): Target {
  return {
    name: 'quantized',
    dictionary: DICTIONARY,
    isParserError: (message) => PREFIXES.some((p) => message.startsWith(p)),
    extension: () => 'safetensors',
    mutate: (input, rng) => mutateSafetensors(input, rng),
    execute(input) {
      const q = parseQuantized(input, NAME);
      const per = q.graph.inputShape;
      const n = per.reduce((a, b) => a * b, 1);
      if (n === 0 || n > RUN_LIMIT) return;
      const y = q.forward(new Tensor(new Float32Array(n), [1, ...per]));
      if (!(y.data instanceof Float32Array)) throw new Error('QuantizedModel: the output is not float');
    },
  };
}
