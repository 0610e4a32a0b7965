// The `ferroconv` commands that look inside a model: summary (the layer table), time (per-layer
// forward and backward timing, as `caffe time`), show (filters, feature maps, saliency as PNG)
// and filter (the classic image kernels through ferroconv's conv2d).
import { existsSync } from 'node:fs';
import type { Module } from '../nn/module.js';
import { summary } from '../insight/summary.js';
import { filter, forDisplay, isZeroSum, type KernelRows, kernelNames } from '../insight/kernels.js';
import { readImage, writeImage } from '../insight/image.js';
import * as visualize from '../insight/visualize.js';
import { MNIST_MEAN, MNIST_STD, mnist } from '../data/mnist.js';
import * as F from '../data/functional.js';
import { averageChannels, IMAGENET_MEAN, IMAGENET_STD } from './datasets.js';
import { loadOnnx } from '../io/onnx/import.js';
import { profile } from '../insight/profile.js';
import { Tensor } from '../tensor.js';
import { applyThreads, type Flags, int, parse, UsageError } from './flags.js';
import { buildModel, loadWeights, modelNames } from './models.js';

export const INSIGHT_HELP: Record<string, string> = {
  summary: `ferroconv summary --model NAME [options]

Prints the layer table: per layer its output shape, parameters, multiply-accumulates and
receptive field (size/jump/start in input pixels), then the totals (as torchinfo counts them).

  --model NAME|FILE     ${modelNames().join(', ')}, or an .onnx file
  --classes N           output classes (default 1000; 10 for mnist-net and lenet5)
  --input N,C,H,W       input shape (default 1,3,224,224; 299 for inception_v3; 1,1,28,28 for MNIST
                        nets; an ONNX file's declared shape)
  --checkpoint FILE     load these weights first (a checkpoint.safetensors or model.safetensors)
  --depth N             deepest rows shown (default 3)
  --json                the whole summary as JSON`,
  time: `ferroconv time --model NAME [--batch N] [--iterations N] [options]

Times a training step layer by layer, as 'caffe time': each layer's forward and backward time
(median over the iterations), its share of the step, GFLOP/s and the algorithm of each
convolution (Winograd's GFLOP/s count the direct method's operations), and the whole step.

  --model NAME|FILE     ${modelNames().join(', ')}, or an .onnx file
  --batch N             batch size (default 1)
  --input N,C,H,W       input shape instead (default: the model's, at --batch)
  --classes N           output classes (default 1000; 10 for mnist-net and lenet5)
  --iterations N        timed iterations (default 20), after --warmup N untimed ones (default 2)
  --forward-only        no backward pass
  --eval                batch norm and dropout in eval mode (default: train mode, as a step)
  --sort                slowest layers first
  --threads N           kernel threads
  --json                the whole result as JSON`,
  filter: `ferroconv filter --kernel NAME IN.png OUT.png

Convolves an image with a classic kernel through ferroconv's conv2d, each colour channel on its
own, and writes the result (a zero-sum kernel's signed output around mid-grey).

  --kernel NAME         ${kernelNames().join(', ')};
                        'all' for a grid of every kernel; or rows such as '0,-1,0;-1,5,-1;0,-1,0'
  --border MODE         edge (default), reflect or constant (zeros)
  --grey                convert the image to grey first`,
  show: `ferroconv show filters|features|gradcam|saliency|rf --model NAME --out OUT.png [options]

Pictures of what a model learned and looks at:
  filters    the filters of the first conv layer (or --layer) as a grid
  features   the feature maps of --layer for the image
  gradcam    Grad-CAM: where the evidence for a class is, as a heat map over the image
  saliency   |d score / d pixel| for a class
  rf         the receptive field of one unit of --layer, drawn on the image

  --model NAME          ${modelNames().join(', ')}
  --checkpoint FILE     the weights (a checkpoint.safetensors or model.safetensors); without it
                        the model's random initialisation is shown
  --classes N           output classes (default 1000; 10 for mnist-net and lenet5)
  --image FILE          the input image (resized to the model's input; ImageNet-normalised for
                        3-channel models). For mnist-net and lenet5 the default is an MNIST test digit
  --index N             which MNIST test digit (default 0)
  --layer PATH          a layer's state-dict path, e.g. layer4 or features.0
  --class K             the class to explain (default: the top class)
  --unit Y,X            the unit for rf (default: the centre one)
  --out FILE            the PNG to write (required)`,
};

const MNIST_NETS = new Set(['mnist-net', 'lenet5']);

/** The flags of insightModel, taken by summary, time and show. */
const MODEL_FLAGS = {
  classes: { type: 'string' },
  input: { type: 'string' },
  checkpoint: { type: 'string' },
} as const;

