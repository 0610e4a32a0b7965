// conv_transpose2d forward and backward against PyTorch goldens (test/fixtures/gen_conv_transpose2d.py),
// and the errors its binding gives for bad arguments.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import {
  type BackwardFixtureCase,
  det,
  expectClose,
  loadFixture,
  type FixtureTensor,
  pick,
  withKernels,
} from './helpers.js';

type Args = Parameters<typeof native.convTranspose2dForward>[4];

interface Case extends BackwardFixtureCase {
  inputShape: number[];
  weightShape: number[];
  stride: [number, number];
  padding: [number, number];
  outputPadding: [number, number];
  dilation: [number, number];
  groups: number;
  output: FixtureTensor;
}

const { cases } = loadFixture<{ cases: Case[] }>('conv_transpose2d.json');

const argsOf = (c: Case): Args =>
  pick(c, ['inputShape', 'weightShape', 'stride', 'padding', 'outputPadding', 'dilation', 'groups']);

/** A buffer full of NaN: whatever the kernel leaves unwritten shows up in the comparison. */
const garbage = (n: number) => new Float32Array(n).fill(NaN);

describe.each([
  ['best simd, 2 threads', 'auto', 2],
  ['scalar, 2 threads', 'scalar', 2],
  ['best simd, 1 thread', 'auto', 1],
] as const)('conv_transpose2d vs PyTorch (%s)', (_label, simd, threads) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    withKernels({ simd, threads }, () => {
      const args = argsOf(c);
      const x = det(c.inputShape, c.seeds[0]).data;
      const w = det(c.weightShape, c.seeds[1], c.weightScale).data;
      const outChannels = c.weightShape[1] * c.groups;
      const b = c.bias ? det([outChannels], c.seeds[2]).data : null;
      const gy = det(c.output.shape, c.seeds[3]).data;

      expect([c.inputShape[0], outChannels, ...native.convTranspose2dOutputSize(args)]).toEqual(c.output.shape);

      const y = garbage(gy.length);
      native.convTranspose2dForward(x, w, b, y, args);
      expectClose(y, c.output.data, 1e-4, 1e-5, `${c.name} forward`);

      const gx = garbage(x.length);
      native.convTranspose2dBackwardData(gy, w, gx, args);
      expectClose(gx, c.gradInput.data, 1e-4, 1e-5, `${c.name} grad input`);

      const gw = garbage(w.length);
      const gb = c.bias ? garbage(outChannels) : null;
      native.convTranspose2dBackwardWeight(x, gy, gw, gb, args);
      expectClose(gw, c.gradWeight.data, 1e-4, 1e-5, `${c.name} grad weight`);
      if (gb && c.gradBias) expectClose(gb, c.gradBias.data, 1e-4, 1e-5, `${c.name} grad bias`);
    });
  });
});

