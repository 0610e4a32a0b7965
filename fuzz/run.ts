// `npm run fuzz -- --target <name|all> --iterations N [--seed S] [--timeout-ms T] [--out DIR]`
//                 [--duration-s S] [--max-rss-mb M] [--from I] [--keep K]   fuzz one target or all of them
// `npm run fuzz -- --replay FILE [--target <name>]`        run one saved input again
//
// Inputs run in a child process (fuzz/child.ts) watched from here: the child writes the index
// of the input it is on to a status file before running it, so when it dies (a native abort, an
// out-of-memory kill) or stops progressing for --timeout-ms, this process knows the input, saves
// it (regenerated from seed and index) to the out folder, and starts a new child at the next
// index. Exit code 1 when anything crashed or hung, 2 on bad arguments.
import { type ChildProcess, fork } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChildMessage, ChildRequest } from './child.js';
import { STATUS_WORDS } from './child.js';
import {
  addCounts,
  type Counts,
  DEFAULT_OUT_DIR,
  DEFAULT_TIMEOUT_MS,
  type Finding,
  findingLines,
  FUZZ_DIR,
  generateInput,
  loadCorpus,
  makeFinding,
  mergeSignatures,
  type Summary,
  summaryLine,
  type Target,
  writeReproducer,
  zeroCounts,
} from './engine.js';
import { createTarget, TARGET_NAMES } from './targets/index.js';

const USAGE = `usage: npm run fuzz -- --target <${TARGET_NAMES.join('|')}|all> [--iterations N] [--seed S] [--timeout-ms T] [--out DIR]
                      [--duration-s S] [--max-rss-mb M] [--from INDEX] [--keep K]
       npm run fuzz -- --replay FILE [--target NAME]`;

interface Options {
  seed: number;
  /** First input index (to rerun one input of a seed: --from I --iterations 1). */
  from: number;
  /** Reproducers written per distinct finding, the rest only counted (0: all of them). */
  keep: number;
  iterations: number;
  timeoutMs: number;
  outDir: string;
  durationS?: number;
  maxRssBytes: number;
  workDir: string;
}

/** How a child segment ended. */
type Segment =
  | {
      end: 'done';
      counts: Counts;
      signatures: Record<string, number>;
      next: number;
      overMemory: boolean;
      findings: Finding[];
    }
  | { end: 'died' | 'hang'; index: number; counts: Counts; findings: Finding[]; message: string; stack?: string }
  | { end: 'replay'; outcome: string; message?: string; stack?: string; ms: number };

/** Last lines a child wrote to stderr (native aborts print there). */
class Tail {
  private text = '';
  bytes = 0;
  push(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.text = (this.text + chunk.toString('utf8')).slice(-8192);
  }
  lines(n: number): string[] {
    return this.text
      .split('\n')
      .filter((l) => l.trim())
      .slice(-n);
  }
}

