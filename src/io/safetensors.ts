// safetensors reader and writer (the format of PyTorch's `safetensors`, candle and Hugging Face):
// an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets}, then the raw little-endian tensor bytes. Everything read is
// checked against the file's real size before any allocation, so truncated or hostile files give
// an Error, never a crash or a huge allocation.
import { readFileSync } from 'node:fs';
import { Tensor } from '../tensor.js';
import { writeFileAtomic } from './atomic.js';

const MAX_HEADER = 100 * 1024 * 1024;

const DTYPE_SIZE: Record<string, number> = { F32: 4, F64: 8, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

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

/** Decodes one tensor's bytes into float32 (integer and half types are converted). */
function toFloat32(bytes: Uint8Array, dtype: string, count: number): Float32Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(count);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = dv.getFloat32(i * 4, true);
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

/** Parses safetensors bytes (`path` only names the source in errors). Tensors come back as float32. */
export function parseSafetensors(buf: Uint8Array, path = '<buffer>'): SafetensorsFile {
  if (buf.length < 8) fail(path, `file is ${buf.length} bytes, too short for the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = dv.getBigUint64(0, true);
  if (headerLen > BigInt(Math.min(MAX_HEADER, buf.length - 8))) {
    fail(path, `header length ${headerLen} exceeds the file (${buf.length} bytes) or the ${MAX_HEADER}-byte limit`);
  }
  const hl = Number(headerLen);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + hl)));
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail(path, 'header must be a JSON object');
  const dataStart = 8 + hl;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, Tensor>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = (entry ?? {}) as Record<string, string>;
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!e || typeof e !== 'object') fail(path, `entry '${name}' is not an object`);
    const dtype = e.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_SIZE)) fail(path, `tensor '${name}': unsupported dtype ${JSON.stringify(dtype)}`);
    const shape = e.shape;
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      fail(path, `tensor '${name}': shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((d) => !Number.isSafeInteger(d) || d < 0) || offs[0] > offs[1]) {
      fail(path, `tensor '${name}': data_offsets must be [begin, end], got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLen) fail(path, `tensor '${name}': data [${begin}, ${end}) runs past the end of the file (${dataLen} data bytes; truncated?)`);
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (count * DTYPE_SIZE[dtype] !== end - begin) {
      fail(path, `tensor '${name}': shape [${shape.join(', ')}] of ${dtype} needs ${count * DTYPE_SIZE[dtype]} bytes, offsets give ${end - begin}`);
    }
    const bytes = buf.subarray(dataStart + begin, dataStart + end);
    tensors.set(name, new Tensor(toFloat32(bytes, dtype, count), shape as number[]));
  }
  return { tensors, metadata };
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

/** Serialises tensors to safetensors bytes (float32, or I64 where `int64` says so). */
export function serializeSafetensors(tensors: Map<string, Tensor>, opts: SaveOptions = {}): Uint8Array[] {
  const header: Record<string, unknown> = {};
  if (opts.metadata) header.__metadata__ = opts.metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
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
    header[name] = { dtype: asInt ? 'I64' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    offset += bytes.length;
    parts.push(bytes);
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
