// Seeds for the data pipeline. Shuffling and augmentation draw from generators derived from
// (seed, epoch, sample index) alone, so a run repeats exactly whatever the batch size of the
// prefetch, the number of workers or which worker handled a sample, and can resume mid-epoch.
import { Rng } from '../random.js';
import { describe } from '../describe.js';

// Distinct tags keep the shuffle stream and the per-sample streams from ever coinciding.
const SHUFFLE_TAG = 0x51f15eed;
const SAMPLE_TAG = 0x0a06e47a;

function mix(h: number, v: number): number {
  // MurmurHash3's 32-bit block step followed by its finaliser.
  let k = Math.imul(v >>> 0, 0xcc9e2d51);
  k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
  h ^= k;
  h = Math.imul((h << 13) | (h >>> 19), 5) + 0xe6546b64;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hash(...values: number[]): number {
  let h = 0x9747b28c;
  for (const v of values) h = mix(h, v);
  return h;
}

/** The generator that shuffles epoch `epoch` of a loader seeded with `seed`. */
export function shuffleRng(seed: number, epoch: number): Rng {
  return new Rng(hash(SHUFFLE_TAG, seed, epoch));
}

/** The generator for the random augmentation of sample `index` in epoch `epoch`. */
export function sampleRng(seed: number, epoch: number, index: number): Rng {
  return new Rng(hash(SAMPLE_TAG, seed, epoch, index));
}

/** Throws unless `v` is an integer that fits in 32 unsigned bits. */
export function checkSeed(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new Error(`${what}: expected an integer in [0, 2^32), got ${describe(v)}`);
  }
}