/** Shape from `--input 1,3,224,224`. */
function shapeFlag(v: unknown): number[] {
  const parts = String(v)
    .split(',')
    .map((d) => (/^\s*\d+\s*$/.test(d) ? Number(d) : Number.NaN));
  if (parts.length < 2 || !parts.every((d) => Number.isInteger(d) && d > 0)) {
    throw new UsageError(`--input: expected positive integers such as 1,3,224,224, got '${v}'`);
  }
  return parts;
}

/**
 * The model a look-inside command works on, and its input shape: a zoo model by name (with
 * --checkpoint's weights) or an ONNX file (its declared input shape, the batch from `batch`).
 */
export async function insightModel(o: Flags, batch = 1): Promise<{ model: Module; inputShape: number[] }> {
  const name = String(o.model);
  if (name.endsWith('.onnx')) {
    if (!existsSync(name)) throw new UsageError(`--model: file not found: ${name}`);
    const model = await loadOnnx(name);
    if (o.input) return { model, inputShape: shapeFlag(o.input) };
    const declared = model.inputShapes[0];
    const shape = declared?.map((d, i) => (d > 0 ? d : i === 0 ? batch : Number.NaN));
    if (!shape || shape.length === 0 || shape.some(Number.isNaN)) {
      throw new UsageError(`--input is required: ${name} does not declare a fixed input shape`);
    }
    if (declared![0] > 0 && batch !== 1) shape[0] = batch;
    return { model, inputShape: shape };
  }
  const mnist = MNIST_NETS.has(name);
  const numClasses = int('classes', o.classes, mnist ? 10 : 1000);
  const channels = mnist ? 1 : 3;
  const model = buildModel(name, {
    name: mnist ? 'mnist' : 'images',
    channels,
    numClasses,
    classes: [],
    trainSize: 0,
    testSize: 0,
    loadImage: () => Promise.reject(new Error('no data set')),
  });
  if (o.checkpoint) loadWeights(model, String(o.checkpoint));
  const size = mnist ? 28 : name === 'inception_v3' ? 299 : 224;
  const inputShape = o.input ? shapeFlag(o.input) : [batch, channels, size, size];
  return { model, inputShape };
}

