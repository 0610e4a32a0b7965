// The peers the comparison measures ferroconv against, found (never installed) at run time:
//   PyTorch       Debian's python3-torch, run by /usr/bin/python3 bench/peers/torch_bench.py
//   ORT           onnxruntime-node, from bench/.peers/node_modules (`npm run bench:peers`)
//   tfjs-wasm     @tensorflow/tfjs + @tensorflow/tfjs-backend-wasm, from the same folder
// A peer that is missing becomes a `Peer` with `error` set and a hint saying how to install it.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = dirname(dirname(fileURLToPath(import.meta.url)));
export const PEERS_DIR = join(BENCH_DIR, '.peers');
export const CACHE_DIR = join(BENCH_DIR, '.cache');
/** Debian's python3 (python3-torch); BENCH_PYTHON overrides it (e.g. a venv with torch). */
export const PYTHON = process.env.BENCH_PYTHON ?? '/usr/bin/python3';

export const INSTALL_HINT = {
  torch: 'apt-get install python3-torch python3-torchvision (Debian), then re-run',
  ort: 'npm run bench:peers (installs onnxruntime-node into bench/.peers, package.json untouched)',
  tfjs: 'npm run bench:peers (installs @tensorflow/tfjs + tfjs-backend-wasm into bench/.peers)',
};

export interface Peer<T> {
  name: string;
  version?: string;
  /** Why it is unavailable, with the install hint. */
  error?: string;
  api?: T;
  notes: string[];
}

/**
 * Whether the peers' thread pools may spin-wait between parallel regions (their default). On a
 * machine shared with other work, spinning OpenMP (torch) and ORT threads fight the neighbours for
 * the cores and lose badly (GoogLeNet at batch 1 in torch ran 7x slower on a loaded 2-core box);
 * the driver turns spinning off there, so the comparison measures the libraries, not spin policy.
 * ferroconv's rayon workers sleep after a short spin either way.
 */
let spinning = true;
export function setSpinning(on: boolean): void {
  spinning = on;
}

/** Environment for every child process: one thread count for every pool. */
export function threadEnv(threads: number): NodeJS.ProcessEnv {
  const n = String(threads);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FERROCONV_NUM_THREADS: n,
    OMP_NUM_THREADS: n,
    MKL_NUM_THREADS: n,
    OPENBLAS_NUM_THREADS: n,
  };
  if (!spinning) env.OMP_WAIT_POLICY = 'PASSIVE';
  return env;
}

