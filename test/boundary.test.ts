// The N-API boundary: zero-copy buffers, argument errors that name what was wrong, and a
// process that survives all of them.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  adaptiveAvgPool2d,
  avgPool2d,
  batchNorm2d,
  conv2d,
  conv2dFused,
  convTranspose2d,
  fromArray,
  info,
  linear,
  localResponseNorm,
  maxPool2d,
  ones,
  setNumThreads,
  Tensor,
  zeros,
} from '../src/index.js';
import { native } from '../src/native.js';
import { convArgs as args, withKernels } from './helpers.js';

describe('zero-copy', () => {
  it('Rust writes straight into a JavaScript-owned buffer, including a view into a larger one', () => {
    const x = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const w = Float32Array.from([1, 0, 0, 1]);
    const backing = new Float32Array(8).fill(-1);
    const view = backing.subarray(2, 6); // 4 outputs in the middle of a bigger buffer
    native.conv2dForward(x, w, null, view, args());
    expect(Array.from(backing)).toEqual([-1, -1, 6, 8, 12, 14, -1, -1]);
  });

  it('the tensor returned by conv2d owns the buffer the kernel wrote', () => {
    const y = conv2d(ones([1, 1, 3, 3]), ones([1, 1, 2, 2]));
    expect(y.data).toBeInstanceOf(Float32Array);
    expect(Array.from(y.data)).toEqual([4, 4, 4, 4]);
  });
});

