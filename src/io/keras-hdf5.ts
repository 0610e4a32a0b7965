// The HDF5 half of loadKeras (src/io/keras.ts), run in a worker thread: h5wasm (the HDF5 C
// library compiled to WebAssembly) reads the file there, so a hostile file that sends the C
// library into a long loop or an abort() costs a worker, which the caller times out and
// discards, never the main thread or its event loop.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';

type Json = Record<string, unknown>;

/** What the worker sends back: the model configuration (legacy files) and each weight. */
export interface Hdf5Result {
  config?: unknown;
  weights: { name: string; shape: number[]; data: Float32Array }[];
}

export interface Hdf5Request {
  kind: 'ferroconv-keras-hdf5';
  path: string;
  /** 'legacy': model_config + model_weights; 'vars': Keras 3's model.weights.h5. */
  mode: 'legacy' | 'vars';
  /** For 'vars', and for legacy files' DepthwiseConv2D names: the model configuration. */
  config?: unknown;
}

function fail(msg: string): never {
  throw new Error(`loadKeras: ${msg}`);
}

/** The names Keras 3 gives a layer's variables, in the order model.weights.h5 stores them. */
export function variableNames(className: string, config: Json): string[] {
  switch (className) {
    case 'Conv2D':
    case 'Conv2DTranspose':
    case 'Dense':
      return ['kernel', 'bias'];
    case 'DepthwiseConv2D':
      return ['depthwise_kernel', 'bias'];
    case 'SeparableConv2D':
      return ['depthwise_kernel', 'pointwise_kernel', 'bias'];
    case 'BatchNormalization':
      return [
        ...(config.scale !== false ? ['gamma'] : []),
        ...(config.center !== false ? ['beta'] : []),
        'moving_mean',
        'moving_variance',
      ];
    default:
      return [];
  }
}

type H5 = typeof import('h5wasm/node').default;

type H5File = InstanceType<H5['File']>;
type H5Group = InstanceType<H5['Group']>;

type Weight = Hdf5Result['weights'][number];

/** A float dataset (Keras stores float32; float64 and float16 are converted). */
function tensorOf(lib: H5, name: string, entity: unknown, what: string): Weight {
  if (!(entity instanceof lib.Dataset)) fail(`${what} is not a dataset`);
  const shape = (entity.shape ?? []).map(Number);
  const n = shape.reduce((a, d) => a * d, 1);
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0) || n > 2 ** 31) fail(`${what}: shape [${shape}]`);
  const meta = entity.metadata;
  if (meta.type !== 1) fail(`${what}: expected floats, got HDF5 type class ${meta.type}`);
  const value = entity.value;
  if (!ArrayBuffer.isView(value) || (value as unknown as ArrayLike<number>).length !== n) {
    fail(`${what}: ${n} values expected`);
  }
  return { name, shape, data: Float32Array.from(value as unknown as ArrayLike<number>) };
}

function stringList(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  return Array.isArray(v) ? v.map(String) : [];
}

/** Legacy .h5: the model_config attribute and model_weights/<layer>/<weight name> datasets. */
function readLegacy(lib: H5, file: H5File): Hdf5Result {
  const attr = file.attrs.model_config;
  if (!attr) fail('the HDF5 file has no model_config (weights only, as save_weights writes? load them into a model)');
  let config: unknown;
  try {
    config = JSON.parse(String(attr.value));
  } catch (e) {
    fail(`model_config is not JSON: ${(e as Error).message}`);
  }
  const classes = new Map<string, string>();
  for (const l of (((config as Json | null)?.config as Json | undefined)?.layers ?? []) as Json[]) {
    const name = (l?.config as Json | undefined)?.name;
    if (typeof name === 'string') classes.set(name, String(l.class_name));
  }
  const weights: Weight[] = [];
  const root = file.get('model_weights');
  if (!(root instanceof lib.Group)) fail('the HDF5 file has no model_weights group');
  for (const layer of stringList(root.attrs.layer_names?.value)) {
    const group = root.get(layer);
    if (!(group instanceof lib.Group)) fail(`model_weights has no group '${layer}'`);
    for (const name of stringList(group.attrs.weight_names?.value)) {
      // 'conv2d/kernel:0' (Keras 2) or 'sequential/conv2d/kernel' (Keras 3): the last part names it.
      let suffix = name.split('/').at(-1)?.replace(/:\d+$/, '') ?? '';
      // Keras 3 calls a DepthwiseConv2D's kernel `kernel`, Keras 2 `depthwise_kernel`.
      if (suffix === 'kernel' && classes.get(layer) === 'DepthwiseConv2D') suffix = 'depthwise_kernel';
      weights.push(tensorOf(lib, `${layer}/${suffix}`, group.get(name), `weight '${layer}/${name}'`));
    }
  }
  return { config, weights };
}

/** Keras 3's model.weights.h5: layers/<path>/vars/<i>, the group's `name` attribute the layer's name. */
function readVars(lib: H5, file: H5File, config: Json): Weight[] {
  const classes = new Map<string, { className: string; config: Json }>();
  const layers = ((config.config as Json | undefined)?.layers ?? []) as Json[];
  for (const l of layers) {
    const c = (l?.config ?? {}) as Json;
    if (typeof c.name === 'string') classes.set(c.name, { className: String(l.class_name), config: c });
  }
  const weights: Weight[] = [];
  const root = file.get('layers');
  if (!(root instanceof lib.Group)) fail("model.weights.h5 has no 'layers' group");
  for (const key of root.keys()) {
    const vars = (root.get(key) as H5Group | null)?.get?.('vars');
    if (!(vars instanceof lib.Group)) continue;
    const layer = String(vars.attrs.name?.value ?? key);
    const count = vars.keys().length;
    if (count === 0) continue;
    const spec = classes.get(layer) ?? fail(`model.weights.h5 holds weights of '${layer}', which the model lacks`);
    const names = variableNames(spec.className, spec.config);
    if (names.length !== count)
      fail(`layer '${layer}' (${spec.className}): ${count} variables, expected ${names.length}`);
    names.forEach((n, i) => {
      weights.push(tensorOf(lib, `${layer}/${n}`, vars.get(String(i)), `weight '${layer}/${n}'`));
    });
  }
  return weights;
}

/** Reads the request's file with h5wasm. */
export async function readHdf5(req: Hdf5Request): Promise<Hdf5Result> {
  const lib = (await import('h5wasm/node')).default;
  await lib.ready;
  let file: H5File;
  try {
    file = new lib.File(req.path, 'r');
  } catch (e) {
    return fail(`not a readable HDF5 file: ${(e as Error).message}`);
  }
  try {
    if (req.mode === 'legacy') return readLegacy(lib, file);
    return { weights: readVars(lib, file, req.config as Json) };
  } finally {
    file.close();
  }
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === 'ferroconv-keras-hdf5') {
  // One request at a time (the caller queues them): read, answer, wait for the next.
  parentPort?.on('message', (req: Hdf5Request) => {
    readHdf5(req).then(
      (r) =>
        parentPort?.postMessage(
          { ok: r },
          r.weights.map((x) => x.data.buffer as ArrayBuffer),
        ),
      (e: unknown) => parentPort?.postMessage({ error: e instanceof Error ? e.message : String(e) }),
    );
  });
}
