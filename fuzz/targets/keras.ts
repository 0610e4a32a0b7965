// Target `keras`: a Keras model file, a .keras zip or a legacy HDF5 .h5, as bytes through
// loadKeras (fflate for the zip, h5wasm for HDF5), then, when it loads and declares a small
// input, a forward. Byte-level mutation reaches the zip's and HDF5's headers, B-trees and
// attributes; every failure must be the importer's own Error ('loadKeras: ...' reading,
// 'loadTfjsLayersModel: ...' building the layers, 'TfjsModel: ...' running).
import { loadKeras } from '../../src/io/keras.js';
import { Tensor } from '../../src/tensor.js';
import { InvariantError, type Target } from '../engine.js';
import { utf8 } from '../mutate.js';

const MAX_INPUT = 1 << 14;

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
      const shape = model.inputShapes[0];
      if (model.inputNames.length !== 1 || !shape) return;
      if (!shape.every((d) => Number.isSafeInteger(d) && d > 0)) return;
      const n = shape.reduce((a, b) => a * b, 1);
      if (n > MAX_INPUT) return;
      const x = new Tensor(
        Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
        shape,
      );
      for (const y of model.forwardAll(x)) {
        if (y.data.length !== y.shape.reduce((a, b) => a * b, 1))
          throw new InvariantError('an output does not fit its shape');
      }
    },
  };
}
