// classify(): ImageNet preprocessing of a real image file and top-k output.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { AdaptiveAvgPool2d, Flatten, Linear, Sequential, classify, models } from '../src/index.js';

describe('classify', () => {
  it('preprocesses like the ImageNet preset and returns the top-k classes of the model', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-cls-'));
    const path = join(dir, 'red.png');
    // A 300x400 image: pure red (255, 0, 0).
    await sharp({ create: { width: 400, height: 300, channels: 3, background: { r: 255, g: 0, b: 0 } } })
      .png()
      .toFile(path);
    const x = await models.preprocessImage(path);
    expect(x.shape).toEqual([1, 3, 224, 224]);
    const [m, s] = [models.IMAGENET_MEAN, models.IMAGENET_STD];
    expect(x.data[0]).toBeCloseTo((1 - m[0]) / s[0], 5);
    expect(x.data[224 * 224]).toBeCloseTo((0 - m[1]) / s[1], 5);
    // A model whose class c scores the mean of channel c: red wins, then the other two.
    const net = new Sequential(new AdaptiveAvgPool2d(1), new Flatten(), new Linear(3, 3));
    net.stateDict().get('2.weight')!.data.set([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    net.stateDict().get('2.bias')!.data.fill(0);
    const top = await classify(net, path, { topk: 2, labels: ['red', 'green', 'blue'] });
    expect(top.map((p) => p.label)).toEqual(['red', 'blue']);
    const logits = [(1 - m[0]) / s[0], (0 - m[1]) / s[1], (0 - m[2]) / s[2]];
    const z = logits.reduce((a, v) => a + Math.exp(v), 0);
    expect(top[0].probability).toBeCloseTo(Math.exp(logits[0]) / z, 5);
    await expect(classify(net, path, { labels: ['a'] })).rejects.toThrow(
      'labels has 1 names, the model gives 3 classes',
    );
    await expect(classify(net, join(dir, 'missing.png'))).rejects.toThrow(/missing\.png/);
  });
});
