// conv2d backward (input, weight and bias gradients) against PyTorch autograd goldens
// (test/fixtures/gen_conv2d_backward.py), for every algorithm on both SIMD paths.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native.js';
import {
  type BackwardFixtureCase,
  convArgs,
  type ConvFixtureCase,
  det,
  expectClose,
  loadFixture,
  withKernels,
} from './helpers.js';

interface Case extends ConvFixtureCase, BackwardFixtureCase {
  outputShape: number[];
}

const { cases } = loadFixture<{ cases: Case[] }>('conv2d_backward.json');
const ALGOS = ['auto', 'direct', 'im2col', 'fft', 'winograd'] as const;

describe.each(['auto', 'scalar'] as const)('conv2d backward vs PyTorch (simd %s)', (simd) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    withKernels({ simd }, () => {
      const x = det(c.inputShape, c.seeds[0]).data;
      const w = det(c.weightShape, c.seeds[1], c.weightScale).data;
      const gy = det(c.outputShape, c.seeds[3]).data;
      for (const algo of ALGOS) {
        const args = {
          inputShape: c.inputShape,
          weightShape: c.weightShape,
          stride: c.stride,
          padding: c.padding,
          dilation: c.dilation,
          groups: c.groups,
          algo,
        };
        // Outputs start as NaN: the kernels must overwrite them.
        const gx = new Float32Array(x.length).fill(NaN);
        native.conv2dBackwardData(gy, w, gx, args);
        // Winograd's input gradient is its forward on the rotated weights: rounding follows the
        // largest values of a tile (normwise; see test/conv2d.test.ts), hence atol 1e-4.
        expectClose(gx, c.gradInput.data, 1e-4, algo === 'winograd' ? 1e-4 : 1e-5, `${c.name} ${algo} gradInput`);
        const gw = new Float32Array(w.length).fill(NaN);
        const gb = c.bias ? new Float32Array(c.weightShape[0]).fill(NaN) : null;
        native.conv2dBackwardWeight(x, gy, gw, gb, args);
        expectClose(gw, c.gradWeight.data, 1e-4, 1e-5, `${c.name} ${algo} gradWeight`);
        if (gb && c.gradBias) expectClose(gb, c.gradBias.data, 1e-4, 1e-5, `${c.name} ${algo} gradBias`);
      }
    });
  });
});

describe('conv2d backward errors', () => {
  const args = convArgs({ algo: 'im2col' });
  const x = new Float32Array(9);
  const w = new Float32Array(4);
  const gy = new Float32Array(4);

  it.each([
    [
      'short gradOutput',
      () => native.conv2dBackwardData(new Float32Array(3), w, new Float32Array(9), args),
      'gradOutput: expected 4 elements, got 3',
    ],
    [
      'short gradInput',
      () => native.conv2dBackwardData(gy, w, new Float32Array(8), args),
      'gradInput: expected 9 elements, got 8',
    ],
    [
      'long gradWeight',
      () => native.conv2dBackwardWeight(x, gy, new Float32Array(5), null, args),
      'gradWeight: expected 4 elements, got 5',
    ],
    [
      'wrong gradBias',
      () => native.conv2dBackwardWeight(x, gy, new Float32Array(4), new Float32Array(2), args),
      'gradBias: expected 1 elements, got 2',
    ],
    [
      'gradInput aliasing gradOutput',
      () => native.conv2dBackwardData(gy, w, gy, { ...args, inputShape: [1, 1, 2, 2], weightShape: [1, 1, 1, 1] }),
      'gradInput: must not share memory with gradOutput',
    ],
    [
      'unknown algorithm',
      () => native.conv2dBackwardData(gy, w, new Float32Array(9), { ...args, algo: 'winograd?' }),
      'algo: expected one of',
    ],
  ])('%s', (_name, call, message) => {
    expect(call).toThrow(message);
  });
});
