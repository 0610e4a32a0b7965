// Inference fusion (src/nn/fuse.ts): conv + eval batch norm + residual + ReLU as one conv. The
// fused forward must give the unfused forward's logits for every zoo family and for a user's
// own Sequential, stay right after the weights or statistics change (loadStateDict, an optimizer
// step, a manual write), and step aside whenever it could be observed (training mode, gradients
// being recorded, a user-installed forward). Also the conv2dFused / relu_ ops and the binding's
// argument errors.
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  AvgPool2d,
  BatchNorm2d,
  Conv2d,
  type Module,
  ReLU,
  Sequential,
  Tensor,
  add,
  batchNorm2d,
  cat,
  catAffine,
  conv2d,
  conv2dFused,
  crossEntropy,
  isInferenceFusionEnabled,
  noGrad,
  optim,
  relu,
  relu_,
  setInferenceFusion,
} from '../src/index.js';
import { densenet121, googlenet, resnet18, resnet50, vgg11Bn } from '../src/models/index.js';
import { native } from '../src/native.js';
import { convArgs, det, expectClose } from './helpers.js';
import { fillModel } from './zoo-formula.js';

afterEach(() => {
  setInferenceFusion(true);
  vi.restoreAllMocks();
});

const infer = (m: Module, x: Tensor) => noGrad(() => m.forward(x));
const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

function unfused(m: Module, x: Tensor): Tensor {
  const prev = setInferenceFusion(false);
  try {
    return infer(m, x);
  } finally {
    setInferenceFusion(prev);
  }
}

/**
 * Fused against unfused logits: rtol 1e-4 plus atol 2e-5 * max|logit|, the tolerance the zoo's
 * torchvision parity uses (float32 rounding scales with the largest terms of a sum). Folding
 * changes the rounding of each conv output (acc * s + t instead of (acc - mean) * s + beta).
 */
function expectSameLogits(fused: Tensor, plain: Tensor, what: string): void {
  expect(fused.shape).toEqual(plain.shape);
  expectClose(fused.data, plain.data, 1e-4, 2e-5 * maxAbs(plain.data), what);
}

const zoo: [string, () => Module, number[]][] = [
  ['resnet18', () => resnet18({ numClasses: 10 }), [2, 3, 32, 32]],
  ['resnet50', () => resnet50({ numClasses: 10 }), [2, 3, 32, 32]],
  ['densenet121', () => densenet121({ numClasses: 10 }), [1, 3, 32, 32]],
  ['googlenet', () => googlenet({ numClasses: 10, initWeights: false }), [2, 3, 32, 32]],
  ['vgg11_bn', () => vgg11Bn({ numClasses: 10, initWeights: false }), [1, 3, 32, 32]],
];

describe('fused inference equals the unfused forward', () => {
  it.each(zoo)(
    '%s',
    (name, make, shape) => {
      // Every unfused batch norm call (call() runs the prototype's forward, the spy) is counted,
      // fused ones are not.
      const bnCalls = vi.spyOn(BatchNorm2d.prototype, 'forward');
      const model = make();
      fillModel(model); // non-trivial running statistics, affine parameters and biases
      model.eval();
      const x = det(shape, 3);
      const plain = unfused(model, x);
      const unfusedCalls = bnCalls.mock.calls.length;
      expect(unfusedCalls).toBeGreaterThan(0);
      bnCalls.mockClear();
      const fused = infer(model, x);
      expectSameLogits(fused, plain, name);
      // Every batch norm is folded or paired with its ReLU, except DenseNet's final norm5 (its
      // ReLU is functional, outside the features Sequential).
      expect(bnCalls.mock.calls.length).toBe(name === 'densenet121' ? 1 : 0);
    },
    120_000,
  );
});

