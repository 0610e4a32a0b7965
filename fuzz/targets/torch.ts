// Target `torch`: readTorchObject on the bytes (torch.save's zip and legacy formats, through the
// restricted unpickler), then readTorch's state-dict unwrapping. Every failure must be the
// reader's own Error ('readTorch <buffer>: ...'); what it returns must hold together: every
// tensor's data matches its shape.
import { readTorch, readTorchObject } from '../../src/io/torch.js';
import { Tensor } from '../../src/tensor.js';
import { InvariantError, type Target } from '../engine.js';
import { mutateTorch, TORCH_DICTIONARY } from '../formats/torch.js';

/** Every tensor reachable from `v` (containers walked once each: pickles can make cycles). */
function checkTensors(v: unknown, seen = new Set<unknown>()): void {
  if (typeof v !== 'object' || v === null || seen.has(v)) return;
  seen.add(v);
  if (v instanceof Tensor) {
    const n = v.shape.reduce((a, d) => a * d, 1);
    if (!v.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || v.data.length !== n) {
      throw new InvariantError(`a tensor of shape [${v.shape.join(', ')}] holds ${v.data.length} values`);
    }
    return;
  }
  if (v instanceof Map) {
    for (const [k, x] of v) {
      checkTensors(k, seen);
      checkTensors(x, seen);
    }
  } else if (Array.isArray(v)) {
    for (const x of v) checkTensors(x, seen);
  }
}

export function createTarget(): Target {
  return {
    name: 'torch',
    dictionary: TORCH_DICTIONARY,
    isParserError: (message) => message.startsWith('readTorch <buffer>: '),
    extension: () => 'pth',
    mutate: (input, rng, corpus) => mutateTorch(input, rng, corpus),
    execute(input) {
      checkTensors(readTorchObject(input));
      try {
        checkTensors(readTorch(input));
      } catch (e) {
        // A file that is fine but holds no state dict is the reader's own Error too.
        if (!(e as Error).message.startsWith('readTorch <buffer>: no state dict')) throw e;
      }
    },
  };
}
