// Mutations shared by every target: byte-level ones (bit flips, interesting values, chunk
// insert/delete/duplicate, truncation, extension, splicing with another corpus file, dictionary
// tokens) and a JSON tree mutator with its own renderer, which can emit what JSON.stringify
// cannot: duplicate keys, nesting deeper than the stack, and raw number literals such as 1e999.
import type { Prng } from './prng.js';

/** Inputs never grow past this (a mutation that would is cut back), so a run stays fast. */
export const MAX_INPUT_BYTES = 4 << 20;

export const INTERESTING_8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x64, 0xfe];
export const INTERESTING_16 = [0, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x3ff, 0x1000];
export const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000, 0x1000000, 0x7ffffff0, 0xfffffff0];

export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function cap(b: Uint8Array): Uint8Array {
  return b.length > MAX_INPUT_BYTES ? b.slice(0, MAX_INPUT_BYTES) : b;
}

type ByteMutation = (b: Uint8Array, rng: Prng, ctx: ByteContext) => Uint8Array;

export interface ByteContext {
  /** Other inputs to splice with. */
  corpus: readonly Uint8Array[];
  /** Tokens worth inserting or overwriting with (magic numbers, keywords). */
  dictionary: readonly Uint8Array[];
}

function putInt(b: Uint8Array, at: number, value: number, width: 1 | 2 | 4, bigEndian: boolean): void {
  for (let i = 0; i < width && at + i < b.length; i++) {
    const shift = 8 * (bigEndian ? width - 1 - i : i);
    b[at + i] = (value / 2 ** shift) & 0xff;
  }
}

const BYTE_MUTATIONS: [number, ByteMutation][] = [
  [
    6,
    (b, rng) => {
      if (!b.length) return b;
      const o = b.slice();
      const flips = rng.size(8);
      for (let k = 0; k < flips; k++) {
        const i = rng.int(o.length);
        o[i] ^= 1 << rng.int(8);
      }
      return o;
    },
  ],
  [
    4,
    (b, rng) => {
      if (!b.length) return b;
      const o = b.slice();
      o[rng.int(o.length)] = rng.u32() & 0xff;
      return o;
    },
  ],
  [
    5,
    (b, rng) => {
      if (!b.length) return b;
      const o = b.slice();
      const width = rng.pick([1, 2, 4] as const);
      const at = rng.int(o.length);
      const value =
        width === 1 ? rng.pick(INTERESTING_8) : width === 2 ? rng.pick(INTERESTING_16) : rng.pick(INTERESTING_32);
      putInt(o, at, value, width, rng.chance(0.5));
      return o;
    },
  ],
  [
    3,
    (b, rng) => {
      // Small add/subtract, the classic way to nudge a length or count field.
      if (!b.length) return b;
      const o = b.slice();
      const i = rng.int(o.length);
      o[i] = (o[i] + (rng.chance(0.5) ? 1 : -1) * rng.range(1, 35)) & 0xff;
      return o;
    },
  ],
  [
    3,
    (b, rng) =>
      cap(concat([b.subarray(0, rng.int(b.length + 1)), rng.bytes(rng.size(64)), b.subarray(rng.int(b.length + 1))])),
  ],
  [
    3,
    (b, rng) => {
      if (!b.length) return b;
      const at = rng.int(b.length);
      const n = rng.size(b.length - at);
      return concat([b.subarray(0, at), b.subarray(at + n)]);
    },
  ],
  [
    3,
    (b, rng) => {
      // Duplicate a chunk somewhere else.
      if (!b.length) return b;
      const from = rng.int(b.length);
      const chunk = b.subarray(from, from + rng.size(Math.min(4096, b.length - from)));
      const at = rng.int(b.length + 1);
      return cap(concat([b.subarray(0, at), chunk, b.subarray(at)]));
    },
  ],
  [
    2,
    (b, rng) => {
      // Overwrite a chunk with a copy of another part of the input.
      if (b.length < 2) return b;
      const o = b.slice();
      const n = rng.size(Math.min(256, b.length >> 1));
      o.set(b.subarray(rng.int(b.length - n + 1)).subarray(0, n), rng.int(b.length - n + 1));
      return o;
    },
  ],
  [4, (b, rng) => b.slice(0, rng.int(b.length + 1))],
  [2, (b, rng) => b.slice(0, Math.max(0, b.length - rng.size(16)))],
  [
    2,
    (b, rng) => {
      const n = rng.size(1024);
      const fill = rng.pick(['zero', 'ff', 'random', 'repeat'] as const);
      const tail = fill === 'random' ? rng.bytes(n) : new Uint8Array(n).fill(fill === 'ff' ? 0xff : 0);
      if (fill === 'repeat' && b.length) for (let i = 0; i < n; i++) tail[i] = b[i % b.length];
      return cap(concat([b, tail]));
    },
  ],
  [
    3,
    (b, rng, ctx) => {
      // Splice: the start of this input, the end of another.
      if (!ctx.corpus.length) return b;
      const other = rng.pick(ctx.corpus);
      return cap(concat([b.subarray(0, rng.int(b.length + 1)), other.subarray(rng.int(other.length + 1))]));
    },
  ],
  [
    3,
    (b, rng, ctx) => {
      if (!ctx.dictionary.length) return b;
      const token = rng.pick(ctx.dictionary);
      const at = rng.int(b.length + 1);
      if (rng.chance(0.5)) return cap(concat([b.subarray(0, at), token, b.subarray(at)]));
      const o = b.slice();
      o.set(token.subarray(0, Math.max(0, o.length - at)), Math.min(at, o.length));
      return o;
    },
  ],
  [
    1,
    (b, rng) => {
      // Swap two chunks.
      if (b.length < 4) return b;
      const n = rng.size(Math.min(512, b.length >> 1));
      const i = rng.int(b.length - n + 1);
      const j = rng.int(b.length - n + 1);
      const o = b.slice();
      o.set(b.subarray(j, j + n), i);
      o.set(b.subarray(i, i + n), j);
      return o;
    },
  ],
];

