// Pictures of predictions: a grid of images, each with its overlay (boxes and labels, a coloured
// class mask, keypoints and a skeleton, a caption) drawn as SVG and composited by sharp (libvips
// renders the SVG), written as one PNG. sharp is loaded on first use, as for ImageFolder.
import { createRequire } from 'node:module';

/** What is drawn over one image; coordinates are the image's own pixels. */
export interface Overlay {
  boxes?: { box: ArrayLike<number>; color?: string; label?: string }[];
  /** A class per pixel (height x width), blended over the image; class 0 (background) stays clear. */
  mask?: { classes: ArrayLike<number>; alpha?: number };
  points?: { x: number; y: number; color?: string }[];
  lines?: { from: [number, number]; to: [number, number]; color?: string }[];
  /** Text under the image (several lines with '\n'); colour by `captionColor`. */
  caption?: string;
  captionColor?: string;
  /** A coloured frame around the tile (e.g. green for right, red for wrong). */
  frame?: string;
}

export interface Tile {
  /** Pixels in [0, 1]: height x width (grey) or 3 x height x width (RGB, planar as CHW). */
  image: ArrayLike<number>;
  width: number;
  height: number;
  channels?: 1 | 3;
  overlay?: Overlay;
}

export interface GridOptions {
  /** Tiles per row (default 8). */
  columns?: number;
  /** Each image is enlarged by this factor (nearest neighbour, default 3). */
  scale?: number;
  /** Lines of caption room under each tile (default: the most any tile has). */
  captionLines?: number;
}

/** Distinct colours for classes 1, 2, ... (class 0 is background). */
export const PALETTE: [number, number, number][] = [
  [0, 0, 0],
  [230, 25, 75],
  [60, 180, 75],
  [255, 225, 25],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
  [240, 50, 230],
  [210, 245, 60],
  [250, 190, 212],
  [0, 128, 128],
];

const hex = (c: [number, number, number]) => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

/** The colour of class `k` in masks (and what a legend should show). */
export const classColor = (k: number): string => hex(PALETTE[k % PALETTE.length]);

type SharpLike = (
  input?: unknown,
  opts?: unknown,
) => {
  resize(w: number, h: number, o: unknown): ReturnType<SharpLike>;
  composite(layers: unknown[]): ReturnType<SharpLike>;
  png(): ReturnType<SharpLike>;
  toBuffer(): Promise<Buffer>;
  toFile(path: string): Promise<unknown>;
};

let sharpModule: SharpLike | null = null;
export function loadSharp(): SharpLike {
  if (!sharpModule) {
    try {
      sharpModule = createRequire(import.meta.url)('sharp') as SharpLike;
    } catch (e) {
      throw new Error(`drawGrid: drawing needs the 'sharp' package (npm install sharp): ${(e as Error).message}`);
    }
  }
  return sharpModule;
}

const escapeXml = (s: string) =>
  s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] ?? c);

function rgbPixels(t: Tile): Buffer {
  const { width: w, height: h } = t;
  const ch = t.channels ?? 1;
  const plane = w * h;
  if (t.image.length !== plane * ch) {
    throw new Error(
      `drawGrid: a ${w}x${h} tile with ${ch} channel(s) needs ${plane * ch} values, got ${t.image.length}`,
    );
  }
  const out = Buffer.alloc(plane * 3);
  const mask = t.overlay?.mask;
  if (mask && mask.classes.length !== plane) {
    throw new Error(`drawGrid: a ${w}x${h} mask needs ${plane} classes, got ${mask.classes.length}`);
  }
  const alpha = mask?.alpha ?? 0.55;
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const v = t.image[(ch === 3 ? c * plane : 0) + i];
      let byte = Math.round(Math.min(1, Math.max(0, Number.isFinite(v) ? v : 0)) * 255);
      const k = mask ? mask.classes[i] : 0;
      if (k > 0) byte = Math.round(byte * (1 - alpha) + PALETTE[k % PALETTE.length][c] * alpha);
      out[i * 3 + c] = byte;
    }
  }
  return out;
}

/** A colour for an SVG attribute: escaped, so a caller's string cannot end the attribute. */
const paint = (c: string | undefined, dflt: string) => escapeXml(c ?? dflt);

