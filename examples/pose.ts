// Pose estimation by keypoint heatmaps ("simple baselines"): stick figures with 11 joints on
// noisy, cluttered 64x64 canvases; a small ResNet-style backbone with a transposed-conv head
// predicts a heatmap per joint (MSE to Gaussian targets), decoded with a sub-pixel argmax.
// Prints PCK@0.1; writes out/pose.png (predicted skeletons over the true joints).
//   npx tsx examples/pose.ts [--epochs 4] [--train 8000] [--out out]     (--train: figures)
// The same run as `ferroconv app pose`. How the task is put together (data, model, loss,
// training, metrics, picture) is poseRecipe in src/apps/recipes.ts, from the pieces in src/apps.
import { parseArgs } from 'node:util';
import { apps } from '../src/index.js';

const { values } = parseArgs({
  options: { epochs: { type: 'string' }, train: { type: 'string' }, out: { type: 'string', default: 'out' } },
});
const result = await apps.poseRecipe({
  epochs: values.epochs === undefined ? undefined : Number(values.epochs),
  train: values.train === undefined ? undefined : Number(values.train),
  out: values.out,
});
console.log(`wrote ${result.picture}`);
