// The fuzzing engine shared by the CLI (fuzz/run.ts, which runs it in a watched child process)
// and by the in-process CI pass (test/fuzz.test.ts): input generation from a corpus, the
// classification of each run, the iteration loop and reproducer files.
//
// Outcomes: `ok` (the parser accepted the input), `error` (it threw a plain Error whose message
// is one of the parser's own), `crash` (anything else thrown — TypeError, RangeError, a non-Error,
// an Error from somewhere else — or a broken invariant, or in the CLI the process dying or
// blowing its memory limit), `hang` (one input took longer than the timeout).
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ByteContext, MAX_INPUT_BYTES, mutateBytes } from './mutate.js';
import { Prng } from './prng.js';

export const FUZZ_DIR = dirname(fileURLToPath(import.meta.url));
export const REPO_DIR = dirname(FUZZ_DIR);
export const DEFAULT_OUT_DIR = join(FUZZ_DIR, 'crashes');
export const DEFAULT_TIMEOUT_MS = 2000;

export interface Target {
  readonly name: string;
  /** True for the messages of the Errors the parser throws on bad input (its own prefixes). */
  isParserError(message: string): boolean;
  /** File extension (without the dot) for a reproducer of this input. */
  extension(input: Uint8Array): string;
  /** Tokens for the byte-level dictionary mutation (magic numbers, keywords). */
  readonly dictionary?: readonly Uint8Array[];
  /** A structure-aware mutation, or null when the input cannot be decoded well enough for one. */
  mutate?(input: Uint8Array, rng: Prng, corpus: readonly Uint8Array[]): Uint8Array | null;
  /** Feeds one input to the parser (and checks what it returns). Throws what the parser throws. */
  execute(input: Uint8Array): void | Promise<void>;
  /** Removes whatever the target created (temporary folders). */
  close?(): void;
}

/** Thrown by a target when the parser returned something it must not (wrong shape, a changed model...). */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

export type Outcome = 'ok' | 'error' | 'crash' | 'hang';

export interface Counts {
  ok: number;
  error: number;
  crash: number;
  hang: number;
}

export const zeroCounts = (): Counts => ({ ok: 0, error: 0, crash: 0, hang: 0 });

export function addCounts(a: Counts, b: Counts): Counts {
  return { ok: a.ok + b.ok, error: a.error + b.error, crash: a.crash + b.crash, hang: a.hang + b.hang };
}

export interface Finding {
  kind: 'crash' | 'hang';
  target: string;
  /** Input number in the run (-1 for a replayed file). */
  index: number;
  seed: number;
  /** First line of the message, e.g. "TypeError: state.map is not a function". */
  message: string;
  stack?: string;
  /** What distinct findings are told apart by: kind, normalised message and the throwing frame. */
  signature: string;
  /** The reproducer file, when one was written. */
  file?: string;
}

export function loadCorpus(name: string): Uint8Array[] {
  const dir = join(FUZZ_DIR, 'corpus', name);
  const files = readdirSync(dir)
    .filter((f) => !f.startsWith('.'))
    .sort();
  if (files.length === 0) throw new Error(`fuzz: no seed files in ${dir}`);
  return files.map((f) => new Uint8Array(readFileSync(join(dir, f))));
}

/**
 * Input `index` of the run with `seed`: the corpus files themselves first (index < corpus
 * length), then one to eight stacked mutations of a random corpus file, structure-aware ones
 * first and most often, byte-level ones after or instead.
 */
export function generateInput(target: Target, corpus: readonly Uint8Array[], seed: number, index: number): Uint8Array {
  if (index < corpus.length) return corpus[index];
  const rng = new Prng(seed, index);
  const ctx: ByteContext = { corpus, dictionary: target.dictionary ?? [] };
  let data = rng.pick(corpus);
  const rounds = rng.chance(0.25) ? rng.range(2, 8) : 1;
  for (let r = 0; r < rounds; r++) {
    if (target.mutate && rng.chance(r === 0 ? 0.85 : 0.5)) {
      let m: Uint8Array | null;
      try {
        m = target.mutate(data, rng, corpus);
      } catch {
        // The mutator's own limits (an earlier round made JSON deeper than its recursion): bytes instead.
        m = null;
      }
      if (m) {
        data = m;
        continue;
      }
    }
    data = mutateBytes(data, rng, ctx);
  }
  return data.length > MAX_INPUT_BYTES ? data.subarray(0, MAX_INPUT_BYTES) : data;
}

