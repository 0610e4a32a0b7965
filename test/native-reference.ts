// Shared by the tests that check a native kernel against the TypeScript loop it replaced, bit
// for bit: awkward inputs, an exact comparison, and a run over both SIMD paths.
import { setSimd } from '../src/index.js';
import { det } from './helpers.js';

/** Values that stress the rounding: NaN, infinities, denormals, signed zeros, huge and tiny. */
export const SPECIAL = [NaN, Infinity, -Infinity, 1e-40, -1e-45, 0, -0, 3e38, -3e38, 1.2e-38, 1e-20, -7e30];

/** det values with the special ones sprinkled at positions that depend on `seed`. */
export function awkward(n: number, seed: number, scale = 1): Float32Array {
  const out = det([n], seed, scale).data.slice();
  for (let k = 0; k < SPECIAL.length; k++) {
    const i = (k * 7 + seed * 3) % (n * 3);
    if (i < n) out[i] = SPECIAL[k];
  }
  return out;
}

/** Element-by-element Object.is (NaN equals NaN; 0 and -0 differ), naming the first difference. */
export function expectSame(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  for (let i = 0; i < got.length; i++) {
    if (!Object.is(got[i], want[i])) throw new Error(`${what}[${i}]: got ${got[i]}, expected ${want[i]}`);
  }
}

/** Runs `f` with the scalar path forced, then with the best one; restores 'auto' whatever happens. */
export function onBothSimdPaths(f: (simd: 'scalar' | 'auto') => void): void {
  for (const simd of ['scalar', 'auto'] as const) {
    try {
      setSimd(simd);
      f(simd);
    } finally {
      setSimd('auto');
    }
  }
}
