// The application pieces (src/apps, interpolate, per-pixel cross-entropy) against PyTorch and
// torchvision (test/fixtures/gen_apps.py), hand-computed metric cases, and the synthetic data
// generators' determinism and consistency.
import { describe, expect, it } from 'vitest';
import { apps, crossEntropy, interpolate, Rng, Tensor } from '../src/index.js';
import { det, expectClose, loadFixture, thrown, type FixtureTensor } from './helpers.js';

interface Fixture {
  distillation: {
    student: FixtureTensor;
    teacher: FixtureTensor;
    labels: number[];
    temperature: number;
    alpha: number;
    soft: number;
    loss: number;
    grad: FixtureTensor;
  };
  giou: Record<'pred' | 'target' | 'loss' | 'grad_pred' | 'grad_target', FixtureTensor>;
  ceNd: {
    targets: number[];
    weight: number[];
    cases: { reduction: 'mean' | 'sum' | 'none'; weighted: boolean; output: FixtureTensor; grad: FixtureTensor }[];
  };
  interpolate: {
    shape: number[];
    size: [number, number];
    mode: 'bilinear' | 'nearest';
    alignCorners: boolean;
    output: FixtureTensor;
    grad: FixtureTensor;
  }[];
  dice: { targets: number[]; logits: FixtureTensor; loss: number; grad: FixtureTensor };
  identification: {
    normalize: { output: FixtureTensor; grad: FixtureTensor };
    triplet: { labels: number[]; margin: number; loss: number; grad: FixtureTensor };
    arcface: {
      s: number;
      m: number;
      labels: number[];
      embeddings: FixtureTensor;
      weight: FixtureTensor;
      logits: FixtureTensor;
      loss: number;
      gradEmbeddings: FixtureTensor;
      gradWeight: FixtureTensor;
    };
  };
}
const fx = loadFixture<Fixture>('apps.json');
const leaf = (t: FixtureTensor) => {
  const x = new Tensor(Float32Array.from(t.data), t.shape);
  x.requiresGrad = true;
  return x;
};

describe('losses and ops vs PyTorch', () => {
  it('giouLoss matches torchvision.ops.generalized_box_iou_loss, forward and both gradients', () => {
    const pred = leaf(fx.giou.pred);
    const target = leaf(fx.giou.target);
    const loss = apps.giouLoss(pred, target, 'none');
    expectClose(loss.data, fx.giou.loss.data, 1e-5, 1e-6, 'loss');
    loss.backward(new Tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [6]));
    expectClose(pred.grad?.data ?? [], fx.giou.grad_pred.data, 1e-4, 1e-5, 'grad pred');
    expectClose(target.grad?.data ?? [], fx.giou.grad_target.data, 1e-4, 1e-5, 'grad target');
    const mean = apps.giouLoss(leaf(fx.giou.pred), leaf(fx.giou.target));
    expect(mean.shape).toEqual([]);
    expect(mean.data[0]).toBeCloseTo(fx.giou.loss.data.reduce((a, b) => a + b) / 6, 6);
    expect(thrown(() => apps.giouLoss(pred, new Tensor(new Float32Array(8), [2, 4]))).message).toMatch(
      /6 predicted boxes but 2 targets/,
    );
  });

  it.each(fx.ceNd.cases.map((c) => [`${c.reduction}${c.weighted ? ' weighted' : ''}`, c] as const))(
    'crossEntropy on [N, C, H, W] logits (%s)',
    (_n, c) => {
      const logits = det([2, 4, 3, 5], 1, 3);
      logits.requiresGrad = true;
      const weight = c.weighted ? new Tensor(Float32Array.from(fx.ceNd.weight), [4]) : null;
      const y = crossEntropy(logits, fx.ceNd.targets, { reduction: c.reduction, weight });
      expect(y.shape).toEqual(c.output.shape);
      expectClose(y.data, c.output.data, 1e-5, 1e-6, 'output');
      y.backward(c.reduction === 'none' ? det([2, 3, 5], 5) : undefined);
      expectClose(logits.grad?.data ?? [], c.grad.data, 1e-4, 1e-6, 'grad');
    },
  );

  it.each(
    fx.interpolate.map((c) => [`${c.mode} ${c.shape} -> ${c.size}${c.alignCorners ? ' aligned' : ''}`, c] as const),
  )('interpolate %s', (_n, c) => {
    const x = det(c.shape, 3);
    x.requiresGrad = true;
    const y = interpolate(x, c.size, { mode: c.mode, alignCorners: c.alignCorners });
    expect(y.shape).toEqual(c.output.shape);
    expectClose(y.data, c.output.data, 1e-5, 1e-6, 'output');
    y.backward(det(y.shape as number[], 4));
    expectClose(x.grad?.data ?? [], c.grad.data, 1e-4, 1e-5, 'grad');
  });

  it('interpolate rejects what torch rejects', () => {
    expect(thrown(() => interpolate(det([2, 3], 1), [4, 4])).message).toMatch(/expected \[N, C, H, W\]/);
    expect(thrown(() => interpolate(det([1, 1, 2, 2], 1), [0, 4])).message).toMatch(/positive integers/);
    expect(thrown(() => interpolate(det([1, 1, 2, 2], 1), [4, 4], { mode: 'bicubic' as 'nearest' })).message).toMatch(
      /mode must be/,
    );
  });

  it('diceLoss matches the soft Dice formula under torch autograd', () => {
    const logits = leaf(fx.dice.logits);
    const loss = apps.diceLoss(logits, fx.dice.targets);
    expect(loss.shape).toEqual([]);
    expect(loss.data[0]).toBeCloseTo(fx.dice.loss, 6);
    loss.backward();
    expectClose(logits.grad?.data ?? [], fx.dice.grad.data, 1e-4, 1e-7, 'grad');
    expect(thrown(() => apps.diceLoss(logits, [0, 1])).message).toMatch(/expected 32 targets/);
    expect(thrown(() => apps.diceLoss(logits, Array(32).fill(3))).message).toMatch(/target 3 is not a class/);
  });
});

