// Files whose JSON nests absurdly deep (found by `npm run fuzz`): JSON.parse copes, so every
// reader after it must too. Each gives a clean Error, quickly, never a stack overflow.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Linear, loadCheckpoint, parseSafetensors, saveCheckpoint } from '../src/index.js';

const deep = (n: number) => '['.repeat(n) + ']'.repeat(n);

function file(header: string): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

describe('deeply nested JSON', () => {
  it.each(['dtype', 'shape', 'data_offsets'])('a safetensors %s nested 100,000 deep is an Error', (field) => {
    const entry = { dtype: '"F32"', shape: '[0]', data_offsets: '[0,0]', [field]: deep(100_000) };
    const header = `{"t":{"dtype":${entry.dtype},"shape":${entry.shape},"data_offsets":${entry.data_offsets}}}`;
    expect(() => parseSafetensors(file(header))).toThrow(
      new RegExp(`^safetensors <buffer>: tensor 't': .*${field === 'dtype' ? 'dtype' : field}`),
    );
  });

  it('the duplicate-key check stays fast at any nesting depth', () => {
    const header = `{"__metadata__":{"a":"b"},"x":${deep(200_000)}}`;
    const t0 = performance.now();
    expect(() => parseSafetensors(file(header))).toThrow(/safetensors <buffer>: entry 'x' is not an object/);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('a checkpoint whose training state nests 100,000 deep is an Error and changes nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-nest-'));
    const model = new Linear(2, 2);
    const path = join(dir, 'ckpt.safetensors');
    saveCheckpoint(path, model, { epoch: 0 });
    // Rewrite the state with a hostile one, keeping the weights.
    const bytes = new Uint8Array(readFileSync(path));
    const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
    header.__metadata__.state = `{"epoch":0,"optimizer":${deep(100_000)}}`;
    const json = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(8 + json.length + bytes.length - 8 - len);
    new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
    out.set(json, 8);
    out.set(bytes.subarray(8 + len), 8 + json.length);
    writeFileSync(path, out);
    const before = Array.from(model.weight.data);
    expect(() => loadCheckpoint(path, model)).toThrow('checkpoint: training state nests deeper than 64 levels');
    expect(Array.from(model.weight.data)).toEqual(before);
  });
});
