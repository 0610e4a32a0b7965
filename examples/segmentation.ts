// Semantic segmentation: label every pixel of a 64x64 canvas holding 2-3 digits with its digit
// (or background), with a small fully convolutional network (strided and dilated convs,
// transposed-conv upsampling with a skip) trained with per-pixel cross-entropy + soft Dice.
// Prints mIoU and pixel accuracy; writes out/segmentation.png (top: truth, bottom: prediction).
//   npx tsx examples/segmentation.ts [--epochs 4] [--train 8000] [--out out]     (--train: canvases)
// The same run as `ferroconv app segmentation`. How the task is put together (data, model, loss,
// training, metrics, picture) is segmentationRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.segmentationRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
