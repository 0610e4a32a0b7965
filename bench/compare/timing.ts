// Timing and reporting helpers shared by the comparison driver and its child rows: adaptive
// repetition with medians (the same policy as bench/peers/torch_bench.py, so both sides are
// measured alike), ratios, geometric means and markdown tables.

/** How many times to run a measured call. */
export interface Timing {
  /** Untimed calls first (first-touch, lazy init, caches)... */
  warmup: number;
  /**
   * ...and, after those, more untimed calls until the warm-up adds up to this many seconds: a
   * runtime's first calls after loading (JIT tier-up, allocator and cache warm-up) run slower
   * than its steady state, for some frameworks for a dozen calls.
   */
  warmupSeconds?: number;
  /** At least this many timed calls... */
  minReps: number;
  /** ...and at most this many. */
  maxReps: number;
  /** Keep repeating (up to maxReps) until the timed calls add up to this many seconds. */
  minSeconds: number;
  /**
   * A first warm-up call slower than this many seconds is the only sample (reps 1): for
   * algorithms that are far off the pace, one call says enough and keeps the run short.
   */
  slowSeconds?: number;
}

/** Seconds per call: median and minimum of `reps` timed calls. */
export interface Stat {
  median: number;
  min: number;
  reps: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Fails unless `t` has every count and duration `timeIt` needs as a non-negative number and
 * `maxReps` of at least 1: a row spec given on the command line (`--row`) with a field misnamed
 * would otherwise time forever (`times.length >= undefined` is never true).
 */
export function checkTiming(t: Timing): void {
  const need: (keyof Timing)[] = ['warmup', 'minReps', 'maxReps', 'minSeconds'];
  for (const k of need) {
    const v = t?.[k];
    if (typeof v !== 'number' || !(v >= 0))
      throw new Error(`timing.${k}: expected a number >= 0, got ${JSON.stringify(v)}`);
  }
  if (t.maxReps < 1) throw new Error(`timing.maxReps: expected at least 1, got ${t.maxReps}`);
  for (const k of ['warmupSeconds', 'slowSeconds'] as const) {
    const v = t[k];
    if (v !== undefined && (typeof v !== 'number' || !(v >= 0)))
      throw new Error(`timing.${k}: expected a number >= 0 or nothing, got ${JSON.stringify(v)}`);
  }
}

/** Times `fn` (sync or async) per `t`; returns seconds per call. */
export async function timeIt(fn: (timed: boolean) => unknown, t: Timing): Promise<Stat> {
  checkTiming(t);
  let warmed = 0;
  for (let i = 0; i < t.warmup || warmed < (t.warmupSeconds ?? 0); i++) {
    const t0 = performance.now();
    await fn(false);
    const dt = (performance.now() - t0) / 1000;
    warmed += dt;
    if (i === 0 && t.slowSeconds !== undefined && dt >= t.slowSeconds) return { median: dt, min: dt, reps: 1 };
  }
  const times: number[] = [];
  let spent = 0;
  for (;;) {
    const t0 = performance.now();
    await fn(true);
    const dt = (performance.now() - t0) / 1000;
    times.push(dt);
    spent += dt;
    if (times.length >= t.maxReps) break;
    if (times.length >= t.minReps && spent >= t.minSeconds) break;
  }
  return { median: median(times), min: Math.min(...times), reps: times.length };
}

/**
 * Speed of ferroconv relative to a peer from the two medians: peer time / ferroconv time, so
 * > 1 means ferroconv is faster. Undefined when either side is missing.
 */
export function ratio(ferro: Stat | undefined, peer: Stat | undefined): number | undefined {
  if (!ferro || !peer || !(ferro.median > 0) || !(peer.median > 0)) return undefined;
  return peer.median / ferro.median;
}

export function geomean(xs: (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x) && x > 0);
  if (v.length === 0) return undefined;
  return Math.exp(v.reduce((s, x) => s + Math.log(x), 0) / v.length);
}

/** A number rounded for a table: 3 significant digits, '' when missing. */
export function fmt(x: number | undefined, digits = 3): string {
  if (x === undefined || !Number.isFinite(x)) return '';
  if (x === 0) return '0';
  const mag = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, digits - 1 - mag);
  return x.toFixed(Math.min(decimals, 4));
}

export const ms = (s: Stat | undefined): string => (s ? fmt(s.median * 1e3) : '');
export const perSec = (work: number, s: Stat | undefined): number | undefined => (s ? work / s.median : undefined);

export type TableRow = Record<string, string | number>;

/** A GitHub-flavoured markdown table over the union of the rows' keys (first-seen order). */
export function mdTable(rows: TableRow[]): string {
  if (rows.length === 0) return '_(no rows)_\n';
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const cell = (v: string | number | undefined): string => String(v ?? '').replace(/\|/g, '\\|');
  const numeric = cols.map((c) => rows.every((r) => r[c] === undefined || r[c] === '' || !Number.isNaN(Number(r[c]))));
  const lines = [
    `| ${cols.join(' | ')} |`,
    `| ${cols.map((_, i) => (numeric[i] ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((r) => `| ${cols.map((c) => cell(r[c])).join(' | ')} |`),
  ];
  return `${lines.join('\n')}\n`;
}