/** Runs a child to completion; stdout collected, stderr passed through (progress lines). */
export function runChild(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv; quietStderr?: boolean } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!opts.quietStderr) {
        for (const line of d.split('\n'))
          if (line.trim() && !/Warning|warn\(/.test(line)) process.stderr.write(`  ${line.trim()}\n`);
      }
    });
    child.on('error', (e) => resolve({ code: -1, stdout, stderr: stderr + String(e) }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/** Parses the last line of `stdout` that is a JSON object. */
export function lastJson<T>(stdout: string): T | undefined {
  const lines = stdout.trim().split('\n').reverse();
  for (const l of lines) {
    const s = l.trim();
    if (s.startsWith('{')) {
      try {
        return JSON.parse(s) as T;
      } catch {
        /* not the result line */
      }
    }
  }
  return undefined;
}

export interface TorchInfo {
  torch: string;
  torchvision: string;
}

export async function findTorch(): Promise<Peer<TorchInfo>> {
  const peer: Peer<TorchInfo> = { name: 'PyTorch', notes: [] };
  if (!existsSync(PYTHON)) {
    peer.error = `${PYTHON} not found: ${INSTALL_HINT.torch}`;
    return peer;
  }
  const probe =
    'import json, torch, torchvision; print(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__}))';
  const r = await runChild(PYTHON, ['-c', probe], { quietStderr: true });
  const info = lastJson<TorchInfo>(r.stdout);
  if (r.code !== 0 || !info) {
    peer.error = `cannot import torch/torchvision with ${PYTHON} (${r.stderr.trim().split('\n').pop()}): ${INSTALL_HINT.torch}`;
    return peer;
  }
  peer.version = `torch ${info.torch}, torchvision ${info.torchvision}`;
  peer.api = info;
  return peer;
}

export interface TorchSpec {
  threads: number;
  timing: object;
  jobs: ({ id: string; kind: string } & Record<string, unknown>)[];
}

export interface TorchOutput {
  torch: string;
  threads: number;
  blas: string;
  maxRssKb: number;
  results: ({ id: string; error?: string } & Record<string, unknown>)[];
}

/** Runs torch_bench.py on `spec` in a fresh process with every thread pool sized to spec.threads. */
export async function runTorch(spec: TorchSpec): Promise<TorchOutput | { error: string }> {
  const r = await runChild(PYTHON, [join(BENCH_DIR, 'peers', 'torch_bench.py')], {
    input: JSON.stringify(spec),
    env: threadEnv(spec.threads),
    quietStderr: true,
  });
  const out = lastJson<TorchOutput>(r.stdout);
  if (r.code !== 0 || !out)
    return { error: `torch_bench.py failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}` };
  return out;
}

/**
 * A long-lived torch_bench.py (`--stream`) that answers one job at a time, so PyTorch can be
 * measured right after ferroconv on the same shape instead of minutes later.
 */
export class TorchStream {
  private readonly child: ChildProcessWithoutNullStreams;
  private buffer = '';
  private readonly waiting: ((line: string | undefined) => void)[] = [];
  private stderr = '';
  private closed = false;
  /** The first line: versions, BLAS and thread count. */
  readonly ready: Promise<TorchOutput | undefined>;

  constructor(threads: number, timing: object) {
    this.child = spawn(PYTHON, [join(BENCH_DIR, 'peers', 'torch_bench.py'), '--stream'], {
      env: threadEnv(threads),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stdout.setEncoding('utf8').on('data', (d: string) => {
      this.buffer += d;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        this.waiting.shift()?.(line);
      }
    });
    this.child.stderr.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-2000)));
    const fail = (): void => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w(undefined);
    };
    this.child.on('close', fail);
    this.child.on('error', fail);
    this.child.stdin.write(`${JSON.stringify({ threads, timing })}\n`);
    this.ready = this.next().then((l) => (l ? (JSON.parse(l) as TorchOutput) : undefined));
  }

  private next(): Promise<string | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Runs one job; a dead process gives `{ error }`. */
  async run(
    job: { id: string; kind: string } & Record<string, unknown>,
  ): Promise<{ id: string; error?: string } & Record<string, unknown>> {
    await this.ready;
    if (this.closed) return { id: job.id, error: `torch_bench.py exited: ${this.stderr.trim().split('\n').pop()}` };
    const answer = this.next();
    this.child.stdin.write(`${JSON.stringify(job)}\n`);
    const line = await answer;
    if (!line) return { id: job.id, error: `torch_bench.py exited: ${this.stderr.trim().split('\n').pop()}` };
    return JSON.parse(line) as { id: string } & Record<string, unknown>;
  }

  close(): void {
    this.child.stdin.end();
  }
}

export interface OnnxExportJob {
  dir: string;
  threads: number;
  convs: Record<string, unknown>[];
  models: { file: string; model: string }[];
}

export interface OnnxExportResult {
  written: string[];
  cached: string[];
  failed: { file: string; error: string }[];
}

/** Exports the missing ONNX files (cached across runs in bench/.cache/onnx). */
export async function exportOnnx(job: OnnxExportJob): Promise<OnnxExportResult | { error: string }> {
  const r = await runChild(PYTHON, [join(BENCH_DIR, 'peers', 'export_onnx.py')], {
    input: JSON.stringify(job),
    env: threadEnv(job.threads),
    quietStderr: true,
  });
  const out = lastJson<OnnxExportResult>(r.stdout);
  if (r.code !== 0 || !out)
    return { error: `export_onnx.py failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}` };
  return out;
}

/** Python with PyPI onnxruntime (its quantization tool), from `npm run bench:peers`. */
export const ORT_PYTHON = process.env.BENCH_ORT_PYTHON ?? join(PEERS_DIR, 'venv', 'bin', 'python');

export interface OrtQuantizeJob {
  models: { src: string; dst: string; shape: number[] }[];
}

