// Knowledge transfer, two ways, each against the same network trained without it:
// 1. Fine-tuning: a CNN trained on digits 0-4 (on cluttered 64x64 canvases) lends its features
//    to a new task, digits 5-9 with only 100 labelled canvases per class; compared with the same
//    network trained from scratch on those 500 canvases (and with the features frozen).
// 2. Distillation: a small student trained on the labels alone, and its twin trained on the
//    labels plus a large teacher's softened outputs (temperature 4).
// Writes a picture of the fine-tuned model's predictions on the new digits.
//   npx tsx examples/transfer.ts [--out out]
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Adam, apps, crossEntropy, manualSeed, type Module, noGrad, type Tensor } from '../src/index.js';

const { values } = parseArgs({ options: { out: { type: 'string', default: 'out' } } });
const t0 = performance.now();
manualSeed(0);

type Set = ReturnType<typeof apps.localizationSet>;
const classify = (m: Module, set: Set, epochs: number, lr: number | { features: number; classifier: number }) => {
  const params =
    typeof lr === 'number'
      ? [{ params: m.parameters().filter((p) => p.requiresGrad), lr }]
      : (['features', 'classifier'] as const).map((part) => ({
          params: m
            .getSubmodule(part)
            .parameters()
            .filter((p) => p.requiresGrad),
          lr: lr[part],
        }));
  return apps.trainTask(m, set, {
    optimizer: new Adam(params.filter((g) => g.params.length > 0)),
    epochs,
    batchSize: 50,
    loss: (logits, batch) => crossEntropy(logits, batch.labels),
  });
};
const accuracy = async (m: Module, set: Set) => {
  const logits = await m.predict(set.batch(Array.from({ length: set.length }, (_, i) => i)).images, { batchSize: 250 });
  const pred = logits.argmax();
  return pred.reduce((n, p, i) => n + (p === set.labels[i] ? 1 : 0), 0) / set.length;
};
/** The digits 5-9 as classes 0-4. */
const shifted = (s: Set) => {
  for (let i = 0; i < s.labels.length; i++) s.labels[i] -= 5;
  return s;
};

// 1. Fine-tuning.
const source = apps.localizationSet({ count: 15000, seed: 1, digits: [0, 1, 2, 3, 4] });
const sourceModel = apps.canvasClassifier({ numClasses: 5 });
await classify(sourceModel, source, 3, 2e-3);
const few = shifted(apps.localizationSet({ count: 500, seed: 2, digits: [5, 6, 7, 8, 9] }));
const target = shifted(apps.localizationSet({ count: 2000, seed: 3, digits: [5, 6, 7, 8, 9], train: false }));
const perClass = Array.from({ length: 5 }, (_, c) => few.labels.filter((l) => l === c).length);
const sourceTest = apps.localizationSet({ count: 2000, seed: 4, digits: [0, 1, 2, 3, 4], train: false });
console.log(
  `source task (digits 0-4, 15000 canvases): accuracy ${(100 * (await accuracy(sourceModel, sourceTest))).toFixed(2)}%`,
);
console.log(
  `new task: digits 5-9, ${few.length} labelled canvases (per class: ${perClass.join(', ')}), tested on ${target.length}`,
);

const epochs = 30;
manualSeed(10);
const scratch = apps.canvasClassifier({ numClasses: 5 });
await classify(scratch, few, epochs, 2e-3);
manualSeed(10);
const tuned = apps.canvasClassifier({ numClasses: 5 });
apps.copyFeatures(sourceModel, tuned);
await classify(tuned, few, epochs, { features: 2e-4, classifier: 2e-3 });
manualSeed(10);
const frozen = apps.canvasClassifier({ numClasses: 5 });
apps.copyFeatures(sourceModel, frozen);
frozen.freeze('features.');
await classify(frozen, few, epochs, 2e-3);
const [accScratch, accTuned, accFrozen] = [
  await accuracy(scratch, target),
  await accuracy(tuned, target),
  await accuracy(frozen, target),
];
console.log(
  `transfer: fine-tuned ${(100 * accTuned).toFixed(2)}%, features frozen ${(100 * accFrozen).toFixed(2)}%, ` +
    `from scratch ${(100 * accScratch).toFixed(2)}%: +${(100 * (accTuned - accScratch)).toFixed(2)} points from transfer`,
);

// 2. Distillation on all ten digits.
const all = apps.localizationSet({ count: 15000, seed: 5 });
const test10 = apps.localizationSet({ count: 2000, seed: 6, train: false });
manualSeed(20);
const teacher = apps.canvasClassifier({ numClasses: 10, widths: [32, 64, 128, 128], hidden: 256 });
await classify(teacher, all, 3, 2e-3);
const studentOpts = { numClasses: 10, widths: [4, 8, 16, 16], hidden: 32 };
const studentEpochs = 4;
manualSeed(30);
const solo = apps.canvasClassifier(studentOpts);
await classify(solo, all, studentEpochs, 3e-3);
manualSeed(30);
const student = apps.canvasClassifier(studentOpts);
await apps.trainTask(student, all, {
  optimizer: new Adam(student.parameters(), { lr: 3e-3 }),
  epochs: studentEpochs,
  batchSize: 50,
  loss: (logits, batch) => {
    const soft = noGrad(() => teacher.forward(batch.images)) as Tensor;
    return apps.distillationLoss(logits, soft, batch.labels, { temperature: 4, alpha: 0.9 });
  },
});
const count = (m: Module) => m.parameters().reduce((n, p) => n + p.size, 0);
const [accTeacher, accSolo, accStudent] = [
  await accuracy(teacher, test10),
  await accuracy(solo, test10),
  await accuracy(student, test10),
];
console.log(
  `distillation: teacher ${(100 * accTeacher).toFixed(2)}% (${count(teacher)} parameters), ` +
    `student ${(100 * accStudent).toFixed(2)}% vs the same student trained alone ${(100 * accSolo).toFixed(2)}% ` +
    `(${count(student)} parameters): ${accStudent >= accSolo ? '+' : ''}${(100 * (accStudent - accSolo)).toFixed(2)} points`,
);
console.log(`all trained in ${((performance.now() - t0) / 1000).toFixed(0)} s`);

mkdirSync(values.out, { recursive: true });
const shown = target.batch(Array.from({ length: 16 }, (_, i) => i));
const pred = (await tuned.predict(shown.images)).argmax();
const scratchPred = (await scratch.predict(shown.images)).argmax();
const tiles = Array.from({ length: 16 }, (_, i) => ({
  image: apps.canvasImage(target.pixels, target.size, i),
  width: target.size,
  height: target.size,
  overlay: {
    caption: `tuned ${pred[i] + 5}, scratch ${scratchPred[i] + 5}`,
    captionColor: pred[i] === target.labels[i] ? '#00ff00' : '#ff3030',
    frame: pred[i] === target.labels[i] ? '#00ff00' : '#ff3030',
  },
}));
const path = join(values.out, 'transfer.png');
await apps.drawGrid(path, tiles, { columns: 8, scale: 3 });
console.log(`wrote ${path}`);