describe('folded values follow the live parameters', () => {
  it('after loadStateDict, a manual write and an optimizer step', () => {
    const model = resnet18({ numClasses: 10 });
    fillModel(model);
    model.eval();
    const x = det([2, 3, 32, 32], 5);
    const before = infer(model, x);

    // loadStateDict from another model with different batch-norm statistics and weights.
    const other = resnet18({ numClasses: 10 });
    fillModel(other);
    for (const [k, t] of other.stateDict()) {
      if (k.endsWith('running_var') || k.endsWith('bn1.weight')) for (let i = 0; i < t.size; i++) t.data[i] *= 1.5;
      if (k.endsWith('running_mean')) for (let i = 0; i < t.size; i++) t.data[i] += 0.05;
    }
    model.loadStateDict(other.stateDict());
    const loaded = infer(model, x);
    expect(maxAbs(loaded.data.map((v, i) => v - before.data[i]))).toBeGreaterThan(1e-3);
    expectSameLogits(loaded, unfused(model, x), 'after loadStateDict');

    // A manual write into a buffer and a parameter.
    const bn = model.layer2.at(0) as unknown as { bn2: BatchNorm2d; conv1: Conv2d };
    bn.bn2.runningVar!.data[3] = 7;
    bn.conv1.weight.data[10] += 0.5;
    expectSameLogits(infer(model, x), unfused(model, x), 'after a manual write');

    // A training step changes weights, batch-norm parameters and running statistics.
    model.train();
    const opt = new optim.SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
    const loss = crossEntropy(model.forward(det([4, 3, 32, 32], 6)), Int32Array.from([1, 2, 3, 4]));
    loss.backward();
    opt.step();
    model.eval();
    const stepped = infer(model, x);
    expect(maxAbs(stepped.data.map((v, i) => v - loaded.data[i]))).toBeGreaterThan(1e-4);
    expectSameLogits(stepped, unfused(model, x), 'after an optimizer step');
  }, 120_000);
});

describe("a user's Sequential", () => {
  const build = () => {
    const net = new Sequential(
      new Conv2d(3, 8, 3, { padding: 1 }),
      new BatchNorm2d(8),
      new ReLU(),
      new Conv2d(8, 5, 3, { stride: 2 }),
      new ReLU(),
      new Conv2d(5, 6, 1),
      new BatchNorm2d(6, { eps: 1e-3 }),
    );
    fillModel(net);
    return net.eval();
  };

  it('fuses conv + bn + relu, conv + relu and conv + bn runs, with the same output', () => {
    const net = build();
    const x = det([3, 3, 9, 7], 2);
    const bnCalls = vi.spyOn(BatchNorm2d.prototype, 'forward');
    const reluCalls = vi.spyOn(ReLU.prototype, 'forward');
    const plain = unfused(net, x);
    expect(bnCalls).toHaveBeenCalledTimes(2);
    bnCalls.mockClear();
    reluCalls.mockClear();
    const fused = infer(net, x);
    expect(bnCalls).not.toHaveBeenCalled();
    expect(reluCalls).not.toHaveBeenCalled();
    expectClose(fused.data, plain.data, 1e-4, 1e-5, 'sequential');
  });

  it('steps aside in training mode, while recording gradients, and for a hooked layer', () => {
    const net = build();
    const x = det([2, 3, 9, 7], 4);
    const plain = unfused(net, x);
    // Eval mode but recording gradients: the unfused path, and backward reaches the weights.
    const y = net.forward(x);
    expect(y.gradFn).not.toBeNull();
    expectClose(y.data, plain.data, 1e-4, 1e-5, 'grad-enabled eval');
    y.backward(new Tensor(new Float32Array(y.size).fill(1), y.shape));
    expect((net.at(0) as Conv2d).weight.grad).not.toBeNull();
    // A user's forward override on the batch norm is honoured.
    const bn = net.at(1) as BatchNorm2d;
    const seen: number[][] = [];
    const orig = bn.forward.bind(bn);
    bn.forward = (t: Tensor) => {
      seen.push(t.shape);
      return orig(t);
    };
    const hooked = infer(net, x);
    expect(seen).toEqual([[2, 8, 9, 7]]);
    expectClose(hooked.data, plain.data, 1e-4, 1e-5, 'hooked');
    // Training mode: batch statistics, and the running statistics update as before.
    net.train();
    const rm = Float32Array.from(bn.runningMean!.data);
    infer(net, x);
    expect(Array.from(bn.runningMean!.data)).not.toEqual(Array.from(rm));
  });

  it('runs a 1x1 conv after the average pool that follows it, where the two commute', () => {
    // [conv options, pool], whether the conv then sees the pooled map.
    const cases: [ConstructorParameters<typeof Conv2d>[3], AvgPool2d, boolean][] = [
      [{}, new AvgPool2d(2), true],
      [{}, new AvgPool2d(2, { ceilMode: true }), true],
      [{ bias: false, groups: 2 }, new AvgPool2d(3, { stride: 2, padding: 1 }), true],
      // A bias does not commute with a window whose weights do not sum to one.
      [{}, new AvgPool2d(3, { stride: 2, padding: 1 }), false],
      [{}, new AvgPool2d(2, { divisorOverride: 3 }), false],
      [{ bias: false }, new AvgPool2d(2, { divisorOverride: 3 }), true],
    ];
    const seen: number[][] = [];
    const orig = Conv2d.prototype.forward;
    vi.spyOn(Conv2d.prototype, 'forward').mockImplementation(function (this: Conv2d, t: Tensor) {
      seen.push(t.shape);
      return orig.call(this, t);
    });
    for (const [opts, pool, first] of cases) {
      const net = new Sequential(new Conv2d(6, 4, 1, opts), pool);
      fillModel(net);
      net.eval();
      const x = det([2, 6, 7, 9], 3);
      const plain = unfused(net, x);
      seen.length = 0;
      const fused = infer(net, x);
      expect(fused.shape).toEqual(plain.shape);
      expect(seen).toEqual([first ? [2, 6, ...plain.shape.slice(2)] : [2, 6, 7, 9]]);
      expectClose(fused.data, plain.data, 1e-5, 1e-6, `conv ${JSON.stringify(opts)} then pool`);
    }
    // A window too large for the map: the pool's error, on the conv's output as unfused.
    const net = new Sequential(new Conv2d(6, 4, 1), new AvgPool2d(3)).eval();
    expect(() => infer(net, det([1, 6, 2, 2], 1))).toThrow(/\[1, 4, 2, 2\]/);
  });

  it('can be turned off', () => {
    expect(isInferenceFusionEnabled()).toBe(true);
    expect(setInferenceFusion(false)).toBe(true);
    expect(isInferenceFusionEnabled()).toBe(false);
    const bnCalls = vi.spyOn(BatchNorm2d.prototype, 'forward');
    infer(build(), det([1, 3, 5, 5], 1));
    expect(bnCalls).toHaveBeenCalledTimes(2);
  });
});

