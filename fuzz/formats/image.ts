// Structure-aware mutation of PNG and JPEG files. PNG: chunks are parsed, their fields (IHDR
// size, bit depth, colour type, interlace) and order changed, ancillary chunks that reach other
// libraries added (iCCP -> lcms, eXIf -> libexif), the image data inflated, its scanlines
// mutated and deflated again, and CRCs fixed (mostly) so the decoder gets past them. JPEG:
// segments are parsed and frame/scan headers, tables, restart intervals and the entropy-coded
// data mutated, APP segments (Exif, ICC, Adobe) added.
import { crc32, deflateSync, inflateSync } from 'node:zlib';
import { concat, INTERESTING_16, INTERESTING_32, utf8 } from '../mutate.js';
import type { Prng } from '../prng.js';

const PNG_SIG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export const isPng = (b: Uint8Array): boolean => b.length >= 8 && PNG_SIG.every((v, i) => b[i] === v);
export const isJpeg = (b: Uint8Array): boolean => b.length >= 2 && b[0] === 0xff && b[1] === 0xd8;

export const IMAGE_DICTIONARY = [
  'IHDR',
  'IDAT',
  'PLTE',
  'tRNS',
  'IEND',
  'iCCP',
  'eXIf',
  'acTL',
  'fcTL',
  'gAMA',
  'sBIT',
  'Exif\u0000\u0000',
  'ICC_PROFILE\u0000',
  'Adobe',
  'JFIF\u0000',
  'MM\u0000*',
  'II*\u0000',
]
  .map(utf8)
  .concat(
    [
      [0xff, 0xd8],
      [0xff, 0xd9],
      [0xff, 0xc0],
      [0xff, 0xc2],
      [0xff, 0xc4],
      [0xff, 0xda],
      [0xff, 0xdb],
      [0xff, 0xdd],
      [0xff, 0x00],
      [0xff, 0xd0],
      [0xff, 0xe1],
    ].map((a) => new Uint8Array(a)),
  );

function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0, false);
  return b;
}

// ------------------------------------------------------------------------------------------ PNG

interface Chunk {
  type: string;
  data: Uint8Array;
  /** A length field to write instead of data.length. */
  length?: number;
  /** Keep a wrong CRC (the original, or random). */
  crc?: number;
}

function parsePng(b: Uint8Array): { chunks: Chunk[]; tail: Uint8Array } | null {
  if (!isPng(b)) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const chunks: Chunk[] = [];
  let p = 8;
  while (p + 12 <= b.length) {
    const len = dv.getUint32(p, false);
    if (p + 12 + len > b.length) break;
    const type = String.fromCharCode(...b.subarray(p + 4, p + 8));
    chunks.push({ type, data: b.subarray(p + 8, p + 8 + len) });
    p += 12 + len;
  }
  return chunks.length ? { chunks, tail: b.subarray(p) } : null;
}

function writePng(chunks: Chunk[], tail: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [PNG_SIG];
  for (const c of chunks) {
    const typeAndData = concat([utf8(c.type.padEnd(4, ' ').slice(0, 4)), c.data]);
    parts.push(u32be(c.length ?? c.data.length), typeAndData, u32be(c.crc ?? crc32(typeAndData)));
  }
  parts.push(tail);
  return concat(parts);
}

