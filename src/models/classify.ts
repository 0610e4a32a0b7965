// classify(): one image file in, the model's top-k classes out, with torchvision's ImageNet
// inference preset (resize the shorter side to 256 with antialiasing, center-crop 224, scale to
// [0, 1], normalise with ImageNet's mean and std).
import { decodeImage } from '../data/image-folder.js';
import { centerCrop, normalize } from '../data/functional.js';
import type { Module } from '../nn/module.js';
import { IMAGENET_CLASSES } from './pretrained-registry.js';
import { Tensor } from '../tensor.js';

export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export interface ClassifyOptions {
  /** How many classes to return (default 5). */
  topk?: number;
  /**
   * Class names by index; by default ImageNet's 1000 when the model gives 1000 classes, otherwise
   * `label` is the index as a string.
   */
  labels?: readonly string[];
  /** Shorter side after resizing (default 256) and the crop size (default 224). */
  resizeSize?: number;
  cropSize?: number;
}

export interface Prediction {
  index: number;
  label: string;
  probability: number;
}

/** The [1, 3, crop, crop] input torchvision's ImageNet preset makes from an image file. */
export async function preprocessImage(
  path: string,
  opts: { resizeSize?: number; cropSize?: number } = {},
): Promise<Tensor> {
  const resizeSize = opts.resizeSize ?? 256;
  const cropSize = opts.cropSize ?? 224;
  if (cropSize > resizeSize)
    throw new Error(`classify: cropSize (${cropSize}) must not exceed resizeSize (${resizeSize})`);
  const img = await decodeImage(path, resizeSize);
  const x = normalize(centerCrop(img, cropSize), IMAGENET_MEAN, IMAGENET_STD);
  return new Tensor(x.data, [1, ...x.shape]);
}

/** Classifies one image file with `model` (eval mode, no graph); returns the top-k classes. */
export async function classify(model: Module, imagePath: string, opts: ClassifyOptions = {}): Promise<Prediction[]> {
  const x = await preprocessImage(imagePath, opts);
  const logits = (await model.predict(x)).data;
  const max = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const z = exp.reduce((a, b) => a + b, 0);
  const topk = Math.min(opts.topk ?? 5, logits.length);
  const labels = opts.labels ?? (logits.length === IMAGENET_CLASSES.length ? IMAGENET_CLASSES : undefined);
  if (labels && labels.length !== logits.length) {
    throw new Error(`classify: labels has ${labels.length} names, the model gives ${logits.length} classes`);
  }
  return Array.from(logits.keys())
    .sort((a, b) => logits[b] - logits[a])
    .slice(0, topk)
    .map((index) => ({ index, label: labels?.[index] ?? String(index), probability: exp[index] / z }));
}
