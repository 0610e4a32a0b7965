// Shared test helpers: the deterministic inputs the golden generators also use, fixture loading
// and the fields fixture cases share, kernel arguments (from a case, or a minimal conv), a
// closeness check that reports the worst element, the kernels' global switches set for a test
// and always put back, and finite differences for gradient checks.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach } from 'vitest';
import {
  BatchNorm2d,
  Conv2d,
  Flatten,
  Linear,
  ReLU,
  Sequential,
  info,
  manualSeed,
  setNumThreads,
  setSimd,
} from '../src/index.js';
import { Tensor } from '../src/tensor.js';
import type { Conv2dArgs } from '../src/native.js';
import type { ConvGeometry } from '../src/ops/geometry.js';

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

/** What a golden case of a layer with weights holds besides its shapes: the weight is
 * det(weight shape, seed) * weightScale, and the bias is there only when `bias` is. */
export interface LayerFixtureCase {
  name: string;
  bias: boolean;
  weightScale: number;
}

/** A layer golden's backward (gen_conv2d_backward.py, gen_conv_transpose2d.py, gen_linear.py): the
 * gradients PyTorch gives for input, weight, bias and output gradient det(shape, seeds[0..3]).
 * gradBias is null, or absent, when the case has no bias. */
export interface BackwardFixtureCase extends LayerFixtureCase {
  seeds: [number, number, number, number];
  gradInput: FixtureTensor;
  gradWeight: FixtureTensor;
  gradBias?: FixtureTensor | null;
}

/** The shape of a conv2d fixture case (gen_conv2d.py, gen_conv2d_backward.py). */
export interface ConvFixtureCase extends LayerFixtureCase, ConvGeometry {
  inputShape: number[];
  weightShape: number[];
}

/**
 * Native conv2d arguments for the binding tests: stride 1, no padding, no dilation, one group,
 * and unless `over` says otherwise one 3x3 input channel and one 2x2 filter (4 outputs).
 */
export function convArgs(over: Partial<Conv2dArgs> = {}): Conv2dArgs {
  return {
    inputShape: [1, 1, 3, 3],
    weightShape: [1, 1, 2, 2],
    stride: [1, 1],
    padding: [0, 0, 0, 0],
    dilation: [1, 1],
    groups: 1,
    ...over,
  };
}

/** The fields of `c` named in `keys`, and no others: a fixture case's values as a kernel's arguments. */
export function pick<T, K extends keyof T>(c: T, keys: readonly K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, c[k]])) as Pick<T, K>;
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

/** The kernels' process-wide switches a test may flip. */
export interface KernelSettings {
  simd?: 'auto' | 'scalar';
  threads?: number;
}

/** Applies `settings`; returns a function that puts back the SIMD level and thread count before. */
function switchKernels(settings: KernelSettings): () => void {
  const before = info();
  const restore = () => {
    setSimd(before.simd as Parameters<typeof setSimd>[0]);
    setNumThreads(before.threads);
  };
  try {
    if (settings.simd) setSimd(settings.simd);
    if (settings.threads !== undefined) setNumThreads(settings.threads);
  } catch (e) {
    restore();
    throw e;
  }
  return restore;
}

/**
 * Runs the synchronous `fn` with the kernels switched to `settings`, and puts the previous
 * settings back in `finally`: a failing assertion cannot leak a switch into later tests.
 */
export function withKernels<T>(settings: KernelSettings, fn: () => T): T {
  const restore = switchKernels(settings);
  try {
    const result = fn();
    if (typeof (result as { then?: unknown } | null)?.then === 'function') {
      throw new Error('withKernels: fn must be synchronous (the switches are put back when it returns)');
    }
    return result;
  } finally {
    restore();
  }
}

/** In the enclosing describe: each test runs with `settings`, put back after it (pass or fail). */
export function useKernels(settings: KernelSettings): void {
  let restore: (() => void) | null = null;
  beforeEach(() => {
    restore = switchKernels(settings);
  });
  afterEach(() => {
    restore?.();
    restore = null;
  });
}

/**
 * d f / d x by central finite differences, (f(x + eps) - f(x - eps)) / (2 eps) at every element
 * of `x` (a tensor or a buffer `f` reads), in double precision. Each element is perturbed in place
 * and put back, also when `f` throws.
 */
export function numericGrad(f: () => number, x: Tensor | Float32Array, eps = 1e-2): Float64Array {
  const data = x instanceof Tensor ? x.data : x;
  const g = new Float64Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const old = data[i];
    try {
      data[i] = old + eps;
      const up = f();
      data[i] = old - eps;
      const down = f();
      g[i] = (up - down) / (2 * eps);
    } finally {
      data[i] = old;
    }
  }
  return g;
}

/** A small conv-BN-ReLU-linear network for [N, 1, 6, 6] inputs and 3 classes, seeded. */
export function smallConvNet(seed: number): Sequential {
  manualSeed(seed);
  return new Sequential(
    new Conv2d(1, 4, 3, { padding: 1 }),
    new BatchNorm2d(4),
    new ReLU(),
    new Flatten(),
    new Linear(4 * 6 * 6, 3),
  );
}

/**
 * Watches the event loop with a 2 ms timer until stop() is called, which returns the longest
 * gap between two turns (including the one still open) and how many turns there were.
 */
export function watchEventLoop(): { stop(): { worst: number; ticks: number } } {
  let last = performance.now();
  let worst = 0;
  let ticks = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
    ticks++;
  }, 2);
  return {
    stop: () => {
      clearInterval(timer);
      return { worst: Math.max(worst, performance.now() - last), ticks };
    },
  };
}

/** The Python with Debian's torch (the goldens' reference), as .ci/run installs it. */
export const PYTHON = '/usr/bin/python3';

/** Whether PYTHON imports these modules (tests needing them skip, saying so, where it does not). */
export function hasPython(...modules: string[]): boolean {
  try {
    execFileSync(PYTHON, ['-c', `import ${modules.join(', ')}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