const EXTRA_CHUNKS: ((rng: Prng) => Chunk)[] = [
  (rng) => ({ type: 'PLTE', data: rng.bytes(rng.pick([0, 3, 6, 765, 768, 771])) }),
  (rng) => ({ type: 'tRNS', data: rng.bytes(rng.pick([0, 1, 2, 6, 256, 300])) }),
  (rng) => ({ type: 'gAMA', data: rng.pick([new Uint8Array(0), u32be(0), u32be(45455), u32be(0xffffffff)]) }),
  (rng) => ({ type: 'sBIT', data: rng.bytes(rng.range(0, 5)) }),
  (rng) => ({ type: 'cHRM', data: rng.bytes(rng.pick([0, 32])) }),
  (rng) => ({ type: 'sRGB', data: new Uint8Array([rng.pick([0, 3, 4, 255])]) }),
  (rng) => ({ type: 'pHYs', data: rng.bytes(9) }),
  (rng) => ({ type: 'bKGD', data: rng.bytes(rng.pick([1, 2, 6])) }),
  (rng) => ({ type: 'tEXt', data: concat([utf8('Comment\u0000'), rng.bytes(rng.size(2000))]) }),
  (rng) => ({
    type: 'zTXt',
    data: concat([
      utf8('Comment\u0000\u0000'),
      rng.chance(0.5) ? deflateSync(rng.bytes(rng.size(5000))) : rng.bytes(rng.size(100)),
    ]),
  }),
  (rng) => ({
    type: 'iTXt',
    data: concat([
      utf8('XML:com.adobe.xmp\u0000'),
      new Uint8Array([rng.int(2), 0, 0, 0]),
      utf8('<x:xmpmeta xmlns:x="adobe:ns:meta/">'),
      rng.bytes(rng.size(500)),
    ]),
  }),
  (rng) => ({ type: 'iCCP', data: concat([utf8('icc\u0000\u0000'), deflateSync(iccProfile(rng))]) }),
  (rng) => ({ type: 'eXIf', data: exifTiff(rng) }),
  (rng) => ({ type: 'acTL', data: concat([u32be(rng.pick([0, 1, 2, 0xffffffff])), u32be(rng.int(3))]) }),
  (rng) => ({ type: 'fcTL', data: rng.bytes(26) }),
  (rng) => ({ type: 'fdAT', data: rng.bytes(rng.size(100)) }),
  (rng) => ({
    type: rng.pick(['ABCD', 'abcd', 'IDAt', 'iDAT', 'IEND', 'IHDR', '\u0000\u0000\u0000\u0000']),
    data: rng.bytes(rng.size(64)),
  }),
];

/** A 128-byte ICC header with random tags after it: enough for lcms to start parsing. */
function iccProfile(rng: Prng): Uint8Array {
  const tags = rng.size(20);
  const size = 128 + 4 + tags * 12 + rng.size(512);
  const b = rng.bytes(size);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, rng.chance(0.7) ? size : rng.pick(INTERESTING_32), false);
  b.set(utf8(rng.pick(['mntr', 'scnr', 'prtr', 'spac'])), 12);
  b.set(utf8(rng.pick(['RGB ', 'GRAY', 'CMYK', 'Lab '])), 16);
  b.set(utf8(rng.pick(['XYZ ', 'Lab '])), 20);
  b.set(utf8('acsp'), 36);
  dv.setUint32(128, rng.chance(0.8) ? tags : rng.pick(INTERESTING_32), false);
  for (let t = 0; t < tags; t++) {
    b.set(
      utf8(rng.pick(['desc', 'rXYZ', 'gXYZ', 'bXYZ', 'rTRC', 'gTRC', 'bTRC', 'wtpt', 'A2B0', 'kTRC', 'cprt'])),
      132 + 12 * t,
    );
    dv.setUint32(136 + 12 * t, rng.chance(0.7) ? rng.int(size) : rng.pick(INTERESTING_32), false);
    dv.setUint32(140 + 12 * t, rng.chance(0.7) ? rng.size(64) : rng.pick(INTERESTING_32), false);
  }
  return b;
}

/** A TIFF header and one IFD of random entries (libexif's input). */
export function exifTiff(rng: Prng): Uint8Array {
  const le = rng.chance(0.5);
  const n = rng.size(24);
  const b = new Uint8Array(8 + 2 + 12 * n + 4 + rng.size(256));
  const dv = new DataView(b.buffer);
  b.set(le ? [0x49, 0x49, 0x2a, 0x00] : [0x4d, 0x4d, 0x00, 0x2a]);
  dv.setUint32(4, rng.chance(0.85) ? 8 : rng.pick(INTERESTING_32), le);
  dv.setUint16(8, rng.chance(0.85) ? n : rng.pick(INTERESTING_16), le);
  for (let i = 0; i < n; i++) {
    const at = 10 + 12 * i;
    dv.setUint16(
      at,
      rng.pick([
        0x0112,
        0x8769,
        0x8825,
        0xa005,
        0x010f,
        0x0110,
        0x0132,
        0x927c,
        0x9286,
        0x0201,
        0x0202,
        rng.u32() & 0xffff,
      ]),
      le,
    );
    dv.setUint16(at + 2, rng.range(0, 13), le);
    dv.setUint32(at + 4, rng.chance(0.7) ? rng.size(64) : rng.pick(INTERESTING_32), le);
    dv.setUint32(at + 8, rng.chance(0.7) ? rng.int(b.length) : rng.pick(INTERESTING_32), le);
  }
  for (let i = 10 + 12 * n + 4; i < b.length; i++) b[i] = rng.u32() & 0xff;
  return b;
}

