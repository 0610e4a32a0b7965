// safetensors reader and writer (the format of PyTorch's `safetensors`, candle and Hugging Face):
// an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets}, then the raw little-endian tensor bytes. Everything read is
// checked against the file's real size before any allocation, so truncated or hostile files give
// an Error, never a crash or a huge allocation. The reader enforces the reference
// implementation's (huggingface/safetensors) rules: the header starts with '{' and has no
// duplicate keys, __metadata__ is a string -> string map, and the tensors' data_offsets, in
// order, tile the data section exactly (from 0, no overlap, no gap, nothing after the last).
import { readFileSync } from 'node:fs';
import { Tensor } from '../tensor.js';
import { writeFileAtomic } from './atomic.js';

const MAX_HEADER = 100 * 1024 * 1024;

// A Map, not an object literal: `dtype in {...}` would accept "__proto__" or "toString".
const DTYPE_SIZE = new Map<string, number>([
  ['F32', 4],
  ['F64', 8],
  ['F16', 2],
  ['BF16', 2],
  ['I64', 8],
  ['I32', 4],
  ['I16', 2],
  ['I8', 1],
  ['U8', 1],
  ['BOOL', 1],
]);

export interface SafetensorsFile {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
}

function fail(path: string, msg: string): never {
  throw new Error(`safetensors ${path}: ${msg}`);
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

/** Decodes one tensor's bytes into float32 (integer and half types are converted). */
export function toFloat32(bytes: Uint8Array, dtype: string, count: number): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count));
      else for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat64(i * 8, true);
      break;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = halfToFloat(dv.getUint16(i * 2, true));
      break;
    case 'BF16': {
      // bfloat16 is the top half of a float32.
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = dv.getUint16(i * 2, true) << 16;
      break;
    }
    case 'I64':
      for (let i = 0; i < count; i++) out[i] = Number(dv.getBigInt64(i * 8, true));
      break;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = dv.getInt32(i * 4, true);
      break;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = dv.getInt16(i * 2, true);
      break;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = dv.getInt8(i);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < count; i++) out[i] = dv.getUint8(i);
      break;
  }
  return out;
}

/**
 * The first key that appears twice in one object of `json`, which must be text JSON.parse has
 * accepted, as a path ('"a"', '"a"."dtype"'); undefined when there is none. JSON.parse keeps the
 * last of duplicate keys without a word and a reviver only ever sees the survivor, while the
 * format forbids duplicates (another reader could keep the first and see a different file). No
 * dependency for this: a full JSON parser to trust for one check would be more than these lines,
 * which can rely on JSON.parse having validated the text, so only strings, brackets, ':' and ','
 * matter.
 */
function duplicateKey(json: string): string | undefined {
  // One frame per open object (its keys so far, keys = null for an array). The path of a
  // duplicate is assembled only when one is found: building it per bracket would cost the square
  // of the nesting depth.
  const stack: { keys: Set<string> | null; last: string }[] = [];
  const pathTo = (key: string): string => {
    const segments = stack.slice(0, -1).map((f) => (f.keys ? JSON.stringify(f.last) : '[]'));
    segments.push(JSON.stringify(key));
    return segments.length > 8 ? `….${segments.slice(-8).join('.')}` : segments.join('.');
  };
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top?.keys) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return pathTo(key);
        top.keys.add(key);
        top.last = key;
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      stack.push({ keys: c === '{' ? new Set() : null, last: '' });
      expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      stack.pop();
      expectKey = false;
    } else if (c === ',') {
      expectKey = stack[stack.length - 1]?.keys != null;
    }
  }
  return undefined;
}

/** A short description of a parsed JSON value for an error message, whatever its size or depth. */
function describeJson(v: unknown, depth = 0): string {
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) {
    if (depth >= 2) return `[…${v.length} items]`;
    const shown = v.slice(0, 6).map((x) => describeJson(x, depth + 1));
    return `[${shown.join(',')}${v.length > 6 ? ',…' : ''}]`;
  }
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v);
    return `{${keys
      .slice(0, 4)
      .map((k) => JSON.stringify(k.slice(0, 20)))
      .join(',')}${keys.length > 4 ? ',…' : ''}}`;
  }
  return JSON.stringify(v).slice(0, 80);
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses safetensors bytes (`path` only names the source in errors), every check included, with
 * each tensor's bytes as the file holds them (views into `buf`).
 */
