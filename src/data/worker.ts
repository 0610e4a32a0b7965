// Entry point of a DataLoader worker thread (see worker-pool.ts): rebuilds the dataset and the
// transform from workerData, then builds each requested batch with the same code as the main
// thread (collate.ts), so a batch is identical whichever thread made it.
import { parentPort, workerData } from 'node:worker_threads';
import { Tensor } from '../tensor.js';
import { loadBatch } from './collate.js';
import { type AnyDataset, Subset, TensorDataset, type WorkerSource } from './dataset.js';
import { ImageFolder } from './image-folder.js';
import { MnistDataset } from './mnist.js';
import { type Transform, transformFromSpec } from './transforms.js';
import type { WorkerInit, WorkerReply, WorkerRequest } from './worker-pool.js';

async function buildDataset(source: WorkerSource): Promise<AnyDataset> {
  switch (source.kind) {
    case 'tensor':
      return new TensorDataset(
        new Tensor(new Float32Array(source.images), source.shape),
        new Int32Array(source.labels),
      );
    case 'mnist':
      return new MnistDataset(new Uint8Array(source.pixels), source.shape, new Uint8Array(source.labels), {
        mean: source.mean,
        std: source.std,
        classes: source.classes,
      });
    case 'imageFolder':
      return ImageFolder.fromWorkerOptions(source.root, source.options);
    case 'subset':
      return new Subset(await buildDataset(source.base), source.indices);
    case 'module': {
      const mod = (await import(source.url)) as Record<string, unknown>;
      const factory = mod[source.exportName];
      if (typeof factory !== 'function')
        throw new Error(`${source.url} has no exported function '${source.exportName}'`);
      return (await (factory as (args: unknown) => AnyDataset | Promise<AnyDataset>)(source.args)) as AnyDataset;
    }
    default:
      throw new Error(`unknown dataset source kind '${(source as { kind: string }).kind}'`);
  }
}

const init = workerData as WorkerInit;
const port = parentPort!;

const ready: Promise<{ dataset: AnyDataset; transform: Transform | null }> = (async () => ({
  dataset: await buildDataset(init.source),
  transform: init.transform ? transformFromSpec(init.transform) : null,
}))();
// Reported with the first request instead; this only keeps the rejection from being unhandled.
ready.catch(() => undefined);

port.on('message', async (req: WorkerRequest) => {
  let reply: WorkerReply;
  const transfer: ArrayBuffer[] = [];
  try {
    const { dataset, transform } = await ready;
    const batch = await loadBatch(dataset, req.indices, { seed: init.seed, epoch: req.epoch, transform });
    let images = batch.images.data;
    // Only a buffer the batch owns outright can be transferred (not a view into dataset memory).
    if (
      images.byteOffset !== 0 ||
      images.byteLength !== images.buffer.byteLength ||
      !(images.buffer instanceof ArrayBuffer)
    ) {
      images = images.slice();
    }
    let labels = batch.labels;
    if (
      labels.byteOffset !== 0 ||
      labels.byteLength !== labels.buffer.byteLength ||
      !(labels.buffer instanceof ArrayBuffer)
    ) {
      labels = labels.slice();
    }
    transfer.push(images.buffer as ArrayBuffer, labels.buffer as ArrayBuffer);
    reply = { id: req.id, images, shape: batch.images.shape, labels };
  } catch (e) {
    reply = { id: req.id, error: e instanceof Error ? e.message : String(e) };
  }
  port.postMessage(reply, transfer);
});
