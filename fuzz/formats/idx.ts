// Structure-aware mutation of IDX files (two zero bytes, a type code, the number of dimensions,
// one big-endian uint32 per dimension, then the values): the magic, type code, dimension count,
// dimensions (huge products included) and data length are changed, consistently with each
// other or not. Gzipped inputs are inflated, mutated and deflated again, or their gzip framing
// is mutated instead.
import { gunzipSync, gzipSync } from 'node:zlib';
import { concat, INTERESTING_32 } from '../mutate.js';
import type { Prng } from '../prng.js';

export const TYPE_BYTES: Record<number, number> = { 0x08: 1, 0x09: 1, 0x0b: 2, 0x0c: 4, 0x0d: 4, 0x0e: 8 };
const TYPES = Object.keys(TYPE_BYTES).map(Number);
const ODD_TYPES = [0x00, 0x01, 0x07, 0x0a, 0x0f, 0x10, 0x80, 0xff];
/** Data sections are kept at most this long when a mutation makes them consistent with the dims. */
const MAX_DATA = 1 << 16;

export const IDX_DICTIONARY = [
  [0, 0, 8, 3],
  [0, 0, 8, 1],
  [0, 0, 0x0d, 2],
  [0xff, 0xff, 0xff, 0xff],
  [0x80, 0, 0, 0],
  [0, 0, 0, 0],
  [0x1f, 0x8b, 8, 0],
].map((a) => new Uint8Array(a));

export const isGzip = (b: Uint8Array): boolean => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

interface Idx {
  zero: [number, number];
  type: number;
  dims: number[];
  data: Uint8Array;
}

function decode(b: Uint8Array): Idx | null {
  if (b.length < 4) return null;
  const ndim = b[3];
  if (b.length < 4 + 4 * ndim) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const dims = Array.from({ length: ndim }, (_, d) => dv.getUint32(4 + 4 * d, false));
  return { zero: [b[0], b[1]], type: b[2], dims, data: b.subarray(4 + 4 * ndim) };
}

function encode(x: Idx, ndimByte = x.dims.length): Uint8Array {
  const head = new Uint8Array(4 + 4 * x.dims.length);
  head.set([x.zero[0], x.zero[1], x.type, ndimByte & 0xff]);
  const dv = new DataView(head.buffer);
  x.dims.forEach((d, i) => {
    dv.setUint32(4 + 4 * i, d >>> 0, false);
  });
  return concat([head, x.data]);
}

const count = (dims: number[]): number => dims.reduce((a, d) => a * d, 1);

/** Data of exactly the size the dims promise (random bytes), when that is small enough. */
function fitData(x: Idx, rng: Prng): void {
  const need = count(x.dims) * (TYPE_BYTES[x.type] ?? 1);
  if (need <= MAX_DATA)
    x.data = need <= x.data.length ? x.data.subarray(0, need) : concat([x.data, rng.bytes(need - x.data.length)]);
}

function randomDims(rng: Prng, ndim: number): number[] {
  return Array.from({ length: ndim }, () => (rng.chance(0.1) ? 0 : rng.size(rng.chance(0.5) ? 8 : 64)));
}

function mutatePlain(b: Uint8Array, rng: Prng): Uint8Array | null {
  const x = decode(b);
  if (!x) return null;
  let ndimByte = x.dims.length;
  switch (rng.int(9)) {
    case 0:
      x.type = rng.chance(0.6) ? rng.pick(TYPES) : rng.pick(ODD_TYPES);
      if (rng.chance(0.7)) fitData(x, rng);
      break;
    case 1:
      x.zero = rng.pick([
        [0, 1],
        [1, 0],
        [0xff, 0xff],
        [0x1f, 0x8b],
      ]) as [number, number];
      break;
    case 2: {
      // Another number of dimensions: fresh dims (consistent data) or the old ones kept.
      const ndim = rng.pick([0, 1, 2, 3, 4, 8, 9, 16, 255]);
      if (rng.chance(0.6) && ndim <= 16) {
        x.dims = randomDims(rng, ndim);
        fitData(x, rng);
      } else {
        ndimByte = ndim;
      }
      break;
    }
    case 3: {
      // One dimension set to a boundary value: huge products, zero with data present.
      if (!x.dims.length) break;
      x.dims[rng.int(x.dims.length)] = rng.pick([...INTERESTING_32, 65536, 2 ** 26, 28, 60000]);
      break;
    }
    case 4:
      // Products past 2^32, 2^53 and float64 precision.
      x.dims = rng.pick([
        [65536, 65536],
        [65536, 65536, 65536, 65536],
        [0xffffffff, 0xffffffff],
        [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
        [2 ** 31, 2, 0],
        [0, 0xffffffff],
        [3, 0x55555556],
      ]);
      break;
    case 5: {
      const d = rng.pick([-1, 1, -(TYPE_BYTES[x.type] ?? 1), TYPE_BYTES[x.type] ?? 1, -rng.size(100)]);
      x.data = d < 0 ? x.data.subarray(0, Math.max(0, x.data.length + d)) : concat([x.data, rng.bytes(d)]);
      break;
    }
    case 6:
      x.dims = randomDims(rng, rng.range(1, 4));
      fitData(x, rng);
      break;
    case 7: {
      // Values: labels out of range, NaN/infinity patterns for float types.
      const d = x.data.slice();
      for (let i = 0; i < Math.min(d.length, 32); i++)
        d[rng.int(d.length)] = rng.pick([10, 11, 0x7f, 0x80, 0xff, 0x7f, 0xc0, 0x00]);
      x.data = d;
      break;
    }
    default:
      // The header alone (no data), or a header cut inside the dims.
      return rng.chance(0.5)
        ? encode({ ...x, data: new Uint8Array(0) }, ndimByte)
        : encode(x, ndimByte).subarray(0, rng.int(4 + 4 * x.dims.length));
  }
  return encode(x, ndimByte);
}

function mutateGzipFraming(b: Uint8Array, rng: Prng): Uint8Array {
  const o = b.slice();
  const dv = new DataView(o.buffer);
  switch (rng.int(4)) {
    case 0:
      if (o.length >= 4) o[3] = rng.pick([0x02, 0x04, 0x08, 0x10, 0x1f, 0xe0]); // FHCRC/FEXTRA/FNAME/FCOMMENT/reserved flags
      break;
    case 1:
      if (o.length >= 8) dv.setUint32(o.length - 4, rng.pick(INTERESTING_32), true); // ISIZE
      break;
    case 2:
      if (o.length >= 8) dv.setUint32(o.length - 8, rng.u32(), true); // CRC32
      break;
    default:
      return concat([o, rng.chance(0.5) ? o : gzipSync(rng.bytes(rng.size(64)))]); // a second member
  }
  return o;
}

export function mutateIdx(b: Uint8Array, rng: Prng): Uint8Array | null {
  if (isGzip(b)) {
    if (rng.chance(0.3)) return mutateGzipFraming(b, rng);
    let inner: Uint8Array;
    try {
      inner = gunzipSync(b, { maxOutputLength: 16 << 20 });
    } catch {
      return null;
    }
    const m = mutatePlain(inner, rng);
    return m && gzipSync(m, { level: 1 });
  }
  const m = mutatePlain(b, rng);
  return m && rng.chance(0.08) ? gzipSync(m, { level: 1 }) : m;
}
