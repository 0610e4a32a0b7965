// Semantic segmentation: label every pixel of a 64x64 canvas holding 2-3 digits with its digit
// (or background). A small fully convolutional network (strided convs, dilated convs, transposed-
// conv upsampling with a skip) trained with per-pixel cross-entropy + soft Dice; prints mIoU and
// pixel accuracy on canvases of MNIST's test digits and writes a picture (top: truth, bottom:
// prediction, one colour per digit).
//   npx tsx examples/segmentation.ts [--epochs 4] [--train 8000] [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Adam, apps, CosineAnnealingLR, manualSeed } from '../src/index.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '4' },
    train: { type: 'string', default: '8000' },
    out: { type: 'string', default: 'out' },
  },
});
const epochs = Number(values.epochs);
manualSeed(0);
const t0 = performance.now();
const train = apps.segmentationSet({ count: Number(values.train), seed: 1 });
const test = apps.segmentationSet({ count: 1000, train: false, seed: 2 });
const model = new apps.SegmentationNet({ numClasses: 11, width: 32 });
const optimizer = new Adam(model.parameters(), { lr: 3e-3 });
const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
await apps.trainTask(model, train, {
  optimizer,
  scheduler,
  loss: (out, batch) => apps.segmentationLoss(out, batch, 0.5),
  epochs,
  batchSize: 32,
  onEpochEnd: (epoch, log) =>
    console.log(
      `epoch ${epoch}/${epochs}: loss ${log.loss.toFixed(4)} (ce ${log.ce.toFixed(4)}, dice ${log.dice.toFixed(4)}) ` +
        `in ${log.seconds.toFixed(1)} s`,
    ),
});
const seconds = (performance.now() - t0) / 1000;
const m = await apps.evaluateSegmentation(model, test);
console.log(
  `segmentation: mIoU ${m.meanIoU.toFixed(3)}, pixel accuracy ${(100 * m.pixelAccuracy).toFixed(2)}% ` +
    `(${test.length} test canvases, 11 classes, trained in ${seconds.toFixed(0)} s)`,
);
console.log(`per-class IoU: ${m.iou.map((v, k) => `${apps.SEGMENTATION_CLASSES[k]} ${v.toFixed(3)}`).join(', ')}`);

mkdirSync(values.out, { recursive: true });
const { size } = test;
const plane = size * size;
const shown = 8;
const tile = (i: number, classes: Uint8Array, caption: string) => ({
  image: apps.canvasImage(test.pixels, size, i),
  width: size,
  height: size,
  overlay: { mask: { classes: classes.subarray(i * plane, (i + 1) * plane) }, caption },
});
const tiles = [
  ...Array.from({ length: shown }, (_, i) => tile(i, test.masks, 'truth')),
  ...Array.from({ length: shown }, (_, i) => {
    const one = apps.segmentationMetrics(
      m.pred.subarray(i * plane, (i + 1) * plane),
      test.masks.subarray(i * plane, (i + 1) * plane),
      11,
    );
    return tile(i, m.pred, `predicted, mIoU ${one.meanIoU.toFixed(2)}`);
  }),
];
const path = join(values.out, 'segmentation.png');
await apps.drawGrid(path, tiles, { columns: shown, scale: 3 });
console.log(`wrote ${path}`);