describe('conv_transpose2d argument errors', () => {
  // [1, 2, 3, 3] input, weight [2, 2, 3, 3] (C_out = 2): output [1, 2, 6, 6] at stride 2, pad 1,
  // output padding 1.
  const base: Args = {
    inputShape: [1, 2, 3, 3],
    weightShape: [2, 2, 3, 3],
    stride: [2, 2],
    padding: [1, 1],
    outputPadding: [1, 1],
    dilation: [1, 1],
    groups: 1,
  };
  const args = (over: Partial<Args> = {}): Args => ({ ...base, ...over });
  const x = new Float32Array(18);
  const w = new Float32Array(36);
  const y = new Float32Array(72);

  it('computes the output size as torch does', () => {
    expect(native.convTranspose2dOutputSize(base)).toEqual([6, 6]);
    expect(native.convTranspose2dOutputSize(args({ outputPadding: [0, 1], stride: [3, 2] }))).toEqual([7, 6]);
    expect(native.convTranspose2dOutputSize(args({ padding: [0, 2], dilation: [2, 1] }))).toEqual([10, 4]);
  });

  const gb = new Float32Array(2);
  it.each([
    [
      'output padding not below stride or dilation',
      () => native.convTranspose2dOutputSize(args({ outputPadding: [2, 1] })),
      'outputPadding: must be smaller than either stride or dilation in each dimension, got outputPadding [2, 1] with stride [2, 2] and dilation [1, 1]',
    ],
    [
      'output padding with stride 1',
      () => native.convTranspose2dOutputSize(args({ stride: [1, 1] })),
      'outputPadding: must be smaller than either stride or dilation',
    ],
    [
      'padding too large',
      () => native.convTranspose2dOutputSize(args({ padding: [4, 1] })),
      'padding: output size 0x6 for input 3x3 is not positive (padding [4, 1] too large)',
    ],
    [
      'groups not dividing in channels',
      () => native.convTranspose2dOutputSize(args({ inputShape: [1, 3, 3, 3], weightShape: [3, 1, 3, 3], groups: 2 })),
      'groups: in_channels (3) must be divisible by groups (2)',
    ],
    [
      'zero groups',
      () => native.convTranspose2dOutputSize(args({ groups: 0 })),
      'groups: expected a positive size, got 0',
    ],
    [
      'fractional groups',
      () => native.convTranspose2dOutputSize(args({ groups: 1.5 })),
      'groups: expected a non-negative integer, got 1.5',
    ],
    [
      'weight in channels',
      () => native.convTranspose2dOutputSize(args({ weightShape: [3, 2, 3, 3] })),
      'conv_transpose2d: the weight [3, 2, 3, 3] takes 3 input channels, but the input [1, 2, 3, 3] has 2 ' +
        '(expected weight shape [2, 2, 3, 3])',
    ],
    [
      'zero stride',
      () => native.convTranspose2dOutputSize(args({ stride: [0, 2] })),
      'stride: expected a positive size, got 0',
    ],
    [
      'zero kernel',
      () => native.convTranspose2dOutputSize(args({ weightShape: [2, 2, 0, 3] })),
      'kernel height: expected a positive size, got 0',
    ],
    [
      'zero out channels',
      () => native.convTranspose2dOutputSize(args({ weightShape: [2, 0, 3, 3] })),
      'out_channels: expected a positive size, got 0',
    ],
    [
      'short outputPadding',
      () => native.convTranspose2dOutputSize(args({ outputPadding: [1] })),
      'outputPadding: expected 2 numbers, got 1',
    ],
    [
      'four-sided padding',
      () => native.convTranspose2dOutputSize(args({ padding: [1, 1, 1, 1] })),
      'padding: expected 2 numbers, got 4',
    ],
    [
      'negative dilation',
      () => native.convTranspose2dOutputSize(args({ dilation: [1, -2] })),
      'dilation[1]: expected a non-negative integer, got -2',
    ],
    [
      'NaN size',
      () => native.convTranspose2dOutputSize(args({ inputShape: [1, 2, NaN, 3] })),
      'inputShape[2]: expected a non-negative integer, got NaN',
    ],
    [
      'sizes that overflow',
      () => native.convTranspose2dOutputSize(args({ inputShape: [1, 2, 2 ** 52, 3], stride: [2 ** 20, 2] })),
      'conv_transpose2d: sizes overflow',
    ],
    [
      'absurd sizes',
      () =>
        native.convTranspose2dOutputSize(
          args({ inputShape: [2 ** 40, 2 ** 40, 3, 3], weightShape: [2 ** 40, 2, 3, 3] }),
        ),
      'too many elements',
    ],
    [
      'wrong input length',
      () => native.convTranspose2dForward(new Float32Array(17), w, null, y, args()),
      'input: expected 18 elements, got 17',
    ],
    [
      'wrong weight length',
      () => native.convTranspose2dForward(x, new Float32Array(35), null, y, args()),
      'weight: expected 36 elements, got 35',
    ],
    [
      'wrong bias length',
      () => native.convTranspose2dForward(x, w, new Float32Array(3), y, args()),
      'bias: expected 2 elements, got 3',
    ],
    [
      'wrong output length',
      () => native.convTranspose2dForward(x, w, null, new Float32Array(71), args()),
      'output: expected 72 elements, got 71',
    ],
    [
      'wrong gradOutput length',
      () => native.convTranspose2dBackwardData(new Float32Array(50), w, new Float32Array(18), args()),
      'gradOutput: expected 72 elements, got 50',
    ],
    [
      'wrong gradInput length',
      () => native.convTranspose2dBackwardData(y, w, new Float32Array(19), args()),
      'gradInput: expected 18 elements, got 19',
    ],
    [
      'wrong gradWeight length',
      () => native.convTranspose2dBackwardWeight(x, y, new Float32Array(4), gb, args()),
      'gradWeight: expected 36 elements, got 4',
    ],
    [
      'wrong gradBias length',
      () => native.convTranspose2dBackwardWeight(x, y, new Float32Array(36), new Float32Array(1), args()),
      'gradBias: expected 2 elements, got 1',
    ],
    [
      'output aliasing input',
      () => native.convTranspose2dForward(y.subarray(0, 18), w, null, y, args()),
      'output: must not share memory with input',
    ],
    [
      'gradInput aliasing weight',
      () => native.convTranspose2dBackwardData(y, w, w.subarray(0, 18), args()),
      'gradInput: must not share memory with weight',
    ],
    [
      'gradBias aliasing gradWeight',
      () => {
        const gw = new Float32Array(40);
        native.convTranspose2dBackwardWeight(x, y, gw.subarray(0, 36), gw.subarray(35, 37), args());
      },
      'gradBias: must not share memory with gradWeight',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });

  it('a missing field or wrong type is an error, not a crash', () => {
    const { outputPadding: _, ...noOutputPadding } = base;
    expect(() => native.convTranspose2dOutputSize(noOutputPadding as Args)).toThrow();
    expect(() => native.convTranspose2dForward([1, 2] as unknown as Float32Array, w, null, y, args())).toThrow();
    expect(native.convTranspose2dOutputSize(base)).toEqual([6, 6]);
  });
});
