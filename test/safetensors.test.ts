// safetensors: files written by Python's safetensors load with the right names, shapes, dtypes
// and values; our files round-trip; corrupt files give Errors and leave the model unchanged.
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BatchNorm2d,
  Conv2d,
  Flatten,
  Linear,
  ReLU,
  Sequential,
  loadSafetensors,
  parseSafetensors,
  saveSafetensors,
  Tensor,
} from '../src/index.js';
import { det, expectClose } from './helpers.js';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'torch_small.safetensors');
const smallNet = () =>
  new Sequential(
    new Conv2d(3, 4, 3, { padding: 1 }),
    new BatchNorm2d(4),
    new ReLU(),
    new Flatten(),
    new Linear(100, 3),
  );

describe('safetensors', () => {
  it('reads a file written by Python safetensors (gen_safetensors.py), converting every dtype', () => {
    const { tensors, metadata } = loadSafetensors(FIXTURE);
    expect(metadata).toEqual({ format: 'pt' });
    const w = tensors.get('0.weight')!;
    expect(w.shape).toEqual([4, 3, 3, 3]);
    expectClose(w.data, det([4, 3, 3, 3], 0).data, 0, 0, '0.weight');
    expect(tensors.get('1.num_batches_tracked')!.data[0]).toBe(7);
    expect(tensors.get('1.num_batches_tracked')!.shape).toEqual([]);
    expectClose(tensors.get('extra.f16')!.data, det([5], 100).data, 1e-3, 1e-3, 'f16');
    expectClose(tensors.get('extra.bf16')!.data, det([5], 101).data, 1e-2, 1e-2, 'bf16');
    expectClose(tensors.get('extra.f64')!.data, det([2, 2], 102).data, 0, 0, 'f64');
    expect(Array.from(tensors.get('extra.i32')!.data)).toEqual([-2, -1, 0, 1, 2]);
  });

  it('loads a PyTorch state_dict into the same network with no renaming', () => {
    const net = smallNet();
    const { tensors } = loadSafetensors(FIXTURE);
    for (const k of [...tensors.keys()]) if (k.startsWith('extra.')) tensors.delete(k);
    net.loadStateDict(tensors);
    expectClose(net.stateDict().get('4.weight')!.data, det([3, 100], 7).data, 0, 0, '4.weight');
  });

  it('loads a state_dict without num_batches_tracked strictly, setting the counter to 0 as torch 1.13 does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-st-'));
    const { tensors } = loadSafetensors(FIXTURE);
    for (const k of [...tensors.keys()])
      if (k.startsWith('extra.') || k.endsWith('num_batches_tracked')) tensors.delete(k);
    const net = smallNet();
    const bn = net.getSubmodule('1') as BatchNorm2d;
    bn.numBatchesTracked!.data[0] = 5;
    expect(net.validateStateDict(tensors)).toEqual({ missing: [], unexpected: [] });
    expect(bn.numBatchesTracked!.data[0]).toBe(5);
    expect(net.loadStateDict(tensors)).toEqual({ missing: [], unexpected: [] });
    expect(bn.numBatchesTracked!.data[0]).toBe(0);
    expectClose(net.stateDict().get('4.weight')!.data, det([3, 100], 7).data, 0, 0, '4.weight');
    // the same through a file and load()
    const path = join(dir, 'old.safetensors');
    saveSafetensors(path, tensors);
    bn.numBatchesTracked!.data[0] = 3;
    net.load(path);
    expect(bn.numBatchesTracked!.data[0]).toBe(0);
    // any other missing key is still refused, and then nothing changes
    tensors.delete('1.running_mean');
    bn.numBatchesTracked!.data[0] = 4;
    expect(() => net.loadStateDict(tensors)).toThrow(/^loadStateDict: missing keys: 1\.running_mean$/);
    expect(bn.numBatchesTracked!.data[0]).toBe(4);
    // non-strict too (torch fills the counter in whatever strict says), and it is not reported missing
    const partial = net.loadStateDict(new Map([['4.bias', tensors.get('4.bias')!]]), false);
    expect(partial.missing).toEqual([
      '0.weight',
      '0.bias',
      '1.weight',
      '1.bias',
      '1.running_mean',
      '1.running_var',
      '4.weight',
    ]);
    expect(bn.numBatchesTracked!.data[0]).toBe(0);
  });

  it('round-trips our own files, buffers included, and writes atomically', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-st-'));
    const a = smallNet();
    (a.getSubmodule('1') as BatchNorm2d).runningMean!.data.set([1, 2, 3, 4]);
    const path = join(dir, 'model.safetensors');
    a.save(path, { note: 'hi' });
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    const b = smallNet().load(path);
    for (const [k, t] of a.stateDict()) expect(Array.from(b.stateDict().get(k)!.data), k).toEqual(Array.from(t.data));
    expect(loadSafetensors(path).metadata).toEqual({ note: 'hi' });
    // the header length is 8-byte aligned, as the reference implementation writes it
    expect(Number(readFileSync(path).readBigUInt64LE(0)) % 8).toBe(0);
  });

  it('serialises views into larger buffers with exactly their bytes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-st-'));
    const big = new Float32Array([9, 1, 2, 3, 9]);
    saveSafetensors(join(dir, 'v.safetensors'), new Map([['v', new Tensor(big.subarray(1, 4), [3])]]));
    expect(Array.from(loadSafetensors(join(dir, 'v.safetensors')).tensors.get('v')!.data)).toEqual([1, 2, 3]);
  });

  it.each([
    ['empty', () => new Uint8Array(0), /too short/],
    [
      'header past end',
      () => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setBigUint64(0, 1000n, true);
        return b;
      },
      /exceeds the file/,
    ],
    [
      'absurd header',
      () => {
        const b = new Uint8Array(16);
        new DataView(b.buffer).setBigUint64(0, 2n ** 62n, true);
        return b;
      },
      /exceeds the file/,
    ],
    ['bad json', () => withHeader('{"a": '), /not valid JSON/],
    ['bad dtype', () => withHeader('{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}', 4), /unsupported dtype/],
    [
      'negative shape',
      () => withHeader('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', 4),
      /non-negative integers/,
    ],
    [
      'size mismatch',
      () => withHeader('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 4),
      /needs 8 bytes, offsets give 4/,
    ],
    [
      'truncated data',
      () => withHeader('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', 8),
      /runs past the end/,
    ],
    [
      'overlapping offsets',
      () => withHeader(`{${f32('a', 2, 0)},${f32('b', 1, 4)}}`, 8),
      /tensor 'b': data \[4, 8\) overlaps tensor 'a' \[0, 8\)/,
    ],
    [
      'same offsets twice',
      () => withHeader(`{${f32('a', 1, 0)},${f32('b', 1, 0)}}`, 4),
      /overlaps tensor 'a' \[0, 4\)/,
    ],
    [
      'gap between tensors',
      () => withHeader(`{${f32('a', 1, 0)},${f32('b', 1, 8)}}`, 12),
      /tensor 'b': data begins at 8 but tensor 'a' ends at 4: 4 bytes belong to no tensor/,
    ],
    [
      'first tensor not at 0',
      () => withHeader(`{${f32('a', 1, 4)}}`, 8),
      /tensor 'a': data begins at 4 but the data section starts at 0/,
    ],
    [
      'trailing bytes',
      () => withHeader(`{${f32('a', 1, 0)}}`, 8),
      /4 bytes after the last tensor's data \(the tensors cover \[0, 4\) of 8 data bytes\)/,
    ],
    ['data but no tensors', () => withHeader('{}', 4), /4 bytes after the last tensor's data/],
    [
      'non-string metadata value',
      () => withHeader('{"__metadata__":{"a":1}}'),
      /__metadata__\["a"\] must be a string, got 1/,
    ],
    ['string metadata', () => withHeader('{"__metadata__":"x"}'), /__metadata__ must be an object of strings, got "x"/],
    [
      'array metadata',
      () => withHeader('{"__metadata__":["x"]}'),
      /__metadata__ must be an object of strings, got \["x"\]/,
    ],
    [
      'duplicate tensor name',
      () => withHeader(`{${f32('a', 1, 0)},${f32('a', 1, 0)}}`, 4),
      /header has the key "a" more than once/,
    ],
    [
      'duplicate name, escaped',
      () => withHeader(`{${f32('a', 1, 0)},${f32('\\u0061', 1, 0)}}`, 4),
      /header has the key "a" more than once/,
    ],
    [
      'duplicate field in an entry',
      () => withHeader('{"a":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}}', 4),
      /header has the key "a"\."dtype" more than once/,
    ],
    [
      'duplicate metadata key',
      () => withHeader('{"__metadata__":{"k":"1","k":"2"}}'),
      /header has the key "__metadata__"\."k" more than once/,
    ],
    [
      'dtype __proto__',
      () => withHeader('{"a":{"dtype":"__proto__","shape":[1],"data_offsets":[0,4]}}', 4),
      /tensor 'a': unsupported dtype "__proto__"/,
    ],
    [
      'dtype toString',
      () => withHeader('{"a":{"dtype":"toString","shape":[1],"data_offsets":[0,4]}}', 4),
      /unsupported dtype "toString"/,
    ],
    ['header not starting with {', () => withHeader(' {}'), /header must start with '\{'/],
    ['header with a BOM', () => withHeader('\ufeff{}'), /header must start with '\{'/],
    ['empty header', () => withHeader(''), /header must start with '\{' \(it is empty\)/],
  ])('rejects a corrupt file: %s', (_n, make, msg) => {
    expect(() => parseSafetensors(make(), 'x.safetensors')).toThrow(msg);
  });

  it('accepts what the format allows: any order of entries, empty tensors, JSON-looking metadata strings, null metadata', () => {
    const data = new Uint8Array(8);
    new DataView(data.buffer).setFloat32(0, 1.5, true);
    new DataView(data.buffer).setFloat32(4, -2, true);
    const buf = withHeader(
      `{${f32('b', 1, 4)},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"__metadata__":{"k":"}{\\"k\\":[,"},${f32('a', 1, 0)}}`,
      8,
    );
    buf.set(data, buf.length - 8);
    const { tensors, metadata } = parseSafetensors(buf);
    expect(Array.from(tensors.get('a')!.data)).toEqual([1.5]);
    expect(Array.from(tensors.get('b')!.data)).toEqual([-2]);
    expect(tensors.get('e')!.shape).toEqual([0, 3]);
    expect(metadata).toEqual({ k: '}{"k":[,' });
    expect(parseSafetensors(withHeader('{"__metadata__":null}')).metadata).toEqual({});
  });

  it('a tensor or metadata key named "__proto__" is an ordinary name and pollutes nothing', () => {
    const parsed = parseSafetensors(withHeader(`{"__metadata__":{"__proto__":"x"},${f32('__proto__', 1, 0)}}`, 4));
    expect(parsed.tensors.get('__proto__')!.shape).toEqual([1]);
    expect(Object.getOwnPropertyDescriptor(parsed.metadata, '__proto__')?.value).toBe('x');
    expect(Object.getPrototypeOf(parsed.metadata)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).dtype).toBeUndefined();
    // and our writer keeps such a tensor rather than setting its header's prototype
    const dir = mkdtempSync(join(tmpdir(), 'fc-st-'));
    const path = join(dir, 'proto.safetensors');
    saveSafetensors(
      path,
      new Map([
        ['__proto__', new Tensor(Float32Array.from([3]), [1])],
        ['w', new Tensor(Float32Array.from([4]), [1])],
      ]),
    );
    const back = loadSafetensors(path).tensors;
    expect([...back.keys()]).toEqual(['__proto__', 'w']);
    expect(Array.from(back.get('__proto__')!.data)).toEqual([3]);
    expect(() => saveSafetensors(path, new Map(), { metadata: { n: 1 as unknown as string } })).toThrow(
      /^save: metadata\["n"\] must be a string/,
    );
    expect(() => saveSafetensors(path, new Map([['__metadata__', new Tensor(new Float32Array(1), [1])]]))).toThrow(
      /'__metadata__' is reserved/,
    );
  });

  it('a failed load leaves the model unchanged and names the problem', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-st-'));
    const net = smallNet();
    const before = net.stateDict().get('0.weight')!.data.slice();
    const good = join(dir, 'good.safetensors');
    smallNet().save(good);
    const bytes = readFileSync(good);
    writeFileSync(join(dir, 'trunc.safetensors'), bytes.subarray(0, bytes.length - 10));
    expect(() => net.load(join(dir, 'trunc.safetensors'))).toThrow(/truncated/);
    expect(() => net.load(join(dir, 'missing.safetensors'))).toThrow(/ENOENT/);
    const other = new Sequential(new Conv2d(3, 5, 3), new Linear(2, 2));
    other.save(join(dir, 'other.safetensors'));
    expect(() => net.load(join(dir, 'other.safetensors'))).toThrow(
      /shape mismatch: 0\.weight: expected \[4, 3, 3, 3\], got \[5, 3, 3, 3\]/,
    );
    expect(() => net.load(join(dir, 'other.safetensors'))).toThrow(/missing keys: .*4\.weight/);
    expect(Array.from(net.stateDict().get('0.weight')!.data)).toEqual(Array.from(before));
    expect(existsSync(good)).toBe(true);
  });
});

/** A header entry for an F32 tensor of `n` elements at byte `at`. */
function f32(name: string, n: number, at: number): string {
  return `"${name}":{"dtype":"F32","shape":[${n}],"data_offsets":[${at},${at + 4 * n}]}`;
}

function withHeader(json: string, dataBytes = 0): Uint8Array {
  const h = new TextEncoder().encode(json);
  const b = new Uint8Array(8 + h.length + dataBytes);
  new DataView(b.buffer).setBigUint64(0, BigInt(h.length), true);
  b.set(h, 8);
  return b;
}