function firstLine(s: string): string {
  const line = s.split('\n')[0];
  return line.length > 240 ? `${line.slice(0, 240)}…` : line;
}

function describeThrown(e: unknown): string {
  try {
    return typeof e === 'object' && e !== null
      ? `${Object.prototype.toString.call(e)} ${JSON.stringify(e)?.slice(0, 200)}`
      : String(e);
  } catch {
    return Object.prototype.toString.call(e);
  }
}

/**
 * A stack with runs of identical frames folded ("... 9,990 more of the same"): a stack overflow
 * captured with Error.stackTraceLimit = Infinity (as the runners set it, so the frame that
 * started the recursion is in it) would otherwise be thousands of lines.
 */
export function compactStack(stack: string | undefined): string | undefined {
  if (!stack) return stack;
  const out: string[] = [];
  const lines = stack.split('\n');
  for (let i = 0; i < lines.length; ) {
    // The shortest period (1-4 lines) that repeats here, and how many times.
    let best = { period: 1, times: 1 };
    for (let p = 1; p <= 4; p++) {
      let t = 1;
      while (
        i + (t + 1) * p <= lines.length &&
        lines.slice(i + t * p, i + (t + 1) * p).join('\n') === lines.slice(i, i + p).join('\n')
      )
        t++;
      if (t * p > best.times * best.period && t > 2) best = { period: p, times: t };
    }
    out.push(...lines.slice(i, i + best.period));
    if (best.times > 2)
      out.push(
        `    ... ${(best.times - 1).toLocaleString('en')} more of the same ${best.period === 1 ? 'frame' : `${best.period} frames`}`,
      );
    i += best.period * best.times;
  }
  return out.slice(0, 60).join('\n');
}

/** Classifies what an execute() threw: the parser's own Error, or a crash (with its message). */
export function classify(
  target: Target,
  thrown: unknown,
): { outcome: 'error' | 'crash'; message: string; stack?: string } {
  if (!(thrown instanceof Error))
    return { outcome: 'crash', message: `non-Error thrown: ${firstLine(describeThrown(thrown))}` };
  const message = String(thrown.message);
  const stack = compactStack(typeof thrown.stack === 'string' ? thrown.stack : undefined);
  if (thrown instanceof InvariantError)
    return { outcome: 'crash', message: `invariant broken: ${firstLine(message)}`, stack };
  if (Object.getPrototypeOf(thrown) !== Error.prototype)
    return { outcome: 'crash', message: `${thrown.name}: ${firstLine(message)}`, stack };
  if (!target.isParserError(message))
    return { outcome: 'crash', message: `Error not from the parser: ${firstLine(message)}`, stack };
  return { outcome: 'error', message: firstLine(message), stack };
}

export interface RunResult {
  outcome: Outcome;
  message?: string;
  stack?: string;
  ms: number;
}

