// Starting a worker thread from one of ferroconv's own modules, from the compiled dist/ (the .js
// beside the caller) or from the TypeScript sources (vitest, tsx: the .ts compiled on the fly
// with tsx's API), for the DataLoader's workers and the HDF5 reader.
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** A worker running `<base>.js` (or `<base>.ts` from the sources); `who` prefixes errors. */
export function spawnModuleWorker(base: URL, workerData: unknown, who: string, options: WorkerOptions = {}): Worker {
  const js = new URL(`${base.href}.js`);
  if (existsSync(fileURLToPath(js))) return new Worker(js, { ...options, workerData });
  const ts = new URL(`${base.href}.ts`);
  if (!existsSync(fileURLToPath(ts))) throw new Error(`${who}: worker script ${fileURLToPath(js)} not found`);
  const api = tsxApi(who);
  const href = JSON.stringify(ts.href);
  const code = `import(${JSON.stringify(api)}).then((m) => m.tsImport(${href}, ${href}))`;
  return new Worker(code, { ...options, eval: true, workerData });
}

function tsxApi(who: string): string {
  try {
    const pkgPath = createRequire(import.meta.url).resolve('tsx/package.json');
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as {
      exports: Record<string, { import: { default: string } }>;
    };
    return pathToFileURL(join(dirname(pkgPath), pkg.exports['./esm/api'].import.default)).href;
  } catch (e) {
    throw new Error(
      `${who}: a worker from the TypeScript sources needs the 'tsx' package (or run the compiled dist/): ` +
        `${(e as Error).message}`,
    );
  }
}
