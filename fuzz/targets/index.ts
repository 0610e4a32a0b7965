// The fuzz targets by name. Each module is loaded only when its target runs (image-folder loads
// sharp, checkpoint builds a network).
import type { Target } from '../engine.js';

export const TARGET_NAMES = [
  'safetensors',
  'checkpoint',
  'idx',
  'image-folder',
  'plan',
  'onnx',
  'torch',
  'caffe',
  'caffe-solver',
  'tfjs',
  'keras',
  'quantized',
  'tune-cache',
] as const;

/** Creates a target; its temporary files go under workDir (default: /dev/shm or the OS temp folder). */
export async function createTarget(name: string, opts: { workDir?: string } = {}): Promise<Target> {
  switch (name) {
    case 'safetensors':
      return (await import('./safetensors.js')).createTarget();
    case 'checkpoint':
      return (await import('./checkpoint.js')).createTarget(opts);
    case 'idx':
      return (await import('./idx.js')).createTarget(opts);
    case 'image-folder':
      return (await import('./image-folder.js')).createTarget(opts);
    case 'plan':
      return (await import('./plan.js')).createTarget();
    case 'onnx':
      return (await import('./onnx.js')).createTarget();
    case 'torch':
      return (await import('./torch.js')).createTarget();
    case 'caffe':
      return (await import('./caffe.js')).createTarget();
    case 'caffe-solver':
      return (await import('./caffe-solver.js')).createTarget();
    case 'tfjs':
      return (await import('./tfjs.js')).createTarget();
    case 'keras':
      return (await import('./keras.js')).createTarget();
    case 'quantized':
      return (await import('./quantized.js')).createTarget();
    case 'tune-cache':
      return (await import('./tune-cache.js')).createTarget();
    default:
      throw new Error(`fuzz: unknown target '${name}' (expected ${TARGET_NAMES.join(', ')} or all)`);
  }
}
