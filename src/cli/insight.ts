// The `ferroconv` commands that look inside a model: summary (the layer table), time (per-layer
// forward and backward timing, as `caffe time`), show (filters, feature maps, saliency as PNG)
// and filter (the classic image kernels through ferroconv's conv2d).
import type { Module } from '../nn/module.js';
import { summary } from '../insight/summary.js';
import { applyThreads, type Flags, int, parse, UsageError } from './flags.js';
import { buildModel, loadWeights, modelNames } from './models.js';

export const INSIGHT_HELP: Record<string, string> = {
  summary: `ferroconv summary --model NAME [options]

Prints the layer table: per layer its output shape, parameters, multiply-accumulates and
receptive field (size/jump/start in input pixels), then the totals (as torchinfo counts them).

  --model NAME          ${modelNames().join(', ')}
  --classes N           output classes (default 1000; 10 for mnist-net and lenet5)
  --input N,C,H,W       input shape (default 1,3,224,224; 299 for inception_v3; 1,1,28,28 for MNIST nets)
  --checkpoint FILE     load these weights first (a checkpoint.safetensors or model.safetensors)
  --depth N             deepest rows shown (default 3)
  --json                the whole summary as JSON`,
};

const MNIST_NETS = new Set(['mnist-net', 'lenet5']);

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

/** The model a look-inside command works on, and its input shape. */
export function insightModel(o: Flags, batch = 1): { model: Module; inputShape: number[] } {
  const name = String(o.model);
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
    classes: { type: 'string' },
    input: { type: 'string' },
    checkpoint: { type: 'string' },
    depth: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (o.help) return void console.log(INSIGHT_HELP.summary);
  applyThreads(o.threads);
  const { model, inputShape } = insightModel(o);
  const s = summary(model, inputShape, { depth: int('depth', o.depth, 3, 0) });
  console.log(o.json ? JSON.stringify(s) : String(s));
}
