// Smaller and faster models: int8 post-training quantization (quantize), its observers, and the
// QuantizedModel it makes.
export { quantize, type QuantizeOptions, type Calibration } from './quantize.js';
export {
  QuantizedModel,
  loadQuantized,
  parseQuantized,
  serializeQuantized,
  type QuantizedGraph,
  type QNode,
} from './model.js';
export {
  MinMaxObserver,
  HistogramObserver,
  makeObserver,
  affineParams,
  type Observer,
  type ObserverKind,
  type QParams,
} from './observers.js';
export { quantizedToOnnx, exportQuantizedOnnx, type QdqExportOptions } from './onnx.js';
export { prune, pruneReport, Pruning, type PruneOptions, type PruneReport } from './prune.js';
export { prepareQat, convertQat, fakeQuantize, fakeQuantizeWeight, FakeQuantize } from './qat.js';
export {
  pruneChannels,
  resizeToWeights,
  type ChannelPruneOptions,
  type ChannelPruneResult,
} from './prune-channels.js';
