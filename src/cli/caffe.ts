// `ferroconv train --solver solver.prototxt`: a Caffe net and solver trained on a dataset the CLI
// knows. The Data layers' LMDB/LevelDB sources cannot be read here, so the net's data layers are
// fed from --dataset (MNIST or Fashion-MNIST as 0..255 pixels), through each layer's
// transform_param as Caffe applies it: (pixel - mean) * scale, the mean from mean_value or a
// binaryproto mean_file. Training batches are shuffled (seeded); the test batches cycle through
// the test split in order, as a Caffe test net's data layer does.
import { readFileSync } from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { DataLoader, fashionMnist, mnist, Subset, type AnyDataset, type Batch } from '../data/index.js';
import { BlobProtoSchema } from '../io/caffe/gen/caffe_pb.js';
import type { CaffeDataLayer } from '../io/caffe/import.js';
import type { CaffeFeed, CaffeSolver } from '../io/caffe/solver.js';
import { Tensor } from '../tensor.js';

/** The mean a data layer subtracts, per pixel ([C * H * W], broadcast) or per channel. */
function meanOf(layer: CaffeDataLayer): { perPixel: Float32Array | null; perChannel: number[] } {
  if (layer.meanFile && layer.meanValue.length) {
    throw new Error(`data layer '${layer.name}': mean_file and mean_value cannot both be given`);
  }
  if (!layer.meanFile) return { perPixel: null, perChannel: layer.meanValue };
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(layer.meanFile);
  } catch (e) {
    throw new Error(`data layer '${layer.name}': mean_file ${layer.meanFile}: ${(e as Error).message}`);
  }
  const blob = fromBinary(BlobProtoSchema, bytes);
  return { perPixel: Float32Array.from(blob.data), perChannel: [] };
}

/** images [N, C, H, W] in [0, 1] -> Caffe's transformed data. */
function transformer(layer: CaffeDataLayer): (x: Tensor) => Tensor {
  if (layer.cropSize || layer.mirror) {
    throw new Error(`data layer '${layer.name}': crop_size and mirror are not supported by 'ferroconv train --solver'`);
  }
  const { perPixel, perChannel } = meanOf(layer);
  return (x) => {
    const [, c, h, w] = x.shape;
    const plane = h * w;
    if (perPixel && perPixel.length !== c * plane) {
      throw new Error(
        `data layer '${layer.name}': the mean file holds ${perPixel.length} values, the images ${c * plane}`,
      );
    }
    if (perChannel.length > 1 && perChannel.length !== c) {
      throw new Error(`data layer '${layer.name}': ${perChannel.length} mean values for ${c} channels`);
    }
    const out = new Float32Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const ch = Math.floor(i / plane) % c;
      const mean = perPixel ? perPixel[i % (c * plane)] : (perChannel[perChannel.length > 1 ? ch : 0] ?? 0);
      out[i] = (255 * x.data[i] - mean) * layer.scale;
    }
    return new Tensor(out, x.shape);
  };
}

function feedOf(layer: CaffeDataLayer, transform: (x: Tensor) => Tensor, b: Batch): CaffeFeed {
  const feed: CaffeFeed = { [layer.tops[0]]: transform(b.images) };
  if (layer.tops[1]) feed[layer.tops[1]] = new Tensor(Float32Array.from(b.labels), [b.labels.length]);
  return feed;
}

/** An endless stream of batches: the loader's epochs one after another. */
function cycle(loader: DataLoader): () => Promise<Batch> {
  let it: AsyncIterator<Batch> | null = null;
  return async () => {
    for (let tries = 0; tries < 2; tries++) {
      it ??= loader[Symbol.asyncIterator]();
      const r = await it.next();
      if (!r.done) return r.value;
      it = null;
    }
    throw new Error('the dataset yields no batches');
  };
}

function dataLayer(net: CaffeSolver['net'], what: string): CaffeDataLayer {
  const layer = net.dataLayers[0];
  if (!layer) throw new Error(`the ${what} net has no data layer to feed (Data, ImageData, MemoryData, Input ...)`);
  if (!layer.batchSize) throw new Error(`data layer '${layer.name}' of the ${what} net declares no batch_size`);
  return layer;
}

export interface SolverData {
  train: () => Promise<CaffeFeed>;
  test: (index: number) => Promise<CaffeFeed[]>;
  trainSize: number;
  testSize: number;
}

/** Feeds for a solver's train and test nets from MNIST or Fashion-MNIST. */
export function solverData(
  solver: CaffeSolver,
  o: { dataset: string; dataDir?: string; limit?: number; seed: number },
): SolverData {
  if (o.dataset !== 'mnist' && o.dataset !== 'fashion-mnist') {
    throw new Error(`--dataset: 'ferroconv train --solver' reads mnist or fashion-mnist, got '${o.dataset}'`);
  }
  if (o.dataset === 'fashion-mnist' && !o.dataDir) {
    throw new Error('--dataset fashion-mnist: give --data-dir, a folder with the Fashion-MNIST IDX files');
  }
  const load = (train: boolean): AnyDataset =>
    o.dataset === 'mnist'
      ? mnist({ train, dir: o.dataDir, normalize: false })
      : fashionMnist({ train, dir: o.dataDir!, normalize: false });
  let trainSet = load(true);
  if (o.limit !== undefined && o.limit < trainSet.length) {
    trainSet = new Subset(
      trainSet,
      Array.from({ length: o.limit }, (_, i) => i),
    );
  }
  const testSet = load(false);
  const trainLayer = dataLayer(solver.net, 'train');
  const trainT = transformer(trainLayer);
  const nextTrain = cycle(new DataLoader(trainSet, { batchSize: trainLayer.batchSize!, shuffle: true, seed: o.seed }));
  const tests = solver.testNets.map((net, i) => {
    const layer = dataLayer(net, `test #${i}`);
    const t = transformer(layer);
    return { layer, t, next: cycle(new DataLoader(testSet, { batchSize: layer.batchSize! })) };
  });
  return {
    train: async () => feedOf(trainLayer, trainT, await nextTrain()),
    test: async (index) => {
      const { layer, t, next } = tests[index];
      const out: CaffeFeed[] = [];
      for (let k = 0; k < solver.param.testIter[index]; k++) out.push(feedOf(layer, t, await next()));
      return out;
    },
    trainSize: trainSet.length,
    testSize: testSet.length,
  };
}