/** Quantizes ONNX files with onnxruntime.quantization.quantize_static (peers/quantize_ort.py). */
export async function quantizeWithOrt(
  job: OrtQuantizeJob,
  threads: number,
): Promise<OnnxExportResult | { error: string }> {
  if (!existsSync(ORT_PYTHON)) return { error: `no ${ORT_PYTHON}: run \`npm run bench:peers\` for PyPI onnxruntime` };
  const r = await runChild(ORT_PYTHON, [join(BENCH_DIR, 'peers', 'quantize_ort.py')], {
    input: JSON.stringify(job),
    env: threadEnv(threads),
    quietStderr: true,
  });
  const out = lastJson<OnnxExportResult>(r.stdout);
  if (r.code !== 0 || !out)
    return { error: `quantize_ort.py failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' / ')}` };
  return out;
}

// --- onnxruntime-node: only the few members the bench uses.
export interface OrtTensor {
  dims: readonly number[];
}
export interface OrtSession {
  inputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
export interface OrtApi {
  InferenceSession: { create(path: string, opts: Record<string, unknown>): Promise<OrtSession> };
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
  env: { versions?: Record<string, string> };
}

const peerRequire = (): NodeJS.Require => createRequire(join(PEERS_DIR, 'package.json'));

export function findOrt(): Peer<OrtApi> {
  const peer: Peer<OrtApi> = { name: 'onnxruntime-node', notes: [] };
  try {
    const ort = peerRequire()('onnxruntime-node') as OrtApi;
    peer.api = ort;
    peer.version = ort.env.versions?.node ?? ort.env.versions?.common ?? 'unknown';
  } catch (e) {
    peer.error = `not loadable from bench/.peers/node_modules (${String((e as Error).message).split('\n')[0]}): ${INSTALL_HINT.ort}`;
  }
  return peer;
}

/** Session options giving ORT the same thread budget as the others. */
export function ortSessionOptions(threads: number, spin = spinning): Record<string, unknown> {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    ...(spin ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }),
  };
}

// --- tfjs with the WebAssembly backend.
export interface TfTensor {
  dataSync(): Float32Array;
  dispose(): void;
}
export interface TfApi {
  version: Record<string, string>;
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  getBackend(): string;
  env(): { getBool(flag: string): boolean };
  randomNormal(shape: number[]): TfTensor;
  conv2d(
    x: TfTensor,
    filter: TfTensor,
    strides: [number, number],
    pad: number[][],
    dataFormat: 'NHWC',
    dilations: [number, number],
  ): TfTensor;
}
export interface TfWasmApi {
  setThreadsCount(n: number): void;
  getThreadsCount(): number;
}

/** Loads tfjs + its wasm backend and makes it the active backend with `threads` threads if it can. */
export async function findTfjsWasm(threads: number): Promise<Peer<TfApi>> {
  const peer: Peer<TfApi> = { name: 'tfjs-wasm', notes: [] };
  try {
    const req = peerRequire();
    const tf = req('@tensorflow/tfjs') as TfApi;
    const wasm = req('@tensorflow/tfjs-backend-wasm') as TfWasmApi;
    wasm.setThreadsCount(threads);
    if (!(await tf.setBackend('wasm'))) throw new Error('setBackend("wasm") returned false');
    await tf.ready();
    const simd = tf.env().getBool('WASM_HAS_SIMD_SUPPORT');
    const mt = tf.env().getBool('WASM_HAS_MULTITHREAD_SUPPORT');
    const used = wasm.getThreadsCount();
    peer.version = tf.version.tfjs ?? tf.version['tfjs-core'];
    peer.notes.push(
      `SIMD ${simd ? 'on' : 'off'}; threads ${used}${used !== threads ? ` (asked ${threads}: ${mt ? 'refused' : 'the Node build has no multithreaded wasm, setThreadsCount is ignored'})` : ''}`,
    );
    peer.api = tf;
  } catch (e) {
    peer.error = `not loadable from bench/.peers/node_modules (${String((e as Error).message).split('\n')[0]}): ${INSTALL_HINT.tfjs}`;
  }
  return peer;
}
