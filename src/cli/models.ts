// Model names the CLI accepts, mapped to the zoo's factories.
import * as zoo from '../models/index.js';
import type { Module } from '../nn/module.js';
import { existsSync } from 'node:fs';
import { loadCheckpoint } from '../train/checkpoint.js';
import { loadSafetensors } from '../io/safetensors.js';
import { isTorchFile } from '../io/torch.js';
import { resizeToWeights } from '../quant/prune-channels.js';
import type { DataInfo } from './datasets.js';
import { UsageError } from './flags.js';

type Factory = (info: DataInfo) => Module;

const threeChannel =
  (name: string, make: (numClasses: number) => Module): Factory =>
  (info) => {
    if (info.channels !== 3) {
      throw new Error(
        `--model ${name}: expects 3-channel images, but ${info.name} has ${info.channels} ` +
          '(use mnist-net or lenet5 for MNIST)',
      );
    }
    return make(info.numClasses);
  };

const FACTORIES: Record<string, Factory> = {
  'mnist-net': (i) => zoo.mnistNet({ numClasses: i.numClasses, inChannels: i.channels }),
  lenet5: (i) => {
    if (i.channels !== 1)
      throw new Error(`--model lenet5: expects 1-channel 28x28 images, but ${i.name} has ${i.channels} channels`);
    return zoo.lenet5({ numClasses: i.numClasses });
  },
  alexnet: threeChannel('alexnet', (n) => zoo.alexnet({ numClasses: n })),
  vgg11: threeChannel('vgg11', (n) => zoo.vgg11({ numClasses: n })),
  vgg11_bn: threeChannel('vgg11_bn', (n) => zoo.vgg11Bn({ numClasses: n })),
  vgg16: threeChannel('vgg16', (n) => zoo.vgg16({ numClasses: n })),
  vgg16_bn: threeChannel('vgg16_bn', (n) => zoo.vgg16Bn({ numClasses: n })),
  googlenet: threeChannel('googlenet', (n) => zoo.googlenet({ numClasses: n })),
  resnet18: threeChannel('resnet18', (n) => zoo.resnet18({ numClasses: n })),
  resnet34: threeChannel('resnet34', (n) => zoo.resnet34({ numClasses: n })),
  resnet50: threeChannel('resnet50', (n) => zoo.resnet50({ numClasses: n })),
  densenet121: threeChannel('densenet121', (n) => zoo.densenet121({ numClasses: n })),
  squeezenet1_1: threeChannel('squeezenet1_1', (n) => zoo.squeezenet1_1({ numClasses: n })),
  mobilenet_v2: threeChannel('mobilenet_v2', (n) => zoo.mobilenetV2({ numClasses: n })),
  mobilenet_v3_small: threeChannel('mobilenet_v3_small', (n) => zoo.mobilenetV3Small({ numClasses: n })),
  mobilenet_v3_large: threeChannel('mobilenet_v3_large', (n) => zoo.mobilenetV3Large({ numClasses: n })),
  efficientnet_b0: threeChannel('efficientnet_b0', (n) => zoo.efficientnetB0({ numClasses: n })),
  shufflenet_v2_x1_0: threeChannel('shufflenet_v2_x1_0', (n) => zoo.shufflenetV2X1_0({ numClasses: n })),
  inception_v3: threeChannel('inception_v3', (n) => zoo.inceptionV3({ numClasses: n, auxLogits: false })),
};

export const modelNames = (): string[] => Object.keys(FACTORIES);

export function buildModel(name: string, info: DataInfo): Module {
  const f = FACTORIES[name];
  if (!f) throw new Error(`--model: unknown model '${name}' (expected one of ${modelNames().join(', ')})`);
  return f(info);
}

/** `--checkpoint`: a training checkpoint, or a plain weights file (safetensors, .pth). */
export function loadWeights(model: Module, path: string): void {
  if (!existsSync(path)) throw new UsageError(`--checkpoint: file not found: ${path}`);
  try {
    loadCheckpoint(path, model);
  } catch (e) {
    if (!/not a ferroconv checkpoint/.test((e as Error).message)) throw e;
    if (isTorchFile(path)) return void model.load(path);
    const { tensors, metadata } = loadSafetensors(path);
    // A model 'ferroconv prune --method channels' wrote has fewer channels than a fresh one.
    if (metadata.pruned === 'channels') resizeToWeights(model, tensors);
    model.loadStateDict(tensors);
  }
}
