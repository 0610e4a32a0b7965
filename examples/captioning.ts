// Image captioning: describe a 48x48 canvas of two digits in words ("three left of seven", "two above
// five"). A CNN encoder gives a GRU decoder its first state; the decoder (word embeddings, GRU,
// linear) is trained with teacher forcing and per-word cross-entropy, then captions by greedy
// and beam search. Prints exact match and BLEU-4 on canvases of MNIST's test digits and writes
// a picture of captions (green: exactly right, red: wrong).
//   npx tsx examples/captioning.ts [--epochs 10] [--train 15000] [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Adam, apps, CosineAnnealingLR, manualSeed } from '../src/index.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '10' },
    train: { type: 'string', default: '15000' },
    out: { type: 'string', default: 'out' },
  },
});
const epochs = Number(values.epochs);
manualSeed(0);
const t0 = performance.now();
const train = apps.captionSet({ count: Number(values.train), seed: 1, size: 48 });
const test = apps.captionSet({ count: 1000, train: false, seed: 2, size: 48 });
const model = new apps.CaptionNet({ size: 48, hidden: 128, embedDim: 32 });
const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
await apps.trainTask(model, train, {
  optimizer,
  scheduler,
  epochs,
  batchSize: 64,
  forward: (m, batch) => m.call(batch.images, batch.inputs),
  loss: apps.captionLoss,
  onEpochEnd: (epoch, log) =>
    console.log(`epoch ${epoch}/${epochs}: word cross-entropy ${log.loss.toFixed(4)} in ${log.seconds.toFixed(1)} s`),
});
const seconds = (performance.now() - t0) / 1000;
const greedy = apps.evaluateCaptions(model, test);
const beam = apps.evaluateCaptions(model, test, { beamWidth: 3 });
console.log(
  `captioning: exact match ${(100 * greedy.exactMatch).toFixed(2)}% greedy, ${(100 * beam.exactMatch).toFixed(2)}% beam 3; ` +
    `BLEU-4 ${greedy.bleu4.toFixed(3)} greedy, ${beam.bleu4.toFixed(3)} beam 3 ` +
    `(${test.length} test canvases, trained in ${seconds.toFixed(0)} s)`,
);

mkdirSync(values.out, { recursive: true });
const tiles = Array.from({ length: 16 }, (_, i) => {
  const right = beam.captions[i] === test.caption(i);
  return {
    image: apps.canvasImage(test.pixels, test.size, i),
    width: test.size,
    height: test.size,
    overlay: { caption: beam.captions[i], captionColor: right ? '#00ff00' : '#ff3030' },
  };
});
const path = join(values.out, 'captioning.png');
await apps.drawGrid(path, tiles, { columns: 8, scale: 3 });
console.log(`wrote ${path}`);
