// Target `keras`: a Keras model file, a .keras zip or a legacy HDF5 .h5, as bytes through
// loadKeras (fflate for the zip, h5wasm for HDF5), then, when it loads and declares a small
// input, a forward. Byte-level mutation reaches the zip's and HDF5's headers, B-trees and
// attributes; every failure must be the importer's own Error ('loadKeras: ...' reading,
// 'loadTfjsLayersModel: ...' building the layers, 'TfjsModel: ...' running).
import { loadKeras } from '../../src/io/keras.js';
import type { Target } from '../engine.js';
import { forwardDeclared } from './forward.js';
import { utf8 } from '../mutate.js';

export function createTarget(): Target {
  return {
    name: 'keras',
    dictionary: ['model_config', 'model_weights', 'layer_names', 'weight_names', 'Conv2D', 'kernel', 'vars'].map(utf8),
    isParserError: (message) =>
      message.startsWith('loadKeras: ') ||
      message.startsWith('loadTfjsLayersModel: ') ||
      message.startsWith('TfjsModel: '),
    extension: (input) => (input[0] === 0x50 ? 'keras' : 'h5'),
    async execute(input) {
      // A hang shows as the reader's own timeout Error, well inside the harness's 3 s hang limit.
      const model = await loadKeras(input, { timeoutMs: 1500 });
      forwardDeclared(model);
    },
  };
}
