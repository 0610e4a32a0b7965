// Model and tensor files.
export { loadSafetensors, saveSafetensors, parseSafetensors, serializeSafetensors } from './safetensors.js';
export type { SafetensorsFile, SaveOptions } from './safetensors.js';
export { writeFileAtomic } from './atomic.js';