function readStatus(path: string): { written: boolean; index: number; counts: Counts } {
  const buf = new Float64Array(STATUS_WORDS);
  try {
    const fd = openSync(path, 'r');
    try {
      readSync(fd, new Uint8Array(buf.buffer), 0, buf.byteLength, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not written yet.
  }
  return { written: buf[0] === 1, index: buf[1], counts: { ok: buf[2], error: buf[3], crash: buf[4], hang: buf[5] } };
}

function runChild(
  req: ChildRequest,
  opts: { onFinding(f: Finding): void; onProgress?(index: number, counts: Counts): void; startupMs?: number },
): Promise<Segment> {
  rmSync(req.statusFile, { force: true });
  const child: ChildProcess = fork(join(FUZZ_DIR, 'child.ts'), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  });
  const stderr = new Tail();
  child.stderr!.on('data', (c: Buffer) => stderr.push(c));
  const findings: Finding[] = [];
  let done: Extract<ChildMessage, { type: 'done' }> | null = null;
  let replay: Extract<ChildMessage, { type: 'replay' }> | null = null;
  child.on('message', (m: ChildMessage) => {
    if (m.type === 'finding') {
      findings.push(m.finding);
      opts.onFinding(m.finding);
    } else if (m.type === 'done') done = m;
    else if (m.type === 'replay') replay = m;
  });
  child.send(req);
  return new Promise((resolvePromise) => {
    let lastIndex = -1;
    let lastMove = Date.now();
    let hung: { index: number; counts: Counts } | null = null;
    const started = Date.now();
    const startupMs = opts.startupMs ?? 60_000;
    const timer = setInterval(
      () => {
        if (hung) return;
        const st = readStatus(req.statusFile);
        const now = Date.now();
        if (st.written && st.index !== lastIndex) {
          lastIndex = st.index;
          lastMove = now;
          opts.onProgress?.(st.index, st.counts);
          return;
        }
        const limit = st.written ? req.timeoutMs : startupMs;
        if (now - (st.written ? lastMove : started) <= limit || done || replay) return;
        hung = { index: st.written ? st.index : req.from, counts: st.counts };
        child.kill('SIGKILL');
      },
      Math.max(20, Math.min(200, req.timeoutMs / 4)),
    );
    child.on('close', (code, signal) => {
      clearInterval(timer);
      if (replay) return resolvePromise({ end: 'replay', ...replay });
      if (done && !hung)
        return resolvePromise({
          end: 'done',
          counts: done.counts,
          signatures: done.signatures,
          next: done.next,
          overMemory: done.overMemory,
          findings,
        });
      const st = readStatus(req.statusFile);
      const index = hung ? hung.index : st.written ? st.index : req.from;
      const counts = hung ? hung.counts : st.counts;
      if (hung) {
        return resolvePromise({
          end: 'hang',
          index,
          counts,
          findings,
          message: `no progress for ${req.timeoutMs} ms (killed)`,
        });
      }
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      const lines = stderr.lines(6);
      const message = `process died (${how})${lines.length ? `: ${lines.find((l) => /error|abort|panic|fatal|fault/i.test(l)) ?? lines[lines.length - 1]}` : ''}`;
      resolvePromise({
        end: 'died',
        index,
        counts,
        findings,
        message,
        stack: lines.length ? `stderr:\n${lines.join('\n')}` : undefined,
      });
    });
  });
}

async function fuzzTarget(name: string, o: Options): Promise<Summary> {
  const statusFile = join(o.workDir, `${name}.status`);
  const t0 = performance.now();
  const deadline = o.durationS !== undefined ? Date.now() + o.durationS * 1000 : undefined;
  let counts = zeroCounts();
  const findings: Finding[] = [];
  const signatures: Record<string, number> = {};
  const seen = new Set<string>();
  const end = o.from + o.iterations;
  let next = o.from;
  let lastPrint = Date.now();
  let parentTarget: { target: Target; corpus: Uint8Array[] } | null = null;
  const announce = (f: Finding): void => {
    if (seen.has(f.signature)) return;
    seen.add(f.signature);
    process.stderr.write(`[${name}] new ${f.kind} at input ${f.index}: ${f.message}${f.file ? ` -> ${f.file}` : ''}\n`);
  };
  while (next < end && !(deadline !== undefined && Date.now() > deadline)) {
    const segmentStart = counts;
    const seg = await runChild(
      {
        target: name,
        seed: o.seed,
        from: next,
        to: end,
        timeoutMs: o.timeoutMs,
        deadline,
        outDir: o.outDir,
        workDir: o.workDir,
        statusFile,
        maxRssBytes: o.maxRssBytes,
        keepPerSignature: o.keep,
        seenBefore: { ...signatures },
      },
      {
        onFinding: announce,
        onProgress: (index, c) => {
          if (Date.now() - lastPrint < 10_000) return;
          lastPrint = Date.now();
          const all = addCounts(segmentStart, c);
          const secs = (performance.now() - t0) / 1000;
          process.stderr.write(
            `[${name}] ${index - o.from} inputs, ${Math.round((index - o.from) / secs)}/s, crashes ${all.crash}, hangs ${all.hang}\n`,
          );
        },
      },
    );
    if (seg.end === 'replay') throw new Error('fuzz: unexpected replay result');
    counts = addCounts(counts, seg.counts);
    findings.push(...seg.findings);
    if (seg.end === 'done') {
      mergeSignatures(signatures, seg.signatures);
      next = seg.next;
      if (!seg.overMemory) break;
      continue;
    }
    for (const f of seg.findings) signatures[f.signature] = (signatures[f.signature] ?? 0) + 1;
    // The child died or hung on input seg.index: save that input and go on after it.
    parentTarget ??= { target: await createTarget(name, { workDir: o.workDir }), corpus: loadCorpus(name) };
    const kind = seg.end === 'hang' ? 'hang' : 'crash';
    const f = makeFinding(parentTarget.target, kind, o.seed, seg.index, seg.message, seg.stack);
    counts[kind]++;
    signatures[f.signature] = (signatures[f.signature] ?? 0) + 1;
    if (signatures[f.signature] <= o.keep) {
      f.file = writeReproducer(
        o.outDir,
        parentTarget.target,
        generateInput(parentTarget.target, parentTarget.corpus, o.seed, seg.index),
        f,
      );
      findings.push(f);
    }
    announce(f);
    if (seg.index < next)
      throw new Error(`fuzz: the ${name} child made no progress (died at ${seg.index}): ${seg.message}`);
    next = seg.index + 1;
  }
  parentTarget?.target.close?.();
  return {
    target: name,
    iterations: counts.ok + counts.error + counts.crash + counts.hang,
    counts,
    seconds: (performance.now() - t0) / 1000,
    findings,
    signatures,
  };
}

async function replay(file: string, name: string, o: Options): Promise<number> {
  const seg = await runChild(
    {
      target: name,
      seed: 0,
      from: 0,
      to: 1,
      timeoutMs: o.timeoutMs,
      outDir: o.outDir,
      workDir: o.workDir,
      statusFile: join(o.workDir, 'replay.status'),
      replay: resolve(file),
    },
    { onFinding: (f) => console.log(`${f.kind}: ${f.message}\n${f.stack ?? ''}`) },
  );
  if (seg.end === 'replay') {
    console.log(`${name} ${file}: ${seg.outcome} in ${seg.ms.toFixed(1)} ms${seg.message ? `\n${seg.message}` : ''}`);
    if (seg.outcome === 'crash' || seg.outcome === 'hang') {
      if (seg.stack) console.log(seg.stack);
      return 1;
    }
    return 0;
  }
  if (seg.end === 'done') return 0;
  console.log(
    `${name} ${file}: ${seg.end === 'hang' ? 'hang' : 'crash'}: ${seg.message}${seg.stack ? `\n${seg.stack}` : ''}`,
  );
  return 1;
}

function targetOfFile(file: string): string | undefined {
  const b = basename(file);
  return [...TARGET_NAMES].sort((a, c) => c.length - a.length).find((t) => b.startsWith(`${t}-`));
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        target: { type: 'string' },
        iterations: { type: 'string' },
        seed: { type: 'string' },
        'timeout-ms': { type: 'string' },
        out: { type: 'string' },
        'duration-s': { type: 'string' },
        'max-rss-mb': { type: 'string' },
        from: { type: 'string' },
        keep: { type: 'string' },
        replay: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }).values;
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const num = (flag: string, dflt: number | undefined, min: number): number | undefined => {
    const v = values[flag];
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${flag}: expected a number >= ${min}, got '${v}'`);
    return n;
  };
  let o: Options;
  let names: string[];
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  try {
    const durationS = num('duration-s', undefined, 0);
    o = {
      seed: Math.floor(num('seed', 1, 0)!) >>> 0,
      from: Math.floor(num('from', 0, 0)!),
      keep: Math.floor(num('keep', 3, 0)!) || Number.MAX_SAFE_INTEGER,
      iterations: num('iterations', durationS !== undefined ? Number.MAX_SAFE_INTEGER : 10_000, 1)!,
      timeoutMs: num('timeout-ms', DEFAULT_TIMEOUT_MS, 1)!,
      outDir: resolve(String(values.out ?? DEFAULT_OUT_DIR)),
      durationS,
      maxRssBytes: num('max-rss-mb', 2048, 64)! * 2 ** 20,
      workDir: '',
    };
    const target = values.target as string | undefined;
    if (values.replay) {
      const t = target ?? targetOfFile(String(values.replay));
      if (!t) throw new Error(`--replay: say which target with --target (${TARGET_NAMES.join(', ')})`);
      names = [t];
    } else if (!target) throw new Error('--target is required');
    else names = target === 'all' ? [...TARGET_NAMES] : [target];
    for (const n of names)
      if (!(TARGET_NAMES as readonly string[]).includes(n))
        throw new Error(`--target: unknown target '${n}' (expected ${TARGET_NAMES.join(', ')} or all)`);
  } catch (e) {
    console.error(`fuzz: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  o.workDir = mkdtempSync(join(base, 'ferroconv-fuzz-'));
  const stop = (): void => {
    rmSync(o.workDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', stop);
  try {
    if (values.replay) return await replay(String(values.replay), names[0], o);
    const summaries: Summary[] = [];
    for (const n of names) {
      const s = await fuzzTarget(n, o);
      summaries.push(s);
      console.log(summaryLine(s));
      for (const line of findingLines(s)) console.log(line);
    }
    if (summaries.length > 1) {
      const bad = summaries.filter((s) => s.counts.crash + s.counts.hang > 0).map((s) => s.target);
      console.log(
        bad.length
          ? `fuzz: crashes or hangs in ${bad.join(', ')} (reproducers in ${o.outDir})`
          : 'fuzz: no crashes, no hangs',
      );
    }
    return summaries.some((s) => s.counts.crash + s.counts.hang > 0) ? 1 : 0;
  } finally {
    rmSync(o.workDir, { recursive: true, force: true });
  }
}

process.exitCode = await main(process.argv.slice(2));
