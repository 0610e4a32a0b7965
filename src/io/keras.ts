// Keras models: the .keras zip Keras 3 saves (config.json + model.weights.h5) and the legacy HDF5
// file (.h5: a model_config attribute and a model_weights group) of Keras 2 and 3, as a ferroconv
// Module. HDF5 is read with h5wasm (the HDF5 C library compiled to WebAssembly) in a worker
// thread with a timeout (src/io/keras-hdf5.ts), the zip with fflate. The layers are the ones
// loadTfjsLayersModel runs (tfjs's format is Keras 2's): the configuration is brought to that
// form (Keras 3's inbound nodes of keras tensors become Keras 2's [layer, node, tensor] lists,
// batch_shape becomes batch_input_shape) and the weights are named `<layer>/<kernel|bias|...>`,
// so TfjsModel builds the same NCHW Module (ferroconv layouts, channels-last Flatten order kept)
// for all three formats.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzipSync } from 'fflate';
import { Tensor } from '../tensor.js';
import { spawnModuleWorker } from '../worker-script.js';
import type { Worker } from 'node:worker_threads';
import type { Hdf5Request, Hdf5Result } from './keras-hdf5.js';
import { TfjsModel } from './tfjs.js';

function fail(msg: string): never {
  throw new Error(`loadKeras: ${msg}`);
}

type Json = Record<string, unknown>;

/** A Keras 3 inbound node ({args: [keras tensors]}) as Keras 2's [[layer, node, tensor, {}], ...]. */
function legacyNode(node: unknown, layer: string): unknown[] {
  if (Array.isArray(node)) return node; // already Keras 2's form
  const args = (node as Json | null)?.args;
  if (!Array.isArray(args)) fail(`layer '${layer}': an inbound node without args`);
  const tensors = Array.isArray(args[0]) ? args[0] : args;
  return tensors.map((t) => {
    const history = ((t as Json | null)?.config as Json | undefined)?.keras_history;
    if (!Array.isArray(history) || typeof history[0] !== 'string')
      fail(`layer '${layer}': an input is not a layer's output`);
    return [history[0], history[1] ?? 0, history[2] ?? 0, {}];
  });
}

/** Keras 3's configuration in Keras 2's form, which TfjsModel reads. */
function legacyConfig(config: unknown): Json {
  const model = config as Json | null;
  if (!model || typeof model !== 'object') fail('the model configuration is not an object');
  const inner = model.config as Json | undefined;
  const layers = inner?.layers;
  if (!Array.isArray(layers)) fail('the model configuration has no layers (expected a Sequential or functional model)');
  const fixed = layers.map((l: unknown) => {
    const layer = l as Json | null;
    const c = { ...((layer?.config as Json | undefined) ?? {}) };
    if (c.batch_shape && !c.batch_input_shape) c.batch_input_shape = c.batch_shape;
    const name = typeof c.name === 'string' ? c.name : typeof layer?.name === 'string' ? layer.name : '';
    const nodes = layer?.inbound_nodes;
    const out: Json = { class_name: layer?.class_name, name, config: c };
    if (Array.isArray(nodes)) out.inbound_nodes = nodes.map((n) => legacyNode(n, name));
    return out;
  });
  // Keras 3 writes input_layers / output_layers as one [name, 0, 0] triple for a single tensor.
  const triples = (v: unknown) => (Array.isArray(v) && typeof v[0] === 'string' ? [v] : v);
  return {
    class_name: model.class_name,
    config: {
      ...inner,
      layers: fixed,
      input_layers: triples(inner?.input_layers),
      output_layers: triples(inner?.output_layers),
    },
  };
}

/** Largest entry a .keras zip may inflate to (config and weights); a bound against zip bombs. */
const MAX_ENTRY = 2 ** 31;

/** The .keras zip's config.json and model.weights.h5. */
function unzipKeras(bytes: Uint8Array): { config: Json; weights: Uint8Array } {
  let files: Record<string, Uint8Array>;
  try {
    files = unzipSync(bytes, {
      filter: (f) => {
        if (f.originalSize > MAX_ENTRY) fail(`zip entry ${f.name} inflates to ${f.originalSize} bytes`);
        return f.name === 'config.json' || f.name === 'model.weights.h5';
      },
    });
  } catch (e) {
    const msg = (e as Error).message;
    fail(msg.startsWith('loadKeras: ') ? msg.slice(11) : `not a readable .keras zip: ${msg}`);
  }
  if (!files['config.json']) fail('the .keras zip has no config.json');
  if (!files['model.weights.h5']) fail('the .keras zip has no model.weights.h5');
  let config: unknown;
  try {
    config = JSON.parse(new TextDecoder().decode(files['config.json']));
  } catch (e) {
    fail(`config.json is not JSON: ${(e as Error).message}`);
  }
  if (!config || typeof config !== 'object') fail('config.json is not an object');
  return { config: config as Json, weights: files['model.weights.h5'] };
}

