// Identification and verification, as face recognition: 100 identities (the numbers 00-99, in
// new handwriting every time); an embedding CNN trained on 80 of them with batch-hard triplet +
// ArcFace losses; verification, ROC AUC, EER and retrieval measured on the 20 never seen in
// training. Writes out/identification.png: 8 unseen queries and their 5 nearest images.
//   npx tsx examples/identification.ts [--epochs 4] [--train 150] [--out out]     (--train: images per training identity)
// The same run as `ferroconv app identification`. How the task is put together (data, model, loss,
// training, metrics, picture) is identificationRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.identificationRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
