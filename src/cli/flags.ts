// The flags every `ferroconv` command shares, and their parsing: a bad flag is a UsageError (one
// line on stderr, exit code 2).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { setNumThreads } from '../index.js';

export class UsageError extends Error {}

/** Commands that take positional arguments (files, a task name). */
const POSITIONAL = new Set(['predict', 'app', 'filter', 'show']);

export const COMMON = {
  help: { type: 'boolean', short: 'h' },
  model: { type: 'string', default: 'mnist-net' },
  dataset: { type: 'string', default: 'mnist' },
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  'image-size': { type: 'string', default: '224' },
  'data-dir': { type: 'string' },
} as const;

export type Flags = Record<string, string | boolean | undefined>;

export function parse(
  command: string,
  argv: string[],
  extra: ParseArgsConfig['options'] = {},
): { values: Flags; positionals: string[] } {
  try {
    const r = parseArgs({
      args: argv,
      options: { ...COMMON, ...extra },
      allowPositionals: POSITIONAL.has(command),
      strict: true,
    });
    return { values: r.values as Flags, positionals: r.positionals };
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]} (see 'ferroconv ${command} --help')`);
  }
}

export function int(name: string, v: unknown, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer >= ${min}, got '${v}'`);
  return n;
}

export function num(name: string, v: unknown, dflt: number | undefined): number | undefined {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new UsageError(`--${name}: expected a non-negative number, got '${v}'`);
  return n;
}

export function applyThreads(v: unknown): void {
  if (v !== undefined) setNumThreads(int('threads', v, 1));
}