/** Default time an HDF5 file may take to read before the reader gives up on it. */
const HDF5_TIMEOUT_MS = 120_000;

/**
 * The HDF5 reader's worker thread (src/io/keras-hdf5.ts), started on first use and kept for the
 * next file; requests run one at a time. A timeout or a failure of the worker itself discards
 * it (with whatever state a hostile file left h5wasm in), and the next request starts a new one.
 * Unref'd while idle, so it never holds the process open.
 */
let reader: Worker | null = null;
let queue: Promise<unknown> = Promise.resolve();

function readerWorker(): Worker {
  if (!reader) {
    const w = spawnModuleWorker(
      new URL('./keras-hdf5', import.meta.url),
      { kind: 'ferroconv-keras-hdf5' },
      'loadKeras',
    );
    w.on('exit', () => {
      if (reader === w) reader = null;
    });
    reader = w;
  }
  return reader;
}

function request(req: Hdf5Request, timeoutMs: number): Promise<Hdf5Result> {
  return new Promise<Hdf5Result>((resolve, reject) => {
    const worker = readerWorker();
    worker.ref();
    const discard = () => {
      if (reader === worker) reader = null;
      void worker.terminate();
    };
    const cleanup = () => {
      clearTimeout(timer);
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
      worker.unref();
    };
    const timer = setTimeout(() => {
      cleanup();
      discard();
      reject(new Error(`loadKeras: the HDF5 file did not read within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (m: { ok?: Hdf5Result; error?: string }) => {
      cleanup();
      if (m.ok) resolve(m.ok);
      else reject(new Error(m.error?.startsWith('loadKeras: ') ? m.error : `loadKeras: ${m.error}`));
    };
    const onError = (e: Error) => {
      cleanup();
      discard();
      reject(new Error(`loadKeras: the HDF5 reader failed: ${e.message}`));
    };
    const onExit = (code: number) => {
      cleanup();
      reject(new Error(`loadKeras: the HDF5 reader stopped (exit code ${code})`));
    };
    worker.on('message', onMessage);
    worker.on('error', onError);
    worker.on('exit', onExit);
    worker.postMessage(req);
  });
}

/** Reads HDF5 bytes in the reader's worker from a private temporary file, giving up after `timeoutMs`. */
async function runHdf5(
  bytes: Uint8Array,
  mode: Hdf5Request['mode'],
  config: unknown,
  timeoutMs: number,
): Promise<{ config?: unknown; weights: Map<string, Tensor> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ferroconv-h5-'));
  const path = join(dir, 'model.h5');
  try {
    writeFileSync(path, bytes);
    const req: Hdf5Request = { kind: 'ferroconv-keras-hdf5', path, mode, config };
    const run = queue.then(() => request(req, timeoutMs));
    queue = run.catch(() => {});
    const result = await run;
    const weights = new Map(result.weights.map((w) => [w.name, new Tensor(w.data, w.shape)] as const));
    return { config: result.config, weights };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * A Keras model from a .keras file (Keras 3) or a legacy .h5 file (Keras 2 and 3's
 * `model.save('x.h5')`), path or bytes, as a ferroconv Module taking NCHW inputs (see
 * loadTfjsLayersModel for the layers and layouts).
 */
export async function loadKeras(source: string | Uint8Array, opts: { timeoutMs?: number } = {}): Promise<TfjsModel> {
  const timeoutMs = opts.timeoutMs ?? HDF5_TIMEOUT_MS;
  let bytes: Uint8Array;
  try {
    bytes = typeof source === 'string' ? readFileSync(source) : source;
  } catch (e) {
    return fail(`${source}: ${(e as Error).message}`);
  }
  let config: unknown;
  let weights: Map<string, Tensor>;
  if (bytes[0] === 0x50 && bytes[1] === 0x4b) {
    const zip = unzipKeras(bytes);
    config = zip.config;
    ({ weights } = await runHdf5(zip.weights, 'vars', zip.config, timeoutMs));
  } else if (HDF5_SIGNATURE.every((b, i) => bytes[i] === b)) {
    ({ config, weights } = await runHdf5(bytes, 'legacy', undefined, timeoutMs));
  } else {
    return fail('neither a .keras zip nor an HDF5 file');
  }
  const model = new TfjsModel(legacyConfig(config), weights);
  model.eval();
  return model;
}