describe('errors at the boundary', () => {
  const x = new Float32Array(9);
  const w = new Float32Array(4);
  const out = new Float32Array(4);

  it.each([
    [
      'wrong input length',
      () => native.conv2dForward(new Float32Array(8), w, null, out, args()),
      'input: expected 9 elements, got 8',
    ],
    [
      'wrong weight length',
      () => native.conv2dForward(x, new Float32Array(5), null, out, args()),
      'weight: expected 4 elements, got 5',
    ],
    [
      'wrong output length',
      () => native.conv2dForward(x, w, null, new Float32Array(3), args()),
      'output: expected 4 elements, got 3',
    ],
    [
      'wrong bias length',
      () => native.conv2dForward(x, w, new Float32Array(2), out, args()),
      'bias: expected 1 elements, got 2',
    ],
    [
      'negative size',
      () => native.conv2dForward(x, w, null, out, args({ inputShape: [1, 1, -3, 3] })),
      'inputShape[2]: expected a non-negative integer, got -3',
    ],
    [
      'NaN size',
      () => native.conv2dForward(x, w, null, out, args({ stride: [NaN, 1] })),
      'stride[0]: expected a non-negative integer, got NaN',
    ],
    [
      'fractional size',
      () => native.conv2dForward(x, w, null, out, args({ groups: 1.5 })),
      'groups: expected a non-negative integer, got 1.5',
    ],
    [
      'zero batch',
      () => native.conv2dForward(x, w, null, out, args({ inputShape: [0, 1, 3, 3] })),
      'batch: expected a positive size, got 0',
    ],
    [
      'zero stride',
      () => native.conv2dForward(x, w, null, out, args({ stride: [0, 1] })),
      'stride: expected a positive size, got 0',
    ],
    [
      'short shape',
      () => native.conv2dForward(x, w, null, out, args({ inputShape: [1, 3, 3] })),
      'inputShape: expected 4 numbers, got 3',
    ],
    [
      'kernel larger than input',
      () => native.conv2dForward(x, w, null, out, args({ weightShape: [1, 1, 4, 4] })),
      'kernel: dilated kernel 4x4 is larger than the padded input 3x3',
    ],
    [
      'groups not dividing channels',
      () => native.conv2dForward(x, w, null, out, args({ inputShape: [1, 3, 3, 1], groups: 2 })),
      'groups: in_channels (3) must be divisible by groups (2)',
    ],
    [
      'weight channels vs groups',
      () =>
        native.conv2dForward(new Float32Array(18), new Float32Array(4), null, out, args({ inputShape: [1, 2, 3, 3] })),
      'conv2d: the weight [1, 1, 2, 2] takes 1 input channels per group, but the input [1, 2, 3, 3] has 2 channels in 1 group(s) (expected weight shape [1, 2, 2, 2])',
    ],
    [
      'unknown algorithm',
      () => native.conv2dForward(x, w, null, out, args({ algo: 'magic' })),
      'algo: expected one of',
    ],
    [
      'output aliasing input',
      () => native.conv2dForward(x, w, null, x.subarray(0, 4), args()),
      'output: must not share memory with input',
    ],
    [
      'absurd sizes',
      () => native.conv2dForward(x, w, null, out, args({ inputShape: [2 ** 40, 2 ** 40, 3, 3] })),
      'too many elements',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });

  it('wrong JavaScript types are errors too', () => {
    expect(() => native.conv2dForward([1, 2] as unknown as Float32Array, w, null, out, args())).toThrow();
    expect(() => native.conv2dForward(x, w, null, out, null as unknown as ReturnType<typeof args>)).toThrow();
  });

  it('the TypeScript layer checks tensor ranks before calling Rust', () => {
    expect(() => conv2d(zeros([3, 3]), zeros([1, 1, 2, 2]))).toThrow('input: expected a 4-D tensor, got shape [3, 3]');
    expect(() => conv2d(zeros([1, 1, 3, 3]), zeros([2, 1, 2, 2]), zeros([3]))).toThrow(
      'bias: expected shape [2], got [3]',
    );
    expect(() =>
      conv2d(zeros([1, 1, 3, 3]), zeros([1, 1, 2, 2]), null, { padding: [1, 2, 3] as unknown as number }),
    ).toThrow(/padding: expected/);
  });

  it('NaN in the data propagates as in PyTorch, and the process keeps working', () => {
    const xs = fromArray([NaN, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 3, 3]);
    const y = conv2d(xs, ones([1, 1, 2, 2]));
    expect(Number.isNaN(y.data[0])).toBe(true);
    expect(y.data[3]).toBe(4);
    expect(conv2d(ones([1, 1, 2, 2]), ones([1, 1, 1, 1])).sum()).toBe(4);
    expect(new Tensor(new Float32Array(1), [1]).size).toBe(1);
  });
});

describe('op errors start with the op name and use the public argument names', () => {
  const x = zeros([1, 2, 4, 4]);
  const w = zeros([3, 2, 3, 3]);
  it.each([
    ['conv2d', () => conv2d(zeros([4, 4]), w), 'conv2d: input: expected a 4-D tensor, got shape [4, 4]'],
    ['conv2d', () => conv2d(x, w, zeros([2])), 'conv2d: bias: expected shape [3], got [2]'],
    ['conv2d', () => conv2d(x, w, null, { stride: 0 }), 'conv2d: stride: expected positive integers, got 0'],
    [
      'conv2d',
      () => conv2d(x, zeros([3, 1, 3, 3])),
      'conv2d: the weight [3, 1, 3, 3] takes 1 input channels per group, but the input [1, 2, 4, 4] has 2 channels',
    ],
    ['conv2dFused', () => conv2dFused(x, w, { shift: zeros([2]) }), 'conv2dFused: shift: expected shape [3], got [2]'],
    ['conv2dFused', () => conv2dFused(x, zeros([3, 2])), 'conv2dFused: weight: expected a 4-D tensor'],
    [
      'convTranspose2d',
      () => convTranspose2d(x, zeros([2, 3, 3, 3]), null, { outputPadding: -1 }),
      'convTranspose2d: outputPadding: expected non-negative integers, got -1',
    ],
    ['convTranspose2d', () => convTranspose2d(x, zeros([2, 3, 3, 3]), zeros([4])), 'convTranspose2d: bias:'],
    ['linear', () => linear(zeros([2, 3]), zeros([4, 5])), 'linear: input: expected shape [N, 5], got [2, 3]'],
    ['linear', () => linear(zeros([2, 5]), zeros([4])), 'linear: weight: expected a 2-D tensor'],
    ['batchNorm2d', () => batchNorm2d(x, zeros([3]), null, null, null), 'batchNorm2d: runningMean: expected shape [2]'],
    ['batchNorm2d', () => batchNorm2d(zeros([2, 2]), null, null, null, null), 'batchNorm2d: input: expected a 4-D'],
    ['localResponseNorm', () => localResponseNorm(zeros([2]), 3), 'localResponseNorm: input: expected a 4-D'],
    ['maxPool2d', () => maxPool2d(x, [2, 2, 2] as never), 'maxPool2d: kernelSize: expected a number or [h, w]'],
    ['avgPool2d', () => avgPool2d(x, 2, { padding: -1 }), 'avgPool2d: padding: expected non-negative integers'],
    ['avgPool2d', () => avgPool2d(zeros([4]), 2), 'avgPool2d: input: expected a 4-D tensor'],
    ['adaptiveAvgPool2d', () => adaptiveAvgPool2d(x, 0), 'adaptiveAvgPool2d: outputSize: expected positive integers'],
  ])('%s: %s', (op, call, message) => {
    let err: Error | null = null;
    try {
      call();
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toContain(message);
    expect(err?.message.startsWith(`${op}: `)).toBe(true);
    // No snake_case or binding-internal names (weightShape[1], in_channels).
    expect(err?.message).not.toMatch(/[a-z]_[a-z]|Shape\[/);
  });
});

describe('threads and info', () => {
  it('info() reports threads, the SIMD level and versions', () => {
    const i = info();
    expect(i.threads).toBeGreaterThanOrEqual(1);
    expect(['avx512', 'avx2+fma', 'neon', 'scalar']).toContain(i.simd);
    expect(i.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(i.node).toBe(process.versions.node);
  });

  it('withKernels puts the SIMD level and thread count back even when the test inside fails', () => {
    const before = info();
    expect(() =>
      withKernels({ simd: 'scalar', threads: 1 }, () => {
        expect(info()).toMatchObject({ simd: 'scalar', threads: 1 });
        throw new Error('failing assertion');
      }),
    ).toThrow('failing assertion');
    expect(info()).toMatchObject({ simd: before.simd, threads: before.threads });
  });

  it('setNumThreads resizes the pool and rejects nonsense', () => {
    withKernels({ threads: 1 }, () => {
      expect(info().threads).toBe(1);
      setNumThreads(2);
      expect(info().threads).toBe(2);
      expect(() => setNumThreads(0)).toThrow('threads: expected 1..1024, got 0');
      expect(() => setNumThreads(-1)).toThrow('threads: expected a non-negative integer, got -1');
    });
  });

  it('FERROCONV_NUM_THREADS and FERROCONV_SIMD are read at start-up', () => {
    const script = "import('./dist/index.js').then(m => console.log(JSON.stringify(m.info())))";
    const r = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, FERROCONV_NUM_THREADS: '3', FERROCONV_SIMD: 'scalar' },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout);
    expect(got.threads).toBe(3);
    expect(got.simd).toBe('scalar');
  });
});