export async function summaryCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('summary', argv, {
    ...MODEL_FLAGS,
    depth: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (o.help) return void console.log(INSIGHT_HELP.summary);
  applyThreads(o.threads);
  const { model, inputShape } = await insightModel(o);
  const s = summary(model, inputShape, { depth: int('depth', o.depth, 3, 0) });
  console.log(o.json ? JSON.stringify(s) : String(s));
}

/** Rows of weights from `a,b,c;d,e,f;g,h,i`, or a kernel name. */
function kernelFlag(v: unknown): string | KernelRows {
  const text = String(v);
  if (!text.includes(',') && !text.includes(';')) return text;
  const rows = text.split(';').map((r) => r.split(',').map((x) => (x.trim() === '' ? Number.NaN : Number(x))));
  if (!rows.every((r) => r.every(Number.isFinite))) {
    throw new UsageError(`--kernel: expected a name or rows such as '0,-1,0;-1,5,-1;0,-1,0', got '${text}'`);
  }
  return rows;
}

export async function filterCmd(argv: string[]): Promise<void> {
  const { values: o, positionals } = parse('filter', argv, {
    kernel: { type: 'string' },
    border: { type: 'string', default: 'edge' },
    grey: { type: 'boolean' },
  });
  if (o.help) return void console.log(INSIGHT_HELP.filter);
  if (!o.kernel) throw new UsageError(`--kernel is required (see 'ferroconv filter --help')`);
  if (positionals.length !== 2) throw new UsageError(`expected IN.png OUT.png (see 'ferroconv filter --help')`);
  const [input, output] = positionals;
  if (!existsSync(input)) throw new UsageError(`image not found: ${input}`);
  const border = String(o.border);
  if (!['edge', 'reflect', 'constant'].includes(border)) {
    throw new UsageError(`--border: expected edge, reflect or constant, got '${border}'`);
  }
  applyThreads(o.threads);
  let image = await readImage(input);
  if (o.grey) image = averageChannels(image);
  const opts = { border: border as 'edge' | 'reflect' | 'constant' };
  if (o.kernel === 'all') {
    const r = await visualize.kernels(image, { ...opts, out: output });
    return void console.log(`wrote ${output} (${r.kernels.length} kernels, ${r.width}x${r.height})`);
  }
  const kernel = kernelFlag(o.kernel);
  const y = filter(image, kernel as KernelRows, opts);
  await writeImage(output, forDisplay(y, isZeroSum(kernel as KernelRows)));
  console.log(
    `wrote ${output} (${typeof kernel === 'string' ? kernel : `${kernel.length}x${kernel[0].length} kernel`})`,
  );
}

const SHOW = ['filters', 'features', 'gradcam', 'saliency', 'rf'];

/** The picture's input: [1, C, H, W] in [0, 1], and how the model wants it normalised. */
async function showImage(
  o: Flags,
  inputShape: number[],
): Promise<{ image: Tensor; preprocess: (x: Tensor) => Tensor }> {
  const [, c, h, w] = inputShape;
  // As the CLI's data sets normalise (cli/datasets.ts): MNIST's statistics for 1 channel,
  // ImageNet's for 3.
  const [mean, std] = c === 1 ? [MNIST_MEAN, MNIST_STD] : [IMAGENET_MEAN, IMAGENET_STD];
  const preprocess = (x: Tensor) => F.normalize(x, mean, std);
  let image: Tensor;
  if (o.image) {
    if (!existsSync(String(o.image))) throw new UsageError(`--image: file not found: ${o.image}`);
    image = await readImage(String(o.image), [h, w]);
    if (c === 1) image = averageChannels(image);
  } else if (c === 1) {
    const test = mnist({ train: false, normalize: false });
    const index = int('index', o.index, 0, 0);
    if (index >= test.length) throw new UsageError(`--index: the MNIST test set has ${test.length} digits`);
    const { image: digit } = test.get(index);
    image = new Tensor(digit.data, [1, 1, 28, 28]);
  } else {
    throw new UsageError(`--image is required for a ${c}-channel model (see 'ferroconv show --help')`);
  }
  return { image, preprocess };
}

export async function showCmd(argv: string[]): Promise<void> {
  const { values: o, positionals } = parse('show', argv, {
    ...MODEL_FLAGS,
    image: { type: 'string' },
    index: { type: 'string' },
    layer: { type: 'string' },
    class: { type: 'string' },
    unit: { type: 'string' },
    out: { type: 'string' },
  });
  if (o.help) return void console.log(INSIGHT_HELP.show);
  const what = positionals[0];
  if (positionals.length !== 1 || !SHOW.includes(what)) {
    throw new UsageError(`expected one of ${SHOW.join(', ')} (see 'ferroconv show --help')`);
  }
  if (!o.out) throw new UsageError(`--out is required (see 'ferroconv show --help')`);
  applyThreads(o.threads);
  const { model, inputShape } = await insightModel(o);
  const out = String(o.out);
  const layer = o.layer === undefined ? undefined : String(o.layer);
  const classIndex = o.class === undefined ? undefined : int('class', o.class, 0, 0);
  if (what === 'filters') {
    const r = await visualize.filters(model, { layer, out });
    return void console.log(`wrote ${out}: ${r.count} filters of ${r.layer} (${r.width}x${r.height})`);
  }
  const { image, preprocess } = await showImage(o, inputShape);
  if (what === 'features' || what === 'rf') {
    if (!layer) throw new UsageError(`--layer is required for ${what} (see 'ferroconv show --help')`);
    if (what === 'features') {
      const r = await visualize.features(model, image, { layer, out, preprocess });
      return void console.log(`wrote ${out}: ${layer} [${r.shape.join(', ')}] (${r.width}x${r.height})`);
    }
    const unit = o.unit === undefined ? undefined : (shapeFlag(o.unit) as [number, number]);
    const r = await visualize.receptiveFieldOverlay(model, image, { layer, unit, out, preprocess });
    return void console.log(
      `wrote ${out}: ${layer} unit [${r.unit.join(', ')}] sees [${r.box.join(', ')}] (x1, y1, x2, y2)`,
    );
  }
  const r =
    what === 'gradcam'
      ? await visualize.gradCam(model, image, { layer, classIndex, out, preprocess })
      : await visualize.saliency(model, image, { classIndex, out, preprocess });
  console.log(`wrote ${out}: ${what} for class ${r.classIndex} (score ${r.score.toFixed(3)})`);
}

export async function timeCmd(argv: string[]): Promise<void> {
  const { values: o } = parse('time', argv, {
    ...MODEL_FLAGS,
    batch: { type: 'string' },
    iterations: { type: 'string' },
    warmup: { type: 'string' },
    'forward-only': { type: 'boolean' },
    eval: { type: 'boolean' },
    sort: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (o.help) return void console.log(INSIGHT_HELP.time);
  applyThreads(o.threads);
  const { model, inputShape } = await insightModel(o, int('batch', o.batch, 1));
  const r = await profile(model, inputShape, {
    iterations: int('iterations', o.iterations, 20),
    warmup: int('warmup', o.warmup, 2, 0),
    backward: !o['forward-only'],
    mode: o.eval ? 'eval' : 'train',
  });
  console.log(o.json ? JSON.stringify(r) : r.toString(o.sort === true));
}
