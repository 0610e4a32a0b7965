// The data pipeline: datasets (in memory, MNIST/Fashion-MNIST from IDX files, image folders
// decoded with sharp), torchvision-style transforms, and a seeded, resumable, prefetching
// DataLoader that can build batches in worker threads.
export {
  type Sample,
  type Batch,
  type Dataset,
  type AsyncDataset,
  type AnyDataset,
  type WorkerSource,
  TensorDataset,
  Subset,
  randomSplit,
  permutation,
  isAsyncDataset,
  getSample,
} from './dataset.js';
export { DataLoader, type DataLoaderOptions, type DataLoaderState } from './loader.js';
export { loadBatch, stack, type CollateOptions } from './collate.js';
export { shuffleRng, sampleRng } from './seeding.js';
export { parseIdx, readIdxFile, type IdxArray, type IdxData, DEFAULT_MAX_IDX_BYTES } from './idx.js';
export {
  mnist,
  fashionMnist,
  mnistDataDir,
  MnistDataset,
  type MnistOptions,
  type MnistDatasetOptions,
  MNIST_MEAN,
  MNIST_STD,
  MNIST_CLASSES,
  FASHION_MNIST_MEAN,
  FASHION_MNIST_STD,
  FASHION_MNIST_CLASSES,
} from './mnist.js';
export { ImageFolder, type ImageFolderOptions, IMAGE_EXTENSIONS, decodeImage } from './image-folder.js';
export * as transforms from './transforms.js';
export type { Transform, TransformSpec } from './transforms.js';
export * as functional from './functional.js';
export { toTensor, type RawImageInfo } from './functional.js';