describe('identification losses vs PyTorch', () => {
  const id = fx.identification;
  it('l2Normalize matches F.normalize(x, dim=1)', () => {
    const x = det([8, 5], 7, 2);
    x.requiresGrad = true;
    const y = apps.l2Normalize(x);
    expectClose(y.data, id.normalize.output.data, 1e-5, 1e-7, 'output');
    y.backward(det([8, 5], 8));
    expectClose(x.grad?.data ?? [], id.normalize.grad.data, 1e-4, 1e-6, 'grad');
  });

  it('batchHardTripletLoss picks the hardest positive and negative, and its gradient matches', () => {
    const e = det([8, 5], 9);
    e.requiresGrad = true;
    const loss = apps.batchHardTripletLoss(e, id.triplet.labels, id.triplet.margin);
    expect(loss.data[0]).toBeCloseTo(id.triplet.loss, 6);
    loss.backward();
    expectClose(e.grad?.data ?? [], id.triplet.grad.data, 1e-4, 1e-6, 'grad');
    expect(thrown(() => apps.batchHardTripletLoss(e, [0, 0, 0, 0, 0, 0, 0, 0])).message).toMatch(/no anchor/);
  });

  it('ArcFaceHead matches insightface ArcMarginProduct, both branches, with gradients', () => {
    const a = id.arcface;
    const head = new apps.ArcFaceHead(4, 5, a.s, a.m);
    head.weight.data.set(a.weight.data);
    const emb = leaf(a.embeddings);
    const logits = head.logits(emb, a.labels);
    expectClose(logits.data, a.logits.data, 1e-4, 1e-5, 'logits');
    const loss = head.loss(emb, a.labels);
    expect(loss.data[0]).toBeCloseTo(a.loss, 5);
    loss.backward();
    expectClose(emb.grad?.data ?? [], a.gradEmbeddings.data, 1e-3, 1e-5, 'grad embeddings');
    expectClose((head.weight.grad as Tensor | null)?.data ?? [], a.gradWeight.data, 1e-3, 1e-5, 'grad weight');
    expect(thrown(() => head.logits(emb, [0, 1, 2, 3, 4, 5])).message).toMatch(/label 5 is not in \[0, 5\)/);
  });

  it('rocAuc and equalErrorRate, by hand', () => {
    // Positives 0.9, 0.8, 0.3; negatives 0.7, 0.2, 0.1: 8 of 9 positive-negative orderings right.
    const scores = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1];
    const same = [true, true, true, false, false, false];
    expect(apps.rocAuc(scores, same)).toBeCloseTo(8 / 9, 12);
    // At t = 0.7: FAR 1/3, FRR 1/3.
    expect(apps.equalErrorRate(scores, same)).toBeCloseTo(1 / 3, 12);
    expect(apps.rocAuc([0.5, 0.5], [true, false])).toBe(0.5);
  });
});