/** Runs one input (awaiting async targets). An input slower than timeoutMs counts as a hang. */
export async function runOne(target: Target, input: Uint8Array, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RunResult> {
  const t0 = performance.now();
  let result: Omit<RunResult, 'ms'>;
  try {
    const pending = target.execute(input);
    if (pending) await pending;
    result = { outcome: 'ok' };
  } catch (e) {
    result = classify(target, e);
  }
  const ms = performance.now() - t0;
  if (ms > timeoutMs)
    return {
      outcome: 'hang',
      message: `took ${Math.round(ms)} ms (limit ${timeoutMs} ms)${result.message ? `, then: ${result.message}` : ''}`,
      stack: result.stack,
      ms,
    };
  return { ...result, ms };
}

/** The frame that threw, relative to the repository: "src/io/safetensors.ts:104" (no column). */
function topFrame(stack: string | undefined): string {
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const m = /\(?((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(line.trim());
    if (!m) continue;
    const file = m[1].replace(/^file:\/\//, '');
    if (file.includes('/fuzz/') && !file.includes('/fuzz/targets/')) continue;
    return `${relative(REPO_DIR, file)}:${m[2]}`;
  }
  return '?';
}

export function signature(kind: string, message: string, stack?: string): string {
  const normal = message
    .replace(/\([^)]*\)/g, '(…)')
    .replace(/(?:\/[\w.@+-]+)+/g, '<path>')
    .replace(/'[^']*'/g, "'…'")
    .replace(/-?\d+(\.\d+)?(e[+-]?\d+)?/gi, 'N')
    .slice(0, 160);
  return `${kind} | ${normal} | ${topFrame(stack)}`;
}

export function makeFinding(
  target: Target,
  kind: 'crash' | 'hang',
  seed: number,
  index: number,
  message: string,
  stack?: string,
): Finding {
  return { kind, target: target.name, index, seed, message, stack, signature: signature(kind, message, stack) };
}

/** Writes the input and a .txt note (message, stack, how to replay) to outDir; returns the input's path. */
export function writeReproducer(outDir: string, target: Target, input: Uint8Array, finding: Finding): string {
  mkdirSync(outDir, { recursive: true });
  const base =
    finding.index >= 0
      ? `${target.name}-${finding.kind}-seed${finding.seed}-${finding.index}`
      : `${target.name}-${finding.kind}-replay-${Date.now()}`;
  const file = join(outDir, `${base}.${target.extension(input)}`);
  writeFileSync(file, input);
  const note = [
    `target: ${target.name}`,
    `kind: ${finding.kind}`,
    `seed: ${finding.seed}, index: ${finding.index}`,
    `message: ${finding.message}`,
    `signature: ${finding.signature}`,
    `replay: npm run fuzz -- --target ${target.name} --replay ${relative(REPO_DIR, file)}`,
    '',
    finding.stack ?? '(no stack)',
    '',
  ].join('\n');
  writeFileSync(`${file}.txt`, note);
  return file;
}

export interface RangeOptions {
  target: Target;
  corpus: readonly Uint8Array[];
  seed: number;
  from: number;
  /** Exclusive end index. */
  to: number;
  timeoutMs?: number;
  /** Stop (after the current input) once Date.now() passes this. */
  deadline?: number;
  /** Where reproducers go; none are written when absent. */
  outDir?: string;
  /** Called before running each input with its index and the counts of the inputs before it. */
  beforeEach?(index: number, counts: Counts): void;
  onFinding?(finding: Finding): void;
  /**
   * Stop after an input that raised the process's peak RSS past this. The peak is cumulative:
   * garbage of earlier inputs that the collector has not yet freed counts too, so an input that
   * trips it after others is not blamed: the range stops before it (`next` is that input) and
   * the caller reruns it first in a fresh process. Only an input that trips it as the first of
   * its range counts as a crash.
   */
  maxRssBytes?: number;
  /** Findings kept (and reproducers written) per distinct signature; the rest are only counted. Default 3. */
  keepPerSignature?: number;
  /** Findings per signature seen before this range (by an earlier child of the same run). */
  seenBefore?: Record<string, number>;
}

export interface RangeResult {
  counts: Counts;
  /** The first few findings of each signature. */
  findings: Finding[];
  /** How many findings each signature had in all. */
  signatures: Record<string, number>;
  /** The first index not run. */
  next: number;
  /** True when the loop stopped early because of maxRssBytes. */
  overMemory: boolean;
}

export async function runRange(o: RangeOptions): Promise<RangeResult> {
  const counts = zeroCounts();
  const findings: Finding[] = [];
  const signatures: Record<string, number> = {};
  const keep = o.keepPerSignature ?? 3;
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let i = o.from;
  for (; i < o.to; i++) {
    if (o.deadline !== undefined && Date.now() > o.deadline) break;
    // After generation, so a slow mutation is not taken for a slow parser.
    const input = generateInput(o.target, o.corpus, o.seed, i);
    o.beforeEach?.(i, counts);
    const r = await runOne(o.target, input, timeoutMs);
    let kind: 'crash' | 'hang' | null = r.outcome === 'crash' || r.outcome === 'hang' ? r.outcome : null;
    let message = r.message ?? '';
    let overMemory = false;
    if (o.maxRssBytes !== undefined) {
      // getrusage's peak: exact about which input pushed it up, even when the memory was freed.
      const peak = process.resourceUsage().maxRSS * 1024;
      if (peak > o.maxRssBytes) {
        if (i > o.from && !kind) return { counts, findings, signatures, next: i, overMemory: true };
        overMemory = true;
        if (!kind) {
          kind = 'crash';
          message = `peak RSS ${Math.round(peak / 2 ** 20)} MB exceeds the ${Math.round(o.maxRssBytes / 2 ** 20)} MB limit (outcome was ${r.outcome}${r.message ? `: ${r.message}` : ''})`;
        }
      }
    }
    if (kind) {
      counts[kind]++;
      const finding = makeFinding(o.target, kind, o.seed, i, message, r.stack);
      signatures[finding.signature] = (signatures[finding.signature] ?? 0) + 1;
      if ((o.seenBefore?.[finding.signature] ?? 0) + signatures[finding.signature] <= keep) {
        if (o.outDir) finding.file = writeReproducer(o.outDir, o.target, input, finding);
        findings.push(finding);
        o.onFinding?.(finding);
      }
    } else {
      counts[r.outcome]++;
    }
    if (overMemory) return { counts, findings, signatures, next: i + 1, overMemory: true };
  }
  return { counts, findings, signatures, next: i, overMemory: false };
}

export interface Summary {
  target: string;
  iterations: number;
  counts: Counts;
  seconds: number;
  /** The first few findings of each signature. */
  findings: Finding[];
  /** How many findings each signature had in all. */
  signatures: Record<string, number>;
}

export function mergeSignatures(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
}

export function summaryLine(s: Summary): string {
  const rate = s.seconds > 0 ? s.iterations / s.seconds : 0;
  const distinct = Object.keys(s.signatures).length;
  return (
    `fuzz ${s.target}: iterations ${s.iterations}, ok ${s.counts.ok}, errors ${s.counts.error}, ` +
    `crashes ${s.counts.crash}, hangs ${s.counts.hang}${distinct ? ` (${distinct} distinct)` : ''}, ` +
    `${rate >= 100 ? Math.round(rate) : rate.toFixed(1)} it/s, ${s.seconds.toFixed(1)} s`
  );
}

/** Distinct findings: the first of each signature, with how often the signature occurred. */
export function distinctFindings(s: Pick<Summary, 'findings' | 'signatures'>): { finding: Finding; count: number }[] {
  const firsts = new Map<string, Finding>();
  for (const f of s.findings) if (!firsts.has(f.signature)) firsts.set(f.signature, f);
  return [...firsts.values()].map((finding) => ({ finding, count: s.signatures[finding.signature] ?? 1 }));
}

/** Human-readable lines for the distinct findings of a summary. */
export function findingLines(s: Pick<Summary, 'findings' | 'signatures'>): string[] {
  return distinctFindings(s).map(({ finding: f, count }) => {
    const where = f.signature.split(' | ').at(-1);
    return `  ${f.kind} x${count}: ${f.message}${where && where !== '?' ? ` (${where})` : ''}${f.file ? `\n    reproducer: ${relative(process.cwd(), f.file)}` : ''}`;
  });
}

/**
 * The in-process pass (CI): `iterations` inputs of one target, no child process, reproducers
 * only with outDir. A watchdog thread kills the process if one input runs past watchdogMs
 * (default 4 x timeoutMs), since a synchronous hang could not be interrupted otherwise.
 */
export async function fuzzInProcess(
  target: Target,
  opts: { iterations: number; seed?: number; timeoutMs?: number; outDir?: string; watchdogMs?: number },
): Promise<Summary> {
  const { startWatchdog } = await import('./watchdog.js');
  const corpus = loadCorpus(target.name);
  const seed = opts.seed ?? 1;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const watchdog = startWatchdog(target.name, seed, opts.watchdogMs ?? 4 * timeoutMs);
  const t0 = performance.now();
  const traceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = Infinity;
  try {
    const r = await runRange({
      target,
      corpus,
      seed,
      from: 0,
      to: opts.iterations,
      timeoutMs,
      outDir: opts.outDir,
      beforeEach: (i) => watchdog.beat(i),
    });
    return {
      target: target.name,
      iterations: r.next,
      counts: r.counts,
      seconds: (performance.now() - t0) / 1000,
      findings: r.findings,
      signatures: r.signatures,
    };
  } finally {
    Error.stackTraceLimit = traceLimit;
    await watchdog.stop();
  }
}