const BYTE_TOTAL = BYTE_MUTATIONS.reduce((a, [w]) => a + w, 0);

/** One random byte-level mutation (the input is not modified). */
export function mutateBytes(b: Uint8Array, rng: Prng, ctx: ByteContext): Uint8Array {
  let r = rng.int(BYTE_TOTAL);
  for (const [w, f] of BYTE_MUTATIONS) {
    if (r < w) return f(b, rng, ctx);
    r -= w;
  }
  return b;
}

export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

// ---------------------------------------------------------------------------------------------
// JSON trees. A tree is what JSON.parse returns plus two node kinds for the renderer:
// Raw (text emitted verbatim) and Pairs (an object whose keys may repeat).

export class Raw {
  constructor(readonly text: string) {}
}

export class Pairs {
  constructor(readonly entries: [string, Json][]) {}
}

export type Json = null | boolean | number | string | Raw | Pairs | Json[] | { [key: string]: Json };

export function isPlainObject(v: unknown): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Raw) && !(v instanceof Pairs);
}

/** JSON text of a tree; own `__proto__` keys are kept (JSON.stringify keeps them too). */
export function render(v: Json): string {
  if (v instanceof Raw) return v.text;
  if (v instanceof Pairs) return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}:${render(x)}`).join(',')}}`;
  if (Array.isArray(v)) return `[${v.map(render).join(',')}]`;
  if (isPlainObject(v))
    return `{${Object.keys(v)
      .map((k) => `${JSON.stringify(k)}:${render(v[k])}`)
      .join(',')}}`;
  if (typeof v === 'number' && !Number.isFinite(v)) return v > 0 ? '1e999' : v < 0 ? '-1e999' : 'NaN';
  return JSON.stringify(v) ?? 'null';
}

/** Sets a key, own property even for `__proto__`. */
export function setKey(obj: { [key: string]: Json }, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `[[[...0...]]]` (or objects) `depth` levels deep, as text: deeper than any recursive walker's stack. */
export function deepNesting(depth: number, kind: 'array' | 'object' = 'array'): Raw {
  if (kind === 'array') return new Raw(`${'['.repeat(depth)}0${']'.repeat(depth)}`);
  return new Raw(`${'{"a":'.repeat(depth)}0${'}'.repeat(depth)}`);
}

export const INTERESTING_NUMBERS: number[] = [
  0,
  -0,
  1,
  -1,
  2,
  3,
  4,
  7,
  8,
  63,
  64,
  65,
  255,
  256,
  1.5,
  0.5,
  -0.5,
  1e-300,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 31),
  -(2 ** 53),
  1e21,
  1e308,
  -1e308,
  4.9e-324,
];

