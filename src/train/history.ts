// The record of a run: per-epoch and per-batch logs kept in memory and written, after every
// epoch, as log.json, log.csv (epochs), log-batches.csv (batches) and a training-curve picture
// curve.svg in the run directory: per-batch loss and accuracy as a faint line with a smoothed
// one over it, and the per-epoch validation results as points.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import type { Logs } from './callbacks.js';

export interface EpochRecord extends Logs {
  epoch: number;
  seconds: number;
}

/** One training step: its loss and top-1 accuracy on its batch. */
export interface BatchRecord {
  /** Steps since the run began (1 for the first). */
  step: number;
  /** 1-based epoch and 0-based batch within it. */
  epoch: number;
  batch: number;
  loss: number;
  acc: number;
  lr: number;
}

export function writeRunLogs(
  dir: string,
  history: EpochRecord[],
  meta: Record<string, unknown> = {},
  batches: BatchRecord[] = [],
): void {
  mkdirSync(dir, { recursive: true });
  const enc = new TextEncoder();
  writeFileAtomic(join(dir, 'log.json'), [enc.encode(JSON.stringify({ ...meta, history, batches }, null, 2))]);
  const csv = (rows: Record<string, number>[]) => {
    const keys = [...new Set(rows.flatMap((h) => Object.keys(h)))];
    return `${[keys.join(','), ...rows.map((h) => keys.map((k) => h[k] ?? '').join(','))].join('\n')}\n`;
  };
  writeFileAtomic(join(dir, 'log.csv'), [enc.encode(csv(history))]);
  if (batches.length) writeFileAtomic(join(dir, 'log-batches.csv'), [enc.encode(csv(batches as never))]);
  writeFileAtomic(join(dir, 'curve.svg'), [enc.encode(curveSvg(history, batches))]);
}

const COLORS: Record<string, string> = { loss: '#1f77b4', val_loss: '#ff7f0e', acc: '#2ca02c', val_acc: '#d62728' };

/**
 * `values` smoothed as TensorBoard smooths a scalar curve: an exponential moving average with
 * weight `weight` on the past, debiased at the start (so the first points are not pulled to 0).
 */
export function smooth(values: readonly number[], weight = 0.9): number[] {
  let last = 0;
  let norm = 0;
  return values.map((v) => {
    last = last * weight + (1 - weight) * v;
    norm = norm * weight + (1 - weight);
    return last / norm;
  });
}

/** A series to draw: points (x in epochs), as a line or as dots. */
interface Series {
  key: string;
  points: [number, number][];
  style: 'faint' | 'line' | 'dots';
}

/**
 * Two panels side by side, losses and accuracies against epochs. With per-batch records: each
 * batch's value as a faint line, its smoothing (see smooth) as a line, and the per-epoch
 * validation values as dots; without, one point per epoch joined by lines.
 */
export function curveSvg(history: EpochRecord[], batches: BatchRecord[] = []): string {
  const W = 360;
  const H = 240;
  const pad = 40;
  const perEpoch = (k: string): [number, number][] =>
    history.filter((h) => Number.isFinite(h[k])).map((h) => [h.epoch, h[k]]);
  const perBatch = (k: 'loss' | 'acc'): Series[] => {
    if (batches.length === 0) return [{ key: k, points: perEpoch(k), style: 'line' }];
    // A batch's x: its epoch so far (epoch e's batches spread over (e - 1, e]).
    const per = new Map<number, number>();
    for (const b of batches) per.set(b.epoch, Math.max(per.get(b.epoch) ?? 0, b.batch + 1));
    const xs = batches.map((b) => b.epoch - 1 + (b.batch + 1) / (per.get(b.epoch) ?? 1));
    const raw = batches.map((b) => b[k]);
    // About 50 steps of memory on a long run, TensorBoard's default 0.6 on a short one.
    const smoothed = smooth(raw, Math.min(0.98, Math.max(0.6, 1 - 50 / raw.length)));
    return [
      { key: `${k} (batch)`, points: raw.map((v, i) => [xs[i], v]), style: 'faint' },
      { key: `${k} (smoothed)`, points: smoothed.map((v, i) => [xs[i], v]), style: 'line' },
    ];
  };
  const xMax = Math.max(1, history.length, ...batches.map((b) => b.epoch));
  const panel = (x0: number, title: string, series: Series[], asPercent: boolean): string => {
    const shown = series.filter((s) => s.points.length > 0);
    const vals = shown.flatMap((s) => s.points.map(([, v]) => v)).filter((v) => Number.isFinite(v));
    if (vals.length === 0) return '';
    let lo = Math.min(...vals);
    let hi = Math.max(...vals);
    if (hi - lo < 1e-9) {
      hi += 0.5;
      lo -= 0.5;
    }
    const x0Data = batches.length ? 0 : 1;
    const px = (x: number) => x0 + pad + ((W - 2 * pad) * (x - x0Data)) / Math.max(xMax - x0Data, 1);
    const py = (v: number) => H - pad - ((H - 2 * pad) * (v - lo)) / (hi - lo);
    const fmt = (v: number) => (asPercent ? `${(100 * v).toFixed(1)}%` : v.toFixed(3));
    let s = `<text x="${x0 + W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`;
    s += `<line x1="${x0 + pad}" y1="${H - pad}" x2="${x0 + W - pad}" y2="${H - pad}" stroke="#333"/>`;
    s += `<line x1="${x0 + pad}" y1="${pad}" x2="${x0 + pad}" y2="${H - pad}" stroke="#333"/>`;
    s += `<text x="${x0 + pad - 4}" y="${pad + 4}" text-anchor="end" font-size="10">${fmt(hi)}</text>`;
    s += `<text x="${x0 + pad - 4}" y="${H - pad}" text-anchor="end" font-size="10">${fmt(lo)}</text>`;
    s += `<text x="${x0 + W / 2}" y="${H - 8}" text-anchor="middle" font-size="10">epoch (${x0Data}-${xMax})</text>`;
    shown.forEach((ser, j) => {
      const color = COLORS[ser.key.split(' ')[0]] ?? '#555';
      const pts = ser.points
        .filter(([, v]) => Number.isFinite(v))
        .map(([x, v]) => `${px(x).toFixed(1)},${py(v).toFixed(1)}`);
      if (ser.style !== 'dots') {
        const look = ser.style === 'faint' ? 'stroke-width="1" stroke-opacity="0.3"' : 'stroke-width="2"';
        s += `<polyline fill="none" stroke="${color}" ${look} points="${pts.join(' ')}"/>`;
      }
      if (ser.style !== 'faint' && (ser.style === 'dots' || batches.length === 0)) {
        for (const p of pts) {
          const [x, y] = p.split(',');
          s += `<circle cx="${x}" cy="${y}" r="3" fill="${color}"/>`;
        }
      }
      s +=
        `<text x="${x0 + W - pad}" y="${pad + 12 * j}" text-anchor="end" ` +
        `font-size="10" fill="${color}">${ser.key}</text>`;
    });
    return s;
  };
  const validation = (k: string): Series[] =>
    history.some((h) => Number.isFinite(h[k])) ? [{ key: k, points: perEpoch(k), style: 'dots' }] : [];
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H}" font-family="sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    panel(0, 'loss', [...perBatch('loss'), ...validation('val_loss')], false) +
    panel(W, 'top-1 accuracy', [...perBatch('acc'), ...validation('val_acc')], true) +
    `</svg>\n`
  );
}
