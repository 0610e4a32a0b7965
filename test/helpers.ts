// Shared test helpers: the deterministic inputs the golden generators also use, fixture loading
// and a closeness check that reports the worst element.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/tensor.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'fixtures');

/** Same values as golden.det(shape, seed) in test/fixtures/golden.py. */
export function det(shape: number[], seed: number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // biome-ignore lint/suspicious/noApproximativeNumericConstant: golden.py's det() uses 0.7071, not Math.SQRT1_2
    const v = Math.sin(i * 0.7071 + seed * 1.618) * 0.9 + Math.cos(i * 0.1234 + seed) * 0.1;
    out[i] = Math.fround(Math.fround(v) * scale);
  }
  return new Tensor(out, shape);
}

export interface FixtureTensor {
  shape: number[];
  data: number[];
}

export function loadFixture<T>(name: string): T {
  return JSON.parse(readFileSync(join(FIXTURES, name), 'utf8')) as T;
}

/** Throws unless |a - b| <= atol + rtol * |b| everywhere; names the worst element. */
export function expectClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-4,
  atol = 1e-5,
  what = '',
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != expected ${expected.length}`);
  }
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const b = expected[i];
    const excess = Math.abs(a - b) - (atol + rtol * Math.abs(b));
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess || Number.isNaN(excess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`,
    );
  }
}

/** Runs `fn` and returns the Error it throws (failing the test if it throws none). */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}
