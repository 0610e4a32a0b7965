// Structure-aware mutation of safetensors files (an 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}, __metadata__: {...}}, then the data): the header is
// decoded, mutated as JSON (dtypes, shapes, offsets, names, metadata, duplicate keys, nesting)
// and re-encoded, usually with a consistent length prefix, sometimes with a wrong one.
import {
  concat,
  deepNesting,
  interestingValue,
  isPlainObject,
  type Json,
  mutateTree,
  Pairs,
  Raw,
  render,
  setKey,
  SPECIAL_KEYS,
  utf8,
} from '../mutate.js';
import type { Prng } from '../prng.js';

export type Header = { [key: string]: Json };

const DTYPE_BYTES: Record<string, number> = {
  F32: 4,
  F64: 8,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};
const DTYPES = Object.keys(DTYPE_BYTES);
const ODD_DTYPES: Json[] = [
  'U16',
  'U32',
  'U64',
  'F8_E4M3',
  'F8_E5M2',
  'C64',
  'f32',
  'F',
  '',
  '__proto__',
  'constructor',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'length',
  1,
  4,
  null,
  true,
  ['F32'],
  { F32: 4 },
];

export const SAFETENSORS_DICTIONARY = [
  '"dtype"',
  '"shape"',
  '"data_offsets"',
  '"__metadata__"',
  '"F32"',
  '"I64"',
  '"BF16"',
  '"__proto__"',
  '[0,0]',
  '[]',
  '{}',
  'null',
  '1e999',
  '-1',
  '"',
  ',',
  ':',
  '{',
  '}',
  '[',
  ']',
  '\\u0000',
].map(utf8);

export interface Decoded {
  header: Json;
  data: Uint8Array;
}

/** The header JSON and the data, or null when the length prefix or the JSON is broken. */
export function decodeSafetensors(b: Uint8Array): Decoded | null {
  if (b.length < 8) return null;
  const len = new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
  if (len > BigInt(b.length - 8)) return null;
  const n = Number(len);
  try {
    const header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(8, 8 + n))) as Json;
    return { header, data: b.subarray(8 + n) };
  } catch {
    return null;
  }
}

/** Header text and data with a length prefix: right most of the time, else a classic wrong value. */
export function encodeSafetensors(headerText: Uint8Array, data: Uint8Array, rng: Prng): Uint8Array {
  const prefix = new Uint8Array(8);
  let len = BigInt(headerText.length);
  if (rng.chance(0.06)) {
    const total = BigInt(headerText.length + data.length);
    len = rng.pick([
      len + 1n,
      len - 1n,
      len + 8n,
      len - 8n,
      0n,
      1n,
      2n,
      total,
      total + 1n,
      100n * 1024n * 1024n,
      100n * 1024n * 1024n + 1n,
      2n ** 31n,
      2n ** 32n,
      2n ** 53n,
      2n ** 53n + 1n,
      2n ** 63n,
      2n ** 64n - 1n,
      BigInt(rng.u32()),
    ]);
    if (len < 0n) len = 0n;
  }
  new DataView(prefix.buffer).setBigUint64(0, len & (2n ** 64n - 1n), true);
  return concat([prefix, headerText, data]);
}