function inflateIdat(chunks: Chunk[]): Uint8Array | null {
  const idat = concat(chunks.filter((c) => c.type === 'IDAT').map((c) => c.data));
  try {
    return inflateSync(idat, { maxOutputLength: 8 << 20 });
  } catch {
    return null;
  }
}

/** Replaces the IDAT chunks by `raw` deflated, split into 1-3 chunks. */
function replaceIdat(chunks: Chunk[], raw: Uint8Array, rng: Prng): Chunk[] {
  const z = deflateSync(raw, { level: rng.pick([0, 1, 6, 9]) });
  const first = chunks.findIndex((c) => c.type === 'IDAT');
  const rest = chunks.filter((c) => c.type !== 'IDAT');
  const pieces: Chunk[] = [];
  const parts = rng.range(1, 3);
  for (let i = 0; i < parts; i++)
    pieces.push({
      type: 'IDAT',
      data: z.subarray(Math.floor((i * z.length) / parts), Math.floor(((i + 1) * z.length) / parts)),
    });
  rest.splice(first < 0 ? Math.max(0, rest.length - 1) : first, 0, ...pieces);
  return rest;
}

export function mutatePng(b: Uint8Array, rng: Prng): Uint8Array | null {
  const parsed = parsePng(b);
  if (!parsed) return null;
  let chunks = parsed.chunks.map((c) => ({ ...c }));
  let tail = parsed.tail;
  const ihdr = chunks.find((c) => c.type === 'IHDR' && c.data.length === 13);
  switch (rng.int(10)) {
    case 0:
    case 1: {
      if (!ihdr) break;
      const d = ihdr.data.slice();
      const dv = new DataView(d.buffer);
      const field = rng.int(7);
      if (field === 0)
        dv.setUint32(
          0,
          rng.pick([0, 1, 2, 3, 7, 8, 9, 4096, 16383, 16384, 65535, 65536, 1e6, 0x7fffffff, 0x80000000, 0xffffffff]),
          false,
        );
      else if (field === 1)
        dv.setUint32(
          4,
          rng.pick([0, 1, 2, 3, 7, 8, 9, 4096, 16383, 16384, 65535, 65536, 1e6, 0x7fffffff, 0x80000000, 0xffffffff]),
          false,
        );
      else if (field === 2) d[8] = rng.pick([0, 1, 2, 3, 4, 5, 8, 16, 32, 255]);
      else if (field === 3) d[9] = rng.pick([0, 1, 2, 3, 4, 5, 6, 7, 8, 255]);
      else if (field === 4) d[10] = rng.pick([0, 1, 255]);
      else if (field === 5) d[11] = rng.pick([0, 1, 255]);
      else d[12] = rng.pick([0, 1, 2, 255]);
      // A valid (bit depth, colour type) pair that does not match the data half the time.
      if (rng.chance(0.3))
        [d[8], d[9]] = rng.pick([
          [1, 0],
          [2, 0],
          [4, 0],
          [8, 0],
          [16, 0],
          [8, 2],
          [16, 2],
          [1, 3],
          [2, 3],
          [4, 3],
          [8, 3],
          [8, 4],
          [16, 4],
          [8, 6],
          [16, 6],
        ]);
      ihdr.data = d;
      break;
    }
    case 2: {
      // Scanlines: filter bytes out of range, rows cut or lengthened, pixel bytes changed.
      const raw = inflateIdat(chunks);
      if (!raw) break;
      const r = raw.slice();
      const op = rng.int(4);
      let out: Uint8Array = r;
      if (op === 0)
        for (let k = rng.size(8); k > 0 && r.length; k--) r[rng.int(r.length)] = rng.pick([5, 6, 127, 255, 4, 1]);
      else if (op === 1) out = r.subarray(0, rng.int(r.length + 1));
      else if (op === 2) out = concat([r, rng.bytes(rng.size(4096))]);
      else for (let k = rng.size(64); k > 0 && r.length; k--) r[rng.int(r.length)] = rng.u32() & 0xff;
      chunks = replaceIdat(chunks, out, rng);
      break;
    }
    case 3: {
      // Chunk order: drop, duplicate, swap, move IEND.
      if (chunks.length < 2) break;
      const i = rng.int(chunks.length);
      const op = rng.int(4);
      if (op === 0) chunks.splice(i, 1);
      else if (op === 1) chunks.splice(rng.int(chunks.length + 1), 0, { ...chunks[i] });
      else if (op === 2) {
        const j = rng.int(chunks.length);
        [chunks[i], chunks[j]] = [chunks[j], chunks[i]];
      } else {
        const end = chunks.findIndex((c) => c.type === 'IEND');
        if (end >= 0) chunks.splice(rng.int(chunks.length), 0, chunks.splice(end, 1)[0]);
      }
      break;
    }
    case 4:
    case 5: {
      // An ancillary (or odd) chunk before IDAT, or anywhere.
      const extra = rng.pick(EXTRA_CHUNKS)(rng);
      const idat = chunks.findIndex((c) => c.type === 'IDAT');
      chunks.splice(rng.chance(0.7) && idat > 0 ? rng.range(1, idat) : rng.int(chunks.length + 1), 0, extra);
      break;
    }
    case 6: {
      // A length field that disagrees with the data, or a bad CRC.
      const c = rng.pick(chunks);
      if (rng.chance(0.5))
        c.length = rng.pick([0, 1, c.data.length + 1, c.data.length - 1, 0x7fffffff, 0x80000000, 0xffffffff]) >>> 0;
      else c.crc = rng.u32();
      break;
    }
    case 7: {
      // Bytes inside one chunk changed, CRC fixed.
      const c = rng.pick(chunks);
      if (!c.data.length) break;
      const d = c.data.slice();
      for (let k = rng.size(8); k > 0; k--) d[rng.int(d.length)] = rng.u32() & 0xff;
      c.data = d;
      break;
    }
    case 8: {
      // A whole new image stream of another size, in this file's format.
      if (!ihdr) break;
      const d = ihdr.data.slice();
      const dv = new DataView(d.buffer);
      const [w, h] = rng.pick([
        [1, 1],
        [2, 3],
        [17, 5],
        [300, 2],
        [2000, 2000],
        [1, 16384],
        [16384, 1],
        [4096, 4096],
      ]);
      dv.setUint32(0, w, false);
      dv.setUint32(4, h, false);
      ihdr.data = d;
      const bpp = [1, 0, 3, 1, 2, 0, 4][d[9]] ?? 1;
      const rowBytes = Math.ceil((w * bpp * Math.max(1, d[8])) / 8) + 1;
      const size = Math.min(rowBytes * h, 16 << 20);
      chunks = replaceIdat(chunks, new Uint8Array(size).fill(rng.pick([0, 0, 1, 0x80])), rng);
      break;
    }
    default:
      tail = rng.chance(0.5) ? rng.bytes(rng.size(256)) : new Uint8Array(0);
      if (rng.chance(0.5)) chunks = chunks.filter((c) => c.type !== 'IEND');
  }
  return writePng(chunks, tail);
}