describe('transfer', () => {
  it('distillationLoss matches kl_div(log_softmax(s/T), softmax(t/T), batchmean) T^2 mixed with cross-entropy', () => {
    const d = fx.distillation;
    const s = leaf(d.student);
    const t = leaf(d.teacher);
    const { loss, parts } = apps.distillationLoss(s, t, Int32Array.from(d.labels), {
      temperature: d.temperature,
      alpha: d.alpha,
    });
    expect(parts.kl.data[0]).toBeCloseTo(d.soft, 5);
    expect(loss.data[0]).toBeCloseTo(d.loss, 5);
    loss.backward();
    expectClose(s.grad?.data ?? [], d.grad.data, 1e-4, 1e-6, 'grad');
    // No gradient reaches the teacher.
    expect(t.grad).toBeNull();
    expect(thrown(() => apps.distillationLoss(s, det([5, 3], 1), Int32Array.from(d.labels))).message).toMatch(
      /must both be \[N, C\]/,
    );
  });

  it('copyFeatures copies the features and leaves the head; freeze stops them training', () => {
    const a = apps.canvasClassifier({ numClasses: 5, size: 32, widths: [4, 8] });
    const b = apps.canvasClassifier({ numClasses: 3, size: 32, widths: [4, 8] });
    const headBefore = Float32Array.from(b.getSubmodule('classifier.4').parameters()[0].data);
    expect(apps.copyFeatures(a, b)).toBe(2 * 6); // per block: conv weight, BN weight, bias and 3 buffers
    for (const [k, t] of b.stateDict()) {
      if (k.startsWith('features.')) expect([...t.data]).toEqual([...(a.stateDict().get(k) as Tensor).data]);
    }
    expect([...b.getSubmodule('classifier.4').parameters()[0].data]).toEqual([...headBefore]);
    expect(b.freeze('features.')).toBe(6);
    const c = apps.canvasClassifier({ numClasses: 5, size: 32, widths: [4, 16] });
    expect(thrown(() => apps.copyFeatures(a, c)).message).toMatch(/shape|expected/);
  });
});

describe('captioning pieces', () => {
  it('bleu4, by hand', () => {
    // Identical: 1. One word wrong in "three left of seven": precisions 3/4, 1/3, 0/2 -> 0.
    expect(apps.bleu4(['three left of seven'], ['three left of seven'])).toBe(1);
    expect(apps.bleu4(['three left of five'], ['three left of seven'])).toBe(0);
    // Pooled over a corpus: p1 = 7/8, p2 = 5/6, p3 = 3/4, p4 = 1/2, no brevity penalty.
    const b = apps.bleu4(['three left of seven', 'two left of five'], ['three left of seven', 'two left of six']);
    expect(b).toBeCloseTo(Math.exp((Math.log(7 / 8) + Math.log(5 / 6) + Math.log(3 / 4) + Math.log(1 / 2)) / 4), 12);
    // Brevity: candidates 4 words against references of 5 -> exp(1 - 5/4).
    const short = apps.bleu4(['a b c d'], ['a b c d e']);
    expect(short).toBeCloseTo(Math.exp(1 - 5 / 4), 12);
  });

  it('captionSet: deterministic, one true caption per canvas, teacher-forcing batches', () => {
    const a = apps.captionSet({ count: 12, seed: 4 });
    const b = apps.captionSet({ count: 12, seed: 4 });
    expect(Buffer.from(a.pixels).equals(Buffer.from(b.pixels))).toBe(true);
    expect([...a.tokens]).toEqual([...b.tokens]);
    for (let i = 0; i < a.length; i++)
      expect(a.caption(i)).toMatch(/^(zero|one|two|three|four|five|six|seven|eight|nine) (left of|above) \w+$/);
    const batch = a.batch([0]);
    const toks = Array.from(a.tokens.subarray(0, 5));
    const end = toks.indexOf(2);
    expect(Array.from(batch.targets.subarray(0, end + 1))).toEqual(toks.slice(0, end + 1));
    expect(batch.inputs.data[0]).toBe(1);
    expect(Array.from(batch.inputs.data.subarray(1, end + 1))).toEqual(toks.slice(0, end));
    expect(apps.captionText([1, 6, 15, 10, 2, 0])).toBe('three above seven');
  });
});

