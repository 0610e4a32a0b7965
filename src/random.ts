// A small seedable generator (xoshiro128**), so tensors, dropout masks and shuffles repeat
// exactly for a given seed on every platform.
import { describe } from './describe.js';

export class Rng {
  private s: Uint32Array;

  constructor(seed = 0x5eed) {
    // SplitMix32 spreads the seed over the four state words.
    this.s = new Uint32Array(4);
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    return xoshiro128ss(this.s);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    let u = this.next();
    while (u === 0) u = this.next();
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** The generator's state, for checkpoints. */
  getState(): number[] {
    return Array.from(this.s);
  }

  /**
   * Restores getState(). Throws (and changes nothing) unless `state` is 4 integers in [0, 2^32)
   * that are not all zero: all zero is xoshiro's fixed point, which would make normal() spin.
   */
  setState(state: readonly number[]): void {
    this.s.set(checkRngState(state, 'Rng.setState'));
  }
}

/**
 * Checks a generator state (as getState() returns it, e.g. read back from a checkpoint) without
 * applying it; returns it as numbers. `what` starts the Error's message.
 */
export function checkRngState(state: unknown, what = 'Rng.setState'): number[] {
  if (!Array.isArray(state) || state.length !== 4) {
    throw new Error(`${what}: expected an array of 4 integers in [0, 2^32), got ${describe(state)}`);
  }
  state.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new Error(`${what}: state[${i}]: expected an integer in [0, 2^32), got ${describe(v)}`);
    }
  });
  if (state.every((v) => v === 0)) {
    throw new Error(
      `${what}: expected a state that is not all zero (the generator would only ever return 0), got [0, 0, 0, 0]`,
    );
  }
  return [...state] as number[];
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** One step of xoshiro128** on the state `s` (four words, not all zero): returns the output. */
export function xoshiro128ss(s: Uint32Array): number {
  const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
  const t = (s[1] << 9) >>> 0;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

/** The generator used when a call is given no seed or Rng of its own. */
export const globalRng = new Rng(0x5eed);

/** Reseeds the global generator (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  globalRng.setState(new Rng(seed).getState());
}
