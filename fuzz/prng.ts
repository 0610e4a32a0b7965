// The fuzzer's own seedable generator (xoshiro128**, seeded through SplitMix32), kept apart from
// src/random.ts's seeding (only the fixed xoshiro128** step is shared) so that a change to the
// library under test never changes which inputs a given --seed produces. Input number i of a run
// depends only on (seed, i): a run can restart at any index, and a finding is reproduced from its
// seed and index alone.

import { xoshiro128ss } from '../src/random.js';

function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class Prng {
  private readonly s = new Uint32Array(4);

  /** A generator for input `index` of the run with `seed`. */
  constructor(seed: number, index = 0) {
    let x =
      fmix32((seed >>> 0) ^ 0x6a09e667) ^
      fmix32(((index >>> 0) + 0x3c6ef372) >>> 0) ^
      fmix32(Math.floor(index / 2 ** 32) + 0x1f83d9ab);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      this.s[i] = fmix32(x) | (i === 0 ? 1 : 0); // never the all-zero state
    }
  }

  u32(): number {
    return xoshiro128ss(this.s);
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 4294967296;
  }

  /** Integer in [0, n) (n >= 1). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** Small sizes far more often than large ones: 1..max, roughly log-uniform. */
  size(max: number): number {
    return Math.max(1, Math.min(max, Math.floor(2 ** (this.float() * Math.log2(max + 1)))));
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}