describe('drawGrid', () => {
  it('writes a PNG of the grid, and rejects tiles that do not fit', async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const sharp = (await import('sharp')).default;
    const path = join(mkdtempSync(join(tmpdir(), 'fc-draw-')), 'grid.png');
    const tile = {
      image: new Float32Array(16 * 16).fill(0.5),
      width: 16,
      height: 16,
      overlay: {
        boxes: [{ box: [2, 2, 10, 10], label: 'a <b> & "c"', color: '"/><script/>' }],
        mask: { classes: new Uint8Array(256).fill(1) },
        caption: 'one\ntwo',
        frame: '#00ff00',
      },
    };
    const size = await apps.drawGrid(path, [tile, tile, tile], { columns: 2, scale: 2 });
    const meta = await sharp(path).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', size.width, size.height]);
    expect(size.width).toBe(2 * (32 + 4) + 4);
    await expect(apps.drawGrid(path, [tile, { ...tile, width: 8, image: new Float32Array(128) }])).rejects.toThrow(
      /every tile must have the same size/,
    );
    await expect(apps.drawGrid(path, [{ ...tile, image: new Float32Array(3) }])).rejects.toThrow(
      /needs 256 values, got 3/,
    );
    await expect(apps.drawGrid(path, [])).rejects.toThrow(/no tiles/);
  });
});

describe('metrics, by hand', () => {
  it('boxIoU', () => {
    expect(apps.boxIoU([0, 0, 2, 2], [1, 1, 3, 3])).toBeCloseTo(1 / 7, 12);
    expect(apps.boxIoU([0, 0, 1, 1], [2, 2, 3, 3])).toBe(0);
    expect(apps.boxIoU([0, 0, 4, 4], [1, 1, 3, 3])).toBeCloseTo(4 / 16, 12);
  });

  it('localizationMetrics', () => {
    // Two samples: right class with IoU 1; wrong class with IoU 1/7.
    const out = new Tensor(Float32Array.from([2, 1, 0, 0, 2, 2, 0, 5, 1, 1, 3, 3]), [2, 6]);
    const m = apps.localizationMetrics(out, [0, 0], [0, 0, 2, 2, 0, 0, 2, 2]);
    expect(m).toEqual({ accuracy: 0.5, meanIoU: (1 + 1 / 7) / 2, iou50: 0.5, correctAndIou50: 0.5 });
  });

  it('segmentationMetrics', () => {
    const truth = [0, 0, 1, 1, 2, 2, 0, 0];
    const pred = [0, 1, 1, 1, 2, 0, 0, 0];
    const m = apps.segmentationMetrics(pred, truth, 4);
    expect(m.pixelAccuracy).toBe(6 / 8);
    // class 0: tp 3, fp 1, fn 1 -> 3/5; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2; class 3 absent.
    expect(m.iou.slice(0, 3)).toEqual([3 / 5, 2 / 3, 1 / 2]);
    expect(m.iou[3]).toBeNaN();
    expect(m.meanIoU).toBeCloseTo((3 / 5 + 2 / 3 + 1 / 2) / 3, 12);
  });
});

