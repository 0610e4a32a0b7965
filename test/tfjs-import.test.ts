// tfjs layers models (src/io/tfjs.ts): models built and saved by @tensorflow/tfjs itself (its cpu
// backend), loaded by loadTfjsLayersModel from a model.json with its shard and from in-memory
// artifacts, and run on the same input (NHWC for tfjs, NCHW for ferroconv): outputs within 1e-4.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTfjsLayersModel, noGrad, Tensor, type TfjsArtifacts } from '../src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'ferroconv-tfjs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(async () => {
  await tf.setBackend('cpu');
});

async function rejected(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

/** Every weight set to seeded values (variances positive), so nothing is a default. */
function randomize(model: tf.LayersModel, seed: number): void {
  for (const layer of model.layers) {
    const ws = layer.getWeights();
    if (!ws.length) continue;
    layer.setWeights(
      ws.map((w, i) => {
        const r = tf.randomUniform(w.shape, -0.5, 0.5, 'float32', seed + i + layer.name.length * 7);
        return /variance/.test(layer.weights[i].name) ? r.add(1) : r;
      }),
    );
  }
}

async function artifacts(model: tf.LayersModel): Promise<TfjsArtifacts> {
  let saved: tf.io.ModelArtifacts | null = null;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      saved = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  const a = saved as unknown as tf.io.ModelArtifacts;
  return { modelTopology: a.modelTopology, weightSpecs: a.weightSpecs ?? [], weightData: a.weightData as ArrayBuffer };
}

/** tfjs's output and ferroconv's for one NHWC input, outputs as tfjs lays them out. */
async function compare(model: tf.LayersModel, shape: number[], source?: string): Promise<number> {
  const art = await artifacts(model);
  const mine = await loadTfjsLayersModel(source ?? art);
  const x = tf.randomNormal(shape, 0, 1, 'float32', 11);
  const want = (model.predict(x) as tf.Tensor).dataSync();
  const nchw = tf.transpose(x, [0, 3, 1, 2]);
  const y = noGrad(() => mine.call(new Tensor(Float32Array.from(nchw.dataSync()), nchw.shape)));
  const got = y.ndim === 4 ? tf.transpose(tf.tensor(y.data, y.shape), [0, 2, 3, 1]).dataSync() : y.data;
  expect(got.length).toBe(want.length);
  // Not trivially equal: the outputs vary.
  expect(Math.max(...Array.from(want)) - Math.min(...Array.from(want))).toBeGreaterThan(1e-3);
  const scale = Math.max(...Array.from(want, Math.abs));
  return Math.max(...Array.from(want, (w, i) => Math.abs(got[i] - w) / scale));
}

describe('loadTfjsLayersModel against tfjs', () => {
  it('a Sequential CNN of every supported layer kind', async () => {
    const m = tf.sequential();
    m.add(
      tf.layers.zeroPadding2d({
        inputShape: [11, 10, 3],
        padding: [
          [1, 0],
          [2, 1],
        ],
      }),
    );
    m.add(tf.layers.conv2d({ filters: 6, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu' }));
    m.add(tf.layers.batchNormalization());
    m.add(tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same' }));
    m.add(tf.layers.reLU({ maxValue: 6 }));
    m.add(tf.layers.separableConv2d({ filters: 5, kernelSize: 3, padding: 'valid', activation: 'tanh' }));
    m.add(tf.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }));
    m.add(tf.layers.conv2dTranspose({ filters: 4, kernelSize: 3, strides: 2, padding: 'same' }));
    m.add(tf.layers.leakyReLU({ alpha: 0.2 }));
    m.add(tf.layers.averagePooling2d({ poolSize: 2, strides: 1, padding: 'same' }));
    m.add(tf.layers.flatten());
    m.add(tf.layers.dropout({ rate: 0.3 }));
    m.add(tf.layers.dense({ units: 7, activation: 'sigmoid' }));
    m.add(tf.layers.batchNormalization({ epsilon: 0.01 }));
    m.add(tf.layers.dense({ units: 4, activation: 'softmax' }));
    randomize(m, 1);
    const err = await compare(m, [2, 11, 10, 3]);
    console.log(`tfjs Sequential CNN: max relative error ${err.toExponential(1)}`);
    expect(err).toBeLessThan(1e-4);
  });

  it('a functional model with Add, Concatenate and global pooling, from model.json and its shard', async () => {
    const input = tf.input({ shape: [9, 9, 4] });
    const a = tf.layers
      .conv2d({ filters: 4, kernelSize: 3, padding: 'same', name: 'a' })
      .apply(input) as tf.SymbolicTensor;
    const sum = tf.layers.add().apply([a, input]) as tf.SymbolicTensor;
    const b = tf.layers
      .conv2d({ filters: 3, kernelSize: 1, activation: 'relu', name: 'b' })
      .apply(sum) as tf.SymbolicTensor;
    const c = tf.layers.concatenate().apply([sum, b]) as tf.SymbolicTensor;
    const g = tf.layers.globalAveragePooling2d({}).apply(c) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 3, name: 'out' }).apply(g) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    randomize(model, 2);
    const art = await artifacts(model);
    const data = new Uint8Array(art.weightData as ArrayBuffer);
    writeFileSync(join(dir, 'group1-shard1of1.bin'), data);
    writeFileSync(
      join(dir, 'model.json'),
      JSON.stringify({
        format: 'layers-model',
        modelTopology: art.modelTopology,
        weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: art.weightSpecs }],
      }),
    );
    const err = await compare(model, [2, 9, 9, 4], join(dir, 'model.json'));
    console.log(`tfjs functional CNN: max relative error ${err.toExponential(1)}`);
    expect(err).toBeLessThan(1e-4);
    const loaded = await loadTfjsLayersModel(join(dir, 'model.json'));
    expect([...loaded.stateDict().keys()]).toEqual(expect.arrayContaining(['a.weight', 'a.bias', 'out.weight']));
    expect(loaded.stateDict().get('a.weight')?.shape).toEqual([4, 4, 3, 3]);
  });

  it('bad files are Errors naming the problem', async () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2 })] });
    const art = await artifacts(m);
    const short = { ...art, weightData: new Uint8Array(art.weightData as ArrayBuffer).subarray(0, 8) };
    expect((await rejected(loadTfjsLayersModel(short))).message).toMatch(/runs past the end/);
    const topo = JSON.parse(JSON.stringify(art.modelTopology));
    topo.config.layers[0].class_name = 'LSTM';
    const bad = await rejected(loadTfjsLayersModel({ ...art, modelTopology: topo }));
    expect(bad.message).toMatch(/unsupported layers: .*\(LSTM\)/);
    writeFileSync(
      join(dir, 'evil.json'),
      JSON.stringify({ modelTopology: art.modelTopology, weightsManifest: [{ paths: ['../x.bin'], weights: [] }] }),
    );
    expect((await rejected(loadTfjsLayersModel(join(dir, 'evil.json')))).message).toMatch(/outside the model's folder/);
  });
});
