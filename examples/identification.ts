// Identification and verification, as face recognition: 100 identities (the numbers 00-99, in
// new handwriting every time); an embedding CNN trained on 80 of them with batch-hard triplet +
// ArcFace losses; verification (same identity or not?) and retrieval measured on the 20 never
// seen in training. Writes a picture: for 8 unseen queries, the 5 nearest images by embedding
// (green frame: same identity, red: another).
//   npx tsx examples/identification.ts [--epochs 4] [--per 150] [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Adam, add, apps, CosineAnnealingLR, manualSeed, scale } from '../src/index.js';

const { values } = parseArgs({
  options: {
    epochs: { type: 'string', default: '4' },
    per: { type: 'string', default: '150' },
    out: { type: 'string', default: 'out' },
  },
});
const epochs = Number(values.epochs);
manualSeed(0);
const t0 = performance.now();
const split = apps.splitIdentities(20, 0);
const train = apps.identitySet({ identities: split.train, perIdentity: Number(values.per), seed: 1 });
// Unseen identities, written by MNIST's test-set hands.
const unseen = apps.identitySet({ identities: split.unseen, perIdentity: 50, train: false, seed: 2 });
const model = new apps.EmbeddingNet({ dim: 64 });
const head = new apps.ArcFaceHead(64, 100, 16, 0.3);
const optimizer = new Adam([...model.parameters(), ...head.parameters()], { lr: 2e-3 });
const scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
await apps.trainTask(model, train, {
  optimizer,
  scheduler,
  epochs,
  batchSize: 64,
  // 16 identities x 4 images per batch, so every anchor has positives and negatives to mine.
  batches: (_epoch, rng) => train.pkBatches(16, 4, rng),
  loss: (embeddings, batch) => {
    const triplet = apps.batchHardTripletLoss(embeddings, batch.labels, 0.2);
    const arcface = head.loss(embeddings, batch.labels);
    return { loss: add(triplet, scale(arcface, 0.1)), parts: { triplet, arcface } };
  },
  onEpochEnd: (epoch, log) =>
    console.log(
      `epoch ${epoch}/${epochs}: loss ${log.loss.toFixed(4)} (triplet ${log.triplet.toFixed(4)}, ` +
        `arcface ${log.arcface.toFixed(4)}) in ${log.seconds.toFixed(1)} s`,
    ),
});
const seconds = (performance.now() - t0) / 1000;
const m = await apps.verificationMetrics(model, unseen, { pairs: 1000, seed: 3 });
console.log(
  `identification on ${split.unseen.length} unseen identities: verification accuracy ${(100 * m.accuracy).toFixed(2)}%, ` +
    `ROC AUC ${m.auc.toFixed(4)}, EER ${(100 * m.eer).toFixed(2)}%, top-1 retrieval ${(100 * m.top1Retrieval).toFixed(2)}% ` +
    `(${m.pairs} pairs, trained in ${seconds.toFixed(0)} s)`,
);
const pair = unseen.batch([0, 1, 50]);
const check = await apps.verify(
  model,
  pair.images.reshape([3, 1, 32, 32]),
  unseen.batch([2, 60, 51]).images,
  m.threshold,
);
console.log(
  `verify(): same ${check.same.join(', ')} (similarity ${check.similarity.map((s) => s.toFixed(3)).join(', ')}; ` +
    `truth: true, false, true)`,
);

mkdirSync(values.out, { recursive: true });
const all = unseen.batch(Array.from({ length: unseen.length }, (_, i) => i));
const e = await apps.embed(model, all.images);
const d = e.shape[1];
const size = unseen.size;
const tiles = [];
for (let q = 0; q < 8; q++) {
  const i = q * 125 + 7;
  const sims = Array.from({ length: unseen.length }, (_, j) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += e.data[i * d + k] * e.data[j * d + k];
    return { j, s };
  })
    .filter((x) => x.j !== i)
    .sort((a, b) => b.s - a.s)
    .slice(0, 5);
  const id = (j: number) => String(unseen.labels[j]).padStart(2, '0');
  tiles.push({
    image: apps.canvasImage(unseen.pixels, size, i),
    width: size,
    height: size,
    overlay: { caption: `query ${id(i)}`, frame: '#ffffff' },
  });
  for (const { j, s } of sims) {
    const same = unseen.labels[j] === unseen.labels[i];
    tiles.push({
      image: apps.canvasImage(unseen.pixels, size, j),
      width: size,
      height: size,
      overlay: { caption: `${id(j)} ${s.toFixed(2)}`, frame: same ? '#00ff00' : '#ff3030' },
    });
  }
}
const path = join(values.out, 'identification.png');
await apps.drawGrid(path, tiles, { columns: 6, scale: 3 });
console.log(`wrote ${path}`);