describe('synthetic sets', () => {
  it('localizationSet is deterministic per seed, and each box hugs the digit', () => {
    const a = apps.localizationSet({ count: 20, seed: 7 });
    const b = apps.localizationSet({ count: 20, seed: 7 });
    const c = apps.localizationSet({ count: 20, seed: 8 });
    expect(Buffer.from(a.pixels).equals(Buffer.from(b.pixels))).toBe(true);
    expect([...a.boxes]).toEqual([...b.boxes]);
    expect(Buffer.from(a.pixels).equals(Buffer.from(c.pixels))).toBe(false);
    const testSplit = apps.localizationSet({ count: 20, seed: 7, train: false });
    expect(Buffer.from(a.pixels).equals(Buffer.from(testSplit.pixels))).toBe(false);
    const s = a.size;
    for (let i = 0; i < a.length; i++) {
      const [x1, y1, x2, y2] = Array.from(a.boxes.subarray(i * 4, i * 4 + 4), (v) => Math.round(v * s));
      expect(0 <= x1 && x1 < x2 && x2 <= s && 0 <= y1 && y1 < y2 && y2 <= s).toBe(true);
      // Bright ink inside the box, on its edge rows and columns.
      let inside = 0;
      for (let y = y1; y < y2; y++)
        for (let x = x1; x < x2; x++) inside = Math.max(inside, a.pixels[i * s * s + y * s + x]);
      expect(inside).toBeGreaterThan(150);
    }
    const batch = a.batch([3, 1]);
    expect(batch.images.shape).toEqual([2, 1, 64, 64]);
    expect(batch.labels[0]).toBe(a.labels[3]);
    expect([...batch.boxes.data.subarray(0, 4)]).toEqual([...a.boxes.subarray(12, 16)]);
    expect(thrown(() => a.batch([20])).message).toMatch(/index 20 is not in \[0, 20\)/);
    const sub = a.subset([5, 2]);
    expect(sub.length).toBe(2);
    expect([...sub.batch([1]).boxes.data]).toEqual([...a.boxes.subarray(8, 12)]);
    expect(
      Buffer.from(sub.pixels.subarray(0, s * s)).equals(Buffer.from(a.pixels.subarray(5 * s * s, 6 * s * s))),
    ).toBe(true);
    expect(thrown(() => apps.localizationSet({ count: 0 })).message).toMatch(/count must be a positive integer/);
    expect(thrown(() => apps.localizationSet({ count: 1, scale: [4, 90] })).message).toMatch(/scale must be/);
  });

  it('identitySet draws each identity in new handwriting; splitIdentities holds identities out', () => {
    const split = apps.splitIdentities(20, 0);
    expect(split.unseen.length).toBe(20);
    expect(split.train.length).toBe(80);
    expect(new Set([...split.train, ...split.unseen]).size).toBe(100);
    const a = apps.identitySet({ identities: [7, 42], perIdentity: 3, seed: 5 });
    const b = apps.identitySet({ identities: [7, 42], perIdentity: 3, seed: 5 });
    expect(Buffer.from(a.pixels).equals(Buffer.from(b.pixels))).toBe(true);
    expect([...a.labels]).toEqual([7, 7, 7, 42, 42, 42]);
    const plane = 32 * 32;
    expect(Buffer.from(a.pixels.subarray(0, plane)).equals(Buffer.from(a.pixels.subarray(plane, 2 * plane)))).toBe(
      false,
    );
    const pk = a.pkBatches(2, 2, new Rng(1));
    for (const batch of pk) {
      const ids = Array.from(batch, (i) => a.labels[i]);
      expect(ids.slice(0, 2).every((v) => v === ids[0]) && ids.slice(2).every((v) => v === ids[2])).toBe(true);
      expect(ids[0]).not.toBe(ids[2]);
    }
    expect(thrown(() => apps.identitySet({ identities: [100], perIdentity: 1 })).message).toMatch(/integers 0-99/);
  });

  it('segmentationSet is deterministic per seed, and masks mark bright pixels only', () => {
    const a = apps.segmentationSet({ count: 10, seed: 3 });
    const b = apps.segmentationSet({ count: 10, seed: 3 });
    expect(Buffer.from(a.pixels).equals(Buffer.from(b.pixels))).toBe(true);
    expect(Buffer.from(a.masks).equals(Buffer.from(b.masks))).toBe(true);
    let labelled = 0;
    for (let i = 0; i < a.masks.length; i++) {
      expect(a.masks[i]).toBeLessThan(11);
      if (a.masks[i] > 0) {
        labelled++;
        expect(a.pixels[i]).toBeGreaterThan(40);
      }
    }
    expect(labelled).toBeGreaterThan(10 * 64);
    // Each canvas has at least two digit classes or one digit drawn twice: at least 2 blobs of ink.
    const batch = a.batch([0, 9]);
    expect(batch.images.shape).toEqual([2, 1, 64, 64]);
    expect(batch.masks.length).toBe(2 * 64 * 64);
  });
});
