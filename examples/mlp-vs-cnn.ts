// MLP versus CNN on MNIST and on shifted MNIST: what "connections cutting, weight sharing" buys.
// A multilayer perceptron and a small CNN with about the same number of parameters are trained
// on MNIST as published (digits centred) and on shifted MNIST (each digit moved by up to 6
// pixels in each direction, a new shift every time it is seen), then tested on both test sets.
// The MLP has one weight per input pixel per hidden unit: a digit it saw in one place it must
// learn again in another. The CNN's convolutions share their weights across positions and its
// pooling forgets exact positions, so it generalises across shifts. Run:
//   npx tsx examples/mlp-vs-cnn.ts [--epochs 2] [--limit N (training images; default all 60,000)]
import { parseArgs } from 'node:util';
import {
  Adam,
  Conv2d,
  DataLoader,
  evaluate,
  Flatten,
  fit,
  Linear,
  MaxPool2d,
  manualSeed,
  mnist,
  ReLU,
  Sequential,
  Subset,
  transforms,
} from '../src/index.js';

const { values } = parseArgs({ options: { epochs: { type: 'string', default: '2' }, limit: { type: 'string' } } });
const epochs = Number(values.epochs);
const limit = values.limit === undefined ? undefined : Number(values.limit);

// The 0 of the digits' background after normalisation, so that shifting pads with background.
const MEAN = 0.1307;
const STD = 0.3081;
const shift = transforms.compose([transforms.randomCrop({ size: 28, padding: 6 }), transforms.normalize(MEAN, STD)]);
const centred = transforms.normalize(MEAN, STD);

const data = (train: boolean, shifted: boolean, seed: number) => {
  const all = mnist({ train, normalize: false });
  const set =
    train && limit !== undefined
      ? new Subset(
          all,
          Array.from({ length: limit }, (_, i) => i),
        )
      : all;
  return new DataLoader(set, {
    batchSize: train ? 64 : 500,
    shuffle: train,
    seed,
    transform: shifted ? shift : centred,
  });
};

// 784 -> 36 -> 10: 28,630 parameters.
const mlp = () => new Sequential(new Flatten(), new Linear(784, 36), new ReLU(), new Linear(36, 10));
// Two 5x5 conv + pool stages, a 3x3 conv pooled to one value per channel, a linear layer: 22,826
// parameters.
const cnn = () =>
  new Sequential(
    new Conv2d(1, 16, 5, { padding: 2 }),
    new ReLU(),
    new MaxPool2d(2),
    new Conv2d(16, 32, 5, { padding: 2 }),
    new ReLU(),
    new MaxPool2d(2),
    new Conv2d(32, 32, 3, { padding: 1 }),
    new ReLU(),
    new MaxPool2d(7),
    new Flatten(),
    new Linear(32, 10),
  );

const rows: string[][] = [];
for (const trainShifted of [false, true]) {
  for (const [name, make] of [
    ['MLP', mlp],
    ['CNN', cnn],
  ] as const) {
    manualSeed(1);
    const model = make();
    const t0 = performance.now();
    await fit(model, data(true, trainShifted, 1), {
      optimizer: new Adam(model.parameters(), { lr: 2e-3 }),
      epochs,
      progress: false,
    });
    const seconds = (performance.now() - t0) / 1000;
    const plain = await evaluate(model, data(false, false, 2));
    const moved = await evaluate(model, data(false, true, 3));
    const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
    rows.push([
      name,
      model.numParameters().toLocaleString('en-US'),
      trainShifted ? 'shifted MNIST' : 'MNIST',
      pct(plain.acc),
      pct(moved.acc),
      `${seconds.toFixed(0)} s`,
    ]);
    console.log(rows.at(-1)!.join(' | '));
  }
}
const head = ['model', 'parameters', 'trained on', 'test: MNIST', 'test: shifted', 'training'];
console.log(`\n| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