/** Special numbers as text: JSON.parse turns 1e999 into Infinity and keeps 9007199254740993 inexact. */
export const RAW_NUMBERS = [
  '1e999',
  '-1e999',
  '-0',
  '9007199254740993',
  '18446744073709551616',
  '1.0',
  '1e2',
  '0.1e1',
  '123456789012345678901234567890',
];

export const SPECIAL_KEYS = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  '',
  ' ',
  '.',
  'a.b',
  '\u0000',
  'é',
  '\ud800',
  'x'.repeat(300),
];

/**
 * Something large for a JSON slot: nesting deeper than a recursive walker's stack (V8 overflows
 * near 5,000 levels in JSON.stringify), a numeric array past checkpoint's 64-number tensor line,
 * a long string. Expensive to run, so interestingValue picks one rarely.
 */
export function heavyValue(rng: Prng): Json {
  switch (rng.int(3)) {
    case 0:
      return deepNesting(rng.pick([3000, 10000, 10000, 60000]), rng.chance(0.7) ? 'array' : 'object');
    case 1: {
      const n = rng.pick([65, 100, 1000, 20000]);
      return new Raw(`[${new Array(n).fill(render(rng.pick(INTERESTING_NUMBERS))).join(',')}]`);
    }
    default:
      return 'x'.repeat(rng.pick([1000, 100000]));
  }
}

/** A random value for a JSON slot: numbers, strings, containers, now and then a heavy one. */
export function interestingValue(rng: Prng, depth = 0): Json {
  if (rng.chance(0.03)) return heavyValue(rng);
  if (rng.chance(0.02)) {
    // Not JSON at all: the header or state no longer parses.
    return new Raw(
      rng.pick([
        'NaN',
        'Infinity',
        'undefined',
        '"\\ud800"',
        '01',
        '1.',
        '.5',
        '+1',
        '0x10',
        "'x'",
        '[1,]',
        '{"a":1,}',
        '',
      ]),
    );
  }
  switch (rng.int(depth > 1 ? 6 : 11)) {
    case 0:
    case 1:
      return rng.pick(INTERESTING_NUMBERS);
    case 2:
      return new Raw(rng.pick(RAW_NUMBERS));
    case 3:
      return rng.pick([
        '',
        'x',
        'F32',
        '0',
        '-1',
        'NaN',
        'Infinity',
        'null',
        '__proto__',
        'constructor',
        '{}',
        '\u0000',
        'x'.repeat(rng.size(300)),
      ]);
    case 4:
      return rng.pick([null, true, false]);
    case 5:
      return rng.pick<Json>([[], {}, [null], [[]], [0], ['0']]);
    case 6:
      return Array.from({ length: rng.size(8) }, () => interestingValue(rng, depth + 1));
    case 7: {
      const o: { [key: string]: Json } = {};
      for (let i = rng.size(4); i > 0; i--)
        setKey(o, rng.chance(0.5) ? rng.pick(SPECIAL_KEYS) : `k${i}`, interestingValue(rng, depth + 1));
      return o;
    }
    case 8:
      return deepNesting(rng.pick([2, 50, 500]), rng.chance(0.7) ? 'array' : 'object');
    case 9:
      return { $tensor: rng.pick(['', 'nope', 'model.0.weight', 'state.optimizer.state.0.expAvg', '__proto__']) };
    default:
      return new Raw(rng.pick(['"\\ud800"', '"\\u0000"', '"\\udc00\\ud800"']));
  }
}

type Path = (string | number)[];

/** Every node's path (pre-order), at most `limit` of them. */
export function paths(root: Json, limit = 4000): Path[] {
  const out: Path[] = [];
  const walk = (v: Json, p: Path): void => {
    if (out.length >= limit) return;
    out.push(p);
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        walk(x, [...p, i]);
      });
    } else if (isPlainObject(v)) {
      for (const k of Object.keys(v)) walk(v[k], [...p, k]);
    }
  };
  walk(root, []);
  return out;
}

export function getAt(root: Json, p: Path): Json {
  let v: Json = root;
  for (const k of p) v = (v as { [key: string]: Json })[k as string];
  return v;
}