// ----------------------------------------------------------------------------------------- JPEG

interface Segment {
  marker: number;
  /** Payload after the 2-byte length (undefined for markers without one: SOI, EOI, RSTn, TEM). */
  payload?: Uint8Array;
  /** Entropy-coded bytes that follow an SOS segment. */
  scan?: Uint8Array;
  /** A length field to write instead of the real one. */
  length?: number;
}

const standalone = (m: number): boolean => m === 0xd8 || m === 0xd9 || m === 0x01 || (m >= 0xd0 && m <= 0xd7);

function parseJpeg(b: Uint8Array): { segments: Segment[]; tail: Uint8Array } | null {
  if (!isJpeg(b)) return null;
  const segs: Segment[] = [];
  let p = 0;
  while (p + 1 < b.length) {
    if (b[p] !== 0xff) break;
    let q = p + 1;
    while (q < b.length && b[q] === 0xff) q++;
    if (q >= b.length) break;
    const marker = b[q];
    p = q + 1;
    if (standalone(marker)) {
      segs.push({ marker });
      if (marker === 0xd9) break;
      continue;
    }
    if (p + 2 > b.length) break;
    const len = (b[p] << 8) | b[p + 1];
    if (len < 2 || p + len > b.length) break;
    const seg: Segment = { marker, payload: b.subarray(p + 2, p + len) };
    p += len;
    if (marker === 0xda) {
      // Entropy-coded data runs to the next marker that is not a stuffed 0xff00 or a restart.
      let e = p;
      while (e + 1 < b.length && !(b[e] === 0xff && b[e + 1] !== 0x00 && !(b[e + 1] >= 0xd0 && b[e + 1] <= 0xd7))) e++;
      if (e + 1 >= b.length) e = b.length;
      seg.scan = b.subarray(p, e);
      p = e;
    }
    segs.push(seg);
  }
  return segs.length ? { segments: segs, tail: b.subarray(Math.min(p, b.length)) } : null;
}

