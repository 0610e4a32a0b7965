// Pretrained weights by name: the ImageNet weights torchvision publishes for the zoo's models
// (pretrained-registry.ts, generated from torchvision 0.14), kept in a cache folder
// (FERROCONV_HOME, default ~/.cache/ferroconv, under weights/) under torchvision's file names.
//
// downloadWeights fetches a file once: streamed to a temporary file beside its final place, its
// SHA-256 checked against the hash prefix in its name (as torch.hub checks torchvision's files)
// and its length against Content-Length, then renamed into place; anything wrong is an Error and
// leaves nothing in the cache. FERROCONV_OFFLINE=1 never touches the network and says which file
// to put where; FERROCONV_WEIGHTS_URL replaces the download host (a mirror, or a test server).
// A file already in the cache is used as it is.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import type { Module } from '../nn/module.js';
import { readTorch } from '../io/torch.js';
import type { Tensor } from '../tensor.js';
import { TORCHVISION_WEIGHTS, type WeightsEntry } from './pretrained-registry.js';

export { IMAGENET_CLASSES } from './pretrained-registry.js';

const registry: Record<string, Record<string, WeightsEntry>> = structuredClone(TORCHVISION_WEIGHTS);

/** The cache folder of downloaded weights. */
export function weightsDir(): string {
  return join(process.env.FERROCONV_HOME || join(homedir(), '.cache', 'ferroconv'), 'weights');
}

/** The weights names a model has (DEFAULT resolves to one of them). */
export function weightsFor(model: string): string[] {
  return Object.keys(registry[model] ?? {});
}

/**
 * Adds weights to the registry (your own mirror or checkpoint): `url`'s file name must carry the
 * file's SHA-256 prefix after its last '-' (`name-<hex>.pth`), as torchvision's do.
 */
export function registerWeights(model: string, name: string, entry: { url: string; classes?: number }): void {
  if (!hashPrefix(entry.url)) throw new Error(`registerWeights: ${entry.url} has no '-<sha256 prefix>' in its name`);
  registry[model] ??= {};
  registry[model][name] = { url: entry.url, classes: entry.classes ?? 1000, default: false };
}

function entryOf(model: string, weights: string): WeightsEntry {
  const all = registry[model];
  if (!all) {
    throw new Error(
      `weights: no published weights for '${model}' (models with weights: ${Object.keys(registry).join(', ')})`,
    );
  }
  const name = weights === 'DEFAULT' ? Object.keys(all).find((k) => all[k].default) : weights;
  const e = name ? all[name] : undefined;
  if (!e)
    throw new Error(
      `weights: '${model}' has no weights '${weights}' (expected DEFAULT or ${Object.keys(all).join(', ')})`,
    );
  return e;
}

/** The hex SHA-256 prefix in a torchvision file name (`resnet50-0676ba61.pth`), or null. */
function hashPrefix(url: string): string | null {
  const m = /-([0-9a-f]{6,64})\.[a-z]+$/.exec(basename(url));
  return m ? m[1] : null;
}

/** Where a model's weights live in the cache, and the URL they come from. */
export function weightsLocation(model: string, weights = 'DEFAULT'): { path: string; url: string } {
  const e = entryOf(model, weights);
  const base = process.env.FERROCONV_WEIGHTS_URL;
  const url = base ? `${base.replace(/\/$/, '')}/${basename(e.url)}` : e.url;
  return { path: join(weightsDir(), basename(e.url)), url };
}

export interface DownloadOptions {
  /** Called as bytes arrive (total is null without a Content-Length). */
  onProgress?: (received: number, total: number | null) => void;
  /**
   * A progress bar on stderr, as torch.hub draws one. Default: when stderr is a terminal and no
   * onProgress is given.
   */
  progress?: boolean;
}

const MB = 1024 * 1024;

/** A one-line progress bar on stderr for a download (redrawn at most every 100 ms). */
function progressBar(name: string): (received: number, total: number | null, done?: boolean) => void {
  let last = 0;
  return (received, total, done = false) => {
    const now = Date.now();
    if (!done && now - last < 100) return;
    last = now;
    const size = `${(received / MB).toFixed(1)}${total ? `/${(total / MB).toFixed(1)}` : ''} MB`;
    const frac = total ? Math.min(received / total, 1) : 0;
    const bar = total ? ` [${'#'.repeat(Math.round(frac * 30)).padEnd(30, ' ')}] ${Math.round(frac * 100)}%` : '';
    process.stderr.write(`\rdownloading ${name}${bar} ${size}${done ? '\n' : ''}`);
  };
}

