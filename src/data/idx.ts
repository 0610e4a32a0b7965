// Reader for IDX files (the format of MNIST, Fashion-MNIST, EMNIST, KMNIST): a 4-byte magic
// (two zero bytes, a type code, the number of dimensions), one big-endian uint32 per dimension,
// then the values, big-endian. Every size in the header is checked against the file before
// anything is allocated, so a truncated or hostile file gives an Error naming the file and the
// problem rather than a crash or a multi-gigabyte allocation. Gzipped files (.gz) are inflated
// with a cap on the output size.
import { readFileSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  /** The 4-byte magic number, e.g. 0x00000803 for MNIST's ubyte [N, H, W] image files. */
  magic: number;
  /** The IDX type code: 0x08 ubyte, 0x09 sbyte, 0x0b int16, 0x0c int32, 0x0d float32, 0x0e float64. */
  type: number;
  dims: number[];
  /** The values in row-major order (for ubyte files, a view of the file's bytes: no copy). */
  data: IdxData;
}

const TYPES: Record<number, { name: string; bytes: number }> = {
  0x08: { name: 'ubyte', bytes: 1 },
  0x09: { name: 'sbyte', bytes: 1 },
  0x0b: { name: 'int16', bytes: 2 },
  0x0c: { name: 'int32', bytes: 4 },
  0x0d: { name: 'float32', bytes: 4 },
  0x0e: { name: 'float64', bytes: 8 },
};

/** IDX files in the wild have 1 to 4 dimensions; more is taken as a corrupt header. */
const MAX_DIMS = 8;

/** Largest file or inflated .gz accepted by default: 1 GiB (the MNIST training images are 47 MB). */
export const DEFAULT_MAX_IDX_BYTES = 2 ** 30;

export function idxTypeName(type: number): string {
  return TYPES[type]?.name ?? `0x${type.toString(16).padStart(2, '0')}`;
}

/**
 * Parses an IDX file already in memory. `name` is used in error messages (usually the path).
 * Rejects: fewer than 4 bytes, a magic not starting with two zero bytes, an unknown type code,
 * 0 or more than 8 dimensions, a header longer than the file, and a data section whose size is
 * not exactly what the dimensions promise (truncated or with trailing bytes).
 */
export function parseIdx(bytes: Uint8Array, name = 'IDX data'): IdxArray {
  if (bytes.length < 4) {
    throw new Error(`${name}: not an IDX file: ${bytes.length} bytes, shorter than the 4-byte magic number`);
  }
  const magic = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
  const magicHex = `0x${magic.toString(16).padStart(8, '0')}`;
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${name}: not an IDX file: magic number ${magicHex} does not start with two zero bytes`);
  }
  const type = bytes[2];
  const info = TYPES[type];
  if (!info) {
    throw new Error(
      `${name}: magic number ${magicHex} has unknown type code 0x${type.toString(16).padStart(2, '0')} ` +
        '(expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e)',
    );
  }
  const ndim = bytes[3];
  if (ndim < 1 || ndim > MAX_DIMS) {
    throw new Error(`${name}: magic number ${magicHex} declares ${ndim} dimensions (expected 1 to ${MAX_DIMS})`);
  }
  const headerBytes = 4 + 4 * ndim;
  if (bytes.length < headerBytes) {
    throw new Error(
      `${name}: truncated header: ${ndim} dimensions need ${headerBytes} header bytes, the file has ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  // A double holds the product exactly up to 2^53, far beyond any file we accept, and becomes a
  // huge (or infinite) number past that, which the size check below then rejects.
  let count = 1;
  for (let d = 0; d < ndim; d++) {
    const n = view.getUint32(4 + 4 * d, false);
    dims.push(n);
    count *= n;
  }
  const dataBytes = bytes.length - headerBytes;
  const expected = count * info.bytes;
  if (expected !== dataBytes) {
    const what = expected > dataBytes ? 'truncated' : 'has trailing bytes';
    throw new Error(
      `${name}: ${what}: dimensions [${dims.join(', ')}] of ${info.name} ` +
        `need ${expected} data bytes, the file has ${dataBytes}`,
    );
  }
  return { magic, type, dims, data: decode(bytes, view, headerBytes, count, type) };
}

function decode(bytes: Uint8Array, view: DataView, offset: number, count: number, type: number): IdxData {
  switch (type) {
    case 0x08:
      return bytes.subarray(offset, offset + count);
    case 0x09:
      return new Int8Array(bytes.buffer, bytes.byteOffset + offset, count);
    case 0x0b: {
      const out = new Int16Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt16(offset + 2 * i, false);
      return out;
    }
    case 0x0c: {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getInt32(offset + 4 * i, false);
      return out;
    }
    case 0x0d: {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(offset + 4 * i, false);
      return out;
    }
    default: {
      const out = new Float64Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(offset + 8 * i, false);
      return out;
    }
  }
}

/**
 * Reads and parses an IDX file; a name ending in `.gz` is inflated first. Files (or inflated
 * contents) larger than `maxBytes` (default 1 GiB) are refused before being read.
 */
export function readIdxFile(path: string, opts: { maxBytes?: number } = {}): IdxArray {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_IDX_BYTES;
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new Error('not a regular file');
    size = st.size;
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
  if (size > maxBytes)
    throw new Error(`${path}: ${size} bytes is more than the ${maxBytes}-byte limit for an IDX file`);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new Error(`${path}: cannot read: ${(e as Error).message}`);
  }
  if (path.endsWith('.gz')) {
    try {
      bytes = gunzipSync(bytes, { maxOutputLength: maxBytes });
    } catch (e) {
      throw new Error(`${path}: cannot inflate gzip data: ${(e as Error).message}`);
    }
  }
  return parseIdx(bytes, path);
}
