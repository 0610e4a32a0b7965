// Localization and multi-task learning: find and name one digit on a cluttered 64x64 canvas.
// A shared CNN trunk with two heads (class logits, box) trained with cross-entropy + smooth-L1 +
// GIoU; prints classification accuracy, mean IoU and accuracy at IoU >= 0.5 on canvases made
// from MNIST's test digits, and writes a picture of predictions (green: right, red: wrong).
//   npx tsx examples/localization.ts [--epochs 6] [--train 20000] [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { apps, Adam, CosineAnnealingLR, manualSeed } from '../src/index.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '6' },
    train: { type: 'string', default: '20000' },
    out: { type: 'string', default: 'out' },
  },
});
const epochs = Number(values.epochs);
manualSeed(0);
const t0 = performance.now();
const train = apps.localizationSet({ count: Number(values.train), seed: 1 });
const test = apps.localizationSet({ count: 2000, train: false, seed: 2 });
const model = new apps.LocalizationNet({ numClasses: 10, size: 64 });
const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
await apps.trainTask(model, train, {
  optimizer,
  scheduler,
  loss: (out, batch) => apps.localizationLoss(out, batch, { classification: 1, smoothL1: 5, giou: 1 }),
  epochs,
  batchSize: 64,
  onEpochEnd: (epoch, log) =>
    console.log(
      `epoch ${epoch}/${epochs}: loss ${log.loss.toFixed(4)} (ce ${log.ce.toFixed(4)}, ` +
        `smooth-L1 ${log.smoothL1.toFixed(4)}, giou ${log.giou.toFixed(4)}) in ${log.seconds.toFixed(1)} s`,
    ),
});
const seconds = (performance.now() - t0) / 1000;
const m = await apps.evaluateLocalization(model, test);
console.log(
  `localization: accuracy ${(100 * m.accuracy).toFixed(2)}%, mean IoU ${m.meanIoU.toFixed(3)}, ` +
    `accuracy at IoU>=0.5 ${(100 * m.iou50).toFixed(2)}%, class and IoU>=0.5 ${(100 * m.correctAndIou50).toFixed(2)}% ` +
    `(${test.length} test canvases, trained in ${seconds.toFixed(0)} s)`,
);

// The picture: 24 test canvases, the true box in white, the prediction in green (right class
// and IoU >= 0.5) or red, labelled with the predicted digit.
mkdirSync(values.out, { recursive: true });
const { size } = test;
const tiles = Array.from({ length: 24 }, (_, i) => {
  const row = m.output.data.subarray(i * 14, i * 14 + 14);
  let cls = 0;
  for (let k = 1; k < 10; k++) if (row[k] > row[cls]) cls = k;
  const pred = Array.from(row.subarray(10, 14), (v) => v * size);
  const truth = Array.from(test.boxes.subarray(i * 4, i * 4 + 4), (v) => v * size);
  const good = cls === test.labels[i] && apps.boxIoU(pred, truth) >= 0.5;
  return {
    image: apps.canvasImage(test.pixels, size, i),
    width: size,
    height: size,
    overlay: {
      boxes: [
        { box: truth, color: '#ffffff' },
        { box: pred, color: good ? '#00ff00' : '#ff3030', label: String(cls) },
      ],
    },
  };
});
const path = join(values.out, 'localization.png');
await apps.drawGrid(path, tiles, { columns: 8, scale: 3 });
console.log(`wrote ${path}`);