/** The cached file of a model's weights, downloaded first when absent. Returns its path. */
export async function downloadWeights(model: string, weights = 'DEFAULT', opts: DownloadOptions = {}): Promise<string> {
  const { path, url } = weightsLocation(model, weights);
  if (existsSync(path)) return path;
  if (process.env.FERROCONV_OFFLINE === '1') {
    throw new Error(`weights: FERROCONV_OFFLINE=1 and ${path} is absent; download ${url} and place it there`);
  }
  mkdirSync(weightsDir(), { recursive: true });
  const tmp = `${path}.${process.pid}.part`;
  const expected = hashPrefix(path);
  try {
    let res: Response;
    try {
      res = await fetch(url);
    } catch (e) {
      throw new Error(`weights: downloading ${url} failed: ${(e as Error).message}`);
    }
    if (!res.ok || !res.body) throw new Error(`weights: downloading ${url} failed: HTTP ${res.status}`);
    const length = res.headers.get('content-length');
    const total = length ? Number(length) : null;
    const hash = createHash('sha256');
    const file = await open(tmp, 'w');
    let received = 0;
    const bar = (opts.progress ?? (!opts.onProgress && process.stderr.isTTY)) ? progressBar(basename(path)) : null;
    try {
      const reader = res.body.getReader();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new Error(`weights: downloading ${url} broke off after ${received} bytes: ${(e as Error).message}`);
        }
        if (chunk.done) break;
        hash.update(chunk.value);
        await file.write(chunk.value);
        received += chunk.value.length;
        opts.onProgress?.(received, total);
        bar?.(received, total);
      }
      bar?.(received, total, true);
    } finally {
      await file.close();
    }
    if (total !== null && received !== total) {
      throw new Error(`weights: downloading ${url} got ${received} of ${total} bytes`);
    }
    const digest = hash.digest('hex');
    if (expected && !digest.startsWith(expected)) {
      throw new Error(`weights: ${basename(path)} has SHA-256 ${digest}, which does not start with ${expected}`);
    }
    renameSync(tmp, path);
    return path;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * The state dict of a model's cached weights, with the renames torchvision's loaders make
 * (DenseNet's old `norm.1` keys are `norm1`).
 */
export function cachedWeights(model: string, weights = 'DEFAULT'): Map<string, Tensor> {
  const { path, url } = weightsLocation(model, weights);
  if (!existsSync(path)) {
    throw new Error(
      `weights: ${path} is not in the cache; run \`await models.downloadWeights('${model}', '${weights}')\` ` +
        `(or place ${url} there)`,
    );
  }
  const state = readTorch(path);
  if (!model.startsWith('densenet')) return state;
  const out = new Map<string, Tensor>();
  const old = /^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$/;
  for (const [k, v] of state) {
    const m = old.exec(k);
    out.set(m ? m[1] + m[2] : k, v);
  }
  return out;
}

/** Loads a model's cached weights into `net` (built with the right class count) and sets eval mode. */
export function loadPretrained<M extends Module>(net: M, model: string, weights = 'DEFAULT'): M {
  net.loadStateDict(cachedWeights(model, weights));
  net.eval();
  return net;
}

/** A zoo factory taking `weights` besides its own options. */
export type WithWeights = (opts?: { weights?: string }) => Module;

/** GoogLeNet and Inception v3: torchvision's weights include the auxiliary heads and expect the input transform. */
export const AUX = { auxLogits: true, transformInput: true };

/**
 * `make` accepting `weights`: without it, `make` as it is; with it, the model built as torchvision
 * builds it for those weights (`extra` options) with the cached file loaded, in eval mode.
 */
export function withWeights<O extends object, M extends Module>(
  name: string,
  make: (opts?: O) => M,
  extra: Partial<O> = {},
): (opts?: O & { weights?: string }) => M {
  return (opts = {} as O & { weights?: string }) => {
    const { weights, ...rest } = opts;
    if (weights === undefined) return make(rest as O);
    return loadPretrained(make({ ...(extra as O), ...(rest as O) }), name, weights);
  };
}