export function parseRawSafetensors(
  buf: Uint8Array,
  path = '<buffer>',
): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  if (buf.length < 8) fail(path, `file is ${buf.length} bytes, too short for the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = dv.getBigUint64(0, true);
  if (headerLen > BigInt(Math.min(MAX_HEADER, buf.length - 8))) {
    fail(path, `header length ${headerLen} exceeds the file (${buf.length} bytes) or the ${MAX_HEADER}-byte limit`);
  }
  const hl = Number(headerLen);
  // The raw byte, as the reference checks it: TextDecoder would silently drop a leading BOM.
  if (hl === 0 || buf[8] !== 0x7b) fail(path, `header must start with '{'${hl === 0 ? ' (it is empty)' : ''}`);
  let text: string;
  let header: Record<string, unknown>;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + hl));
    header = JSON.parse(text);
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    fail(path, 'header must be a JSON object');
  const dup = duplicateKey(text);
  if (dup !== undefined) fail(path, `header has the key ${dup} more than once`);
  const dataStart = 8 + hl;
  const dataLen = buf.length - dataStart;
  // Built with Object.fromEntries (own properties only): a key such as "__proto__" stays a key.
  let metadataEntries: [string, string][] = [];
  const entries: Entry[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      // The reference reads it as Option<HashMap<String, String>>: null is "none", anything but
      // an object of strings is an error.
      if (entry === null) continue;
      if (typeof entry !== 'object' || Array.isArray(entry))
        fail(path, `__metadata__ must be an object of strings, got ${describeJson(entry)}`);
      metadataEntries = Object.entries(entry as Record<string, unknown>).map(([k, v]) => {
        if (typeof v !== 'string')
          fail(path, `__metadata__[${JSON.stringify(k)}] must be a string, got ${describeJson(v)}`);
        return [k, v];
      });
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== 'object' || Array.isArray(e)) fail(path, `entry '${name}' is not an object`);
    const dtype = e.dtype;
    const size = typeof dtype === 'string' ? DTYPE_SIZE.get(dtype) : undefined;
    if (size === undefined) fail(path, `tensor '${name}': unsupported dtype ${describeJson(dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      fail(path, `tensor '${name}': shape must be a list of non-negative integers, got ${describeJson(shape)}`);
    }
    const offs = e.data_offsets;
    if (
      !Array.isArray(offs) ||
      offs.length !== 2 ||
      offs.some((d) => !Number.isSafeInteger(d) || d < 0) ||
      offs[0] > offs[1]
    ) {
      fail(path, `tensor '${name}': data_offsets must be [begin, end], got ${describeJson(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLen)
      fail(
        path,
        `tensor '${name}': data [${begin}, ${end}) runs past the end of the file (${dataLen} data bytes; truncated?)`,
      );
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (count * size !== end - begin) {
      fail(
        path,
        `tensor '${name}': shape [${shape.join(', ')}] of ${dtype} ` +
          `needs ${count * size} bytes, offsets give ${end - begin}`,
      );
    }
    entries.push({ name, dtype: dtype as string, shape: shape as number[], begin, end });
  }
  // In offset order the tensors must tile [0, dataLen): each begins where the previous ended.
  const ordered = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let prev: Entry | undefined;
  for (const t of ordered) {
    if (t.begin < at) {
      fail(
        path,
        `tensor '${t.name}': data [${t.begin}, ${t.end}) overlaps ` +
          `tensor '${prev!.name}' [${prev!.begin}, ${prev!.end})`,
      );
    }
    if (t.begin > at) {
      const after = prev ? `tensor '${prev.name}' ends at ${at}` : 'the data section starts at 0';
      fail(
        path,
        `tensor '${t.name}': data begins at ${t.begin} but ${after}: ${t.begin - at} bytes belong to no tensor`,
      );
    }
    at = t.end;
    prev = t;
  }
  if (at !== dataLen)
    fail(
      path,
      `${dataLen - at} bytes after the last tensor's data (the tensors cover [0, ${at}) of ${dataLen} data bytes)`,
    );
  const tensors = new Map<string, RawTensor>();
  for (const t of entries) {
    tensors.set(t.name, {
      dtype: t.dtype,
      shape: t.shape,
      bytes: buf.subarray(dataStart + t.begin, dataStart + t.end),
    });
  }
  return { tensors, metadata: Object.fromEntries(metadataEntries) };
}

/** Parses safetensors bytes (`path` only names the source in errors). Tensors come back as float32. */
export function parseSafetensors(buf: Uint8Array, path = '<buffer>'): SafetensorsFile {
  const raw = parseRawSafetensors(buf, path);
  const tensors = new Map<string, Tensor>();
  for (const [name, t] of raw.tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    tensors.set(name, new Tensor(toFloat32(t.bytes, t.dtype, count), t.shape));
  }
  return { tensors, metadata: raw.metadata };
}

export function loadSafetensors(path: string): SafetensorsFile {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    fail(path, (e as Error).message);
  }
  return parseSafetensors(buf, path);
}

export interface SaveOptions {
  metadata?: Record<string, string>;
  /** Names to store as I64 (PyTorch's integer buffers such as `num_batches_tracked`). */
  int64?: (name: string) => boolean;
}

/** A tensor as the file holds it: its dtype name, shape and little-endian bytes. */
export interface RawTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Serialises tensors to safetensors bytes (float32, or I64 where `int64` says so). */
export function serializeSafetensors(tensors: Map<string, Tensor>, opts: SaveOptions = {}): Uint8Array[] {
  const raw = new Map<string, RawTensor>();
  for (const [name, t] of tensors) {
    const asInt = opts.int64?.(name) ?? false;
    let bytes: Uint8Array;
    if (asInt) {
      const a = new BigInt64Array(t.size);
      for (let i = 0; i < t.size; i++) {
        if (!Number.isInteger(t.data[i])) throw new Error(`save: '${name}' holds ${t.data[i]}, not an integer`);
        a[i] = BigInt(t.data[i]);
      }
      bytes = new Uint8Array(a.buffer);
    } else {
      // Copy: the tensor may be a view into a larger buffer, and we want exactly its bytes.
      bytes = new Uint8Array(Float32Array.from(t.data).buffer);
    }
    raw.set(name, { dtype: asInt ? 'I64' : 'F32', shape: t.shape, bytes });
  }
  return serializeRawSafetensors(raw, opts.metadata);
}

/** Serialises tensors given as bytes with their dtype (I8, I32, F32, ...) to safetensors bytes. */
export function serializeRawSafetensors(
  tensors: Map<string, RawTensor>,
  metadata?: Record<string, string>,
): Uint8Array[] {
  // No prototype: a tensor named "__proto__" must become a key, not replace the prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string')
        throw new Error(
          `save: metadata[${JSON.stringify(k)}] must be a string ` +
            `(safetensors metadata is string -> string), got ${typeof v}`,
        );
    }
    header.__metadata__ = metadata;
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__')
      throw new Error("save: '__metadata__' is reserved by the safetensors format and cannot name a tensor");
    const width = DTYPE_SIZE.get(t.dtype);
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (width === undefined || t.bytes.length !== count * width) {
      throw new Error(`save: '${name}': ${t.bytes.length} bytes do not hold ${t.dtype} [${t.shape.join(', ')}]`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
    parts.push(t.bytes);
  }
  let json = JSON.stringify(header);
  // Pad so the data starts 8-byte aligned, as the reference implementation does.
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const jsonBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
  return [len, jsonBytes, ...parts];
}

/** Writes tensors to `path` atomically (temp file + rename). */
export function saveSafetensors(path: string, tensors: Map<string, Tensor>, opts: SaveOptions = {}): void {
  writeFileAtomic(path, serializeSafetensors(tensors, opts));
}