function writeJpeg(segs: Segment[], tail: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const s of segs) {
    parts.push(new Uint8Array([0xff, s.marker]));
    if (s.payload) {
      const len = s.length ?? s.payload.length + 2;
      parts.push(new Uint8Array([(len >> 8) & 0xff, len & 0xff]), s.payload);
    }
    if (s.scan) parts.push(s.scan);
  }
  parts.push(tail);
  return concat(parts);
}

const SOF_MARKERS = [0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc9, 0xca, 0xcb, 0xcf];

function appSegment(rng: Prng): Segment {
  switch (rng.int(5)) {
    case 0:
      return { marker: 0xe1, payload: concat([utf8('Exif\u0000\u0000'), exifTiff(rng)]) };
    case 1: {
      const icc = rng.bytes(rng.size(600));
      new DataView(icc.buffer).setUint32(0, rng.chance(0.6) ? icc.length : rng.pick(INTERESTING_32), false);
      if (icc.length > 40) icc.set(utf8('acsp'), 36);
      return {
        marker: 0xe2,
        payload: concat([utf8('ICC_PROFILE\u0000'), new Uint8Array([rng.range(0, 2), rng.range(0, 2)]), icc]),
      };
    }
    case 2:
      return {
        marker: 0xee,
        payload: concat([utf8('Adobe'), new Uint8Array([0, 100, 0, 0, 0, 0, rng.pick([0, 1, 2, 3, 255])])]),
      };
    case 3:
      return {
        marker: 0xe0,
        payload: concat([
          utf8('JFIF\u0000'),
          new Uint8Array([1, 2, rng.int(3), 0, 1, 0, 1, rng.int(4), rng.int(4)]),
          rng.bytes(rng.int(48)),
        ]),
      };
    default:
      return { marker: rng.pick([0xfe, 0xed, 0xe1, 0xe2]), payload: rng.bytes(rng.size(2000)) };
  }
}