describe('conv2dFused', () => {
  const x = det([2, 5, 6, 7], 1);
  const w = det([4, 5, 3, 3], 2, 0.3);
  const scale = det([4], 3);
  const shift = det([4], 4);
  const opts = { padding: 1, stride: [1, 2] as [number, number] };

  it('equals conv2d * scale + shift + residual, then relu', () => {
    const plain = conv2d(x, w, null, opts);
    const residual = det(plain.shape, 5);
    // Batch norm with mean 0 and var + eps = 1 (to float rounding) is `* scale + shift`.
    const unitVar = new Tensor(new Float32Array(4).fill(1 - 1e-5), [4]);
    const zeros = new Tensor(new Float32Array(4), [4]);
    const expected = relu(add(batchNorm2d(plain, zeros, unitVar, scale, shift, { eps: 1e-5 }), residual));
    const got = conv2dFused(x, w, { scale, shift, residual, relu: true }, opts);
    expect(got.shape).toEqual(plain.shape);
    expectClose(got.data, expected.data, 1e-4, 1e-5, 'fused');
    // No epilogue at all is the plain conv.
    expectClose(conv2dFused(x, w, {}, opts).data, plain.data, 1e-6, 1e-7, 'identity');
    for (const algo of ['direct', 'fft', 'im2col'] as const) {
      expectClose(
        conv2dFused(x, w, { scale, shift, residual, relu: true }, { ...opts, algo }).data,
        expected.data,
        1e-4,
        1e-5,
        algo,
      );
    }
  });

  it('rejects bad arguments and recorded gradients', () => {
    expect(() => conv2dFused(x, w, { scale: det([3], 1) })).toThrow('scale: expected shape [4], got [3]');
    expect(() => conv2dFused(x, w, { residual: det([2, 4, 6, 7], 1) }, opts)).toThrow(
      'residual: expected shape [2, 4, 6, 4], got [2, 4, 6, 7]',
    );
    const wg = det([4, 5, 3, 3], 2).requiresGrad_();
    expect(() => conv2dFused(x, wg)).toThrow(/records no gradient/);
    expect(noGrad(() => conv2dFused(x, wg)).shape).toEqual([2, 4, 4, 5]);
  });

  it('binding: lengths and aliasing are checked', () => {
    const args = convArgs({ inputShape: [2, 5, 6, 7], weightShape: [4, 5, 3, 3], padding: [1, 1, 1, 1] });
    const out = new Float32Array(2 * 4 * 6 * 7);
    expect(() => native.conv2dForwardFused(x.data, w.data, new Float32Array(3), null, null, false, out, args)).toThrow(
      'scale: expected 4 elements, got 3',
    );
    expect(() => native.conv2dForwardFused(x.data, w.data, null, null, new Float32Array(5), true, out, args)).toThrow(
      `residual: expected ${out.length} elements, got 5`,
    );
    expect(() => native.conv2dForwardFused(x.data, w.data, null, null, out, true, out, args)).toThrow(
      'output: must not share memory with residual',
    );
    expect(() => native.conv2dForwardFused(x.data, w.data, null, null, null, false, out.subarray(1), args)).toThrow(
      `output: expected ${out.length} elements, got ${out.length - 1}`,
    );
  });
});

