// Knowledge transfer, two ways, each against the same network trained without it:
// fine-tuning features learnt on digits 0-4 for digits 5-9 with 100 labelled canvases per class
// (against training from scratch, and against frozen features), and distilling a teacher into
// a small student (against the student trained alone). Writes out/transfer.png.
//   npx tsx examples/transfer.ts [--epochs 3] [--train 15000] [--out out]     (--train: canvases per large set)
// The same run as `ferroconv app transfer`. How the task is put together (data, model, loss,
// training, metrics, picture) is transferRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.transferRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
