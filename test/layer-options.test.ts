// Layers check and normalise their options when they are built, as torch.nn does: a bad option
// fails at the constructor with the layer's name, not at the first forward. Output sizes come
// from one place (the kernel crate), so the functional ops and the layers agree on them.
import { describe, expect, it } from 'vitest';
import { AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d, conv2d, maxPool2d, zeros } from '../src/index.js';

describe('options are checked when a layer is built', () => {
  it.each([
    [
      'padding -1',
      () => new Conv2d(3, 8, 3, { padding: -1 }),
      'Conv2d: padding: expected non-negative integers, got -1',
    ],
    [
      'padding 1.5',
      () => new Conv2d(3, 8, 3, { padding: [1, 1.5] }),
      'Conv2d: padding: expected non-negative integers, got [1, 1.5]',
    ],
    [
      'five padding sides',
      () => new Conv2d(3, 8, 3, { padding: [1, 1, 1, 1, 1] as never }),
      'Conv2d: padding: expected a number, [h, w] or [top, bottom, left, right]',
    ],
    ['stride 0', () => new Conv2d(3, 8, 3, { stride: 0 }), 'Conv2d: stride: expected positive integers, got 0'],
    [
      'dilation NaN',
      () => new Conv2d(3, 8, 3, { dilation: NaN }),
      'Conv2d: dilation: expected positive integers, got NaN',
    ],
    ['groups 0', () => new Conv2d(4, 8, 3, { groups: 0 }), 'Conv2d: groups: expected positive integers, got 0'],
    [
      'groups not dividing',
      () => new Conv2d(3, 8, 3, { groups: 2 }),
      'Conv2d: groups (2) must divide inChannels (3) and outChannels (8)',
    ],
    ['kernel 0', () => new Conv2d(3, 8, 0), 'Conv2d: kernelSize: expected positive integers, got 0'],
    ['channels 0', () => new Conv2d(0, 8, 3), 'Conv2d: inChannels must be a positive integer, got 0'],
    [
      'transposed output padding',
      () => new ConvTranspose2d(3, 8, 3, { outputPadding: -1 }),
      'ConvTranspose2d: outputPadding: expected non-negative integers, got -1',
    ],
    ['max pool kernel 0', () => new MaxPool2d(0), 'MaxPool2d: kernelSize: expected positive integers, got 0'],
    [
      'max pool stride',
      () => new MaxPool2d(2, { stride: [1, -2] }),
      'MaxPool2d: stride: expected positive integers, got [1, -2]',
    ],
    [
      'avg pool padding',
      () => new AvgPool2d(3, { padding: -1 }),
      'AvgPool2d: padding: expected non-negative integers, got -1',
    ],
  ])('%s', (_name, build, message) => {
    expect(build).toThrow(message);
  });

  it('the functional ops check the same options', () => {
    expect(() => conv2d(zeros([1, 3, 8, 8]), zeros([8, 3, 3, 3]), null, { padding: -1 })).toThrow(
      'padding: expected non-negative integers, got -1',
    );
    expect(() => maxPool2d(zeros([1, 1, 4, 4]), 2, { stride: 0 })).toThrow('stride: expected positive integers, got 0');
  });

  it('a layer normalises its options once: pairs, and padding on four sides', () => {
    const conv = new Conv2d(3, 8, 3, { stride: 2, padding: [1, 2] });
    expect(conv.geometry).toEqual({ stride: [2, 2], padding: [1, 1, 2, 2], dilation: [1, 1], groups: 1 });
    expect(new MaxPool2d(3, { stride: 2, ceilMode: true }).geometry).toEqual({
      kernel: [3, 3],
      stride: [2, 2],
      padding: [0, 0],
      dilation: [1, 1],
      ceilMode: true,
    });
    expect(new AvgPool2d([2, 3]).geometry.stride).toEqual([2, 3]);
  });

  it('layers and functional ops give the same output shapes, ceil-mode corners included', () => {
    for (const [h, k, s, p] of [
      [7, 3, 2, 1],
      [6, 3, 2, 0],
      [5, 2, 2, 1],
      [8, 3, 3, 1],
    ]) {
      const x = zeros([1, 2, h, h]);
      const layer = new MaxPool2d(k, { stride: s, padding: p, ceilMode: true });
      expect(layer.forward(x).shape).toEqual(maxPool2d(x, k, { stride: s, padding: p, ceilMode: true }).shape);
      const conv = new Conv2d(2, 4, k, { stride: s, padding: p });
      expect(conv.forward(x).shape).toEqual(conv2d(x, conv.weight, conv.bias, { stride: s, padding: p }).shape);
    }
  });
});