function overlaySvg(o: Overlay, w: number, h: number, s: number, captionLines: number): string {
  const fontSize = Math.max(10, Math.min(14, Math.round(w * s * 0.09)));
  const lineHeight = fontSize + 3;
  const total = h * s + captionLines * lineHeight;
  const parts: string[] = [];
  for (const b of o.boxes ?? []) {
    const [x1, y1, x2, y2] = Array.from(b.box).map((v) => v * s);
    const color = paint(b.color, '#00ff00');
    parts.push(
      `<rect x="${x1}" y="${y1}" width="${Math.max(0, x2 - x1)}" height="${Math.max(0, y2 - y1)}" ` +
        `fill="none" stroke="${color}" stroke-width="2"/>`,
    );
    if (b.label) {
      const ty = y1 > fontSize + 2 ? y1 - 3 : y2 + fontSize;
      parts.push(
        `<text x="${x1}" y="${ty}" font-family="DejaVu Sans, sans-serif" font-size="${fontSize}" ` +
          `font-weight="bold" fill="${color}">${escapeXml(b.label)}</text>`,
      );
    }
  }
  for (const l of o.lines ?? []) {
    parts.push(
      `<line x1="${l.from[0] * s}" y1="${l.from[1] * s}" x2="${l.to[0] * s}" y2="${l.to[1] * s}" ` +
        `stroke="${paint(l.color, '#00ffff')}" stroke-width="2"/>`,
    );
  }
  for (const p of o.points ?? []) {
    parts.push(`<circle cx="${p.x * s}" cy="${p.y * s}" r="3" fill="${paint(p.color, '#ff0000')}"/>`);
  }
  if (o.caption) {
    o.caption.split('\n').forEach((line, i) => {
      parts.push(
        `<text x="2" y="${h * s + (i + 1) * lineHeight - 3}" font-family="DejaVu Sans, sans-serif" ` +
          `font-size="${fontSize}" fill="${paint(o.captionColor, '#ffffff')}">${escapeXml(line)}</text>`,
      );
    });
  }
  if (o.frame) {
    parts.push(
      `<rect x="1" y="1" width="${w * s - 2}" height="${h * s - 2}" fill="none" ` +
        `stroke="${paint(o.frame, '')}" stroke-width="2"/>`,
    );
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w * s}" height="${total}">${parts.join('')}</svg>`;
}

/**
 * Draws `tiles` as a grid (all tiles the same size) and writes it to `path` as PNG; returns the
 * grid's width and height in pixels.
 */
export async function drawGrid(
  path: string,
  tiles: Tile[],
  opts: GridOptions = {},
): Promise<{ width: number; height: number }> {
  if (tiles.length === 0) throw new Error('drawGrid: no tiles');
  const sharp = loadSharp();
  const columns = Math.min(opts.columns ?? 8, tiles.length);
  const s = opts.scale ?? 3;
  const { width: w, height: h } = tiles[0];
  if (tiles.some((t) => t.width !== w || t.height !== h))
    throw new Error('drawGrid: every tile must have the same size');
  const captionLines =
    opts.captionLines ??
    Math.max(0, ...tiles.map((t) => (t.overlay?.caption ? t.overlay.caption.split('\n').length : 0)));
  const fontSize = Math.max(10, Math.min(14, Math.round(w * s * 0.09)));
  const tileH = h * s + captionLines * (fontSize + 3);
  const gap = 4;
  const rows = Math.ceil(tiles.length / columns);
  const width = columns * (w * s + gap) + gap;
  const height = rows * (tileH + gap) + gap;
  const layers = await Promise.all(
    tiles.map(async (t, i) => {
      const img = await sharp(rgbPixels(t), { raw: { width: w, height: h, channels: 3 } })
        .resize(w * s, h * s, { kernel: 'nearest' })
        .png()
        .toBuffer();
      const svg = Buffer.from(overlaySvg(t.overlay ?? {}, w, h, s, captionLines));
      const left = gap + (i % columns) * (w * s + gap);
      const top = gap + Math.floor(i / columns) * (tileH + gap);
      return [
        { input: img, left, top },
        { input: svg, left, top },
      ];
    }),
  );
  await sharp({ create: { width, height, channels: 3, background: { r: 24, g: 24, b: 24 } } })
    .composite(layers.flat())
    .png()
    .toFile(path);
  return { width, height };
}
