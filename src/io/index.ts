// Model and tensor files.
export { loadSafetensors, saveSafetensors, parseSafetensors, serializeSafetensors } from './safetensors.js';
export type { SafetensorsFile, SaveOptions } from './safetensors.js';
export { writeFileAtomic } from './atomic.js';
export { readTorch, readTorchObject, isTorchFile } from './torch.js';
export {
  loadCaffe,
  CaffeNet,
  parsePrototxt,
  parseCaffemodel,
  fillBlob,
  type CaffeNetOptions,
  type CaffeDataLayer,
} from './caffe/import.js';
export {
  CaffeSolver,
  caffeLearningRate,
  caffeObjective,
  parseSolver,
  solverType,
  toCaffemodel,
  type CaffeFeed,
  type CaffeSolverOptions,
  type CaffeSolverType,
} from './caffe/solver.js';
export { loadTfjsLayersModel, TfjsModel, type TfjsArtifacts } from './tfjs.js';
export { loadKeras } from './keras.js';
export { loadOnnx, parseOnnx, OnnxModel, type LoadOnnxOptions } from './onnx/import.js';
export { exportOnnx, toOnnx, type OnnxExportOptions } from './onnx/export.js';