/** Returns the new root (replacing the root itself when `p` is empty). */
export function setAt(root: Json, p: Path, value: Json): Json {
  if (p.length === 0) return value;
  const parent = getAt(root, p.slice(0, -1)) as { [key: string]: Json } | Json[];
  const k = p[p.length - 1];
  if (Array.isArray(parent)) parent[k as number] = value;
  else setKey(parent, k as string, value);
  return root;
}

function deleteAt(root: Json, p: Path): Json {
  if (p.length === 0) return root;
  const parent = getAt(root, p.slice(0, -1));
  const k = p[p.length - 1];
  if (Array.isArray(parent)) parent.splice(k as number, 1);
  else if (isPlainObject(parent)) delete parent[k as string];
  return root;
}

/** A deep copy of a plain JSON tree (Raw/Pairs nodes are shared: they are immutable). */
export function clone(v: Json): Json {
  if (Array.isArray(v)) return v.map(clone);
  if (isPlainObject(v)) {
    const o: { [key: string]: Json } = {};
    for (const k of Object.keys(v)) setKey(o, k, clone(v[k]));
    return o;
  }
  return v;
}

/** One generic mutation somewhere in the tree (the tree is modified; the new root is returned). */
export function mutateTree(root: Json, rng: Prng): Json {
  const all = paths(root);
  const p = rng.pick(all);
  const node = getAt(root, p);
  switch (rng.int(10)) {
    case 0:
    case 1:
      return setAt(root, p, interestingValue(rng));
    case 2:
      if (typeof node === 'number')
        return setAt(
          root,
          p,
          rng.chance(0.5) ? rng.pick(INTERESTING_NUMBERS) : node + rng.pick([-1, 1, 0.5, 2 ** 32, -(2 ** 53)]),
        );
      if (typeof node === 'string')
        return setAt(
          root,
          p,
          rng.chance(0.5) ? Number(node) || node.length : node + rng.pick(['x', '\u0000', '"', node]),
        );
      return setAt(root, p, interestingValue(rng));
    case 3:
      return deleteAt(root, p);
    case 4: {
      // Duplicate: an array element, or an object key under a new (maybe special) name.
      if (Array.isArray(node) && node.length) node.splice(rng.int(node.length + 1), 0, clone(rng.pick(node)));
      else if (isPlainObject(node)) {
        const keys = Object.keys(node);
        if (keys.length)
          setKey(node, rng.chance(0.5) ? rng.pick(SPECIAL_KEYS) : `${rng.pick(keys)}_`, clone(node[rng.pick(keys)]));
      }
      return root;
    }
    case 5: {
      // Swap with another node (skipped when one contains the other).
      const q = rng.pick(all);
      const prefix = (a: Path, b: Path): boolean => a.length <= b.length && a.every((x, i) => x === b[i]);
      if (prefix(p, q) || prefix(q, p)) return root;
      const other = getAt(root, q);
      setAt(root, q, node);
      return setAt(root, p, other);
    }
    case 6:
      return setAt(root, p, rng.chance(0.5) ? [node] : { value: node });
    case 7:
      if (isPlainObject(node)) {
        // The same key twice, the second (which JSON.parse keeps) with another value.
        const keys = Object.keys(node);
        if (!keys.length) return root;
        const k = rng.pick(keys);
        const entries: [string, Json][] = keys.map((key) => [key, node[key]]);
        entries.splice(rng.int(entries.length + 1), 0, [k, interestingValue(rng)]);
        return setAt(root, p, new Pairs(entries));
      }
      return setAt(root, p, new Raw(rng.pick(RAW_NUMBERS)));
    case 8:
      if (isPlainObject(node)) {
        setKey(node, rng.pick(SPECIAL_KEYS), interestingValue(rng));
        return root;
      }
      return setAt(root, p, rng.chance(0.2) ? heavyValue(rng) : deepNesting(rng.pick([10, 100, 1000])));
    default:
      // Change the type but keep the content.
      if (Array.isArray(node)) return setAt(root, p, Object.fromEntries(node.map((x, i) => [String(i), x])) as Json);
      if (typeof node === 'number') return setAt(root, p, String(node));
      if (typeof node === 'string') return setAt(root, p, [node]);
      return setAt(root, p, null);
  }
}
