// The child process of `npm run fuzz`: runs a range of inputs of one target (or replays one
// file) and tells the parent where it is. Before each input it writes its index and the counts
// so far to a small status file (one pwrite, far cheaper than an IPC message per input), which
// the parent's watchdog reads: if this process dies or stops making progress, the parent knows
// exactly which input did it. Findings (thrown crashes) also arrive by IPC, with reproducers
// already written by this process.
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { type Counts, type Finding, loadCorpus, makeFinding, runOne, runRange } from './engine.js';
import { createTarget } from './targets/index.js';

export interface ChildRequest {
  target: string;
  seed: number;
  from: number;
  to: number;
  timeoutMs: number;
  deadline?: number;
  outDir: string;
  workDir: string;
  statusFile: string;
  maxRssBytes?: number;
  keepPerSignature?: number;
  seenBefore?: Record<string, number>;
  /** Run this one file instead of a range. */
  replay?: string;
}

export type ChildMessage =
  | { type: 'finding'; finding: Finding }
  | { type: 'done'; counts: Counts; signatures: Record<string, number>; next: number; overMemory: boolean }
  | { type: 'replay'; outcome: string; message?: string; stack?: string; ms: number };

/** Status record: [1 (written), index of the input being run, ok, error, crash, hang]. */
export const STATUS_WORDS = 6;

const send = (m: ChildMessage): Promise<void> =>
  new Promise((resolve) => process.send!(m, undefined, {}, () => resolve()));

// Whole stacks: for a stack overflow, the frame that started the recursion is at the bottom.
Error.stackTraceLimit = Infinity;

process.once('message', async (req: ChildRequest) => {
  const target = await createTarget(req.target, { workDir: req.workDir });
  const fd = openSync(req.statusFile, 'w');
  const status = new Float64Array(STATUS_WORDS);
  const bytes = new Uint8Array(status.buffer);
  const write = (index: number, c: Counts): void => {
    status.set([1, index, c.ok, c.error, c.crash, c.hang]);
    writeSync(fd, bytes, 0, bytes.length, 0);
  };
  try {
    if (req.replay) {
      write(0, { ok: 0, error: 0, crash: 0, hang: 0 });
      const input = new Uint8Array(readFileSync(req.replay));
      const r = await runOne(target, input, req.timeoutMs);
      await send({ type: 'replay', outcome: r.outcome, message: r.message, stack: r.stack, ms: r.ms });
      return;
    }
    const corpus = loadCorpus(req.target);
    const pending: Promise<void>[] = [];
    const result = await runRange({
      target,
      corpus,
      seed: req.seed,
      from: req.from,
      to: req.to,
      timeoutMs: req.timeoutMs,
      deadline: req.deadline,
      outDir: req.outDir,
      maxRssBytes: req.maxRssBytes,
      keepPerSignature: req.keepPerSignature,
      seenBefore: req.seenBefore,
      beforeEach: write,
      onFinding: (finding) => void pending.push(send({ type: 'finding', finding })),
    });
    await Promise.all(pending);
    await send({
      type: 'done',
      counts: result.counts,
      signatures: result.signatures,
      next: result.next,
      overMemory: result.overMemory,
    });
  } catch (e) {
    // A failure of the harness itself (not of an input): report it as a finding at the index
    // the status file names, then let the parent see the exit code.
    await send({
      type: 'finding',
      finding: makeFinding(
        target,
        'crash',
        req.seed,
        -1,
        `fuzz harness failed: ${(e as Error)?.message ?? e}`,
        (e as Error)?.stack,
      ),
    });
    process.exitCode = 3;
  } finally {
    closeSync(fd);
    target.close?.();
    process.disconnect?.();
  }
});