export function mutateJpeg(b: Uint8Array, rng: Prng): Uint8Array | null {
  const parsed = parseJpeg(b);
  if (!parsed) return null;
  const segs = parsed.segments.map((s) => ({ ...s }));
  let tail = parsed.tail;
  const find = (pred: (m: number) => boolean): Segment | undefined => {
    const all = segs.filter((s) => s.payload && pred(s.marker));
    return all.length ? rng.pick(all) : undefined;
  };
  const edit = (s: Segment | undefined, f: (d: Uint8Array, dv: DataView) => void): void => {
    if (!s?.payload?.length) return;
    const d = s.payload.slice();
    f(d, new DataView(d.buffer));
    s.payload = d;
  };
  switch (rng.int(11)) {
    case 0:
    case 1: {
      const sof = find((m) => SOF_MARKERS.includes(m));
      if (rng.chance(0.2) && sof) {
        sof.marker = rng.pick(SOF_MARKERS);
        break;
      }
      edit(sof, (d, dv) => {
        const field = rng.int(6);
        if (field === 0) d[0] = rng.pick([0, 1, 8, 12, 16, 255]);
        else if (field === 1 && d.length >= 3) dv.setUint16(1, rng.pick([0, 1, 2, 8, 9, 16384, 65500, 65535]), false);
        else if (field === 2 && d.length >= 5) dv.setUint16(3, rng.pick([0, 1, 2, 8, 9, 16384, 65500, 65535]), false);
        else if (field === 3 && d.length >= 6) d[5] = rng.pick([0, 1, 2, 3, 4, 5, 255]);
        else if (d.length >= 9) {
          const c = rng.int(Math.max(1, Math.floor((d.length - 6) / 3)));
          if (field === 4) d[7 + 3 * c] = rng.pick([0x00, 0x11, 0x12, 0x21, 0x22, 0x41, 0x44, 0x14, 0xff, 0x0f, 0xf0]);
          else d[8 + 3 * c] = rng.pick([0, 1, 2, 3, 4, 255]);
        }
      });
      break;
    }
    case 2:
      // Quantisation tables: precision and id, zero entries.
      edit(
        find((m) => m === 0xdb),
        (d) => {
          if (rng.chance(0.5)) d[0] = rng.pick([0x00, 0x01, 0x03, 0x04, 0x10, 0x13, 0xff]);
          else for (let k = rng.size(16); k > 0; k--) d[rng.int(d.length)] = rng.pick([0, 1, 255]);
        },
      );
      break;
    case 3:
      // Huffman tables: class/id, code counts that overflow, symbols.
      edit(
        find((m) => m === 0xc4),
        (d) => {
          const op = rng.int(3);
          if (op === 0) d[0] = rng.pick([0x00, 0x01, 0x10, 0x11, 0x04, 0x14, 0x20, 0xff]);
          else if (op === 1) d[1 + rng.int(Math.min(16, d.length - 1))] = rng.pick([0, 1, 2, 16, 255]);
          else for (let k = rng.size(8); k > 0; k--) d[rng.int(d.length)] = rng.u32() & 0xff;
        },
      );
      break;
    case 4:
      // Scan header: component count, selectors, table ids, spectral selection, approximation.
      edit(
        find((m) => m === 0xda),
        (d) => {
          const op = rng.int(4);
          if (op === 0) d[0] = rng.pick([0, 1, 2, 3, 4, 5, 255]);
          else if (op === 1 && d.length > 2)
            d[1 + 2 * rng.int(Math.max(1, Math.floor((d.length - 4) / 2))) + rng.int(2)] = rng.pick([
              0, 1, 2, 3, 4, 0x44, 0xff, 0x04, 0x40,
            ]);
          else if (d.length >= 3) d[d.length - 1 - rng.int(3)] = rng.pick([0, 1, 13, 63, 64, 0xff, 0x0f, 0xf0, 0x11]);
        },
      );
      break;
    case 5: {
      // Entropy-coded data: bits flipped, cut, restart markers or EOI inside.
      const sos = segs.filter((s) => s.scan?.length);
      if (!sos.length) break;
      const s = rng.pick(sos);
      const d = s.scan!.slice();
      const op = rng.int(4);
      if (op === 0) for (let k = rng.size(16); k > 0; k--) d[rng.int(d.length)] ^= 1 << rng.int(8);
      else if (op === 1) s.scan = d.subarray(0, rng.int(d.length + 1));
      else if (op === 2) {
        const at = rng.int(d.length + 1);
        s.scan = concat([
          d.subarray(0, at),
          new Uint8Array([0xff, rng.pick([0xd0, 0xd3, 0xd7, 0xd9, 0xd8, 0xc4, 0x00, 0xff])]),
          d.subarray(at),
        ]);
      } else s.scan = concat([d, rng.bytes(rng.size(1024))]);
      if (op === 0) s.scan = d;
      break;
    }
    case 6: {
      // A restart interval (with no restart markers in the data), or a zero/huge one.
      const dri: Segment = { marker: 0xdd, payload: new Uint8Array([0, 0]) };
      new DataView(dri.payload!.buffer).setUint16(0, rng.pick([0, 1, 2, 7, 65535]), false);
      const at = segs.findIndex((s) => s.marker === 0xda);
      segs.splice(at < 0 ? 1 : at, 0, dri);
      break;
    }
    case 7: {
      segs.splice(rng.range(1, Math.max(1, segs.length - 1)), 0, appSegment(rng));
      break;
    }
    case 8: {
      // Segment order: drop, duplicate, swap.
      if (segs.length < 3) break;
      const i = rng.range(1, segs.length - 1);
      const op = rng.int(3);
      if (op === 0) segs.splice(i, 1);
      else if (op === 1) segs.splice(rng.range(1, segs.length - 1), 0, { ...segs[i] });
      else {
        const j = rng.range(1, segs.length - 1);
        [segs[i], segs[j]] = [segs[j], segs[i]];
      }
      break;
    }
    case 9: {
      const s = find(() => true);
      if (s) s.length = rng.pick([0, 1, 2, 3, (s.payload!.length + 2) ^ 1, s.payload!.length + 3, 65535]);
      break;
    }
    default:
      tail = rng.chance(0.5) ? new Uint8Array(0) : rng.bytes(rng.size(128));
      if (rng.chance(0.5)) {
        const eoi = segs.findIndex((s) => s.marker === 0xd9);
        if (eoi >= 0) segs.splice(eoi, 1);
      }
  }
  return writeJpeg(segs, tail);
}

export function mutateImage(b: Uint8Array, rng: Prng): Uint8Array | null {
  if (isPng(b)) return mutatePng(b, rng);
  if (isJpeg(b)) return mutateJpeg(b, rng);
  return null;
}
