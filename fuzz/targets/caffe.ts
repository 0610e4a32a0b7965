// Target `caffe`: a net definition (prototxt text) or a caffemodel (binary NetParameter, which
// holds the layers' definitions as well as their blobs) through loadCaffe's reader, then, when the
// net loads and declares a small input, a forward. Every failure must be the importer's own Error
// ('loadCaffe: ...' reading, 'CaffeNet: ...' running).
import { CaffeNet, parseCaffemodel, parsePrototxt } from '../../src/io/caffe/import.js';
import type { Target } from '../engine.js';
import { forwardDeclared } from './forward.js';
import { utf8 } from '../mutate.js';

const WORDS = [
  'layer {',
  'layers {',
  '}',
  'name: "x"',
  'type: "Convolution"',
  'type: "Pooling"',
  'type: "InnerProduct"',
  'type: "Eltwise"',
  'type: "Slice"',
  'type: "BatchNorm"',
  'type: "Input"',
  'bottom: "data"',
  'top: "data"',
  'convolution_param { num_output: 4 kernel_size: 3 }',
  'pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }',
  'input_param { shape { dim: 1 dim: 2 dim: 5 dim: 5 } }',
  'include { phase: TRAIN }',
  'slice_point: 1',
  'global_pooling: true',
];

export function createTarget(): Target {
  return {
    name: 'caffe',
    dictionary: WORDS.map(utf8),
    isParserError: (message) => message.startsWith('loadCaffe: ') || message.startsWith('CaffeNet: '),
    extension: (input) => (input[0] === 0x0a ? 'caffemodel' : 'prototxt'),
    execute(input) {
      // A caffemodel starts with a length-delimited field (name = 1 or layer = 100); text with a letter.
      const binary = input.length > 0 && (input[0] === 0x0a || input[0] === 0xa2 || input[0] === 0x12);
      const def = binary ? parseCaffemodel(input) : parsePrototxt(new TextDecoder().decode(input));
      const net = new CaffeNet(def);
      if (binary) net.loadWeights(def, false);
      net.eval();
      forwardDeclared(net);
    },
  };
}
