// Keras import (src/io/keras.ts): models Keras 3 itself saved (test/fixtures/keras, written by the
// committed gen_keras.py: a Sequential and a functional CNN, each as .keras and as legacy .h5)
// against Keras's own outputs for the same input; the same models exported to ONNX and run by
// ONNX Runtime; damaged files, each an Error naming the problem (HDF5 read in a worker thread,
// so a hostile file cannot hang or abort the main thread).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { strToU8, zipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { loadKeras, noGrad, Tensor, transpose } from '../src/index.js';
import { toOnnx } from '../src/io/onnx/export.js';
import { ortRun, relError } from './onnx-helpers.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'keras');

interface Golden {
  input: { shape: number[]; data: number[] };
  output: { shape: number[]; data: number[] };
}

const golden = (name: string): Golden => JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8'));
/** Keras's NHWC input as ferroconv's NCHW. */
const nchw = (g: Golden) => transpose(new Tensor(Float32Array.from(g.input.data), g.input.shape), [0, 3, 1, 2]);

describe('loadKeras: files Keras 3 saved', () => {
  it.each([
    ['sequential', 'keras'],
    ['sequential', 'h5'],
    ['functional', 'keras'],
    ['functional', 'h5'],
  ])('%s.%s gives the outputs Keras computed', async (name, ext) => {
    const g = golden(name);
    const model = await loadKeras(join(FIXTURES, `${name}.${ext}`));
    const y = noGrad(() => model.forward(nchw(g)));
    expect(y.shape).toEqual(g.output.shape);
    const err = relError(y.data, g.output.data);
    console.log(`${name}.${ext}: max error ${err.toExponential(2)} against Keras`);
    expect(err).toBeLessThan(1e-5);
    // The declared input, as NCHW with batch 1.
    expect(model.inputShapes[0]).toEqual([1, g.input.shape[3], g.input.shape[1], g.input.shape[2]]);
  });

  it('reads the same weights from both formats, under the layers names', async () => {
    const a = await loadKeras(join(FIXTURES, 'sequential.keras'));
    const b = await loadKeras(readFileSync(join(FIXTURES, 'sequential.h5')));
    const sa = a.stateDict();
    const sb = b.stateDict();
    expect([...sa.keys()]).toEqual([...sb.keys()]);
    expect([...sa.keys()]).toContain('conv2d.weight');
    expect([...sa.keys()]).toContain('batch_normalization.running_var');
    for (const [k, t] of sa) expect(Array.from(t.data), k).toEqual(Array.from(sb.get(k)!.data));
  });

  it('exports to ONNX, which ONNX Runtime runs to the same outputs', async () => {
    for (const name of ['sequential', 'functional']) {
      const g = golden(name);
      const model = await loadKeras(join(FIXTURES, `${name}.keras`));
      const x = nchw(g);
      const got = await ortRun(toOnnx(model, { inputShape: x.shape }), x);
      expect(relError(got.data, g.output.data), name).toBeLessThan(1e-5);
    }
  });
});

describe('loadKeras: damaged files are Errors naming the problem', () => {
  const keras = readFileSync(join(FIXTURES, 'functional.keras'));
  const h5 = readFileSync(join(FIXTURES, 'functional.h5'));
  it.each([
    ['not a model', () => strToU8('hello'), 'loadKeras: neither a .keras zip nor an HDF5 file'],
    ['a zip without config.json', () => zipSync({ 'x.txt': strToU8('x') }), 'the .keras zip has no config.json'],
    [
      'a config that is not JSON',
      () => zipSync({ 'config.json': strToU8('{'), 'model.weights.h5': new Uint8Array(h5) }),
      'config.json is not JSON',
    ],
    ['a truncated .keras', () => keras.subarray(0, keras.length - 200), 'loadKeras: '],
    ['a truncated .h5', () => h5.subarray(0, 4000), 'loadKeras: '],
    ['an HDF5 header and zeros', () => Uint8Array.from([...h5.subarray(0, 8), ...new Uint8Array(600)]), 'loadKeras: '],
  ])('%s', async (_name, bytes, message) => {
    await expect(loadKeras(bytes())).rejects.toThrow(message);
  });

  it('a missing file names the path', async () => {
    await expect(loadKeras('/nonexistent/model.keras')).rejects.toThrow('loadKeras: /nonexistent/model.keras');
  });
});
