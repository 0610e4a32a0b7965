// A short training run per application task, each far above what chance or a constant guess
// scores: the pieces (data, model, loss, loop, metric) work together. Minutes-long runs that hit
// the README's targets are the examples' job (examples/*.ts); these take seconds.
import { describe, expect, it } from 'vitest';
import { Adam, add, apps, crossEntropy, manualSeed, mseLoss, type Module, scale } from '../src/index.js';

const adam = (m: Module, lr = 3e-3) => new Adam(m.parameters(), { lr });

describe('each task learns', () => {
  it('localization: boxes far better than the best constant box', { timeout: 120_000 }, async () => {
    manualSeed(1);
    const train = apps.localizationSet({ count: 1500, seed: 1, clutter: 2 });
    const test = apps.localizationSet({ count: 300, train: false, seed: 2, clutter: 2 });
    const model = new apps.LocalizationNet({ width: 128 });
    await apps.trainTask(model, train, {
      optimizer: adam(model),
      loss: apps.localizationLoss,
      epochs: 2,
      batchSize: 32,
    });
    const m = await apps.evaluateLocalization(model, test);
    // The constant guess: the mean training box, for every canvas.
    const mean = [0, 1, 2, 3].map(
      (j) => train.boxes.filter((_, i) => i % 4 === j).reduce((a, b) => a + b) / train.length,
    );
    const constant = test.labels.reduce(
      (n, _, i) => n + (apps.boxIoU(mean, test.boxes.subarray(i * 4, i * 4 + 4)) >= 0.5 ? 1 : 0),
      0,
    );
    expect(m.iou50).toBeGreaterThan(constant / test.length + 0.3);
    expect(m.meanIoU).toBeGreaterThan(0.45);
  });

  it('segmentation: mIoU far above predicting background everywhere', { timeout: 120_000 }, async () => {
    manualSeed(2);
    // Two digit classes (0 and 1) keep the run short; the network still tells them apart per pixel.
    const train = apps.segmentationSet({ count: 2000, seed: 1, digits: [0, 1], size: 32, scale: [12, 16] });
    const test = apps.segmentationSet({ count: 100, train: false, seed: 2, digits: [0, 1], size: 32, scale: [12, 16] });
    const model = new apps.SegmentationNet({ width: 16 });
    await apps.trainTask(model, train, {
      optimizer: adam(model),
      loss: (o, b) => apps.segmentationLoss(o, b),
      epochs: 2,
      batchSize: 32,
    });
    const m = await apps.evaluateSegmentation(model, test);
    const background = apps.segmentationMetrics(new Uint8Array(test.masks.length), test.masks, 11);
    expect(m.meanIoU).toBeGreaterThan(background.meanIoU + 0.25);
    expect(m.iou[1]).toBeGreaterThan(0.3); // the zeros
    expect(m.iou[2]).toBeGreaterThan(0.3); // the ones
  });

  it('identification: verification on unseen identities far above a coin flip', { timeout: 120_000 }, async () => {
    manualSeed(3);
    const split = apps.splitIdentities(20, 0);
    const train = apps.identitySet({ identities: split.train, perIdentity: 30, seed: 1 });
    const unseen = apps.identitySet({ identities: split.unseen, perIdentity: 10, train: false, seed: 2 });
    const model = new apps.EmbeddingNet({ dim: 32 });
    const head = new apps.ArcFaceHead(32, 100);
    await apps.trainTask(model, train, {
      optimizer: new Adam([...model.parameters(), ...head.parameters()], { lr: 3e-3 }),
      epochs: 3,
      batchSize: 64,
      batches: (_e, rng) => train.pkBatches(16, 4, rng),
      loss: (e, b) => add(apps.batchHardTripletLoss(e, b.labels, 0.2), scale(head.loss(e, b.labels), 0.1)),
    });
    const m = await apps.verificationMetrics(model, unseen, { pairs: 300 });
    expect(m.accuracy).toBeGreaterThan(0.7);
    expect(m.auc).toBeGreaterThan(0.75);
  });

  it('pose: PCK@0.1 far above the mean pose', { timeout: 120_000 }, async () => {
    manualSeed(4);
    const train = apps.poseSet({ count: 1200, seed: 1 });
    const test = apps.poseSet({ count: 100, seed: 2 });
    const model = new apps.PoseNet();
    await apps.trainTask(model, train, {
      optimizer: adam(model, 2e-3),
      loss: (o, b) => mseLoss(o, b.heatmaps),
      epochs: 2,
      batchSize: 32,
    });
    const m = await apps.evaluatePose(model, test);
    const k = apps.POSE_JOINTS.length;
    const meanPose = new Float32Array(k * 2);
    for (let i = 0; i < train.length; i++)
      for (let j = 0; j < k * 2; j++) meanPose[j] += train.joints[i * k * 2 + j] / train.length;
    const guess = new Float32Array(test.length * k * 2).map((_, j) => meanPose[j % (k * 2)]);
    // The mean pose scores about 0.01; two short epochs reach about 0.25.
    expect(m.pck).toBeGreaterThan(apps.pck(guess, test.joints, k) + 0.15);
  });

  it('transfer: a fine-tuned head on new digits far above chance', { timeout: 120_000 }, async () => {
    manualSeed(5);
    const source = apps.localizationSet({ count: 2000, seed: 1, digits: [0, 1, 2, 3, 4], clutter: 0 });
    const sourceModel = apps.canvasClassifier({ numClasses: 5 });
    const ce = (o: import('../src/index.js').Tensor, b: { labels: Int32Array }) => crossEntropy(o, b.labels);
    await apps.trainTask(sourceModel, source, { optimizer: adam(sourceModel), loss: ce, epochs: 2, batchSize: 32 });
    const shift = (s: apps.LocalizationSet) => {
      for (let i = 0; i < s.labels.length; i++) s.labels[i] -= 5;
      return s;
    };
    const few = shift(apps.localizationSet({ count: 200, seed: 2, digits: [5, 6, 7, 8, 9], clutter: 0 }));
    const test = shift(
      apps.localizationSet({ count: 300, seed: 3, digits: [5, 6, 7, 8, 9], train: false, clutter: 0 }),
    );
    const tuned = apps.canvasClassifier({ numClasses: 5 });
    apps.copyFeatures(sourceModel, tuned);
    await apps.trainTask(tuned, few, { optimizer: adam(tuned, 2e-3), loss: ce, epochs: 8, batchSize: 25 });
    const pred = (await tuned.predict(test.batch(Array.from({ length: test.length }, (_, i) => i)).images)).argmax();
    const acc = pred.reduce((n, p, i) => n + (p === test.labels[i] ? 1 : 0), 0) / test.length;
    expect(acc).toBeGreaterThan(0.2 + 0.3);
  });

  it('captioning: exact captions far above chance (1 in 18)', { timeout: 120_000 }, async () => {
    manualSeed(6);
    // Three digit classes: 3 x 3 pairs x 2 relations, so chance is 1 in 18.
    const train = apps.captionSet({ count: 2000, seed: 1, digits: [0, 1, 2], size: 32 });
    const test = apps.captionSet({ count: 200, train: false, seed: 2, digits: [0, 1, 2], size: 32 });
    const model = new apps.CaptionNet({ hidden: 64, size: 32 });
    await apps.trainTask(model, train, {
      optimizer: adam(model),
      epochs: 3,
      batchSize: 32,
      forward: (m, b) => m.call(b.images, b.inputs),
      loss: apps.captionLoss,
    });
    const greedy = apps.evaluateCaptions(model, test);
    const beam = apps.evaluateCaptions(model, test, { beamWidth: 3 });
    expect(greedy.exactMatch).toBeGreaterThan(1 / 18 + 0.25);
    expect(beam.exactMatch).toBeGreaterThan(1 / 18 + 0.25);
    expect(greedy.bleu4).toBeGreaterThan(0.3);
  });
});
