// Target `safetensors`: parseSafetensors on the bytes. Beyond not crashing, what it returns must
// hold together: each tensor's data matches its shape, metadata is a map of strings (as the
// format says and SafetensorsFile.metadata's type promises), and writing the tensors back and
// reading them again gives the same names, shapes and values.
import { parseSafetensors, serializeSafetensors } from '../../src/io/safetensors.js';
import { InvariantError, type Target } from '../engine.js';
import { concat } from '../mutate.js';
import { mutateSafetensors, SAFETENSORS_DICTIONARY } from '../formats/safetensors.js';
import type { Tensor } from '../../src/tensor.js';

const NAME = 'fuzz-input';

export function checkTensors(tensors: Map<string, Tensor>, where: string): void {
  for (const [name, t] of tensors) {
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || t.data.length !== n) {
      throw new InvariantError(
        `${where}: tensor '${name}' has shape [${t.shape.join(', ')}] but ${t.data.length} values`,
      );
    }
  }
}

export function checkMetadata(metadata: unknown, where: string): void {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new InvariantError(
      `${where}: metadata is not a map of strings (${Array.isArray(metadata) ? 'an array' : metadata === null ? 'null' : typeof metadata})`,
    );
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string')
      throw new InvariantError(
        `${where}: metadata value is not a string ('${k.slice(0, 40)}': ${v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v})`,
      );
  }
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!(a[i] === b[i] || (Number.isNaN(a[i]) && Number.isNaN(b[i])))) return false;
  return true;
}

export function createTarget(): Target {
  return {
    name: 'safetensors',
    dictionary: SAFETENSORS_DICTIONARY,
    isParserError: (message) => message.startsWith(`safetensors ${NAME}: `),
    extension: () => 'safetensors',
    mutate: (input, rng) => mutateSafetensors(input, rng),
    execute(input) {
      const { tensors, metadata } = parseSafetensors(input, NAME);
      checkTensors(tensors, 'parseSafetensors');
      checkMetadata(metadata, 'parseSafetensors');
      const again = parseSafetensors(concat(serializeSafetensors(tensors)), 'round-trip');
      for (const [name, t] of tensors) {
        const u = again.tensors.get(name);
        if (!u || u.shape.join() !== t.shape.join() || !sameValues(t.data, u.data)) {
          throw new InvariantError(`round trip: tensor '${name}' came back different`);
        }
      }
      if (again.tensors.size !== tensors.size)
        throw new InvariantError(`round trip: ${tensors.size} tensors written, ${again.tensors.size} read`);
    },
  };
}
