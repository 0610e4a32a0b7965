// conv2d forward against PyTorch goldens (test/fixtures/gen_conv2d.py).
import { describe, expect, it } from 'vitest';
import { conv2d } from '../src/index.js';
import { type ConvFixtureCase, det, expectClose, loadFixture, type FixtureTensor, useKernels } from './helpers.js';

interface Case extends ConvFixtureCase {
  seeds: [number, number, number];
  output: FixtureTensor;
}

const { cases } = loadFixture<{ cases: Case[] }>('conv2d.json');

describe.each(['auto', 'scalar'] as const)('conv2d forward vs PyTorch (simd %s)', (simd) => {
  useKernels({ simd });
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const x = det(c.inputShape, c.seeds[0]);
    const w = det(c.weightShape, c.seeds[1], c.weightScale);
    const b = c.bias ? det([c.weightShape[0]], c.seeds[2]) : null;
    for (const algo of ['auto', 'direct', 'im2col', 'fft', 'winograd'] as const) {
      const y = conv2d(x, w, b, { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups, algo });
      expect(y.shape).toEqual(c.output.shape);
      // FFT rounding is spread over a whole tile rather than tied to each output, so its error
      // scales with the largest output, not with each one: atol 1e-4 against outputs of order 1.
      // crates/kernels/tests/conv_fft.rs measures at most 3e-7 of the largest value on shapes
      // like these (3e-6 on large layers); these cases currently pass even with atol 1e-6.
      // Winograd F(4x4, 3x3) likewise: its transforms scale values by up to 8 before the sums,
      // so rounding follows the largest values of a tile; crates/kernels/tests/conv_winograd.rs
      // measures at most 3.6e-6 of the largest output on small shapes (1.1e-5 at 256 channels).
      const atol = algo === 'fft' || algo === 'winograd' ? 1e-4 : 1e-5;
      expectClose(y.data, c.output.data, 1e-4, atol, `${c.name} ${algo}`);
    }
  });
});