/** Renders the header, with (rarely) a text-level twist the JSON tree cannot express. */
export function renderHeader(header: Json, rng: Prng): Uint8Array {
  let text = render(header);
  if (rng.chance(0.94)) {
    // The reference writer pads with spaces so the data starts 8-byte aligned.
    if (rng.chance(0.5)) text += ' '.repeat((8 - ((8 + utf8(text).length) % 8)) % 8);
    return utf8(text);
  }
  switch (rng.int(7)) {
    case 0:
      return utf8(`\ufeff${text}`);
    case 1:
      return utf8(`${text}${rng.pick([' ', '\u0000', 'x', '}', ',', '\n\n\n', '{}'])}`);
    case 2:
      return utf8(text.slice(0, rng.int(text.length + 1)));
    case 3: {
      // Invalid UTF-8 inside the header.
      const b = utf8(text);
      const at = rng.int(b.length + 1);
      return concat([
        b.subarray(0, at),
        new Uint8Array(rng.pick([[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82]])),
        b.subarray(at),
      ]);
    }
    case 4:
      return utf8(`${' '.repeat(rng.size(100))}${text}${'\t'.repeat(rng.int(3))}`);
    case 5:
      return concat([utf8(text), new Uint8Array(rng.size(16))]);
    default:
      return utf8(text.replace(/"/g, rng.pick(["'", '\\"', '""'])).slice(0, text.length));
  }
}

function tensorNames(h: Header): string[] {
  return Object.keys(h).filter((k) => k !== '__metadata__' && isPlainObject(h[k]));
}

function product(shape: Json): number {
  return Array.isArray(shape) ? shape.reduce<number>((a, d) => a * (typeof d === 'number' ? d : NaN), 1) : NaN;
}

/** A random shape with exactly `count` elements (count factored into 0-4 dims, plus 1s). */
function reshape(count: number, rng: Prng): number[] {
  if (count === 0) return rng.pick([[0], [0, 3], [5, 0], [0, 2 ** 53 - 1], [2 ** 31, 0, 2 ** 31]]);
  const dims: number[] = [];
  let left = count;
  while (left > 1 && dims.length < 4) {
    const divisors: number[] = [];
    for (let d = 2; d * d <= left && divisors.length < 20; d++) if (left % d === 0) divisors.push(d);
    const d = divisors.length && rng.chance(0.7) ? rng.pick(divisors) : left;
    dims.push(d);
    left /= d;
  }
  if (rng.chance(0.3)) dims.splice(rng.int(dims.length + 1), 0, 1);
  return count === 1 && rng.chance(0.5) ? [] : dims;
}

const ODD_SHAPES: Json[] = [
  [],
  [0],
  [1],
  [-1],
  [1.5],
  [2 ** 31],
  [2 ** 32],
  [2 ** 53 - 1],
  [2 ** 53],
  [1e308],
  ['2'],
  [null],
  [[2]],
  [true],
  [0, 2 ** 53 - 1],
  [2 ** 26, 2 ** 26, 2 ** 26],
  [65536, 65536, 65536, 65536],
  [2 ** 31, 2 ** 31, 0],
  new Raw('[1e999]'),
  new Raw('[-0]'),
  new Raw('[9007199254740993]'),
  new Raw(`[${new Array(1000).fill(1).join(',')}]`),
  4,
  '4',
  null,
  {},
  { 0: 4, length: 1 },
];

function oddOffsets(begin: number, end: number, data: Uint8Array, rng: Prng): Json {
  return rng.pick<Json>([
    [end, begin],
    [begin, begin],
    [0, data.length],
    [0, data.length + 1],
    [begin, end + 1],
    [begin + 1, end],
    [begin, 2 ** 53 - 1],
    [2 ** 53 - 1, 2 ** 53 - 1],
    [2 ** 53 + 2, 2 ** 53 + 6],
    [-4, 0],
    [begin - 1, end - 1],
    [0.5, 4.5],
    [String(begin), String(end)],
    [begin],
    [begin, end, end],
    [],
    null,
    begin,
    new Raw(`[${begin}, 1e999]`),
    new Raw(`[${begin}, 18446744073709551616]`),
    new Raw(`[-0, ${end}]`),
    { 0: begin, 1: end, length: 2 },
    [data.length, data.length],
    [2 ** 32, 2 ** 32 + (end - begin)],
  ]);
}

/** One mutation of a safetensors header (and maybe of the data it describes). */
export function mutateHeader(header: Json, data: Uint8Array, rng: Prng): { header: Json; data: Uint8Array } {
  if (!isPlainObject(header) || rng.chance(0.04)) {
    return {
      header: rng.chance(0.3)
        ? deepNesting(rng.pick([1000, 10000]), rng.chance(0.5) ? 'array' : 'object')
        : interestingValue(rng),
      data,
    };
  }
  const h = header;
  const names = tensorNames(h);
  const name = names.length ? rng.pick(names) : null;
  const e = name ? (h[name] as { [key: string]: Json }) : null;
  const offs = e && Array.isArray(e.data_offsets) ? e.data_offsets : [0, 0];
  const [begin, end] = [Number(offs[0]) || 0, Number(offs[1]) || 0];
  switch (rng.chance(0.01) ? 12 : rng.int(12)) {
    case 0: {
      if (!e) break;
      const dtype = rng.chance(0.5) ? rng.pick(DTYPES) : rng.pick(ODD_DTYPES);
      e.dtype = dtype;
      // Usually keep the sizes consistent, so the value conversion itself is reached.
      const size = typeof dtype === 'string' ? DTYPE_BYTES[dtype] : undefined;
      const count = product(e.shape);
      if (size && Number.isSafeInteger(count) && count * size <= 1 << 20 && rng.chance(0.7)) {
        const start = data.length;
        e.data_offsets = [start, start + count * size];
        const extra = rng.bytes(count * size);
        return { header: h, data: concat([data, extra]) };
      }
      break;
    }
    case 1:
      if (!e) break;
      if (rng.chance(0.4)) {
        const count = product(e.shape);
        if (Number.isSafeInteger(count)) e.shape = reshape(count, rng);
      } else {
        e.shape = rng.pick(ODD_SHAPES);
      }
      break;
    case 2:
      if (e) e.data_offsets = oddOffsets(begin, end, data, rng);
      break;
    case 12:
      // Rarely (1%), as it is slow: a shape of 100,000 ones.
      if (e) e.shape = new Raw(`[${new Array(100000).fill(1).join(',')}]`);
      break;
    case 3: {
      // Aliasing: another tensor reads the same bytes (or overlapping ones).
      if (!e || names.length < 2) break;
      const other = h[rng.pick(names)] as { [key: string]: Json };
      other.data_offsets = rng.chance(0.5) ? [begin, end] : [Math.max(0, begin - 2), Math.max(0, end - 2)];
      if (rng.chance(0.5)) other.shape = e.shape;
      if (rng.chance(0.5)) other.dtype = e.dtype;
      break;
    }
    case 4: {
      if (!name) break;
      const special = rng.pick([...SPECIAL_KEYS, '__metadata__', `${name}.`, `model.${name}`]);
      const entries: [string, Json][] = Object.keys(h).map((k) => [k, h[k]]);
      const op = rng.int(3);
      if (op === 0) delete h[name];
      else if (op === 1) setKey(h, special, h[name]);
      else return { header: new Pairs(entries.map(([k, v]) => [k === name ? special : k, v])), data };
      break;
    }
    case 5: {
      // The same tensor name twice (JSON.parse keeps the second).
      if (!name || !e) break;
      const entries: [string, Json][] = Object.keys(h).map((k) => [k, h[k]]);
      const twin = { ...e, shape: rng.pick(ODD_SHAPES), data_offsets: oddOffsets(begin, end, data, rng) };
      entries.splice(rng.int(entries.length + 1), 0, [name, twin]);
      return { header: new Pairs(entries), data };
    }
    case 6: {
      const kind = rng.int(6);
      if (kind === 0) h.__metadata__ = interestingValue(rng);
      else if (kind === 1) delete h.__metadata__;
      else {
        const meta = isPlainObject(h.__metadata__) ? h.__metadata__ : {};
        const keys = Object.keys(meta);
        const key = keys.length && rng.chance(0.6) ? rng.pick(keys) : rng.pick([...SPECIAL_KEYS, 'format', 'state']);
        setKey(
          meta,
          key,
          kind === 2 ? rng.pick<Json>([1, null, true, [], {}, ['a'], { a: 'b' }]) : interestingValue(rng),
        );
        h.__metadata__ = meta;
      }
      break;
    }
    case 7: {
      // Many tensors: every one empty, so the header alone is large.
      const n = rng.chance(0.99) ? 200 : 20000;
      for (let i = 0; i < n; i++) h[`t${i}`] = { dtype: 'F32', shape: [0], data_offsets: [0, 0] };
      break;
    }
    case 8: {
      if (e) for (const k of Object.keys(e)) if (rng.chance(0.3)) delete e[k];
      if (e && rng.chance(0.5)) setKey(e, rng.pick([...SPECIAL_KEYS, 'extra']), interestingValue(rng));
      break;
    }
    case 9: {
      const cut = rng.int(data.length + 1);
      const v = rng.int(4);
      if (v === 0) return { header: h, data: data.subarray(0, cut) };
      if (v === 1) return { header: h, data: concat([data, rng.bytes(rng.size(4096))]) };
      // Values: NaN and infinity patterns, huge integers.
      const d = data.slice();
      const pattern = rng.pick([
        [0x00, 0x00, 0xc0, 0x7f],
        [0x00, 0x00, 0x80, 0x7f],
        [0xff, 0xff, 0xff, 0xff],
        [0x01, 0x00, 0x80, 0xff],
        [0x00, 0x7c],
        [0xff, 0x7f],
      ]);
      for (let i = cut; i < d.length && i < cut + 64; i++) d[i] = pattern[(i - cut) % pattern.length];
      return { header: h, data: d };
    }
    default: {
      let root: Json = h;
      for (let k = rng.range(1, 3); k > 0; k--) root = mutateTree(root, rng);
      return { header: root, data };
    }
  }
  return { header: h, data };
}

/** A structure-aware mutation of a safetensors file, or null if it does not decode. */
export function mutateSafetensors(
  input: Uint8Array,
  rng: Prng,
  headerOp: (header: Json, data: Uint8Array, rng: Prng) => { header: Json; data: Uint8Array } = mutateHeader,
): Uint8Array | null {
  const decoded = decodeSafetensors(input);
  if (!decoded) return null;
  const { header, data } = headerOp(decoded.header, decoded.data, rng);
  return encodeSafetensors(renderHeader(header, rng), data, rng);
}