describe('relu_', () => {
  it('works in place and refuses recorded tensors', () => {
    const t = new Tensor(Float32Array.from([-1, 2, Number.NaN, -0.5]), [4]);
    expect(relu_(t)).toBe(t);
    expect(Array.from(t.data)).toEqual([0, 2, Number.NaN, 0]);
    const g = new Tensor(new Float32Array(2), [2]).requiresGrad_();
    expect(() => relu_(g)).toThrow(/records no gradient/);
  });
});

describe('catAffine', () => {
  const parts = [det([2, 3, 4, 5], 1), det([2, 1, 4, 5], 2), det([2, 6, 4, 5], 3)];
  const scale = det([10], 4);
  const shift = det([10], 5);

  it('equals cat, then batch norm with mean 0 / unit variance, then relu', () => {
    const unitVar = new Tensor(new Float32Array(10).fill(1 - 1e-5), [10]);
    const zeros = new Tensor(new Float32Array(10), [10]);
    const bn = batchNorm2d(cat(parts, 1), zeros, unitVar, scale, shift, { eps: 1e-5 });
    expectClose(catAffine(parts, scale, shift).data, bn.data, 1e-5, 1e-6, 'no relu');
    expectClose(catAffine(parts, scale, shift, true).data, relu(bn).data, 1e-5, 1e-6, 'relu');
    expect(catAffine([parts[0]], det([3], 1), det([3], 2)).shape).toEqual([2, 3, 4, 5]);
  });

  it('rejects bad arguments', () => {
    expect(() => catAffine([parts[0], det([1, 2, 4, 5], 1)], scale, shift)).toThrow(
      'catAffine: tensor 1 has shape [1, 2, 4, 5], expected [2, *, 4, 5]',
    );
    expect(() => catAffine(parts, det([9], 1), shift)).toThrow('scale: expected 10 elements, got 9');
    expect(() => catAffine(parts, scale, det([10], 1).requiresGrad_())).toThrow(/records no gradient/);
    const out = new Float32Array(2 * 10 * 20);
    expect(() =>
      native.concatChannelsAffine(
        parts.map((t) => t.data),
        [3, 1, 6],
        2,
        20,
        scale.data,
        shift.data,
        false,
        out.subarray(0, 20),
      ),
    ).toThrow('output: expected 400 elements, got 20');
    expect(() =>
      native.concatChannelsAffine(
        [out.subarray(0, 120)],
        [3],
        2,
        20,
        new Float32Array(3),
        new Float32Array(3),
        false,
        out,
      ),
    ).toThrow('output: must not share memory with inputs[0]');
  });
});
