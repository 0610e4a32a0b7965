// Localization and multi-task learning: find and name one digit on a cluttered 64x64
// canvas with a shared CNN trunk and two heads (class logits, box), trained with cross-entropy +
// smooth-L1 + GIoU. Prints classification accuracy, mean IoU and accuracy at IoU >= 0.5 on
// canvases of MNIST's test digits; writes out/localization.png (green: right, red: wrong).
//   npx tsx examples/localization.ts [--epochs 6] [--train 20000] [--out out]     (--train: canvases)
// The same run as `ferroconv app localization`. How the task is put together (data, model, loss,
// training, metrics, picture) is localizationRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.localizationRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
