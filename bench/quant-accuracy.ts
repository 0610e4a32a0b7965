// Accuracy of int8 post-training quantization (and of pruning, when asked) on trained models:
// the MNIST network as the main job trains it (Adam 0.003, batch 64, 3 epochs), and a ResNet-18
// (behind a learned 1x1 conv taking MNIST's one channel to three) trained one epoch on MNIST.
// Each is quantized with every observer, calibrated on 512 training images, and evaluated on
// the 10,000 test images beside its float self. `prune`: the MNIST network trained the same way,
// then half of every conv's channels removed (pruneChannels, L1), then fine-tuned 2 epochs.
//   node --import tsx bench/quant-accuracy.ts [--models mnist,resnet18] [--json out.json] [--save DIR]
// (--save: keep each trained float model as DIR/<model>.safetensors.)
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  DataLoader,
  quant,
  type Module,
  evaluate,
  fit,
  manualSeed,
  mnist,
  models,
  nn,
  optim,
  quantize,
} from '../src/index.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'mnist,resnet18' },
    json: { type: 'string' },
    save: { type: 'string' },
  },
});
const which = String(values.models).split(',');
manualSeed(0);
const train = new DataLoader(mnist({ train: true }), { batchSize: 64, shuffle: true });
const test = new DataLoader(mnist({ train: false }), { batchSize: 500 });
const calibration = new DataLoader(mnist({ train: true }), { batchSize: 64 });

async function report(name: string, model: Module, epochs: number, lr: number) {
  const t0 = performance.now();
  await fit(model, train, { optimizer: new optim.Adam(model.parameters(), { lr }), epochs, progress: false });
  const trainS = (performance.now() - t0) / 1000;
  if (values.save) model.save(`${values.save}/${name}.safetensors`);
  const float = await evaluate(model, test);
  const row: Record<string, number | string> = { model: name, trainSeconds: +trainS.toFixed(1), float: float.acc };
  for (const observer of ['minmax', 'percentile', 'entropy'] as const) {
    const q = await quantize(model, calibration, { observer, maxBatches: 8 });
    const r = await evaluate(q, test);
    row[observer] = r.acc;
  }
  console.log(JSON.stringify(row));
  return row;
}

const rows = [];
if (which.includes('mnist')) rows.push(await report('mnist-net', models.mnistNet(), 3, 0.003));
if (which.includes('resnet18')) {
  const net = new nn.Sequential(new nn.Conv2d(1, 3, 1), models.resnet18({ numClasses: 10 }));
  rows.push(await report('resnet18', net, 1, 0.001));
}
if (which.includes('prune')) {
  const net = models.mnistNet();
  await fit(net, train, { optimizer: new optim.Adam(net.parameters(), { lr: 0.003 }), epochs: 3, progress: false });
  const float = await evaluate(net, test);
  const r = quant.pruneChannels(net, { amount: 0.5, inputShape: [1, 1, 28, 28] });
  const pruned = await evaluate(net, test);
  await fit(net, train, { optimizer: new optim.Adam(net.parameters(), { lr: 0.001 }), epochs: 2, progress: false });
  const tuned = await evaluate(net, test);
  const q = await evaluate(await quantize(net, calibration, { maxBatches: 8 }), test);
  const row = {
    model: 'mnist-net pruned 50% channels',
    float: float.acc,
    pruned: pruned.acc,
    fineTuned: tuned.acc,
    fineTunedInt8: q.acc,
    parameters: r.parameters,
    macs: r.macs,
  };
  console.log(JSON.stringify(row));
  rows.push(row);
}
if (values.json) writeFileSync(values.json, JSON.stringify(rows, null, 2));
