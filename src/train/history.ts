// The record of a run: per-epoch logs kept in memory and written, after every epoch, as
// log.json, log.csv and a training-curve picture curve.svg in the run directory.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import type { Logs } from './callbacks.js';

export interface EpochRecord extends Logs {
  epoch: number;
  seconds: number;
}

export function writeRunLogs(dir: string, history: EpochRecord[], meta: Record<string, unknown> = {}): void {
  mkdirSync(dir, { recursive: true });
  const enc = new TextEncoder();
  writeFileAtomic(join(dir, 'log.json'), [enc.encode(JSON.stringify({ ...meta, history }, null, 2))]);
  const keys = [...new Set(history.flatMap((h) => Object.keys(h)))];
  const csv = `${[keys.join(','), ...history.map((h) => keys.map((k) => h[k] ?? '').join(','))].join('\n')}\n`;
  writeFileAtomic(join(dir, 'log.csv'), [enc.encode(csv)]);
  writeFileAtomic(join(dir, 'curve.svg'), [enc.encode(curveSvg(history))]);
}

const COLORS: Record<string, string> = { loss: '#1f77b4', val_loss: '#ff7f0e', acc: '#2ca02c', val_acc: '#d62728' };

/** Two panels side by side: losses and accuracies per epoch. */
export function curveSvg(history: EpochRecord[]): string {
  const W = 360;
  const H = 240;
  const pad = 40;
  const panel = (x0: number, title: string, keys: string[], asPercent: boolean): string => {
    const series = keys.filter((k) => history.some((h) => typeof h[k] === 'number'));
    const vals = series.flatMap((k) => history.map((h) => h[k]).filter((v) => Number.isFinite(v)));
    if (vals.length === 0) return '';
    let lo = Math.min(...vals);
    let hi = Math.max(...vals);
    if (hi - lo < 1e-9) {
      hi += 0.5;
      lo -= 0.5;
    }
    const n = Math.max(history.length - 1, 1);
    const px = (i: number) => x0 + pad + ((W - 2 * pad) * i) / n;
    const py = (v: number) => H - pad - ((H - 2 * pad) * (v - lo)) / (hi - lo);
    const fmt = (v: number) => (asPercent ? `${(100 * v).toFixed(1)}%` : v.toFixed(3));
    let s = `<text x="${x0 + W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`;
    s += `<line x1="${x0 + pad}" y1="${H - pad}" x2="${x0 + W - pad}" y2="${H - pad}" stroke="#333"/>`;
    s += `<line x1="${x0 + pad}" y1="${pad}" x2="${x0 + pad}" y2="${H - pad}" stroke="#333"/>`;
    s += `<text x="${x0 + pad - 4}" y="${pad + 4}" text-anchor="end" font-size="10">${fmt(hi)}</text>`;
    s += `<text x="${x0 + pad - 4}" y="${H - pad}" text-anchor="end" font-size="10">${fmt(lo)}</text>`;
    s += `<text x="${x0 + W / 2}" y="${H - 8}" text-anchor="middle" font-size="10">epoch (1-${history.length})</text>`;
    series.forEach((k, j) => {
      const pts = history
        .map((h, i) => (Number.isFinite(h[k]) ? `${px(i).toFixed(1)},${py(h[k]).toFixed(1)}` : ''))
        .filter(Boolean);
      s += `<polyline fill="none" stroke="${COLORS[k] ?? '#555'}" stroke-width="2" points="${pts.join(' ')}"/>`;
      for (const p of pts) {
        const [x, y] = p.split(',');
        s += `<circle cx="${x}" cy="${y}" r="2.5" fill="${COLORS[k] ?? '#555'}"/>`;
      }
      s +=
        `<text x="${x0 + W - pad}" y="${pad + 12 * j}" text-anchor="end" ` +
        `font-size="10" fill="${COLORS[k] ?? '#555'}">${k}</text>`;
    });
    return s;
  };
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H}" font-family="sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    panel(0, 'loss', ['loss', 'val_loss'], false) +
    panel(W, 'top-1 accuracy', ['acc', 'val_acc'], true) +
    `</svg>\n`
  );
}
