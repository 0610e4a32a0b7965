// GRU (the fused gate kernel crates/kernels/src/recurrent.rs under src/nn/gru.ts) and Embedding
// against torch.nn.GRU / torch.nn.Embedding (test/fixtures/gen_apps.py): outputs, the last
// state, and the gradients of the input, h0 and every parameter; on every SIMD level.
import { describe, expect, it } from 'vitest';
import { Embedding, GRU, gruCell, mul, sum, add, Tensor } from '../src/index.js';
import { det, expectClose, loadFixture, thrown, useKernels, type FixtureTensor } from './helpers.js';

interface Fixture {
  recurrent: {
    gru: {
      params: Record<string, FixtureTensor>;
      output: FixtureTensor;
      h: FixtureTensor;
      gradInput: FixtureTensor;
      gradH0: FixtureTensor;
      grads: Record<string, FixtureTensor>;
    };
    embedding: { indices: number[]; output: FixtureTensor; grad: FixtureTensor };
  };
}
const { recurrent } = loadFixture<Fixture>('apps.json');

describe.each(['scalar', 'auto'] as const)('GRU and Embedding vs torch (simd %s)', (simd) => {
  useKernels({ simd });

  it('GRU(4, 3, batchFirst) with h0: output, last state and every gradient', () => {
    const g = recurrent.gru;
    const gru = new GRU(4, 3, { batchFirst: true });
    const names = gru.namedParameters().map(([k]) => k);
    expect(names).toEqual(Object.keys(g.params));
    for (const [k, p] of gru.namedParameters()) p.data.set(g.params[k].data);
    const x = det([2, 5, 4], 30);
    x.requiresGrad = true;
    const h0 = det([2, 3], 31, 0.5);
    h0.requiresGrad = true;
    const { output, h } = gru.forwardWithState(x, h0);
    expect(output.shape).toEqual([2, 5, 3]);
    expectClose(output.data, g.output.data, 1e-5, 1e-6, 'output');
    expectClose(h.data, g.h.data, 1e-5, 1e-6, 'h');
    add(sum(mul(output, det([2, 5, 3], 32))), sum(mul(h, det([2, 3], 33)))).backward();
    expectClose(x.grad?.data ?? [], g.gradInput.data, 1e-4, 1e-6, 'grad input');
    expectClose(h0.grad?.data ?? [], g.gradH0.data, 1e-4, 1e-6, 'grad h0');
    for (const [k, p] of gru.namedParameters()) expectClose(p.grad?.data ?? [], g.grads[k].data, 1e-4, 1e-6, k);
    // A step at a time gives the same states.
    let s = h0;
    for (let t = 0; t < 5; t++) {
      const xt = new Tensor(
        Float32Array.from({ length: 8 }, (_, j) => x.data[Math.floor(j / 4) * 20 + t * 4 + (j % 4)]),
        [2, 4],
      );
      s = gru.step(xt, s);
    }
    expectClose(s.data, g.h.data, 1e-5, 1e-6, 'stepped');
  });

  it('GRU and gruCell reject wrong shapes', () => {
    const gru = new GRU(4, 3);
    expect(thrown(() => gru.forward(det([5, 2, 3], 1))).message).toMatch(/expected input \[T, N, I\] with I = 4/);
    expect(thrown(() => gru.forward(det([5, 2, 4], 1), det([3, 3], 1))).message).toMatch(/expected a state \[2, 3\]/);
    expect(thrown(() => gruCell(det([2, 8], 1), det([2, 9], 1), det([2, 3], 1))).message).toMatch(
      /gi: expected \[2, 9\]/,
    );
    expect(thrown(() => new GRU(0, 3)).message).toMatch(/inputSize must be a positive integer/);
  });

  it('Embedding: rows by index, gradients summed over repeats', () => {
    const e = recurrent.embedding;
    const emb = new Embedding(6, 3);
    emb.weight.data.set(det([6, 3], 34).data);
    const y = emb.forward(new Tensor(Float32Array.from(e.indices), [2, 3]));
    expect(y.shape).toEqual([2, 3, 3]);
    expectClose(y.data, e.output.data, 1e-7, 0, 'output'); // the fixture rounds to 9 digits
    sum(mul(y, det([2, 3, 3], 35))).backward();
    expectClose(emb.weight.grad?.data ?? [], e.grad.data, 1e-6, 1e-7, 'grad');
    expect(thrown(() => emb.forward(new Tensor(Float32Array.from([6]), [1]))).message).toMatch(
      /index 0 is 6, expected an integer in \[0, 6\)/,
    );
  });
});
