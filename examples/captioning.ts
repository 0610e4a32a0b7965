// Image captioning: describe a 48x48 canvas of two digits in words ("three left of seven",
// "two above five"). A CNN encoder feeds a GRU decoder (word embeddings, GRU, linear) trained
// with teacher forcing; captions by greedy and beam search. Prints exact match and BLEU-4 on
// canvases of MNIST's test digits; writes out/captioning.png (green: exactly right).
//   npx tsx examples/captioning.ts [--epochs 10] [--train 15000] [--out out]     (--train: canvases)
// The same run as `ferroconv app captioning`. How the task is put together (data, model, loss,
// training, metrics, picture) is captioningRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.captioningRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
