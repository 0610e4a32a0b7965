// Looking inside a CNN: train the MNIST network for one epoch (with TensorBoard logging), then
// print its layer table and where a training step's time goes, and draw its first-layer filters,
// the feature maps of a layer, Grad-CAM and input-gradient saliency for a test digit, and the
// receptive field of one unit. Run:
//   npx tsx examples/look-inside.ts [out/look-inside]
// then `tensorboard --logdir out/look-inside` (PyPI tensorboard) to watch the run.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Adam, DataLoader, fit, manualSeed, mnist, models, profile, summary, Tensor, visualize } from '../src/index.js';

const dir = process.argv[2] ?? 'out/look-inside';
mkdirSync(dir, { recursive: true });
manualSeed(1);
const model = models.mnistNet();
const train = new DataLoader(mnist({ train: true }), { batchSize: 64, shuffle: true, seed: 1 });
const test = new DataLoader(mnist({ train: false }), { batchSize: 500 });
const run = await fit(model, train, {
  optimizer: new Adam(model.parameters(), { lr: 3e-3 }),
  epochs: 1,
  validation: test,
  logDir: dir,
  tensorboard: true,
});
console.log(
  `test accuracy ${(100 * run.history[0].val_acc).toFixed(2)}%; logs, curve.svg and TensorBoard events in ${dir}`,
);

console.log(String(summary(model, [1, 1, 28, 28])));
console.log((await profile(model, [64, 1, 28, 28], { iterations: 10 })).toString(true));

// A test digit in [0, 1] (the model's input is it normalised as in training).
const digits = mnist({ train: false, normalize: false });
const { image: digit, label } = digits.get(0);
const image = new Tensor(digit.data, [1, 1, 28, 28]);
const preprocess = (x: Tensor) =>
  new Tensor(
    Float32Array.from(x.data, (v) => (v - 0.1307) / 0.3081),
    x.shape,
  );
const pics = [
  await visualize.filters(model, { out: join(dir, 'filters.png') }),
  await visualize.features(model, image, { layer: '2', out: join(dir, 'features.png'), preprocess }),
  await visualize.gradCam(model, image, { layer: '10', out: join(dir, 'gradcam.png'), preprocess }),
  await visualize.saliency(model, image, { out: join(dir, 'saliency.png'), preprocess }),
  await visualize.receptiveFieldOverlay(model, image, {
    layer: '6',
    unit: [3, 3],
    out: join(dir, 'receptive-field.png'),
    preprocess,
  }),
];
console.log(`digit 0 is a ${label}; wrote ${pics.map((p) => p.path).join(', ')}`);
